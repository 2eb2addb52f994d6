"""Review s20 of the inference side: manifest keys, load-time output checks, SSD output order,
class-agnostic suppression, eval timings and figures, missing-model messages.

Models are the shipped ones with crafted manifests, or tiny ones built here with LiteRT's own
flatbuffer schema (no TensorFlow): their outputs are constants, whatever the input.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from inference.detect_decode import decode_ssd, decode_yolo, ssd_order_from_names
from inference.detector import PlateDetector
from inference.errors import ModelError, ModelNotFound
from inference.manifest import (
    INPUT_KEYS,
    NORMALISATION_KEYS,
    OUTPUT_KEYS,
    TOP_KEYS,
    Manifest,
)
from inference.metrics import OcrScore
from inference.models_dir import DETECTOR_MODEL, OCR_MODEL, shipped_model
from inference.runtime import TFLiteModel
from node.cli import main

pytestmark = pytest.mark.unit

DOCS = Path(__file__).resolve().parents[2] / "docs" / "models.md"
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# -- a tiny TFLite model builder ----------------------------------------------------------------
def tiny_tflite(input_shape: list[int], outputs: list[np.ndarray], names: list[str] | None = None) -> bytes:
    """A float32 model whose outputs are the constants `outputs` (named `names`), whatever its
    input: out_k = const_k + mean(input) * 0, so that every output depends on the input."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT()
    model.version = 3
    buffers = [schema.BufferT()]
    tensors: list = []
    codes: list = []
    operators: list = []

    def tensor(shape: list[int], name: str, data: np.ndarray | None = None, kind: int = schema.TensorType.FLOAT32) -> int:
        buffer = schema.BufferT()
        if data is not None:
            buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
        buffers.append(buffer)
        t = schema.TensorT()
        t.shape, t.type, t.name, t.buffer = list(shape), kind, name, len(buffers) - 1
        tensors.append(t)
        return len(tensors) - 1

    def operator(code: int, inputs: list[int], outs: list[int], options_type: int, options: object) -> None:
        index = next((i for i, c in enumerate(codes) if c.builtinCode == code), None)
        if index is None:
            c = schema.OperatorCodeT()
            c.builtinCode = c.deprecatedBuiltinCode = code
            c.version = 1
            codes.append(c)
            index = len(codes) - 1
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = index, inputs, outs
        op.builtinOptionsType, op.builtinOptions = options_type, options
        operators.append(op)

    source = tensor(input_shape, "input")
    axes = tensor([len(input_shape) - 1], "axes", np.arange(1, len(input_shape), dtype=np.int32), schema.TensorType.INT32)
    mean = tensor([1], "mean")
    reducer = schema.ReducerOptionsT()
    reducer.keepDims = False
    operator(schema.BuiltinOperator.MEAN, [source, axes], [mean], schema.BuiltinOptions.ReducerOptions, reducer)
    zero = tensor([1], "zero", np.zeros(1, np.float32))
    nothing = tensor([1], "nothing")
    operator(schema.BuiltinOperator.MUL, [mean, zero], [nothing], schema.BuiltinOptions.MulOptions, schema.MulOptionsT())
    results = []
    for i, value in enumerate(outputs):
        value = np.asarray(value, np.float32)
        const = tensor(list(value.shape), f"const{i}", value)
        out = tensor(list(value.shape), names[i] if names else f"out{i}")
        operator(schema.BuiltinOperator.ADD, [const, nothing], [out], schema.BuiltinOptions.AddOptions, schema.AddOptionsT())
        results.append(out)
    graph = schema.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs, graph.operators, graph.name = tensors, [source], results, operators, "main"
    model.subgraphs, model.buffers, model.operatorCodes = [graph], buffers, codes
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def write_model(path: Path, content: bytes, manifest: dict) -> Path:
    """`path` (.tflite) and its manifest with the hash filled in."""
    path.write_bytes(content)
    manifest = dict(manifest, sha256=hashlib.sha256(content).hexdigest())
    path.with_suffix(".json").write_text(json.dumps(manifest))
    return path


def detector_manifest(kind: str, classes: list[str] | None = None, params: dict | None = None) -> dict:
    output: dict = {"kind": kind}
    if classes is not None:
        output["classes"] = classes
    if params is not None:
        output["params"] = params
    return {"name": "tiny", "version": "1", "sha256": "",
            "input": {"shape": [1, 64, 64, 3], "dtype": "float32", "colour": "rgb", "resize": "stretch"},
            "output": output}


