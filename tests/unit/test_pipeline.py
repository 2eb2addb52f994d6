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
from hardware.gpio import TriggerInput
from hardware.standin_gpio import StandinGPIO
from hardware.timeline import ReplayTimeline
from inference.detector import Detection
from inference.ocr import PlateText
from node.identity import Identity
from node.pipeline import Pipeline, PipelineSettings
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
    messages = [envelope.open_envelope(p.message, signer_for=lambda h: node.public_key(),
                                       decryption_keys={key_id(hq.public_key()): hq})
                for p in outbox.due(1000, 0)]
    outbox.close()
    reads = [m.payload for m in messages if m.header.kind == "read"]
    events = [m.payload for m in messages if m.header.kind == "event"]
    return pipeline, reads, events


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
