"""Loading the shipped models, manifest checks and input preparation."""
from __future__ import annotations

import json
import re
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


# -- manifest values of the wrong type or range -------------------------------------------------
@pytest.mark.parametrize("mutate, key", [
    (lambda m: m["output"].update(params=0.5), "output.params"),
    (lambda m: m.update(training=[1, 2]), "training"),
    (lambda m: m.update(metrics="good"), "metrics"),
    (lambda m: m["input"].update(normalisation={"scale": "1/255"}), "input.normalisation.scale"),
    (lambda m: m["input"].update(normalisation={"scale": True}), "input.normalisation.scale"),
    (lambda m: m["input"].update(normalisation={"mean": ["0"], "std": [255]}), "input.normalisation.mean[0]"),
    (lambda m: m["input"].update(normalisation={"mean": [0], "std": 255}), "input.normalisation.std"),
    (lambda m: m["input"].update(normalisation={"mean": [0, 0, 0], "std": [255]}), "input.normalisation.mean"),
    (lambda m: m["input"].update(shape=[1, 32, True, 1]), "input.shape"),
    (lambda m: m["output"].update(blank_index="last"), "output.blank_index"),
    (lambda m: m["output"].update(blank_index=99), "output.blank_index"),
    (lambda m: m["output"].update(blank_index=5), "output.blank_index"),
    (lambda m: m["output"].update(region_classes="abc"), "output.region_classes"),
    (lambda m: m["output"].update(classes=["plate", 1]), "output.classes"),
    (lambda m: m["output"].update(alphabet=list("ABC")), "output.alphabet"),
])
def test_malformed_manifest_values_name_the_file_and_key(mutate, key: str) -> None:
    data = json.loads(shipped_model(OCR_MODEL).with_suffix(".json").read_text())
    mutate(data)
    with pytest.raises(ModelError, match=f"m\\.json: manifest key '{re.escape(key)}'"):
        Manifest.from_dict(data, "m.json")


def test_normalisation_per_channel_must_match_the_channel_count() -> None:
    data = json.loads(shipped_model(DETECTOR_MODEL).with_suffix(".json").read_text())
    data["input"]["normalisation"] = {"mean": [0.0, 0.0, 0.0], "std": [255.0, 255.0]}
    with pytest.raises(ModelError, match=r"d\.json: manifest key 'input\.normalisation\.std' has 2 values.*3 channel"):
        Manifest.from_dict(data, "d.json")
    data["input"]["normalisation"] = {"mean": [0.0], "std": [255.0, 255.0, 255.0]}  # one mean for all: fine
    assert Manifest.from_dict(data, "d.json").input.mean == (0.0,)


@pytest.mark.parametrize("given, kept", [(0, 0), (36, 36), (-1, 36)])
def test_ctc_blank_index_is_first_or_last(given: int, kept: int) -> None:
    data = json.loads(shipped_model(OCR_MODEL).with_suffix(".json").read_text())
    assert len(data["output"]["alphabet"]) == 36
    data["output"]["blank_index"] = given
    manifest = Manifest.from_dict(data, "m.json")
    assert manifest.blank_index == kept
    assert Manifest.from_dict(manifest.to_dict(), "again.json") == manifest


def test_malformed_manifest_is_refused_by_the_model_loader_naming_the_file(tmp_path: Path) -> None:
    path, manifest = copy_model(tmp_path, OCR_MODEL)
    manifest["output"]["params"] = 0.5
    write_manifest(path, manifest)
    with pytest.raises(ModelError, match=r"plate_ocr\.json: manifest key 'output\.params' must be an object"):
        TFLiteModel(path)


# -- integer inputs without quantisation (raw pixels), beside float and quantised ones ---------
FS_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_"


def fake_interpreter(dtype: type, quantization: tuple[float, int], shape: tuple[int, ...],
                     outputs: list[np.ndarray]) -> type:
    """An Interpreter stand-in (LiteRT's methods that TFLiteModel calls) with one input tensor of
    `dtype` and `quantization`, and fixed float `outputs`; it keeps the last input it was given.
    Building a real raw-uint8 model would need TensorFlow, which the unit tests do not."""

    class FakeInterpreter:
        fed: np.ndarray | None = None

        def __init__(self, model_content: bytes, num_threads: int) -> None:
            pass

        def allocate_tensors(self) -> None:
            pass

        def get_input_details(self) -> list[dict]:
            return [{"index": 0, "shape": np.array(shape, np.int32), "dtype": dtype, "quantization": quantization}]

        def get_output_details(self) -> list[dict]:
            return [{"index": i + 1, "shape": np.array(o.shape, np.int32), "dtype": np.float32, "quantization": (0.0, 0)}
                    for i, o in enumerate(outputs)]

        def set_tensor(self, index: int, value: np.ndarray) -> None:
            FakeInterpreter.fed = np.array(value, copy=True)

        def invoke(self) -> None:
            pass

        def get_tensor(self, index: int) -> np.ndarray:
            return outputs[index - 1]

    return FakeInterpreter