def ssd_outputs(score: float = 0.9, class_id: int = 0, n: int = 10) -> dict[str, np.ndarray]:
    """One detection at normalised (ymin, xmin, ymax, xmax) = (0.4, 0.3, 0.5, 0.6)."""
    boxes = np.zeros((1, n, 4), np.float32)
    boxes[0, 0] = [0.4, 0.3, 0.5, 0.6]
    classes = np.zeros((1, n), np.float32)
    classes[0, 0] = class_id
    scores = np.zeros((1, n), np.float32)
    scores[0, 0] = score
    return {"boxes": boxes, "classes": classes, "scores": scores, "count": np.array([1], np.float32)}


TF1 = ["boxes", "classes", "scores", "count"]
TF2 = ["scores", "boxes", "count", "classes"]  # the order TF2 Object Detection API exports list them in
OP_NAMES = {"boxes": "TFLite_Detection_PostProcess", "classes": "TFLite_Detection_PostProcess:1",
            "scores": "TFLite_Detection_PostProcess:2", "count": "TFLite_Detection_PostProcess:3"}


def shipped_manifest(name: str) -> dict:
    return json.loads(shipped_model(name).with_suffix(".json").read_text())


def frame() -> np.ndarray:
    return np.full((480, 640, 3), 120, np.uint8)


# -- 1. unknown and conflicting manifest keys -----------------------------------------------------
@pytest.mark.parametrize("name, mutate, key, nearest", [
    (DETECTOR_MODEL, lambda m: m["input"].update(color=m["input"].pop("colour")), "input.color", "input.colour"),
    (DETECTOR_MODEL, lambda m: m["input"].update(normalization=m["input"].pop("normalisation")),
     "input.normalization", "input.normalisation"),
    (OCR_MODEL, lambda m: m["output"].update(blank=m["output"].pop("blank_index")), "output.blank", "output.blank_index"),
    (DETECTOR_MODEL, lambda m: m["output"].update(class_names=m["output"].pop("classes")), "output.class_names",
     "output.classes"),
    (DETECTOR_MODEL, lambda m: m["input"]["normalisation"].update(stdev=[255.0]), "input.normalisation.stdev",
     "input.normalisation.std"),
    (OCR_MODEL, lambda m: m.update(metric={}), "metric", "metrics"),
    (OCR_MODEL, lambda m: m.update(notes="x"), "notes", ""),
])
def test_unknown_manifest_keys_are_refused_naming_file_key_and_nearest(name: str, mutate, key: str, nearest: str) -> None:
    data = shipped_manifest(name)
    mutate(data)
    with pytest.raises(ModelError, match=rf"^m\.json: manifest key '{re.escape(key)}' is not a known key") as info:
        Manifest.from_dict(data, "m.json")
    if nearest:
        assert f"did you mean '{nearest}'?" in str(info.value)
    else:
        assert "the nearest known key is '" in str(info.value)


def test_a_misspelt_key_in_a_model_file_is_refused_at_load(tmp_path: Path) -> None:
    content = shipped_model(OCR_MODEL).read_bytes()
    manifest = shipped_manifest(OCR_MODEL)
    manifest["input"]["color"] = manifest["input"].pop("colour")
    path = write_model(tmp_path / "ocr.tflite", content, manifest)
    with pytest.raises(ModelError, match=r"ocr\.json: manifest key 'input\.color'.*did you mean 'input\.colour'"):
        TFLiteModel(path)


def test_scale_beside_std_is_refused() -> None:
    data = shipped_manifest(DETECTOR_MODEL)
    data["input"]["normalisation"] = {"scale": 1 / 255, "std": [2.0]}
    with pytest.raises(ModelError, match=r"m\.json: manifest key 'input\.normalisation' has both 'scale' and 'std'"):
        Manifest.from_dict(data, "m.json")
    data["input"]["normalisation"] = {"scale": 1 / 127.5, "mean": [127.5]}  # scale with a mean: fine
    assert Manifest.from_dict(data, "m.json").input.mean == (127.5,)


