"""A thin wrapper over the LiteRT interpreter: manifest checks, preallocated input, dequantised output.

LiteRT (`ai_edge_litert`) is preferred; `tflite_runtime` is accepted where no LiteRT wheel
exists. XNNPACK is the interpreter's default CPU delegate in both, so nothing is configured
for it beyond the thread count.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inference.detect_decode import ssd_shape_problem, yolo_layout, yolo_row_lengths
from inference.errors import BackendUnavailable, BadImage, ModelError, ModelNotFound
from inference.manifest import Manifest, manifest_path_for

log = logging.getLogger(__name__)

_TFLITE_IDENTIFIER = b"TFL3"
MIN_IMAGE_SIDE = 2  # px: `prepare` refuses a narrower or shorter image (nothing to resize from)


def interpreter_class() -> Any:
    """The Interpreter class of whichever TFLite runtime is installed (LiteRT first)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]
        except ImportError:
            raise BackendUnavailable(
                "no TFLite runtime: install ai-edge-litert (or tflite-runtime where no LiteRT wheel exists)"
            ) from None
    return Interpreter


@dataclass(frozen=True)
class Geometry:
    """How input-image pixels map to model-input pixels: model = image * scale + pad."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    image_width: int
    image_height: int

    def to_image(self, x: float, y: float) -> tuple[float, float]:
        """A model-input point back in input-image pixels."""
        return (x - self.pad_x) / self.scale_x, (y - self.pad_y) / self.scale_y


def sha256_of(data: bytes) -> str:
    """Hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


