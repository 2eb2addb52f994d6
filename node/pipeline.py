"""The vision pipeline: frames → (trigger-gated) detection → OCR → tracking → voting → reads.

    camera thread ──► bounded frame queue ──► worker thread ──► ReadSink (outbox, fsync)
          (never blocks: a full queue drops its oldest frame and counts it)

Triggers (GPIO edges) arrive on the GPIO library's thread and are only queued; the worker
turns them into passes (windows of frame time) and decides per frame whether to detect.
Every pass ends in at least one read or in a "no_read" event with its best frame (a trigger
that chatters past `max_no_reads_per_min` has the rest counted, in its next event's `suppressed`),
unless another trigger's pass was credited with the read of the same vehicle (a loop and a beam
on one lane, a radar over the lanes: see _same_vehicle). A pass stays open, and detecting, for as
long as its trigger stays active, past max_window_s if need be (see _overdue).
"""
from __future__ import annotations

import collections
import io
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from PIL import Image

from hardware.camera import CameraState, CameraSupervisor
from hardware.frame import Frame
from hardware.frame_queue import FrameQueue
from hardware.gpio import TriggerEvent
from inference.recognizer import expand_box
from node.accounting import CaptureAccounting, Pass
from node.config import lookback_frames
from node.sink import ReadSink
from node.tracker import Observation, Track, Tracker
from node.voting import Vote, vote
from transport.payload import Candidate, ReadPayload

log = logging.getLogger(__name__)
MAX_PLATES_PER_FRAME = 8
DEDUP_MIN_CANDIDATE_CONF = 0.2
# An alternative reading ties two reads together only if it scores at least this share of the
# read's top candidate: a runner-up far behind (8 read as 3 at 0.25 against 0.7) is a different
# vehicle with a similar plate, not the same one again.
DEDUP_CANDIDATE_RATIO = 0.5
# Passes open at once. Each holds its best frame (a full-resolution image: about 6 MB at 1080p)
# until it closes, and every active edge opens one: a loop or beam that chatters (a fault,
# interference, bouncetime 0) would otherwise pile up one per edge for window_after_s each. Far
# above what lanes x vehicles close behind each other need; beyond it the oldest pass is closed
# early, as the tracker closes its oldest track, so it still ends in a read or a no_read (or is
# counted in the next one's `suppressed`, see NO_READ_WINDOW_NS).
MAX_OPEN_PASSES = 32
# A trigger that chatters (a faulty loop, interference, a bouncetime of 0) closes a pass without a
# read per edge, and each no_read event carries a 960-px JPEG: at most max_no_reads_per_min are
# sent per trigger in any minute; the rest are counted (capture accounting keeps every pass) and
# the next one sent says how many it stands for (`suppressed`).
NO_READ_WINDOW_NS = 60 * 10**9
# A read whose track has closed and whose commit failed (a disk I/O error, a full disk) has no
# other copy: the track has left the tracker. It is held here and committed again on later worker
# iterations, and its pass waits for it rather than reporting a false no_read. Held as the built
# payload (a crop JPEG and at most one overview JPEG, some 200 kB), not as the track and its crops.
# Bounded: beyond it the oldest is dropped, logged and counted (reads_lost). A disk that fails this
# long fails the no_read events and every other commit too, which the outbox health reports.
MAX_HELD_READS = 32
# Between tries of one held read (pipeline clock): doubled after each failure up to the maximum,
# so a dead disk costs one failed commit per read every few seconds, not one per frame.
HELD_RETRY_FIRST_NS = 500 * 10**6
HELD_RETRY_MAX_NS = 10 * 10**9
# Continuous mode with detect_rate_hz > 0: a track stays open at least this many detection
# intervals (its plate is seen once per interval; one missed detection must not end it).
TRACK_TIMEOUT_INTERVALS = 2.5
# A track in view longer than max_window_s that is not sent yet (too few or too weak readings so
# far) is judged again at most this often (pipeline clock).
EARLY_READ_RETRY_NS = 10**9
# Reads (and repeats) credited to passes, kept to tell whether a pass closing without a read saw
# the same vehicle as another trigger's pass (_covered_by). Only those whose passes overlap a pass
# still open matter: far more than MAX_OPEN_PASSES passes' worth.
MAX_CREDITS = 4 * MAX_OPEN_PASSES
# A point or a box in the camera image as fractions of its width and height (see TriggerSpec.region).
Point = tuple[float, float]
Region = tuple[float, float, float, float]


@dataclass(frozen=True)
class PipelineSettings:
    """How the pipeline decides what to read (validated in node.config)."""

    mode: str = "triggered"             # "triggered" | "continuous"
    detect_rate_hz: float = 0.0         # continuous mode: 0 = every frame
    window_before_s: float = 0.3
    window_after_s: float = 1.0
    max_window_s: float = 10.0
    retrigger_merge_s: float = 0.0  # see node.config: off unless a site sets it
    track_timeout_s: float = 0.6
    min_observations: int = 2
    min_confidence: float = 0.3
    min_plate_chars: int = 2
    dedup_window_s: float = 60.0
    queue_size: int = 8
    lossless_replay: bool = False       # clip at speed 0 only: the camera waits for the worker
    overview: bool = False
    node_id: str = ""
    site_id: str = ""
    camera_id: str = ""
    default_lane: str = "1"
    max_no_reads_per_min: int = 6       # per trigger (see NO_READ_WINDOW_NS)
    fps: float = 30.0                   # the source's frame rate: sizes the look-back (window_before_s)


@dataclass(frozen=True)
class TriggerSpec:
    """What a trigger input means: its lane, what kind of sensor it is, and where in the image
    its vehicles' plates appear (`region`: x0, y0, x1, y1 as fractions of the frame; None:
    anywhere, so only time ties a read to its passes)."""

    name: str
    lane: str
    kind: str
    region: Region | None = None


@dataclass
class _Pass(Pass):
    """A pass as the pipeline keeps it.

    `follow_on`: not a vehicle its trigger announced but what the trigger covers after its pass
    was read while it stayed active past max_window_s (a stuck input, or traffic past a vehicle
    standing on it; see _overdue). It carries the trigger's id so its reads name the trigger, but
    it is not counted in capture accounting and never ends in a no_read: no new activation said
    a vehicle was there.
    """

    follow_on: bool = False


@dataclass(frozen=True, eq=False)
class _Credit:
    """A read or a repeat credited to pass `pass_`: the span its track was seen in, and where its
    plate was in its best frame (None: not known).

    `covered`: the triggers one of whose passes it has already been counted for (_covered_by). One
    vehicle sets off each other trigger once: a second pass of the same trigger is another vehicle
    (a loop held occupied by two close vehicles, and the beam that parts them), not this one again.
    Shared with the held read it came from (_Pending.covered), so a retry keeps what it covered.
    """

    pass_: Pass
    first_ns: int
    last_ns: int
    point: Point | None
    covered: set[str] = field(default_factory=set)


@dataclass
class _Sighting(Observation):
    """An observation that also says where its plate was in the frame."""

    # The centre of `box` as fractions of the main image it was measured in. Regions are given in
    # fractions because the detector's lores stream and the main stream show the same field of
    # view at different sizes: a fraction is the same in both, a pixel position is not.
    centre: Point | None = None


@dataclass
class _Sent:
    """A plate sent within the dedup window."""

    seen_ns: int
    strong: frozenset[str]              # its top text and the alternatives close to it (see _strong)
    alerted: set[str] = field(default_factory=set)  # hot-list entries its reads alerted on
    seq: int | None = None  # the outbox seq of the read sent: what the log names instead of the plate


