"""Judging a run: what HQ stored against what the clip's ground truth says should happen.

Inputs are only what a user can see: the rows HQ stored (reads and no_read events, with their
signed payloads), the node's `alpr-node outbox status` and the times the bench started and
killed processes. Clip time is recovered from the trigger ids the node puts in reads and
events ("loop1-<monotonic ns>"): the replay maps clip time t to monotonic origin + t, so each
node run's origin is the offset that lines its trigger ids up with the clip's edges.

Per vehicle, judged per node run: exactly one read, with the right plate; latency = HQ stored_ns
minus the wall time of the vehicle's own loop trigger. At speed s the replay is s times real
time, so clip time t is reached (and its trigger fires) t / s after the origin: every clip-time
offset is divided by the speed before it is set against a wall or monotonic time (speed 0,
lossless: no wall time is known for a clip time, so latency is not measured). The stamps
themselves are origin + t, not scaled: at speed > 1 a killed run's stamps reach past its kill,
into the restarted run's life, so a message goes to the run that could have stamped it, and
where two could, to the one its trigger id lines up in (Judge._run_of). A power cut restarts
the replay from the clip's start, so a vehicle read before the cut may be read again after it: that is reported as
a re-read (right in both runs), one per run, and only more than one read in the same run is a
duplicate. A wrong read in any run is a misread (it reached HQ), and a run that saw the vehicle
pass without reading it (its own pass ended in a no_read, or was over well before the cut) is a
miss that another run's read does not make good.
Data path, by seq: every seq 1..the last the node's outbox gave out is stored at HQ, listed as
dropped under quota in the outbox's `losses` table, or still in the outbox; anything else is
data lost. (A message the outbox refused, OutboxFull, took no seq and is no gap.)
What the node logged committing per pass (read / no_read, and which seqs its outbox dropped
under quota: hil.nodelog) is attached to each trigger, so a pass whose message never reached
HQ because it was dropped still shows what it ended in.
Lanes: a clip's ground truth has no lane (docs/clips.md), but each vehicle drives its own
lane's loop. Where the scenario wires the node's inputs itself ([[node.triggers]], `wiring`:
pin → name and lane), a vehicle's lane is the lane of the pin of its own loop edge, and every
read of it must be stored in that lane; only the wired pins' edges are then expected to end in a
message (the node does not listen to the others). Without that wiring the node puts every pin
in lane "1" and no lane is judged. A vehicle whose own loop is on a pin the wiring leaves out is
not judged at all (`not judged: loop on BCM 17 not wired`): the node does not listen to that
loop, so it owes that vehicle nothing.
A clip without ground truth (a recording whose `ground_truth.vehicles` is empty) is judged for
the data path and the trigger accounting only: its reads are listed as not judged, never as
false reads.
"""
from __future__ import annotations

import bisect
import dataclasses
import statistics
from dataclasses import dataclass, field
from typing import Any

from hardware.clip import Clip, TriggerRecord
from inference.training.plates import ALPHABET

WINDOW_MARGIN_NS = 1_000_000_000   # a read this close to a vehicle's legible window is about it
PASS_CLOSE_NS = 3_500_000_000      # rising edge to no_read committed: window_after + track timeout + slack
ORIGIN_SEARCH_NS = 3_000_000_000   # how far a run's replay origin may be from when the bench saw it start
STAMP_EARLY_NS = 500_000_000      # a run's replay may start this long before the bench sees it start


@dataclass(frozen=True)
class StoredRead:
    """One read row at HQ with the payload fields the bench needs."""

    seq: int
    plate: str
    confidence: float
    capture_ns: int
    stored_ns: int
    trigger_id: str | None
    lane: str | None
    crop: bytes = b""


@dataclass(frozen=True)
class StoredEvent:
    """One event row at HQ (no_read and others)."""

    seq: int
    event: str
    capture_ns: int
    stored_ns: int
    trigger_id: str | None
    frame: bytes | None = None


@dataclass(frozen=True)
class LoggedMessage:
    """A read or no_read the node logged committing, and whether its outbox logged dropping it."""

    seq: int
    kind: str               # "read" | "no_read"
    trigger_id: str | None
    dropped: bool = False


@dataclass(frozen=True)
class NodeRun:
    """One life of the node process: when the bench saw it start (monotonic ns) and how it ended."""

    index: int
    start_mono_ns: int
    end_mono_ns: int
    killed: bool


