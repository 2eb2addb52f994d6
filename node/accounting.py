"""Capture accounting: every trigger ends in a read or in a recorded "vehicle passed, no read".

Counts are kept per lane and per light condition (day / night) so the node can report its
capture rate honestly; the no-read events themselves travel to HQ like reads.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Pass:
    """One vehicle pass announced by a trigger: a window of frames in which to read it."""

    trigger_id: str
    trigger_name: str
    lane: str
    source: str
    start_ns: int
    end_ns: int
    wall_ns: int
    open_until_inactive: bool = True
    released_ns: int | None = None  # when its trigger last went inactive (for a re-trigger merge)
    reads: list[int] = field(default_factory=list)       # sequence numbers of reads sent for this pass
    duplicates: list[str] = field(default_factory=list)  # plates read but already sent (dedup window)
    best_score: float = -1.0
    best_frame: object = None
    lux: float | None = None


def light(lux: float | None, wall_ns: int) -> str:
    """'night' below 50 lux when the camera reports lux, else by local clock (18:00-06:00)."""
    if lux is not None:
        return "night" if lux < 50 else "day"
    hour = time.localtime(wall_ns / 1e9).tm_hour
    return "night" if hour < 6 or hour >= 18 else "day"


class CaptureAccounting:
    """Per lane and day/night: passes, passes read, and the capture rate."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])

    def record(self, p: Pass) -> None:
        with self._lock:
            counts = self._counts[(p.lane, light(p.lux, p.wall_ns))]
            counts[0] += 1
            counts[1] += 1 if p.reads else 0

    def report(self) -> dict[str, dict[str, dict[str, float]]]:
        """{lane: {day|night: {passes, read, capture_rate}}}."""
        out: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
        with self._lock:
            for (lane, when), (passes, read) in self._counts.items():
                out[lane][when] = {"passes": passes, "read": read,
                                   "capture_rate": round(read / passes, 4) if passes else 0.0}
        return dict(out)