class TFLiteModel:
    """One loaded `.tflite` model, checked against its `.json` manifest.

    Not thread-safe: one owner calls `run`; a second thread needs its own instance.
    """

    def __init__(self, model_path: Path, threads: int = 1, manifest_path: Path | None = None) -> None:
        self.path = Path(model_path)
        if threads < 1:
            raise ModelError(f"{self.path}: threads must be >= 1, got {threads}")
        manifest_path = Path(manifest_path) if manifest_path else manifest_path_for(self.path)
        # The model file first: a mistyped --detector path is reported as the path given, not as
        # a manifest that nobody asked for.
        try:
            content = self.path.read_bytes()
        except FileNotFoundError:
            also = "" if manifest_path.exists() else f" (nor its manifest {manifest_path})"
            raise ModelNotFound(f"{self.path}: model file not found{also}") from None
        except OSError as exc:
            raise ModelError(f"{self.path}: cannot read model file: {exc}") from exc
        self.manifest = Manifest.load(manifest_path)
        if len(content) < 8 or content[4:8] != _TFLITE_IDENTIFIER:
            raise ModelError(f"{self.path}: not a TFLite flatbuffer (truncated or corrupt, {len(content)} bytes)")
        digest = sha256_of(content)
        if digest != self.manifest.sha256:
            raise ModelError(
                f"{self.path}: sha256 mismatch with its manifest: file has {digest}, manifest says {self.manifest.sha256}"
            )
        try:
            self._interp = interpreter_class()(model_content=content, num_threads=threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.path}: model cannot be loaded (truncated or corrupt?): {exc}") from exc
        self._check_input()
        self._outputs = self._interp.get_output_details()
        self._check_outputs()
        spec = self.manifest.input
        self._buffer = np.zeros(self._input["shape"], dtype=self._input["dtype"])
        # Staging buffers reused every frame so the hot path allocates nothing of frame size.
        self._resized = np.zeros((spec.height, spec.width, 3), dtype=np.uint8)
        self._grey = np.zeros((spec.height, spec.width), dtype=np.uint8)
        self._float = np.zeros((spec.height, spec.width, spec.channels), dtype=np.float32)
        chans = spec.channels
        self._mean = np.resize(np.asarray(spec.mean, dtype=np.float32), chans)
        self._inv_std = 1.0 / np.resize(np.asarray(spec.std, dtype=np.float32), chans)
        scale, zero = self._input["quantization"]
        self._in_scale = float(scale)
        self._in_zero = float(zero)
        if self._buffer.dtype != np.float32 and self._in_scale == 0.0:
            # An integer input without quantisation (fast-plate-ocr style: the model casts the
            # integers to float itself) takes the normalised values as they are.
            self._check_raw_integer_input()
            self._in_scale, self._in_zero = 1.0, 0.0

    # -- checks -------------------------------------------------------------------------
    def _check_input(self) -> None:
        details = self._interp.get_input_details()
        if len(details) != 1:
            raise ModelError(f"{self.path}: expected 1 input tensor, model has {len(details)}")
        self._input = details[0]
        spec = self.manifest.input
        shape = tuple(int(v) for v in self._input["shape"])
        want = spec.shape if len(spec.shape) == 4 else (*spec.shape, 1)
        if shape != tuple(want) and shape != tuple(spec.shape):
            raise ModelError(f"{self.path}: input shape mismatch: model has {list(shape)}, manifest says {list(spec.shape)}")
        dtype = np.dtype(self._input["dtype"]).name
        if dtype != spec.dtype:
            raise ModelError(f"{self.path}: input dtype mismatch: model has {dtype}, manifest says {spec.dtype}")

    def _check_raw_integer_input(self) -> None:
        """Refuse a normalisation that an unquantised integer input cannot carry: its values are
        rounded to integers and clipped to the dtype, so a scaling normalisation (the default
        1/255 leaves 0 or 1) or a mean that pushes 0..255 out of range would lose the image."""
        spec = self.manifest.input
        info = np.iinfo(self._buffer.dtype)
        low = (0.0 - self._mean) * self._inv_std
        high = (255.0 - self._mean) * self._inv_std
        if not np.allclose(self._inv_std, 1.0) or low.min() < info.min or high.max() > info.max:
            hint = '{"mean": [128], "std": [1]}' if info.min < 0 else '{"scale": 1}'
            raise ModelError(
                f"{self.path}: input tensor is {info.dtype.name} without quantisation, so the model takes pixel values "
                f"as they are: manifest key 'input.normalisation' must keep them whole and within {info.min}..{info.max} "
                f"(std 1, e.g. {hint}), got mean {list(spec.mean)} std {list(spec.std)}"
            )

    def _check_outputs(self) -> None:
        kind = self.manifest.output_kind
        shapes = [tuple(int(v) for v in d["shape"]) for d in self._outputs]
        problem = _output_problem(kind, shapes, self.manifest)
        if problem:
            raise ModelError(f"{self.path}: output does not match manifest kind {kind!r}: {problem} (outputs {shapes})")

    # -- running ------------------------------------------------------------------------
    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the model input."""
        return self.manifest.input.width, self.manifest.input.height

    @property
    def output_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(int(v) for v in d["shape"]) for d in self._outputs]

    @property
    def output_names(self) -> list[str]:
        """The output tensors' names, in model order ('' where the model has none)."""
        return [str(d.get("name", "")) for d in self._outputs]

    def prepare(self, image: np.ndarray) -> Geometry:
        """Resize, colour-convert, normalise and quantise `image` into the input buffer."""
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise BadImage("image must be a uint8 HxWx3 (RGB) or HxW (grey) array")
        if image.ndim == 3 and image.shape[2] != 3:
            raise BadImage(f"image must have 3 channels, got {image.shape[2]}")
        if image.shape[0] < MIN_IMAGE_SIDE or image.shape[1] < MIN_IMAGE_SIDE:
            raise BadImage(f"image too small: {image.shape[1]}x{image.shape[0]}")
        spec = self.manifest.input
        height, width = image.shape[:2]
        out_w, out_h = spec.width, spec.height
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        if spec.resize == "letterbox":
            scale = min(out_w / width, out_h / height)
            new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
            pad_x, pad_y = (out_w - new_w) // 2, (out_h - new_h) // 2
            self._resized[...] = 114
            region = self._resized[pad_y:pad_y + new_h, pad_x:pad_x + new_w]
            cv2.resize(image, (new_w, new_h), dst=region, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
            geometry = Geometry(scale, scale, float(pad_x), float(pad_y), width, height)
        else:
            sx, sy = out_w / width, out_h / height
            cv2.resize(image, (out_w, out_h), dst=self._resized, interpolation=cv2.INTER_AREA if sx * sy < 1 else cv2.INTER_LINEAR)
            geometry = Geometry(sx, sy, 0.0, 0.0, width, height)
        if spec.colour == "grey":
            cv2.cvtColor(self._resized, cv2.COLOR_RGB2GRAY, dst=self._grey)
            source = self._grey[..., None]
        elif spec.colour == "bgr":
            source = self._resized[..., ::-1]
        else:
            source = self._resized
        np.subtract(source, self._mean, out=self._float)
        np.multiply(self._float, self._inv_std, out=self._float)
        target = self._buffer.reshape(self._float.shape)
        if self._buffer.dtype == np.float32:
            np.copyto(target, self._float)
        else:
            info = np.iinfo(self._buffer.dtype)
            np.multiply(self._float, 1.0 / self._in_scale, out=self._float)
            np.add(self._float, self._in_zero, out=self._float)
            np.rint(self._float, out=self._float)
            np.clip(self._float, info.min, info.max, out=self._float)
            np.copyto(target, self._float, casting="unsafe")
        return geometry

    def invoke(self) -> list[np.ndarray]:
        """Run the prepared input; every output dequantised to float32, in model order."""
        self._interp.set_tensor(self._input["index"], self._buffer)
        self._interp.invoke()
        results = []
        for detail in self._outputs:
            raw = self._interp.get_tensor(detail["index"])
            scale, zero = detail["quantization"]
            if raw.dtype in (np.int8, np.uint8, np.int16) and scale:
                results.append((raw.astype(np.float32) - float(zero)) * float(scale))
            else:
                results.append(np.array(raw, dtype=np.float32, copy=True))
        return results

    def run(self, image: np.ndarray) -> tuple[list[np.ndarray], Geometry]:
        """`prepare` then `invoke`."""
        geometry = self.prepare(image)
        return self.invoke(), geometry


def _output_problem(kind: str, shapes: list[tuple[int, ...]], manifest: Manifest) -> str:
    """Why `shapes` cannot be outputs of a `kind` model, or '' when they can."""
    if kind == "ssd_postprocess":
        return ssd_shape_problem(shapes, manifest.params.get("order"))
    if kind in ("yolo", "yolov8"):
        if len(shapes) != 1 or len(shapes[0]) not in (2, 3):
            return "expected one [1, N, 4+1+C] or [1, 4+C, N] output"
        dims = (shapes[0][-2], shapes[0][-1])
        objectness = "1 objectness + " if kind == "yolo" else ""
        channels = yolo_row_lengths(kind, len(manifest.classes))
        if manifest.classes and not set(channels).intersection(dims):
            extra = channels[0]
            return f"no output dimension equals {extra} (4 box + {objectness}{len(manifest.classes)} classes)"
        # the row as the decoder will read it (yolo_layout): without class names nothing else says
        # which dimension it is, and a row too short for a box and a score would only fail per image
        row = dims[1] if yolo_layout(dims, channels) == "nxc" else dims[0]
        least = 5
        if row < least:
            score = "1 objectness" if kind == "yolo" else "1 class score"
            return f"rows have {row} values, need at least {least} (4 box + {score})"
        return ""
    # OCR: one [1, T, C] sequence output (one per member in an ensemble file, all the same
    # shape), optionally one [1, R] region output.
    seq = [s for s in shapes if len(s) == 3]
    flat = [s for s in shapes if len(s) == 2]
    if not seq or len(set(seq)) != 1 or len(seq) + len(flat) != len(shapes):
        return ("expected one [1, T, C] character output, or several of one shape for an ensemble "
                "(and optionally one [1, R] region output)")
    classes = seq[0][2]
    want = len(manifest.alphabet) + (1 if kind == "ctc" else 0)
    if classes != want:
        return f"character output has {classes} classes, alphabet{' + blank' if kind == 'ctc' else ''} is {want}"
    if flat:
        if len(flat) != 1 or flat[0][1] != len(manifest.region_classes):
            return f"region output has {flat[0][1]} classes, manifest lists {len(manifest.region_classes)} region classes"
    return ""