@pytest.mark.parametrize("name", [DETECTOR_MODEL, OCR_MODEL])
def test_shipped_manifests_load_and_round_trip(name: str) -> None:
    manifest = Manifest.load(shipped_model(name).with_suffix(".json"))
    assert Manifest.from_dict(manifest.to_dict(), "again.json") == manifest
    free = dict(shipped_manifest(name), training={"anything": [1]}, metrics={"goes": {"here": 1}})
    Manifest.from_dict(free, "free.json")  # informational objects stay free-form inside


def test_manifests_the_training_pipeline_writes_load() -> None:
    from inference.plate_formats import PlateFormats
    from inference.training import train_detector, train_ocr

    for data in (train_detector.manifest_for("int8", {"hyper": {}}, {"size_bytes": 1}, 0.6, 0.5),
                 train_ocr.manifest_for("int8", {"hyper": {}}, {}, PlateFormats.from_labels([("ca", "7ABC123")]))):
        Manifest.from_dict(dict(data, sha256="0" * 64), "train.json")


def test_every_key_the_docs_show_is_allowed() -> None:
    text = DOCS.read_text(encoding="utf-8")
    example = json.loads(re.search(r"## The manifest.*?```json\n(.*?)```", text, re.DOTALL).group(1))
    assert set(example) <= set(TOP_KEYS)
    assert set(example["input"]) <= set(INPUT_KEYS)
    assert set(example["input"]["normalisation"]) <= set(NORMALISATION_KEYS)
    assert set(example["output"]) <= set(OUTPUT_KEYS)
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", text, re.MULTILINE))
    levels = {"": TOP_KEYS, "input.": INPUT_KEYS, "output.": OUTPUT_KEYS}
    for key in documented:
        where, _, last = key.rpartition(".")
        if where in ("input", "output", ""):
            assert last in levels[f"{where}." if where else ""], key


@pytest.mark.parametrize("order, kind, message", [
    (["boxes", "classes", "scores"], "ssd_postprocess", "must list each of boxes, classes, scores, count once"),
    (["boxes", "classes", "scores", "scores"], "ssd_postprocess", "must list each of"),
    ("boxes,classes,scores,count", "ssd_postprocess", "must list each of"),
    (TF1, "yolo", "is for output kind 'ssd_postprocess' only"),
])
def test_ssd_output_order_key_is_checked(order, kind: str, message: str) -> None:
    data = detector_manifest(kind, params={"order": order})
    data["sha256"] = "0" * 64
    with pytest.raises(ModelError, match=rf"m\.json: manifest key 'output\.params\.order' {message}"):
        Manifest.from_dict(data, "m.json")


# -- 2. outputs that cannot be of the declared kind are refused at load ---------------------------
@pytest.mark.parametrize("outputs, message", [
    # a raw SSD head (box encodings and class logits) declared as the post-processed outputs
    ([np.zeros((1, 10, 4)), np.zeros((1, 10, 4)), np.zeros((1, 10, 91)), np.zeros((1, 10, 4))], "boxes output"),
    ([np.zeros((1, 10, 4)), np.zeros((1, 10)), np.zeros((1, 12)), np.zeros((1,))], r"shape \[1, 10\]"),
    ([np.zeros((1, 10, 4)), np.zeros((1, 10)), np.zeros((1, 10)), np.zeros((1, 10))], "count output"),
    ([np.zeros((1, 10, 4)), np.zeros((1, 10))], "expected 4 outputs"),
])
def test_ssd_outputs_of_the_wrong_shapes_are_refused_naming_the_file(tmp_path: Path, outputs, message: str) -> None:
    path = write_model(tmp_path / "ssd.tflite", tiny_tflite([1, 64, 64, 3], outputs), detector_manifest("ssd_postprocess"))
    with pytest.raises(ModelError, match=rf"ssd\.tflite: output does not match manifest kind 'ssd_postprocess': .*{message}"):
        PlateDetector(path)


@pytest.mark.parametrize("order", [TF1, TF2])
def test_ssd_outputs_load_in_either_order(tmp_path: Path, order: list[str]) -> None:
    arrays = ssd_outputs()
    path = write_model(tmp_path / "ssd.tflite", tiny_tflite([1, 64, 64, 3], [arrays[r] for r in order]),
                       detector_manifest("ssd_postprocess"))
    found = PlateDetector(path, score_threshold=0.5).detect(frame())
    assert [d.box for d in found] == [(192, 192, 192, 48)]


