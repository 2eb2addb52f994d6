"""Regressions in session 20's pipeline changes, found in review: the "same vehicle" rule hid
real vehicles (a lane's own region-less loop taken for a radar over both lanes; one read
counted for two passes of one trigger), a plate grazing a fast plate's last box took its track,
and triggers queued at stop were read inside stop()'s bounded time.

Each test here failed before these fixes but those marked "Guard", which pin what the fixes
must keep. The scenes and helpers are test_pipeline's and test_pipeline_s20's.
"""
from __future__ import annotations

import pytest

from hardware.gpio import TriggerEvent
from node.pipeline import Pipeline, TriggerSpec
from node.tracker import Tracker
from tests.unit.test_pipeline import (  # noqa: F401  (keys: the fixture)
    LANE1_REGION, LEFT, committed, keys, plate_text, scene_of, scripted, step_through, visible)
from tests.unit.test_pipeline_s20 import BEAM_AND_LOOP, _obs, feed, passes

pytestmark = pytest.mark.unit


# -- 1. only a radar is a trigger over both lanes -----------------------------------------------------
@pytest.mark.parametrize("kind", ["loop", "ir_beam", "manual"])
def test_a_plateless_vehicle_on_a_region_less_lane_sensor_beside_a_read_vehicle_has_its_no_read(
        tmp_path, keys, kind):
    # loop1 (lane 1) has a region, lane 2's own sensor has none (valid: it takes plates from
    # anywhere). A (plated, lane 1) on loop1 0.8-1.6 s; B (no legible plate, lane 2) on lane 2's
    # sensor 0.9-1.5 s. Lane 2's pass was taken for a radar's and counted with A's read: B was
    # neither reported nor counted.
    triggers = {"loop1": TriggerSpec("loop1", "1", "loop", LANE1_REGION), "lane2": TriggerSpec("lane2", "2", kind)}
    pipeline, scene, outbox = scripted(tmp_path, keys, visible(0.3, 2.0, LEFT, plate_text("7ABC123")),
                                       triggers=triggers)
    step_through(pipeline, scene, 5, [(0.8, True, "loop1"), (0.9, True, "lane2"), (1.5, False, "lane2"),
                                      (1.6, False, "loop1")])
    reads, events = committed(outbox, keys)
    assert [(r["plate"], r["trigger_id"], r["lane"]) for r in reads] == [("7ABC123", "loop1-800000000", "1")]
    assert [(e["event"], e["trigger_id"], e["lane"]) for e in events] == [("no_read", "lane2-900000000", "2")]
    report = pipeline.accounting.report()
    assert report["1"]["day"]["read"] == 1 and report["2"]["day"] == {"passes": 1, "read": 0, "capture_rate": 0.0}
    assert pipeline.stats["passes_same_vehicle"] == 0


def test_a_region_less_radar_in_the_other_lane_is_still_the_read_vehicle(tmp_path, keys):
    # Guard: the same timing with a radar (lane 2 by its config) in place of lane 2's loop: the
    # radar saw A, counted with A's read, no no_read.
    triggers = {"loop1": TriggerSpec("loop1", "1", "loop", LANE1_REGION), "radar": TriggerSpec("radar", "2", "radar")}
    pipeline, scene, outbox = scripted(tmp_path, keys, visible(0.3, 2.0, LEFT, plate_text("7ABC123")),
                                       triggers=triggers)
    step_through(pipeline, scene, 5, [(0.8, True, "loop1"), (0.9, True, "radar"), (1.5, False, "radar"),
                                      (1.6, False, "loop1")])
    reads, events = committed(outbox, keys)
    assert [(r["plate"], r["trigger_id"]) for r in reads] == [("7ABC123", "loop1-800000000")]
    assert events == [] and pipeline.stats["passes_same_vehicle"] == 1


