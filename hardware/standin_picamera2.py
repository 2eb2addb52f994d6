"""A stand-in for the `picamera2` module, for the subset of its API that our backend uses.

Same call signatures and the same errors as picamera2 (checked against raspberrypi/picamera2's
picamera2.py, request.py, job.py and controls.py):

- `Picamera2(camera_num=0, verbose_console=None, tuning=None, allocator=None)`, a class on the
  module object as in picamera2, with the static `Picamera2.global_camera_info()` (one dict per
  listed camera: Model, Location, Rotation, Id, Num; nothing is opened) and
  `Picamera2.load_tuning_file(name, dir=None)`. A camera number that is not listed raises
  RuntimeError('No camera number N found - use "rpicam-hello --list-cameras" ...') as 0.3.38
  does; a tuning path that is not a file raises RuntimeError("Camera __init__ sequence did not
  complete."), as libcamera's failure comes out of picamera2. (picamera2 0.3.38 also leaks a
  pipe on each of these; the stand-in counts constructions in `module.constructed` instead.)
- `create_video_configuration(main=..., lores=..., raw=..., colour_space=..., buffer_count=...,
  controls=..., queue=...)` and `create_still_configuration(...)`: the same defaults (formats,
  sizes, buffer counts, colour space, NoiseReductionMode/FrameDurationLimits controls, a raw
  stream unless `raw=None`), "preserve_ar" added, sizes rounded down to even, an unknown stream
  key raises ValueError.
- `configure()`: refused while started; a size that is not an (even) tuple, a lores stream
  bigger than main, or a non-YUV lores on a Pi 4 raise RuntimeError. Afterwards each stream
  configuration carries "stride" and "framesize"; YUV420 rows are padded to the stride (see
  `YUV_STRIDE_ALIGN`), so `make_array` returns the padding as picamera2 does.
- `start()` (configures the preview configuration if none was set), `stop()`, `close()`;
  start() after stop() streams again.
- `capture_request(wait=None, signal_function=None, flush=None)`: `wait=False` returns a job
  (`get_result(timeout)` raises TimeoutError, or CancelledError once cancelled); a number waits
  that long and leaves the job queued on a timeout, as picamera2 >= 0.3.17 does. Jobs are
  served in order; a job is taken off the queue when its frame is due and signalled (result set,
  then `signal_function(job)` with the same job object) after that, so, as in picamera2's
  process_requests, `cancel_all_and_flush()` in between does not cancel it.
- requests: `make_array(name)` (RuntimeError for a stream that is not configured),
  `get_metadata()`, `release()` (a second release raises RuntimeError; using a released request
  raises AttributeError, which is what picamera2 raises since it drops its stream map).
- `cancel_all_and_flush()`: cancels every queued job.
- `set_controls()` refuses controls the camera does not advertise (RuntimeError).

picamera2 runs jobs in order on its event loop and `stop()` is itself a job queued behind them,
so `stop()` (and `close()`, which calls it) blocks forever while a capture job waits for a frame
that will never come. The stand-in cannot hang a test, so it raises `WouldBlockForever` there
instead, after waiting `module.stop_grace_s` for the job to finish.

Deliberately stricter than picamera2: capture while not started raises RuntimeError (picamera2
would wait forever).

Frames are paced as a sensor makes them: frame k (counted across restarts) is due at
t0 + k * frame duration on the module's clock (`clock`, CLOCK_MONOTONIC ns by default), t0 being
one frame after start(), and the frame duration the first value of FrameDurationLimits. With
queue=False, the only way the adapter configures it, a request gets the first frame due at or
after it was queued (the producer waits until then, polling an injected clock so that a test can
move it), and frames that nobody asked for in time are gone, as with a slow consumer on a Pi;
`SensorTimestamp` is the frame's due time, so it is never in the future. While stalled,
disconnected or out of buffers no frame is made, and the next one is the first due afterwards.

Frames come from a source: a callable `source(k) -> RGB array or None`, called with the frame
number (None = no more frames: the camera stalls), or a `Clip`, whose frame k is then shown at
the sensor's frame k. Faults are injected through the module object: `stall()` / `resume()`;
`disconnect()` / `reconnect()` (a pulled cable: the camera stays listed, as libcamera keeps a
probed sensor, but no frame completes and start() fails with an I/O error); `num_cameras = 0`
(booted without a camera: nothing is listed); `fail_next_capture(exc)`.

    module = StandinPicamera2Module(lambda i: image)
    camera = Picamera2Camera(config, picamera2_module=module)
"""
from __future__ import annotations

