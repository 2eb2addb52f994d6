"""Records a live camera and its trigger inputs into a clip (see clip.py), without ever blocking capture.

    writer = ClipWriter(path, CameraSettings(...))
    recorder = ClipRecorder(writer)
    recorder.start()
    supervisor = CameraSupervisor(factory, recorder.put_frame)     # frames
    TriggerInput(17, on_trigger=recorder.put_trigger, ...)         # GPIO edges
    ...
    clip = recorder.stop()                                          # writes clip.json, returns the Clip

Clip time 0 is the moment start() is called, on the monotonic clock that frames and trigger
events are stamped with. Frames are encoded on the recorder's own thread; when it falls behind
the oldest queued frames are dropped (and counted), never the capture.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

from .clip import Clip, ClipWriter
from .frame import Frame
from .frame_queue import FrameQueue
from .gpio import TriggerEvent

log = logging.getLogger(__name__)

_KEPT_METADATA = ("ExposureTime", "AnalogueGain", "DigitalGain", "Lux", "LensPosition", "FrameDuration")


class ClipRecorder:
    """Feeds frames and trigger events into a ClipWriter from a thread of its own."""

    def __init__(self, writer: ClipWriter, *, queue_size: int = 16, join_timeout_s: float = 10.0,
                 clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self._writer = writer
        self._queue = FrameQueue(queue_size)
        self._clock = clock_ns
        self._join_timeout = join_timeout_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._origin_ns: int | None = None
        self._lock = threading.Lock()
        # Edges wait here for the writer thread, so the GPIO callback thread never waits behind a
        # frame's JPEG encode: while it waited, a pulse shorter than the encode would be over
        # when the adapter reads the pin, and be dropped as a bounce. (append / popleft are
        # atomic: no lock.) Edges are few; the bound only stops a runaway input.
        self._edges: collections.deque[TriggerEvent] = collections.deque(maxlen=100_000)
        self._last_t_ns = -1
        self.frames_written = 0
        self.frames_skipped = 0
        self._clip: Clip | None = None

    @property
    def dropped(self) -> int:
        """Frames dropped because encoding fell behind."""
        return self._queue.dropped

    def start(self) -> None:
        """Fix clip time 0 and start the writer thread."""
        if self._thread is not None:
            raise RuntimeError("ClipRecorder: already started")
        self._origin_ns = self._clock()
        self._thread = threading.Thread(target=self._run, name="clip-recorder", daemon=True)
        self._thread.start()

    def put_frame(self, frame: Frame) -> None:
        """A CameraSupervisor sink: never blocks."""
        self._queue.put(frame)

    def put_trigger(self, event: TriggerEvent) -> None:
        """A TriggerInput on_trigger callback: records the edge at its time."""
        origin = self._origin_ns
        if origin is None or event.time_ns < origin:
            return
        self._edges.append(event)

    def _write_edges(self) -> None:
        origin = self._origin_ns or 0
        while self._edges:
            event = self._edges.popleft()
            with self._lock:
                self._writer.add_trigger(event.pin, event.edge, event.time_ns - origin, name=event.name)

    def _run(self) -> None:
        while not self._stop.is_set():
            frame = self._queue.get(timeout=0.1)
            self._write_edges()
            if frame is not None:
                self._write(frame)

    def _write(self, frame: Frame) -> None:
        origin = self._origin_ns or 0
        t_ns = frame.timestamp_ns - origin
        if t_ns < 0 or t_ns <= self._last_t_ns:
            self.frames_skipped += 1  # before start, or a repeated timestamp
            return
        metadata = {k: frame.metadata[k] for k in _KEPT_METADATA
                    if isinstance(frame.metadata.get(k), (int, float)) and not isinstance(frame.metadata[k], bool)}
        try:
            with self._lock:
                self._writer.add_frame(frame.main, t_ns, metadata)
        except (ValueError, OSError) as exc:
            self.frames_skipped += 1
            log.warning("recorder: frame %d not written: %s", frame.index, exc)
            return
        self._last_t_ns = t_ns
        self.frames_written += 1

    def stop(self) -> Clip:
        """Write what is queued, close the writer and return the loaded clip. Safe to call twice."""
        if self._clip is not None:
            return self._clip
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(self._join_timeout)
            if thread.is_alive():
                log.warning("recorder thread did not stop within %.1fs", self._join_timeout)
        while (frame := self._queue.get(timeout=0)) is not None:
            self._write(frame)
        self._queue.close()
        self._write_edges()
        with self._lock:
            self._clip = self._writer.close()
        return self._clip
