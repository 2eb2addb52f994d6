"""When the node's camera took each frame of a real-time replay: the replay's pace, seen from outside.

At speed > 0 the replay paces frames at their recorded times, as a camera does: the node's camera
thread waits until a frame is due, then reads its JPEG and hands the frame on (a bounded queue
between it and the worker drops the oldest frame when the worker falls behind). If the machine
gives that thread no CPU (or no disk) in time, the replay falls behind: the overdue frames come
late, back to back. The node's tracker closes a track when the vehicle has not been seen for
`pipeline.track_timeout_s` of replay time, and its replay clock keeps real time, so a camera
that falls behind by more than that less one frame can make the node close a vehicle's track
while the vehicle is in view (the read then rests on the first, farthest frames; the rest is
deduplicated, or sent again as a second, different read). Measured on 2 cores shared with two
training jobs at a load of ~10: reads from 3 and 4 frames instead of 10 and 9 (still right); a node
stopped for 1 s mid-pass: a second read from 2 frames, and `min_correct = 1.0` missed 3 times in 4.

The bench sees when each frame was read from the frame files themselves: it hands the node a
copy of the clip's frames, sets each file's access time to just before its modification time
before each node run (Linux `relatime` then stamps the next read, once), and reads the access
times back when the run is over, as `ls -lu` would. A frame read `lag` seconds after it was due
(due = the first frame's read time + its clip time / speed) was that late; `max_lag_s` is the
worst, and `late` lists every frame read LATE_FLOOR_S or more late (index, lag), so that the
verdict can excuse only the vehicles in view while the replay was behind (hil.runner). At most
MAX_LATE frames are listed (the latest ones); `late_truncated` says when there were more.
Where the filesystem keeps no access times (`noatime`), nothing is measured (None).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from hardware.clip import Clip

# Frames read at least this late are listed (the smallest real-time limit, hil.runner, is 0.05 s).
LATE_FLOOR_S = 0.05
MAX_LATE = 1000


@dataclass(frozen=True)
class Pace:
    """One node run's replay pace; max_lag_s None when nothing could be measured."""

    frames_read: int
    max_lag_s: float | None
    worst_frame: int | None = None   # index of the frame read latest after it was due
    # (frame index, lag s) of every frame read LATE_FLOOR_S or more late, by index; at most MAX_LATE
    late: tuple[tuple[int, float], ...] = field(default=())
    late_truncated: bool = False     # more frames were that late than MAX_LATE: only the latest listed


class FrameClock:
    """Access times of a replay's frame files: `reset()` before each node run, `read()` after it."""

    def __init__(self, clip: Clip, speed: float) -> None:
        if speed <= 0:
            raise ValueError("FrameClock: only for a real-time replay (speed > 0)")
        self.clip = clip
        self.speed = speed
        self._files = [clip.path / f.file for f in clip.frames]
        self._reset_ns: dict[Path, int] = {}

    def reset(self) -> None:
        """Mark every frame file unread: its access time goes just before its modification time."""
        self._reset_ns = {}
        for file in self._files:
            st = os.stat(file)
            atime = st.st_mtime_ns - 1_000_000
            # relatime updates the access time on the next read only when it is older than
            # the modification (or change) time: this makes the node's read stamp it.
            os.utime(file, ns=(atime, st.st_mtime_ns))
            self._reset_ns[file] = atime

    def read(self) -> Pace:
        """The pace of the node run since `reset()`: frames read, and how late the latest one was."""
        times: list[tuple[int, int]] = []   # (frame index, access time ns)
        for i, file in enumerate(self._files):
            try:
                atime = os.stat(file).st_atime_ns
            except OSError:
                continue
            if atime != self._reset_ns.get(file, atime):
                times.append((i, atime))
        if not times:
            # Nothing read since the reset: the node read no frame, or the filesystem keeps no
            # access times; either way there is no pace to report.
            return Pace(0, None)
        due = [(i, atime - self.clip.frames[i].t_ns / self.speed) for i, atime in times]
        origin = min(d for _, d in due)
        worst = max(due, key=lambda x: x[1])
        late = [(i, round((d - origin) / 1e9, 3)) for i, d in due if d - origin >= LATE_FLOOR_S * 1e9]
        truncated = len(late) > MAX_LATE
        if truncated:
            late = sorted(late, key=lambda x: -x[1])[:MAX_LATE]
        return Pace(len(times), round((worst[1] - origin) / 1e9, 3), worst[0], tuple(sorted(late)), truncated)