import copy
import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, InvalidStateError
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .clip import Clip, resize_rgb

FrameSource = Callable[[int], "np.ndarray | None"]

RGB_FORMATS = ("RGB888", "BGR888", "XRGB8888", "XBGR8888")
YUV_FORMATS = ("YUV420", "YVU420", "NV12", "NV21", "YUYV", "UYVY")
MAIN_FORMATS = RGB_FORMATS + ("YUV420", "YVU420")
STREAM_KEYS = ("format", "size", "stride", "preserve_ar")
# Row alignment of YUV420 buffers. Taken from picamera2's align_stream (32 bytes on a Pi 4, 64 on
# a Pi 5, doubled for YUV420); the real kernel drivers may pad more (picamera2 issue #1182 shows a
# Pi 5 lores of width 704 with stride 768), so code must crop to the configured width, never
# assume stride == width.
YUV_STRIDE_ALIGN = {"vc4": 64, "pisp": 128}

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
SENSOR_FORMAT = "SRGGB10_CSI2P"
# libcamera.controls.draft.NoiseReductionModeEnum values picamera2 puts in its default controls.
NR_FAST, NR_HIGH_QUALITY, NR_MINIMAL = 1, 2, 3
# start() while disconnected: a RuntimeError, as picamera2 lets libcamera's failed Camera::start()
# through; the errno text is what a sensor that does not answer should give (not seen on a Pi).
START_IO_ERROR = "Failed to start camera: Input/output error"
# Longest single wait of a frame producer: an injected clock is read again at least this often.
CLOCK_POLL_S = 0.005


class WouldBlockForever(RuntimeError):
    """picamera2 would block forever here (stop()/close() behind a capture job that cannot finish)."""


@dataclass(frozen=True)
class _EnumValue:
    """Plays a pybind11 enum member of libcamera.ColorSpace: has a `.name`."""

    name: str


@dataclass(frozen=True)
class StandinColorSpace:
    """The parts of libcamera.ColorSpace that matter here: YCbCr matrix and range.

    Attribute and factory names are libcamera's Python binding names (camelCase, capitalised).
    """

    primaries: _EnumValue
    transferFunction: _EnumValue
    ycbcrEncoding: _EnumValue
    range: _EnumValue

    @classmethod
    def Sycc(cls) -> StandinColorSpace:
        """sYCC: JPEG-style full-range BT.601 (picamera2's still and preview default)."""
        return cls(_EnumValue("Rec709"), _EnumValue("Srgb"), _EnumValue("Rec601"), _EnumValue("Full"))

    @classmethod
    def Smpte170m(cls) -> StandinColorSpace:
        """SMPTE 170M: limited-range BT.601 (picamera2's video default below 1280x720)."""
        return cls(_EnumValue("Smpte170m"), _EnumValue("Rec709"), _EnumValue("Rec601"), _EnumValue("Limited"))

    @classmethod
    def Rec709(cls) -> StandinColorSpace:
        """Rec.709: limited-range BT.709 (picamera2's video default from 1280x720)."""
        return cls(_EnumValue("Rec709"), _EnumValue("Rec709"), _EnumValue("Rec709"), _EnumValue("Limited"))


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

    def done(self) -> bool:
        """Whether the job has a result (or failed, or was cancelled)."""
        return self._future.done()

    def get_result(self, timeout: float | None = None) -> StandinRequest:
        """The request; TimeoutError when none came in time, CancelledError once cancelled."""
        return self._future.result(timeout=timeout)