@dataclass(frozen=True)
class OutboxStatus:
    """`alpr-node outbox status` at the end of the run, and (when the bench could open the outbox
    file read-only after the node stopped: hil.runner.read_outbox) the seqs behind its counts."""

    committed: int
    acked: int
    depth: int
    dropped: dict[str, int]
    # new messages the outbox refused (OutboxFull): they took no seq, so they are no gap at HQ
    refused: dict[str, int] = field(default_factory=dict)
    # per-seq evidence; None where it could not be read (the check then falls back to counts)
    last_seq: int | None = None                  # the last seq given out (meta next_seq - 1)
    dropped_seqs: frozenset[int] | None = None   # the outbox's `losses` table
    queued_seqs: frozenset[int] | None = None    # still in the outbox

    @property
    def per_seq(self) -> bool:
        """True when the seqs themselves are known, not only the counts."""
        return self.last_seq is not None and self.dropped_seqs is not None and self.queued_seqs is not None


@dataclass
class ReadMatch:
    """A read attributed to a vehicle, with the run it came from and its latency."""

    read: StoredRead
    run: int
    correct: bool
    latency_s: float | None
    # the read's trigger id names the vehicle's own loop edge (its own pass), in that run
    own_pass: bool = False


@dataclass
class VehicleResult:
    """What happened to one ground-truth vehicle."""

    plate: str
    t_start_s: float
    t_end_s: float
    trigger: str | None
    outcome: str = "missed"
    matches: list[ReadMatch] = field(default_factory=list)
    no_read_events: int = 0
    excused: str | None = None
    # node runs (0-based) that saw the vehicle pass and sent no read for it (see Judge._outcome)
    missed_runs: list[int] = field(default_factory=list)
    # the lane its reads must be stored in (its own loop's, as the scenario wires it); None: not judged
    lane: str | None = None
    # BCM pin of its own loop when the scenario's wiring leaves that pin out (then not judged)
    unwired_pin: int | None = None

    @property
    def excuse_text(self) -> str | None:
        """Why the vehicle is left out of the figures, as reports show it; None when it is judged."""
        if self.excused is None:
            return None
        return f"not judged: {self.excused}" if self.unwired_pin is not None else f"excused: {self.excused}"

    @property
    def latency_s(self) -> float | None:
        """Trigger-to-HQ latency of the vehicle: its first read credited to its own pass.

        Not the first read of all: a stray read of the plate made in an earlier pass (the
        vehicle seen while another loop was active) may be stored before this vehicle's loop
        fired, and says nothing about how long the node took once it did. Only where no read
        names the vehicle's own pass (a tailgater read in the leader's pass) is its first read
        taken. Never negative (ReadMatch.latency_s is clamped at 0).
        """
        own = [m.latency_s for m in self.matches if m.own_pass and m.latency_s is not None]
        pool = own or [m.latency_s for m in self.matches if m.latency_s is not None]
        return min(pool) if pool else None

    @property
    def wrong_lane(self) -> list[ReadMatch]:
        """Its reads that HQ stored in another lane than the vehicle's."""
        if self.lane is None:
            return []
        return [m for m in self.matches if m.read.lane != self.lane]

    @property
    def duplicate_correct(self) -> bool:
        """The right plate sent more than once in one node run (the node's dedup should stop that)."""
        per_run: dict[int, int] = {}
        for m in self.matches:
            if m.correct:
                per_run[m.run] = per_run.get(m.run, 0) + 1
        return any(n > 1 for n in per_run.values())

    @property
    def correct(self) -> bool:
        """Read right, exactly once in each node run that read it or should have, never wrong."""
        return self.outcome in ("correct", "re-read after restart")


@dataclass
class TriggerResult:
    """One falling edge in one node run: it must end in a read or a no_read event."""

    name: str
    t_s: float
    run: int
    # "read" | "no_read" | "unaccounted" | "cut by power loss" | "dropped under quota" |
    # "suppressed as duplicate" (the node logged a dedup suppression and sent nothing for the pass)
    outcome: str
    latency_s: float | None = None  # trigger (wall) to HQ storing the first message naming it; speed > 0
    # From the node's log: what it committed for this pass ("no_read seq 1", "read seq 2"), and
    # the seqs of those its outbox dropped under quota (they never reach HQ).
    node_logged: tuple[str, ...] = ()
    node_dropped: tuple[int, ...] = ()


@dataclass
class DataCheck:
    """Exactly-once accounting of the node's outbox against HQ."""

    committed: int
    stored_reads: int
    stored_events: int
    dropped: int
    still_queued: int
    duplicates: int
    conflicts: int
    lost: int
    missing_seqs: list[int]
    refused: int = 0          # messages the outbox refused (no seq taken): reported, not a gap
    per_seq: bool = False     # lost decided seq by seq (the outbox file was read), not from counts


