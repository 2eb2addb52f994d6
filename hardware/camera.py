"""The camera interface every backend implements, and the supervisor that keeps one running.

`CameraSupervisor` owns one capture thread. It opens a camera through a factory, captures in a
loop and hands each frame to a sink; on a stall, a disconnect or any error it closes the camera,
waits with exponential backoff and opens a new one. It never raises out of its thread and never
waits on the consumer: the sink is called inline and MUST NOT BLOCK (use `FrameQueue.put`, which
drops the oldest frame when full).
"""
from __future__ import annotations

import abc
import contextlib
import enum
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import (
    CameraDisconnected,
    CameraError,
    CameraTimeout,
    EndOfStream,
    HardwareError,
)
from .frame import Frame

__all__ = [
    "Camera",
    "CameraDisconnected",
    "CameraError",
    "CameraState",
    "CameraStats",
    "CameraStatus",
    "CameraSupervisor",
    "CameraTimeout",
    "EndOfStream",
    "HardwareError",
]

log = logging.getLogger(__name__)

# How long past its timeout a capture may take to return before the capture thread counts as
# hung (stalled_s): a frame that arrives just as the timeout ends still has to be handed over.
CAPTURE_GRACE_S = 1.0


class Camera(abc.ABC):
    """A source of `Frame`s. Lifecycle: start() -> capture()* -> stop() -> close().

    Implementations: `Picamera2Camera` (a Pi camera, or the picamera2 stand-in) and
    `ClipCamera` (a recorded clip). A closed camera is not reopened: make a new one.
    """

    @abc.abstractmethod
    def start(self) -> None:
        """Open and configure the device and start streaming."""

    @abc.abstractmethod
    def capture(self, timeout: float) -> Frame:
        """The next frame; raises CameraTimeout if none arrives within `timeout` seconds."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop streaming (the device stays open)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device. Safe to call twice and without start()."""

    @abc.abstractmethod
    def set_controls(self, controls: dict[str, Any]) -> None:
        """Apply sensor controls (ExposureTime, AnalogueGain, ...) to the following frames."""


class CameraState(str, enum.Enum):
    """What the supervised camera is doing now."""

    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    STALLED = "stalled"
    DISCONNECTED = "disconnected"
    ERROR = "error"
    BACKOFF = "backoff"
    ENDED = "ended"
    STOPPED = "stopped"


@dataclass(frozen=True)
class CameraStats:
    """Counters since the supervisor started."""

    frames: int = 0
    stalls: int = 0
    errors: int = 0
    restarts: int = 0
    sink_errors: int = 0
    last_error: str | None = None


@dataclass(frozen=True)
class CameraStatus:
    """A state change, as handed to `on_status`."""

    state: CameraState
    stats: CameraStats
    error: str | None = None
    retry_in_s: float | None = None


