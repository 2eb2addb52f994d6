"""Loading the shipped models, manifest checks and input preparation."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from inference.errors import BadImage, InferenceError, ModelError, ModelNotFound
from inference.manifest import Manifest
from inference.models_dir import DETECTOR_MODEL, OCR_MODEL, shipped_model
from inference.runtime import TFLiteModel, sha256_of

pytestmark = pytest.mark.unit


def copy_model(tmp_path: Path, name: str) -> tuple[Path, dict]:
    src = shipped_model(name)
    dst = tmp_path / name
    shutil.copy(src, dst)
    shutil.copy(src.with_suffix(".json"), dst.with_suffix(".json"))
    return dst, json.loads(dst.with_suffix(".json").read_text())


def write_manifest(model: Path, manifest: dict) -> None:
    model.with_suffix(".json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("name", [OCR_MODEL, DETECTOR_MODEL])
def test_shipped_models_load_and_match_their_manifests(name: str) -> None:
    model = TFLiteModel(shipped_model(name))
    manifest = model.manifest
    assert manifest.sha256 == sha256_of(shipped_model(name).read_bytes())
    assert manifest.input.dtype == "int8"
    assert manifest.training and manifest.metrics  # provenance and figures are recorded
    size = shipped_model(name).stat().st_size
    assert size <= (2 if name == OCR_MODEL else 4) * 1024 * 1024


def test_error_classes_are_rooted_and_builtin() -> None:
    assert issubclass(ModelError, InferenceError) and issubclass(ModelError, ValueError)
    assert issubclass(ModelNotFound, InferenceError) and issubclass(ModelNotFound, FileNotFoundError)


def test_bad_hash_is_refused_naming_the_file(tmp_path: Path) -> None:
    path, manifest = copy_model(tmp_path, OCR_MODEL)
    manifest["sha256"] = "0" * 64
    write_manifest(path, manifest)
    with pytest.raises(ModelError, match=r"plate_ocr\.tflite.*sha256 mismatch"):
        TFLiteModel(path)


def test_wrong_input_shape_is_refused(tmp_path: Path) -> None:
    path, manifest = copy_model(tmp_path, OCR_MODEL)
    manifest["input"]["shape"] = [1, 48, 160, 1]
    write_manifest(path, manifest)
    with pytest.raises(ModelError, match=r"plate_ocr\.tflite: input shape mismatch"):
        TFLiteModel(path)


def test_wrong_input_dtype_is_refused(tmp_path: Path) -> None:
    path, manifest = copy_model(tmp_path, OCR_MODEL)
    manifest["input"]["dtype"] = "float32"
    write_manifest(path, manifest)
    with pytest.raises(ModelError, match="input dtype mismatch"):
        TFLiteModel(path)


@pytest.mark.parametrize("change, message", [
    ({"kind": "ssd_postprocess"}, "expected 4 outputs"),
    ({"alphabet": "0123456789"}, "alphabet \\+ blank is 11"),
    ({"region_classes": ["ca", "ny"]}, "region output has"),
])
def test_output_that_does_not_match_the_kind_is_refused(tmp_path: Path, change: dict, message: str) -> None:
    path, manifest = copy_model(tmp_path, OCR_MODEL)
    manifest["output"].update(change)
    write_manifest(path, manifest)
    with pytest.raises(ModelError, match=message):
        TFLiteModel(path)


def test_detector_kind_with_wrong_class_count_is_refused(tmp_path: Path) -> None:
    path, manifest = copy_model(tmp_path, DETECTOR_MODEL)
    manifest["output"]["classes"] = ["plate", "car", "bus"]
    write_manifest(path, manifest)
    with pytest.raises(ModelError, match="plate_detector.tflite: output does not match"):
        TFLiteModel(path)


def test_truncated_file_is_refused_even_with_matching_hash(tmp_path: Path) -> None:
    path, manifest = copy_model(tmp_path, OCR_MODEL)
    data = path.read_bytes()[: path.stat().st_size // 3]
    path.write_bytes(data)
    manifest["sha256"] = sha256_of(data)
    write_manifest(path, manifest)
    with pytest.raises(ModelError, match=r"plate_ocr\.tflite.*(truncated or corrupt)"):
        TFLiteModel(path)


@pytest.mark.parametrize("content", [b"", b"garbage!" * 10])
def test_non_tflite_file_is_refused(tmp_path: Path, content: bytes) -> None:
    path, manifest = copy_model(tmp_path, OCR_MODEL)
    path.write_bytes(content)
    manifest["sha256"] = sha256_of(content)
    write_manifest(path, manifest)
    with pytest.raises(ModelError, match="not a TFLite flatbuffer"):
        TFLiteModel(path)


def test_missing_model_and_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="nothing.json"):
        TFLiteModel(tmp_path / "nothing.tflite")
    path, _ = copy_model(tmp_path, OCR_MODEL)
    path.unlink()
    with pytest.raises(ModelNotFound, match="plate_ocr.tflite: model file not found"):
        TFLiteModel(path)


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ("[]", "must be a JSON object"),
])
def test_unparseable_manifest(tmp_path: Path, text: str, message: str) -> None:
    path, _ = copy_model(tmp_path, OCR_MODEL)
    path.with_suffix(".json").write_text(text)
    with pytest.raises(ModelError, match=message):
        TFLiteModel(path)


@pytest.mark.parametrize("mutate, key", [
    (lambda m: m.pop("sha256"), "sha256"),
    (lambda m: m["input"].pop("shape"), "input.shape"),
    (lambda m: m["output"].update(kind="magic"), "output.kind"),
    (lambda m: m["input"].update(colour="cmyk"), "input.colour"),
    (lambda m: m["input"].update(colour="rgb"), "input.colour"),
    (lambda m: m["output"].update(kind="fixed_slot", pad_char="?"), "output.pad_char"),
])
def test_manifest_errors_name_the_key(mutate, key: str) -> None:
    data = json.loads(shipped_model(OCR_MODEL).with_suffix(".json").read_text())
    mutate(data)
    with pytest.raises(ModelError, match=f"m.json.*'{key}'"):
        Manifest.from_dict(data, "m.json")


def test_manifest_accepts_scale_normalisation_and_round_trips() -> None:
    data = json.loads(shipped_model(OCR_MODEL).with_suffix(".json").read_text())
    data["input"]["normalisation"] = {"scale": 1 / 127.5, "mean": [127.5]}
    manifest = Manifest.from_dict(data, "m.json")
    assert manifest.input.std == pytest.approx((127.5,)) and manifest.input.mean == (127.5,)
    again = Manifest.from_dict(manifest.to_dict(), "again.json")
    assert again == manifest


def test_quantised_input_uses_scale_and_zero_point_into_one_buffer() -> None:
    model = TFLiteModel(shipped_model(OCR_MODEL))
    height, width = model.manifest.input.height, model.manifest.input.width
    grey = np.tile(np.arange(width, dtype=np.uint8)[None, :] * 2, (height, 1))
    buffer = model._buffer
    model.prepare(grey)
    scale, zero = model._input["quantization"]
    expected = np.clip(np.rint(grey / 255.0 / scale + zero), -128, 127).astype(np.int8)
    assert np.array_equal(buffer.reshape(height, width), expected)
    outputs = model.invoke()
    assert model._buffer is buffer  # no new input buffer per frame
    assert all(o.dtype == np.float32 for o in outputs)
    seq = next(o for o in outputs if o.ndim == 3)
    assert np.allclose(seq.sum(axis=-1), 1.0, atol=0.08)  # dequantised softmax rows


def test_letterbox_geometry_maps_back_to_the_image() -> None:
    model = TFLiteModel(shipped_model(DETECTOR_MODEL))
    width, height = model.input_size
    image = np.zeros((height * 3, width * 2, 3), np.uint8)  # taller than the input: pads left/right
    geo = model.prepare(image)
    assert geo.scale_x == pytest.approx(1 / 3) and geo.pad_y == 0 and geo.pad_x > 0
    assert geo.to_image(geo.pad_x + 10, 20) == pytest.approx((30, 60))


@pytest.mark.parametrize("image", [np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10, 3), np.float32), np.zeros((1, 10, 3), np.uint8)])
def test_bad_images_are_refused(image: np.ndarray) -> None:
    model = TFLiteModel(shipped_model(OCR_MODEL))
    with pytest.raises(BadImage):
        model.prepare(image)


def test_threads_must_be_positive() -> None:
    with pytest.raises(ModelError, match="threads"):
        TFLiteModel(shipped_model(OCR_MODEL), threads=0)


def test_ocr_outputs_allow_ensemble_members_of_one_shape() -> None:
    from inference.runtime import _output_problem

    manifest = Manifest.load(shipped_model(OCR_MODEL).with_suffix(".json"))
    classes, regions = len(manifest.alphabet) + 1, len(manifest.region_classes)
    assert _output_problem("ctc", [(1, 32, classes), (1, 32, classes), (1, regions)], manifest) == ""
    assert _output_problem("ctc", [(1, 32, classes), (1, regions)], manifest) == ""
    # members that disagree on shape, or no character output at all, are refused by name
    assert "several of one shape" in _output_problem("ctc", [(1, 32, classes), (1, 16, classes)], manifest)
    assert "several of one shape" in _output_problem("ctc", [(1, regions)], manifest)