class StandinRequest:
    """A completed request: both streams of one exposure plus metadata, until release()."""

    def __init__(self, camera: StandinPicamera2, arrays: dict[str, np.ndarray], metadata: dict[str, Any]) -> None:
        self._camera = camera
        self._arrays: dict[str, np.ndarray] | None = arrays
        self._metadata: dict[str, Any] | None = metadata
        self.released = False

    def make_array(self, name: str) -> np.ndarray:
        """A copy of the named stream's image in its configured layout (YUV rows keep their padding)."""
        arrays = self._live(self._arrays)
        if name not in arrays:
            raise RuntimeError(f"Stream {name!r} is not defined")  # picamera2 request.make_buffer
        return arrays[name].copy()

    def get_metadata(self) -> dict[str, Any]:
        """The frame's metadata (SensorTimestamp, ExposureTime, AnalogueGain, Lux, ...)."""
        return dict(self._live(self._metadata))

    def release(self) -> None:
        """Give the buffers back to the camera."""
        if self.released:
            raise RuntimeError("CompletedRequest: lock now has negative ref_count")
        self.released = True
        self._arrays = self._metadata = None
        self._camera._release_buffer()

    def _live(self, value: Any) -> Any:
        if value is None:
            # picamera2 sets its stream map and request to None on release, so any later use is
            # an AttributeError on None; raise the same type with a message that says why.
            raise AttributeError("CompletedRequest used after release()")
        return value