@dataclass
class _Pending:
    """A read built from a track, with what the pipeline does once it is committed (_committed).

    What a held read (see MAX_HELD_READS) keeps: its pass and dedup entry are decided when the
    track is judged, so a later try credits the same pass and records the same plate.
    """

    track_id: int
    read: ReadPayload
    pass_: Pass | None                  # the pass it is credited to (None: continuous, or no region)
    text: str
    strong: frozenset[str]
    seen_ns: int                        # its best observation's time (pipeline clock), for dedup
    hit: dict[str, str] | None          # the hot-list hit found when it was judged
    duplicate_of: str | None            # a plate sent within the dedup window it repeats (an alert)
    overview_jpeg: bytes | None
    overview_wall_ns: int
    frames: int                         # observations in its track, for the log line
    # Its track's time span and where its plate was in the best frame, for _covered_by, and the
    # triggers whose passes it has been counted for while held (see _Credit.covered).
    first_ns: int = 0
    last_ns: int = 0
    point: Point | None = None
    covered: set[str] = field(default_factory=set)
    # Held reads only: failed commits so far, when (pipeline clock) to try next, and the last error.
    attempts: int = 0
    next_try_ns: int = 0
    last_try_ns: int = 0
    error: str = ""


class Pipeline:
    """Owns the camera supervisor and the worker thread; a `Source` for node.runtime."""

    def __init__(self, *, camera_factory: Callable, detector: Any, reader: Any, sink: ReadSink,
                 settings: PipelineSettings, triggers: dict[str, TriggerSpec] | None = None,
                 models: dict[str, str] | None = None, clock_sync: Callable[[], str] = lambda: "unknown",
                 capture_timeout_s: float = 2.0, ends: bool = False,
                 clock_ns: Callable[[], int] = time.monotonic_ns,
                 wall_clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.settings = settings
        self.detector = detector
        self.reader = reader
        self.sink = sink
        self.triggers = triggers or {}
        self.models = models or {}
        self.clock_sync = clock_sync
        self.ends = ends
        # The clock trigger and frame times are on (monotonic live, the replay timeline for clips).
        self.clock_ns = clock_ns
        self.wall_clock_ns = wall_clock_ns  # UTC now, for pass times (and day / night accounting)
        self.done = threading.Event()
        self.accounting = CaptureAccounting()
        self.track_timeout_s = effective_track_timeout_s(settings)
        if self.track_timeout_s != settings.track_timeout_s:
            log.info("pipeline: continuous mode at %g detections/s: tracks close after %.2fs without a sighting "
                     "(pipeline.track_timeout_s %gs is shorter than %g detection intervals)", settings.detect_rate_hz,
                     self.track_timeout_s, settings.track_timeout_s, TRACK_TIMEOUT_INTERVALS)
        self.tracker = Tracker(int(self.track_timeout_s * 1e9))
        if settings.lossless_replay:
            self._frames: Any = queue.Queue(maxsize=settings.queue_size)
            sink_fn = self._put_blocking
        else:
            self._frames = FrameQueue(maxsize=settings.queue_size)
            sink_fn = self._frames.put
        self.camera = CameraSupervisor(camera_factory, sink_fn, capture_timeout_s=capture_timeout_s, name="camera")
        self._trigger_events: queue.Queue = queue.Queue(maxsize=1024)
        self._trigger_overflow = 0
        # Frames kept for a trigger's look-back: window_before_s of them at the source's frame rate
        # (counted in node.config's frame memory budget), and at least what the queue holds.
        recent = lookback_frames(settings.queue_size, settings.window_before_s, settings.fps)
        self._recent: collections.deque[Frame] = collections.deque(maxlen=recent)
        self._detected: collections.deque[int] = collections.deque(maxlen=recent * 2)
        self._passes: list[Pass] = []
        # Reads of closed tracks whose commit failed, oldest first (see MAX_HELD_READS), and the
        # passes that have closed but wait for one of them before they are counted or reported
        # (at most one per held read, so bounded with it).
        self._held: list[_Pending] = []
        self._waiting_passes: list[Pass] = []
        self._recent_plates: collections.OrderedDict[str, _Sent] = collections.OrderedDict()
        # Per trigger: when its last no_read events were sent (pipeline clock), and how many
        # were held back since the last one sent. Bounded by the configured triggers.
        self._no_reads_sent: collections.defaultdict[str, collections.deque[int]] = collections.defaultdict(
            lambda: collections.deque(maxlen=settings.max_no_reads_per_min))
        self._no_reads_held: collections.Counter = collections.Counter()
        # Inputs active now, by trigger name: since when (pipeline clock); and those active longer
        # than max_window_s, already warned about in this activation. Bounded by the inputs.
        self._active: dict[str, int] = {}
        self._active_long: set[str] = set()
        self._credits: collections.deque[_Credit] = collections.deque(maxlen=MAX_CREDITS)
        self._last_detect_ns = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._beat = time.monotonic()  # when the worker last came round its loop (see stalled_s)
        self.stats: dict[str, Any] = collections.Counter()
        self.stage_ms: dict[str, float] = {"detect": 0.0, "ocr": 0.0, "frame": 0.0}
        self._rate_mark = (time.monotonic(), 0)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        log.info("pipeline: %s mode; tracks close after %.2fs without a sighting; %d frames kept for look-back",
                 self.settings.mode, self.track_timeout_s, self._recent.maxlen)
        self._thread = threading.Thread(target=self._run, name="pipeline", daemon=True)
        self._thread.start()
        self.camera.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the camera, then let the worker finish what it has (closing open passes)."""
        deadline = time.monotonic() + timeout
        self.camera.stop(max(0.1, timeout / 2))
        self._stop.set()
        if self._thread is not None:
            self._thread.join(max(0.1, deadline - time.monotonic()))
            if self._thread.is_alive():
                # The reference is kept so alive() stays true: the runtime then leaves the outbox
                # open for the flush still running, rather than closing it under the worker.
                log.error("pipeline: worker did not stop within %.1fs", timeout)
                return
            self._thread = None

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stalled_s(self) -> float:
        """The longer of two hangs (the watchdog's test): seconds since the worker last came
        round its loop (it does so at least every 0.2 s plus one frame's work), and seconds the
        camera thread has been inside one camera call (CameraSupervisor.stalled_s)."""
        return max(0.0, time.monotonic() - self._beat, self.camera.stalled_s())

    def on_trigger(self, event: TriggerEvent) -> None:
        """GPIO callback: queue the event and return at once (runs on the GPIO thread)."""
        try:
            self._trigger_events.put_nowait(event)
        except queue.Full:
            self._trigger_overflow += 1

    def _put_blocking(self, frame: Frame) -> None:
        while not self._stop.is_set():
            try:
                self._frames.put(frame, timeout=0.2)
                return
            except queue.Full:
                continue

    def _get(self) -> Frame | None:
        if isinstance(self._frames, FrameQueue):
            return self._frames.get(timeout=0.2)
        try:
            return self._frames.get(timeout=0.2)
        except queue.Empty:
            return None

    # -- worker ---------------------------------------------------------------------------
    def _run(self) -> None:
        last_ts = 0
        try:
            while True:
                self._beat = time.monotonic()
                frame = self._get()
                if frame is None:
                    ended = self.camera.state is CameraState.ENDED
                    if self._stop.is_set() or (self.ends and ended):
                        break
                    # No frames (a stalled or dead camera): triggers still open and close
                    # passes, so a vehicle passing now still ends in a no-read event.
                    self._idle(self.clock_ns())
                    continue
                started = time.perf_counter()
                last_ts = frame.timestamp_ns
                try:
                    self._take_triggers(frame.timestamp_ns)
                    self._process(frame)
                except Exception:  # one bad frame (or model hiccup) must not stop the node reading
                    self.stats["frame_errors"] += 1
                    log.exception("pipeline: frame %d failed", frame.index)
                self.stage_ms["frame"] = (time.perf_counter() - started) * 1000.0
                self.stats["frames"] += 1
        finally:
            try:
                self._finish(last_ts)
            finally:
                self.done.set()

    def _finish(self, now_ns: int) -> None:
        # Edges queued since the worker last took them (a vehicle arriving as the node stops):
        # their passes close below like the others, so the vehicle is still counted and reported.
        # Their look-back frames are not read: detection and OCR of each (several per pass, at
        # seconds per frame on a Pi) would run inside stop()'s bounded time, and a worker still
        # busy then is abandoned with the outbox left open. Such a pass is credited with the read
        # of a track already open, or ends in a no_read.
        try:
            self._take_triggers(now_ns, replay=False)
        except Exception:  # what is already open must still be flushed
            self.stats["frame_errors"] += 1
            log.exception("pipeline: trigger edges queued at stop could not be taken")
        self._emit_all(self.tracker.close_all())
        # One last try for the reads still held, whatever their backoff; what still fails is
        # logged and counted as lost (held only in memory, it would not survive the exit), and
        # the passes that waited for them close now.
        self._retry_held(force=True)
        self._drop_held(len(self._held), "the pipeline is stopping")
        passes, self._passes = list(self._passes), []
        self._close_all(passes)

    def _emit_all(self, tracks: list[Track], final: bool = True) -> None:
        """Emit each track on its own: one failure must not lose the others.

        `final` is False for tracks still open whose pass is closing (see _close_due_passes).
        """
        for track in tracks:
            try:
                self._emit(track, final=final)
            except Exception:
                self.stats["emit_errors"] += 1
                log.exception("pipeline: track %d could not be sent", track.id)

    def _close_all(self, passes: list[Pass]) -> None:
        for p in passes:
            if self._awaits_held(p):
                # Its read is held for another try: counting the pass now would report a
                # vehicle that was read as a no_read. It closes once that read is committed or
                # dropped (_release).
                self._waiting_passes.append(p)
                continue
            try:
                self._close_pass(p)
            except Exception:
                self.stats["emit_errors"] += 1
                log.exception("pipeline: pass %s could not be closed", p.trigger_id)
            # A closed pass may still be referred to (_credits): not its frame, some 6 MB at 1080p.
            p.best_frame = None

    def _idle(self, now_ns: int) -> None:
        try:
            self._take_triggers(now_ns)
            self._emit_all(self.tracker.expire(now_ns))
            self._retry_held()
            self._check_inputs(now_ns)
            self._close_due_passes(now_ns)
        except Exception:  # see _run: keep reading
            self.stats["frame_errors"] += 1
            log.exception("pipeline: idle step failed")

    def _close_due_passes(self, now_ns: int) -> None:
        grace = int(self.track_timeout_s * 1e9)
        due = []
        for q in list(self._passes):
            if now_ns <= q.end_ns + grace:
                continue
            if q.open_until_inactive:
                self._overdue(q, now_ns)
            else:
                due.append(q)
        if due:
            self._close_passes(due)

    def _overdue(self, q: Pass, now_ns: int) -> None:
        """Pass `q` is past max_window_s and its trigger is still active: it is not closed.

        Closing it used to end detection for that trigger (frames are read only inside a pass)
        and report a no_read while the vehicle still stood on the loop (queued at a light): when
        it drove off, its plate was never read, and a loop stuck active left its lane unread. So
        the pass stays open, and its frames are read, until the trigger is released (then
        window_after_s more, as for any pass). A plate in view all that time is sent once it has
        been in view max_window_s (_emit_long_tracks), as a closing pass sent it before.

        Bounded: once `q` has its read (or a repeat, or a held read), it is closed and counted now,
        and a follow-on pass (see _Pass) takes its place until the trigger is released, replaced
        in turn each time it is credited with a read. A trigger keeps one pass open however long
        it stays active, and one holding only reads, never a backlog of them.
        """
        if not (q.reads or q.duplicates or self._awaits_held(q)):
            return  # its vehicle may still be on the trigger: read it when it leaves
        follow = _Pass(trigger_id=q.trigger_id, trigger_name=q.trigger_name, lane=q.lane, source=q.source,
                       start_ns=now_ns, end_ns=now_ns, wall_ns=self._wall(now_ns), follow_on=True)
        # The same trigger id: q's tracks still in view continue in the follow-on (they are not
        # sent early for q's closing), and its reads name the activation that is still going on.
        self._passes = [p for p in self._passes if p is not q] + [follow]
        self.stats["follow_on_passes"] += 1
        self._close_all([q])

    def _check_inputs(self, now_ns: int) -> None:
        """Warn, once per activation, about an input active longer than max_window_s: a vehicle
        stopped on it, or a stuck input (a loop detector failed "occupied"). The heartbeat
        reports it as long as it lasts (health: inputs_active_long)."""
        limit = int(self.settings.max_window_s * 1e9)
        for name, since in self._active.items():
            if name in self._active_long or now_ns - since <= limit:
                continue
            self._active_long.add(name)
            self.stats["inputs_active_long"] += 1
            spec = self.triggers.get(name)
            log.warning("trigger %s (lane %s): input active for more than %gs (pipeline.max_window_s): a vehicle "
                        "stopped on it, or the input is stuck; its plates are still read while it stays active",
                        name, spec.lane if spec is not None else self.settings.default_lane,
                        self.settings.max_window_s)

    def _close_passes(self, due: list[Pass]) -> None:
        """Close `due` (passes in self._passes): send the reads of their plates still in view, then
        each pass's read accounting or no_read event."""
        due_ids = {q.trigger_id for q in due}
        # A plate can stay in view after its pass's window (a slow vehicle, or one that stops
        # past the loop). Waiting for its track to end would credit the read to whichever pass
        # is open then, and report this one as a false no_read: send it now, for this pass.
        tracks = self.tracker.open_tracks()
        send = [t for t in tracks if t.trigger_id in due_ids]
        chosen = {id(t) for t in send}
        # Likewise a plate this pass saw that another trigger's pass, still open, follows (a beam
        # that clears before the loop beside it): most likely this pass's vehicle too. Its read is
        # sent now, for that pass, so this one is not reported unread (see _covered_by).
        # A pass a read already sent covers needs none sent early (it would go with fewer
        # readings). Which credit covers which is claimed for real as the passes close below
        # (_covered_by), in this order; it is claimed here for the time of this loop only, so that
        # a credit counted for one pass of a trigger is not counted again for the next pass of
        # the same trigger due with it (a credit covers one pass per trigger, see _Credit.covered).
        claimed: list[tuple[_Credit, str]] = []
        try:
            for q in due:
                if q.reads or _follow_on(q) or self._awaits_held(q):
                    continue
                credit = self._cover_for(q)
                if credit is not None:
                    credit.covered.add(q.trigger_name)
                    claimed.append((credit, q.trigger_name))
                    continue
                for t in tracks:
                    own = self._pass_of(t.trigger_id) if t.trigger_id not in due_ids and not t.sent else None
                    if own is not None and id(t) not in chosen and self._same_vehicle(
                            q, own, _first_seen(t), t.last.time_ns, _centre(t.last)):
                        send.append(t)
                        chosen.add(id(t))
        finally:
            for credit, name in claimed:
                credit.covered.discard(name)
        self._emit_all(send, final=False)
        self._passes = [q for q in self._passes if q.trigger_id not in due_ids]
        self._close_all(due)

    def _wall(self, t_ns: int) -> int:
        """A time on the pipeline clock as UTC ns."""
        return self.wall_clock_ns() - (self.clock_ns() - t_ns)

    def _take_triggers(self, now_ns: int, replay: bool = True) -> None:
        """Turn the queued trigger edges into passes (opened, merged, released).

        `replay`: read a new pass's look-back frames (those of `_recent` in its window) now. When
        False (the pipeline stopping, see _finish) they are not read; the newest of them is only
        kept as the pass's frame, for its no_read event.
        """
        while True:
            try:
                event: TriggerEvent = self._trigger_events.get_nowait()
            except queue.Empty:
                return
            spec = self.triggers.get(event.name, TriggerSpec(event.name, self.settings.default_lane, event.kind))
            s = self.settings
            if event.active:
                # (an activation without a release between, a missed edge, keeps the first time)
                self._active.setdefault(event.name, event.time_ns)
                again = self._retriggered(event)
                if again is not None:
                    # the same vehicle: the gap between a tractor and its trailer, a loop
                    # detector's dropout. A second pass would end in a false no_read.
                    again.open_until_inactive = True
                    again.end_ns = self._pass_limit_ns(again)
                    self.stats["retriggers_merged"] += 1
                    continue
                p = _Pass(trigger_id=f"{event.name}-{event.time_ns}", trigger_name=event.name, lane=spec.lane,
                          source=spec.kind,
                          start_ns=event.time_ns - int(s.window_before_s * 1e9),
                          end_ns=event.time_ns + int(s.max_window_s * 1e9), wall_ns=self._wall(event.time_ns))
                self._passes.append(p)
                self.stats["triggers"] += 1
                if len(self._passes) > MAX_OPEN_PASSES:
                    early = self._passes[:len(self._passes) - MAX_OPEN_PASSES]
                    self.stats["passes_closed_early"] += len(early)
                    self._close_passes(early)
                if replay:
                    # Frames just before the trigger are still in hand: read them too.
                    for old in list(self._recent):
                        if old.timestamp_ns >= p.start_ns and old.index not in self._detected:
                            self._process(old, replay=True)
                else:
                    # Not read, only shown: the newest frame in its window (what the camera saw
                    # last), so its no_read still has a picture.
                    last = next((f for f in reversed(self._recent) if f.timestamp_ns >= p.start_ns), None)
                    if last is not None:
                        p.best_frame, p.lux = last, last.metadata.get("Lux")
            else:
                since = self._active.pop(event.name, None)
                if event.name in self._active_long:
                    self._active_long.discard(event.name)
                    log.info("trigger %s: input released after %.1fs active", event.name,
                             (event.time_ns - since) / 1e9 if since is not None else float("nan"))
                after = event.time_ns + int(s.window_after_s * 1e9)
                for p in self._passes:
                    if p.trigger_name == event.name and p.open_until_inactive:
                        p.open_until_inactive = False
                        p.released_ns = event.time_ns
                        # Released after max_window_s (its vehicle stood on the trigger, see
                        # _overdue): it drives off now, so the window after the release still applies.
                        p.end_ns = after if event.time_ns > p.end_ns else min(p.end_ns, after)

    def _retriggered(self, event: TriggerEvent) -> Pass | None:
        """The open pass of this trigger that it released at most `retrigger_merge_s` before
        this activation (the same vehicle), if any."""
        merge_ns = int(self.settings.retrigger_merge_s * 1e9)
        if merge_ns <= 0:
            return None
        for p in reversed(self._passes):
            if (p.trigger_name == event.name and not p.open_until_inactive and p.released_ns is not None
                    and 0 <= event.time_ns - p.released_ns <= merge_ns):
                return p
        return None

    def _pass_limit_ns(self, p: Pass) -> int:
        """The latest a pass may stay open: max_window_s after its trigger (its window starts
        window_before_s before that)."""
        s = self.settings
        return p.start_ns + int(s.window_before_s * 1e9) + int(s.max_window_s * 1e9)

    def _active_pass(self, ts: int) -> Pass | None:
        """The newest pass whose window covers `ts` (a vehicle close behind belongs to its own trigger)."""
        for p in reversed(self._passes):
            if _covers(p, ts):
                return p
        return None

    def _pass_of(self, trigger_id: str | None) -> Pass | None:
        """The open pass with this trigger id (a track's own pass), if any."""
        return next((p for p in self._passes if p.trigger_id == trigger_id), None) if trigger_id else None

    def _region_of(self, p: Pass) -> Region | None:
        spec = self.triggers.get(p.trigger_name)
        return spec.region if spec is not None else None

    def _admits(self, p: Pass, point: Point | None) -> bool:
        """Whether pass `p` may be credited with a plate seen at `point`: any plate if its trigger
        has no region (as before regions existed), else only one whose centre is inside it."""
        region = self._region_of(p)
        return region is None or (point is not None and _inside(region, point))

    def _holds(self, p: Pass, point: Point | None) -> bool:
        """Whether p's trigger has a region and `point` lies in it."""
        region = self._region_of(p)
        return region is not None and point is not None and _inside(region, point)

    def _pass_at(self, ts: int, point: Point | None) -> Pass | None:
        """The pass whose window covers `ts` and whose region (if any) holds `point`: a trigger's
        own pass before a follow-on (_Pass), then one whose region holds the plate before one with
        no region (a radar over both lanes fires with the lane's loop: the loop names the lane),
        then the newest."""
        best, rank = None, (False, False, -1)
        for i, p in enumerate(self._passes):
            if _covers(p, ts) and self._admits(p, point):
                key = (not _follow_on(p), self._holds(p, point), i)
                if key > rank:
                    best, rank = p, key
        return best

    def _lane_at(self, point: Point | None) -> str:
        """The lane a plate seen at `point` is in, for a read credited to no pass: the lane of
        the regions holding it when they agree on one, else the node's own lane."""
        lanes = {spec.lane for spec in self.triggers.values()
                 if spec.region is not None and point is not None and _inside(spec.region, point)}
        return lanes.pop() if len(lanes) == 1 else self.settings.default_lane

    def _in_no_region(self, point: Point | None) -> bool:
        """True when triggers have regions and `point` lies in none of them."""
        regions = [spec.region for spec in self.triggers.values() if spec.region is not None]
        return bool(regions) and not (point is not None and any(_inside(r, point) for r in regions))

    def _process(self, frame: Frame, replay: bool = False) -> None:
        s = self.settings
        if not replay:
            self._recent.append(frame)
        p = self._active_pass(frame.timestamp_ns)
        detect = False
        if s.mode == "continuous":
            period = int(1e9 / s.detect_rate_hz) if s.detect_rate_hz > 0 else 0
            detect = frame.timestamp_ns - self._last_detect_ns >= period
        elif p is not None:
            detect = True
        observations: list[Observation] = []
        if detect:
            self._last_detect_ns = frame.timestamp_ns
            self._detected.append(frame.index)
            observations = self._read_frame(frame, p)
        closed = self._track(observations, frame.timestamp_ns) if observations \
            else self.tracker.expire(frame.timestamp_ns)
        self._emit_all(closed)
        if not replay:
            self._emit_long_tracks(frame.timestamp_ns)
            self._retry_held()
            self._check_inputs(frame.timestamp_ns)
            self._close_due_passes(frame.timestamp_ns)

    def _emit_long_tracks(self, now_ns: int) -> None:
        """Send the read of a plate in view longer than max_window_s (a parked car; in triggered
        mode, one standing on a trigger that stays active, see _overdue) now, rather than when it
        leaves: its hot-list alert must not wait for that. Sent once: the track is marked sent and
        stays open, so the same plate still in view is not taken for a new vehicle. A track that
        does not qualify yet (too few or too weak readings) is judged again later
        (EARLY_READ_RETRY_NS). In triggered mode a pass closes within max_window_s unless its
        trigger stays active, so this only finds the plates of such passes."""
        limit = int(self.settings.max_window_s * 1e9)
        due = [t for t in self.tracker.open_tracks()
               if not t.sent and t.first_seen_ns is not None and now_ns - t.first_seen_ns >= limit
               # (a clock that went back, a replay restarted, must not put a try off for good)
               and not now_ns < t.retry_ns <= now_ns + EARLY_READ_RETRY_NS]
        for track in due:
            track.retry_ns = now_ns + EARLY_READ_RETRY_NS
        self._emit_all(due, final=False)

    def _track(self, observations: list[Observation], ts: int) -> list[Track]:
        """Add one frame's observations to the tracker; returns the tracks that closed.

        A track belongs to the pass open when it is first seen in one (see _pass_for). The
        tracker would give every new track the frame's newest pass; with regions each plate
        must get the pass _pass_at chooses (whose region holds it, preferred to one with no
        region), so the pipeline assigns it here. Without regions (and follow-on passes) this is
        the newest pass, as before.
        """
        closed = self.tracker.update(observations, None)
        this_frame = {id(o) for o in observations}
        for track in closed + self.tracker.open_tracks():
            if id(track.last) not in this_frame:
                continue
            if track.trigger_id is None:
                q = self._pass_at(ts, _centre(track.last))
                track.trigger_id = q.trigger_id if q is not None else None
            if track.sent_as is not None:
                # Its plate, already sent (or suppressed as a repeat), is still in view: it has not
                # been absent, so dedup keeps holding back the next sighting of it.
                self._refresh(track.sent_as, track.last.time_ns)
        return closed

    def _read_frame(self, frame: Frame, p: Pass | None) -> list[Observation]:
        t0 = time.perf_counter()
        # Bounded work per frame: a confused detector must not stall the camera queue.
        detections = sorted(self.detector.detect(frame.lores), key=lambda d: -d.score)[:MAX_PLATES_PER_FRAME]
        t1 = time.perf_counter()
        self.stage_ms["detect"] = (t1 - t0) * 1000.0
        self.stats["detections"] += len(detections)
        main = frame.main
        mh, mw = main.shape[:2]
        lh, lw = frame.lores.shape[:2]
        sx, sy = mw / lw, mh / lh
        observations = []
        overview = _jpeg(_downscale(main, 1280), 70) if self.settings.overview and detections else None
        for det in detections:
            x, y, w, h = det.box
            box = (int(x * sx), int(y * sy), max(1, int(w * sx)), max(1, int(h * sy)))
            cx, cy, cw, ch = expand_box(box, mw, mh)
            if cw < 8 or ch < 4:
                continue
            crop = np.ascontiguousarray(main[cy:cy + ch, cx:cx + cw])
            text = self.reader.read(crop)
            centre = ((box[0] + box[2] / 2) / mw, (box[1] + box[3] / 2) / mh)
            # The no_read frame of a pass is the one with its clearest plate-like detection; with
            # regions, only a detection in its own region counts (not the other lane's plate).
            q = self._pass_at(frame.timestamp_ns, centre) if p is not None else None
            if q is not None and det.score > q.best_score:
                q.best_score, q.best_frame = det.score, frame
                q.lux = frame.metadata.get("Lux")
            observations.append(_Sighting(
                time_ns=frame.timestamp_ns, wall_ns=frame.wall_time_ns, box=box, text=text.text,
                confidence=text.confidence, char_confidences=list(text.char_confidences),
                candidates=list(text.candidates), region=text.region, region_confidence=text.region_confidence,
                crop=crop, detection_score=det.score, overview_jpeg=overview, centre=centre))
        self.stage_ms["ocr"] = (time.perf_counter() - t1) * 1000.0
        if p is not None:
            # A pass with a region may see nothing in it while another lane's plates are read: it
            # still needs a frame for its no_read event. Without regions only the newest pass
            # takes one here, as before.
            for q in self._passes:
                if q.best_frame is None and (q is p or (self._region_of(q) is not None
                                                        and _covers(q, frame.timestamp_ns))):
                    q.best_frame = frame
                    q.lux = frame.metadata.get("Lux")
        return observations

    # -- output ---------------------------------------------------------------------------
    def _emit(self, track: Track, final: bool = True) -> None:
        """Send a track's voted read (or count it as a repeat), credited to its vehicle pass.

        `final` is False when the track is still open but its pass is closing: a track that does
        not qualify yet is left to be judged again when it closes, and one that is sent now is
        marked so it is not sent again then. A read that fails to commit is then also left to its
        track; once the track has closed (`final`) there is no track left to try again, so the
        read itself is held and retried (_hold, _retry_held) and its pass waits for it.

        Its log lines name the track, the outbox seq and the hot-list entry, never the plate text
        or its candidates, at any level: plates are personal data, seen only at HQ through a logged
        login, and the node's journal is readable by other accounts.
        """
        if track.sent:
            return
        s = self.settings
        if len(track.observations) < s.min_observations:
            if final:
                self.stats["tracks_too_short"] += 1
            return
        result = vote(track.observations)
        if len(result.text) < s.min_plate_chars or result.confidence < s.min_confidence:
            if final:
                self.stats["tracks_low_confidence"] += 1
                # no plate text, even at debug (see above)
                log.debug("track %d: best reading (%d characters) at %.2f is below the bar; not sent", track.id,
                          len(result.text), result.confidence)
            return
        best = result.best
        p = self._pass_for(track, best)
        strong = _strong(result.candidates)
        duplicate_of = self._duplicate_of(result.text, strong, best.time_ns)
        hit: dict[str, str] | None = None
        if duplicate_of is not None:
            # Dedup must not cost an alert: this reading (or its alternatives, or a newer list)
            # may match an entry the read already sent did not.
            hit = self.sink.check_hotlist(self._payload(track, result, p, b""))
            earlier = self._recent_plates[duplicate_of]
            if hit is None or str(hit.get("entry")) in earlier.alerted:
                track.sent, track.sent_as = True, duplicate_of
                # The plate is still about (a parked car whose detection flickers): it must be
                # gone for the whole dedup window before it is sent again.
                self._refresh(duplicate_of, track.last.time_ns)
                self.stats["duplicates_suppressed"] += 1
                # hil/runner.py counts " seen again within " in this line
                log.info("track %d: plate seen again within %.0fs (read seq %s): not sent twice", track.id,
                         s.dedup_window_s, earlier.seq)
                if p is not None:
                    p.duplicates.append(duplicate_of)
                    self._credits.append(_Credit(p, _first_seen(track), track.last.time_ns, _centre(best)))
                return
            log.warning("track %d repeats read seq %s within %.0fs but matches hot-list entry %s: sent as an alert",
                        track.id, earlier.seq, s.dedup_window_s, hit.get("entry"))
        else:
            point = _centre(best)
            p = self._spare_pass(track, p, point)
            if p is None and self._in_no_region(point):
                # Still sent: a read (and its hot-list check) is never dropped for where it was
                # seen. Counted and logged with its position, not its text, so that a region
                # drawn too tight shows in the heartbeat and the journal.
                self.stats["reads_outside_regions"] += 1
                log.info("track %d: plate centre at %s of the frame is in no trigger's region: read sent for "
                         "no pass", track.id, f"({point[0]:.2f}, {point[1]:.2f})" if point else "(unknown)")
        read = self._payload(track, result, p, _jpeg(best.crop, 90))
        if duplicate_of is None:
            # The sink matches again as it commits; asked here too, so that dedup knows which
            # entry this plate has already alerted on.
            hit = self.sink.check_hotlist(read)
        pending = _Pending(track_id=track.id, read=read, pass_=p, text=result.text, strong=strong,
                           seen_ns=best.time_ns, hit=hit, duplicate_of=duplicate_of,
                           overview_jpeg=best.overview_jpeg, overview_wall_ns=best.wall_ns,
                           frames=len(track.observations), first_ns=_first_seen(track),
                           last_ns=track.last.time_ns, point=_centre(best))
        try:
            seq = self.sink.submit_read(read)
        except Exception as exc:
            if not final:
                raise  # the track is still open: it is judged and sent again when it closes
            # The track has closed: this payload is the read's only copy. Keep it and try again.
            self._hold(pending, exc)
            return
        # Only now that it is committed: a failed commit leaves the track to be tried again.
        track.sent, track.sent_as = True, duplicate_of or result.text
        self._committed(pending, seq)
        if duplicate_of is not None:
            self._refresh(duplicate_of, track.last.time_ns)

    def _committed(self, pending: _Pending, seq: int) -> None:
        """What follows a read's commit (as seq): dedup, its pass's credit, its overview image."""
        if pending.duplicate_of is None:
            self._remember(pending.text, pending.strong, pending.seen_ns, pending.hit, seq)
        elif pending.hit is not None:
            self.stats["duplicate_alerts"] += 1
            # A held read may outlive the dedup entry it repeats (window or bound): nothing to mark.
            earlier = self._recent_plates.get(pending.duplicate_of)
            if earlier is not None:
                earlier.alerted.add(str(pending.hit.get("entry")))
        self.stats["reads"] += 1
        read = pending.read
        # hil/nodelog.py parses "read <one word> (<conf>) seq <n>, ... trigger <id>": the word is
        # the track, not the plate
        log.info("read track-%d (%.2f) seq %d, %d frames, %s, trigger %s", pending.track_id, read.confidence, seq,
                 pending.frames, read.direction, read.trigger_id)
        # Credited before the overview is committed: the read is durable whatever happens to it.
        if pending.pass_ is not None:
            pending.pass_.reads.append(seq)
            self._credits.append(_Credit(pending.pass_, pending.first_ns, pending.last_ns, pending.point,
                                         pending.covered))
        if pending.overview_jpeg is not None:
            # A separate, lower-priority message: under the outbox quota it goes before any read.
            try:
                self.sink.submit_overview(seq, pending.overview_jpeg, pending.overview_wall_ns)
            except Exception:  # the read is committed: its picture alone must not undo that
                self.stats["emit_errors"] += 1
                log.exception("pipeline: overview of read seq %d could not be committed", seq)

    # -- reads held after a failed commit (see MAX_HELD_READS) ----------------------------
    def _hold(self, pending: _Pending, exc: Exception) -> None:
        """Keep the read of a closed track whose commit failed, to be tried again (_retry_held)."""
        _failed_try(pending, self.clock_ns(), exc)
        self._held.append(pending)
        self.stats["emit_errors"] += 1
        self.stats["reads_held"] += 1
        # The track and trigger, never the plate (see _emit); the traceback says where it failed.
        log.warning("pipeline: read of track %d (trigger %s) could not be committed; held for another try "
                    "(%d held)", pending.track_id, pending.read.trigger_id, len(self._held), exc_info=exc)
        self._drop_held(len(self._held) - MAX_HELD_READS, f"more than {MAX_HELD_READS} reads were waiting")

    def _retry_held(self, force: bool = False) -> None:
        """Try again to commit the held reads whose backoff has passed (`force`: all of them)."""
        if not self._held:
            return
        now = self.clock_ns()
        failed, error = 0, ""
        for pending in list(self._held):
            # A clock that went back (a replay restarted) must not put a try off for good.
            if not force and pending.last_try_ns <= now < pending.next_try_ns:
                continue
            try:
                seq = self.sink.submit_read(pending.read)
            except Exception as exc:  # any failure: the read stays held and backs off, never retried per frame
                failed += 1
                _failed_try(pending, now, exc)
                error = pending.error
                continue
            self._held.remove(pending)
            self.stats["held_reads_committed"] += 1
            log.info("pipeline: held read of track %d committed as seq %d after %d failed tries",
                     pending.track_id, seq, pending.attempts)
            try:
                self._committed(pending, seq)
            except Exception:  # committed: it must not be held again, nor stop the others' tries
                self.stats["emit_errors"] += 1
                log.exception("pipeline: held read of track %d was committed as seq %d but not recorded",
                              pending.track_id, seq)
            self._release(pending)
        if failed:
            # One line per round, not per read: the backoff keeps rounds seconds apart.
            log.warning("pipeline: %d held read(s) still could not be committed (last error: %s); %d waiting",
                        failed, error, len(self._held))

    def _drop_held(self, count: int, why: str) -> None:
        """Give up on the `count` oldest held reads: logged as lost, and their passes closed."""
        if count <= 0:
            return
        dropped, self._held = self._held[:count], self._held[count:]
        self.stats["reads_lost"] += len(dropped)
        log.error("pipeline: %d read(s) lost: never committed (last error: %s) and dropped because %s; tracks %s",
                  len(dropped), dropped[-1].error, why, ", ".join(str(d.track_id) for d in dropped))
        for pending in dropped:
            self._release(pending)

    def _awaits_held(self, p: Pass) -> bool:
        """Whether a held read is credited to pass `p`."""
        return any(pending.pass_ is p for pending in self._held)

    def _release(self, pending: _Pending) -> None:
        """Close the pass that waited for `pending` (committed or dropped), if it waits for no other."""
        p = pending.pass_
        if p is None or self._awaits_held(p) or not any(q is p for q in self._waiting_passes):
            return
        self._waiting_passes = [q for q in self._waiting_passes if q is not p]
        self._close_all([p])

    def _payload(self, track: Track, result: Vote, p: Pass | None, crop_jpeg: bytes) -> ReadPayload:
        """The read for a track's vote, credited to pass `p` (None: continuous mode)."""
        s, best = self.settings, result.best
        return ReadPayload(
            plate=result.text, confidence=result.confidence, capture_time_ns=best.wall_ns,
            node_id=s.node_id, site_id=s.site_id, camera_id=s.camera_id, crop_jpeg=crop_jpeg,
            char_confidences=tuple(result.char_confidences),
            candidates=tuple(Candidate(t, c) for t, c in result.candidates), region=result.region,
            region_confidence=result.region_confidence, clock_sync=self.clock_sync(), direction=track.direction(),
            trigger_source=p.source if p else "continuous", trigger_id=p.trigger_id if p else track.trigger_id,
            lane=p.lane if p else self._lane_at(_centre(best)), box=best.box, models=self.models,
        )

    # Crediting reads to passes goes by time, and by place where triggers have regions. Without
    # regions, lanes (and vehicles close together in one lane) are not told apart by where the
    # plate is in the frame, so when two passes are open at once, the first read to finish goes
    # to the pass its plate was first seen in and the next to the other (_spare_pass): each pass
    # gets one read and no false no_read, but two lanes' reads can swap lanes, and a plate-less
    # vehicle's pass can take the read of a second track of the vehicle before it.
    #
    # A trigger with a region (one camera over two lanes, each with its own loop) takes only
    # plates whose box centre lies in it; every rule above then applies among the passes that
    # admit the plate, so time still decides between two vehicles in one lane. A plate in no
    # region goes to a region-less trigger's pass if one is open, else to no pass: the
    # technician said where each lane's plates appear, so a plate elsewhere (a lane without a
    # loop, the far kerb) is not any of those vehicles, and crediting it by time would bring
    # back the crossed reads regions are there to stop. Its read is still sent (see _emit).
    #
    # A pass whose region holds the plate is preferred to one with no region (a radar over both
    # lanes fires with the lane's loop: the loop names the lane). And one vehicle may set off two
    # triggers (a loop and a beam on one lane, a radar and a lane's loop): its read goes to one
    # pass, and the other, closing without a read, is counted with it, not reported as a vehicle
    # passed unread (_covered_by).
    def _pass_for(self, track: Track, best: Observation) -> Pass | None:
        """The pass a track's read belongs to: the one it began in (the pass _pass_at chose when
        it was first seen), unless that one has no region and another open pass over the track,
        not a follow-on, has a region holding the plate in its best frame (the lane's loop, which
        fired after the radar); else the pass _pass_at chooses for its best frame."""
        point = _centre(best)
        own = self._pass_of(track.trigger_id)
        if own is None:
            return self._pass_at(best.time_ns, point)
        if self._region_of(own) is not None:
            return own  # chosen by its region when first seen: a plate drifting out of it stays
        first, last = _first_seen(track), track.last.time_ns
        holding = [q for q in self._passes if not _follow_on(q) and self._holds(q, point)
                   and q.start_ns <= last and first <= _end(q)]
        return holding[-1] if holding else own

    def _spare_pass(self, track: Track, p: Pass | None, point: Point | None) -> Pass | None:
        """The pass to credit a new read to, given the track's own pass `p` and where its plate
        was in its best frame (`point`).

        If `p` already has a read, this is most likely another vehicle seen while `p` was the
        newest pass (a second lane, or the next vehicle): the oldest other pass whose window
        overlaps the track, whose region (if any) holds `point`, and that has no read (and no
        repeat) gets it instead, one whose region holds `point` before one without a region. The region test keeps a lane's second vehicle from filling
        the other lane's empty pass.
        """
        # A read held for another commit counts as the pass's read here: it will be credited.
        # A follow-on announced no vehicle (its input is still active from before): a plate
        # first seen in one goes to a pass that announced it, such as a beam's beside a stuck loop.
        if p is None or not (p.reads or _follow_on(p) or self._awaits_held(p)):
            return p
        first, last = _first_seen(track), track.last.time_ns
        # (a follow-on announced no vehicle: it waits for no read)
        spares = [q for q in self._passes if q is not p and not q.reads and not q.duplicates
                  and not _follow_on(q) and not self._awaits_held(q)
                  and q.start_ns <= last and first <= _end(q) and self._admits(q, point)]
        # One whose region holds the plate before one with none, as in _pass_at.
        return next((q for q in spares if self._holds(q, point)), spares[0] if spares else p)

    def _same_vehicle(self, q: Pass, p: Pass, first_ns: int, last_ns: int, point: Point | None) -> bool:
        """Whether pass `q` saw the vehicle whose plate (seen from `first_ns` to `last_ns`, at
        `point` in its best frame) was credited to pass `p`.

        Both announced vehicles (no follow-on), by different triggers whose inputs were active at
        the same time: one vehicle on a loop and in a beam at once, or on a loop under a radar.
        And the two name the same lane, or `q` is a radar without a region and `p` has one (a
        radar over both lanes, and the loop whose region holds the plate). Only a radar: a lane's
        own loop or beam without a region (valid: it takes plates from anywhere) looks the same
        but sees only its lane, so a plate-less vehicle on it beside a read vehicle in the other
        lane is a vehicle of its own, reported unread. Then `q` must have been open while the
        plate was in view, and admit it where it was. Two vehicles close behind in one lane set
        off the sensors one after the other, not at once; the same trigger twice is two vehicles.
        """
        if q is p or q.trigger_name == p.trigger_name or _follow_on(q) or _follow_on(p):
            return False
        if q.lane != p.lane and not (self._spans_lanes(q) and self._region_of(q) is None
                                     and self._region_of(p) is not None):
            return False
        before = int(self.settings.window_before_s * 1e9)
        if not (q.start_ns + before <= _released(p) and p.start_ns + before <= _released(q)):
            return False
        return q.start_ns <= last_ns and first_ns <= _end(q) and self._admits(q, point)

    def _spans_lanes(self, p: Pass) -> bool:
        """Whether p's trigger is one that sees more than one lane: a radar (kind "radar"). Loops,
        beams and manual inputs are a lane's own, region or not."""
        spec = self.triggers.get(p.trigger_name)
        return (spec.kind if spec is not None else p.source) == "radar"

    def _cover_for(self, q: Pass) -> _Credit | None:
        """The credit of the read (or repeat) of the vehicle pass `q` saw too, if any
        (_same_vehicle) and if it has not yet been counted for another pass of q's trigger (see
        _Credit.covered). A read held for another commit counts: it will be credited."""
        held = [_Credit(h.pass_, h.first_ns, h.last_ns, h.point, h.covered) for h in self._held if h.pass_ is not None]
        for credit in [*self._credits, *held]:
            if q.trigger_name not in credit.covered and self._same_vehicle(
                    q, credit.pass_, credit.first_ns, credit.last_ns, credit.point):
                return credit
        return None

    def _covered_by(self, q: Pass) -> Pass | None:
        """The pass credited with the read (or repeat) of the vehicle pass `q` saw too, if any
        (_cover_for): `q` is then no vehicle passed unread, and that credit now stands for q's
        trigger, so it covers no other pass of it."""
        credit = self._cover_for(q)
        if credit is None:
            return None
        credit.covered.add(q.trigger_name)
        return credit.pass_

    def _duplicate_of(self, text: str, strong: frozenset[str], now_ns: int) -> str | None:
        """The plate sent within the dedup window that this reading repeats, if any.

        The same top text, or either reading's top text among the other's strong alternatives
        (see _strong): a different vehicle with a similar plate is not merged through a
        runner-up reading far behind its top one.
        """
        window = int(self.settings.dedup_window_s * 1e9)
        for plate, sent in list(self._recent_plates.items()):
            if now_ns - sent.seen_ns > window:
                del self._recent_plates[plate]
        return next((plate for plate, sent in self._recent_plates.items()
                     if text == plate or plate in strong or text in sent.strong), None)

    def _remember(self, text: str, strong: frozenset[str], now_ns: int, hit: dict[str, str] | None,
                  seq: int | None = None) -> None:
        """Record a plate as sent (only once it is committed: a failed commit may be retried)."""
        self._recent_plates[text] = _Sent(now_ns, strong, {str(hit.get("entry"))} if hit else set(), seq)
        self._recent_plates.move_to_end(text)
        while len(self._recent_plates) > 256:
            self._recent_plates.popitem(last=False)

    def _refresh(self, plate: str, seen_ns: int) -> None:
        """Mark a plate in the dedup window as seen again at `seen_ns` (its alerts are kept)."""
        sent = self._recent_plates.get(plate)
        if sent is not None and seen_ns > sent.seen_ns:
            sent.seen_ns = seen_ns
            self._recent_plates.move_to_end(plate)

    def _close_pass(self, p: Pass) -> None:
        if _follow_on(p):
            return  # no vehicle of its own to count or report (see _Pass)
        if not p.reads:
            other = self._covered_by(p)
            if other is not None:
                # One vehicle, two triggers: counted once, with the pass that has its read.
                self.stats["passes_same_vehicle"] += 1
                log.info("trigger %s (lane %s): its vehicle is the one read for trigger %s (lane %s); "
                         "counted there, no no_read", p.trigger_id, p.lane, other.trigger_id, other.lane)
                return
        self.accounting.record(p)
        if p.reads:
            return
        if self._hold_no_read(p):
            return
        fields: dict[str, Any] = {"node": self.settings.node_id, "site": self.settings.site_id,
                                  "camera": self.settings.camera_id, "lane": p.lane, "trigger": p.source,
                                  "trigger_id": p.trigger_id, "frame": None,
                                  # read, but already sent within the dedup window (e.g. a vehicle
                                  # that stopped on the loop and set it off again)
                                  "duplicate_of": p.duplicates[0] if p.duplicates else None}
        frame = p.best_frame
        if isinstance(frame, Frame):
            fields["frame"] = _jpeg(_downscale(frame.main, 960), 70)
        fields["suppressed"] = self._no_reads_held.get(p.trigger_name, 0)
        seq = self.sink.submit_event("no_read", frame.wall_time_ns if isinstance(frame, Frame) else p.wall_ns, fields)
        # Only once committed: a failed commit neither uses the trigger's quota nor loses the count.
        self._no_reads_sent[p.trigger_name].append(self.clock_ns())
        self._no_reads_held.pop(p.trigger_name, None)
        self.stats["no_reads"] += 1
        log.warning("trigger %s (lane %s): vehicle passed, no read (event seq %d)", p.trigger_id, p.lane, seq)

    def _hold_no_read(self, p: Pass) -> bool:
        """True (counted, not sent) when p's trigger already sent its quota of no_reads this minute."""
        limit = self.settings.max_no_reads_per_min
        sent = self._no_reads_sent.get(p.trigger_name, ())
        if len(sent) < limit or self.clock_ns() - sent[0] >= NO_READ_WINDOW_NS:
            return False
        self._no_reads_held[p.trigger_name] += 1
        self.stats["no_reads"] += 1
        self.stats["no_reads_held"] += 1
        if self._no_reads_held[p.trigger_name] == 1:
            log.warning("trigger %s (lane %s): more than %d passes without a read within a minute: the input may be "
                        "faulty (chattering); further no_read events of this trigger are counted, not sent, until "
                        "its rate falls (pipeline.max_no_reads_per_min)", p.trigger_name, p.lane, limit)
        return True

    def health(self) -> dict[str, Any]:
        """Pipeline figures for the heartbeat."""
        cam = self.camera.stats()
        dropped = self._frames.dropped if isinstance(self._frames, FrameQueue) else 0
        now, frames = time.monotonic(), self.stats["frames"]
        then, before = self._rate_mark
        self._rate_mark = (now, frames)
        fps = (frames - before) / (now - then) if now > then else 0.0
        return {"fps": round(fps, 2), "camera": {"state": self.camera.state.value, "frames": cam.frames, "stalls": cam.stalls,
                           "errors": cam.errors, "restarts": cam.restarts, "last_error": cam.last_error},
                "frames_dropped": dropped, "trigger_overflow": self._trigger_overflow,
                "stage_ms": {k: round(v, 2) for k, v in self.stage_ms.items()},
                "open_tracks": self.tracker.open_count, "open_passes": len(self._passes),
                "reads_waiting": len(self._held),
                "no_reads_held": dict(self._no_reads_held),
                "inputs_active_long": self._inputs_active_long(),
                "counts": dict(self.stats), "capture": self.accounting.report()}

    def _inputs_active_long(self) -> dict[str, float]:
        """Inputs active longer than max_window_s now, with how long (s): a vehicle stopped on a
        loop, or an input stuck active (see _check_inputs). Read from the heartbeat's thread."""
        now, limit = self.clock_ns(), int(self.settings.max_window_s * 1e9)
        return {name: round((now - since) / 1e9, 1) for name, since in dict(self._active).items()
                if now - since > limit}


def effective_track_timeout_s(settings: PipelineSettings) -> float:
    """How long a track stays open without a sighting: track_timeout_s, but in continuous mode
    with detect_rate_hz > 0 at least TRACK_TIMEOUT_INTERVALS detection intervals (at 1 Hz a plate
    is seen once a second: a 0.6 s timeout would close every track after one sighting)."""
    if settings.mode == "continuous" and settings.detect_rate_hz > 0:
        return max(settings.track_timeout_s, TRACK_TIMEOUT_INTERVALS / settings.detect_rate_hz)
    return settings.track_timeout_s


def _failed_try(pending: _Pending, now_ns: int, exc: BaseException) -> None:
    """Record a failed commit of a held read: its next try waits twice as long as the last
    (HELD_RETRY_FIRST_NS, then doubling up to HELD_RETRY_MAX_NS)."""
    pending.attempts += 1
    pending.last_try_ns = now_ns
    pending.next_try_ns = now_ns + min(HELD_RETRY_MAX_NS, HELD_RETRY_FIRST_NS << min(pending.attempts - 1, 16))
    pending.error = _describe(exc)


def _describe(exc: BaseException) -> str:
    """An error as its type and message, for a log line (a sink's errors carry no plate text)."""
    return f"{type(exc).__name__}: {exc}"


def _follow_on(p: Pass) -> bool:
    """Whether `p` is a follow-on pass (see _Pass)."""
    return isinstance(p, _Pass) and p.follow_on


def _end(p: Pass) -> float:
    """The end of p's window: open while its trigger is still active (see Pipeline._overdue)."""
    return math.inf if p.open_until_inactive else p.end_ns


def _covers(p: Pass, ts: int) -> bool:
    """Whether p's window covers `ts`."""
    return p.start_ns <= ts <= _end(p)


def _released(p: Pass) -> float:
    """When p's trigger was released (infinity while it is still active)."""
    return math.inf if p.open_until_inactive or p.released_ns is None else p.released_ns


def _first_seen(track: Track) -> int:
    """When a track's plate was first seen (its oldest observations may have been dropped)."""
    return track.first_seen_ns if track.first_seen_ns is not None else min(o.time_ns for o in track.observations)


def _centre(obs: Observation) -> Point | None:
    """Where an observation's plate was, as fractions of the frame (None: not known)."""
    return obs.centre if isinstance(obs, _Sighting) else None


def _inside(region: Region, point: Point) -> bool:
    """Whether `point` lies in `region` (edges included: a plate on a shared edge fits both)."""
    x0, y0, x1, y1 = region
    return x0 <= point[0] <= x1 and y0 <= point[1] <= y1


def _strong(candidates: list[tuple[str, float]]) -> frozenset[str]:
    """A vote's plate-length readings that score close to its top one (see DEDUP_CANDIDATE_RATIO)."""
    top = max((conf for _, conf in candidates), default=0.0)
    floor = max(DEDUP_MIN_CANDIDATE_CONF, DEDUP_CANDIDATE_RATIO * top)
    return frozenset(text for text, conf in candidates if conf >= floor and len(text) >= 4)


def _downscale(image: np.ndarray, width: int) -> np.ndarray:
    h, w = image.shape[:2]
    if w <= width:
        return image
    return np.asarray(Image.fromarray(image).resize((width, int(h * width / w))))


def _jpeg(image: np.ndarray, quality: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, "JPEG", quality=quality)
    return out.getvalue()
