"""The judge on hand-made HQ rows: attribution, duplicates, re-reads after a power cut, loss; and
the run's verdict (RunResult.passed) on such a judgement."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hardware.clip import CameraSettings, Clip, ClipWriter
from hil.judge import (
    Judge,
    LoggedMessage,
    NodeRun,
    OutboxStatus,
    StoredEvent,
    StoredRead,
    normalise,
    parse_trigger_id,
)
from hil.runner import RunResult
from hil.scenario import Expect, Scenario

pytestmark = pytest.mark.hil

S = 1_000_000_000
OFFSET = 1_700_000_000 * S  # wall - monotonic
ORIGIN = 5_000 * S           # run 0's replay origin (monotonic)


@pytest.fixture
def clip(tmp_path: Path) -> Clip:
    """10 s, 10 fps, two vehicles on loop1 (fall 2 s and 6 s) and a false trigger at 8.5 s."""
    with ClipWriter(tmp_path / "c", CameraSettings((64, 36), (32, 18), 10.0)) as w:
        for i in range(101):
            w.add_frame(np.zeros((36, 64, 3), np.uint8), i * S // 10)
        for t_fall, t_rise in ((2.0, 2.6), (6.0, 6.6), (8.5, 9.0)):
            w.add_trigger(17, "falling", int(t_fall * S), name="loop1")
            w.add_trigger(17, "rising", int(t_rise * S), name="loop1")
        w.add_vehicle("ABC123", int(1.6 * S), int(2.8 * S))
        w.add_vehicle("XYZ789", int(5.6 * S), int(6.8 * S))
    return Clip.load(tmp_path / "c")


def read(seq: int, plate: str, clip_t: float, stored_after_s: float, origin: int = ORIGIN,
         trigger_t: float | None = None) -> StoredRead:
    capture = origin + int(clip_t * S) + OFFSET
    tid = f"loop1-{origin + int(trigger_t * S)}" if trigger_t is not None else None
    return StoredRead(seq, plate, 0.9, capture, capture + int(stored_after_s * S), tid, "1")


def no_read(seq: int, trigger_t: float, origin: int = ORIGIN) -> StoredEvent:
    t = origin + int(trigger_t * S)
    return StoredEvent(seq, "no_read", t + OFFSET, t + OFFSET + S, f"loop1-{t}")


def one_run(killed: bool = False, end: int = ORIGIN + 20 * S) -> list[NodeRun]:
    return [NodeRun(0, ORIGIN + 40_000_000, end, killed)]


def test_clean_run_every_vehicle_once_latency_from_its_own_trigger(clip):
    reads = [read(1, "ABC123", 2.2, 0.5, trigger_t=2.0), read(2, "XY2789", 6.3, 0.4, trigger_t=6.0)]
    events = [no_read(3, 8.5)]
    j = Judge(clip, one_run(), OFFSET, speed=1.0).judge(reads, events, OutboxStatus(3, 3, 0, {}))
    assert j.origins[0] == ORIGIN
    assert [v.outcome for v in j.vehicles] == ["correct", "misread"]
    # latency = stored - wall time of the vehicle's own trigger: 0.2 s to capture + 0.5 s to store
    assert j.vehicles[0].matches[0].latency_s == pytest.approx(0.7)
    assert [t.outcome for t in j.triggers] == ["read", "read", "no_read"]
    # per trigger: to the first message naming it (the no_read is stored 1 s after its trigger)
    assert [round(t.latency_s, 2) for t in j.triggers] == [0.7, 0.7, 1.0]
    assert j.figures()["trigger_to_hq_worst_s"] == 1.0
    f = j.figures()
    assert (f["reads_correct"], f["misread"], f["missed"], f["data_lost"], f["phantom_reads"]) == (1, 1, 0, 0, 0)
    assert j.data_path_ok


def test_trigger_without_read_or_event_and_missing_message_are_failures(clip):
    reads = [read(1, "ABC123", 2.2, 0.5, trigger_t=2.0)]
    j = Judge(clip, one_run(), OFFSET, speed=1.0).judge(reads, [no_read(3, 8.5)], OutboxStatus(3, 3, 0, {}))
    assert [t.outcome for t in j.triggers] == ["read", "unaccounted", "no_read"]
    assert j.data.lost == 1 and j.data.missing_seqs == [2]
    assert not j.data_path_ok


def test_two_reads_in_one_run_are_a_duplicate_and_a_read_far_from_vehicles_is_false(clip):
    reads = [read(1, "ABC123", 2.2, 0.5, trigger_t=2.0), read(2, "ABC123", 2.5, 0.5, trigger_t=2.0),
             read(3, "XYZ789", 6.2, 0.5, trigger_t=6.0), read(4, "QQQ111", 8.7, 0.5, trigger_t=8.5)]
    j = Judge(clip, one_run(), OFFSET, speed=1.0).judge(reads, [], OutboxStatus(4, 4, 0, {}))
    assert [v.outcome for v in j.vehicles] == ["duplicate", "correct"]
    assert [m.read.plate for m in j.phantom_reads] == ["QQQ111"]


def test_power_cut_rereads_count_once_per_run_and_cut_passes_are_excused(clip):
    origin2 = ORIGIN + 30 * S
    runs = [NodeRun(0, ORIGIN, ORIGIN + int(4.5 * S), killed=True), NodeRun(1, origin2 + 50_000_000, origin2 + 20 * S, False)]
    reads = [read(1, "ABC123", 2.2, 0.5, trigger_t=2.0),
             read(2, "ABC123", 2.3, 0.5, origin=origin2, trigger_t=2.0),
             read(3, "XYZ789", 6.1, 0.5, origin=origin2, trigger_t=6.0)]
    events = [no_read(4, 8.5, origin=origin2)]
    j = Judge(clip, runs, OFFSET, speed=1.0).judge(reads, events, OutboxStatus(4, 4, 0, {}))
    assert j.origins == {0: ORIGIN, 1: origin2}
    assert [v.outcome for v in j.vehicles] == ["re-read after restart", "correct"]
    by_run = {(t.run, t.t_s): t.outcome for t in j.triggers}
    assert by_run[(0, 2.0)] == "read"
    assert by_run[(0, 6.0)] == "cut by power loss" and by_run[(0, 8.5)] == "cut by power loss"
    assert by_run[(1, 6.0)] == "read" and by_run[(1, 8.5)] == "no_read"
    assert j.data_path_ok


def test_drops_under_quota_are_not_loss_but_uncounted_gaps_are(clip):
    events = [no_read(3, 8.5)]
    j = Judge(clip, one_run(), OFFSET, speed=1.0).judge([], events, OutboxStatus(3, 1, 0, {"event": 2}))
    assert j.data.lost == 0 and j.data.dropped == 2
    j = Judge(clip, one_run(), OFFSET, speed=1.0).judge([], events, OutboxStatus(3, 1, 0, {"event": 1}))
    assert j.data.lost == 1


def test_stalled_vehicle_is_excused_and_speed_zero_has_no_latency(clip):
    j = Judge(clip, one_run(), OFFSET, speed=0.0, excused_ns=[(5 * S, 7 * S, "camera stalled")]).judge(
        [read(1, "ABC123", 2.2, 0.5, trigger_t=2.0)], [no_read(2, 6.0), no_read(3, 8.5)], OutboxStatus(3, 3, 0, {}))
    assert j.vehicles[1].excused == "camera stalled" and j.vehicles[1].no_read_events == 1
    assert j.figures()["excused"] == 1 and j.figures()["missed"] == 0
    assert j.vehicles[0].matches[0].latency_s is None and not j.latency_measured


def test_helpers():
    assert normalise("kxt-48 21") == "KXT4821"
    assert parse_trigger_id("loop-a-123") == ("loop-a", 123)
    assert parse_trigger_id(None) is None and parse_trigger_id("loop1-x") is None


def test_a_trigger_whose_message_was_dropped_under_quota_is_not_a_loss(clip):
    reads = [read(1, "ABC123", 2.2, 0.5, trigger_t=2.0)]
    events = [no_read(3, 8.5)]
    j = Judge(clip, one_run(), OFFSET, speed=1.0).judge(reads, events, OutboxStatus(3, 2, 0, {"read": 1}))
    assert [t.outcome for t in j.triggers] == ["read", "dropped under quota", "no_read"]
    assert j.data_path_ok


def test_a_pass_left_without_message_after_a_logged_dedup_suppression_is_reported(clip):
    reads = [read(1, "ABC123", 2.2, 0.5, trigger_t=2.0)]
    events = [no_read(2, 8.5)]
    status = OutboxStatus(2, 2, 0, {})
    j = Judge(clip, one_run(), OFFSET, speed=1.0).judge(reads, events, status, suppressed=1)
    assert [t.outcome for t in j.triggers] == ["read", "suppressed as duplicate", "no_read"]
    assert j.data_path_ok and not j.every_trigger_has_a_message
    assert j.figures()["triggers_without_message"] == 1


def test_the_right_plate_twice_in_one_run_is_flagged(clip):
    reads = [read(1, "ABC123", 2.2, 0.5, trigger_t=2.0), read(2, "ABC123", 2.5, 0.5, trigger_t=2.0),
             read(3, "XYZ789", 6.1, 0.5, trigger_t=6.0), read(4, "XYZ78", 6.3, 0.5, trigger_t=6.0)]
    j = Judge(clip, one_run(), OFFSET, speed=1.0).judge(reads, [], OutboxStatus(4, 4, 0, {}))
    assert [v.duplicate_correct for v in j.vehicles] == [True, False]
    assert [v.outcome for v in j.vehicles] == ["duplicate", "duplicate"]


def _verdict(clip: Clip, judgement, expect: Expect) -> RunResult:
    scenario = Scenario(name="t", path=clip.path / "t.toml", clip=clip.path, expect=expect)
    return RunResult(scenario, clip, judgement, [], 0, 1.0, [0], clip.path)


def test_false_reads_beyond_max_false_reads_fail_the_run(clip):
    reads = [read(1, "ABC123", 2.2, 0.5, trigger_t=2.0), read(2, "XYZ789", 6.2, 0.5, trigger_t=6.0),
             read(3, "QQQ111", 8.7, 0.5, trigger_t=8.5)]
    j = Judge(clip, one_run(), OFFSET, speed=1.0).judge(reads, [], OutboxStatus(3, 3, 0, {}))
    assert j.data_path_ok and j.every_trigger_has_a_message and len(j.phantom_reads) == 1
    strict = _verdict(clip, j, Expect())   # max_false_reads defaults to 0
    assert not strict.passed
    assert strict.expectation_failures() == [
        "1 false reads (outside every vehicle's legible window: QQQ111), expected at most 0"]
    assert strict.to_json()["expect"]["max_false_reads"] == 0
    assert _verdict(clip, j, Expect(max_false_reads=1)).passed


def test_what_the_node_logged_is_attached_to_its_trigger_and_gets_the_quota_excuse_first(clip):
    # Both passes of the false trigger (8.5 s) and of the second vehicle (6 s) left nothing at
    # HQ; the outbox dropped one message, and its log says which: the no_read of 8.5 s.
    reads = [read(1, "ABC123", 2.2, 0.5, trigger_t=2.0)]
    logged = [LoggedMessage(1, "read", f"loop1-{ORIGIN + 2 * S}"),
              LoggedMessage(3, "no_read", f"loop1-{ORIGIN + int(8.5 * S)}", dropped=True)]
    j = Judge(clip, one_run(), OFFSET, speed=1.0).judge(reads, [], OutboxStatus(3, 1, 0, {"event": 1}),
                                                        logged=logged)
    by_t = {t.t_s: t for t in j.triggers}
    assert by_t[8.5].outcome == "dropped under quota"
    assert by_t[8.5].node_logged == ("no_read seq 3",) and by_t[8.5].node_dropped == (3,)
    assert by_t[6.0].outcome == "unaccounted" and by_t[6.0].node_logged == ()
    assert by_t[2.0].node_logged == ("read seq 1",) and by_t[2.0].node_dropped == ()
