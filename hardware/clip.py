"""The recorded-clip format: reader (`Clip.load`) and writer (`ClipWriter`).

A clip is a directory::

    clip.json            metadata, frame list, GPIO trigger events, ground truth
    frames/000001.jpg    the main stream as a JPEG sequence (RGB, full resolution)

See docs/clips.md for every field. Loading validates everything and raises `ClipError` naming
the file and the field ("clip.json: frames[12].t_ns: must be an int greater than the previous").
"""
from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import cv2
import numpy as np

from .errors import ClipError

FORMAT_NAME = "alpr-clip"
FORMAT_VERSION = 1
CLIP_JSON = "clip.json"
EDGES = ("rising", "falling")
BCM_PINS = range(28)
_FRAME_NAME = re.compile(r"^frames/[A-Za-z0-9_.-]+\.(jpg|jpeg)$")


@dataclass(frozen=True)
class CameraSettings:
    """How the clip was captured. Sizes are (width, height)."""

    resolution: tuple[int, int]
    lores_size: tuple[int, int]
    fps: float
    exposure_us: int | None = None
    analogue_gain: float | None = None
    model: str | None = None


@dataclass(frozen=True)
class ClipFrame:
    """One frame: its JPEG (relative to the clip directory) and time since clip start."""

    file: str
    t_ns: int
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TriggerRecord:
    """A recorded GPIO edge: BCM pin, edge, time since clip start."""

    pin: int
    edge: str
    t_ns: int
    name: str | None = None


@dataclass(frozen=True)
class VehicleBox:
    """A plate box in one frame, main-stream pixels [x0, y0, x1, y1]."""

    frame: int
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class Vehicle:
    """Ground truth: a vehicle whose plate is readable between t_start_ns and t_end_ns."""

    plate: str
    t_start_ns: int
    t_end_ns: int
    boxes: tuple[VehicleBox, ...] = ()