def fixed_slot_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dtype: str, quantization: tuple[float, int],
                     normalisation: dict | None, text: str = "ABC1234") -> tuple[Path, type]:
    """A fast-plate-ocr style fixed-slot OCR (1x70x140x1 grey) whose output reads `text`."""
    probs = np.full((1, 9, len(FS_ALPHABET)), 0.001, np.float32)
    for slot, ch in enumerate(text.ljust(9, "_")):
        probs[0, slot, FS_ALPHABET.index(ch)] = 1.0 - 0.001 * (len(FS_ALPHABET) - 1)
    fake = fake_interpreter(np.dtype(dtype).type, quantization, (1, 70, 140, 1), [probs])
    monkeypatch.setattr("inference.runtime.interpreter_class", lambda: fake)
    path = tmp_path / "fs.tflite"
    content = b"\x1c\x00\x00\x00TFL3" + bytes(24)  # just the flatbuffer identifier the loader checks
    path.write_bytes(content)
    inp: dict = {"shape": [1, 70, 140, 1], "dtype": dtype, "colour": "grey", "resize": "stretch"}
    if normalisation is not None:
        inp["normalisation"] = normalisation
    write_manifest(path, {"name": "fs", "version": "1", "sha256": sha256_of(content), "input": inp,
                          "output": {"kind": "fixed_slot", "alphabet": FS_ALPHABET, "pad_char": "_"}})
    return path, fake


def grey_ramp() -> np.ndarray:
    return (np.arange(70 * 140).reshape(70, 140) % 256).astype(np.uint8)


@pytest.mark.parametrize("dtype, normalisation, offset", [
    ("uint8", {"scale": 1}, 0),
    ("uint8", {"mean": [0], "std": [1]}, 0),
    ("int8", {"mean": [128], "std": [1]}, -128),
])
def test_unquantised_integer_input_gets_raw_pixel_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         dtype: str, normalisation: dict, offset: int) -> None:
    from inference.ocr import PlateReader

    path, fake = fixed_slot_model(tmp_path, monkeypatch, dtype, (0.0, 0), normalisation)
    reader = PlateReader(path)  # scale 0 used to be refused: "quantised input tensor has no scale"
    image = grey_ramp()
    assert reader.read(image).text == "ABC1234"
    assert fake.fed.dtype == np.dtype(dtype)
    assert np.array_equal(fake.fed.reshape(70, 140).astype(np.int32), image.astype(np.int32) + offset)


@pytest.mark.parametrize("dtype, normalisation", [
    ("uint8", None),                                # the default 1/255 would leave 0 or 1
    ("uint8", {"mean": [127.5], "std": [127.5]}),
    ("int8", {"scale": 1}),                         # 128..255 would be clipped to 127
])
def test_unquantised_integer_input_refuses_a_normalisation_that_loses_the_image(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dtype: str, normalisation: dict | None) -> None:
    path, _ = fixed_slot_model(tmp_path, monkeypatch, dtype, (0.0, 0), normalisation)
    with pytest.raises(ModelError, match=rf"fs\.tflite: input tensor is {dtype} without quantisation.*'input\.normalisation'"):
        TFLiteModel(path)


def test_float_and_quantised_inputs_are_unaffected_by_the_raw_pixel_rule(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    image = grey_ramp()
    path, fake = fixed_slot_model(tmp_path, monkeypatch, "float32", (0.0, 0), None)
    model = TFLiteModel(path)
    model.run(image)
    assert np.allclose(fake.fed.reshape(70, 140), image / 255.0, atol=1e-6)
    path, fake = fixed_slot_model(tmp_path, monkeypatch, "int8", (1 / 255, -128), None)
    model = TFLiteModel(path)
    model.run(image)
    assert np.array_equal(fake.fed.reshape(70, 140).astype(np.int32), image.astype(np.int32) - 128)


def test_ocr_outputs_allow_ensemble_members_of_one_shape() -> None:
    from inference.runtime import _output_problem

    manifest = Manifest.load(shipped_model(OCR_MODEL).with_suffix(".json"))
    classes, regions = len(manifest.alphabet) + 1, len(manifest.region_classes)
    assert _output_problem("ctc", [(1, 32, classes), (1, 32, classes), (1, regions)], manifest) == ""
    assert _output_problem("ctc", [(1, 32, classes), (1, regions)], manifest) == ""
    # members that disagree on shape, or no character output at all, are refused by name
    assert "several of one shape" in _output_problem("ctc", [(1, 32, classes), (1, 16, classes)], manifest)
    assert "several of one shape" in _output_problem("ctc", [(1, regions)], manifest)
