"""A Camera that replays a recorded clip at its recorded timestamps (or as fast as possible)."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .camera import Camera
from .clip import Clip
from .errors import CameraError, CameraTimeout, EndOfStream
from .frame import Frame
from .timeline import ReplayTimeline

log = logging.getLogger(__name__)


class ClipCamera(Camera):
    """Replays `clip` frame by frame.

    speed: 1.0 = real time, 2.0 = twice as fast, 0 = as fast as possible (ignored when a
    `timeline` is given: share one timeline with `ClipPins` to keep triggers in step).
    A gap in the clip longer than the capture timeout looks like a stall (CameraTimeout), as it
    would live. After the last frame capture() raises EndOfStream.
    """

    def __init__(self, clip: Clip, *, speed: float = 1.0, timeline: ReplayTimeline | None = None,
                 start_index: int = 0) -> None:
        self.clip = clip
        self.timeline = timeline if timeline is not None else ReplayTimeline(speed)
        self._stop = threading.Event()
        self._next = start_index
        self._started = False
        self._closed = False
        self._controls: dict[str, Any] = {}
        self._wall_offset_ns = 0

    def start(self) -> None:
        """Start replay (fixes the timeline origin at the first call)."""
        if self._closed:
            raise CameraError(f"{self.clip.path}: ClipCamera is closed")
        if self._started:
            return
        self.timeline.start()
        origin = self.timeline.to_replay_ns(0)
        # Wall clock: as recorded when known, else "now" mapped onto the replay origin.
        if self.clip.start_wall_ns is not None:
            self._wall_offset_ns = self.clip.start_wall_ns - origin
        else:
            self._wall_offset_ns = time.time_ns() - time.monotonic_ns()
        self._stop.clear()
        self._started = True

    def capture(self, timeout: float) -> Frame:
        """The next clip frame, at its time on the timeline."""
        if not self._started:
            raise CameraError(f"{self.clip.path}: capture() before start()")
        if self._next >= len(self.clip):
            raise EndOfStream(f"{self.clip.path}: end of clip after {len(self.clip)} frames")
        index = self._next
        record = self.clip.frames[index]
        if not self.timeline.wait_until(record.t_ns, timeout, self._stop):
            if self._stop.is_set():
                raise CameraError(f"{self.clip.path}: stopped while waiting for frame {index}")
            raise CameraTimeout(f"{self.clip.path}: no frame within {timeout:.3f}s (next is frames[{index}])")
        self.timeline.advance_to(record.t_ns)
        main = self.clip.read_main(index)
        self._next = index + 1
        timestamp = self.timeline.to_replay_ns(record.t_ns)
        return Frame(
            main=main,
            lores=self.clip.make_lores(main),
            timestamp_ns=timestamp,
            wall_time_ns=timestamp + self._wall_offset_ns,
            index=index,
            metadata=self._metadata(record.metadata, record.file),
        )

    def _metadata(self, recorded: dict[str, Any], file: str) -> dict[str, Any]:
        cam = self.clip.camera
        metadata: dict[str, Any] = {"FrameDuration": round(1e6 / cam.fps)}
        if cam.exposure_us is not None:
            metadata["ExposureTime"] = cam.exposure_us
        if cam.analogue_gain is not None:
            metadata["AnalogueGain"] = cam.analogue_gain
        metadata.update(recorded)
        metadata["ClipFile"] = file
        return metadata

    @property
    def position(self) -> int:
        """Index of the next frame (a replacement camera after a fault resumes from here)."""
        return self._next

    def stop(self) -> None:
        """Interrupt a waiting capture and stop replay (position is kept)."""
        self._stop.set()
        self._started = False

    def close(self) -> None:
        """Stop; the clip is not reopened. Safe to call twice."""
        self.stop()
        self._closed = True

    def set_controls(self, controls: dict[str, Any]) -> None:
        """Recorded frames cannot change; controls are only remembered and logged."""
        self._controls.update(controls)
        log.debug("%s: controls %s ignored during replay", self.clip.path, sorted(controls))
