"""Clip replay: ClipCamera timing (fast and scaled real time) and ClipPins in step with it."""
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from hardware.clip import CameraSettings, Clip, ClipWriter
from hardware.clip_camera import ClipCamera
from hardware.clip_pins import ClipPins
from hardware.errors import CameraError, CameraTimeout, EndOfStream
from hardware.gpio import TriggerEvent, TriggerInput
from hardware.standin_gpio import StandinGPIO
from hardware.timeline import ReplayTimeline

pytestmark = pytest.mark.unit

FRAME_NS = 100_000_000  # 10 fps


def make_clip(path: Path, n: int = 6, times: list[int] | None = None, wall: int | None = None) -> Clip:
    settings = CameraSettings((32, 24), (16, 12), 10.0, exposure_us=500)
    with ClipWriter(path, settings, start_wall_ns=wall) as w:
        for i, t in enumerate(times or [i * FRAME_NS for i in range(n)]):
            w.add_frame(np.full((24, 32, 3), 20 * i, np.uint8), t)
        w.add_trigger(17, "falling", 150_000_000, name="loop1")  # between frames 1 and 2
        w.add_trigger(17, "rising", 350_000_000, name="loop1")  # between frames 3 and 4
    return Clip.load(path)


def test_fast_mode_keeps_recorded_timestamps_without_waiting(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c", n=6, wall=1_000_000_000_000)
    cam = ClipCamera(clip, speed=0)
    cam.start()
    started = time.monotonic()
    frames = [cam.capture(timeout=0.01) for _ in range(6)]
    assert time.monotonic() - started < 1.0  # 0.5 s of clip, no sleeping
    assert [f.index for f in frames] == list(range(6))
    assert [f.timestamp_ns - frames[0].timestamp_ns for f in frames] == [i * FRAME_NS for i in range(6)]
    assert frames[0].wall_time_ns == 1_000_000_000_000  # as recorded
    assert frames[2].metadata["ExposureTime"] == 500 and frames[2].metadata["ClipFile"] == "frames/000003.jpg"
    assert frames[3].main.shape == (24, 32, 3) and frames[3].lores.shape == (12, 16, 3)
    with pytest.raises(EndOfStream):
        cam.capture(timeout=0.01)
    cam.close()
    cam.close()


def test_real_time_replay_is_paced_by_speed(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c", n=6)
    cam = ClipCamera(clip, speed=10.0)  # 100 ms apart on record -> 10 ms apart now
    cam.start()
    arrivals = []
    for _ in range(6):
        cam.capture(timeout=1.0)
        arrivals.append(time.monotonic())
    span = arrivals[-1] - arrivals[0]
    assert 0.045 <= span < 2.0, span  # 5 gaps of 10 ms: paced, not as fast as possible (slack for a busy box)
    cam.close()


def test_gap_longer_than_timeout_is_a_stall(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c", times=[0, 3_000_000_000])
    cam = ClipCamera(clip, speed=1.0)
    cam.start()
    cam.capture(timeout=0.5)
    started = time.monotonic()
    with pytest.raises(CameraTimeout, match="no frame within"):
        cam.capture(timeout=0.05)
    assert time.monotonic() - started < 0.5


def test_stop_interrupts_a_waiting_capture(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c", times=[0, 5_000_000_000])
    cam = ClipCamera(clip, speed=1.0)
    cam.start()
    cam.capture(timeout=1.0)
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            cam.capture(timeout=10.0)
        except CameraError as exc:
            errors.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.05)
    cam.close()
    thread.join(1.0)
    assert not thread.is_alive()
    assert errors and "stopped" in str(errors[0])


def test_clip_pins_fire_before_their_frame_on_the_replay_clock(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c", n=6)
    timeline = ReplayTimeline(speed=0)
    gpio = StandinGPIO(clock=timeline.now_ns)
    events: list[TriggerEvent] = []
    trig = TriggerInput(17, name="loop1", bouncetime_ms=10, on_trigger=events.append, gpio_module=gpio,
                        clock_ns=timeline.now_ns)
    pins = ClipPins(clip, gpio, timeline)
    cam = ClipCamera(clip, timeline=timeline)
    pins.start()
    cam.start()
    seen_before: list[int] = []
    frames = []
    for _ in range(6):
        frames.append(cam.capture(timeout=0.01))
        seen_before.append(len(events))
    # Frame 2 (t=200 ms) comes after the falling edge (150 ms); frame 4 after the rising edge.
    assert seen_before == [0, 0, 1, 1, 2, 2]
    assert [(e.edge, e.active) for e in events] == [("falling", True), ("rising", False)]
    origin = frames[0].timestamp_ns
    assert [e.time_ns - origin for e in events] == [150_000_000, 350_000_000]
    assert pins.driven == 2 and pins.remaining == 0
    pins.close()
    trig.close()
    cam.close()


def test_clip_pins_real_time_thread(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c", n=6)
    timeline = ReplayTimeline(speed=10.0)
    gpio = StandinGPIO(clock=timeline.now_ns)
    events: list[TriggerEvent] = []
    trig = TriggerInput(17, bouncetime_ms=1, on_trigger=events.append, gpio_module=gpio, clock_ns=timeline.now_ns)
    pins = ClipPins(clip, gpio, timeline)
    pins.start()
    deadline = time.monotonic() + 2.0
    while len(events) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    pins.close()
    trig.close()
    assert [e.active for e in events] == [True, False]
    origin = timeline.to_replay_ns(0)
    # Stamped on the replay clock: never early, and late only by scheduling delay (x10 at speed 10;
    # generous because the CI box is shared).
    late = [e.time_ns - origin - t for e, t in zip(events, (150_000_000, 350_000_000), strict=True)]
    assert all(0 <= d < 3_000_000_000 for d in late), late
    assert events[1].time_ns > events[0].time_ns


def test_recorder_round_trip_through_replay(tmp_path: Path) -> None:
    from hardware.camera import CameraState, CameraSupervisor
    from hardware.recorder import ClipRecorder

    source = make_clip(tmp_path / "src", n=6)
    timeline = ReplayTimeline(speed=0)
    gpio = StandinGPIO(clock=timeline.now_ns)
    pins = ClipPins(source, gpio, timeline)
    timeline.start()  # recorder's time 0 is the replay origin
    recorder = ClipRecorder(ClipWriter(tmp_path / "rec", source.camera), clock_ns=lambda: timeline.to_replay_ns(0))
    recorder.start()
    trig = TriggerInput(17, name="loop1", bouncetime_ms=1, on_trigger=recorder.put_trigger, gpio_module=gpio,
                        clock_ns=timeline.now_ns)
    pins.start()
    sup = CameraSupervisor(lambda: ClipCamera(source, timeline=timeline), recorder.put_frame)
    sup.start()
    deadline = time.monotonic() + 3.0
    while sup.state is not CameraState.ENDED and time.monotonic() < deadline:
        time.sleep(0.005)
    sup.stop()
    trig.close()
    clip = recorder.stop()
    assert recorder.stop() is clip
    assert recorder.dropped == 0 and recorder.frames_written == 6  # queue (16) larger than the clip
    assert [f.t_ns for f in clip.frames] == [f.t_ns for f in source.frames]
    assert clip.frames[0].metadata["ExposureTime"] == 500
    assert [(t.pin, t.edge, t.t_ns, t.name) for t in clip.triggers] == [
        (17, "falling", 150_000_000, "loop1"), (17, "rising", 350_000_000, "loop1")]
    assert abs(float(clip.read_main(3).mean()) - float(source.read_main(3).mean())) < 3


def test_recorder_edges_never_wait_behind_a_frame_encode(tmp_path: Path) -> None:
    """The GPIO callback thread records an edge at once, even while the writer thread is in the
    middle of encoding a frame: waiting there, a short pulse would be over (and dropped as a
    bounce) by the time the adapter reads the pin."""
    from hardware.frame import Frame
    from hardware.recorder import ClipRecorder

    source = make_clip(tmp_path / "src", n=2)
    writer = ClipWriter(tmp_path / "rec", source.camera)
    encoding, release = threading.Event(), threading.Event()
    add_frame = writer.add_frame

    def slow_add_frame(*args, **kwargs):
        encoding.set()
        release.wait(5.0)
        return add_frame(*args, **kwargs)

    writer.add_frame = slow_add_frame  # type: ignore[method-assign]
    recorder = ClipRecorder(writer, clock_ns=lambda: 0)
    recorder.start()
    main = source.read_main(0)
    recorder.put_frame(Frame(main=main, lores=main, timestamp_ns=10, wall_time_ns=10, index=0))
    assert encoding.wait(5.0)
    started = time.monotonic()
    recorder.put_trigger(TriggerEvent(pin=17, name="loop1", kind="loop", edge="falling", active=True, time_ns=20))
    assert time.monotonic() - started < 0.5  # did not wait for the encode
    release.set()
    clip = recorder.stop()
    assert [(t.pin, t.edge, t.t_ns) for t in clip.triggers] == [(17, "falling", 20)]
    assert len(clip.frames) == 1
