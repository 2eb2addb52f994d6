"""Picamera2Camera against the picamera2 stand-in: streams, metadata, release, errors, stalls."""
import sys
import time

import numpy as np
import pytest

from hardware.errors import CameraDisconnected, CameraError, CameraTimeout
from hardware.picamera2_backend import Picamera2Camera, Picamera2Config
from hardware.standin_picamera2 import StandinPicamera2Module

pytestmark = pytest.mark.unit

CONFIG = Picamera2Config(main_size=(128, 96), lores_size=(64, 48), fps=30.0, exposure_us=800,
                         analogue_gain=4.0, lens_position=2.5)


def scene(index: int) -> np.ndarray:
    """A distinct, colourful frame: red left half, blue right half, green level = index."""
    img = np.zeros((96, 128, 3), np.uint8)
    img[:, :64, 0] = 220
    img[:, 64:, 2] = 220
    img[..., 1] = 10 * index
    return img


@pytest.fixture
def module() -> StandinPicamera2Module:
    return StandinPicamera2Module(scene)


def test_two_streams_from_one_request_in_rgb(module: StandinPicamera2Module) -> None:
    cam = Picamera2Camera(CONFIG, picamera2_module=module)
    cam.start()
    f0 = cam.capture(timeout=1.0)
    f1 = cam.capture(timeout=1.0)
    assert f0.main.shape == (96, 128, 3) and f0.lores.shape == (48, 64, 3)
    assert f0.main.dtype == np.uint8 and f0.lores.dtype == np.uint8
    # RGB order survives libcamera's "RGB888" = [B, G, R] layout and the YUV420 lores.
    assert tuple(f0.main[10, 10]) == (220, 0, 0) and tuple(f0.main[10, 100]) == (0, 0, 220)
    assert abs(int(f0.lores[5, 5, 0]) - 220) < 12 and int(f0.lores[5, 5, 2]) < 20
    # Both streams are the same exposure: the green level (frame number) matches. The frame
    # number is 1 unless this thread was held up past a frame period (the stand-in is paced).
    green = int(f1.main[..., 1].mean())
    assert green >= 10 and green % 10 == 0
    assert abs(int(f1.lores[..., 1].mean()) - green) < 6
    assert (f0.index, f1.index) == (0, 1)
    cam.close()


def test_metadata_and_timestamps(module: StandinPicamera2Module) -> None:
    cam = Picamera2Camera(CONFIG, picamera2_module=module)
    cam.start()
    f0, f1 = cam.capture(1.0), cam.capture(1.0)
    assert f0.metadata["ExposureTime"] == 800
    assert f0.metadata["AnalogueGain"] == 4.0
    assert f0.metadata["LensPosition"] == 2.5
    assert "Lux" in f0.metadata
    gap = f1.timestamp_ns - f0.timestamp_ns
    assert gap > 0 and gap % 33_333_000 == 0  # 30 fps frame duration (more if a frame went by)
    assert f1.timestamp_ns <= time.monotonic_ns()  # a sensor timestamp is never in the future
    assert f0.timestamp_ns == f0.metadata["SensorTimestamp"]
    assert abs(f0.wall_time_ns - time.time_ns()) < 5_000_000_000
    cam.close()


def test_configuration_and_controls_sent(module: StandinPicamera2Module) -> None:
    cam = Picamera2Camera(CONFIG, picamera2_module=module)
    cam.start()
    (picam,) = module.opened
    config = picam.camera_configuration()
    assert (config["main"]["format"], config["main"]["size"]) == ("RGB888", (128, 96))
    assert (config["lores"]["format"], config["lores"]["size"]) == ("YUV420", (64, 48))
    assert config["queue"] is False and config["buffer_count"] == 4
    assert config["controls"]["FrameDurationLimits"] == (33333, 33333)
    assert config["controls"]["ExposureTime"] == 800 and config["controls"]["AnalogueGain"] == 4.0
    assert "AeEnable" not in config["controls"]  # fixed values already take them from AE/AGC
    assert config["controls"]["AfMode"] == 0 and config["controls"]["LensPosition"] == 2.5
    auto_gain = Picamera2Config(exposure_us=800, analogue_gain=None).controls()
    assert auto_gain == {"FrameDurationLimits": (33333, 33333), "ExposureTime": 800}  # AGC still varies gain
    cam.set_controls({"ExposureTime": 500})
    assert cam.capture(1.0).metadata["ExposureTime"] == 500
    with pytest.raises(CameraError, match="Control Flux is not advertised"):
        cam.set_controls({"Flux": 1})
    cam.close()


