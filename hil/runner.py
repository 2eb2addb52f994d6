"""Runs one scenario against the real runtime and judges it.

    Lab (CA, real mosquitto, HQ dir) → `alpr-hq ingest` child process
                                     → `alpr-node run --exit-when-done` child process, [source] kind = "clip"
    faults applied on a timeline that starts when the node logs that it started (replay start)
    → HQ's stored rows + `alpr-node outbox status` → Judge → JUnit / HTML / result.json

The node is only driven from outside: config file, CLI, signals, log lines, its outbox status
command; HQ's results are read from its store.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hardware.clip import Clip
from hil import nodelog
from hil.derive import derive_clip
from hil.errors import RunFailed
from hil.judge import (
    WINDOW_MARGIN_NS,
    Judge,
    Judgement,
    NodeRun,
    OutboxStatus,
    StoredEvent,
    StoredRead,
)
from hil.lab import Lab, NodeHandle
from hil.pace import FrameClock, Pace
from hil.scenario import Fault, Scenario, check_clip
from provisioning import tomlout

log = logging.getLogger(__name__)

NODE_ID = "hil-node"
_STARTED = f"node {NODE_ID} started"
_DRAIN_S = 30.0   # after the node's last run ends, how long HQ gets to store what was acked
# How long the node may take to log that it started (lab up, models loaded). Not part of
# timeout_s, which bounds the run from that line on, as load() checks the faults against it.
_START_S = 120.0
# The node's default pipeline.track_timeout_s (node/config.py, docs/hil.md): a scenario may set its own.
NODE_TRACK_TIMEOUT_S = 0.6


@dataclass(frozen=True)
class TimelineEntry:
    """Something the bench did or saw, at a wall time."""

    wall_ns: int
    kind: str      # "node" | "fault" | "trigger" | "read" | "no_read"
    text: str
    end_wall_ns: int | None = None


@dataclass
class RunResult:
    """A judged scenario run, with everything the reports need."""

    scenario: Scenario
    clip: Clip
    judgement: Judgement
    timeline: list[TimelineEntry]
    started_wall_ns: int
    wall_s: float
    node_exit_codes: list[int | None]
    out_dir: Path
    errors: list[str] = field(default_factory=list)
    pace: list[Pace] = field(default_factory=list)   # per node run (speed > 0, repeat 1), see hil.pace

    @property
    def passed(self) -> bool:
        """Data path clean, expectations met (plates, latency, false reads), no bench error."""
        return self._clean and not self.expectation_failures()

    @property
    def _clean(self) -> bool:
        # A read stored in the wrong lane is the node's doing whatever the machine's pace (the
        # lane comes from the pass a read is credited to, not from timing a frame), so it fails
        # the run and is never excused as INCONCLUSIVE.
        return (not self.errors and self.judgement.data_path_ok and self.judgement.every_trigger_has_a_message
                and not self.judgement.lane_failures())

    @property
    def real_time_limit_s(self) -> float | None:
        """How far (wall seconds) the node may fall behind the replay before its tracker can lose a vehicle.

        The tracker closes a track when the plate has not been seen for track_timeout_s of replay
        time; frames come one frame period apart, so falling behind by the timeout less one frame
        can close a track that is still in view. None at speed 0 (lossless: the replay waits for
        the node, nothing can be lost to lateness).
        """
        s = self.scenario
        if s.speed <= 0:
            return None
        track = s.node.get("pipeline", {}).get("track_timeout_s", NODE_TRACK_TIMEOUT_S)
        # The median step between frames: a camera_stall's gap must not count as the frame period.
        steps = sorted(b.t_ns - a.t_ns for a, b in zip(self.clip.frames, self.clip.frames[1:]))
        period_s = steps[len(steps) // 2] / 1e9 if steps else 0.0
        return max(0.05, (float(track) - period_s) / s.speed)

    @property
    def kept_real_time(self) -> bool:
        """False when the replay fell behind by real_time_limit_s or more in some node run (hil.pace).

        True where that was not measured (speed 0, a soak's repeated clip, no access times).
        """
        limit = self.real_time_limit_s
        return limit is None or all(p.max_lag_s is None or p.max_lag_s < limit for p in self.pace)

    def late_vehicles(self) -> set[int]:
        """Indices of the vehicles the replay's lateness may have touched (see hil.pace).

        A frame read real_time_limit_s or more late (hil.pace `late`, any node run) held the node
        back from its clip time t until it had caught up and its open tracks had timed out: over
        t .. t + lag * speed + track_timeout_s of clip time. A vehicle counts when that span meets
        the part of the clip whose reads the judge gives it (its legible window, widened by
        hil.judge.WINDOW_MARGIN_NS on each side). Measured (tests/hil/test_real_time.py: the node
        frozen 1 s while KXT4821 passes) the early-closed track can be the next vehicle's, read
        from the frames before its legible window. Where a run's list of late frames was cut
        short (more than hil.pace.MAX_LATE) every vehicle counts; a hand-made Pace naming only
        its worst frame counts for that frame.
        """
        limit = self.real_time_limit_s
        if limit is None:
            return set()
        s = self.scenario
        track_ns = int(float(s.node.get("pipeline", {}).get("track_timeout_s", NODE_TRACK_TIMEOUT_S)) * 1e9)
        frames = self.clip.frames
        spans: list[tuple[int, int]] = []
        for p in self.pace:
            if p.max_lag_s is None or p.max_lag_s < limit:
                continue
            if p.late_truncated:
                return set(range(len(self.clip.vehicles)))
            late = p.late or (((p.worst_frame, p.max_lag_s),) if p.worst_frame is not None else ())
            spans += [(frames[i].t_ns, frames[i].t_ns + int(lag * s.speed * 1e9) + track_ns)
                      for i, lag in late if lag >= limit and 0 <= i < len(frames)]
        return {k for k, v in enumerate(self.clip.vehicles)
                if any(lo <= v.t_end_ns + WINDOW_MARGIN_NS and v.t_start_ns - WINDOW_MARGIN_NS <= hi
                       for lo, hi in spans)}

    @property
    def inconclusive(self) -> bool:
        """Only plate and latency marks missed, and only because of vehicles in view while the replay
        fell behind: no verdict either way.

        When the node's camera does not get a frame in time, the node may read the vehicle then in
        view from fewer frames (a track closed early) or late; that is what this machine did, not
        what the node does with a camera that keeps time. So each missed mark must hold once the
        vehicles in view during a late frame (late_vehicles) are given the benefit of the doubt
        (counted read right, their latency left out); a misread read from on-time frames still
        fails. The data path, the triggers, bench errors and false reads (a read where no vehicle
        is) do not depend on keeping time: they still fail.
        """
        missed = {kind for kind, _ in self._marks_missed()}
        if not (self._clean and missed and missed <= {"min_correct", "min_read", "max_latency_s"}
                and not self.kept_real_time):
            return False
        late = self.late_vehicles()
        return bool(late) and not self._marks_missed(benefit=late)

    @property
    def verdict(self) -> str:
        """PASS, FAIL or INCONCLUSIVE (see `inconclusive`)."""
        return "PASS" if self.passed else "INCONCLUSIVE" if self.inconclusive else "FAIL"

    def real_time_note(self) -> str | None:
        """Why the run did not keep real time, with the figures; None when it did."""
        if self.kept_real_time:
            return None
        limit = self.real_time_limit_s or 0.0
        run = max(range(len(self.pace)), key=lambda i: self.pace[i].max_lag_s or 0.0)
        p = self.pace[run]
        track = self.scenario.node.get("pipeline", {}).get("track_timeout_s", NODE_TRACK_TIMEOUT_S)
        late = self.late_vehicles()
        plates = ", ".join(self.clip.vehicles[k].plate for k in sorted(late))
        which = (f"so the plate and latency marks of the vehicles in view then ({plates}) are not judged"
                 if late else "but no vehicle was in view then: every vehicle is judged as usual")
        return (f"replay fell behind: the node's camera read frame {p.worst_frame} {p.max_lag_s:.2f}s after it was "
                f"due (node run {run + 1}), not less than the {limit:.2f}s after which the node may close a "
                f"vehicle's track while it is in view (pipeline.track_timeout_s {track:g}s less one frame). The "
                f"node did not get its frames in time (a machine busy with other work, or the node holding up its "
                f"own camera thread), {which}: rerun on an idle machine; "
                f"if the replay still falls behind there, that is the node's doing")

    def expectation_failures(self) -> list[str]:
        """The scenario's [expect] marks that were missed."""
        return [message for _, message in self._marks_missed()]

    def plate_marks_met(self) -> bool:
        """min_correct and min_read hold (for an INCONCLUSIVE run: with its late vehicles given the
        benefit of the doubt): a vehicle not read right is then one the scenario allows."""
        benefit = self.late_vehicles() if not self.kept_real_time else set()
        return not any(kind in ("min_correct", "min_read") for kind, _ in self._marks_missed(benefit=benefit))

    def _marks_missed(self, benefit: set[int] | None = None) -> list[tuple[str, str]]:
        """(mark, message) for each [expect] mark missed; mark is the [expect] key.

        benefit: indices of vehicles taken as read right and on time (late_vehicles), to see
        whether the marks missed are missed only because of them.
        """
        f = dict(self.judgement.figures())
        if benefit:
            judged_vs = [(k, v) for k, v in enumerate(self.judgement.vehicles) if v.excused is None or v.matches]
            f["reads_correct"] = sum(1 for k, v in judged_vs if v.correct or k in benefit)
            f["missed"] = sum(1 for k, v in judged_vs if v.outcome == "missed" and k not in benefit)
            lat = [v.latency_s for k, v in enumerate(self.judgement.vehicles)
                   if k not in benefit and v.latency_s is not None]
            f["latency_worst_s"] = round(max(lat), 3) if lat else None
        judged = f["vehicles"] - f["excused"]
        out = []
        if judged and f["reads_correct"] / judged < self.scenario.expect.min_correct:
            out.append(("min_correct", (f"{f['reads_correct']}/{judged} vehicles read correctly, "
                                        f"expected at least {self.scenario.expect.min_correct:.0%}")))
        got_read = judged - f["missed"]  # right, misread or read twice differently: the node sent a read
        if judged and got_read / judged < self.scenario.expect.min_read:
            out.append(("min_read", (f"{got_read}/{judged} vehicles got a read, "
                                     f"expected at least {self.scenario.expect.min_read:.0%}")))
        worst = f["latency_worst_s"]
        if worst is not None and worst > self.scenario.expect.max_latency_s:
            out.append(("max_latency_s",
                        f"worst trigger-to-HQ latency {worst:.2f}s > {self.scenario.expect.max_latency_s:.2f}s"))
        if f["phantom_reads"] > self.scenario.expect.max_false_reads:
            plates = ", ".join(m.read.plate for m in self.judgement.phantom_reads)
            out.append(("max_false_reads",
                        (f"{f['phantom_reads']} false reads (outside every vehicle's legible window: {plates}), "
                         f"expected at most {self.scenario.expect.max_false_reads}")))
        return out

    def to_json(self) -> dict[str, Any]:
        """A machine-readable summary (result.json)."""
        j = self.judgement
        return {
            "scenario": self.scenario.name, "clip": str(self.clip.path), "speed": self.scenario.speed,
            "passed": self.passed, "verdict": self.verdict, "data_path_ok": j.data_path_ok,
            "wall_s": round(self.wall_s, 2),
            "real_time": {"kept": self.kept_real_time, "limit_s": self.real_time_limit_s,
                          "note": self.real_time_note(), "node_runs": [vars(p) for p in self.pace]},
            "expect": vars(self.scenario.expect),
            "figures": j.figures(), "errors": self.errors, "expectation_failures": self.expectation_failures(),
            "problems": j.problems, "node_exit_codes": self.node_exit_codes, "lane_failures": j.lane_failures(),
            "vehicles": [{"plate": v.plate, "outcome": v.outcome, "excused": v.excused, "trigger": v.trigger,
                          "lane": v.lane, "not_judged": v.excuse_text if v.unwired_pin is not None else None,
                          "latency_s": v.latency_s,
                          "reads": [{"plate": m.read.plate, "confidence": m.read.confidence, "seq": m.read.seq,
                                     "run": m.run, "correct": m.correct, "latency_s": m.latency_s,
                                     "own_pass": m.own_pass, "lane": m.read.lane}
                                    for m in v.matches]} for v in j.vehicles],
            "phantom_reads": [{"plate": m.read.plate, "confidence": m.read.confidence, "seq": m.read.seq}
                              for m in j.phantom_reads],
            "reads_not_judged": [{"plate": m.read.plate, "confidence": m.read.confidence, "seq": m.read.seq,
                                  "run": m.run, "why": "clip has no ground truth"} for m in j.unjudged_reads],
            "triggers": [vars(t) for t in j.triggers],
            "data": vars(j.data),
        }


class ScenarioRunner:
    """One scenario, one lab under `out_dir`; `run()` returns the judged result."""

    def __init__(self, scenario: Scenario, out_dir: Path, *, poll_s: float = 0.02) -> None:
        self.scenario = scenario
        self.out = Path(out_dir)
        self.poll_s = poll_s
        self.timeline: list[TimelineEntry] = []
        self.errors: list[str] = []
        self._procs: list[subprocess.Popen] = []
        self._runs: list[NodeRun] = []
        self._pace: list[Pace] = []
        self._frame_clock: FrameClock | None = None

    # -- setup -----------------------------------------------------------------------------
    def _clip(self) -> Clip:
        s = self.scenario
        # Every frame's size too: a wrong-sized frame would otherwise surface mid-run, as a
        # node that restarts its camera until the timeout and gets the blame.
        source = check_clip(s.clip)
        gaps = [(int(f.at_s * 1e9), int(f.duration_s * 1e9)) for f in s.faults if f.kind == "camera_stall"]
        # A real-time run gets its own copy of the frames, whose reads are timed (hil.pace). Not
        # a soak's repeated clip: its repeats share frame files, and only a first read is stamped.
        timed = s.speed > 0 and s.repeat == 1
        if not gaps and s.repeat == 1 and not timed:
            return source
        clip = derive_clip(source, self.out / "clip", gaps=gaps, repeat=s.repeat, copy_frames=timed)
        if timed:
            self._frame_clock = FrameClock(clip, s.speed)
        return clip

    def _node_body(self, clip: Clip) -> str:
        s = self.scenario
        sections: dict[str, dict[str, Any]] = {
            "source": {"kind": "clip", "clip": str(clip.path.resolve()), "speed": s.speed},
            "outbox": {"resend_after_s": 2},
            "health": {"interval_s": 2},
            # The bench accounts for every trigger (docs/hil.md): no no_read is held back as a
            # chattering trigger's would be, unless a scenario sets a limit of its own.
            "pipeline": {"max_no_reads_per_min": 600},
        }
        if not clip.triggers and not s.triggers:
            # Nothing to trigger on: the node refuses triggered mode then (it would read nothing),
            # so a clip without trigger edges is read as a camera without inputs is, continuously,
            # unless the scenario sets a mode of its own.
            sections["pipeline"]["mode"] = "continuous"
        for name, values in s.node.items():
            sections.setdefault(name, {}).update(values)
        return tomlout.document(sections) + _triggers_toml(s.triggers)

    # -- processes -------------------------------------------------------------------------
    def _track(self, proc: subprocess.Popen) -> subprocess.Popen:
        self._procs.append(proc)
        return proc

    def _note(self, kind: str, text: str, wall_ns: int | None = None, end_wall_ns: int | None = None) -> None:
        self.timeline.append(TimelineEntry(wall_ns or time.time_ns(), kind, text, end_wall_ns))
        log.info("%s: %s", kind, text)

    def _wait_started(self, lab: Lab, proc: subprocess.Popen, seen_before: int, deadline: float) -> int:
        """Wait for the node's n-th 'started' log line; returns its monotonic time."""
        path = lab.root / f"{NODE_ID}.log"
        while time.monotonic() < deadline:
            text = path.read_text(errors="replace") if path.exists() else ""
            if text.count(_STARTED) > seen_before:
                return time.monotonic_ns()
            if proc.poll() is not None:
                raise RunFailed(f"alpr-node run exited with {proc.returncode} before starting; see {path}")
            time.sleep(self.poll_s)
        raise RunFailed(f"alpr-node run did not log '{_STARTED}' in time; see {path}")

    def _start_node(self, lab: Lab, node: NodeHandle, deadline: float) -> tuple[subprocess.Popen, int]:
        path = lab.root / f"{NODE_ID}.log"
        before = path.read_text(errors="replace").count(_STARTED) if path.exists() else 0
        if self._frame_clock is not None:
            self._frame_clock.reset()   # a restarted node replays from the start: time its reads afresh
        proc = self._track(lab.start_node(node, "--exit-when-done"))
        started = self._wait_started(lab, proc, before, deadline)
        self._note("node", f"node run {len(self._runs) + 1} started (pid {proc.pid})")
        return proc, started

    def _outbox_status(self, node: NodeHandle) -> OutboxStatus | None:
        out = subprocess.run([sys.executable, "-m", "node.cli", "outbox", "status", "--data-dir", str(node.data_dir)],
                             capture_output=True, text=True, timeout=60, check=False)
        if out.returncode != 0:
            self.errors.append(f"alpr-node outbox status failed ({out.returncode}): {out.stderr.strip()[-300:]}")
            return None
        doc = json.loads(out.stdout)
        status = OutboxStatus(doc["committed"], doc["acked"], doc["depth"], dict(doc["dropped"]),
                              dict(doc.get("refused") or {}))
        try:
            last, dropped, queued = read_outbox(node.data_dir / "outbox.db")
        except (sqlite3.Error, OSError) as exc:
            # The count-based check still runs; the judge's problems say loss was not matched by seq.
            log.warning("outbox %s: seqs not readable (%s)", node.data_dir / "outbox.db", exc)
            return status
        return dataclasses.replace(status, last_seq=last, dropped_seqs=dropped, queued_seqs=queued)

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Start everything, apply the faults, wait for the node to finish, judge."""
        s = self.scenario
        self.out.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        started_wall = time.time_ns()
        wall_minus_mono = time.time_ns() - time.monotonic_ns()
        clip = self._clip()
        lab = Lab(self.out / "lab", hq_workers=1)
        self._runs = []
        exit_codes: list[int | None] = []
        try:
            lab.broker.start()
            node = lab.add_node(NODE_ID, body=self._node_body(clip))
            ingest: subprocess.Popen | None = None
            if not any(f.kind == "ingest_down" and f.at_s == 0 for f in s.faults):
                ingest = self._track(lab.start_ingest())
            proc, start_mono = self._start_node(lab, node, time.monotonic() + _START_S)
            # The fault timeline and timeout_s both start at the node's "started" line: lab setup
            # and model loading vary from machine to machine, and load() checks every fault's end
            # against timeout_s on this same timeline.
            t0 = start_mono / 1e9
            deadline = t0 + s.timeout_s
            actions = _schedule(s.faults)
            watch = nodelog.ClipErrorWatch(lab.root / f"{NODE_ID}.log")
            while True:
                now = time.monotonic() - t0
                while actions and actions[0][0] <= now:
                    _, phase, fault = actions.pop(0)
                    proc, start_mono, ingest = self._apply(lab, node, fault, phase, proc, start_mono, ingest,
                                                           exit_codes, deadline)
                if proc is not None and proc.poll() is not None:
                    actions = self._drop_late(actions, now, proc.returncode)
                if proc is not None and proc.poll() is not None and not actions:
                    break
                if time.monotonic() > deadline:
                    self.errors.append(f"node did not finish within timeout_s = {s.timeout_s:g} of its start")
                    break
                if watch.seen():
                    # The replay cannot get past a frame it cannot read (the camera is restarted
                    # on the same frame), so waiting for the timeout would only blame the node.
                    self.errors.append("run stopped early: the node cannot read a frame of the clip (ClipError)")
                    if proc is not None and proc.poll() is None:
                        proc.send_signal(signal.SIGTERM)
                    break
                time.sleep(self.poll_s)
            ingest = self._undo_pending(lab, node, actions, proc, start_mono, ingest, exit_codes, deadline)
            if proc is not None:
                code = _stop(proc, 10.0)
                self._time_frames()
                exit_codes.append(code)
                self._runs.append(NodeRun(len(self._runs), start_mono, time.monotonic_ns(), killed=False))
                self._note("node", f"node run {len(self._runs)} ended (exit {code})")
                if code != 0:
                    self.errors.append(f"alpr-node run exited with {code}; see {lab.root / (NODE_ID + '.log')}")
            status = self._outbox_status(node)
            reads, events, dups, conflicts = self._wait_hq(lab, status)
            if ingest is not None:
                _stop(ingest, 10.0)
        finally:
            for p in self._procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(10)
            lab.close()
        log_path = lab.root / f"{NODE_ID}.log"
        log_text = log_path.read_text(errors="replace") if log_path.exists() else ""
        self.errors.extend(nodelog.clip_errors(log_text, log_path))
        self.errors.extend(nodelog.stall_problems(log_text, s.faults, s.speed, _STARTED, log_path))
        excused = [(int(f.at_s * 1e9), int(f.end_s * 1e9), "camera stalled") for f in s.faults if f.kind == "camera_stall"]
        judge = Judge(clip, self._runs, wall_minus_mono, speed=s.speed, excused_ns=excused, wiring=s.wiring())
        judgement = judge.judge(reads, events, status, dups, conflicts, suppressed=self._suppressed(lab),
                                logged=nodelog.messages(log_text))
        self._timeline_from_hq(judge, judgement, reads, events, wall_minus_mono)
        return RunResult(s, clip, judgement, sorted(self.timeline, key=lambda e: e.wall_ns), started_wall,
                         time.monotonic() - began, exit_codes, self.out, self.errors, list(self._pace))

    def _time_frames(self) -> None:
        """A node run is over (exited or killed): keep how its replay kept time (hil.pace)."""
        if self._frame_clock is not None:
            self._pace.append(self._frame_clock.read())

    def _drop_late(self, actions: list[tuple[float, str, Fault]], now_s: float,
                   code: int | None) -> list[tuple[float, str, Fault]]:
        """The node has exited: faults not begun yet are bench errors, not applied to a node that is gone.

        load() refuses faults due after the replay, but a lossless replay (speed 0) runs at the
        machine's pace and may be over sooner. Applying such a fault after the node exited would
        prove nothing and still let the run pass; waiting for it would only delay the verdict.
        The end of a fault already begun (broker or HQ back) is still applied.
        """
        late = [fault for _, phase, fault in actions if phase == "begin"]
        for fault in late:
            why = " (a lossless replay runs at the machine's pace)" if self.scenario.speed == 0 else ""
            self.errors.append(f"{fault.kind} at {fault.at_s:g}s was not applied: the node had finished its run "
                               f"{now_s:.1f}s after it started (exit {code}){why}")
        skipped = {id(fault) for fault in late}
        return [a for a in actions if id(a[2]) not in skipped]

    def _undo_pending(self, lab: Lab, node: NodeHandle, actions: list[tuple[float, str, Fault]],
                      proc: subprocess.Popen | None, start_mono: int, ingest: subprocess.Popen | None,
                      exit_codes: list[int | None], deadline: float) -> subprocess.Popen | None:
        """The run loop ended (timeout, or a ClipError) with faults still in place: end them now.

        A broker still down or an HQ ingest still dead would leave the node's messages in its
        outbox, and the judge would count them against the node; with the broker and HQ back the
        node can still deliver while it is being stopped. A power cut not yet over is left as it
        is: restarting the node only to stop it proves nothing. Returns the ingest process.
        """
        begun = [fault for _, phase, fault in actions if phase == "end"
                 and not any(f is fault and ph == "begin" for _, ph, f in actions)]
        for fault in begun:
            if fault.kind not in ("broker_outage", "ingest_down"):
                continue
            self._note("fault", f"{fault.kind} from {fault.at_s:g}s ended early: the run stopped before its "
                                f"end at {fault.end_s:g}s, and the bench undoes every fault before judging")
            _, _, ingest = self._apply(lab, node, fault, "end", proc, start_mono, ingest, exit_codes, deadline)
        return ingest

    def _apply(self, lab: Lab, node: NodeHandle, fault: Fault, phase: str, proc: subprocess.Popen | None,
               start_mono: int, ingest: subprocess.Popen | None, exit_codes: list[int | None],
               deadline: float) -> tuple[subprocess.Popen | None, int, subprocess.Popen | None]:
        kind = fault.kind
        if kind == "broker_outage":
            if phase == "begin":
                lab.broker.kill()
                self._note("fault", f"broker killed for {fault.duration_s:g}s", end_wall_ns=_later(fault.duration_s))
            else:
                lab.broker.start()
                self._note("fault", "broker started again")
        elif kind == "broker_restart":
            lab.broker.restart()
            self._note("fault", "broker restarted")
        elif kind == "ingest_down":
            if phase == "begin":
                if ingest is not None:
                    ingest.send_signal(signal.SIGKILL)
                    ingest.wait(10)
                ingest = None
                self._note("fault", f"HQ ingest killed for {fault.duration_s:g}s", end_wall_ns=_later(fault.duration_s))
            else:
                ingest = self._track(lab.start_ingest())
                self._note("fault", "HQ ingest started again")
        elif kind == "power_cut":
            if phase == "begin" and proc is not None:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                exit_codes.append(proc.wait(10))
                self._time_frames()
                self._runs.append(NodeRun(len(self._runs), start_mono, time.monotonic_ns(), killed=True))
                self._note("fault", f"power cut: node SIGKILLed, off for {fault.duration_s:g}s",
                           end_wall_ns=_later(fault.duration_s))
                proc = None
            elif phase == "end":
                proc, start_mono = self._start_node(lab, node, deadline)
        elif kind == "camera_stall" and phase == "begin":
            self._note("fault", f"camera stall: no frames for {fault.duration_s:g}s (gap in the clip)",
                       end_wall_ns=_later(fault.duration_s))
        return proc, start_mono, ingest

    @staticmethod
    def _suppressed(lab: Lab) -> int:
        """Tracks the node logged as not sent because their plate was "seen again" (dedup)."""
        path = lab.root / f"{NODE_ID}.log"
        return path.read_text(errors="replace").count(" seen again within ") if path.exists() else 0

    def _wait_hq(self, lab: Lab, status: OutboxStatus | None) -> tuple[list[StoredRead], list[StoredEvent], int, int]:
        """HQ's rows once it has stored everything the node had acked (or the drain time ran out)."""
        expected = status.acked if status is not None else 0
        deadline = time.monotonic() + _DRAIN_S
        while True:
            reads, events, dups, conflicts = read_hq(lab.hq_dir / "hq.db")
            if len(reads) + len(events) >= expected or time.monotonic() > deadline:
                return reads, events, dups, conflicts
            time.sleep(0.2)

    def _timeline_from_hq(self, judge: Judge, j: Judgement, reads: list[StoredRead], events: list[StoredEvent],
                          offset: int) -> None:
        for run in judge.runs:
            origin = j.origins.get(run.index, run.start_mono_ns)
            for edge in judge.clip.triggers:
                # At speed s clip time t is replayed t / s after the origin; at speed 0 (lossless)
                # its wall time is not known, and the clip time is drawn as if at speed 1.
                wall = origin + (int(edge.t_ns / self.scenario.speed) if self.scenario.speed > 0 else edge.t_ns) + offset
                if wall <= run.end_mono_ns + offset and edge.edge == "falling":
                    self.timeline.append(TimelineEntry(wall, "trigger", f"{edge.name} falling (run {run.index + 1})"))
        for r in reads:
            self.timeline.append(TimelineEntry(r.stored_ns, "read", f"read {r.plate} ({r.confidence:.2f}) seq {r.seq} "
                                               f"stored; trigger {r.trigger_id}"))
        for e in events:
            self.timeline.append(TimelineEntry(e.stored_ns, e.event, f"{e.event} seq {e.seq} stored; trigger {e.trigger_id}"))


def _triggers_toml(triggers: tuple[dict[str, Any], ...]) -> str:
    """The scenario's [[node.triggers]] as the node's [[triggers]] entries (after every [section]:
    an array of tables may follow them, where a top-level key could not)."""
    return "".join("\n[[triggers]]\n" + "".join(f"{key} = {tomlout.value(v)}\n" for key, v in entry.items())
                   for entry in triggers)


def _schedule(faults: tuple[Fault, ...]) -> list[tuple[float, str, Fault]]:
    actions = []
    for f in faults:
        actions.append((f.at_s, "begin", f))
        if f.duration_s > 0 and f.kind != "camera_stall":
            actions.append((f.end_s, "end", f))
    return sorted(actions, key=lambda a: a[0])


def _later(seconds: float) -> int:
    return time.time_ns() + int(seconds * 1e9)


def _stop(proc: subprocess.Popen, timeout: float) -> int | None:
    """Wait for a process that should be ending; SIGTERM, then SIGKILL, if it does not."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout)


def read_hq(db_path: Path) -> tuple[list[StoredRead], list[StoredEvent], int, int]:
    """Every read and event HQ stored, with payload fields decoded; plus HQ's duplicate and conflict counts.

    Opened read-only with plain SQL on the tables hq.store documents (reads, events,
    seq_conflicts): opening a ReadStore would run schema migrations on a store that the
    ingest process owns.
    """
    from transport import cbor

    if not db_path.exists():
        return [], [], 0, 0
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"reads", "events"} <= tables:
            return [], [], 0, 0
        reads = []
        for seq, plate, conf, capture, stored, payload in db.execute(
                "SELECT seq, plate, confidence, capture_ns, stored_ns, payload FROM reads "
                "WHERE node_id=? ORDER BY seq", (NODE_ID,)):
            p = cbor.loads(bytes(payload))
            reads.append(StoredRead(int(seq), str(plate), conf / 10000, int(capture), int(stored), p.get("trigger_id"),
                                    p.get("lane"), bytes(p.get("crop") or b"")))
        events = []
        for seq, event, capture, stored, payload in db.execute(
                "SELECT seq, event, capture_ns, stored_ns, payload FROM events WHERE node_id=? ORDER BY seq", (NODE_ID,)):
            p = cbor.loads(bytes(payload))
            frame = p.get("frame")
            events.append(StoredEvent(int(seq), str(event), int(capture), int(stored), p.get("trigger_id"),
                                      bytes(frame) if frame else None))
        dups = db.execute("SELECT COUNT(*) FROM (SELECT node_id, seq FROM reads GROUP BY node_id, seq "
                          "HAVING COUNT(*) > 1)").fetchone()[0]
        conflicts = db.execute("SELECT COUNT(*) FROM seq_conflicts").fetchone()[0] if "seq_conflicts" in tables else 0
        return reads, events, int(dups), int(conflicts)
    finally:
        db.close()


def read_outbox(db_path: Path) -> tuple[int, frozenset[int], frozenset[int]]:
    """(last seq given out, seqs in the `losses` table, seqs still queued) of a node's outbox.

    Read after the node has stopped, read-only with plain SQL on the tables transport.outbox
    documents (meta, losses, outbox), as read_hq does HQ's store: opening an Outbox would
    create or migrate it. The losses table lists each seq dropped under quota (the newest
    Outbox.max_losses_kept of them); a message the outbox refused took no seq and is not there.
    """
    if not db_path.is_file():
        raise FileNotFoundError(f"{db_path}: no outbox")
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        row = db.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()
        dropped = frozenset(int(r[0]) for r in db.execute("SELECT seq FROM losses"))
        queued = frozenset(int(r[0]) for r in db.execute("SELECT seq FROM outbox"))
    finally:
        db.close()
    last = max([int(row[0]) - 1 if row else 0, *dropped, *queued, 0])
    return last, dropped, queued


def run_scenario(scenario: Scenario, out_dir: Path) -> RunResult:
    """Run and judge one scenario (convenience for tests and the CLI)."""
    return ScenarioRunner(scenario, out_dir).run()

