"""A stand-in for the `picamera2` module, for the subset of its API that our backend uses.

Same call signatures and the same errors as picamera2 where it has them:
`Picamera2(camera_num=0, tuning=None)`, `create_video_configuration(main=..., lores=...,
buffer_count=..., controls=..., queue=...)`, `create_still_configuration(...)`, `configure()`
(refused while started), `start()` (configures the preview configuration if none was set, as
picamera2 does), `capture_request(wait=None, signal_function=None, flush=None)` returning a
request with `make_array(name)`, `get_metadata()`, `release()`, or a job with
`get_result(timeout)` when `wait=False`; `set_controls()` refuses controls the camera does not
advertise; `stop()`, `close()`.

Deliberately stricter than picamera2: capture while not started raises RuntimeError (picamera2
would wait forever), and using a released request raises.

Frames come from a source: a callable `source(index) -> RGB array or None` (None = no more
frames: the camera stalls), or a `Clip`. Faults are injected through the module object:
`stall()` / `resume()`, `disconnect()` / `reconnect()`, `fail_next_capture(exc)`.

    module = StandinPicamera2Module(lambda i: image)
    camera = Picamera2Camera(config, picamera2_module=module)
"""
from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import cv2
import numpy as np

from .clip import Clip, resize_rgb

FrameSource = Callable[[int], "np.ndarray | None"]

MAIN_FORMATS = ("RGB888", "BGR888", "XRGB8888", "XBGR8888", "YUV420")
YUV_FORMATS = ("YUV420", "YVU420", "NV12", "NV21", "YUYV", "UYVY")

# name -> (min, max, default), as Picamera2.camera_controls reports them for an IMX708 (Module 3).
CAMERA_CONTROLS: dict[str, tuple[Any, Any, Any]] = {
    "ExposureTime": (26, 112015443, 20000),
    "AnalogueGain": (1.0, 16.0, 1.0),
    "AeEnable": (False, True, True),
    "AwbEnable": (False, True, True),
    "FrameDurationLimits": (33333, 120000, 33333),
    "AfMode": (0, 2, 0),
    "LensPosition": (0.0, 15.0, 1.0),
    "Brightness": (-1.0, 1.0, 0.0),
    "Contrast": (0.0, 32.0, 1.0),
    "Sharpness": (0.0, 16.0, 1.0),
    "NoiseReductionMode": (0, 4, 0),
    "ExposureValue": (-8.0, 8.0, 0.0),
}
SENSOR_RESOLUTION = (4608, 2592)


def clip_source(clip: Clip) -> FrameSource:
    """A frame source that yields the clip's frames in order, then None."""

    def source(index: int) -> np.ndarray | None:
        return clip.read_main(index) if index < len(clip) else None

    return source


class _Faults:
    """Fault injection shared by all cameras made from one module object."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stalled = threading.Event()
        self.disconnected = False
        self.next_error: BaseException | None = None


class StandinJob:
    """What capture_request(wait=False) returns: get_result(timeout) like picamera2's Job."""

    def __init__(self, future: Future[StandinRequest]) -> None:
        self._future = future

    def get_result(self, timeout: float | None = None) -> StandinRequest:
        """The request; raises TimeoutError (concurrent.futures') when none came in time."""
        return self._future.result(timeout=timeout)


class StandinRequest:
    """A completed request: both streams of one exposure plus metadata, until release()."""

    def __init__(self, camera: StandinPicamera2, arrays: dict[str, np.ndarray], metadata: dict[str, Any]) -> None:
        self._camera = camera
        self._arrays = arrays
        self._metadata = metadata
        self.released = False

    def make_array(self, name: str) -> np.ndarray:
        """A copy of the named stream's image in its configured format."""
        self._check()
        if name not in self._arrays:
            raise KeyError(name)  # picamera2 looks the name up in its stream map
        return self._arrays[name].copy()

    def get_metadata(self) -> dict[str, Any]:
        """The frame's metadata (SensorTimestamp, ExposureTime, AnalogueGain, Lux, ...)."""
        self._check()
        return dict(self._metadata)

    def release(self) -> None:
        """Give the buffers back to the camera."""
        if self.released:
            raise RuntimeError("CompletedRequest: lost track of ref count")
        self.released = True
        self._camera._release_buffer()

    def _check(self) -> None:
        if self.released:
            raise RuntimeError("CompletedRequest: request used after release()")


