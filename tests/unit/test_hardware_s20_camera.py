"""Review 6 of the camera adapter and its stand-in, checked against picamera2 0.3.38: no
Picamera2() for a camera that is not listed (each failed one leaks a pipe there), frames paced as
a sensor makes them, a request delivered just as close() runs is still released, start() after
stop(), the tuning file, and the unit's file-descriptor limit."""
from __future__ import annotations

import configparser
import inspect
import itertools
import os
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from hardware.errors import CameraDisconnected, CameraError, CameraTimeout
from hardware.gpio import TriggerEvent, TriggerInput
from hardware.picamera2_backend import Picamera2Camera, Picamera2Config
from hardware.standin_gpio import StandinGPIO
from hardware.standin_picamera2 import StandinPicamera2Module

pytestmark = pytest.mark.unit

UNIT = Path(__file__).resolve().parents[2] / "node" / "systemd" / "alpr-node.service"
SIZE = (128, 96)


def numbered(k: int) -> np.ndarray:
    """Frame k of the scene: its number in the green channel (main is RGB888, so exact)."""
    img = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    img[..., 1] = k % 256
    return img


def config(fps: float = 50.0, **kwargs: Any) -> Picamera2Config:
    return Picamera2Config(main_size=SIZE, lores_size=(64, 48), fps=fps, exposure_us=None, **kwargs)


def frame_number(frame: Any) -> int:
    return int(frame.main[..., 1].mean())


