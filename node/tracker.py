"""Tracks plates across frames so one vehicle pass gives one read.

Association is global over each frame: every (track, detection) pair whose boxes overlap by
at least MIN_OVERLAP_IOU is considered first, the best overlap first, and only the tracks and
detections left over are then paired among those that barely overlap or whose centres are near
(a plate moves fast between frames at close range): the higher-scored detection first, each to
its nearest track. Matching detection by detection instead, in detection-score order, let a
plate near a track take it before the track's own, strongly overlapping plate was considered: a
close follower's plate (scored higher, just above the leader's) took the leader's track, and one
of the two reads was lost or the two swapped. A barely overlapping pair is no better evidence
than a near one (a new plate grazing the edge of a fast leader's last box), so it does not
outrank them. A track closes when it has not been seen for `timeout_ns` of frame time.

A track whose last sighting is older than the timeout when the next frame's observations arrive
(the worker stalled and the frame queue dropped what came between) takes one of them only if
its text agrees (see _agrees): after such a gap the plate in the same place may be the next
vehicle's, and joining it to the stale track would lose one of the two reads. A slow worker
that still sees the same plate keeps its track.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from inference.metrics import box_iou as iou

Box = tuple[int, int, int, int]
# The least overlap (IoU) with a track's last box that ranks a detection as that track's own plate,
# ahead of every near pair. Below it a graze (a new plate whose box just touches a fast plate's last
# one) says no more than nearness: such pairs are ranked with the near ones, as the score-order
# matching before did (it gave both a score of 0.1).
MIN_OVERLAP_IOU = 0.1


@dataclass
class Observation:
    """One OCR reading of a plate in one frame."""

    time_ns: int
    wall_ns: int
    box: Box
    text: str
    confidence: float
    char_confidences: list[float]
    candidates: list[tuple[str, float]]
    region: str | None
    region_confidence: float
    crop: "np.ndarray"  # encoded to JPEG only for the observation that is sent
    detection_score: float
    overview_jpeg: bytes | None = None


@dataclass
class Track:
    """A plate followed across frames."""

    id: int
    observations: list[Observation] = field(default_factory=list)
    trigger_id: str | None = None
    # Kept apart from the observations: the oldest ones may be dropped (max_observations), but
    # the pipeline matches the whole time span against trigger windows.
    first_seen_ns: int | None = None
    # Set once the pipeline has sent this track's read (or judged it a repeat) before the track
    # closed, because its pass closed first; the track stays open so the same plate, still in
    # view, is not taken for a new vehicle.
    sent: bool = False
    # The plate (the pipeline's dedup key) its read was sent or suppressed under: while the track
    # still sees it, the pipeline keeps that dedup entry fresh (the plate has not gone away).
    sent_as: str | None = None
    # Pipeline clock: before this, a track still open is not judged again for an early read
    # (continuous mode, see Pipeline._emit_long_tracks).
    retry_ns: int = 0

    @property
    def last(self) -> Observation:
        return self.observations[-1]

    def direction(self) -> str:
        """'approaching' if the plate grew in the image, 'receding' if it shrank."""
        if len(self.observations) < 2:
            return "unknown"
        first, last = self.observations[0].box[2], self.observations[-1].box[2]
        if last > first * 1.1:
            return "approaching"
        if last < first * 0.9:
            return "receding"
        return "unknown"


def _agrees(a: str, b: str) -> bool:
    """Whether two readings are of one plate: equal, or of equal length with one character
    different (a misread). Empty readings agree with nothing: there is nothing to compare."""
    if not a or not b or len(a) != len(b):
        return False
    return sum(x != y for x, y in zip(a, b)) <= 1


def _distance(a: Box, b: Box) -> float:
    """Distance between two boxes' centres, in units of the larger box's size along each axis
    (the scale _near judges by), so that a large, close plate and a small, far one compare."""
    ax, ay = a[0] + a[2] / 2, a[1] + a[3] / 2
    bx, by = b[0] + b[2] / 2, b[1] + b[3] / 2
    return float(np.hypot((ax - bx) / max(a[2], b[2], 1), (ay - by) / max(a[3], b[3], 1)))


def _near(a: Box, b: Box) -> bool:
    ax, ay = a[0] + a[2] / 2, a[1] + a[3] / 2
    bx, by = b[0] + b[2] / 2, b[1] + b[3] / 2
    return abs(ax - bx) < 1.5 * max(a[2], b[2]) and abs(ay - by) < 2.0 * max(a[3], b[3])


class Tracker:
    """Open tracks, bounded in number; the oldest is closed early if the bound is reached."""

    def __init__(self, timeout_ns: int, max_tracks: int = 16, max_observations: int = 30) -> None:
        self.timeout_ns = timeout_ns
        self.max_tracks = max_tracks
        self.max_observations = max_observations
        self._open: list[Track] = []
        self._next_id = 1

    def update(self, observations: list[Observation], trigger_id: str | None) -> list[Track]:
        """Add one frame's observations; returns the tracks that closed."""
        # Detection-score order: what the fallback and new tracks fall back on when all else ties.
        ordered = sorted(observations, key=lambda o: -o.detection_score)
        assigned = self._assign(ordered)
        for i, obs in enumerate(ordered):
            track = assigned.get(i)
            if track is None:
                track = Track(self._next_id, trigger_id=trigger_id, first_seen_ns=obs.time_ns)
                self._next_id += 1
                self._open.append(track)
            track.observations.append(obs)
            if len(track.observations) > self.max_observations:
                # Keep the most confident readings: they decide the vote anyway.
                track.observations.remove(min(track.observations[:-1], key=lambda o: o.confidence))
            if track.trigger_id is None:
                track.trigger_id = trigger_id
        closed = []
        if observations:
            now = max(o.time_ns for o in observations)
            closed = self.expire(now)
        while len(self._open) > self.max_tracks:
            closed.append(self._open.pop(0))
        return closed

    def _assign(self, ordered: list[Observation]) -> dict[int, Track]:
        """Which open track each observation (by its index in `ordered`) continues.

        Pairs overlapping by at least MIN_OVERLAP_IOU first, largest IoU first; then, among the
        tracks and observations still unpaired, pairs that overlap less or whose centres are
        near (_near): those whose reading agrees with the track first, then the higher-scored
        detection (as the score-order matching before ranked them all alike), each to its
        nearest track (then the older one). A pair is taken
        only if neither side is taken yet, so a track keeps its own overlapping plate whatever
        order the detector scored them in.

        Centre distance alone does not rank the second phase: it is measured in box sizes, so a
        fast plate that moved one box height is "farther" from its own last box than a new plate
        grazing that box's edge.
        """
        # (rank, observation index, track index): each list is taken in rank order
        overlaps: list[tuple[tuple[float, int, int], int, int]] = []
        nears: list[tuple[tuple[bool, int, float, int], int, int]] = []
        for i, obs in enumerate(ordered):
            for j, track in enumerate(self._open):
                if obs.time_ns - track.last.time_ns > self.timeout_ns and \
                        not any(_agrees(obs.text, o.text) for o in track.observations):
                    continue  # stale: closed below (expire), and this plate starts its own track
                score = iou(track.last.box, obs.box)
                if score >= MIN_OVERLAP_IOU:
                    # ties: the higher-scored detection, then the older track
                    overlaps.append(((-score, i, j), i, j))
                elif score > 0 or _near(track.last.box, obs.box):
                    # a reading that agrees with the track's first: a fast plate keeps its track
                    # when a higher-scored new plate grazes or nears its last box
                    differs = not any(_agrees(obs.text, o.text) for o in track.observations)
                    nears.append(((differs, i, _distance(track.last.box, obs.box), j), i, j))
        assigned: dict[int, Track] = {}
        taken: set[int] = set()
        for pairs in (overlaps, nears):
            for _, i, j in sorted(pairs, key=lambda c: c[0]):
                if i not in assigned and j not in taken:
                    assigned[i] = self._open[j]
                    taken.add(j)
        return assigned

    def expire(self, now_ns: int) -> list[Track]:
        """Close the tracks not seen for the timeout."""
        closed = [t for t in self._open if now_ns - t.last.time_ns > self.timeout_ns]
        self._open = [t for t in self._open if t not in closed]
        return closed

    def open_tracks(self) -> list[Track]:
        """The tracks still open (a copy of the list: closing goes through update/expire/close_all)."""
        return list(self._open)

    def close_all(self) -> list[Track]:
        closed, self._open = self._open, []
        return closed

    @property
    def open_count(self) -> int:
        return len(self._open)
