"""CameraSupervisor: stalls reported, backoff between reopen attempts, recovery, counters, bounded stop."""
import itertools
import threading
import time
from typing import Any

import numpy as np
import pytest

from hardware.camera import Camera, CameraState, CameraStatus, CameraSupervisor
from hardware.errors import CameraError, CameraTimeout, EndOfStream
from hardware.frame import Frame
from hardware.frame_queue import FrameQueue
from hardware.picamera2_backend import Picamera2Camera, Picamera2Config
from hardware.standin_picamera2 import StandinPicamera2Module

pytestmark = pytest.mark.unit

IMG = np.zeros((8, 8, 3), np.uint8)


def frame(i: int) -> Frame:
    return Frame(IMG, IMG, i, i, i, {})


class ScriptedCamera(Camera):
    """Each capture pops the next step: "ok", "stall", "error", "end"."""

    def __init__(self, steps: list[str], opened: list["ScriptedCamera"]) -> None:
        self.steps = steps
        self.closed = 0
        self.n = 0
        opened.append(self)

    def start(self) -> None:
        if self.steps and self.steps[0] == "open_fail":
            self.steps.pop(0)
            raise CameraError("cannot open")

    def capture(self, timeout: float) -> Frame:
        step = self.steps.pop(0) if self.steps else "ok"
        if step == "stall":
            time.sleep(timeout)
            raise CameraTimeout("stalled")
        if step == "error":
            raise CameraError("sensor I/O error")
        if step == "bug":
            raise KeyError("backend bug")
        if step == "end":
            raise EndOfStream("done")
        self.n += 1
        time.sleep(0.001)
        return frame(self.n)

    def stop(self) -> None:
        pass

    def close(self) -> None:
        self.closed += 1

    def set_controls(self, controls: dict[str, Any]) -> None:
        pass


def wait_for(predicate, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.002)
    return False


def test_stall_reported_backoff_retry_and_recovery() -> None:
    script = ["ok", "ok", "stall"]  # first camera: two frames then a stall
    opened: list[ScriptedCamera] = []
    statuses: list[CameraStatus] = []
    open_times: list[float] = []

    def factory() -> ScriptedCamera:
        open_times.append(time.monotonic())
        steps = script if not opened else (["open_fail"] if len(opened) == 1 else ["ok"] * 3 + ["end"])
        return ScriptedCamera(steps, opened)

    queue = FrameQueue(maxsize=100)
    sup = CameraSupervisor(factory, queue.put, capture_timeout_s=0.02, backoff_initial_s=0.02,
                           backoff_max_s=0.2, on_status=statuses.append)
    sup.start()
    assert wait_for(lambda: sup.state is CameraState.ENDED)
    sup.stop()
    states = [s.state for s in statuses]
    assert CameraState.STALLED in states and CameraState.ERROR in states
    assert states.index(CameraState.STALLED) < states.index(CameraState.ERROR)
    assert states[-1] is CameraState.ENDED
    stats = sup.stats()
    assert stats.frames == 5 and stats.stalls == 1 and stats.errors == 1 and stats.restarts == 2
    assert stats.last_error == "CameraError: cannot open"
    assert len(queue) == 5
    assert all(cam.closed >= 1 for cam in opened)  # every camera closed after its fault
    # Backoff doubles after consecutive failures: 0.02 s then 0.04 s.
    gaps = [b - a for a, b in itertools.pairwise(open_times)]
    assert gaps[0] >= 0.02 and gaps[1] >= 0.04
    backoffs = [s.retry_in_s for s in statuses if s.state is CameraState.BACKOFF]
    assert backoffs == [0.02, 0.04]


def test_backoff_is_capped_and_counted_and_never_kills_the_thread() -> None:
    opened: list[ScriptedCamera] = []
    sup = CameraSupervisor(lambda: ScriptedCamera(["bug"], opened), lambda f: None, capture_timeout_s=0.05,
                           backoff_initial_s=0.001, backoff_max_s=0.004)
    sup.start()
    assert wait_for(lambda: sup.stats().errors >= 8)
    assert sup.state in (CameraState.BACKOFF, CameraState.STARTING, CameraState.RUNNING, CameraState.ERROR)
    assert sup.stop(timeout_s=1.0)
    stats = sup.stats()
    assert stats.last_error == "KeyError: 'backend bug'"
    assert stats.restarts >= stats.errors - 1
    assert sup.state is CameraState.STOPPED


