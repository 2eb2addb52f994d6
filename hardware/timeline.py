"""The replay clock shared by a clip's camera and its GPIO pins, so both stay in step.

Clip times (`t_ns` since clip start) map to replay times on the monotonic clock:
``replay_ns = origin_ns + t_ns``, where origin is the monotonic time at start(). Frames and trigger
events replayed from one clip therefore carry timestamps on the same clock, as they would live.

speed > 0: real time scaled by `speed` (1.0 = as recorded); waits really sleep.
speed == 0: as fast as possible; the position only moves when the camera advances it, and every
listener is told first, so pins fire before the frame they precede is returned (deterministic).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable


class ReplayTimeline:
    """Maps clip time to replay time at a given speed; see the module docstring."""

    def __init__(self, speed: float = 1.0, clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        if speed < 0:
            raise ValueError("speed: must be >= 0 (0 = as fast as possible)")
        self.speed = float(speed)
        self._clock = clock_ns
        self._lock = threading.RLock()
        self._origin_ns: int | None = None
        self._position_ns = 0  # clip time reached, fast mode only
        self._listeners: list[Callable[[int], None]] = []

    @property
    def fast(self) -> bool:
        """True when replaying as fast as possible."""
        return self.speed == 0

    @property
    def started(self) -> bool:
        """Whether start() has fixed the origin."""
        return self._origin_ns is not None

    def start(self) -> None:
        """Fix the origin at the current monotonic time; later calls do nothing."""
        with self._lock:
            if self._origin_ns is None:
                self._origin_ns = self._clock()

    def add_listener(self, listener: Callable[[int], None]) -> None:
        """Call `listener(clip_t_ns)` whenever the camera is about to hand out the frame at clip_t_ns."""
        with self._lock:
            self._listeners.append(listener)

    def position_ns(self) -> int:
        """Clip time reached now."""
        with self._lock:
            origin = self._require_origin()
            if self.fast:
                return self._position_ns
            return int((self._clock() - origin) * self.speed)

    def to_replay_ns(self, clip_t_ns: int) -> int:
        """The monotonic timestamp a clip time is replayed as."""
        with self._lock:
            return self._require_origin() + clip_t_ns

    def now_ns(self) -> int:
        """Replay time now, on the same scale as frame timestamps (use as the pins' clock)."""
        return self.to_replay_ns(self.position_ns())

    def set_position(self, clip_t_ns: int) -> None:
        """Fast mode only: move the position forward (used while driving pins in order)."""
        with self._lock:
            if not self.fast:
                raise RuntimeError("set_position: only in fast mode (speed 0)")
            self._position_ns = max(self._position_ns, clip_t_ns)

    def wait_until(self, clip_t_ns: int, timeout_s: float, stop: threading.Event) -> bool:
        """Wait until clip time `clip_t_ns`; False if `timeout_s` or `stop` came first.

        In fast mode returns True at once; `advance_to` moves the position.
        """
        if self.fast:
            return not stop.is_set()
        remaining_s = (clip_t_ns - self.position_ns()) / self.speed / 1e9
        if remaining_s <= 0:
            return not stop.is_set()
        if remaining_s > timeout_s:
            stop.wait(timeout_s)
            return False
        return not stop.wait(remaining_s)

    def advance_to(self, clip_t_ns: int) -> None:
        """Tell listeners the frame at clip_t_ns is due, then (fast mode) move the position there."""
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(clip_t_ns)
        if self.fast:
            self.set_position(clip_t_ns)

    def _require_origin(self) -> int:
        if self._origin_ns is None:
            raise RuntimeError("ReplayTimeline: start() has not been called")
        return self._origin_ns
