"""A read whose commit fails after its track has closed is held and tried again, not lost.

The track has left the tracker by then, so the payload the pipeline built is the read's only
copy: it is kept (bounded, see MAX_HELD_READS), committed again with a backoff, and its pass
waits for it instead of reporting a false no_read. The scenes and helpers are test_pipeline's.
"""
from __future__ import annotations

import logging
import sqlite3
from typing import Callable

import pytest

import node.pipeline as pipeline_module
from node.pipeline import MAX_HELD_READS, Pipeline
from tests.unit.test_pipeline import (  # noqa: F401  (keys: the fixture)
    LEFT, RIGHT, TOP, committed, keys, plate_text, scene_of, scripted, step_through, two_lanes, visible)
from transport.payload import ReadPayload

pytestmark = pytest.mark.unit
PLATE = "7ABC123"


class FailingCommits:
    """Wraps a sink's submit_read: the first `failures` calls raise a disk error (-1: all do).

    Records, at each call, how many reads the pipeline holds (to show the bound is kept).
    """

    def __init__(self, pipeline: Pipeline, failures: int) -> None:
        self.pipeline = pipeline
        self.failures = failures
        self.calls = 0
        self.held_seen: list[int] = []
        self._commit: Callable[[ReadPayload], int] = pipeline.sink.submit_read
        pipeline.sink.submit_read = self  # type: ignore[method-assign]

    def __call__(self, read: ReadPayload) -> int:
        self.calls += 1
        self.held_seen.append(len(getattr(self.pipeline, "_held", ())))
        if self.failures < 0 or self.calls <= self.failures:
            raise sqlite3.OperationalError("disk I/O error")
        return self._commit(read)


LOOP = [(0.5, True, "loop1"), (0.8, False, "loop1")]


@pytest.mark.parametrize("failures, seconds", [
    (1, 4.0),   # committed on the first retry, before the pass is due
    (3, 8.0),   # committed after the pass is due: the pass waits for it
    (1, 1.3),   # the reviewer's case: the track expires, then the pipeline stops (_finish retries)
])
def test_a_read_that_fails_to_commit_is_committed_later_and_its_pass_is_not_a_no_read(tmp_path, keys, failures,
                                                                                      seconds):
    # Three frames of one plate (0.50, 0.55, 0.60 s) while the loop is on; the track closes at 1.25 s.
    pipeline, scene, outbox = scripted(tmp_path, keys, visible(0.5, 0.6, LEFT, plate_text(PLATE)))
    sink = FailingCommits(pipeline, failures)
    step_through(pipeline, scene, seconds, LOOP)
    reads, events = committed(outbox, keys)
    assert [(r["plate"], r["trigger_id"]) for r in reads] == [(PLATE, "loop1-500000000")]
    assert events == []  # not a false "vehicle passed, no read"
    assert sink.calls == failures + 1
    assert pipeline.stats["reads_held"] == 1 and pipeline.stats["held_reads_committed"] == 1
    assert pipeline.stats["reads"] == 1 and pipeline.stats.get("reads_lost", 0) == 0
    assert pipeline.accounting.report()["1"]["day"] == {"passes": 1, "read": 1, "capture_rate": 1.0}
    health = pipeline.health()
    assert health["reads_waiting"] == 0 and health["counts"]["reads_held"] == 1


def test_a_sink_that_always_fails_holds_a_bounded_number_and_logs_what_is_lost(tmp_path, keys, monkeypatch,
                                                                               caplog: pytest.LogCaptureFixture):
    monkeypatch.setattr(pipeline_module, "MAX_HELD_READS", 3)
    # Eight vehicles, one a second apart, each on the loop while its plate is in view.
    plates = [f"{i}ABC12{i}" for i in range(8)]
    script = scene_of(*(visible(1.0 + i, 1.3 + i, LEFT, plate_text(p)) for i, p in enumerate(plates)))
    edges = [edge for i in range(8) for edge in ((1.0 + i, True, "loop1"), (1.2 + i, False, "loop1"))]
    pipeline, scene, outbox = scripted(tmp_path, keys, script, max_no_reads_per_min=100)
    sink = FailingCommits(pipeline, -1)
    with caplog.at_level(logging.INFO):
        step_through(pipeline, scene, 12, edges)
    reads, events = committed(outbox, keys)
    assert reads == []
    assert pipeline.stats["reads_held"] == 8 and pipeline.stats["reads_lost"] == 8
    assert max(sink.held_seen) <= 3 and pipeline._held == [] and pipeline._waiting_passes == []
    # Each pass closes once its read is dropped: as a no_read, the truth as HQ will see it.
    assert sorted(e["trigger_id"] for e in events) == sorted(f"loop1-{(1.0 + i) * 1e9:.0f}" for i in range(8))
    lost = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and "lost" in r.getMessage()]
    assert any("more than 3 reads were waiting" in m and "disk I/O error" in m for m in lost)
    assert any("3 read(s) lost" in m and "the pipeline is stopping" in m for m in lost)
    assert sum(int(m.split(" read(s) lost")[0].rsplit(" ", 1)[-1]) for m in lost) == 8
    for plate in plates:  # the plate is personal data: the log names tracks and triggers only
        assert plate not in caplog.text


