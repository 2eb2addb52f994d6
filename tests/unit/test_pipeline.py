"""The node pipeline's logic on constructed clips: gating, tracking, voting, dedup, accounting.

The detector and reader here are scripted stand-ins with the real call signatures
(`detect(lores) -> [Detection]`, `read(crop) -> PlateText`): the detector finds bright
rectangles, the reader names a plate by its colour and misreads one frame in four, so the
tests check what the pipeline does with imperfect readings. The real models are exercised
end to end by the HIL scenarios.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from hardware.clip import CameraSettings, Clip, ClipWriter
from hardware.clip_camera import ClipCamera
from hardware.clip_pins import ClipPins
from hardware.frame import Frame
from hardware.gpio import TriggerEvent, TriggerInput
from hardware.standin_gpio import StandinGPIO
from hardware.timeline import ReplayTimeline
from inference.detector import Detection
from inference.ocr import PlateText
from node.identity import Identity
from node.pipeline import Pipeline, PipelineSettings, Region, TriggerSpec
from node.sink import ReadSink
from transport import envelope
from transport.keys import key_id
from transport.outbox import Outbox

pytestmark = pytest.mark.unit
W, H, LW, LH = 640, 360, 320, 180
FPS = 20
COLOURS = {"ABC123": (230, 40, 40), "XYZ789": (40, 40, 230)}


class ScriptedDetector:
    """Finds saturated rectangles in the lores frame."""

    def detect(self, image):
        mask = (image.max(axis=2) > 150) & (image.min(axis=2) < 100)
        ys, xs = np.nonzero(mask)
        if len(xs) < 20:
            return []
        return [Detection((int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1), 0.9)]


class ScriptedReader:
    def __init__(self):
        self.calls = 0

    def read(self, crop):
        self.calls += 1
        mean = crop.reshape(-1, 3).mean(axis=0)
        text = "ABC123" if mean[0] > mean[2] else "XYZ789"
        confs = [0.95] * 6
        if self.calls % 4 == 0:  # a misread: one character wrong, less sure
            text = text[:2] + "8" + text[3:]
            confs[2] = 0.4
        return PlateText(text, min(confs), confs, [(text, 0.9)], "ca", 0.8)


def make_clip(path: Path, vehicles: list[tuple[str, float, float]], triggers: list[tuple[float, float]],
              seconds: float = 6.0, gap_at: float | None = None) -> Clip:
    """Vehicles as (plate, t_in, t_out): a coloured plate grows as it crosses the frame."""
    writer = ClipWriter(path, CameraSettings((W, H), (LW, LH), float(FPS)))
    for i in range(int(seconds * FPS)):
        t = i / FPS
        if gap_at is not None and t >= gap_at:
            t += 3.0  # a hole in the recording: the camera stalls here
        frame = np.full((H, W, 3), 60, np.uint8)
        for plate, t_in, t_out in vehicles:
            if t_in <= t <= t_out:
                k = (t - t_in) / (t_out - t_in)
                w = int(60 + 80 * k)
                x = int(50 + 400 * k)
                frame[200:200 + w // 2, x:x + w] = COLOURS[plate]
        writer.add_frame(frame, int(t * 1e9))
    for t_on, t_off in triggers:
        writer.add_trigger(17, "falling", int(t_on * 1e9), "loop1")
        writer.add_trigger(17, "rising", int(t_off * 1e9), "loop1")
    for plate, t_in, t_out in vehicles:
        writer.add_vehicle(plate, int(t_in * 1e9), int(t_out * 1e9))
    return writer.close()


@pytest.fixture
def keys():
    return ed25519.Ed25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()


def run(tmp_path, keys, clip, mode="triggered", speed=0.0, **settings):
    node, hq = keys
    outbox = Outbox(tmp_path / "outbox.db")
    sink = ReadSink(Identity("n1", node, hq.public_key(), ()), outbox)
    timeline = ReplayTimeline(speed)
    gpio = StandinGPIO(clock=timeline.now_ns)
    state = {"cam": None}

    def factory():
        cam = ClipCamera(clip, timeline=timeline, start_index=state["cam"].position if state["cam"] else 0)
        state["cam"] = cam
        return cam
    pipeline = Pipeline(camera_factory=factory, detector=ScriptedDetector(), reader=ScriptedReader(), sink=sink,
                        settings=PipelineSettings(mode=mode, node_id="n1", site_id="s1", camera_id="c0",
                                                  lossless_replay=speed == 0, **settings),
                        capture_timeout_s=1.0, ends=True, clock_ns=timeline.now_ns)
    trigger = TriggerInput(17, name="loop1", on_trigger=pipeline.on_trigger, gpio_module=gpio,
                           clock_ns=timeline.now_ns)
    pins = ClipPins(clip, gpio, timeline)
    pipeline.start()
    pins.start()
    assert pipeline.done.wait(60), "pipeline did not finish the clip"
    pins.stop()
    pipeline.stop()
    trigger.close()
    reads, events = committed(outbox, keys)
    return pipeline, reads, events


def committed(outbox: Outbox, keys, kinds: tuple[str, ...] = ("read",)) -> tuple[list[dict], list[dict]]:
    """The reads (of `kinds`) and events in the outbox, opened; closes the outbox."""
    node, hq = keys
    messages = [envelope.open_envelope(p.message, signer_for=lambda h: node.public_key(),
                                       decryption_keys={key_id(hq.public_key()): hq})
                for p in outbox.due(1000, 0)]
    outbox.close()
    reads = [m.payload for m in messages if m.header.kind in kinds]
    events = [m.payload for m in messages if m.header.kind == "event"]
    return reads, events


def test_triggered_mode_one_read_per_vehicle_with_voted_plate(tmp_path, keys):
    clip = make_clip(tmp_path / "c", [("ABC123", 0.5, 2.0), ("XYZ789", 3.0, 4.5)], [(0.6, 1.9), (3.1, 4.4)])
    pipeline, reads, events = run(tmp_path, keys, clip)
    assert [r["plate"] for r in reads] == ["ABC123", "XYZ789"]
    assert all(r["trigger"] == "loop" and r["trigger_id"].startswith("loop1-") for r in reads)
    assert all(r["dir"] == "approaching" for r in reads)
    assert all(r["crop"][:2] == b"\xff\xd8" for r in reads)
    assert events == []
    assert pipeline.health()["capture"]["1"]
    report = pipeline.health()["capture"]["1"]
    assert sum(v["passes"] for v in report.values()) == 2 and sum(v["read"] for v in report.values()) == 2


def test_frames_outside_trigger_windows_are_not_read(tmp_path, keys):
    # Vehicle XYZ789 passes with no trigger: in triggered mode it is not read.
    clip = make_clip(tmp_path / "c", [("ABC123", 0.5, 2.0), ("XYZ789", 3.0, 4.5)], [(0.6, 1.9)])
    _, reads, _ = run(tmp_path, keys, clip)
    assert [r["plate"] for r in reads] == ["ABC123"]


def test_trigger_without_vehicle_gives_no_read_event_not_a_read(tmp_path, keys):
    clip = make_clip(tmp_path / "c", [("ABC123", 0.5, 2.0)], [(0.6, 1.9), (3.5, 4.0)])
    pipeline, reads, events = run(tmp_path, keys, clip)
    assert [r["plate"] for r in reads] == ["ABC123"]
    assert len(events) == 1 and events[0]["event"] == "no_read" and events[0]["frame"][:2] == b"\xff\xd8"
    assert pipeline.stats["no_reads"] == 1


def test_continuous_mode_reads_every_vehicle_once(tmp_path, keys):
    clip = make_clip(tmp_path / "c", [("ABC123", 0.5, 2.0), ("XYZ789", 3.0, 4.5)], [])
    _, reads, _ = run(tmp_path, keys, clip, mode="continuous")
    assert [r["plate"] for r in reads] == ["ABC123", "XYZ789"]


def test_same_plate_again_within_the_window_is_not_sent_twice(tmp_path, keys):
    clip = make_clip(tmp_path / "c", [("ABC123", 0.5, 1.5), ("ABC123", 3.0, 4.0)], [], seconds=5)
    pipeline, reads, _ = run(tmp_path, keys, clip, mode="continuous")
    assert [r["plate"] for r in reads] == ["ABC123"]
    assert pipeline.stats["duplicates_suppressed"] == 1


def test_a_pass_whose_vehicle_was_already_sent_reports_it_instead_of_silence(tmp_path, keys):
    # The same car sets the loop off twice within the dedup window (it stopped on the loop).
    clip = make_clip(tmp_path / "c", [("ABC123", 0.5, 1.5), ("ABC123", 3.0, 4.0)], [(0.6, 1.4), (3.1, 3.9)],
                     seconds=5)
    _, reads, events = run(tmp_path, keys, clip)
    assert [r["plate"] for r in reads] == ["ABC123"]
    assert [(e["event"], e["duplicate_of"]) for e in events] == [("no_read", "ABC123")]


def test_a_trigger_while_the_camera_gives_no_frames_still_ends_in_a_no_read(tmp_path, keys):
    # Frames stop at 1.5 s (a dead camera: the clip jumps 3 s); the loop fires at 2.0 s.
    clip = make_clip(tmp_path / "c", [], [(2.0, 2.3)], seconds=2.0, gap_at=1.5)
    pipeline, reads, events = run(tmp_path, keys, clip, speed=1.0)
    assert reads == [] and [e["event"] for e in events] == ["no_read"]
    assert events[0]["frame"] is None


def test_camera_stall_is_counted_and_recovered_without_losing_the_next_vehicle(tmp_path, keys):
    clip = make_clip(tmp_path / "c", [("ABC123", 0.3, 1.2), ("XYZ789", 4.8, 6.0)], [], seconds=3.5, gap_at=1.5)
    pipeline, reads, _ = run(tmp_path, keys, clip, mode="continuous", speed=1.0)
    cam = pipeline.health()["camera"]
    assert cam["stalls"] >= 1 and cam["restarts"] >= 1
    assert [r["plate"] for r in reads] == ["ABC123", "XYZ789"]


def test_stop_is_bounded_mid_clip(tmp_path, keys):
    node, hq = keys
    clip = make_clip(tmp_path / "c", [("ABC123", 0.5, 5.0)], [], seconds=6)
    outbox = Outbox(tmp_path / "o.db")
    timeline = ReplayTimeline(1.0)
    pipeline = Pipeline(camera_factory=lambda: ClipCamera(clip, timeline=timeline), detector=ScriptedDetector(),
                        reader=ScriptedReader(), sink=ReadSink(Identity("n1", node, hq.public_key(), ()), outbox),
                        settings=PipelineSettings(mode="continuous", node_id="n1"), ends=True)
    pipeline.start()
    time.sleep(1.0)
    started = time.monotonic()
    pipeline.stop(timeout=3.0)
    assert time.monotonic() - started < 3.5
    assert not pipeline.alive()
    # The open track was flushed as a read on the way out: nothing seen is lost.
    assert outbox.stats().depth == 1
    outbox.close()


# -- scripted scenes, stepped frame by frame ---------------------------------------------------
# Exact control of what is seen when, and of when each trigger edge arrives relative to the
# frames, which a threaded clip replay does not give. `step_through` does what the worker
# thread does per frame (take queued triggers, process the frame) and what it does at the end.

def plate_text(text: str, conf: float = 0.9, candidates: list[tuple[str, float]] | None = None) -> PlateText:
    return PlateText(text, conf, [conf] * len(text), candidates if candidates is not None else [(text, conf)],
                     "ca", 0.8)


# The scenes happen at local noon: passes are counted as "day" (without lux, accounting.light
# goes by the local hour), whenever the tests run. They used to take the real clock's time and
# fail from 18:00 on.
NOON_NS = int(time.mktime((2026, 6, 1, 12, 0, 0, 0, 0, -1))) * 10**9


class Scene:
    """script(t_s) -> [(lores box, PlateText)]: the plates in view at each frame time.

    Each plate's region in the main image is painted with its own marker value, by which the
    reader knows which plate a crop shows.
    """

    def __init__(self, script):
        self.script = script
        self.now_s = 0.0

    def detect(self, lores):
        return [Detection(box, 0.9 - 0.01 * i) for i, (box, _) in enumerate(self.script(self.now_s))]

    def read(self, crop):
        marker = int(crop[crop.shape[0] // 2, crop.shape[1] // 2, 0])
        items = self.script(self.now_s)
        return items[marker - 1][1] if 0 < marker <= len(items) else PlateText("", 0.0)

    def frame(self, index: int, t_ns: int) -> Frame:
        main = np.zeros((H, W, 3), np.uint8)
        for i, ((x, y, w, h), _) in enumerate(self.script(t_ns / 1e9)):
            main[y * 2:(y + h) * 2, x * 2:(x + w) * 2, 0] = i + 1
        return Frame(main, np.zeros((LH, LW, 3), np.uint8), t_ns, NOON_NS + t_ns, index, {})


def scripted(tmp_path, keys, script, triggers=None, hotlist_match=None, **settings):
    node, hq = keys
    scene = Scene(script)
    outbox = Outbox(tmp_path / "outbox.db")
    sink = ReadSink(Identity("n1", node, hq.public_key(), ()), outbox, hotlist_match=hotlist_match)
    pipeline = Pipeline(camera_factory=lambda: None, detector=scene, reader=scene, sink=sink, triggers=triggers,
                        settings=PipelineSettings(**{"node_id": "n1", "site_id": "s1", "camera_id": "c0",
                                                     **settings}),
                        clock_ns=lambda: int(scene.now_s * 1e9),
                        wall_clock_ns=lambda: NOON_NS + int(scene.now_s * 1e9))
    return pipeline, scene, outbox


def step_through(pipeline, scene, seconds: float, edges=()) -> None:
    """Feed `seconds` of frames; edges: (t_s, active, trigger name), queued as the GPIO thread would."""
    edges = sorted(edges)
    t_ns = 0
    for i in range(int(seconds * FPS)):
        t_ns = i * 10**9 // FPS
        scene.now_s = t_ns / 1e9
        while edges and edges[0][0] * 1e9 <= t_ns:
            at, active, name = edges.pop(0)
            pipeline.on_trigger(TriggerEvent(17, name, "loop", "falling" if active else "rising", active,
                                             int(at * 1e9)))
        pipeline._take_triggers(t_ns)
        pipeline._process(scene.frame(i, t_ns))
    pipeline._finish(t_ns)


def visible(t_in: float, t_out: float, box, text: PlateText):
    return lambda t: [(box, text)] if t_in <= t <= t_out else []


def scene_of(*parts):
    return lambda t: [item for part in parts for item in part(t)]


LEFT, RIGHT, TOP = (40, 120, 40, 12), (220, 120, 40, 12), (200, 40, 30, 9)


def test_a_vehicle_still_in_view_after_its_pass_is_read_for_that_pass_not_the_next(tmp_path, keys):
    # A (loop 0.5-1.0) stays in view until 3.0 s; B (loop 1.6-2.6) comes into view at 1.5 s.
    # A's pass ends (window + grace) while A's plate is still in view.
    script = scene_of(visible(0.3, 3.0, LEFT, plate_text("7ABC123")), visible(1.5, 3.5, TOP, plate_text("5XYZ987")))
    pipeline, scene, outbox = scripted(tmp_path, keys, script)
    step_through(pipeline, scene, 6, [(0.5, True, "loop1"), (1.0, False, "loop1"),
                                      (1.6, True, "loop1"), (2.6, False, "loop1")])
    reads, events = committed(outbox, keys)
    assert [(r["plate"], r["trigger_id"]) for r in reads] == [("7ABC123", "loop1-500000000"),
                                                               ("5XYZ987", "loop1-1600000000")]
    assert events == []
    assert pipeline.stats["duplicates_suppressed"] == 0  # A's plate, still in view, is not a new track
    assert pipeline.accounting.report()["1"]["day"] == {"passes": 2, "read": 2, "capture_rate": 1.0}


def test_a_plate_first_seen_in_the_previous_window_is_read_for_its_own_pass(tmp_path, keys):
    # B comes into view at 1.2 s, while A's window is still open, and reaches the loop at 1.8 s.
    script = scene_of(visible(0.3, 1.4, LEFT, plate_text("7ABC123")), visible(1.2, 2.0, TOP, plate_text("5XYZ987")))
    pipeline, scene, outbox = scripted(tmp_path, keys, script)
    step_through(pipeline, scene, 6, [(0.5, True, "loop1"), (1.0, False, "loop1"),
                                      (1.8, True, "loop1"), (2.8, False, "loop1")])
    reads, events = committed(outbox, keys)
    assert [(r["plate"], r["trigger_id"]) for r in reads] == [("7ABC123", "loop1-500000000"),
                                                               ("5XYZ987", "loop1-1800000000")]
    assert events == []


def test_two_lanes_at_once_each_get_their_read_and_no_false_no_read(tmp_path, keys):
    script = scene_of(visible(0.3, 2.0, LEFT, plate_text("7ABC123")), visible(0.3, 2.0, RIGHT, plate_text("5XYZ987")))
    lanes = {"loop1": TriggerSpec("loop1", "1", "loop"), "loop2": TriggerSpec("loop2", "2", "loop")}
    pipeline, scene, outbox = scripted(tmp_path, keys, script, triggers=lanes)
    step_through(pipeline, scene, 5, [(0.5, True, "loop1"), (1.5, False, "loop1"),
                                      (0.6, True, "loop2"), (1.6, False, "loop2")])
    reads, events = committed(outbox, keys)
    # Which plate goes to which lane follows the order the tracks finish (lanes are not told
    # apart by position); what must hold is one read per pass and no false no_read.
    assert sorted((r["lane"], r["trigger_id"]) for r in reads) == [("1", "loop1-500000000"),
                                                                    ("2", "loop2-600000000")]
    assert events == []
    report = pipeline.accounting.report()
    assert report["1"]["day"]["read"] == 1 and report["2"]["day"]["read"] == 1


def test_a_plateless_vehicle_behind_gets_a_no_read_not_the_previous_plate(tmp_path, keys):
    # A (loop 0.5-1.0) in view until 3.0 s; then a plate-less trailer on the loop at 1.6-2.6 s.
    pipeline, scene, outbox = scripted(tmp_path, keys, visible(0.3, 3.0, LEFT, plate_text("7ABC123")))
    step_through(pipeline, scene, 6, [(0.5, True, "loop1"), (1.0, False, "loop1"),
                                      (1.6, True, "loop1"), (2.6, False, "loop1")])
    reads, events = committed(outbox, keys)
    assert [(r["plate"], r["trigger_id"]) for r in reads] == [("7ABC123", "loop1-500000000")]
    assert [(e["event"], e["trigger_id"], e["duplicate_of"]) for e in events] == \
        [("no_read", "loop1-1600000000", None)]


def test_a_similar_plate_whose_runner_up_is_far_behind_is_not_a_duplicate(tmp_path, keys):
    # A different car, 7ABC128, read at 0.7 with 7ABC123 (sent 9 s before) as a distant runner-up.
    first = plate_text("7ABC123", 0.9, [("7ABC123", 0.9), ("7ABC128", 0.05)])
    second = plate_text("7ABC128", 0.7, [("7ABC128", 0.7), ("7ABC123", 0.25)])
    seen = []
    pipeline, scene, outbox = scripted(tmp_path, keys, scene_of(visible(0.5, 1.5, LEFT, first),
                                                                 visible(10.0, 11.0, LEFT, second)),
                                       hotlist_match=lambda r: seen.append(r.plate), mode="continuous")
    step_through(pipeline, scene, 13)
    reads, _ = committed(outbox, keys)
    assert [r["plate"] for r in reads] == ["7ABC123", "7ABC128"]
    assert "7ABC128" in seen and pipeline.stats["duplicates_suppressed"] == 0


@pytest.mark.parametrize("second", [
    plate_text("7ABC128", 0.5, [("7ABC128", 0.5), ("7ABC123", 0.45)]),  # the earlier plate close behind
    plate_text("7ABC123", 0.6, [("7ABC123", 0.6)]),                     # the same top text
])
def test_the_same_vehicle_read_again_is_still_a_duplicate(tmp_path, keys, second):
    first = plate_text("7ABC123", 0.9, [("7ABC123", 0.9), ("7ABC128", 0.05)])
    pipeline, scene, outbox = scripted(tmp_path, keys, scene_of(visible(0.5, 1.5, LEFT, first),
                                                                 visible(10.0, 11.0, LEFT, second)),
                                       mode="continuous")
    step_through(pipeline, scene, 13)
    reads, _ = committed(outbox, keys)
    assert [r["plate"] for r in reads] == ["7ABC123"] and pipeline.stats["duplicates_suppressed"] == 1


def test_a_duplicate_still_raises_a_hot_list_alert_once(tmp_path, keys):
    # 7ABC123 is read at 0.5 s with no list in force; a list naming it arrives at 5 s; the car is
    # read again at 10 s (a duplicate: the alert goes out all the same) and at 20 s (that entry's
    # alert has gone out: suppressed).
    at: dict[str, Scene] = {}

    def hotlist_match(read):
        if at["scene"].now_s < 5.0:
            return None
        hit = {"list_version": "2", "entry": "9", "reason": "stolen-vehicle", "match": "exact"}
        return hit if "7ABC123" in [read.plate] + [c.plate for c in read.candidates] else None
    car = plate_text("7ABC123")
    pipeline, scene, outbox = scripted(
        tmp_path, keys, scene_of(visible(0.5, 1.5, LEFT, car), visible(10.0, 11.0, LEFT, car),
                                 visible(20.0, 21.0, LEFT, car)),
        hotlist_match=hotlist_match, mode="continuous")
    at["scene"] = scene
    step_through(pipeline, scene, 23)
    messages, _ = committed(outbox, keys, kinds=("read", "alert"))
    assert sorted((m["plate"], m["kind"], (m.get("hotlist") or {}).get("entry", "")) for m in messages) == \
        [("7ABC123", "alert", "9"), ("7ABC123", "read", "")]
    assert pipeline.stats["duplicate_alerts"] == 1 and pipeline.stats["duplicates_suppressed"] == 1


# -- trigger regions: one camera over two lanes, each lane with its own loop ---------------------
# Regions are fractions of the frame. LEFT's centre is at (0.19, 0.70), RIGHT's at (0.75, 0.70),
# UPPER_LEFT's at (0.36, 0.25): the left half is lane 1, the right half lane 2.
LANE1_REGION, LANE2_REGION = (0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0)
UPPER_LEFT = (100, 40, 30, 9)


def two_lanes(regions: bool, lane2_region: Region = LANE2_REGION) -> dict[str, TriggerSpec]:
    """loop1 (lane 1) and loop2 (lane 2), with their regions or without."""
    return {"loop1": TriggerSpec("loop1", "1", "loop", LANE1_REGION if regions else None),
            "loop2": TriggerSpec("loop2", "2", "loop", lane2_region if regions else None)}


@pytest.mark.parametrize("regions", [True, False])
def test_two_lanes_crossing_in_time_each_pass_gets_its_own_vehicle_with_regions(tmp_path, keys, regions):
    # Lane 1's car (LEFT) and lane 2's (RIGHT) are in view together from 0.3 s; loop 1 fires first,
    # so both plates are first seen while only lane 1's pass is open. Lane 2's car leaves view
    # first, so its track ends first.
    script = scene_of(visible(0.3, 2.0, LEFT, plate_text("7ABC123")), visible(0.3, 1.5, RIGHT, plate_text("5XYZ987")))
    pipeline, scene, outbox = scripted(tmp_path, keys, script, triggers=two_lanes(regions))
    step_through(pipeline, scene, 5, [(0.5, True, "loop1"), (1.5, False, "loop1"),
                                      (0.6, True, "loop2"), (1.4, False, "loop2")])
    reads, events = committed(outbox, keys)
    credited = sorted((r["plate"], r["lane"], r["trigger_id"]) for r in reads)
    if regions:
        assert credited == [("5XYZ987", "2", "loop2-600000000"), ("7ABC123", "1", "loop1-500000000")]
    else:
        # As before regions: by time alone the read of lane 2's car, which finished first, goes to
        # lane 1's pass (both plates were first seen in it) and lane 1's car fills lane 2's pass.
        assert credited == [("5XYZ987", "1", "loop1-500000000"), ("7ABC123", "2", "loop2-600000000")]
    assert events == []  # either way, one read per pass and no false no_read
    report = pipeline.accounting.report()
    assert report["1"]["day"]["read"] == 1 and report["2"]["day"]["read"] == 1
    assert pipeline.stats["reads_outside_regions"] == 0


@pytest.mark.parametrize("regions", [True, False])
def test_a_lanes_second_vehicle_does_not_fill_the_other_lanes_empty_pass(tmp_path, keys, regions):
    # Lane 1: A (loop 0.5-1.0) and B close behind (in view from 1.2 s, while A's window is still
    # open; loop 1.8-2.8). Lane 2: a plate-less vehicle on its loop at 1.0-2.0.
    script = scene_of(visible(0.3, 1.4, LEFT, plate_text("7ABC123")),
                      visible(1.2, 2.0, UPPER_LEFT, plate_text("5XYZ987")))
    pipeline, scene, outbox = scripted(tmp_path, keys, script, triggers=two_lanes(regions))
    step_through(pipeline, scene, 6, [(0.5, True, "loop1"), (1.0, False, "loop1"), (1.8, True, "loop1"),
                                      (2.8, False, "loop1"), (1.0, True, "loop2"), (2.0, False, "loop2")])
    reads, events = committed(outbox, keys)
    credited = [(r["plate"], r["trigger_id"]) for r in reads]
    no_reads = [(e["event"], e["lane"], e["trigger_id"]) for e in events]
    if regions:
        # B's read, its first pass taken, goes to lane 1's next pass, not to lane 2's empty one.
        assert credited == [("7ABC123", "loop1-500000000"), ("5XYZ987", "loop1-1800000000")]
        assert no_reads == [("no_read", "2", "loop2-1000000000")]
        assert events[0]["frame"][:2] == b"\xff\xd8"  # lane 2's pass still has a frame to show
    else:
        # As before regions: the oldest empty pass that overlaps B's track is lane 2's.
        assert credited == [("7ABC123", "loop1-500000000"), ("5XYZ987", "loop2-1000000000")]
        assert no_reads == [("no_read", "1", "loop1-1800000000")]


def test_a_plate_in_no_region_is_sent_for_no_pass(tmp_path, keys):
    # Lane 2's region is only the top right of the frame: RIGHT's plate is in no region.
    triggers = two_lanes(True, lane2_region=(0.5, 0.0, 1.0, 0.5))
    pipeline, scene, outbox = scripted(tmp_path, keys, visible(0.3, 2.0, RIGHT, plate_text("5XYZ987")),
                                       triggers=triggers, default_lane="0")
    step_through(pipeline, scene, 5, [(0.5, True, "loop1"), (1.5, False, "loop1")])
    reads, events = committed(outbox, keys)
    # Sent all the same (a plate is never dropped), but credited to no pass and to no lane's count.
    assert [(r["plate"], r["trigger"], r["trigger_id"], r["lane"]) for r in reads] == \
        [("5XYZ987", "continuous", None, "0")]
    assert [(e["event"], e["trigger_id"]) for e in events] == [("no_read", "loop1-500000000")]
    assert pipeline.stats["reads_outside_regions"] == 1
    assert pipeline.accounting.report()["1"]["day"] == {"passes": 1, "read": 0, "capture_rate": 0.0}


def test_a_plate_in_no_region_goes_to_an_open_region_less_trigger(tmp_path, keys):
    # A radar over both lanes has no region: it takes any plate, as every trigger did before.
    triggers = {"loop1": TriggerSpec("loop1", "1", "loop", LANE1_REGION), "radar": TriggerSpec("radar", "1", "radar")}
    pipeline, scene, outbox = scripted(tmp_path, keys, visible(0.3, 2.0, RIGHT, plate_text("5XYZ987")),
                                       triggers=triggers)
    step_through(pipeline, scene, 5, [(0.5, True, "loop1"), (1.5, False, "loop1"),
                                      (0.6, True, "radar"), (1.4, False, "radar")])
    reads, events = committed(outbox, keys)
    assert [(r["trigger"], r["trigger_id"]) for r in reads] == [("radar", "radar-600000000")]
    assert [(e["event"], e["trigger_id"]) for e in events] == [("no_read", "loop1-500000000")]
    assert pipeline.stats["reads_outside_regions"] == 0


def test_a_read_whose_lane_loop_did_not_fire_is_not_given_to_the_other_lane(tmp_path, keys):
    # Lane 2's car (RIGHT) passes but its loop stays silent; lane 1's loop fires for a plate-less
    # vehicle at the same time. The read is sent for no pass, in the lane its region names.
    pipeline, scene, outbox = scripted(tmp_path, keys, visible(0.3, 2.0, RIGHT, plate_text("5XYZ987")),
                                       triggers=two_lanes(True), default_lane="0")
    step_through(pipeline, scene, 5, [(0.5, True, "loop1"), (1.5, False, "loop1")])
    reads, events = committed(outbox, keys)
    assert [(r["plate"], r["trigger_id"], r["lane"]) for r in reads] == [("5XYZ987", None, "2")]
    assert [(e["event"], e["lane"], e["trigger_id"]) for e in events] == [("no_read", "1", "loop1-500000000")]
    assert pipeline.stats["reads_outside_regions"] == 0  # it was in a region: lane 2's loop missed it