# -- 2. one read covers at most one pass of each other trigger ----------------------------------------
# Queue traffic on one lane, loop upstream, beam downstream: the loop stays occupied 0.9-2.6 s
# under A then B (no gap between them), the beam parts them (A 1.0-1.3 s, B 2.3-2.6 s).
CLOSE_PAIR = [(0.9, True, "loop1"), (1.0, True, "beam1"), (1.3, False, "beam1"),
              (2.3, True, "beam1"), (2.6, False, "beam1"), (2.6, False, "loop1")]


def test_a_loop_held_by_two_close_vehicles_and_a_beam_that_parts_them_report_the_plateless_second(
        tmp_path, keys):
    # A's plate is in view 0.5-2.5 s, B has none. A's read (for the loop) was counted for both
    # beam passes: B vanished.
    pipeline, scene, outbox = scripted(tmp_path, keys, visible(0.5, 2.5, LEFT, plate_text("7ABC123")),
                                       triggers=BEAM_AND_LOOP)
    step_through(pipeline, scene, 6, CLOSE_PAIR)
    reads, events = committed(outbox, keys)
    assert [(r["plate"], r["trigger_id"]) for r in reads] == [("7ABC123", "loop1-900000000")]
    assert [(e["event"], e["trigger_id"]) for e in events] == [("no_read", "beam1-2300000000")]
    assert pipeline.stats["passes_same_vehicle"] == 1
    assert passes(pipeline) == {"passes": 2, "read": 1}


def test_a_held_read_covers_one_pass_of_each_other_trigger_too(tmp_path, keys):
    # As above, A's plate in view 0.5-2.2 s, but the disk fails until 5 s: A's read is held when
    # its track closes (2.85 s), and each beam pass closes meanwhile. Held, it counts for one.
    pipeline, scene, outbox = scripted(tmp_path, keys, visible(0.5, 2.2, LEFT, plate_text("7ABC123")),
                                       triggers=BEAM_AND_LOOP)
    submit = pipeline.sink.submit_read

    def failing(read):
        if scene.now_s < 5.0:
            raise OSError("disk I/O error")
        return submit(read)
    pipeline.sink.submit_read = failing
    step_through(pipeline, scene, 8, CLOSE_PAIR)
    reads, events = committed(outbox, keys)
    assert [(r["plate"], r["trigger_id"]) for r in reads] == [("7ABC123", "loop1-900000000")]
    assert [(e["event"], e["trigger_id"]) for e in events] == [("no_read", "beam1-2300000000")]
    assert pipeline.stats["reads_held"] == 1 and pipeline.stats["held_reads_committed"] == 1


def test_two_passes_of_one_trigger_closing_together_share_no_read(tmp_path, keys):
    # The early read for closing passes (_close_passes): A's track, still open for the loop, is
    # sent as the beam's two passes close in one go; its read covers one of them, not both.
    pipeline, scene, outbox = scripted(tmp_path, keys, visible(0.5, 3.0, LEFT, plate_text("7ABC123")),
                                       triggers=BEAM_AND_LOOP)
    feed(pipeline, scene, 0, 2.0, [(0.9, True, "loop1"), (1.0, True, "beam1"), (1.3, False, "beam1"),
                                   (1.5, True, "beam1"), (1.7, False, "beam1")])
    beams = [p for p in pipeline._passes if p.trigger_name == "beam1"]
    assert len(beams) == 2 and pipeline.stats["reads"] == 0
    pipeline._close_passes(beams)
    reads, events = committed(outbox, keys)
    assert [(r["plate"], r["trigger_id"]) for r in reads] == [("7ABC123", "loop1-900000000")]
    assert [(e["event"], e["trigger_id"]) for e in events] == [("no_read", "beam1-1500000000")]


