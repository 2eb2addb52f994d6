"""The JSON manifest that ships beside every `X.tflite` as `X.json`, and its validation."""
from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.detect_decode import SSD_ROLES
from inference.errors import ModelError, ModelNotFound
from inference.plate_formats import PlateFormats

OUTPUT_KINDS = ("yolo", "yolov8", "ssd_postprocess", "ctc", "fixed_slot")
COLOURS = ("rgb", "bgr", "grey")
RESIZES = ("stretch", "letterbox")
DTYPES = ("float32", "int8", "uint8")
# output.params checked at load (the rest are free-form): scores from 0 to 1, and counts
PROBABILITY_PARAMS = ("score_threshold", "tile_score_threshold")
COUNT_PARAMS = ("max_len", "stride")
# The keys a manifest may have, level by level: what the loader reads, and `training` / `metrics`
# (provenance and figures, free-form inside, kept for reports). Anything else is refused, since a
# misspelt key ("color", "normalization", "blank") would otherwise leave its default in force.
# output.params stays free-form beyond the keys checked above.
TOP_KEYS = ("name", "version", "sha256", "input", "output", "training", "metrics")
INPUT_KEYS = ("shape", "dtype", "colour", "resize", "normalisation")
NORMALISATION_KEYS = ("scale", "mean", "std")
OUTPUT_KEYS = ("kind", "classes", "alphabet", "blank_index", "pad_char", "region_classes", "plate_formats", "params")


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

        def number(value: Any, key: str) -> float:
            # bool is an int to Python, and "1/255" would only fail later, far from the manifest
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ModelError(f"{source}: manifest key '{key}' must be a finite number, got {value!r}")
            return float(value)

        def numbers(value: Any, key: str) -> tuple[float, ...]:
            if not isinstance(value, list) or not value:
                raise ModelError(f"{source}: manifest key '{key}' must be a non-empty list of numbers, got {value!r}")
            return tuple(number(v, f"{key}[{i}]") for i, v in enumerate(value))

        def names(mapping: dict[str, Any], key: str) -> tuple[str, ...]:
            value = mapping.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ModelError(f"{source}: manifest key 'output.{key}' must be a list of strings, got {value!r}")
            return tuple(value)

        def mapping_of(mapping: dict[str, Any], key: str, where: str = "") -> dict[str, Any]:
            value = mapping.get(key, {})
            if not isinstance(value, dict):
                raise ModelError(f"{source}: manifest key '{where}{key}' must be an object, got {value!r}")
            return dict(value)

        def known_keys(mapping: dict[str, Any], allowed: tuple[str, ...], where: str = "") -> None:
            for key in mapping:
                if key not in allowed:
                    # the nearest allowed key always, as a question only when it is close
                    ratios = {a: difflib.SequenceMatcher(None, str(key), a).ratio() for a in allowed}
                    near = max(allowed, key=lambda a: ratios[a])
                    hint = (f"did you mean '{where}{near}'?" if ratios[near] >= 0.6
                            else f"the nearest known key is '{where}{near}';")
                    level = f"keys of '{where[:-1]}'" if where else "top-level keys"
                    raise ModelError(f"{source}: manifest key '{where}{key}' is not a known key ({hint} {level}: "
                                     f"{', '.join(allowed)})")

        known_keys(data, TOP_KEYS)
        inp = need(data, "input", dict)
        known_keys(inp, INPUT_KEYS, "input.")
        shape = need(inp, "shape", list, "input.")
        if len(shape) not in (3, 4) or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
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
        known_keys(norm, NORMALISATION_KEYS, "input.normalisation.")
        if "scale" in norm and "std" in norm:
            # both divide the pixel: one of them would be dropped without a word
            raise ModelError(f"{source}: manifest key 'input.normalisation' has both 'scale' and 'std': give "
                             "{\"scale\": s} (value = (pixel - mean) * s) or {\"mean\": [...], \"std\": [...]}, not both")
        if "scale" in norm:
            scale = number(norm["scale"], "input.normalisation.scale")
            if scale <= 0:
                raise ModelError(f"{source}: manifest key 'input.normalisation.scale' must be > 0")
            mean: tuple[float, ...] = numbers(norm.get("mean", [0.0]), "input.normalisation.mean")
            std: tuple[float, ...] = (1.0 / scale,)
        else:
            mean = numbers(need(norm, "mean", list, "input.normalisation."), "input.normalisation.mean")
            std = numbers(need(norm, "std", list, "input.normalisation."), "input.normalisation.std")
            if any(s <= 0 for s in std):
                raise ModelError(f"{source}: manifest key 'input.normalisation.std' must be > 0")
        spec = InputSpec(tuple(shape), dtype, colour, resize, mean, std)
        channels = spec.channels
        if (colour == "grey") != (channels == 1):
            raise ModelError(f"{source}: manifest key 'input.colour' is {colour!r} but input.shape has {channels} channel(s)")
        for key, values in (("mean", mean), ("std", std)):
            # one value is used for every channel; any other count would be silently cycled
            if len(values) not in (1, channels):
                raise ModelError(f"{source}: manifest key 'input.normalisation.{key}' has {len(values)} values, "
                                 f"input.shape has {channels} channel(s): give 1 or {channels}")

        output = need(data, "output", dict)
        known_keys(output, OUTPUT_KEYS, "output.")
        kind = need(output, "kind", str, "output.")
        if kind not in OUTPUT_KINDS:
            raise ModelError(f"{source}: manifest key 'output.kind' must be one of {OUTPUT_KINDS}, got {kind!r}")
        for key in ("alphabet", "pad_char"):
            if not isinstance(output.get(key, ""), str):
                raise ModelError(f"{source}: manifest key 'output.{key}' must be a string, got {output[key]!r}")
        alphabet = output.get("alphabet", "")
        pad_char = output.get("pad_char", "")
        if kind in ("ctc", "fixed_slot") and not alphabet:
            raise ModelError(f"{source}: manifest key 'output.alphabet' is required for output kind {kind!r}")
        if kind == "fixed_slot" and (len(pad_char) != 1 or pad_char not in alphabet):
            raise ModelError(f"{source}: manifest key 'output.pad_char' must be one character of output.alphabet")
        blank_index = output.get("blank_index", 0)
        if not isinstance(blank_index, int) or isinstance(blank_index, bool):
            raise ModelError(f"{source}: manifest key 'output.blank_index' must be an integer, got {blank_index!r}")
        if blank_index == -1:
            blank_index = len(alphabet)  # -1: last, as in TF's ctc_decode and Keras exports
        if kind == "ctc" and blank_index not in (0, len(alphabet)):
            # the decoders place the blank by this index: anywhere else shifts every character
            raise ModelError(f"{source}: manifest key 'output.blank_index' must be 0 (first), {len(alphabet)} "
                             f"(last, = len(output.alphabet)) or -1 (last), got {output['blank_index']!r}")
        params = mapping_of(output, "params", "output.")
        for key in PROBABILITY_PARAMS:
            # a threshold the detector compares scores with: null, "high" or NaN would fail far
            # from the manifest (or, NaN, quietly find nothing)
            if key in params:
                value = number(params[key], f"output.params.{key}")
                if not 0.0 <= value <= 1.0:
                    raise ModelError(f"{source}: manifest key 'output.params.{key}' must be from 0 to 1, got {value!r}")
        for key in COUNT_PARAMS:
            if key in params:
                value = params[key]
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise ModelError(f"{source}: manifest key 'output.params.{key}' must be a positive integer, "
                                     f"got {value!r}")
        if "order" in params:
            # which TFLite_Detection_PostProcess output is which, for a model whose values cannot
            # tell classes from scores (decode_ssd); checked against the outputs' shapes at load
            order = params["order"]
            if kind != "ssd_postprocess":
                raise ModelError(f"{source}: manifest key 'output.params.order' is for output kind 'ssd_postprocess' "
                                 f"only, not {kind!r}")
            if not isinstance(order, list) or sorted(map(str, order)) != sorted(SSD_ROLES) \
                    or not all(isinstance(v, str) for v in order):
                raise ModelError(f"{source}: manifest key 'output.params.order' must list each of "
                                 f"{', '.join(SSD_ROLES)} once, in the model's output order, got {order!r}")
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
            blank_index=blank_index,
            pad_char=pad_char,
            region_classes=names(output, "region_classes"),
            classes=names(output, "classes"),
            params=params,
            plate_formats=PlateFormats.from_dict(output["plate_formats"], source) if "plate_formats" in output else None,
            training=mapping_of(data, "training"),
            metrics=mapping_of(data, "metrics"),
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