class _Checker:
    """Small helpers that raise ClipError naming the file and the dotted field."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, where: str, what: str) -> ClipError:
        return ClipError(f"{self.file}: {where}: {what}")

    def obj(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, "must be an object")
        return value

    def keys(self, value: dict[str, Any], where: str, required: Iterable[str], optional: Iterable[str] = ()) -> None:
        required, allowed = set(required), set(required) | set(optional)
        for key in sorted(required - value.keys()):
            raise self.fail(f"{where}.{key}" if where else key, "is required")
        for key in sorted(value.keys() - allowed):
            raise self.fail(f"{where}.{key}" if where else key, "is not a known field")

    def int_(self, value: Any, where: str, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, "must be an int")
        if minimum is not None and value < minimum:
            raise self.fail(where, f"must be an int >= {minimum}")
        return value

    def number(self, value: Any, where: str, positive: bool = True) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(where, "must be a number")
        if positive and value <= 0:
            raise self.fail(where, "must be a number > 0")
        return float(value)

    def size(self, value: Any, where: str) -> tuple[int, int]:
        if not isinstance(value, list) or len(value) != 2:
            raise self.fail(where, "must be [width, height]")
        return self.int_(value[0], f"{where}[0]", 1), self.int_(value[1], f"{where}[1]", 1)

    def str_(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(where, "must be a non-empty string")
        return value


@dataclass(frozen=True)
class Clip:
    """A loaded, validated clip. Images are read on demand with `read_main(i)`."""

    path: Path
    camera: CameraSettings
    frames: tuple[ClipFrame, ...]
    triggers: tuple[TriggerRecord, ...] = ()
    vehicles: tuple[Vehicle, ...] = ()
    start_wall_ns: int | None = None
    description: str = ""

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Clip:
        """Read and validate `path/clip.json`; every frame file must exist."""
        root = Path(path)
        file = str(root / CLIP_JSON)
        try:
            text = (root / CLIP_JSON).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ClipError(f"{file}: not found (a clip is a directory with clip.json and frames/)") from None
        except UnicodeDecodeError as exc:
            raise ClipError(f"{file}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
        except OSError as exc:
            raise ClipError(f"{file}: cannot read: {exc.strerror}") from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ClipError(f"{file}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        return cls._from_doc(root, doc, _Checker(file))

    @classmethod
    def _from_doc(cls, root: Path, doc: Any, c: _Checker) -> Clip:
        c.obj(doc, "(top level)")
        c.keys(doc, "", ["format", "version", "camera", "frames"],
               ["triggers", "ground_truth", "start_wall_ns", "description"])
        if doc["format"] != FORMAT_NAME:
            raise c.fail("format", f"must be {FORMAT_NAME!r}")
        if c.int_(doc["version"], "version") != FORMAT_VERSION:
            raise c.fail("version", f"unsupported version {doc['version']} (this reader knows {FORMAT_VERSION})")
        camera = cls._camera(c.obj(doc["camera"], "camera"), c)
        frames = cls._frames(root, doc["frames"], c)
        triggers = cls._triggers(doc.get("triggers", []), c)
        vehicles = cls._vehicles(doc.get("ground_truth", {"vehicles": []}), len(frames), camera, c)
        start_wall = doc.get("start_wall_ns")
        if start_wall is not None:
            c.int_(start_wall, "start_wall_ns", 0)
        description = doc.get("description", "")
        if not isinstance(description, str):
            raise c.fail("description", "must be a string")
        return cls(root, camera, frames, triggers, vehicles, start_wall, description)

    @staticmethod
    def _camera(cam: dict[str, Any], c: _Checker) -> CameraSettings:
        c.keys(cam, "camera", ["resolution", "lores_size", "fps"], ["exposure_us", "analogue_gain", "model"])
        resolution = c.size(cam["resolution"], "camera.resolution")
        lores = c.size(cam["lores_size"], "camera.lores_size")
        if lores[0] > resolution[0] or lores[1] > resolution[1]:
            raise c.fail("camera.lores_size", f"{list(lores)} must not exceed camera.resolution {list(resolution)}")
        fps = c.number(cam["fps"], "camera.fps")
        exposure = cam.get("exposure_us")
        if exposure is not None:
            c.int_(exposure, "camera.exposure_us", 1)
        gain = cam.get("analogue_gain")
        if gain is not None:
            gain = c.number(gain, "camera.analogue_gain")
        model = cam.get("model")
        if model is not None:
            c.str_(model, "camera.model")
        return CameraSettings(resolution, lores, fps, exposure, gain, model)

    @staticmethod
    def _frames(root: Path, frames: Any, c: _Checker) -> tuple[ClipFrame, ...]:
        if not isinstance(frames, list) or not frames:
            raise c.fail("frames", "must be a non-empty list")
        out: list[ClipFrame] = []
        previous = -1
        for i, item in enumerate(frames):
            where = f"frames[{i}]"
            c.obj(item, where)
            c.keys(item, where, ["file", "t_ns"], ["metadata"])
            name = c.str_(item["file"], f"{where}.file")
            if not _FRAME_NAME.match(name):
                raise c.fail(f"{where}.file", f"{name!r} must look like frames/000001.jpg")
            if not (root / name).is_file():
                raise c.fail(f"{where}.file", f"{root / name} does not exist")
            t_ns = item["t_ns"]
            if isinstance(t_ns, bool) or not isinstance(t_ns, int) or t_ns < 0 or t_ns <= previous:
                raise c.fail(f"{where}.t_ns", "must be an int >= 0, increasing from frame to frame")
            previous = t_ns
            metadata = item.get("metadata", {})
            c.obj(metadata, f"{where}.metadata")
            out.append(ClipFrame(name, t_ns, dict(metadata)))
        return tuple(out)

    @staticmethod
    def _triggers(triggers: Any, c: _Checker) -> tuple[TriggerRecord, ...]:
        if not isinstance(triggers, list):
            raise c.fail("triggers", "must be a list")
        out: list[TriggerRecord] = []
        for i, item in enumerate(triggers):
            where = f"triggers[{i}]"
            c.obj(item, where)
            c.keys(item, where, ["pin", "edge", "t_ns"], ["name"])
            pin = c.int_(item["pin"], f"{where}.pin")
            if pin not in BCM_PINS:
                raise c.fail(f"{where}.pin", f"{pin} is not a BCM GPIO number (0-27)")
            if item["edge"] not in EDGES:
                raise c.fail(f"{where}.edge", f"must be one of {', '.join(EDGES)}")
            t_ns = c.int_(item["t_ns"], f"{where}.t_ns", 0)
            name = item.get("name")
            if name is not None:
                c.str_(name, f"{where}.name")
            out.append(TriggerRecord(pin, item["edge"], t_ns, name))
        # Sorted by time (stable), so replay can walk them in order.
        return tuple(sorted(out, key=lambda t: t.t_ns))

    @staticmethod
    def _vehicles(gt: Any, n_frames: int, camera: CameraSettings, c: _Checker) -> tuple[Vehicle, ...]:
        c.obj(gt, "ground_truth")
        c.keys(gt, "ground_truth", ["vehicles"])
        vehicles = gt["vehicles"]
        if not isinstance(vehicles, list):
            raise c.fail("ground_truth.vehicles", "must be a list")
        out: list[Vehicle] = []
        width, height = camera.resolution
        for i, item in enumerate(vehicles):
            where = f"ground_truth.vehicles[{i}]"
            c.obj(item, where)
            c.keys(item, where, ["plate", "t_start_ns", "t_end_ns"], ["boxes"])
            plate = c.str_(item["plate"], f"{where}.plate")
            start = c.int_(item["t_start_ns"], f"{where}.t_start_ns", 0)
            end = c.int_(item["t_end_ns"], f"{where}.t_end_ns", 0)
            if end < start:
                raise c.fail(f"{where}.t_end_ns", "must be >= t_start_ns")
            boxes_in = item.get("boxes", [])
            if not isinstance(boxes_in, list):
                raise c.fail(f"{where}.boxes", "must be a list")
            boxes: list[VehicleBox] = []
            for j, b in enumerate(boxes_in):
                bw = f"{where}.boxes[{j}]"
                c.obj(b, bw)
                c.keys(b, bw, ["frame", "box"])
                frame = c.int_(b["frame"], f"{bw}.frame", 0)
                if frame >= n_frames:
                    raise c.fail(f"{bw}.frame", f"{frame} is past the last frame ({n_frames - 1})")
                box = b["box"]
                if not isinstance(box, list) or len(box) != 4:
                    raise c.fail(f"{bw}.box", "must be [x0, y0, x1, y1]")
                x0, y0, x1, y1 = (c.int_(v, f"{bw}.box[{k}]", 0) for k, v in enumerate(box))
                if not (x0 < x1 <= width and y0 < y1 <= height):
                    raise c.fail(f"{bw}.box", f"{box} must satisfy x0 < x1 <= {width} and y0 < y1 <= {height}")
                boxes.append(VehicleBox(frame, (x0, y0, x1, y1)))
            out.append(Vehicle(plate, start, end, tuple(boxes)))
        return tuple(out)

    # ---- reading images --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.frames)

    @property
    def duration_ns(self) -> int:
        """Time of the last frame."""
        return self.frames[-1].t_ns

    def read_main(self, index: int) -> np.ndarray:
        """Decode frame `index` as an HxWx3 uint8 RGB array at camera.resolution."""
        frame = self.frames[index]
        file = self.path / frame.file
        bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ClipError(f"{file}: cannot decode as JPEG (frames[{index}].file)")
        height, width = bgr.shape[:2]
        if (width, height) != self.camera.resolution:
            raise ClipError(
                f"{file}: frames[{index}] is {width}x{height}, camera.resolution says "
                f"{self.camera.resolution[0]}x{self.camera.resolution[1]}"
            )
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def make_lores(self, main: np.ndarray) -> np.ndarray:
        """Resize a main image to camera.lores_size (what the ISP's lores stream would give)."""
        return resize_rgb(main, self.camera.lores_size)


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB image to (width, height); area filter when shrinking."""
    if (image.shape[1], image.shape[0]) == tuple(size):
        return image.copy()
    shrinking = size[0] < image.shape[1]
    return cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


class ClipWriter:
    """Writes a clip directory; clip.json is written (atomically) on close().

    with ClipWriter(path, CameraSettings((1920, 1080), (640, 360), 30.0, exposure_us=800)) as w:
        w.add_frame(rgb, t_ns=0)
        w.add_trigger(pin=17, edge="falling", t_ns=1_000_000)
        w.add_vehicle("AB12CDE", 0, 2_000_000_000)
    """

    def __init__(self, path: str | os.PathLike[str], camera: CameraSettings, *, jpeg_quality: int = 92,
                 start_wall_ns: int | None = None, description: str = "", overwrite: bool = False) -> None:
        self.path = Path(path)
        if (self.path / CLIP_JSON).exists() and not overwrite:
            raise ClipError(f"{self.path / CLIP_JSON}: already exists (pass overwrite=True to replace)")
        if not 1 <= jpeg_quality <= 100:
            raise ValueError("jpeg_quality: must be 1..100")
        (self.path / "frames").mkdir(parents=True, exist_ok=True)
        self.camera = camera
        self._quality = jpeg_quality
        self._frames: list[dict[str, Any]] = []
        self._triggers: list[dict[str, Any]] = []
        self._vehicles: list[dict[str, Any]] = []
        self._start_wall_ns = start_wall_ns
        self._description = description
        self._closed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()

    def add_frame(self, rgb: np.ndarray, t_ns: int, metadata: dict[str, Any] | None = None) -> str:
        """Write one RGB frame as the next JPEG; returns its relative file name."""
        self._check_open()
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError("add_frame: rgb must be an HxWx3 uint8 array")
        if (rgb.shape[1], rgb.shape[0]) != self.camera.resolution:
            raise ValueError(f"add_frame: frame is {rgb.shape[1]}x{rgb.shape[0]}, clip resolution is "
                             f"{self.camera.resolution[0]}x{self.camera.resolution[1]}")
        if self._frames and t_ns <= self._frames[-1]["t_ns"]:
            raise ValueError(f"add_frame: t_ns {t_ns} must be greater than the previous frame's")
        name = f"frames/{len(self._frames) + 1:06d}.jpg"
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                [int(cv2.IMWRITE_JPEG_QUALITY), self._quality])
        if not ok:
            raise ClipError(f"{self.path / name}: JPEG encoding failed")
        (self.path / name).write_bytes(data.tobytes())
        entry: dict[str, Any] = {"file": name, "t_ns": int(t_ns)}
        if metadata:
            entry["metadata"] = dict(metadata)
        self._frames.append(entry)
        return name

    def add_trigger(self, pin: int, edge: str, t_ns: int, name: str | None = None) -> None:
        """Record a GPIO edge (BCM pin, "rising"/"falling") at t_ns since clip start."""
        self._check_open()
        entry: dict[str, Any] = {"pin": int(pin), "edge": edge, "t_ns": int(t_ns)}
        if name:
            entry["name"] = name
        self._triggers.append(entry)

    def add_vehicle(self, plate: str, t_start_ns: int, t_end_ns: int,
                    boxes: Sequence[tuple[int, Sequence[int]]] = ()) -> None:
        """Record ground truth: plate, visible window, optional (frame index, [x0, y0, x1, y1]) boxes."""
        self._check_open()
        entry: dict[str, Any] = {"plate": plate, "t_start_ns": int(t_start_ns), "t_end_ns": int(t_end_ns)}
        if boxes:
            entry["boxes"] = [{"frame": int(f), "box": [int(v) for v in box]} for f, box in boxes]
        self._vehicles.append(entry)

    def to_doc(self) -> dict[str, Any]:
        """The clip.json document as it will be written."""
        cam = self.camera
        camera: dict[str, Any] = {"resolution": list(cam.resolution), "lores_size": list(cam.lores_size),
                                  "fps": cam.fps}
        if cam.exposure_us is not None:
            camera["exposure_us"] = cam.exposure_us
        if cam.analogue_gain is not None:
            camera["analogue_gain"] = cam.analogue_gain
        if cam.model is not None:
            camera["model"] = cam.model
        doc: dict[str, Any] = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "camera": camera}
        if self._description:
            doc["description"] = self._description
        if self._start_wall_ns is not None:
            doc["start_wall_ns"] = self._start_wall_ns
        doc["frames"] = self._frames
        doc["triggers"] = self._triggers
        doc["ground_truth"] = {"vehicles": self._vehicles}
        return doc

    def close(self) -> Clip:
        """Validate the clip, write clip.json, then load it back and return it.

        A clip the reader would refuse (no frames, say) raises here and writes no clip.json, so
        a failed recording never leaves a clip that blocks the next one or fails on replay."""
        if not self._closed:
            doc = self.to_doc()
            Clip._from_doc(self.path, doc, _Checker(str(self.path / CLIP_JSON)))
            tmp = self.path / (CLIP_JSON + ".tmp")
            tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
            os.replace(tmp, self.path / CLIP_JSON)
            self._closed = True
        return Clip.load(self.path)

    def _check_open(self) -> None:
        if self._closed:
            raise ClipError(f"{self.path / CLIP_JSON}: writer already closed")