class FakeClock:
    """A sensor clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000_000

    def __call__(self) -> int:
        return self.now


def wait_until(predicate: Any, timeout_s: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.002)
    return bool(predicate())


# ---- 1. no camera: ask global_camera_info() first -------------------------------------------------

class LeakyPicamera2:
    """Does what picamera2 0.3.38's constructor does with file descriptors: a pipe is opened
    before the camera number is checked and not closed when the check fails."""

    cameras: ClassVar[list[dict[str, Any]]] = []
    leaked: ClassVar[list[int]] = []

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        return list(LeakyPicamera2.cameras)

    def __init__(self, camera_num: int = 0, verbose_console: int | None = None, tuning: Any = None,
                 allocator: Any = None) -> None:
        LeakyPicamera2.leaked.extend(os.pipe())
        if camera_num >= len(self.global_camera_info()):
            raise RuntimeError(f"No camera number {camera_num} found")


class LeakyModule:
    Picamera2 = LeakyPicamera2


def test_a_missing_camera_is_refused_before_picamera2_opens_anything() -> None:
    LeakyPicamera2.leaked = []
    for _ in range(20):
        with pytest.raises(CameraDisconnected, match=r"camera 0: not connected \(libcamera lists 0 camera"):
            Picamera2Camera(config(), picamera2_module=LeakyModule()).start()
    leaked, LeakyPicamera2.leaked = LeakyPicamera2.leaked, []
    for fd in leaked:
        os.close(fd)
    assert leaked == []


def test_a_camera_number_past_the_listed_ones_is_disconnected_and_a_negative_one_refused() -> None:
    module = StandinPicamera2Module(numbered)
    with pytest.raises(CameraDisconnected, match=r"camera 1: not connected .*imx708"):
        Picamera2Camera(config(camera_num=1), picamera2_module=module).start()
    with pytest.raises(CameraError, match="camera_num: must be >= 0"):
        Picamera2Camera(config(camera_num=-1), picamera2_module=module).start()
    assert module.constructed == 0


def test_standin_constructor_and_listing_are_picamera2s() -> None:
    module = StandinPicamera2Module(numbered, num_cameras=2)
    params = inspect.signature(module.Picamera2).parameters
    assert [(name, p.default) for name, p in params.items()] == [
        ("camera_num", 0), ("verbose_console", None), ("tuning", None), ("allocator", None)]
    info = module.Picamera2.global_camera_info()
    assert sorted(cam["Num"] for cam in info) == [0, 1]
    assert {"Model", "Id", "Num", "Location", "Rotation"} <= set(info[0])
    module.disconnect()  # a pulled cable: still listed, and still opens
    assert len(module.Picamera2.global_camera_info()) == 2
    picam = module.Picamera2(0)
    picam.configure(picam.create_video_configuration(main={"size": (64, 48)}))
    with pytest.raises(RuntimeError, match="Failed to start camera"):
        picam.start()
    picam.close()


# ---- 2. the stand-in paces frames --------------------------------------------------------------------

def test_standin_frames_are_paced_and_never_in_the_future() -> None:
    module = StandinPicamera2Module(numbered)
    cam = Picamera2Camera(config(fps=50.0), picamera2_module=module)
    cam.start()
    started = time.monotonic_ns()
    frames = []
    for _ in range(8):
        frames.append(cam.capture(1.0))
        assert frames[-1].timestamp_ns <= time.monotonic_ns()  # a sensor timestamp is in the past
        assert frames[-1].wall_time_ns <= time.time_ns()
    elapsed = time.monotonic_ns() - started
    cam.close()
    period = 20_000_000
    gaps = [b.timestamp_ns - a.timestamp_ns for a, b in itertools.pairwise(frames)]
    assert all(gap > 0 and gap % period == 0 for gap in gaps), gaps
    assert elapsed >= 7 * period  # eight frames take (at least) seven frame periods, as on a Pi
    # the frame number the source was asked for follows the timestamps, skipped frames included
    numbers = [frame_number(f) for f in frames]
    assert [b - a for a, b in itertools.pairwise(numbers)] == [gap // period for gap in gaps]


def test_standin_frames_a_slow_consumer_missed_are_gone() -> None:
    module = StandinPicamera2Module(numbered)
    cam = Picamera2Camera(config(fps=50.0), picamera2_module=module)
    cam.start()
    first = cam.capture(1.0)
    time.sleep(0.07)  # 3.5 frame periods of processing
    late = cam.capture(1.0)
    cam.close()
    skipped = (late.timestamp_ns - first.timestamp_ns) // 20_000_000
    assert skipped >= 4  # the first frame due after the request, not the next one in line
    assert frame_number(late) - frame_number(first) == skipped


def test_standin_frames_and_trigger_edges_share_one_timeline() -> None:
    # What the HIL recorder relies on: a trigger edge falls between the frames captured around
    # it, and frame time advances with the clock (it used to run a frame period per capture).
    module = StandinPicamera2Module(numbered)
    gpio = StandinGPIO()
    edges: list[TriggerEvent] = []
    loop = TriggerInput(17, name="loop1", on_trigger=edges.append, gpio_module=gpio)
    cam = Picamera2Camera(config(fps=50.0), picamera2_module=module)
    cam.start()
    threading.Timer(0.15, gpio.drive_low, args=(17,)).start()
    started = time.monotonic_ns()
    stamps = []
    while time.monotonic_ns() - started < 300_000_000:
        stamps.append(cam.capture(1.0).timestamp_ns)
    cam.close()
    loop.close()
    (edge,) = edges
    assert stamps[0] < edge.time_ns < stamps[-1]
    assert stamps[-1] - stamps[0] <= time.monotonic_ns() - started  # not ahead of the clock
    before = max(t for t in stamps if t <= edge.time_ns)
    assert edge.time_ns - before < 100_000_000  # a frame or two before it, allowing for a busy machine


def test_standin_injected_clock_decides_when_a_frame_is_due() -> None:
    clock = FakeClock()
    module = StandinPicamera2Module(numbered, clock=clock)
    picam = module.Picamera2()
    picam.configure(picam.create_video_configuration(main={"size": SIZE, "format": "RGB888"},
                                                     controls={"FrameDurationLimits": (20000, 20000)}))
    picam.start()
    period = 20_000_000
    t0 = clock.now + period  # the first frame is due one frame period after start()
    job = picam.capture_request(wait=False)
    time.sleep(0.03)
    clock.now = t0 - 1
    time.sleep(0.03)
    assert not job.done()  # waits on the stand-in's clock, not on the wall clock
    clock.now = t0
    request = job.get_result(timeout=2)
    assert request.get_metadata()["SensorTimestamp"] == t0 and request.make_array("main")[0, 0, 1] == 0
    request.release()

    clock.now = t0 + 2 * period + period // 2  # frames 1 and 2 went by unasked
    job = picam.capture_request(wait=False)
    time.sleep(0.03)
    assert not job.done()
    clock.now = t0 + 3 * period
    request = job.get_result(timeout=2)
    assert request.get_metadata()["SensorTimestamp"] == t0 + 3 * period
    assert request.make_array("main")[0, 0, 1] == 3
    request.release()

    # two requests queued together get consecutive frames, in the order they were queued
    first, second = picam.capture_request(wait=False), picam.capture_request(wait=False)
    clock.now = t0 + 5 * period
    a, b = first.get_result(timeout=2), second.get_result(timeout=2)
    assert [r.get_metadata()["SensorTimestamp"] for r in (a, b)] == [t0 + 4 * period, t0 + 5 * period]
    a.release()
    b.release()

    # a new frame duration starts at the next frame
    picam.set_controls({"FrameDurationLimits": (50000, 50000)})
    jobs = [picam.capture_request(wait=False) for _ in range(2)]
    clock.now = t0 + 6 * period + 50_000_000
    stamps = []
    for job in jobs:
        request = job.get_result(timeout=2)
        stamps.append(request.get_metadata()["SensorTimestamp"])
        assert request.get_metadata()["FrameDuration"] == 50000
        request.release()
    assert stamps == [t0 + 6 * period, t0 + 6 * period + 50_000_000]
    picam.close()


# ---- 5. a request delivered just as close() runs is released ----------------------------------------

def _held_in_the_window(fps: float) -> tuple[StandinPicamera2Module, Picamera2Camera, threading.Event]:
    """A camera whose second capture job has been taken off the queue (so cancel_all_and_flush
    cannot cancel it) but not signalled yet: the stand-in makes the frame in that gap, and here
    the source holds it there until `go` is set."""
    go = threading.Event()

    def source(k: int) -> np.ndarray:
        if k >= 1:
            go.wait(5)
        return numbered(k)

    module = StandinPicamera2Module(source)
    cam = Picamera2Camera(config(fps=fps), picamera2_module=module)
    cam.start()
    cam.capture(1.0)
    with pytest.raises(CameraTimeout):
        cam.capture(1.5 / fps)  # the job is dequeued (its frame was due) and stuck before its signal
    return module, cam, go


def test_a_request_arriving_within_a_frame_of_close_is_released() -> None:
    module, cam, go = _held_in_the_window(fps=10.0)
    picam = module.opened[0]
    threading.Timer(0.02, go.set).start()  # well inside the one frame (100 ms) close() waits
    cam.close()
    assert picam.released_count == 2


def test_a_request_arriving_after_close_is_released_by_its_signal() -> None:
    module, cam, go = _held_in_the_window(fps=50.0)
    picam = module.opened[0]
    started = time.monotonic()
    cam.close()
    assert time.monotonic() - started < 0.5  # waited about a frame, not for the request
    assert picam.released_count == 1
    go.set()  # the event loop delivers it now: the job's signal gives it back
    assert wait_until(lambda: picam.released_count == 2)


def test_a_cancelled_job_does_not_make_close_wait() -> None:
    module = StandinPicamera2Module(numbered)
    cam = Picamera2Camera(config(fps=1.0), picamera2_module=module)  # a frame period of 1 s
    cam.start()
    module.stall()
    with pytest.raises(CameraTimeout):
        cam.capture(0.02)
    started = time.monotonic()
    cam.close()
    assert time.monotonic() - started < 0.5  # the flush cancelled the job: nothing to wait for


# ---- 6. start() after stop() -------------------------------------------------------------------------

def test_start_after_stop_streams_again_on_the_same_camera() -> None:
    module = StandinPicamera2Module(numbered)
    cam = Picamera2Camera(config(), picamera2_module=module)
    cam.start()
    before = cam.capture(1.0)
    cam.stop()
    (picam,) = module.opened
    assert not picam.started
    with pytest.raises(CameraError, match="while stopped"):
        cam.capture(0.1)
    cam.start()
    assert picam.started and module.opened == [picam]  # restarted, not reopened
    after = cam.capture(1.0)
    assert after.timestamp_ns > before.timestamp_ns and after.index == before.index + 1
    cam.stop()
    cam.stop()  # twice is fine
    cam.close()
    assert module.closed_count == 1


# ---- 7. tuning --------------------------------------------------------------------------------------

NOIR = {"version": 2.0, "target": "bcm2835", "algorithms": [{"rpi.awb": {"bayes": 0}}]}


def test_a_tuning_name_is_loaded_from_libcameras_directories() -> None:
    module = StandinPicamera2Module(numbered, tuning_files={"imx708_noir.json": NOIR})
    cam = Picamera2Camera(config(tuning="imx708_noir"), picamera2_module=module)
    cam.start()
    assert module.opened[0].tuning == NOIR
    cam.close()
    with pytest.raises(CameraError, match=r"tuning 'imx477_noir.json': Tuning file not found"):
        Picamera2Camera(config(tuning="imx477_noir.json"), picamera2_module=module).start()
    assert module.constructed == 1  # the missing one never reached Picamera2()


def test_a_tuning_path_is_passed_on_and_a_missing_one_refused(tmp_path: Path) -> None:
    module = StandinPicamera2Module(numbered)
    path = tmp_path / "imx708_noir.json"
    path.write_text("{}")
    cam = Picamera2Camera(config(tuning=str(path)), picamera2_module=module)
    cam.start()
    assert module.opened[0].tuning == str(path)
    cam.close()
    with pytest.raises(CameraError, match="tuning file .*gone.json does not exist"):
        Picamera2Camera(config(tuning=str(tmp_path / "gone.json")), picamera2_module=module).start()
    assert module.constructed == 1
    assert Picamera2Config().tuning is None  # libcamera's default for the sensor


# ---- the unit's file-descriptor limit ------------------------------------------------------------------

def test_the_unit_pins_the_descriptor_limit_below_selects_reach() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read(UNIT)
    limit = parser["Service"]["LimitNOFILE"]
    soft, _, hard = limit.partition(":")
    # paho-mqtt's loop() uses select(): no descriptor may be numbered 1024 or more
    assert int(soft) <= 1024 and int(hard or soft) <= 1024
