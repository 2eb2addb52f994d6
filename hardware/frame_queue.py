"""A bounded, never-blocking frame hand-off between the capture thread and a consumer."""
from __future__ import annotations

import collections
import threading

from .frame import Frame


class FrameQueue:
    """Bounded queue that drops the OLDEST frame when full, so the producer never waits.

    Use `put` as a `CameraSupervisor` sink; the consumer calls `get(timeout)`. For detection the
    newest frame matters most, which is why old frames are the ones dropped.
    """

    def __init__(self, maxsize: int = 4) -> None:
        if maxsize < 1:
            raise ValueError("FrameQueue.maxsize: must be >= 1")
        self._frames: collections.deque[Frame] = collections.deque(maxlen=maxsize)
        self._cond = threading.Condition()
        self._dropped = 0
        self._closed = False

    @property
    def maxsize(self) -> int:
        """The most frames held at once."""
        return int(self._frames.maxlen or 0)

    @property
    def dropped(self) -> int:
        """How many frames were discarded because the consumer fell behind."""
        with self._cond:
            return self._dropped

    def put(self, frame: Frame) -> None:
        """Add a frame without ever blocking; drops the oldest one when full."""
        with self._cond:
            if self._closed:
                return
            if len(self._frames) == self._frames.maxlen:
                self._dropped += 1
            self._frames.append(frame)
            self._cond.notify()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The oldest queued frame, waiting up to `timeout` s; None on timeout or when closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._frames or self._closed, timeout):
                return None
            return self._frames.popleft() if self._frames else None

    def __len__(self) -> int:
        with self._cond:
            return len(self._frames)

    def close(self) -> None:
        """Wake every waiting consumer; later puts are ignored. Safe to call twice."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
