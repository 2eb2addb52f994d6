"""Picamera2Camera and its stand-in against what the real picamera2 does (read in
raspberrypi/picamera2: picamera2.py, request.py, job.py, controls.py), for the cases where the
adapter used to differ: stop() queued behind a stalled capture job, YUV420 row padding and
colour space, AeEnable, and the errors the real objects raise."""
import time
from concurrent.futures import CancelledError

import cv2
import numpy as np
import pytest

from hardware.errors import CameraDisconnected, CameraError, CameraTimeout
from hardware.picamera2_backend import Picamera2Camera, Picamera2Config, yuv420_to_rgb
from hardware.standin_picamera2 import (
    StandinPicamera2Module,
    StandinRequest,
    WouldBlockForever,
)

pytestmark = pytest.mark.unit

COLOUR = (200, 120, 40)


def flat(index: int) -> np.ndarray:
    """A flat, saturated colour (so scaling and chroma subsampling cannot blur it)."""
    return np.full((96, 128, 3), COLOUR, np.uint8)


@pytest.fixture
def module() -> StandinPicamera2Module:
    return StandinPicamera2Module(flat)


# ---- stop()/close() behind a capture job that cannot finish --------------------------------------

def test_standin_stop_behind_a_stalled_job_would_block_like_picamera2(module: StandinPicamera2Module) -> None:
    picam = module.Picamera2()
    picam.configure(picam.create_video_configuration(main={"size": (64, 48)}, lores={"size": (32, 24)}))
    picam.start()
    module.stall()
    job = picam.capture_request(wait=False)
    with pytest.raises(TimeoutError):
        job.get_result(timeout=0.02)
    with pytest.raises(WouldBlockForever, match="cancel_all_and_flush"):
        picam.stop()  # picamera2 queues stop behind the job: it would never return
    picam.cancel_all_and_flush()
    with pytest.raises(CancelledError):
        job.get_result(timeout=0)
    picam.close()
    assert module.opened == []


def test_close_after_a_capture_timeout_does_not_block(module: StandinPicamera2Module) -> None:
    cam = Picamera2Camera(Picamera2Config(main_size=(128, 96), lores_size=(64, 48)), picamera2_module=module)
    cam.start()
    cam.capture(1.0)
    module.stall()  # the cable is out: no frame will ever complete
    with pytest.raises(CameraTimeout):
        cam.capture(0.05)
    started = time.monotonic()
    cam.close()
    assert time.monotonic() - started < module.stop_grace_s
    assert module.opened == [] and module.closed_count == 1


def test_a_cancelled_job_is_a_camera_error(module: StandinPicamera2Module) -> None:
    cam = Picamera2Camera(Picamera2Config(main_size=(128, 96), lores_size=(64, 48)), picamera2_module=module)
    cam.start()
    module.stall()
    with pytest.raises(CameraTimeout):
        cam.capture(0.02)
    module.opened[0].cancel_all_and_flush()  # e.g. another thread tidied up the camera
    with pytest.raises(CameraError, match="CancelledError"):
        cam.capture(0.02)
    cam.close()


# ---- YUV420: row padding and colour space -------------------------------------------------------

def test_yuv_rows_are_padded_and_the_adapter_crops_them(module: StandinPicamera2Module) -> None:
    cfg = Picamera2Config(main_size=(128, 96), lores_size=(80, 60))
    cam = Picamera2Camera(cfg, picamera2_module=module)
    cam.start()
    (picam,) = module.opened
    assert picam.camera_configuration()["lores"]["stride"] == 128  # 80 padded to the Pi 4's 64
    frame = cam.capture(1.0)
    assert frame.lores.shape == (60, 80, 3)
    assert np.abs(frame.lores.astype(int) - COLOUR).max() <= 3  # no padding columns left in
    cam.close()


def test_pi5_pads_yuv_rows_more(module: StandinPicamera2Module) -> None:
    pi5 = StandinPicamera2Module(flat, platform="pisp")
    cam = Picamera2Camera(Picamera2Config(main_size=(128, 96), lores_size=(64, 48)), picamera2_module=pi5)
    cam.start()
    assert pi5.opened[0].camera_configuration()["lores"]["stride"] == 128
    assert cam.capture(1.0).lores.shape == (48, 64, 3)
    cam.close()


