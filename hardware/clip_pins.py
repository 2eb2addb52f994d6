"""Drives stand-in GPIO pins from a clip's recorded trigger events, in step with its camera.

Share one `ReplayTimeline` between `ClipCamera` and `ClipPins`, and give the stand-in GPIO and
the `TriggerInput`s `clock=timeline.now_ns` so every timestamp is on the replay clock:

    timeline = ReplayTimeline(speed)
    gpio = StandinGPIO(clock=timeline.now_ns)
    pins = ClipPins(clip, gpio, timeline)
    camera = ClipCamera(clip, timeline=timeline)

Fast mode (speed 0): events due at or before a frame are driven just before that frame is
returned, so a run is deterministic. Real time: a thread drives each event at its time.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from .clip import Clip, TriggerRecord
from .timeline import ReplayTimeline

log = logging.getLogger(__name__)


class ClipPins:
    """Replays `clip.triggers` onto a stand-in GPIO module (anything with drive_high/drive_low)."""

    def __init__(self, clip: Clip, gpio: Any, timeline: ReplayTimeline, *, join_timeout_s: float = 2.0) -> None:
        self.clip = clip
        self._gpio = gpio
        self.timeline = timeline
        self._pending: list[TriggerRecord] = list(clip.triggers)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._join_timeout = join_timeout_s
        self._driven = 0
        self._started = False
        timeline.add_listener(self._drive_due)

    @property
    def driven(self) -> int:
        """How many recorded events have been driven so far."""
        with self._lock:
            return self._driven

    @property
    def remaining(self) -> int:
        """How many recorded events are still to come."""
        with self._lock:
            return len(self._pending)

    def start(self) -> None:
        """Start replay (starts the timeline if the camera has not yet)."""
        if self._started:
            return
        self._started = True
        self.timeline.start()
        if not self.timeline.fast:
            self._thread = threading.Thread(target=self._run, name="clip-pins", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                if not self._pending:
                    return
                due = self._pending[0].t_ns
            # Wait in slices so stop() is honoured promptly whatever the gap.
            if self.timeline.wait_until(due, 0.2, self._stop):
                self._drive_due(due)

    def _drive_due(self, clip_t_ns: int) -> None:
        """Drive every pending event at or before clip_t_ns, in order."""
        if not self._started:
            return
        while True:
            with self._lock:
                if not self._pending or self._pending[0].t_ns > clip_t_ns:
                    return
                event = self._pending.pop(0)
                self._driven += 1
            if self.timeline.fast:
                self.timeline.set_position(event.t_ns)
            when = self.timeline.to_replay_ns(event.t_ns)
            log.debug("clip %s: driving BCM %d %s at t=%d ns", self.clip.path, event.pin, event.edge, event.t_ns)
            if event.edge == "rising":
                self._gpio.drive_high(event.pin, time_ns=when)
            else:
                self._gpio.drive_low(event.pin, time_ns=when)

    def stop(self) -> None:
        """Stop the replay thread (joined with a timeout). Safe to call twice."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(self._join_timeout)
            if thread.is_alive():
                log.warning("clip-pins thread did not stop within %.1fs", self._join_timeout)

    def close(self) -> None:
        """Same as stop()."""
        self.stop()