class StandinPicamera2:
    """One camera from a `StandinPicamera2Module`; see the module docstring."""

    def __init__(self, module: StandinPicamera2Module, camera_num: int = 0, tuning: Any = None) -> None:
        if module.faults.disconnected or camera_num >= module.num_cameras:
            raise RuntimeError("Camera __init__ sequence did not complete.")
        self._module = module
        self.camera_idx = camera_num
        self.sensor_resolution = SENSOR_RESOLUTION
        self.camera_config: dict[str, Any] | None = None
        self.started = False
        self.is_open = True
        self._controls: dict[str, Any] = {}
        self._lock = threading.Condition()
        self._outstanding = 0
        self._sequence = 0
        self._t0_ns = 0
        self.released_count = 0
        module.opened.append(self)

    # ---- configuration --------------------------------------------------------------------
    @property
    def camera_controls(self) -> dict[str, tuple[Any, Any, Any]]:
        """Advertised controls: name -> (min, max, default)."""
        return dict(CAMERA_CONTROLS)

    @property
    def camera_properties(self) -> dict[str, Any]:
        """Sensor properties (Model, PixelArraySize)."""
        return {"Model": "imx708_standin", "PixelArraySize": SENSOR_RESOLUTION}

    def _make_config(self, main: dict[str, Any] | None, lores: dict[str, Any] | None, raw: Any,
                     default_format: str, default_size: tuple[int, int], buffer_count: int,
                     controls: dict[str, Any] | None, queue: bool, display: str | None,
                     encode: str | None, use_case: str) -> dict[str, Any]:
        main_cfg: dict[str, Any] = {"format": default_format, "size": default_size}
        main_cfg.update(main or {})
        lores_cfg = None
        if lores is not None:
            lores_cfg = {"format": "YUV420", "size": main_cfg["size"]}
            lores_cfg.update(lores)
        return {
            "use_case": use_case,
            "main": main_cfg,
            "lores": lores_cfg,
            "raw": raw,
            "buffer_count": buffer_count,
            "queue": queue,
            "display": display,
            "encode": encode,
            "controls": dict(controls or {}),
        }

    def create_video_configuration(self, main: dict[str, Any] | None = None, lores: dict[str, Any] | None = None,
                                   raw: Any = None, transform: Any = None, colour_space: Any = None,
                                   buffer_count: int = 6, controls: dict[str, Any] | None = None,
                                   display: str | None = "main", encode: str | None = "main",
                                   queue: bool = True, sensor: dict[str, Any] | None = None,
                                   use_case: str = "video") -> dict[str, Any]:
        """A configuration dict for streaming, as picamera2 makes it."""
        return self._make_config(main, lores, raw, "XBGR8888", (1280, 720), buffer_count, controls, queue,
                                 display, encode, use_case)

    def create_still_configuration(self, main: dict[str, Any] | None = None, lores: dict[str, Any] | None = None,
                                   raw: Any = None, transform: Any = None, colour_space: Any = None,
                                   buffer_count: int = 1, controls: dict[str, Any] | None = None,
                                   display: str | None = None, encode: str | None = None,
                                   queue: bool = True, sensor: dict[str, Any] | None = None,
                                   use_case: str = "still") -> dict[str, Any]:
        """A configuration dict for full-resolution stills, as picamera2 makes it."""
        return self._make_config(main, lores, raw, "BGR888", SENSOR_RESOLUTION, buffer_count, controls, queue,
                                 display, encode, use_case)

    def create_preview_configuration(self, main: dict[str, Any] | None = None,
                                     lores: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        """A small preview configuration, as picamera2 makes it."""
        return self._make_config(main, lores, None, "XBGR8888", (640, 480), kwargs.get("buffer_count", 4),
                                 kwargs.get("controls"), kwargs.get("queue", True), "main", None, "preview")

    def configure(self, camera_config: dict[str, Any] | str = "preview") -> None:
        """Validate and apply a configuration; refused while started, like picamera2."""
        self._check_open()
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        if isinstance(camera_config, str):
            camera_config = self.create_preview_configuration()
        config = copy.deepcopy(camera_config)
        main, lores = config.get("main"), config.get("lores")
        if not main or main.get("format") not in MAIN_FORMATS:
            raise RuntimeError(f"Invalid camera configuration: main format {main and main.get('format')}")
        if lores is not None:
            if lores.get("format") not in YUV_FORMATS and self._module.platform == "vc4":
                raise RuntimeError("lores stream must be YUV")
            if lores["size"][0] > main["size"][0] or lores["size"][1] > main["size"][1]:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
        for name in config.get("controls", {}):
            self._check_control(name)
        self.camera_config = config
        self._controls = dict(config.get("controls", {}))

    def stream_configuration(self, name: str = "main") -> dict[str, Any]:
        """The named stream's configuration."""
        if self.camera_config is None:
            raise RuntimeError("Camera has not been configured")
        return self.camera_config[name]

    def camera_configuration(self) -> dict[str, Any] | None:
        """The whole configuration."""
        return self.camera_config

    # ---- running ---------------------------------------------------------------------------
    def start(self, config: dict[str, Any] | None = None, show_preview: bool | None = False) -> None:
        """Start streaming (configures the preview configuration first if none was set)."""
        self._check_open()
        if self.camera_config is None and config is None:
            config = self.create_preview_configuration()
        if config is not None:
            self.configure(config)
        if self.started:
            return
        self._t0_ns = time.monotonic_ns()
        self.started = True

    def stop(self) -> None:
        """Stop streaming; a no-op if not started."""
        self.started = False
        with self._lock:
            self._lock.notify_all()

    def close(self) -> None:
        """Stop and release the camera. Safe to call twice."""
        if self.started:
            self.stop()
        if self.is_open:
            self.is_open = False
            self._module.closed_count += 1
            self._module.opened.remove(self)

    def set_controls(self, controls: dict[str, Any]) -> None:
        """Set controls for the following frames; unknown names raise like picamera2."""
        self._check_open()
        for name in controls:
            self._check_control(name)
        self._controls.update(controls)
        self._module.control_log.append(dict(controls))

    def capture_request(self, wait: bool | None = None, signal_function: Callable[[Any], None] | None = None,
                        flush: Any = None) -> StandinRequest | StandinJob:
        """The next completed request (wait=None/True), or a job to wait on (wait=False)."""
        self._check_open()
        if not self.started:
            raise RuntimeError("Camera is not started: call start() before capture_request()")
        future: Future[StandinRequest] = Future()
        thread = threading.Thread(target=self._produce, args=(future, signal_function), daemon=True,
                                  name="standin-picamera2-frame")
        thread.start()
        if wait is None:
            wait = signal_function is None
        job = StandinJob(future)
        return job.get_result() if wait else job

    # ---- internals ---------------------------------------------------------------------------
    def _check_open(self) -> None:
        if not self.is_open:
            raise RuntimeError("Camera is closed")

    def _check_control(self, name: str) -> None:
        if name not in CAMERA_CONTROLS:
            raise RuntimeError(f"Control {name} is not advertised by libcamera")

    def _release_buffer(self) -> None:
        with self._lock:
            self._outstanding -= 1
            self.released_count += 1
            self._lock.notify_all()

    def _produce(self, future: Future[StandinRequest], signal_function: Callable[[Any], None] | None) -> None:
        """Make the next request; blocks while stalled, disconnected or out of buffers."""
        faults = self._module.faults
        try:
            with faults.lock:
                error, faults.next_error = faults.next_error, None
            if error is not None:
                raise error
            config = self.camera_config or {}
            with self._lock:
                # All buffers held by the application: the pipeline stalls, as on a Pi.
                while self.started and (self._outstanding >= config.get("buffer_count", 1)
                                        or faults.stalled.is_set() or faults.disconnected):
                    self._lock.wait(0.01)
                if not self.started:
                    return  # the job never completes, as when picamera2 stops under a pending job
                self._outstanding += 1
                index = self._sequence
                self._sequence += 1
            rgb = self._module.source(index)
            if rgb is None:
                with self._lock:
                    self._outstanding -= 1
                faults.stalled.set()  # out of frames: nothing more will ever complete
                return
            future.set_result(self._build_request(rgb, index))
            if signal_function is not None:
                signal_function(StandinJob(future))
        except BaseException as exc:  # noqa: BLE001 - delivered to the waiter, as picamera2's Job does
            if not future.done():
                future.set_exception(exc)

    def _build_request(self, rgb: np.ndarray, index: int) -> StandinRequest:
        config = self.camera_config or {}
        main_cfg = config["main"]
        main_rgb = resize_rgb(np.ascontiguousarray(rgb, dtype=np.uint8), tuple(main_cfg["size"]))
        arrays = {"main": _encode(main_rgb, main_cfg["format"])}
        if config.get("lores") is not None:
            lores_cfg = config["lores"]
            arrays["lores"] = _encode(resize_rgb(main_rgb, tuple(lores_cfg["size"])), lores_cfg["format"])
        duration = self._controls.get("FrameDurationLimits", (33333, 33333))[0]
        exposure = self._controls.get("ExposureTime", min(duration, 20000))
        gain = float(self._controls.get("AnalogueGain", 1.0))
        metadata = {
            "SensorTimestamp": self._t0_ns + index * int(duration) * 1000,
            "ExposureTime": int(exposure),
            "AnalogueGain": gain,
            "DigitalGain": 1.0,
            "Lux": float(main_rgb.mean()) * 10000.0 / max(1, int(exposure)) / gain,
            "FrameDuration": int(duration),
            "ColourTemperature": 5000,
            "SensorTemperature": 40.0,
        }
        if "LensPosition" in self._controls:
            metadata["LensPosition"] = float(self._controls["LensPosition"])
        return StandinRequest(self, arrays, metadata)


def _encode(rgb: np.ndarray, fmt: str) -> np.ndarray:
    """RGB image -> the memory layout picamera2 returns for `fmt`."""
    if fmt == "RGB888":  # picamera2/libcamera naming: pixels are [B, G, R] in memory
        return np.ascontiguousarray(rgb[..., ::-1])
    if fmt == "BGR888":  # pixels are [R, G, B]
        return rgb.copy()
    if fmt in ("XBGR8888", "XRGB8888"):
        alpha = np.full(rgb.shape[:2] + (1,), 255, dtype=np.uint8)
        order = rgb if fmt == "XBGR8888" else rgb[..., ::-1]
        return np.ascontiguousarray(np.concatenate([order, alpha], axis=2))
    if fmt == "YUV420":  # planar I420, (h * 3 / 2, w)
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    raise RuntimeError(f"stand-in cannot produce format {fmt}")


class StandinPicamera2Module:
    """Plays the role of the `picamera2` module: `module.Picamera2(...)` makes a camera.

    source: a callable `index -> RGB array or None`, or a Clip.
    platform: "vc4" (Pi 4 and older: lores must be YUV) or "pisp" (Pi 5).
    """

    def __init__(self, source: FrameSource | Clip, *, platform: str = "vc4", num_cameras: int = 1) -> None:
        self.source: FrameSource = clip_source(source) if isinstance(source, Clip) else source
        self.platform = platform
        self.num_cameras = num_cameras
        self.faults = _Faults()
        self.opened: list[StandinPicamera2] = []
        self.closed_count = 0
        self.control_log: list[dict[str, Any]] = []

    def Picamera2(self, camera_num: int = 0, tuning: Any = None) -> StandinPicamera2:
        """Open a stand-in camera, like `picamera2.Picamera2(camera_num)`."""
        return StandinPicamera2(self, camera_num, tuning)

    # ---- fault injection -----------------------------------------------------------------------
    def stall(self) -> None:
        """No frame completes until resume()."""
        self.faults.stalled.set()

    def resume(self) -> None:
        """Frames flow again."""
        self.faults.stalled.clear()

    def disconnect(self) -> None:
        """Frames stop and opening a camera fails until reconnect()."""
        self.faults.disconnected = True

    def reconnect(self) -> None:
        """The camera is back."""
        self.faults.disconnected = False

    def fail_next_capture(self, error: BaseException) -> None:
        """The next capture_request raises `error` (delivered like a failed job)."""
        with self.faults.lock:
            self.faults.next_error = error