def test_held_reads_are_retried_with_a_backoff_not_on_every_frame(tmp_path, keys):
    pipeline, scene, outbox = scripted(tmp_path, keys, visible(0.5, 0.6, LEFT, plate_text(PLATE)))
    sink = FailingCommits(pipeline, -1)
    step_through(pipeline, scene, 20.0, LOOP)  # 375 frames after the commit first fails at 1.25 s
    outbox.close()
    # Tries at 1.25 s, then 0.5, 1, 2, 4, 8 s apart (at most 10 s), and the last one on stopping.
    assert sink.calls == 7
    assert MAX_HELD_READS <= 64  # "a few dozen": each holds a crop and perhaps an overview JPEG


def test_a_still_open_track_is_left_to_its_track_not_held(tmp_path, keys):
    # test_pipeline's scene: A (loop 0.5-1.0) stays in view until 3.0 s while B's pass (loop
    # 1.6-2.6) keeps the detector on, so A's read is first sent when its pass closes, as an open
    # track. That commit fails: the track is still open, so it is judged again when it closes
    # (as before), not held.
    script = scene_of(visible(0.3, 3.0, LEFT, plate_text(PLATE)), visible(1.5, 3.5, TOP, plate_text("5XYZ987")))
    pipeline, scene, outbox = scripted(tmp_path, keys, script)
    sink = FailingCommits(pipeline, 1)
    step_through(pipeline, scene, 6, [(0.5, True, "loop1"), (1.0, False, "loop1"),
                                      (1.6, True, "loop1"), (2.6, False, "loop1")])
    reads, _ = committed(outbox, keys)
    assert sorted(r["plate"] for r in reads) == ["5XYZ987", PLATE]
    assert sink.calls == 3
    assert pipeline.stats.get("reads_held", 0) == 0 and pipeline.stats["emit_errors"] == 1


def test_a_held_read_counts_as_its_pass_read_for_the_next_vehicle(tmp_path, keys):
    # Lane 1's read is held; lane 2's vehicle (first seen in lane 1's pass, no regions) must still
    # go to lane 2's empty pass, not share lane 1's: one read per pass and no false no_read.
    script = scene_of(visible(0.3, 0.6, LEFT, plate_text(PLATE)), visible(0.3, 1.2, RIGHT, plate_text("5XYZ987")))
    pipeline, scene, outbox = scripted(tmp_path, keys, script, triggers=two_lanes(False))
    FailingCommits(pipeline, 1)
    step_through(pipeline, scene, 6, [(0.5, True, "loop1"), (0.9, False, "loop1"),
                                      (0.7, True, "loop2"), (1.1, False, "loop2")])
    reads, events = committed(outbox, keys)
    assert sorted((r["plate"], r["trigger_id"]) for r in reads) == [("5XYZ987", "loop2-700000000"),
                                                                     (PLATE, "loop1-500000000")]
    assert events == []


def test_an_overview_that_fails_after_its_read_is_committed_does_not_cost_the_pass_its_read(tmp_path, keys):
    pipeline, scene, outbox = scripted(tmp_path, keys, visible(0.5, 0.6, LEFT, plate_text(PLATE)), overview=True)

    def no_overview(seq: int, jpeg: bytes, time_ns: int) -> int:
        raise sqlite3.OperationalError("database or disk is full")
    pipeline.sink.submit_overview = no_overview  # type: ignore[method-assign]
    step_through(pipeline, scene, 4.0, LOOP)
    reads, events = committed(outbox, keys)
    assert [r["plate"] for r in reads] == [PLATE] and events == []
    assert pipeline.stats["reads"] == 1 and pipeline.stats["emit_errors"] == 1