def test_a_loop_and_a_beam_per_vehicle_still_give_one_read_each_and_no_no_read(tmp_path, keys):
    # Guard: each credit still covers the other trigger's pass of its own vehicle, A and then B
    # (both plated), loop and beam active together for each.
    script = scene_of(visible(0.5, 1.8, LEFT, plate_text("7ABC123")), visible(3.0, 4.3, LEFT, plate_text("5XYZ987")))
    pipeline, scene, outbox = scripted(tmp_path, keys, script, triggers=BEAM_AND_LOOP)
    step_through(pipeline, scene, 8, [(0.9, True, "beam1"), (1.0, True, "loop1"), (1.3, False, "beam1"),
                                      (1.6, False, "loop1"), (3.4, True, "beam1"), (3.5, True, "loop1"),
                                      (3.8, False, "beam1"), (4.1, False, "loop1")])
    reads, events = committed(outbox, keys)
    assert [r["plate"] for r in reads] == ["7ABC123", "5XYZ987"] and events == []
    assert passes(pipeline) == {"passes": 2, "read": 2} and pipeline.stats["passes_same_vehicle"] == 2


# -- 3. a graze is no better than nearness -------------------------------------------------------------
def test_a_fast_plate_keeps_its_track_when_a_new_plate_grazes_its_last_box():
    # The leader moved 42 px down (clear of its last box, near it); a new, smaller plate appears
    # just above, its bottom 2 px inside the leader's last box (IoU about 0.01). The graze took
    # the leader's track ahead of every near pair.
    tracker = Tracker(timeout_ns=600_000_000)
    tracker.update([_obs(0.0, "7ABC123", (280, 248, 120, 40), 0.9)], None)
    tracker.update([_obs(0.05, "7ABC123", (282, 290, 120, 40), 0.9), _obs(0.05, "5XYZ987", (300, 228, 68, 22), 0.6)],
                   None)
    assert sorted((t.id, [o.text for o in t.observations]) for t in tracker.open_tracks()) == [
        (1, ["7ABC123", "7ABC123"]), (2, ["5XYZ987"])]


def test_a_plate_overlapping_its_last_box_enough_still_wins_over_a_higher_scored_near_one():
    # Guard: at IoU 0.1 and above a pair is the track's own plate, ahead of every near pair.
    tracker = Tracker(timeout_ns=600_000_000)
    tracker.update([_obs(0.0, "7ABC123", (280, 248, 120, 40), 0.8)], None)
    # moved 30 px down: IoU with its last box 10/70, about 0.14; the follower near, scored higher
    tracker.update([_obs(0.05, "5XYZ987", (300, 215, 68, 22), 0.9), _obs(0.05, "7ABC123", (280, 278, 120, 40), 0.8)],
                   None)
    assert sorted((t.id, [o.text for o in t.observations]) for t in tracker.open_tracks()) == [
        (1, ["7ABC123", "7ABC123"]), (2, ["5XYZ987"])]


# -- 4. triggers queued at stop are not read -----------------------------------------------------------
def counting_detector(pipeline: Pipeline, scene) -> list[float]:
    """Records the scene time of each detector call from now on."""
    calls: list[float] = []
    detect = pipeline.detector.detect

    def spy(lores):
        calls.append(scene.now_s)
        return detect(lores)
    pipeline.detector.detect = spy
    return calls


def test_a_trigger_queued_at_stop_is_not_read_from_the_look_back_frames(tmp_path, keys):
    # A plate was in view in the last frames, with no pass open; the trigger arrives as the node
    # stops. Its look-back frames used to be read then (detection and OCR of each, inside stop()'s
    # bounded time): the pass now ends in a no_read, with the last frame to show.
    pipeline, scene, outbox = scripted(tmp_path, keys, visible(0.5, 2.0, LEFT, plate_text("7ABC123")))
    feed(pipeline, scene, 0, 1)
    calls = counting_detector(pipeline, scene)
    pipeline.on_trigger(TriggerEvent(17, "loop1", "loop", "falling", True, int(0.98 * 1e9)))
    pipeline._finish(int(0.95 * 1e9))
    reads, events = committed(outbox, keys)
    assert calls == []
    assert reads == [] and [(e["event"], e["trigger_id"]) for e in events] == [("no_read", "loop1-980000000")]
    assert events[0]["frame"][:2] == b"\xff\xd8"
    assert passes(pipeline) == {"passes": 1, "read": 0}