@pytest.mark.parametrize(("main_size", "still", "colour_space"), [
    ((128, 96), False, "SMPTE 170M, limited BT.601"),
    ((1280, 720), False, "Rec.709, limited BT.709"),
    ((128, 96), True, "sYCC, full-range BT.601"),
])
def test_lores_colours_follow_the_stream_colour_space(main_size: tuple[int, int], still: bool,
                                                      colour_space: str) -> None:
    module = StandinPicamera2Module(lambda i: np.full((main_size[1], main_size[0], 3), COLOUR, np.uint8))
    cam = Picamera2Camera(Picamera2Config(main_size=main_size, lores_size=(64, 48), still=still),
                          picamera2_module=module)
    cam.start()
    lores = cam.capture(1.0).lores
    assert np.abs(lores.astype(int) - COLOUR).max() <= 3, colour_space
    cam.close()


def test_decoder_matches_opencv_where_opencv_is_right() -> None:
    rng = np.random.default_rng(1)
    i420 = rng.integers(16, 236, (90, 80), dtype=np.uint8)  # legal limited-range values
    ours = yuv420_to_rgb(i420, (80, 60), "Rec601", full_range=False)
    assert np.abs(ours.astype(int) - cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)).max() <= 1
    grey = np.full((90, 80), 128, np.uint8)
    grey[:60] = 200
    assert yuv420_to_rgb(grey, (80, 60), "Rec601", full_range=True)[0, 0].tolist() == [200, 200, 200]


# ---- controls -----------------------------------------------------------------------------------

def test_fixed_exposure_and_gain_send_no_ae_enable() -> None:
    controls = Picamera2Config(exposure_us=800, analogue_gain=6.0).controls()
    assert controls == {"FrameDurationLimits": (33333, 33333), "ExposureTime": 800, "AnalogueGain": 6.0}
    assert isinstance(controls["ExposureTime"], int) and isinstance(controls["AnalogueGain"], float)


# ---- errors the real objects raise --------------------------------------------------------------

def test_no_camera_is_a_runtime_error_as_in_picamera2_0_3_38(module: StandinPicamera2Module) -> None:
    with pytest.raises(RuntimeError, match=r'No camera number 1 found - use "rpicam-hello --list-cameras"'):
        module.Picamera2(1)  # only camera 0 is listed
    module.num_cameras = 0  # booted without a camera
    assert module.Picamera2.global_camera_info() == []
    with pytest.raises(RuntimeError, match="No camera number 0 found"):
        module.Picamera2(0)
    constructed = module.constructed
    with pytest.raises(CameraDisconnected, match="camera 0: not connected"):
        Picamera2Camera(Picamera2Config(), picamera2_module=module).start()
    # the adapter asked global_camera_info() and made no Picamera2 (0.3.38 leaks a pipe per try)
    assert module.constructed == constructed


def test_request_errors_are_picamera2s(module: StandinPicamera2Module) -> None:
    picam = module.Picamera2()
    picam.configure(picam.create_video_configuration(main={"size": (64, 48)}))
    picam.start()
    request = picam.capture_request()
    with pytest.raises(RuntimeError, match="Stream 'lores' is not defined"):
        request.make_array("lores")
    request.release()
    with pytest.raises(RuntimeError, match="negative ref_count"):
        request.release()
    with pytest.raises(AttributeError):
        request.get_metadata()
    module.stall()
    with pytest.raises(TimeoutError):
        picam.capture_request(wait=0.02)  # a number is a timeout in current picamera2
    picam.cancel_all_and_flush()
    picam.close()


def test_configuration_rules_are_picamera2s(module: StandinPicamera2Module) -> None:
    picam = module.Picamera2()
    with pytest.raises(ValueError, match="Bad key 'sise'"):
        picam.create_video_configuration(main={"sise": (64, 48)})
    config = picam.create_video_configuration(main={"size": (65, 49), "format": "RGB888"}, lores={"size": (33, 25)})
    assert config["main"] == {"format": "RGB888", "size": (64, 48), "preserve_ar": True}
    assert config["lores"]["size"] == (32, 24) and config["raw"] is not None  # raw stream on by default
    config["main"]["size"] = [64, 48]
    with pytest.raises(RuntimeError, match=r"should be \(width, height\)"):
        picam.configure(config)
    picam.close()


def test_adapter_wraps_a_failing_request_and_still_releases_it(module: StandinPicamera2Module,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cam = Picamera2Camera(Picamera2Config(main_size=(128, 96), lores_size=(64, 48)), picamera2_module=module)
    cam.start()

    def broken(self: StandinRequest, name: str) -> np.ndarray:
        raise RuntimeError(f"Stream {name!r} is not defined")

    monkeypatch.setattr(StandinRequest, "make_array", broken)
    with pytest.raises(CameraError, match="reading the request failed"):
        cam.capture(1.0)
    assert module.opened[0].released_count == 1
    cam.close()