class StandinPicamera2:
    """One camera from a `StandinPicamera2Module`; see the module docstring.

    Made through `module.Picamera2(...)`, a subclass bound to its module (as picamera2's
    Picamera2 is bound to its process-wide camera manager).
    """

    _module: StandinPicamera2Module  # set on the per-module subclass

    def __init__(self, camera_num: int = 0, verbose_console: int | None = None, tuning: Any = None,
                 allocator: Any = None) -> None:
        module = self._module
        module.constructed += 1
        cameras = module.camera_info()
        if camera_num >= len(cameras):  # picamera2 0.3.38's own test and message
            raise RuntimeError(f'No camera number {camera_num} found - use "rpicam-hello --list-cameras" to '
                               "check connected cameras")
        number = cameras[camera_num]["Num"]  # a negative number past the start: IndexError, as there
        if isinstance(tuning, str) and not os.path.isfile(tuning):
            # picamera2 hands a str to libcamera (LIBCAMERA_RPI_TUNING_FILE), which fails to open
            # the camera; picamera2 reports that as this.
            raise RuntimeError("Camera __init__ sequence did not complete.")
        self.camera_idx = number
        self.tuning = tuning
        self.allocator = allocator
        self.sensor_resolution = SENSOR_RESOLUTION
        self.sensor_format = SENSOR_FORMAT
        self.camera_config: dict[str, Any] | None = None
        self.started = False
        self.is_open = True
        self._controls: dict[str, Any] = {}
        self._lock = threading.Condition()
        self._jobs: list[Future[StandinRequest]] = []  # queued capture jobs, oldest first
        self._outstanding = 0
        # Frame schedule: frame k is due at _t0_ns + (k - _k0) * _frame_ns (see the module docstring).
        self._next_frame = 0  # the first frame no request has taken yet
        self._k0 = 0
        self._t0_ns = 0
        self._frame_ns = 33_333_000
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

    @staticmethod
    def _stream(defaults: dict[str, Any], updates: dict[str, Any] | None) -> dict[str, Any] | None:
        """picamera2's _make_initial_stream_config + align_stream(optimal=False)."""
        if updates is None:
            return None
        stream = dict(defaults)
        for key, value in updates.items():
            if key not in STREAM_KEYS:
                raise ValueError(f"Bad key {key!r}: valid stream configuration keys are {STREAM_KEYS}")
            stream[key] = value
        width, height = stream["size"]
        stream["size"] = (width - width % 2, height - height % 2)
        return stream

    def _make_config(self, use_case: str, main: dict[str, Any], lores: dict[str, Any] | None,
                     raw: dict[str, Any] | None, main_defaults: dict[str, Any], colour_space: Any,
                     buffer_count: int, default_controls: dict[str, Any], controls: dict[str, Any] | None,
                     display: str | None, encode: str | None, queue: bool) -> dict[str, Any]:
        main_cfg = self._stream(main_defaults, main)
        assert main_cfg is not None
        lores_cfg = self._stream({"format": "YUV420", "size": main_cfg["size"], "preserve_ar": False}, lores)
        raw_cfg = None if raw is None else {"format": SENSOR_FORMAT, "size": main_cfg["size"], **raw}
        return {
            "use_case": use_case,
            "transform": None,
            "colour_space": colour_space,
            "buffer_count": buffer_count,
            "queue": queue,
            "main": main_cfg,
            "lores": lores_cfg,
            "raw": raw_cfg,
            "controls": default_controls | dict(controls or {}),
            "sensor": {},
            "display": display,
            "encode": encode,
        }

    def create_video_configuration(self, main: dict[str, Any] | None = None, lores: dict[str, Any] | None = None,
                                   raw: dict[str, Any] | None = {},  # noqa: B006 - picamera2's default: raw on
                                   transform: Any = None, colour_space: Any = None, buffer_count: int = 6,
                                   controls: dict[str, Any] | None = None, display: str | None = "main",
                                   encode: str | None = "main", queue: bool = True,
                                   sensor: dict[str, Any] | None = None, use_case: str = "video") -> dict[str, Any]:
        """A configuration dict for streaming, as picamera2 makes it."""
        main_cfg = self._stream({"format": "XBGR8888", "size": (1280, 720), "preserve_ar": True}, main or {})
        assert main_cfg is not None
        if colour_space is None:  # picamera2 picks the colour space from the main stream's size
            small = main_cfg["size"][0] < 1280 or main_cfg["size"][1] < 720
            colour_space = StandinColorSpace.Smpte170m() if small else StandinColorSpace.Rec709()
        return self._make_config(use_case, main or {}, lores, raw,
                                 {"format": "XBGR8888", "size": (1280, 720), "preserve_ar": True}, colour_space,
                                 buffer_count, {"NoiseReductionMode": NR_FAST, "FrameDurationLimits": (33333, 33333)},
                                 controls, display, encode, queue)

    def create_still_configuration(self, main: dict[str, Any] | None = None, lores: dict[str, Any] | None = None,
                                   raw: dict[str, Any] | None = {},  # noqa: B006 - picamera2's default: raw on
                                   transform: Any = None, colour_space: Any = None, buffer_count: int = 1,
                                   controls: dict[str, Any] | None = None, display: str | None = None,
                                   encode: str | None = None, queue: bool = True,
                                   sensor: dict[str, Any] | None = None, use_case: str = "still") -> dict[str, Any]:
        """A configuration dict for full-resolution stills, as picamera2 makes it."""
        return self._make_config(use_case, main or {}, lores, raw,
                                 {"format": "BGR888", "size": SENSOR_RESOLUTION, "preserve_ar": True},
                                 colour_space or StandinColorSpace.Sycc(), buffer_count,
                                 {"NoiseReductionMode": NR_HIGH_QUALITY, "FrameDurationLimits": (100, 1000000 * 1000)},
                                 controls, display, encode, queue)

    def create_preview_configuration(self, main: dict[str, Any] | None = None,
                                     lores: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        """A small preview configuration, as picamera2 makes it."""
        return self._make_config("preview", main or {}, lores, kwargs.get("raw", {}),
                                 {"format": "XBGR8888", "size": (640, 480), "preserve_ar": True},
                                 kwargs.get("colour_space") or StandinColorSpace.Sycc(), kwargs.get("buffer_count", 4),
                                 {"NoiseReductionMode": NR_MINIMAL, "FrameDurationLimits": (100, 83333)},
                                 kwargs.get("controls"), "main", "main", kwargs.get("queue", True))

    def configure(self, camera_config: dict[str, Any] | str | None = None) -> None:
        """Validate and apply a configuration; refused while started, like picamera2."""
        self._check_open()
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        if camera_config is None or isinstance(camera_config, str):
            camera_config = self.create_preview_configuration()
        config = copy.deepcopy(camera_config)
        main, lores = config.get("main"), config.get("lores")
        self._check_stream(main, "main")
        if lores is not None:
            self._check_stream(lores, "lores")
            if lores["size"][0] > main["size"][0] or lores["size"][1] > main["size"][1]:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
            if self._module.platform == "vc4" and lores["format"] not in YUV_FORMATS:
                raise RuntimeError("lores stream must be YUV")
        for name in config.get("controls", {}):
            self._check_control(name)
        for name in ("main", "lores"):
            if config.get(name) is not None:
                self._add_layout(config[name])
        self.camera_config = config
        self._controls = dict(config.get("controls", {}))

    def _check_stream(self, stream: Any, name: str) -> None:
        """picamera2's check_stream_config, for the formats the stand-in produces."""
        if type(stream) is not dict:
            raise RuntimeError(name + " stream should be a dictionary")
        if stream.get("format") not in MAIN_FORMATS and stream.get("format") not in YUV_FORMATS:
            raise RuntimeError(f"Bad format {stream.get('format')} in stream {name}")
        size = stream.get("size")
        if type(size) is not tuple or len(size) != 2:
            raise RuntimeError("size in " + name + " stream should be (width, height)")
        if size[0] % 2 or size[1] % 2:
            raise RuntimeError("width and height should be even")

    def _add_layout(self, stream: dict[str, Any]) -> None:
        """Fill in stride and framesize as picamera2 does after libcamera validated the streams."""
        width, height = stream["size"]
        fmt = stream["format"]
        if fmt in ("YUV420", "YVU420"):
            align = YUV_STRIDE_ALIGN[self._module.platform]
            stride = -(-width // align) * align
            stream["stride"], stream["framesize"] = stride, stride * height * 3 // 2
        else:
            stride = width * (4 if fmt.startswith("X") else 3)
            stream["stride"], stream["framesize"] = stride, stride * height

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
        if self._module.faults.disconnected:
            raise RuntimeError(START_IO_ERROR)
        with self._lock:
            self._frame_ns = self._duration_ns()
            self._k0 = self._next_frame
            self._t0_ns = self._module.clock() + self._frame_ns  # the first exposure takes a frame
            self.started = True

    def stop(self) -> None:
        """Stop streaming; a no-op if not started. Raises WouldBlockForever where picamera2 hangs."""
        if not self.started:
            return
        with self._lock:
            pending = [job for job in self._jobs if not job.done()]
        if pending:
            # A job that is merely waiting for its frame finishes within a frame period.
            grace = self._module.stop_grace_s + self._frame_ns / 1e9
            _, not_done = wait_futures(pending, timeout=grace)
            if not_done:
                raise WouldBlockForever(
                    "picamera2's stop() is a job queued behind pending capture jobs; with no frame coming "
                    "it blocks forever: call cancel_all_and_flush() first")
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

    def cancel_all_and_flush(self) -> None:
        """Cancel every queued job (their get_result raises CancelledError), as picamera2 does."""
        with self._lock:
            jobs, self._jobs = self._jobs, []
            for job in jobs:
                if not job.done():
                    job.set_exception(CancelledError())
            self._lock.notify_all()

    def set_controls(self, controls: dict[str, Any]) -> None:
        """Set controls for the following frames; unknown names raise like picamera2."""
        self._check_open()
        for name in controls:
            self._check_control(name)
        with self._lock:
            if self.started and "FrameDurationLimits" in controls:
                # The new frame rate starts at the next frame: re-anchor the schedule there.
                k = max(self._next_frame, self._first_due_at(self._module.clock()))
                self._t0_ns, self._k0 = self._due(k), k
                self._controls.update(controls)
                self._frame_ns = self._duration_ns()
            else:
                self._controls.update(controls)
            self._lock.notify_all()
        self._module.control_log.append(dict(controls))

    def capture_request(self, wait: bool | float | None = None,
                        signal_function: Callable[[Any], None] | None = None,
                        flush: Any = None) -> StandinRequest | StandinJob:
        """The next completed request (wait=None/True), a job (wait=False), or wait `wait` seconds."""
        self._check_open()
        if not self.started:
            raise RuntimeError("Camera is not started: call start() before capture_request()")
        future: Future[StandinRequest] = Future()
        job = StandinJob(future)
        with self._lock:
            queued_ns = self._module.clock()
            self._jobs.append(future)
        thread = threading.Thread(target=self._produce, args=(job, queued_ns, signal_function), daemon=True,
                                  name="standin-picamera2-frame")
        thread.start()
        if wait is None:
            wait = signal_function is None
        if wait is False:
            return job
        # A number is a timeout (picamera2's dispatch_functions); on TimeoutError the job stays queued.
        return job.get_result(timeout=None if wait is True else float(wait))

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

    def _forget(self, future: Future[StandinRequest]) -> None:
        with self._lock:
            if future in self._jobs:
                self._jobs.remove(future)

    def _duration_ns(self) -> int:
        return max(1, int(self._controls.get("FrameDurationLimits", (33333, 33333))[0])) * 1000

    def _due(self, k: int) -> int:
        return self._t0_ns + (k - self._k0) * self._frame_ns

    def _first_due_at(self, t_ns: int) -> int:
        """The number of the first frame due at or after `t_ns`."""
        return self._k0 + max(0, -(-(t_ns - self._t0_ns) // self._frame_ns))

    def _produce(self, job: StandinJob, queued_ns: int,
                 signal_function: Callable[[Any], None] | None) -> None:
        """Deliver the first frame due at or after `queued_ns` (or after a stall ended)."""
        future = job._future
        faults = self._module.faults
        clock = self._module.clock
        try:
            with faults.lock:
                error, faults.next_error = faults.next_error, None
            if error is not None:
                raise error
            config = self.camera_config or {}
            since: int | None = queued_ns  # frames before this are not this job's
            with self._lock:
                while True:
                    if not self.is_open or future.done():
                        return  # closed or cancelled: the job never completes (or already failed)
                    if (not self.started or self._outstanding >= config.get("buffer_count", 1)
                            or faults.stalled.is_set() or faults.disconnected):
                        # No frame is made while stopped, stalled, unplugged or with every buffer held
                        # by the application; the next one is the first due once that is over (a job
                        # queued before stop() stays queued, as in picamera2).
                        since = None
                        self._lock.wait(CLOCK_POLL_S)
                        continue
                    now = clock()
                    if since is None:
                        since = now
                    if self._jobs and self._jobs[0] is not future:
                        self._lock.wait(CLOCK_POLL_S)  # an earlier job is served first
                        continue
                    k = max(self._next_frame, self._first_due_at(since))
                    due = self._due(k)
                    if now >= due:
                        break
                    self._lock.wait(min((due - now) / 1e9, CLOCK_POLL_S))
                # Taken off the queue now; signalled below, outside the lock, as picamera2 does.
                self._jobs.remove(future)
                self._next_frame = k + 1
                self._outstanding += 1
                self._lock.notify_all()
            rgb = self._module.source(k)
            if rgb is None:
                with self._lock:
                    self._outstanding -= 1
                faults.stalled.set()  # out of frames: nothing more will ever complete
                return
            request = self._build_request(rgb, due)
            try:
                future.set_result(request)
            except InvalidStateError:  # failed or cancelled meanwhile: hand the buffer back
                request.release()
                return
            if signal_function is not None:
                signal_function(job)
        except BaseException as exc:  # noqa: BLE001 - delivered to the waiter, as picamera2's Job does
            self._forget(future)
            if not future.done():
                future.set_exception(exc)

    def _build_request(self, rgb: np.ndarray, sensor_ns: int) -> StandinRequest:
        config = self.camera_config or {}
        colour_space = config.get("colour_space") or StandinColorSpace.Sycc()
        main_cfg = config["main"]
        main_rgb = resize_rgb(np.ascontiguousarray(rgb, dtype=np.uint8), tuple(main_cfg["size"]))
        arrays = {"main": _encode(main_rgb, main_cfg, colour_space)}
        if config.get("lores") is not None:
            lores_cfg = config["lores"]
            arrays["lores"] = _encode(resize_rgb(main_rgb, tuple(lores_cfg["size"])), lores_cfg, colour_space)
        duration = self._controls.get("FrameDurationLimits", (33333, 33333))[0]
        exposure = self._controls.get("ExposureTime", min(duration, 20000))
        gain = float(self._controls.get("AnalogueGain", 1.0))
        metadata = {
            "SensorTimestamp": int(sensor_ns),
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


# Kr, Kb of the YCbCr matrices libcamera colour spaces use.
_KR_KB = {"Rec601": (0.299, 0.114), "Rec709": (0.2126, 0.0722), "Rec2020": (0.2627, 0.0593)}


def _encode(rgb: np.ndarray, stream: dict[str, Any], colour_space: Any) -> np.ndarray:
    """RGB image -> the array picamera2's make_array returns for this stream."""
    fmt = stream["format"]
    if fmt == "RGB888":  # picamera2/libcamera naming: pixels are [B, G, R] in memory
        return np.ascontiguousarray(rgb[..., ::-1])
    if fmt == "BGR888":  # pixels are [R, G, B]
        return rgb.copy()
    if fmt in ("XBGR8888", "XRGB8888"):
        alpha = np.full(rgb.shape[:2] + (1,), 255, dtype=np.uint8)
        order = rgb if fmt == "XBGR8888" else rgb[..., ::-1]
        return np.ascontiguousarray(np.concatenate([order, alpha], axis=2))
    if fmt in ("YUV420", "YVU420"):
        return _encode_yuv420(rgb, stream["stride"], colour_space, swap_uv=fmt == "YVU420")
    raise RuntimeError(f"stand-in cannot produce format {fmt}")


def _encode_yuv420(rgb: np.ndarray, stride: int, colour_space: Any, swap_uv: bool) -> np.ndarray:
    """Planar 4:2:0 in `colour_space`, each row padded to `stride` (chroma to stride / 2), as
    make_array returns it: shape (h * 3 / 2, stride), padding bytes left at 0."""
    kr, kb = _KR_KB[colour_space.ycbcrEncoding.name]
    full = colour_space.range.name == "Full"
    rgbf = rgb.astype(np.float32) / 255.0
    y = kr * rgbf[..., 0] + (1.0 - kr - kb) * rgbf[..., 1] + kb * rgbf[..., 2]
    cb = (rgbf[..., 2] - y) / (2.0 * (1.0 - kb))
    cr = (rgbf[..., 0] - y) / (2.0 * (1.0 - kr))
    y8 = y * 255.0 if full else 16.0 + 219.0 * y
    cb8, cr8 = (128.0 + (255.0 if full else 224.0) * c for c in (cb, cr))
    height, width = rgb.shape[:2]
    half = (width // 2, height // 2)
    planes = [np.clip(np.rint(p), 0, 255).astype(np.uint8) for p in (
        y8, cv2.resize(cb8, half, interpolation=cv2.INTER_AREA), cv2.resize(cr8, half, interpolation=cv2.INTER_AREA))]
    if swap_uv:
        planes[1], planes[2] = planes[2], planes[1]
    out = np.zeros(stride * height * 3 // 2, np.uint8)
    out[:stride * height].reshape(height, stride)[:, :width] = planes[0]
    chroma = (height // 2) * (stride // 2)
    for i, plane in enumerate(planes[1:]):
        start = stride * height + i * chroma
        out[start:start + chroma].reshape(height // 2, stride // 2)[:, :width // 2] = plane
    return out.reshape(height * 3 // 2, stride)


class StandinPicamera2Module:
    """Plays the role of the `picamera2` module: `module.Picamera2(...)` makes a camera.

    source: a callable `index -> RGB array or None`, or a Clip.
    platform: "vc4" (Pi 4 and older: lores must be YUV) or "pisp" (Pi 5).
    num_cameras: how many cameras libcamera lists (0: booted without one); may be changed.
    stop_grace_s: how long stop() waits for a queued capture job before raising WouldBlockForever.
    clock: the sensor's clock, ns (CLOCK_MONOTONIC by default, as SensorTimestamp on a Pi).
    tuning_files: what `Picamera2.load_tuning_file(name)` finds, by file name.
    """

    Picamera2: type[StandinPicamera2]

    def __init__(self, source: FrameSource | Clip, *, platform: str = "vc4", num_cameras: int = 1,
                 stop_grace_s: float = 0.5, clock: Callable[[], int] = time.monotonic_ns,
                 tuning_files: dict[str, dict[str, Any]] | None = None) -> None:
        if platform not in YUV_STRIDE_ALIGN:
            raise ValueError(f"platform: one of {', '.join(YUV_STRIDE_ALIGN)}, got {platform!r}")
        self.source: FrameSource = clip_source(source) if isinstance(source, Clip) else source
        self.platform = platform
        self.num_cameras = num_cameras
        self.stop_grace_s = stop_grace_s
        self.clock = clock
        self.tuning_files = dict(tuning_files or {})
        self.faults = _Faults()
        self.opened: list[StandinPicamera2] = []
        self.closed_count = 0
        self.constructed = 0  # Picamera2() calls, failed ones included
        self.control_log: list[dict[str, Any]] = []
        # picamera2.Picamera2 is a class with static methods; here it is one bound to this module.
        self.Picamera2 = type("Picamera2", (StandinPicamera2,), {
            "_module": self,
            "global_camera_info": staticmethod(self.camera_info),
            "load_tuning_file": staticmethod(self.load_tuning_file),
        })

    def camera_info(self) -> list[dict[str, Any]]:
        """What `Picamera2.global_camera_info()` returns: the listed cameras, in picamera2's order
        (sorted by Id, descending, USB cameras last). Opens nothing."""
        cameras = [{"Model": "imx708", "Location": 2, "Rotation": 180,
                    "Id": f"/base/soc/i2c0mux/i2c@{num}/imx708@1a", "Num": num} for num in range(self.num_cameras)]
        return sorted(cameras, key=lambda cam: ("/usb" not in cam["Id"], cam["Id"]), reverse=True)

    def load_tuning_file(self, tuning_file: str, dir: str | None = None) -> dict[str, Any]:
        """What `Picamera2.load_tuning_file` returns: `tuning_files[name]`, or the JSON file in
        `dir`; RuntimeError("Tuning file not found") otherwise, as picamera2 raises."""
        if dir is not None:
            path = os.path.join(dir, tuning_file)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as fp:
                    return dict(json.load(fp))
        elif tuning_file in self.tuning_files:
            return copy.deepcopy(self.tuning_files[tuning_file])
        raise RuntimeError("Tuning file not found")

    # ---- fault injection -----------------------------------------------------------------------
    def stall(self) -> None:
        """No frame completes until resume()."""
        self.faults.stalled.set()

    def resume(self) -> None:
        """Frames flow again."""
        self.faults.stalled.clear()

    def disconnect(self) -> None:
        """A pulled cable: frames stop and start() fails, until reconnect(). The camera stays
        listed (libcamera keeps a sensor probed at boot), so Picamera2() still succeeds."""
        self.faults.disconnected = True

    def reconnect(self) -> None:
        """The camera is back."""
        self.faults.disconnected = False

    def fail_next_capture(self, error: BaseException) -> None:
        """The next capture_request raises `error` (delivered like a failed job)."""
        with self.faults.lock:
            self.faults.next_error = error