def test_a_trigger_queued_at_stop_is_counted_with_a_track_already_open(tmp_path, keys):
    # Guard: the vehicle on the loop since 0.5 s breaks the beam as the node stops: its track,
    # open for the loop, is read, and the beam's pass is counted with it, not reported unread.
    pipeline, scene, outbox = scripted(tmp_path, keys, visible(0.3, 2.0, LEFT, plate_text("7ABC123")),
                                       triggers=BEAM_AND_LOOP)
    feed(pipeline, scene, 0, 1, [(0.5, True, "loop1")])
    calls = counting_detector(pipeline, scene)
    pipeline.on_trigger(TriggerEvent(17, "beam1", "ir_beam", "falling", True, int(0.98 * 1e9)))
    pipeline._finish(int(0.95 * 1e9))
    reads, events = committed(outbox, keys)
    assert calls == []
    assert [(r["plate"], r["trigger_id"]) for r in reads] == [("7ABC123", "loop1-500000000")] and events == []
    assert passes(pipeline) == {"passes": 1, "read": 1} and pipeline.stats["passes_same_vehicle"] == 1


# -- second review: a fast leader's track, a stuck loop beside a beam -------------------------
def test_a_fast_leader_keeps_its_track_from_a_higher_scored_follower_near_its_last_box():
    tracker = Tracker(timeout_ns=600_000_000)
    tracker.update([_obs(0.0, "7ABC123", (140, 90, 60, 12), 0.9)], None)
    # the leader moved 10 px (IoU 0.09 with its last box); the follower, scored higher, appears
    # just above that box: the reading that agrees with the track wins the near phase
    tracker.update([_obs(0.05, "5XYZ987", (150, 80, 34, 10), 0.95), _obs(0.05, "7ABC123", (140, 100, 60, 12), 0.9)],
                   None)
    got = sorted((t.id, [o.text for o in t.observations]) for t in tracker.open_tracks())
    assert got == [(1, ["7ABC123", "7ABC123"]), (2, ["5XYZ987"])], got


def test_a_fast_leader_and_a_follower_give_two_reads(tmp_path, keys):
    def leader(t):  # fast: 10 lores px a frame at 20 fps
        return [((140, int(20 + 200 * (t - 0.5)), 60, 12), plate_text("7ABC123"))] if 0.5 <= t <= 1.2 else []

    def follower(t):  # slower, further away; listed first: the detector scores it higher
        return [((150, int(80 + 4 * (t - 0.9)), 34, 10), plate_text("5XYZ987"))] if 0.9 <= t <= 1.25 else []
    pipeline, scene, outbox = scripted(tmp_path, keys, scene_of(follower, leader))
    step_through(pipeline, scene, 4, [(0.4, True, "loop1"), (1.0, False, "loop1"),
                                      (1.05, True, "loop1"), (1.6, False, "loop1")])
    reads, _ = committed(outbox, keys)
    assert sorted(r["plate"] for r in reads) == ["5XYZ987", "7ABC123"]


def test_a_plate_first_seen_in_a_stuck_loops_follow_on_goes_to_the_beam_that_announced_it(tmp_path, keys):
    script = scene_of(visible(2.0, 3.5, LEFT, plate_text("7ABC123")), visible(14.0, 15.5, LEFT, plate_text("5XYZ987")))
    pipeline, scene, outbox = scripted(tmp_path, keys, script, triggers=BEAM_AND_LOOP)
    # loop1 sticks "occupied" at 1 s; the beam works: A 2.5-2.9 s, B 14.5-14.9 s
    step_through(pipeline, scene, 20, [(1.0, True, "loop1"), (2.5, True, "beam1"), (2.9, False, "beam1"),
                                       (14.5, True, "beam1"), (14.9, False, "beam1")])
    reads, events = committed(outbox, keys)
    assert sorted(r["plate"] for r in reads) == ["5XYZ987", "7ABC123"]
    assert events == [], "B was read: its beam pass is not a vehicle passed unread"
