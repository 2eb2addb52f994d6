"""Camera backend for Raspberry Pi cameras through picamera2 (libcamera).

picamera2 is imported only when a camera is started, so this module imports anywhere. On
Raspberry Pi OS it comes from apt (`sudo apt install python3-picamera2`; it needs the system
libcamera), so the venv must be made with `--system-site-packages`. Tests inject
`StandinPicamera2Module` through `picamera2_module=`.

Both streams come from ONE request, i.e. one exposure: `main` (full resolution, for crops) and
`lores` (small, for detection; YUV420 on a Pi 4, converted to RGB here).

What this relies on, as read in raspberrypi/picamera2 (picamera2.py, request.py, job.py):
`capture_request(wait=False)` returns a Job whose `get_result(timeout)` raises
concurrent.futures' TimeoutError (the builtin TimeoutError on Python >= 3.11) and leaves the job
queued; `make_array("lores")` of a YUV420 stream is the planar image with its row padding,
shape (h * 3 / 2, stride); jobs run in order on picamera2's event loop and `stop()` is queued
behind them, so a camera with a capture job still waiting must be `cancel_all_and_flush()`ed
before `stop()`/`close()` or they block forever.

Also read there (picamera2 0.3.38): `Picamera2(camera_num)` opens a pipe before it checks that
the camera is listed and does not close it when it raises, so every failed construction leaks a
file descriptor; `Picamera2.global_camera_info()` is static and opens nothing, so it is asked
first. `process_requests` takes a finished capture job off its list under its lock but signals
it only after releasing the lock, so `cancel_all_and_flush()` can miss a job that is about to
deliver a request; the job's `signal_function` is how such a request is still given back.
`tuning=None` deletes LIBCAMERA_RPI_TUNING_FILE from the environment, so a tuning file can only
be chosen through `tuning=`.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import CancelledError
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
# After cancelling a timed-out capture job, how long past one frame period to wait for a request
# the event loop may already have taken for it (see _cancel_pending).
CANCEL_SETTLE_MARGIN_S = 0.01


@dataclass(frozen=True)
class Picamera2Config:
    """What to ask the camera for. Sizes are (width, height).

    exposure_us: fixed exposure time; plates on moving cars need <= 1000 us. None = auto.
    analogue_gain: fixed gain; None lets the AGC vary the gain (with a fixed exposure time the
    Pi's AGC adjusts only the gain). With both fixed, AE/AGC has nothing left to vary; no
    AeEnable is sent (see controls()).
    lens_position: dioptres (1 / distance in m) for manual focus on Camera Module 3; None = AF
    continuous where the camera has autofocus.
    still: use create_still_configuration instead of create_video_configuration.
    tuning: the libcamera tuning file, for a sensor variant the default file does not suit (a
    NoIR module under IR light: "imx708_noir.json"). A path (it contains a "/") is passed on as
    it is; a bare name is looked up in libcamera's tuning directories with picamera2's
    load_tuning_file (".json" is added when missing). None = libcamera's default for the sensor.
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
    tuning: str | None = None

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
        # No AeEnable=False even when both are fixed: a fixed ExposureTime/AnalogueGain already
        # takes that value away from AE/AGC (libcamera control_ids_core.yaml), whereas AeEnable=False
        # sent with them makes AE/AGC freeze the values it has *now*, ahead of ours (picamera2
        # issue #933), and on libcamera 0.5 it was ignored at start (picamera2 issue #1269).
        return controls


class Picamera2Camera(Camera):
    """A `Camera` on picamera2 (or anything with its API, e.g. the stand-in)."""

    def __init__(self, config: Picamera2Config | None = None, picamera2_module: Any | None = None) -> None:
        self.config = config or Picamera2Config()
        self._module = picamera2_module
        self._cam: Any | None = None
        self._started = False
        self._pending: Any | None = None  # a capture job that timed out; its frame is used next
        # Jobs given up on while the event loop may still deliver them; their requests are
        # released from the job's signal (see _cancel_pending).
        self._abandoned: set[Any] = set()
        self._abandoned_lock = threading.Lock()
        self._layout: dict[str, _Layout] = {}
        self._index = 0
        self._closed = False

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Open, configure (main + lores) and start the camera; after stop(), start it again."""
        if self._closed:
            raise CameraError("Picamera2Camera: closed; make a new one")
        if self._cam is not None:
            if not self._started:
                self._restart(self._cam)
            return
        module = self._load_module()
        cfg = self.config
        listed = self._check_listed(module)
        tuning = self._tuning(module)
        try:
            cam = module.Picamera2(cfg.camera_num, tuning=tuning)
        except (RuntimeError, IndexError) as exc:
            # A listed camera that fails to open is busy in another process, has a bad tuning file
            # or a driver error (picamera2 wraps the cause: name it). Unlisted, it is not there.
            cause = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
            error = CameraError if listed else CameraDisconnected
            raise error(f"camera {cfg.camera_num}: cannot open: {exc!r}{cause}") from exc
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
            self._layout = self._read_layout(cam)
        except CameraError:
            cam.close()
            raise
        except (RuntimeError, ValueError, KeyError) as exc:
            cam.close()
            raise CameraError(f"camera {cfg.camera_num}: configure/start failed: {exc}") from exc
        self._cam = cam
        self._started = True
        log.info("camera %d started: main %s %s, lores %s %s, %s fps", cfg.camera_num, self._layout["main"].size,
                 cfg.main_format, self._layout["lores"].size, cfg.lores_format, cfg.fps)

    def _restart(self, cam: Any) -> None:
        """start() after stop(): the camera is still open and configured, only streaming stopped."""
        try:
            cam.start()
        except RuntimeError as exc:
            raise CameraError(f"camera {self.config.camera_num}: restart failed: {exc}") from exc
        self._started = True
        log.info("camera %d restarted", self.config.camera_num)

    def _check_listed(self, module: Any) -> bool:
        """Refuse a camera number libcamera does not list, before Picamera2() is made; False when
        this picamera2 cannot list its cameras.

        picamera2 0.3.38 opens a pipe before it checks the number and leaks it when it raises;
        the supervisor retries a missing camera for ever, so asking first keeps a node booted
        without its camera from running out of file descriptors. global_camera_info() is static
        and opens nothing.
        """
        num = self.config.camera_num
        if num < 0:
            raise CameraError(f"Picamera2Config.camera_num: must be >= 0, got {num}")
        info = getattr(module.Picamera2, "global_camera_info", None)
        if info is None:  # not in this picamera2: construct and let it fail as it does
            return False
        try:
            cameras = list(info())
        except RuntimeError as exc:
            raise CameraError(f"camera {num}: listing the cameras failed: {exc}") from exc
        if num >= len(cameras):
            models = ", ".join(str(c.get("Model", "?")) for c in cameras) or "none"
            raise CameraDisconnected(f"camera {num}: not connected (libcamera lists {len(cameras)} camera(s): "
                                     f"{models}); check the ribbon cable and `rpicam-hello --list-cameras`")
        return True

    def _tuning(self, module: Any) -> str | dict[str, Any] | None:
        """What to pass as Picamera2(tuning=...): a path unchanged, a bare name loaded from
        libcamera's tuning directories, or None.

        A file that is not there is refused here: picamera2 would hand the path to libcamera,
        whose failure comes out of Picamera2() (and leaks a file descriptor each time).
        """
        tuning = self.config.tuning
        if tuning is None:
            return None
        if "/" in tuning:
            if not os.path.isfile(tuning):
                raise CameraError(f"camera {self.config.camera_num}: tuning file {tuning} does not exist")
            return tuning
        name = tuning if tuning.endswith(".json") else tuning + ".json"
        try:
            loaded = module.Picamera2.load_tuning_file(name)
        except (RuntimeError, OSError, ValueError) as exc:
            raise CameraError(f"camera {self.config.camera_num}: tuning {name!r}: {exc} (give a path, or a name "
                              "from /usr/share/libcamera/ipa/rpi/vc4 or .../pisp)") from exc
        return dict(loaded)

    def _load_module(self) -> Any:
        if self._module is None:
            try:
                import picamera2
            except ImportError as exc:
                raise CameraError(APT_HINT) from exc
            self._module = picamera2
        return self._module

    def _read_layout(self, cam: Any) -> dict[str, _Layout]:
        """Each stream's format and size as configured (libcamera may adjust them), and the
        YCbCr matrix/range of the YUV streams."""
        cfg = self.config
        configured = cam.camera_configuration() or {}
        colour = _ycbcr_of(configured.get("colour_space")) or _picamera2_default_ycbcr(cfg)
        layout = {}
        for name, fmt, size in (("main", cfg.main_format, cfg.main_size), ("lores", cfg.lores_format, cfg.lores_size)):
            stream = configured.get(name) or {}
            actual = tuple(stream.get("size") or size)
            if actual != tuple(size):
                log.warning("camera %d: %s stream is %s, not the %s asked for", cfg.camera_num, name, actual, tuple(size))
            layout[name] = _Layout(stream.get("format") or fmt, (int(actual[0]), int(actual[1])), *colour)
        return layout

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
        if not self._started:
            # picamera2 would queue the job and wait for ever: no frame comes while stopped.
            raise CameraError("Picamera2Camera: capture() while stopped; start() it again")
        job = self._pending
        try:
            if job is None:
                job = cam.capture_request(wait=False, signal_function=self._job_signalled)
            request = job.get_result(timeout=timeout)
        except TimeoutError:
            # Keep the job: its request arrives later and must be used (or released), not leaked.
            self._pending = job
            raise CameraTimeout(f"camera {self.config.camera_num}: no frame within {timeout:.3f}s") from None
        except (RuntimeError, CancelledError) as exc:
            # CancelledError: the job was cancelled (cancel_all_and_flush); it will never deliver.
            self._pending = None
            detail = str(exc) or type(exc).__name__
            raise CameraError(f"camera {self.config.camera_num}: capture failed: {detail}") from exc
        self._pending = None
        try:
            main = self._to_rgb(request.make_array("main"), self._layout["main"], "main")
            lores = self._to_rgb(request.make_array("lores"), self._layout["lores"], "lores")
            metadata = request.get_metadata()
        except (RuntimeError, ValueError) as exc:
            raise CameraError(f"camera {self.config.camera_num}: reading the request failed: {exc}") from exc
        finally:
            request.release()
        return self._frame(main, lores, metadata)

    def _frame(self, main: np.ndarray, lores: np.ndarray, metadata: dict[str, Any]) -> Frame:
        now_mono, now_wall = time.monotonic_ns(), time.time_ns()
        # SensorTimestamp: ns on CLOCK_BOOTTIME, which equals CLOCK_MONOTONIC on a Pi (it never
        # suspends); see docs/hardware.md for which instant of the exposure it marks.
        sensor_ns = int(metadata.get("SensorTimestamp") or now_mono)
        index, self._index = self._index, self._index + 1
        kept = {k: metadata[k] for k in METADATA_KEYS if k in metadata}
        return Frame(main=main, lores=lores, timestamp_ns=sensor_ns,
                     wall_time_ns=now_wall - (now_mono - sensor_ns), index=index, metadata=kept)

    @staticmethod
    def _to_rgb(array: np.ndarray, layout: _Layout, stream: str) -> np.ndarray:
        """picamera2 array -> HxWx3 RGB. Note libcamera's naming: "RGB888" is [B, G, R] in memory."""
        fmt = layout.format
        if fmt == "RGB888":
            return np.ascontiguousarray(array[..., ::-1])
        if fmt == "BGR888":
            return np.ascontiguousarray(array)
        if fmt == "XBGR8888":
            return np.ascontiguousarray(array[..., :3])
        if fmt == "XRGB8888":
            return np.ascontiguousarray(array[..., 2::-1])
        if fmt in ("YUV420", "YVU420"):
            return yuv420_to_rgb(array, layout.size, layout.encoding, layout.full_range, swap_uv=fmt == "YVU420")
        raise CameraError(f"{stream} stream: format {fmt} is not supported (use RGB888/BGR888/XBGR8888/"
                          "XRGB8888/YUV420/YVU420)")

    def set_controls(self, controls: dict[str, Any]) -> None:
        """Pass controls straight to picamera2 (ExposureTime, AnalogueGain, LensPosition, ...)."""
        if self._cam is None:
            raise CameraError("Picamera2Camera: set_controls() before start()")
        try:
            self._cam.set_controls(dict(controls))
        except RuntimeError as exc:
            raise CameraError(f"camera {self.config.camera_num}: set_controls: {exc}") from exc

    def stop(self) -> None:
        """Stop streaming; start() streams again."""
        if self._cam is not None and self._started:
            self._cancel_pending(self._cam)
            self._started = False
            try:
                self._cam.stop()
            except RuntimeError as exc:
                raise CameraError(f"camera {self.config.camera_num}: stop failed: {exc}") from exc

    def close(self) -> None:
        """Stop, release any held request and close the camera. Safe to call twice."""
        self._closed = True
        cam, self._cam = self._cam, None
        self._started = False
        if cam is None:
            return
        try:
            self._cancel_pending(cam)
            cam.stop()
        finally:
            cam.close()

    def _cancel_pending(self, cam: Any) -> None:
        """Drop a capture job left by a timeout, giving back the request it delivers, if any.

        picamera2's stop() is a job queued behind this one; if the camera is stalled or unplugged
        this job never completes and stop() (and close()) would block forever, so the queue is
        flushed first (picamera2 documents cancel_all_and_flush for exactly this case). The
        event loop may have taken the job off its list, with a request, just before the flush
        and not signalled it yet: that request is waited for about a frame period, and if it
        comes later still, the job's signal releases it (_job_signalled).
        """
        job, self._pending = self._pending, None
        if job is None:
            return
        cancel = getattr(cam, "cancel_all_and_flush", None)
        if cancel is not None:
            cancel()
        else:
            log.warning("camera %d: this picamera2 has no cancel_all_and_flush(); stop() may block",
                        self.config.camera_num)
        try:
            request = job.get_result(timeout=1.0 / self.config.fps + CANCEL_SETTLE_MARGIN_S)
        except TimeoutError:
            with self._abandoned_lock:
                # Checked again under the lock: a signal that came since then found no entry.
                try:
                    request = job.get_result(timeout=0)
                except TimeoutError:
                    self._abandoned.add(job)
                    log.debug("camera %d: a cancelled capture is still in flight; its request is released "
                              "when it arrives", self.config.camera_num)
                    return
                except (CancelledError, RuntimeError):
                    return
        except (CancelledError, RuntimeError):
            return  # cancelled, or failed: nothing is held
        self._release_quietly(request, "after cancelling")

    def _job_signalled(self, job: Any) -> None:
        """picamera2's signal_function, on its event loop thread: release the request of a job
        given up on in _cancel_pending. Must not raise (it would break picamera2's loop)."""
        with self._abandoned_lock:
            if job not in self._abandoned:
                return
            self._abandoned.discard(job)
        try:
            request = job.get_result(timeout=0)
        except Exception:  # noqa: BLE001 - any outcome but a request means nothing is held
            return
        self._release_quietly(request, "arriving after close")

    def _release_quietly(self, request: Any, when: str) -> None:
        try:
            request.release()
        except (RuntimeError, AttributeError) as exc:
            log.warning("camera %d: releasing a request %s failed: %s", self.config.camera_num, when, exc)


@dataclass(frozen=True)
class _Layout:
    """A configured stream: pixel format, (width, height), and for YUV its YCbCr matrix and range."""

    format: str
    size: tuple[int, int]
    encoding: str = "Rec601"
    full_range: bool = False


# Kr, Kb of the YCbCr matrices (ITU-R BT.601, BT.709, BT.2020).
_KR_KB = {"Rec601": (0.299, 0.114), "Rec709": (0.2126, 0.0722), "Rec2020": (0.2627, 0.0593)}


def _enum_name(value: Any) -> str | None:
    """The name of a libcamera (pybind11) enum member: `.name`, else the tail of str()."""
    if value is None:
        return None
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else str(value).rsplit(".", 1)[-1]


def _ycbcr_of(colour_space: Any) -> tuple[str, bool] | None:
    """(encoding, full_range) of a libcamera ColorSpace, or None when it does not say.

    picamera2 reports the three standard colour spaces (Sycc, Smpte170m, Rec709) with their
    ycbcrEncoding and range; an RGB-only colour space (encoding "None") says nothing about YUV.
    """
    encoding = _enum_name(getattr(colour_space, "ycbcrEncoding", None))
    value_range = _enum_name(getattr(colour_space, "range", None))
    if encoding is None or value_range is None:
        return None
    matched = next((key for key in _KR_KB if key[3:] in encoding), None)
    if matched is None or value_range not in ("Full", "Limited"):
        return None
    return matched, value_range == "Full"


def _picamera2_default_ycbcr(cfg: Picamera2Config) -> tuple[str, bool]:
    """The colour space picamera2 picks when none is given: sYCC (full-range BT.601) for stills;
    for video SMPTE 170M (limited BT.601) below 1280x720, else Rec.709 (limited BT.709)."""
    if cfg.still:
        return "Rec601", True
    small = cfg.main_size[0] < 1280 or cfg.main_size[1] < 720
    return ("Rec601" if small else "Rec709"), False


def yuv420_to_rgb(array: np.ndarray, size: tuple[int, int], encoding: str = "Rec601", full_range: bool = False,
                  swap_uv: bool = False) -> np.ndarray:
    """A picamera2 YUV420 array, shape (h * 3 / 2, stride), -> HxWx3 RGB of `size` (width, height).

    The stride padding on the right of every row is cropped off (picamera2 leaves it in), and the
    YCbCr matrix and range follow the stream's colour space: OpenCV's COLOR_YUV2RGB_I420 knows
    only limited-range BT.601, which is wrong for stills (sYCC, full range) and for video from
    1280x720 (Rec.709). The grey image is simply the first h rows, cropped to w.
    """
    width, height = int(size[0]), int(size[1])
    stride = array.shape[1]
    if array.shape[0] != height * 3 // 2 or stride < width:
        raise CameraError(f"YUV420 array {array.shape} does not fit a {width}x{height} stream")
    flat = array.reshape(-1)
    luma = flat[:stride * height].reshape(height, stride)[:, :width]
    chroma_rows, chroma_stride = height // 2, stride // 2
    planes = []
    for i in range(2):
        start = stride * height + i * chroma_rows * chroma_stride
        plane = flat[start:start + chroma_rows * chroma_stride].reshape(chroma_rows, chroma_stride)[:, :width // 2]
        # Nearest-neighbour 2x2 upsampling, as OpenCV's and picamera2's own converters do.
        planes.append(cv2.resize(plane, (width, height), interpolation=cv2.INTER_NEAREST))
    cb, cr = (planes[1], planes[0]) if swap_uv else (planes[0], planes[1])
    yuv = cv2.merge([np.ascontiguousarray(luma), cb, cr])
    return cv2.transform(yuv, _ycbcr_to_rgb_matrix(encoding, full_range))


def _ycbcr_to_rgb_matrix(encoding: str, full_range: bool) -> np.ndarray:
    """3x4 matrix for cv2.transform: [R, G, B] = M @ [Y, Cb, Cr, 1] on 8-bit values."""
    kr, kb = _KR_KB[encoding]
    kg = 1.0 - kr - kb
    y_scale, c_scale, y_offset = (1.0, 1.0, 0.0) if full_range else (255.0 / 219.0, 255.0 / 224.0, 16.0)
    rows = [
        (y_scale, 0.0, c_scale * 2.0 * (1.0 - kr)),
        (y_scale, -c_scale * 2.0 * kb * (1.0 - kb) / kg, -c_scale * 2.0 * kr * (1.0 - kr) / kg),
        (y_scale, c_scale * 2.0 * (1.0 - kb), 0.0),
    ]
    return np.array([[a, b, c, -a * y_offset - (b + c) * 128.0] for a, b, c in rows], np.float32)


def _af_mode(name: str, fallback: int) -> Any:
    """libcamera's AfModeEnum member when libcamera is importable, else its integer value."""
    try:
        from libcamera import controls
    except ImportError:
        return fallback
    return getattr(controls.AfModeEnum, name)