def test_sink_never_blocks_capture_and_drops_oldest() -> None:
    opened: list[ScriptedCamera] = []
    queue = FrameQueue(maxsize=3)
    sup = CameraSupervisor(lambda: ScriptedCamera(["ok"] * 20 + ["end"], opened), queue.put)
    sup.start()
    assert wait_for(lambda: sup.state is CameraState.ENDED)
    sup.stop()
    assert len(queue) == 3 and queue.dropped == 17
    assert [queue.get(0).index for _ in range(3)] == [18, 19, 20]  # the newest kept
    assert queue.get(timeout=0.01) is None


def test_sink_exception_counted_capture_continues() -> None:
    opened: list[ScriptedCamera] = []

    def sink(f: Frame) -> None:
        if f.index % 2:
            raise ValueError("consumer bug")

    sup = CameraSupervisor(lambda: ScriptedCamera(["ok"] * 6 + ["end"], opened), sink)
    sup.start()
    assert wait_for(lambda: sup.state is CameraState.ENDED)
    assert sup.stats().frames == 6 and sup.stats().sink_errors == 3


def test_stop_is_bounded_while_stalled() -> None:
    module = StandinPicamera2Module(lambda i: np.zeros((48, 64, 3), np.uint8))
    cfg = Picamera2Config(main_size=(64, 48), lores_size=(32, 24), exposure_us=None)
    sup = CameraSupervisor(lambda: Picamera2Camera(cfg, picamera2_module=module), lambda f: None,
                           capture_timeout_s=0.2, backoff_initial_s=0.05)
    sup.start()
    assert wait_for(lambda: sup.stats().frames > 3)
    module.stall()
    time.sleep(0.05)
    started = time.monotonic()
    assert sup.stop()  # default bound: capture timeout + 1 s
    assert time.monotonic() - started < 1.2
    assert not any(t.name == "camera-capture" for t in threading.enumerate())
    assert module.opened == []  # the camera was closed on the way out
    sup.close()


def test_picamera2_standin_stall_then_disconnect_then_recovery() -> None:
    module = StandinPicamera2Module(lambda i: np.full((48, 64, 3), i % 255, np.uint8))
    cfg = Picamera2Config(main_size=(64, 48), lores_size=(32, 24), exposure_us=None)
    statuses: list[CameraState] = []
    queue = FrameQueue(maxsize=8)
    sup = CameraSupervisor(lambda: Picamera2Camera(cfg, picamera2_module=module), queue.put,
                           capture_timeout_s=0.05, backoff_initial_s=0.01, backoff_max_s=0.05,
                           on_status=lambda s: statuses.append(s.state))
    sup.start()
    assert wait_for(lambda: sup.stats().frames >= 3)
    module.disconnect()  # a pulled cable: frames stop, and restarting fails while unplugged
    assert wait_for(lambda: sup.stats().errors >= 2)
    frames_before = sup.stats().frames
    module.reconnect()
    assert wait_for(lambda: sup.stats().frames > frames_before + 3)
    sup.stop()
    stats = sup.stats()
    assert stats.stalls >= 1 and stats.errors >= 2 and stats.restarts >= 2
    # The camera stays listed, so it shows as stalled (captures time out) and error (start fails),
    # never as disconnected, which is kept for a camera libcamera does not list.
    assert CameraState.STALLED in statuses and CameraState.ERROR in statuses
    assert CameraState.DISCONNECTED not in statuses
    assert statuses[-1] is CameraState.STOPPED
    assert sup.seconds_since_last_frame() is not None


def test_picamera2_standin_no_camera_listed_is_disconnected_until_it_is() -> None:
    module = StandinPicamera2Module(lambda i: np.zeros((48, 64, 3), np.uint8), num_cameras=0)
    cfg = Picamera2Config(main_size=(64, 48), lores_size=(32, 24), exposure_us=None)
    statuses: list[CameraState] = []
    sup = CameraSupervisor(lambda: Picamera2Camera(cfg, picamera2_module=module), lambda f: None,
                           capture_timeout_s=0.2, backoff_initial_s=0.01, backoff_max_s=0.02,
                           on_status=lambda s: statuses.append(s.state))
    sup.start()
    assert wait_for(lambda: sup.stats().errors >= 3)
    assert module.constructed == 0  # every retry stopped at global_camera_info()
    module.num_cameras = 1
    assert wait_for(lambda: sup.stats().frames >= 2)
    sup.stop()
    assert CameraState.DISCONNECTED in statuses and CameraState.RUNNING in statuses


def test_bad_arguments_refused() -> None:
    with pytest.raises(ValueError, match="capture_timeout_s"):
        CameraSupervisor(lambda: None, lambda f: None, capture_timeout_s=0)  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match="backoff"):
        CameraSupervisor(lambda: None, lambda f: None, backoff_initial_s=2, backoff_max_s=1)  # type: ignore[arg-type, return-value]