@dataclass
class Judgement:
    """Everything the reports show."""

    vehicles: list[VehicleResult]
    triggers: list[TriggerResult]
    phantom_reads: list[ReadMatch]
    data: DataCheck
    origins: dict[int, int]
    problems: list[str]
    latency_measured: bool
    # reads of a clip without ground truth: nothing to judge them against, so never false reads
    unjudged_reads: list[ReadMatch] = field(default_factory=list)

    @property
    def latencies(self) -> list[float]:
        """Latency of each vehicle with a measured one (VehicleResult.latency_s, seconds)."""
        return [v.latency_s for v in self.vehicles if v.latency_s is not None]

    def lane_failures(self) -> list[str]:
        """One line per read stored in another lane than its vehicle's (see VehicleResult.lane)."""
        return [f"wrong lane: {v.plate} drives lane {v.lane}'s loop ({v.trigger}), but HQ stored its read "
                f"{m.read.plate} (seq {m.read.seq}, run {m.run + 1}, trigger {m.read.trigger_id}) in lane "
                f"{m.read.lane if m.read.lane is not None else '(none)'}"
                for v in self.vehicles for m in v.wrong_lane]

    def figures(self) -> dict[str, Any]:
        """The per-scenario figures: vehicles, correct, missed, duplicates, latency, data lost."""
        lat = self.latencies
        tl = [t.latency_s for t in self.triggers if t.latency_s is not None]
        judged = [v for v in self.vehicles if v.excused is None or v.matches]
        return {
            "vehicles": len(self.vehicles),
            "excused": sum(1 for v in self.vehicles if v.excused is not None and not v.matches),
            "reads_correct": sum(1 for v in judged if v.correct),
            "misread": sum(1 for v in judged if v.outcome == "misread"),
            "missed": sum(1 for v in judged if v.outcome == "missed"),
            "duplicates": sum(1 for v in self.vehicles if v.outcome == "duplicate"),
            "re_reads_after_restart": sum(1 for v in self.vehicles if v.outcome == "re-read after restart"),
            "phantom_reads": len(self.phantom_reads),
            "reads_not_judged": len(self.unjudged_reads),
            "wrong_lane": sum(1 for v in self.vehicles if v.wrong_lane),
            "triggers": len(self.triggers),
            "triggers_unaccounted": sum(1 for t in self.triggers if t.outcome == "unaccounted"),
            "triggers_without_message": sum(1 for t in self.triggers if t.outcome == "suppressed as duplicate"),
            "duplicates_of_correct_plate": sum(1 for v in self.vehicles if v.duplicate_correct),
            "no_read_events": sum(1 for t in self.triggers if t.outcome == "no_read"),
            "latency_median_s": round(statistics.median(lat), 3) if lat else None,
            "latency_worst_s": round(max(lat), 3) if lat else None,
            "trigger_to_hq_median_s": round(statistics.median(tl), 3) if tl else None,
            "trigger_to_hq_worst_s": round(max(tl), 3) if tl else None,
            "committed": self.data.committed,
            "dropped_under_quota": self.data.dropped,
            "refused_by_outbox": self.data.refused,
            "hq_duplicates": self.data.duplicates + self.data.conflicts,
            "data_lost": self.data.lost,
        }

    @property
    def data_path_ok(self) -> bool:
        """No loss, no duplicate at HQ, every trigger explained (a message, a counted drop, a cut or a
        logged dedup suppression)."""
        return (self.data.lost == 0 and self.data.duplicates == 0 and self.data.conflicts == 0
                and not any(t.outcome == "unaccounted" for t in self.triggers))

    @property
    def every_trigger_has_a_message(self) -> bool:
        """The node's contract: each pass ends in a read or a no_read event at HQ (drops and cuts aside)."""
        return not any(t.outcome in ("unaccounted", "suppressed as duplicate") for t in self.triggers)


def normalise(plate: str) -> str:
    """Upper-case letters and digits only, as plates are compared."""
    return "".join(ch for ch in plate.upper() if ch in ALPHABET)


def _edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def parse_trigger_id(trigger_id: str | None) -> tuple[str, int] | None:
    """'loop1-123456' → ('loop1', 123456); None when absent or not of that form."""
    if not trigger_id or "-" not in trigger_id:
        return None
    name, _, mono = trigger_id.rpartition("-")
    return (name, int(mono)) if mono.isdigit() else None


