"""Camera backend for Raspberry Pi cameras through picamera2 (libcamera).

picamera2 is imported only when a camera is started, so this module imports anywhere. On
Raspberry Pi OS it comes from apt (`sudo apt install python3-picamera2`; it needs the system
libcamera), so the venv must be made with `--system-site-packages`. Tests inject
`StandinPicamera2Module` through `picamera2_module=`.

Both streams come from ONE request, i.e. one exposure: `main` (full resolution, for crops) and
`lores` (small, for detection; YUV420 on a Pi 4, converted to RGB here).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .camera import Camera
from .errors import CameraDisconnected, CameraError, CameraTimeout
from .frame import Frame

log = logging.getLogger(__name__)

APT_HINT = ("picamera2 is not installed: on Raspberry Pi OS run `sudo apt install python3-picamera2` "
            "and make the venv with `python3 -m venv --system-site-packages`")
METADATA_KEYS = ("SensorTimestamp", "ExposureTime", "AnalogueGain", "DigitalGain", "Lux", "FrameDuration",
                 "ColourTemperature", "LensPosition", "FocusFoM", "SensorTemperature", "AfState")
AF_MODE_MANUAL = 0  # libcamera.controls.AfModeEnum.Manual
AF_MODE_CONTINUOUS = 2  # libcamera.controls.AfModeEnum.Continuous


@dataclass(frozen=True)
class Picamera2Config:
    """What to ask the camera for. Sizes are (width, height).

    exposure_us: fixed exposure time; plates on moving cars need <= 1000 us. None = auto.
    analogue_gain: fixed gain; None lets the AGC vary the gain (with a fixed exposure time the
    Pi's AGC adjusts only the gain). With both fixed, AE/AGC is switched off.
    lens_position: dioptres (1 / distance in m) for manual focus on Camera Module 3; None = AF
    continuous where the camera has autofocus.
    still: use create_still_configuration instead of create_video_configuration.
    """

    main_size: tuple[int, int] = (1920, 1080)
    lores_size: tuple[int, int] = (640, 352)
    fps: float = 30.0
    exposure_us: int | None = 1000
    analogue_gain: float | None = None
    lens_position: float | None = None
    buffer_count: int = 4
    camera_num: int = 0
    main_format: str = "RGB888"
    lores_format: str = "YUV420"
    still: bool = False

    def controls(self) -> dict[str, Any]:
        """The libcamera controls this configuration implies."""
        frame_us = round(1e6 / self.fps)
        controls: dict[str, Any] = {"FrameDurationLimits": (frame_us, frame_us)}
        if self.exposure_us is not None:
            if self.exposure_us > frame_us:
                raise CameraError(f"Picamera2Config.exposure_us: {self.exposure_us} us is longer than a "
                                  f"frame at {self.fps} fps ({frame_us} us)")
            controls["ExposureTime"] = int(self.exposure_us)
        if self.analogue_gain is not None:
            controls["AnalogueGain"] = float(self.analogue_gain)
        if self.exposure_us is not None and self.analogue_gain is not None:
            controls["AeEnable"] = False  # fully manual: nothing left for AE/AGC to do
        return controls


class Picamera2Camera(Camera):
    """A `Camera` on picamera2 (or anything with its API, e.g. the stand-in)."""

    def __init__(self, config: Picamera2Config | None = None, picamera2_module: Any | None = None) -> None:
        self.config = config or Picamera2Config()
        self._module = picamera2_module
        self._cam: Any | None = None
        self._pending: Any | None = None  # a capture job that timed out; its frame is used next
        self._index = 0
        self._closed = False

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Open, configure (main + lores) and start the camera."""
        if self._closed:
            raise CameraError("Picamera2Camera: closed; make a new one")
        if self._cam is not None:
            return
        module = self._load_module()
        cfg = self.config
        try:
            cam = module.Picamera2(cfg.camera_num)
        except (RuntimeError, IndexError) as exc:
            raise CameraDisconnected(f"camera {cfg.camera_num}: cannot open: {exc}") from exc
        try:
            create = cam.create_still_configuration if cfg.still else cam.create_video_configuration
            controls = cfg.controls()
            controls.update(self._focus_controls(cam))
            camera_config = create(
                main={"size": tuple(cfg.main_size), "format": cfg.main_format},
                lores={"size": tuple(cfg.lores_size), "format": cfg.lores_format},
                buffer_count=cfg.buffer_count,
                controls=controls,
                # queue=False: every capture waits for a fresh frame instead of a stale held one.
                queue=False,
            )
            cam.configure(camera_config)
            cam.start()
        except CameraError:
            cam.close()
            raise
        except (RuntimeError, ValueError, KeyError) as exc:
            cam.close()
            raise CameraError(f"camera {cfg.camera_num}: configure/start failed: {exc}") from exc
        self._cam = cam
        log.info("camera %d started: main %s %s, lores %s %s, %s fps", cfg.camera_num, cfg.main_size,
                 cfg.main_format, cfg.lores_size, cfg.lores_format, cfg.fps)

    def _load_module(self) -> Any:
        if self._module is None:
            try:
                import picamera2
            except ImportError as exc:
                raise CameraError(APT_HINT) from exc
            self._module = picamera2
        return self._module

    def _focus_controls(self, cam: Any) -> dict[str, Any]:
        """Manual focus (or continuous AF) where the camera has a lens motor (Camera Module 3)."""
        available = getattr(cam, "camera_controls", {})
        if "AfMode" not in available:
            if self.config.lens_position is not None:
                log.warning("camera has no autofocus lens; lens_position ignored")
            return {}
        if self.config.lens_position is not None:
            return {"AfMode": _af_mode("Manual", AF_MODE_MANUAL), "LensPosition": float(self.config.lens_position)}
        return {"AfMode": _af_mode("Continuous", AF_MODE_CONTINUOUS)}

    def capture(self, timeout: float) -> Frame:
        """The next frame: main and lores from the same request, with sensor metadata."""
        cam = self._cam
        if cam is None:
            raise CameraError("Picamera2Camera: capture() before start()")
        job = self._pending
        try:
            if job is None:
                job = cam.capture_request(wait=False)
            request = job.get_result(timeout=timeout)
        except TimeoutError:
            # Keep the job: its request arrives later and must be used (or released), not leaked.
            self._pending = job
            raise CameraTimeout(f"camera {self.config.camera_num}: no frame within {timeout:.3f}s") from None
        except RuntimeError as exc:
            self._pending = None
            raise CameraError(f"camera {self.config.camera_num}: capture failed: {exc}") from exc
        self._pending = None
        try:
            main = self._to_rgb(request.make_array("main"), self.config.main_format, "main")
            lores = self._to_rgb(request.make_array("lores"), self.config.lores_format, "lores")
            metadata = request.get_metadata()
        finally:
            request.release()
        return self._frame(main, lores, metadata)

    def _frame(self, main: np.ndarray, lores: np.ndarray, metadata: dict[str, Any]) -> Frame:
        now_mono, now_wall = time.monotonic_ns(), time.time_ns()
        # SensorTimestamp is the start of exposure on the kernel's boot/monotonic clock.
        sensor_ns = int(metadata.get("SensorTimestamp") or now_mono)
        index, self._index = self._index, self._index + 1
        kept = {k: metadata[k] for k in METADATA_KEYS if k in metadata}
        return Frame(main=main, lores=lores, timestamp_ns=sensor_ns,
                     wall_time_ns=now_wall - (now_mono - sensor_ns), index=index, metadata=kept)

    @staticmethod
    def _to_rgb(array: np.ndarray, fmt: str, stream: str) -> np.ndarray:
        """picamera2 array -> HxWx3 RGB. Note libcamera's naming: "RGB888" is [B, G, R] in memory."""
        if fmt == "RGB888":
            return np.ascontiguousarray(array[..., ::-1])
        if fmt == "BGR888":
            return np.ascontiguousarray(array)
        if fmt == "XBGR8888":
            return np.ascontiguousarray(array[..., :3])
        if fmt == "XRGB8888":
            return np.ascontiguousarray(array[..., 2::-1])
        if fmt == "YUV420":  # planar I420: (h * 3 / 2, w)
            return cv2.cvtColor(array, cv2.COLOR_YUV2RGB_I420)
        if fmt == "YVU420":
            return cv2.cvtColor(array, cv2.COLOR_YUV2RGB_YV12)
        raise CameraError(f"{stream} stream: format {fmt} is not supported (use RGB888/BGR888/XBGR8888/"
                          "XRGB8888/YUV420)")

    def set_controls(self, controls: dict[str, Any]) -> None:
        """Pass controls straight to picamera2 (ExposureTime, AnalogueGain, LensPosition, ...)."""
        if self._cam is None:
            raise CameraError("Picamera2Camera: set_controls() before start()")
        try:
            self._cam.set_controls(dict(controls))
        except RuntimeError as exc:
            raise CameraError(f"camera {self.config.camera_num}: set_controls: {exc}") from exc

    def stop(self) -> None:
        """Stop streaming."""
        if self._cam is not None:
            self._cam.stop()

    def close(self) -> None:
        """Stop, release any held request and close the camera. Safe to call twice."""
        self._closed = True
        cam, self._cam = self._cam, None
        job, self._pending = self._pending, None
        if job is not None:
            try:
                job.get_result(timeout=0).release()
            except (TimeoutError, RuntimeError):
                pass  # never completed: nothing is held
        if cam is not None:
            try:
                cam.stop()
            finally:
                cam.close()


def _af_mode(name: str, fallback: int) -> Any:
    """libcamera's AfModeEnum member when libcamera is importable, else its integer value."""
    try:
        from libcamera import controls
    except ImportError:
        return fallback
    return getattr(controls.AfModeEnum, name)