@pytest.mark.parametrize("kind, classes, shape, message", [
    ("yolov8", None, (1, 3, 100), "rows have 3 values, need at least 5"),
    ("yolov8", None, (1, 4, 100), "rows have 4 values, need at least 5"),  # a box and no score at all
    ("yolo", None, (1, 100, 4), "rows have 4 values, need at least 5"),
    ("yolov8", ["plate", "car"], (1, 7, 100), "no output dimension equals 6"),
    ("yolo", ["plate", "car"], (1, 100, 6), "no output dimension equals 7"),
])
def test_yolo_rows_too_short_or_inconsistent_with_classes_are_refused(tmp_path: Path, kind: str, classes, shape,
                                                                       message: str) -> None:
    path = write_model(tmp_path / "det.tflite", tiny_tflite([1, 64, 64, 3], [np.zeros(shape)]),
                       detector_manifest(kind, classes))
    with pytest.raises(ModelError, match=rf"det\.tflite: output does not match manifest kind '{kind}': {message}"):
        PlateDetector(path)


def test_a_model_refused_at_load_stops_recognize_before_any_image(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    raw_head = [np.zeros((1, 10, 4)), np.zeros((1, 10, 4)), np.zeros((1, 10, 91)), np.zeros((1, 10, 4))]
    path = write_model(tmp_path / "ssd.tflite", tiny_tflite([1, 64, 64, 3], raw_head), detector_manifest("ssd_postprocess"))
    image = tmp_path / "grey.png"
    cv2.imwrite(str(image), frame())
    assert main(["recognize", "--json", "--detector", str(path), str(image)]) == 2
    assert f"{path}: output does not match manifest kind 'ssd_postprocess'" in capsys.readouterr().err


# -- 3. SSD in TF2 order with a detection scored exactly 1.0 ---------------------------------------
@pytest.mark.parametrize("class_id", [0, 1, 3])
def test_ssd_tie_is_broken_by_the_values_a_score_can_have(class_id: int) -> None:
    # one detection scored exactly 1.0: classes and scores are both whole numbers
    arrays = ssd_outputs(score=1.0, class_id=class_id)
    for order in (TF1, TF2):
        out = decode_ssd([arrays[r] for r in order], (100, 100), score_threshold=0.5)
        assert [(b.score, b.class_id) for b in out] == [(1.0, class_id)]
    # no detection at all: nothing to tell apart, nothing found
    arrays["count"][0] = 0
    assert decode_ssd([arrays[r] for r in TF2], (100, 100), score_threshold=0.0) == []


@pytest.mark.parametrize("order", [TF1, TF2])
def test_ssd_tie_is_broken_by_a_given_order(order: list[str]) -> None:
    arrays = ssd_outputs(score=1.0, class_id=3)  # both whole and both positive: the values cannot tell
    out = decode_ssd([arrays[r] for r in order], (100, 100), score_threshold=0.5, order=order)
    assert [(b.score, b.class_id) for b in out] == [(1.0, 3)]
    assert (out[0].x1, out[0].y1, out[0].x2, out[0].y2) == pytest.approx((30, 40, 60, 50))


def test_ssd_order_from_the_post_process_tensor_names() -> None:
    assert ssd_order_from_names([OP_NAMES[r] for r in TF2]) == tuple(TF2)
    assert ssd_order_from_names(["scope/" + OP_NAMES[r] for r in TF1]) == tuple(TF1)
    assert ssd_order_from_names(["StatefulPartitionedCall:1", "StatefulPartitionedCall:3",
                                 "StatefulPartitionedCall:0", "StatefulPartitionedCall:2"]) is None
    assert ssd_order_from_names([OP_NAMES["boxes"]] * 4) is None


def test_ssd_detector_uses_the_tensor_names_in_tf2_order(tmp_path: Path) -> None:
    # class 3 scored 1.0: both whole, both positive; read swapped it would be class 1 scored 3.0
    arrays = ssd_outputs(score=1.0, class_id=3)
    path = write_model(tmp_path / "ssd.tflite",
                       tiny_tflite([1, 64, 64, 3], [arrays[r] for r in TF2], [OP_NAMES[r] for r in TF2]),
                       detector_manifest("ssd_postprocess"))
    found = PlateDetector(path, score_threshold=0.5).detect(frame())
    assert [(d.box, d.score) for d in found] == [((192, 192, 192, 48), 1.0)]


def test_ssd_detector_uses_the_manifest_order(tmp_path: Path) -> None:
    # the declared order is what the detector decodes by (checked against the shapes at load)
    arrays = ssd_outputs(score=1.0, class_id=3)
    content = tiny_tflite([1, 64, 64, 3], [arrays[r] for r in TF2])  # names say nothing
    path = write_model(tmp_path / "ssd.tflite", content, detector_manifest("ssd_postprocess", None, {"order": TF2}))
    detector = PlateDetector(path, score_threshold=0.5)
    assert detector._ssd_order == tuple(TF2)
    assert [d.score for d in detector.detect(frame())] == [1.0]


def test_ssd_manifest_order_must_fit_the_outputs(tmp_path: Path) -> None:
    arrays = ssd_outputs()
    path = write_model(tmp_path / "ssd.tflite", tiny_tflite([1, 64, 64, 3], [arrays[r] for r in TF2]),
                       detector_manifest("ssd_postprocess", None, {"order": TF1}))
    with pytest.raises(ModelError, match=r"ssd\.tflite: output does not match.*output\.params\.order puts the boxes"):
        PlateDetector(path)


# -- 4. suppression across the classes kept as plates --------------------------------------------
def two_class_rows(first: int, second: int, classes: int = 2, n: int = 30) -> np.ndarray:
    """[1, 4+C, N] (v8 layout), normalised: two boxes on one plate, of classes `first` (0.9) and
    `second` (0.8)."""
    out = np.zeros((1, 4 + classes, n), np.float32)
    out[0, :4, :] = 0.01
    out[0, :4, 5] = [0.5, 0.5, 0.3, 0.1]
    out[0, 4 + first, 5] = 0.9
    out[0, :4, 9] = [0.505, 0.5, 0.3, 0.1]
    out[0, 4 + second, 9] = 0.8
    return out


def test_yolo_nms_runs_across_classes() -> None:
    rows = two_class_rows(0, 1)
    out = decode_yolo(rows, (640, 640), objectness=False, score_threshold=0.3, channels=(6,))
    assert [(round(b.score, 2), b.class_id) for b in out] == [(0.9, 0)]
    per_class = decode_yolo(rows, (640, 640), objectness=False, score_threshold=0.3, channels=(6,), class_agnostic=False)
    assert len(per_class) == 2


def test_a_non_plate_class_never_suppresses_a_plate() -> None:
    rows = two_class_rows(0, 1)  # class 0 "car" at 0.9 over class 1 "plate" at 0.8
    out = decode_yolo(rows, (640, 640), objectness=False, score_threshold=0.3, channels=(6,), keep_classes={1})
    assert [(round(b.score, 2), b.class_id) for b in out] == [(0.8, 1)]


def test_two_plate_classes_give_one_box_on_one_plate(tmp_path: Path) -> None:
    path = write_model(tmp_path / "v8.tflite", tiny_tflite([1, 64, 64, 3], [two_class_rows(0, 1)]),
                       detector_manifest("yolov8", ["plate_front", "plate_rear"]))
    assert len(PlateDetector(path, score_threshold=0.3).detect(frame())) == 1


def test_two_plate_classes_of_an_ssd_give_one_box_on_one_plate(tmp_path: Path) -> None:
    arrays = ssd_outputs(score=0.9, class_id=0)
    arrays["boxes"][0, 1] = [0.4, 0.31, 0.5, 0.61]
    arrays["classes"][0, 1] = 1
    arrays["scores"][0, 1] = 0.8
    arrays["count"][0] = 2
    path = write_model(tmp_path / "ssd.tflite", tiny_tflite([1, 64, 64, 3], [arrays[r] for r in TF1]),
                       detector_manifest("ssd_postprocess", ["plate_front", "plate_rear"]))
    assert [round(d.score, 2) for d in PlateDetector(path, score_threshold=0.3).detect(frame())] == [0.9]


# -- 5. eval times detection on every scored image ----------------------------------------------
def test_detector_counts_its_busy_time() -> None:
    detector = PlateDetector()
    assert detector.busy_ms == 0.0
    detector.detect(frame())
    first = detector.busy_ms
    assert first > 0
    detector.detect_zoomed_out(frame())
    assert detector.busy_ms > first


def test_eval_times_detection_on_images_without_a_plate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "scenes"
    folder.mkdir()
    cv2.imwrite(str(folder / "empty.png"), frame())
    (folder / "empty.txt").write_text("empty.png\t100\t100\t120\t30\tABC123\n")
    assert main(["eval", str(folder), "--json", "--sheet", str(tmp_path / "s.html")]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["reported_plates"]["predictions"] == 0  # nothing reported ...
    assert figures["ms"]["detect_median"] > 0  # ... and its detection still timed


# -- 6. a missing model file is named as such; region figures without regions are null -----------
def test_a_missing_model_file_is_reported_before_its_manifest(tmp_path: Path) -> None:
    missing = tmp_path / "nonexist.tflite"
    with pytest.raises(ModelNotFound, match=rf"^{re.escape(str(missing))}: model file not found"):
        TFLiteModel(missing)
    missing.with_suffix(".json").write_text(json.dumps(shipped_manifest(DETECTOR_MODEL)))
    with pytest.raises(ModelNotFound, match=rf"^{re.escape(str(missing))}: model file not found$"):
        TFLiteModel(missing)


def test_recognize_names_a_missing_detector_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "grey.png"
    cv2.imwrite(str(image), frame())
    missing = tmp_path / "nonexist.tflite"
    assert main(["recognize", "--detector", str(missing), str(image)]) == 2
    err = capsys.readouterr().err
    assert f"{missing}: model file not found" in err and "model manifest not found" not in err


def test_region_figure_is_null_without_region_labels() -> None:
    score = OcrScore()
    score.add("ABC123", "ABC123", ["ABC123"])
    assert score.as_dict()["region_top1_pct"] is None
    score.add("XYZ789", "XYZ789", ["XYZ789"], "ca", "ny")
    assert score.as_dict()["region_top1_pct"] == 0.0


def constant_ctc_ocr(tmp_path: Path, text: str) -> Path:
    """A CTC OCR without a region output that reads `text` from any crop."""
    steps = 16
    probs = np.full((1, steps, len(ALPHABET) + 1), 0.001, np.float32)
    path = [0] * steps
    for i, ch in enumerate(text):
        path[2 * i + 1] = ALPHABET.index(ch) + 1  # character, blank, character, ... (blank = 0)
    probs[0, np.arange(steps), path] = 1.0
    probs /= probs.sum(axis=-1, keepdims=True)
    manifest = {"name": "ctc", "version": "1", "sha256": "",
                "input": {"shape": [1, 32, 128, 1], "dtype": "float32", "colour": "grey", "resize": "stretch"},
                "output": {"kind": "ctc", "alphabet": ALPHABET, "blank_index": 0}}
    return write_model(tmp_path / "ctc.tflite", tiny_tflite([1, 32, 128, 1], [probs]), manifest)


def test_eval_region_figure_is_null_for_an_ocr_without_a_region_output(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    ocr = constant_ctc_ocr(tmp_path, "ABC123")
    folder = tmp_path / "crops"
    folder.mkdir()
    cv2.imwrite(str(folder / "p.png"), np.full((100, 200, 3), 200, np.uint8))
    (folder / "labels.csv").write_text("file,state,plate\np.png,ca,ABC123\n")
    args = ["eval", str(folder), "--ocr", str(ocr), "--sheet", str(tmp_path / "s.html")]
    assert main(args + ["--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["reading"]["exact_pct"] == 100.0
    assert figures["reading"]["region_top1_pct"] is None
    assert main(args) == 0
    assert "region top-1 n/a" in capsys.readouterr().out


def test_eval_region_figure_of_the_shipped_ocr_is_a_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.unit.test_recognize_cli import write_plate

    folder = tmp_path / "crops"
    folder.mkdir()
    write_plate(folder / "p.png", "ABC1234")
    (folder / "labels.csv").write_text("file,state,plate\np.png,ca,ABC1234\n")
    assert main(["eval", str(folder), "--json", "--sheet", str(tmp_path / "s.html")]) == 0
    assert isinstance(json.loads(capsys.readouterr().out)["reading"]["region_top1_pct"], float)