class Judge:
    """Matches HQ's rows to a clip's ground truth for a set of node runs."""

    def __init__(self, clip: Clip, runs: list[NodeRun], wall_minus_mono_ns: int, *, speed: float,
                 excused_ns: list[tuple[int, int, str]] | None = None,
                 wiring: dict[int, tuple[str, str]] | None = None) -> None:
        """wiring: BCM pin → (trigger name, lane) of the node's [[triggers]] when the scenario sets
        them (hil.scenario.Scenario.wiring); None when the node wires the clip's own pins."""
        if wiring:
            # The node names its passes after its [[triggers]], which may not be the clip's labels.
            clip = dataclasses.replace(clip, triggers=tuple(
                dataclasses.replace(t, name=wiring[t.pin][0]) if t.pin in wiring else t for t in clip.triggers))
        self.clip = clip
        self.runs = runs
        self.offset = wall_minus_mono_ns
        self.speed = speed
        self.excused = excused_ns or []
        self.wiring = wiring
        # every loop a vehicle drove (its own trigger, its lane) ...
        self._all_falling = [t for t in clip.triggers if t.edge == "falling"]
        # ... and those the node listens to, each of which must end in a message
        self.falling = [t for t in self._all_falling if not wiring or t.pin in wiring]
        period = clip.duration_ns // max(1, len(clip) - 1)
        self.tolerance = max(150_000_000, int(1.5 * period))
        self._by_name: dict[str, list[TriggerRecord]] = {}
        for edge in self.falling:
            self._by_name.setdefault(edge.name or f"gpio{edge.pin}", []).append(edge)
        self._times = {name: [e.t_ns for e in edges] for name, edges in self._by_name.items()}

    # -- clock recovery ----------------------------------------------------------------------
    def _last_started(self, mono_ns: int) -> int:
        """The last run the bench saw start before monotonic time mono_ns."""
        index = 0
        for run in self.runs:
            if run.start_mono_ns <= mono_ns + STAMP_EARLY_NS:
                index = run.index
        return index

    def _stamp_window(self, run: NodeRun) -> tuple[int, int | None]:
        """The replay-clock stamps (trigger ids, capture times) `run` can have put on its messages.

        The replay stamps clip time t as origin + t whatever the speed (hardware.timeline), so a
        run killed r real seconds after its origin stamped up to origin + r * speed: at speed > 1
        past the monotonic time of its kill, into the life of the run restarted after it (the
        bench's monotonic boundary between the two runs is then no boundary between their
        stamps); at speed 0 (lossless) anywhere up to the clip's end. The run not killed (the
        last) has no end.
        """
        lo = run.start_mono_ns - STAMP_EARLY_NS
        if not run.killed:
            return lo, None
        if self.speed > 0:
            # origin + (end - origin) * speed is largest for the earliest origin at speed >= 1;
            # below 1 no stamp runs ahead of the monotonic clock
            hi = lo + int((run.end_mono_ns - lo) * max(self.speed, 1.0))
        else:
            hi = run.start_mono_ns + self.clip.duration_ns   # the origin is no later than the start
        return lo, hi + self.tolerance

    def _runs_for(self, mono_ns: int) -> list[int]:
        """The runs whose stamp window (_stamp_window) holds mono_ns, earliest first; where none
        does, the last run started before it."""
        out = []
        for run in self.runs:
            lo, hi = self._stamp_window(run)
            if lo <= mono_ns and (hi is None or mono_ns <= hi):
                out.append(run.index)
        return out or [self._last_started(mono_ns)]

    def _run_of(self, name: str, mono_ns: int, origins: dict[int, int]) -> int:
        """The run a trigger id (name, monotonic ns) came from.

        Where more than one run could have stamped it (a power cut at speed > 1: see
        _stamp_window), it is the run in which it lines up with an edge of that name on the
        clip, the closest; a stamp that lines up in none goes to the latest of them.
        """
        runs = self._runs_for(mono_ns)
        if len(runs) == 1:
            return runs[0]
        lined_up = []
        for index in runs:
            edge = self._edge_for(name, mono_ns, origins[index])
            if edge is not None:
                lined_up.append((abs(mono_ns - origins[index] - edge.t_ns), -index))
        return -min(lined_up)[1] if lined_up else runs[-1]

    def _capture_run(self, read: StoredRead) -> int:
        """The run a read without a trigger id came from, by its capture time alone.

        Where more than one run could have stamped it, a run that started after HQ stored the
        read cannot have sent it (a read of the killed run stored before the restart is that
        run's); what is still open goes to the latest of them.
        """
        runs = self._runs_for(read.capture_ns - self.offset)
        if len(runs) > 1:
            stored = read.stored_ns - self.offset
            starts = {run.index: run.start_mono_ns for run in self.runs}
            runs = [i for i in runs if starts[i] - STAMP_EARLY_NS <= stored] or runs
        return runs[-1]

    def origins(self, ids: list[tuple[str, int]]) -> dict[int, int]:
        """Each run's replay origin (monotonic ns of clip time 0), from the trigger ids it sent.

        The bench saw each run start (its log line) to within a fraction of a second, so only
        origins within ORIGIN_SEARCH_NS of that are tried; the one that lines up the most ids
        with the clip's edges wins.
        """
        out: dict[int, int] = {}
        runs_of = {m: self._runs_for(m) for _, m in ids}
        for run in self.runs:
            # The ids only this run could have stamped: at speed > 1 a killed run's stamps reach
            # into its successor's (see _stamp_window), and the other run's ids in that stretch
            # would vote for their own origin (the killed run's origin taken from the restarted
            # run's ids, or its late ids filling the first candidates of the restarted run). The
            # shared ones count only for a run that has none of its own.
            shared = [(n, m) for n, m in ids if run.index in runs_of[m]]
            mine = [(n, m) for n, m in shared if runs_of[m] == [run.index]] or shared
            best: tuple[int, int, int] | None = None
            for name, mono in mine[:8]:
                for edge in self._edges_near(name, mono - run.start_mono_ns, ORIGIN_SEARCH_NS):
                    cand = mono - edge.t_ns
                    support = sum(1 for n2, m2 in mine if self._edge_for(n2, m2, cand) is not None)
                    key = (support, -abs(cand - run.start_mono_ns), cand)
                    if best is None or key[:2] > best[:2]:
                        best = key
            out[run.index] = best[2] if best is not None else run.start_mono_ns
        return out

    def _edges_near(self, name: str, clip_t: int, tolerance: int) -> list[TriggerRecord]:
        times = self._times.get(name, [])
        lo = bisect.bisect_left(times, clip_t - tolerance)
        hi = bisect.bisect_right(times, clip_t + tolerance)
        return self._by_name[name][lo:hi]

    def _edge_for(self, name: str, mono: int, origin: int) -> TriggerRecord | None:
        near = self._edges_near(name, mono - origin, self.tolerance)
        return min(near, key=lambda e: abs(mono - origin - e.t_ns)) if near else None

    def _resolve(self, trigger_id: str | None, origins: dict[int, int]) -> tuple[int, TriggerRecord | None] | None:
        """(run, the clip's edge) a node trigger id stands for; None when it is no trigger id."""
        parsed = parse_trigger_id(trigger_id)
        if parsed is None:
            return None
        run = self._run_of(parsed[0], parsed[1], origins)
        return run, self._edge_for(parsed[0], parsed[1], origins[run])

    # -- judging -----------------------------------------------------------------------------
    def judge(self, reads: list[StoredRead], events: list[StoredEvent], status: OutboxStatus | None,
              hq_duplicates: int = 0, hq_conflicts: int = 0, suppressed: int = 0,
              logged: list[LoggedMessage] | None = None) -> Judgement:
        """Attribute every read and event; build the per-vehicle, per-trigger and data results.

        suppressed: how many tracks the node says (in its log) it did not send because the plate
        was "seen again"; a pass whose only track was suppressed ends with no message at all,
        so up to that many triggers without a message are explained by it (and reported).
        logged: the messages the node logged committing (hil.nodelog.messages), attached to
        their triggers; passes whose message the outbox logged dropping get the quota excuse first.
        """
        problems: list[str] = []
        no_reads = [e for e in events if e.event == "no_read"]
        ids = [p for p in (parse_trigger_id(x.trigger_id) for x in [*reads, *no_reads]) if p is not None]
        origins = self.origins(ids)
        vehicles = [VehicleResult(v.plate, v.t_start_ns / 1e9, v.t_end_ns / 1e9, None) for v in self.clip.vehicles]
        own_trigger = [self._own_trigger(v.t_start_ns, v.t_end_ns) for v in self.clip.vehicles]
        for i, (result, edge) in enumerate(zip(vehicles, own_trigger)):
            result.trigger = f"{edge.name}@{edge.t_ns / 1e9:.2f}s" if edge else None
            # Judged only where the edge is this vehicle's alone: two vehicles side by side in two
            # lanes, legible at once, each have both lanes' edges in their windows, and time
            # cannot say which loop was whose.
            shared = edge is not None and any(
                j != i and self._near(v.t_start_ns, v.t_end_ns, edge) for j, v in enumerate(self.clip.vehicles))
            if edge is not None and not shared and self.wiring and edge.pin in self.wiring:
                result.lane = self.wiring[edge.pin][1]
            if edge is not None and self.wiring and edge.pin not in self.wiring:
                # The node does not listen to this loop ([[node.triggers]] leaves its pin out), so
                # it owes the vehicle nothing: judging it would count a miss the wiring made.
                result.unwired_pin = edge.pin
        phantoms: list[ReadMatch] = []
        unjudged: list[ReadMatch] = []
        for read in sorted(reads, key=lambda r: r.seq):
            run, clip_t = self._place(read, origins)
            if not self.clip.vehicles:
                # No ground truth (a recording nobody has annotated yet): a read cannot be told
                # right or false, only counted; the data path and triggers are still judged.
                unjudged.append(ReadMatch(read, run, False, None))
                continue
            index = self._vehicle_for(read, clip_t)
            latency = None
            own = own_trigger[index] if index is not None else None
            if self.speed > 0 and own is not None:
                # Clamped at 0: a read stored before the vehicle's own loop fired was made in an
                # earlier pass (the plate seen while another loop was active); the node made the
                # vehicle wait for nothing after its loop, and a negative figure would pull the
                # median down and could hide a slow read elsewhere.
                latency = max(0.0, (read.stored_ns - self._wall_ns(run, own.t_ns, origins)) / 1e9)
            resolved = self._resolve(read.trigger_id, origins)
            own_pass = own is not None and resolved is not None and resolved[0] == run and resolved[1] == own
            match = ReadMatch(read, run, False, latency, own_pass)
            if index is None:
                phantoms.append(match)
                continue
            match.correct = normalise(read.plate) == normalise(self.clip.vehicles[index].plate)
            vehicles[index].matches.append(match)
        no_read_runs: dict[int, set[int]] = {}   # vehicle index -> runs that sent a no_read for its own trigger
        for event in no_reads:
            resolved = self._resolve(event.trigger_id, origins)
            if resolved is None:
                continue
            run, edge = resolved
            for i, own in enumerate(own_trigger):
                if edge is not None and own == edge:
                    vehicles[i].no_read_events += 1
                    no_read_runs.setdefault(i, set()).add(run)
        for i, v in enumerate(vehicles):
            truth = self.clip.vehicles[i]
            v.excused = self._excuse(truth.t_start_ns, truth.t_end_ns)
            if v.unwired_pin is not None:
                v.excused = f"loop on BCM {v.unwired_pin} not wired"
            v.missed_runs = self._missed_runs(v, truth.t_end_ns, own_trigger[i], origins, no_read_runs.get(i, set()))
            v.outcome = self._outcome(v)
        data = self._data(reads, events, status, hq_duplicates, hq_conflicts, problems)
        triggers = self._triggers(reads, no_reads, origins, problems, logged or [], status)
        # A pass whose message the node dropped under its quota is not a loss. With the node's
        # log (`logged`, as the runner always passes) a trigger is excused only on evidence: the
        # log shows its message committed, and that seq dropped (by the log or the outbox's
        # losses table). Without any log (hand-made judgements), at most as many triggers as
        # the outbox counted drops are excused, as HQ alone cannot tell which seq was which.
        if logged is None:
            budget = data.dropped
            for t in triggers:
                if t.outcome == "unaccounted" and budget > 0:
                    t.outcome = "dropped under quota"
                    budget -= 1
        else:
            for t in triggers:
                if t.outcome == "unaccounted" and t.node_dropped:
                    t.outcome = "dropped under quota"
        for t in triggers:
            if t.outcome == "unaccounted" and suppressed > 0:
                t.outcome = "suppressed as duplicate"
                suppressed -= 1
        return Judgement(vehicles, triggers, phantoms, data, origins, problems, self.speed > 0, unjudged)

    def _wall_ns(self, run: int, clip_t_ns: int, origins: dict[int, int]) -> int:
        """Wall time at which run `run` replayed clip time clip_t_ns (speed > 0): the replay is
        `speed` times real time, so clip time t comes t / speed after the run's origin."""
        return origins[run] + int(clip_t_ns / self.speed) + self.offset

    def _cut_clip_ns(self, run: NodeRun, origins: dict[int, int]) -> int:
        """Clip time a killed run had reached when it was killed (its monotonic end, in clip time).

        At speed s, real seconds after the origin are s times as many clip seconds. At speed 0
        (lossless) the replay runs at the machine's pace and its position at the kill is not
        known from outside: the real time since the origin is taken, as a replay at speed 1.
        """
        elapsed = run.end_mono_ns - origins.get(run.index, run.start_mono_ns)
        return int(elapsed * self.speed) if self.speed > 0 else elapsed

    def _place(self, read: StoredRead, origins: dict[int, int]) -> tuple[int, int]:
        """(run, clip time in ns) of a read: the run of its trigger id, else of its capture time."""
        parsed = parse_trigger_id(read.trigger_id)
        run = self._run_of(parsed[0], parsed[1], origins) if parsed else self._capture_run(read)
        return run, read.capture_ns - self.offset - origins[run]

    @staticmethod
    def _near(start_ns: int, end_ns: int, edge: TriggerRecord) -> bool:
        """Whether `edge` could be the loop edge of a vehicle legible from start_ns to end_ns."""
        return start_ns - 500_000_000 <= edge.t_ns <= end_ns

    def _own_trigger(self, start_ns: int, end_ns: int) -> TriggerRecord | None:
        """The loop edge a vehicle fires: a falling edge inside (or just before) its legible window."""
        near = [e for e in self._all_falling if self._near(start_ns, end_ns, e)]
        middle = (start_ns + end_ns) // 2
        return min(near, key=lambda e: abs(e.t_ns - middle)) if near else None

    def _vehicle_for(self, read: StoredRead, clip_t: int) -> int | None:
        near = [i for i, v in enumerate(self.clip.vehicles)
                if v.t_start_ns - WINDOW_MARGIN_NS <= clip_t <= v.t_end_ns + WINDOW_MARGIN_NS]
        if not near:
            return None
        text = normalise(read.plate)

        def key(i: int) -> tuple[int, int]:
            v = self.clip.vehicles[i]
            return _edit_distance(text, normalise(v.plate)), abs(clip_t - (v.t_start_ns + v.t_end_ns) // 2)
        return min(near, key=key)

    def _excuse(self, start_ns: int, end_ns: int) -> str | None:
        for lo, hi, why in self.excused:
            if lo <= start_ns and end_ns <= hi:
                return why
        return None

    def _release_ns(self, edge: TriggerRecord) -> int:
        """Clip time the input that `edge` made active next went inactive (`edge.t_ns` if never)."""
        return next((e.t_ns for e in self.clip.triggers if e.edge == "rising" and e.pin == edge.pin
                     and e.t_ns >= edge.t_ns), edge.t_ns)

    def _missed_runs(self, v: VehicleResult, t_end_ns: int, own: TriggerRecord | None, origins: dict[int, int],
                     no_read_in: set[int]) -> list[int]:
        """The node runs that saw the vehicle pass and sent no read for it.

        A run that was not cut saw every vehicle. A run cut by a power loss saw one if the
        vehicle's legible window ended before the cut and either that run closed the vehicle's
        own pass with a no_read (it judged the pass over, without a read), or the pass was over
        long enough before the cut (PASS_CLOSE_NS after the loop released, as for triggers) that
        its message was due. A vehicle still in view, or whose read could still have been pending
        at the cut, was not seen whole by that run: no read is wanted from it.
        """
        read_in = {m.run for m in v.matches}
        out = []
        for run in self.runs:
            if run.index in read_in:
                continue
            if run.killed:
                cut_at = self._cut_clip_ns(run, origins)
                if t_end_ns > cut_at:
                    continue
                released = t_end_ns
                if own is not None:
                    released = max(released, self._release_ns(own))
                if run.index not in no_read_in and released + PASS_CLOSE_NS > cut_at:
                    continue
            out.append(run.index)
        return out

    @staticmethod
    def _outcome(v: VehicleResult) -> str:
        """Judged per node run: two reads in one run are a duplicate; a wrong read in any run is a
        misread (it reached HQ as one); a run that saw the vehicle and sent no read is a miss,
        whatever another run read; right in every run that read it (and at least one) is
        correct, or a re-read after restart when two runs read it right."""
        if not v.matches:
            return "missed"
        per_run: dict[int, int] = {}
        for m in v.matches:
            per_run[m.run] = per_run.get(m.run, 0) + 1
        if max(per_run.values()) > 1:
            return "duplicate"
        if not all(m.correct for m in v.matches):
            return "misread"
        if v.missed_runs:
            return "missed"
        return "correct" if len(per_run) == 1 else "re-read after restart"

    def _triggers(self, reads: list[StoredRead], no_reads: list[StoredEvent], origins: dict[int, int],
                  problems: list[str], logged: list[LoggedMessage],
                  status: OutboxStatus | None = None) -> list[TriggerResult]:
        losses = status.dropped_seqs if status is not None and status.dropped_seqs is not None else frozenset()
        node_said: dict[tuple[int, int], list[LoggedMessage]] = {}
        for msg in logged:
            resolved = self._resolve(msg.trigger_id, origins)
            if resolved is None:
                continue
            run, edge = resolved
            if edge is not None:
                node_said.setdefault((run, edge.t_ns), []).append(msg)
        seen: dict[tuple[int, int], str] = {}
        first_stored: dict[tuple[int, int], int] = {}
        for kind, items in (("no_read", no_reads), ("read", reads)):
            for item in items:
                resolved = self._resolve(item.trigger_id, origins)
                if resolved is None:
                    continue
                run, edge = resolved
                if edge is None:
                    problems.append(f"trigger id {item.trigger_id} (run {run}) matches no edge of the clip")
                    continue
                seen[(run, edge.t_ns)] = kind
                key = (run, edge.t_ns)
                first_stored[key] = min(first_stored.get(key, item.stored_ns), item.stored_ns)
        out = []
        for run in self.runs:
            cut_at = self._cut_clip_ns(run, origins) if run.killed else None
            for edge in self.falling:
                outcome = seen.get((run.index, edge.t_ns))
                if outcome is None:
                    rise = self._release_ns(edge)
                    if cut_at is not None and rise + PASS_CLOSE_NS > cut_at:
                        outcome = "cut by power loss"
                    else:
                        outcome = "unaccounted"
                latency = None
                stored = first_stored.get((run.index, edge.t_ns))
                if stored is not None and self.speed > 0:
                    # Clamped at 0 as a read's latency is: a message naming the trigger cannot be
                    # stored before it fired; below 0 is only the edge's recorded time against the
                    # node's (within self.tolerance).
                    latency = max(0.0, (stored - self._wall_ns(run.index, edge.t_ns, origins)) / 1e9)
                said = node_said.get((run.index, edge.t_ns), [])
                out.append(TriggerResult(edge.name or f"gpio{edge.pin}", edge.t_ns / 1e9, run.index, outcome, latency,
                                         tuple(f"{m.kind} seq {m.seq}" for m in said),
                                         tuple(m.seq for m in said if m.dropped or m.seq in losses)))
        return out

    @staticmethod
    def _data(reads: list[StoredRead], events: list[StoredEvent], status: OutboxStatus | None,
              hq_duplicates: int, hq_conflicts: int, problems: list[str]) -> DataCheck:
        """Seq by seq where the outbox's seqs are known: each of 1..last must be stored at HQ,
        listed in the outbox's losses (dropped under quota) or still in the outbox. A seq stored
        at HQ and also dropped (HQ stored it, its ack was lost, then the quota dropped it) is
        stored; a refusal took no seq and is no excuse for a gap. Without the seqs only counts
        are known: then up to as many unstored seqs as the outbox counts dropped or queued are
        taken for those, and the problems say that loss was counted, not matched."""
        seqs = [r.seq for r in reads] + [e.seq for e in events]
        unique = set(seqs)
        duplicates = hq_duplicates + (len(seqs) - len(unique))
        refused = sum(status.refused.values()) if status is not None else 0
        if status is None:
            problems.append("node outbox status unavailable: data loss cannot be counted")
            committed, dropped, depth = max(unique, default=0), 0, 0
        else:
            committed, dropped, depth = status.committed, sum(status.dropped.values()), status.depth
        if status is not None and status.per_seq:
            assert status.last_seq is not None and status.dropped_seqs is not None and status.queued_seqs is not None
            last = max(status.last_seq, committed)
            missing = sorted(set(range(1, last + 1)) - unique - status.dropped_seqs - status.queued_seqs)
            unlisted = dropped - len(status.dropped_seqs)
            if unlisted > 0 and missing:
                # The losses table keeps only the newest entries (Outbox.max_losses_kept): drops
                # older than its oldest entry are counted, not listed; those may fill older gaps.
                oldest = min(status.dropped_seqs, default=last + 1)
                older = [s for s in missing if s < oldest][:unlisted]
                problems.append(f"{unlisted} drops under quota are counted but no longer listed by seq in the "
                                f"outbox's losses table: taken for {len(older)} unstored seqs below {oldest}")
                missing = missing[len(older):]  # `older` is a prefix of the sorted `missing`
            lost = len(missing)
            return DataCheck(committed, len(reads), len(events), dropped, depth, duplicates, hq_conflicts, lost,
                             missing[:50], refused, True)
        missing = sorted(set(range(1, committed + 1)) - unique)
        lost = max(0, len(missing) - dropped - depth)
        if status is not None and missing:
            problems.append(f"the node's outbox seqs were not read (only its counts): seqs {missing[:20]} not "
                            f"stored at HQ are taken for its {dropped} drops and {depth} queued by count, "
                            f"not matched seq by seq")
        return DataCheck(committed, len(reads), len(events), dropped, depth, duplicates, hq_conflicts, lost,
                         missing[:50], refused, False)
