"""The JSON manifest that ships beside every `X.tflite` as `X.json`, and its validation."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.errors import ModelError, ModelNotFound
from inference.plate_formats import PlateFormats

OUTPUT_KINDS = ("yolo", "yolov8", "ssd_postprocess", "ctc", "fixed_slot")
COLOURS = ("rgb", "bgr", "grey")
RESIZES = ("stretch", "letterbox")
DTYPES = ("float32", "int8", "uint8")


@dataclass(frozen=True)
class InputSpec:
    """How an image becomes the model's input tensor: value = (pixel - mean) / std."""

    shape: tuple[int, ...]
    dtype: str
    colour: str = "rgb"
    resize: str = "stretch"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (255.0,)

    @property
    def height(self) -> int:
        return int(self.shape[1])

    @property
    def width(self) -> int:
        return int(self.shape[2])

    @property
    def channels(self) -> int:
        return int(self.shape[3]) if len(self.shape) == 4 else 1


@dataclass(frozen=True)
class Manifest:
    """What a model is, what it expects and what it was trained and measured on."""

    name: str
    version: str
    sha256: str
    input: InputSpec
    output_kind: str
    alphabet: str = ""
    blank_index: int = 0
    pad_char: str = ""
    region_classes: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    plate_formats: PlateFormats | None = None  # OCR: each state's serial formats, to settle O / 0
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, source: str) -> Manifest:
        """Validate a parsed manifest; errors name `source` and the offending key."""
        if not isinstance(data, dict):
            raise ModelError(f"{source}: manifest must be a JSON object")

        def need(mapping: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
            if key not in mapping:
                raise ModelError(f"{source}: manifest is missing key '{where}{key}'")
            value = mapping[key]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ModelError(f"{source}: manifest key '{where}{key}' has the wrong type ({type(value).__name__})")
            return value

        inp = need(data, "input", dict)
        shape = need(inp, "shape", list, "input.")
        if len(shape) not in (3, 4) or not all(isinstance(v, int) and v > 0 for v in shape):
            raise ModelError(f"{source}: manifest key 'input.shape' must be 3 or 4 positive integers, got {shape}")
        dtype = need(inp, "dtype", str, "input.")
        if dtype not in DTYPES:
            raise ModelError(f"{source}: manifest key 'input.dtype' must be one of {DTYPES}, got {dtype!r}")
        colour = inp.get("colour", "rgb")
        if colour not in COLOURS:
            raise ModelError(f"{source}: manifest key 'input.colour' must be one of {COLOURS}, got {colour!r}")
        resize = inp.get("resize", "stretch")
        if resize not in RESIZES:
            raise ModelError(f"{source}: manifest key 'input.resize' must be one of {RESIZES}, got {resize!r}")
        norm = inp.get("normalisation", {"scale": 1.0 / 255.0})
        if not isinstance(norm, dict):
            raise ModelError(f"{source}: manifest key 'input.normalisation' must be an object")
        if "scale" in norm:
            scale = float(norm["scale"])
            if scale <= 0:
                raise ModelError(f"{source}: manifest key 'input.normalisation.scale' must be > 0")
            mean: tuple[float, ...] = tuple(float(v) for v in norm.get("mean", [0.0]))
            std: tuple[float, ...] = (1.0 / scale,)
        else:
            mean = tuple(float(v) for v in need(norm, "mean", list, "input.normalisation."))
            std = tuple(float(v) for v in need(norm, "std", list, "input.normalisation."))
            if any(s <= 0 for s in std):
                raise ModelError(f"{source}: manifest key 'input.normalisation.std' must be > 0")
        spec = InputSpec(tuple(shape), dtype, colour, resize, mean, std)
        channels = spec.channels
        if (colour == "grey") != (channels == 1):
            raise ModelError(f"{source}: manifest key 'input.colour' is {colour!r} but input.shape has {channels} channel(s)")

        output = need(data, "output", dict)
        kind = need(output, "kind", str, "output.")
        if kind not in OUTPUT_KINDS:
            raise ModelError(f"{source}: manifest key 'output.kind' must be one of {OUTPUT_KINDS}, got {kind!r}")
        alphabet = str(output.get("alphabet", ""))
        pad_char = str(output.get("pad_char", ""))
        if kind in ("ctc", "fixed_slot") and not alphabet:
            raise ModelError(f"{source}: manifest key 'output.alphabet' is required for output kind {kind!r}")
        if kind == "fixed_slot" and (len(pad_char) != 1 or pad_char not in alphabet):
            raise ModelError(f"{source}: manifest key 'output.pad_char' must be one character of output.alphabet")
        sha = need(data, "sha256", str)
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower()):
            raise ModelError(f"{source}: manifest key 'sha256' is not a 64-digit hex digest")
        return cls(
            name=str(need(data, "name", str)),
            version=str(need(data, "version", str)),
            sha256=sha.lower(),
            input=spec,
            output_kind=kind,
            alphabet=alphabet,
            blank_index=int(output.get("blank_index", 0)),
            pad_char=pad_char,
            region_classes=tuple(str(v) for v in output.get("region_classes", [])),
            classes=tuple(str(v) for v in output.get("classes", [])),
            params=dict(output.get("params", {})),
            plate_formats=PlateFormats.from_dict(output["plate_formats"], source) if "plate_formats" in output else None,
            training=dict(data.get("training", {})),
            metrics=dict(data.get("metrics", {})),
        )

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Read and validate the manifest at `path`."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ModelNotFound(f"{path}: model manifest not found") from None
        except OSError as exc:
            raise ModelError(f"{path}: cannot read model manifest: {exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"{path}: manifest is not valid JSON: {exc}") from exc
        return cls.from_dict(data, str(path))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, as written beside the model by the training pipeline."""
        spec = self.input
        output: dict[str, Any] = {"kind": self.output_kind}
        if self.alphabet:
            output["alphabet"] = self.alphabet
            output["blank_index"] = self.blank_index
        if self.pad_char:
            output["pad_char"] = self.pad_char
        if self.region_classes:
            output["region_classes"] = list(self.region_classes)
        if self.classes:
            output["classes"] = list(self.classes)
        if self.params:
            output["params"] = self.params
        if self.plate_formats is not None:
            output["plate_formats"] = self.plate_formats.to_dict()
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "input": {
                "shape": list(spec.shape),
                "dtype": spec.dtype,
                "colour": spec.colour,
                "resize": spec.resize,
                "normalisation": {"mean": list(spec.mean), "std": list(spec.std)},
            },
            "output": output,
            "training": self.training,
            "metrics": self.metrics,
        }


def manifest_path_for(model_path: Path) -> Path:
    """`X.tflite` -> `X.json`."""
    return Path(model_path).with_suffix(".json")