class CameraSupervisor:
    """Runs a camera in its own thread, restarting it with backoff after faults.

    camera_factory: makes a fresh, unopened Camera each time one is needed.
    sink: called with every frame on the capture thread; it must return quickly and never block.
    on_status: optional, called on the capture thread at each state change; must not block.
    """

    def __init__(
        self,
        camera_factory: Callable[[], Camera],
        sink: Callable[[Frame], None],
        *,
        capture_timeout_s: float = 2.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        backoff_factor: float = 2.0,
        on_status: Callable[[CameraStatus], None] | None = None,
        name: str = "camera",
    ) -> None:
        if capture_timeout_s <= 0:
            raise ValueError("capture_timeout_s: must be > 0")
        if backoff_initial_s <= 0 or backoff_max_s < backoff_initial_s or backoff_factor < 1:
            raise ValueError("backoff: need 0 < backoff_initial_s <= backoff_max_s and backoff_factor >= 1")
        self._factory = camera_factory
        self._sink = sink
        self._on_status = on_status
        self._capture_timeout = capture_timeout_s
        self._backoff_initial = backoff_initial_s
        self._backoff_max = backoff_max_s
        self._backoff_factor = backoff_factor
        self._name = name
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._camera: Camera | None = None
        self._state = CameraState.IDLE
        self._counts = {"frames": 0, "stalls": 0, "errors": 0, "restarts": 0, "sink_errors": 0}
        self._last_error: str | None = None
        self._last_frame_monotonic: float | None = None
        # When the camera call the capture thread is in (open, start, capture, close) became
        # overdue, None between calls: a capture is due back within the capture timeout (plus
        # CAPTURE_GRACE_S), the others at once. A plain attribute: one thread writes it,
        # readers only need a recent value.
        self._overdue_from: float | None = None

    # ---- public -------------------------------------------------------------------------
    @property
    def state(self) -> CameraState:
        """The current state."""
        with self._lock:
            return self._state

    def stats(self) -> CameraStats:
        """A snapshot of the counters."""
        with self._lock:
            return CameraStats(last_error=self._last_error, **self._counts)

    def seconds_since_last_frame(self) -> float | None:
        """Seconds since the last frame was delivered, None before the first."""
        with self._lock:
            last = self._last_frame_monotonic
        return None if last is None else time.monotonic() - last

    def stalled_s(self) -> float:
        """Seconds the capture thread's current camera call has overrun, 0 between calls.

        A capture is allowed the capture timeout (plus CAPTURE_GRACE_S); opening a camera
        takes a second or two and counts from its start. A large figure means the driver hung
        (libcamera stuck acquiring the sensor, say): nothing in this thread can end that, but a
        watchdog can restart the process.
        """
        since = self._overdue_from
        return 0.0 if since is None else max(0.0, time.monotonic() - since)

    @contextlib.contextmanager
    def _camera_call(self, allowed_s: float = 0.0) -> Iterator[None]:
        """Mark a call into the camera, overdue after `allowed_s` (see stalled_s)."""
        self._overdue_from = time.monotonic() + allowed_s
        try:
            yield
        finally:
            self._overdue_from = None

    def start(self) -> None:
        """Start the capture thread (once)."""
        if self._thread is not None:
            raise RuntimeError(f"{self._name}: supervisor already started")
        self._thread = threading.Thread(target=self._run, name=f"{self._name}-capture", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float | None = None) -> bool:
        """Ask the thread to stop and join it; True if it ended in time.

        The default bound is the capture timeout plus one second, since a capture already in
        progress is allowed to finish or time out.
        """
        self._stop.set()
        thread = self._thread
        if thread is None:
            return True
        thread.join(self._capture_timeout + 1.0 if timeout_s is None else timeout_s)
        if thread.is_alive():
            log.warning("%s: capture thread did not stop within the bound", self._name)
            return False
        return True

    def close(self) -> None:
        """Stop the thread. Safe to call twice."""
        self.stop()

    def set_controls(self, controls: dict[str, Any]) -> None:
        """Forward controls to the running camera; dropped (and logged) when none is open."""
        with self._lock:
            camera = self._camera
        if camera is None:
            log.info("%s: no camera open, controls %s not applied", self._name, sorted(controls))
            return
        camera.set_controls(controls)

    # ---- thread ------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = self._backoff_initial
        attempt = 0
        while not self._stop.is_set():
            if attempt > 0:
                self._count("restarts")
            attempt += 1
            got_frame = False
            try:
                got_frame = self._open_and_stream()
            except EndOfStream:
                self._set_state(CameraState.ENDED)
                log.info("%s: source ended", self._name)
                break
            except CameraTimeout as exc:
                self._fault("stalls", CameraState.STALLED, exc)
            except CameraDisconnected as exc:
                self._fault("errors", CameraState.DISCONNECTED, exc)
            except Exception as exc:  # noqa: BLE001 - a backend bug must not kill the node: count, restart
                self._fault("errors", CameraState.ERROR, exc, with_traceback=not isinstance(exc, HardwareError))
            finally:
                self._close_camera()
            if self._stop.is_set():
                break
            if got_frame:
                backoff = self._backoff_initial
            self._set_state(CameraState.BACKOFF, retry_in_s=backoff)
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * self._backoff_factor, self._backoff_max)
        if self.state is not CameraState.ENDED:
            self._set_state(CameraState.STOPPED)

    def _open_and_stream(self) -> bool:
        """Open a camera and deliver frames until stop; returns whether any frame arrived."""
        self._set_state(CameraState.STARTING)
        with self._camera_call():
            camera = self._factory()
            with self._lock:
                self._camera = camera
            camera.start()
        got_frame = False
        while not self._stop.is_set():
            with self._camera_call(self._capture_timeout + CAPTURE_GRACE_S):
                frame = camera.capture(self._capture_timeout)
            if not got_frame:
                got_frame = True
                self._set_state(CameraState.RUNNING)
            with self._lock:
                self._counts["frames"] += 1
                self._last_frame_monotonic = time.monotonic()
            self._deliver(frame)
        return got_frame

    def _deliver(self, frame: Frame) -> None:
        try:
            self._sink(frame)
        except Exception:  # a consumer bug must not stop capture
            self._count("sink_errors")
            log.exception("%s: frame sink raised; frame %d dropped", self._name, frame.index)

    def _close_camera(self) -> None:
        with self._lock:
            camera, self._camera = self._camera, None
        if camera is None:
            return
        try:
            with self._camera_call():
                camera.close()
        except Exception:  # closing a broken camera may fail too; the next open is what matters
            log.warning("%s: close after fault failed", self._name, exc_info=True)

    def _fault(self, counter: str, state: CameraState, exc: BaseException, with_traceback: bool = False) -> None:
        message = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._counts[counter] += 1
            self._last_error = message
        log.warning("%s: %s (%s)", self._name, state.value, message, exc_info=with_traceback)
        self._set_state(state, error=message)

    def _count(self, counter: str) -> None:
        with self._lock:
            self._counts[counter] += 1

    def _set_state(self, state: CameraState, error: str | None = None, retry_in_s: float | None = None) -> None:
        with self._lock:
            changed = state is not self._state
            self._state = state
        if changed and self._on_status is not None:
            try:
                self._on_status(CameraStatus(state, self.stats(), error, retry_in_s))
            except Exception:  # a status listener bug must not stop capture
                log.exception("%s: on_status raised", self._name)