def test_every_request_released(module: StandinPicamera2Module) -> None:
    cam = Picamera2Camera(CONFIG, picamera2_module=module)
    cam.start()
    (picam,) = module.opened
    for _ in range(10):  # more than buffer_count: would stall if any request leaked
        cam.capture(timeout=1.0)
    assert picam.released_count == 10
    cam.close()
    assert module.closed_count == 1 and not module.opened


def test_stall_times_out_then_the_late_frame_is_used(module: StandinPicamera2Module) -> None:
    cam = Picamera2Camera(CONFIG, picamera2_module=module)
    cam.start()
    (picam,) = module.opened
    cam.capture(1.0)
    module.stall()
    started = time.monotonic()
    with pytest.raises(CameraTimeout, match="no frame within 0.050s") as info:
        cam.capture(timeout=0.05)
    assert time.monotonic() - started < 0.5
    assert isinstance(info.value, TimeoutError)
    module.resume()
    frame = cam.capture(timeout=1.0)
    assert frame.index == 1
    assert picam.released_count == 2  # the timed-out job's request was used and released, not leaked
    cam.close()


def test_a_pulled_cable_fails_at_start_and_no_camera_is_disconnected(module: StandinPicamera2Module) -> None:
    module.disconnect()  # the camera stays listed, as libcamera keeps a sensor probed at boot
    with pytest.raises(CameraError, match="configure/start failed: Failed to start camera") as info:
        Picamera2Camera(CONFIG, picamera2_module=module).start()
    assert not isinstance(info.value, CameraDisconnected)
    assert module.closed_count == 1 and not module.opened  # the half-opened camera was closed
    module.num_cameras = 0  # not listed at all: booted without it
    with pytest.raises(CameraDisconnected, match="not connected"):
        Picamera2Camera(CONFIG, picamera2_module=module).start()


def test_capture_error_is_a_camera_error(module: StandinPicamera2Module) -> None:
    cam = Picamera2Camera(CONFIG, picamera2_module=module)
    cam.start()
    module.fail_next_capture(RuntimeError("Failed to queue request"))
    with pytest.raises(CameraError, match="capture failed: Failed to queue request"):
        cam.capture(1.0)
    cam.close()


def test_capture_before_start_and_after_close(module: StandinPicamera2Module) -> None:
    cam = Picamera2Camera(CONFIG, picamera2_module=module)
    with pytest.raises(CameraError, match="before start"):
        cam.capture(0.1)
    cam.start()
    cam.close()
    cam.close()
    with pytest.raises(CameraError, match="closed"):
        cam.start()


def test_exposure_longer_than_frame_refused(module: StandinPicamera2Module) -> None:
    cam = Picamera2Camera(Picamera2Config(fps=60.0, exposure_us=20000), picamera2_module=module)
    with pytest.raises(CameraError, match="exposure_us: 20000 us is longer than a frame"):
        cam.start()
    assert module.closed_count == 1  # the half-opened camera was closed


def test_lores_must_be_yuv_on_pi4(module: StandinPicamera2Module) -> None:
    cfg = Picamera2Config(main_size=(128, 96), lores_size=(64, 48), lores_format="RGB888")
    with pytest.raises(CameraError, match="lores stream must be YUV"):
        Picamera2Camera(cfg, picamera2_module=module).start()
    pi5 = StandinPicamera2Module(scene, platform="pisp")
    cam = Picamera2Camera(cfg, picamera2_module=pi5)
    cam.start()
    assert tuple(cam.capture(1.0).lores[5, 5]) == (220, 0, 0)
    cam.close()


def test_standin_keeps_picamera2_rules(module: StandinPicamera2Module) -> None:
    picam = module.Picamera2()
    with pytest.raises(RuntimeError, match="not started"):
        picam.capture_request()
    picam.configure(picam.create_video_configuration(main={"size": (64, 48)}, lores={"size": (32, 24)}))
    picam.start()
    with pytest.raises(RuntimeError, match="Camera must be stopped before configuring"):
        picam.configure(picam.create_still_configuration())
    request = picam.capture_request()
    assert request.make_array("main").shape == (48, 64, 4)  # XBGR8888 by default for video
    assert request.make_array("lores").shape == (36, 64)  # YUV420: h * 3 / 2 rows of the padded stride
    request.release()
    with pytest.raises(RuntimeError):
        request.release()
    with pytest.raises(AttributeError, match="after release"):  # picamera2: its stream map is None
        request.make_array("main")
    picam.close()


def test_missing_picamera2_names_the_apt_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(CameraError, match=r"apt install python3-picamera2.*--system-site-packages"):
        Picamera2Camera(CONFIG).start()
