"""What the bench reads in the node's own log (`alpr-node run` output, lab/<node>.log).

The node is driven from outside, so its log is one of the few things the bench can see of what
happened inside it: whether the camera really stalled and came back, what each pass ended in
(and which message the outbox dropped under its quota), and clip errors the node hit mid-run.
Only the documented INFO/WARNING lines are used; their wording is matched here and nowhere else.

    2026-12-01 10:10:35,261 WARNING hardware.camera: camera: stalled (CameraTimeout: ...)
    2026-12-01 10:10:38,635 INFO hardware.camera: camera: source ended
    ... node.pipeline: read track-3 (0.89) seq 1, 9 frames, approaching, trigger loop1-48939829718302
    ... node.pipeline: trigger loop1-48942429697512 (lane 1): vehicle passed, no read (event seq 2)
    ... transport.outbox: outbox /x/outbox.db: quota reached, dropping event seq 1 (14043 bytes)
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from hil.judge import LoggedMessage
from hil.scenario import Fault

_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+) ([\w.]+): (.*)$")
_READ = re.compile(r"^read (\S+) \([\d.]+\) seq (\d+),.* trigger (\S+)$")
_NO_READ = re.compile(r"^trigger (\S+) \(lane [^)]*\): vehicle passed, no read \(event seq (\d+)\)$")
_DROPPED = re.compile(r"quota reached, dropping (\w+) seq (\d+) ")
_STALLED = "camera: stalled"
_ENDED = "camera: source ended"
STALL_EARLY_S = 0.5   # the replay starts a little before the node logs that it started
STALL_LATE_S = 0.5    # log and scheduling slack after the gap ends


@dataclass(frozen=True)
class LogLine:
    """One timestamped line of the node's log."""

    t: datetime
    level: str
    logger: str
    message: str


def lines(text: str) -> list[LogLine]:
    """The node's timestamped log lines (continuation lines, e.g. tracebacks, are left out)."""
    out = []
    for raw in text.splitlines():
        m = _LINE.match(raw)
        if m:
            out.append(LogLine(datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f"), m[2], m[3], m[4]))
    return out


def runs(text: str, started: str) -> list[list[LogLine]]:
    """The log split into node runs, each starting at its `started` line (earlier lines dropped)."""
    out: list[list[LogLine]] = []
    for line in lines(text):
        if started in line.message:
            out.append([line])
        elif out:
            out[-1].append(line)
    return out


def messages(text: str) -> list[LoggedMessage]:
    """Every read and no_read the node logged committing, and whether its outbox then dropped it."""
    dropped: set[int] = set()
    found: list[tuple[int, str, str | None]] = []
    for line in lines(text):
        if (m := _READ.match(line.message)) and line.logger == "node.pipeline":
            found.append((int(m[2]), "read", None if m[3] == "None" else m[3]))
        elif (m := _NO_READ.match(line.message)) and line.logger == "node.pipeline":
            found.append((int(m[2]), "no_read", m[1]))
        elif (m := _DROPPED.search(line.message)) and line.logger == "transport.outbox":
            dropped.add(int(m[2]))
    return [LoggedMessage(seq, kind, trigger_id, seq in dropped) for seq, kind, trigger_id in found]


class ClipErrorWatch:
    """Polled during a run: has the node logged a ClipError yet? Reads only what is new, at most
    every `every_s`, so a soak's long log is not read over and over."""

    def __init__(self, path: Path, every_s: float = 0.5) -> None:
        self.path = path
        self.every_s = every_s
        self._offset = 0
        self._tail = b""
        self._next = 0.0

    def seen(self) -> bool:
        """True once a ClipError line has appeared in the log."""
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.every_s
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return False
        self._offset += len(chunk)
        # Keep the end of the last chunk: the word may be split across two reads.
        text, self._tail = self._tail + chunk, chunk[-16:]
        return b"ClipError" in text


def clip_errors(text: str, log_path: Path, limit: int = 5) -> list[str]:
    """ClipError lines of the node's log (distinct messages, at most `limit`), for the run's errors.

    A clip the node cannot read is a bench problem (the clip), not a node failure, so the
    run's errors should say so instead of only "did not finish within timeout_s".
    """
    seen: list[str] = []
    for raw in text.splitlines():
        if "ClipError" not in raw:
            continue
        m = _LINE.match(raw)
        what = m[4] if m else raw.strip()
        if what not in seen:
            seen.append(what)
    out = [f"node log ({log_path}): {what}" for what in seen[:limit]]
    if len(seen) > limit:
        out.append(f"node log ({log_path}): {len(seen) - limit} more distinct ClipError lines")
    return out


def stall_problems(text: str, faults: Iterable[Fault], speed: float, started: str, log_path: Path) -> list[str]:
    """Bench errors for camera_stall faults the node's log shows no evidence of.

    A stall fault is only a gap in the clip; whether the node saw a stall depends on its
    camera.capture_timeout_s. Evidence, in one node run: a "camera: stalled" line inside the
    gap (seconds after that run's `started` line, at the replay speed), and after it
    "camera: source ended", which only a camera the supervisor opened again after the stall
    can reach (the replay resumes where the stalled camera stopped and runs to the clip's end).
    """
    problems = []
    node_runs = runs(text, started)
    for fault in faults:
        if fault.kind != "camera_stall" or speed <= 0:
            continue
        lo, hi = fault.at_s / speed - STALL_EARLY_S, fault.end_s / speed + STALL_LATE_S
        stalled_in_gap = restarted = False
        for run in node_runs:
            t0 = run[0].t
            stalls = [i for i, ln in enumerate(run) if ln.logger == "hardware.camera" and _STALLED in ln.message
                      and lo <= (ln.t - t0).total_seconds() <= hi]
            if not stalls:
                continue
            stalled_in_gap = True
            if any(ln.logger == "hardware.camera" and _ENDED in ln.message for ln in run[stalls[0] + 1:]):
                restarted = True
                break
        what = f"camera_stall at {fault.at_s:g}s for {fault.duration_s:g}s"
        if not stalled_in_gap:
            problems.append(f"{what}: the node logged no '{_STALLED}' between {lo:.1f}s and {hi:.1f}s after it "
                            f"started, so the fault was not exercised (is camera.capture_timeout_s shorter than "
                            f"the gap?); see {log_path}")
        elif not restarted:
            problems.append(f"{what}: the node logged the stall but its camera never came back (no "
                            f"'{_ENDED}' after it); see {log_path}")
    return problems
