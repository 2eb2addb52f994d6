"""`recognize` / `eval` robustness: whole-image reads scored as found, figures kept when the sheet
cannot be written, file names that are not UTF-8, out-of-memory images, a BOM in labels.csv,
checked manifest params and no empty candidate plate."""
from __future__ import annotations

import io
import json
import math
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from inference.errors import ModelError
from inference.manifest import Manifest
from inference.models_dir import DETECTOR_MODEL, OCR_MODEL
from inference.training.plates import PlateGenerator
from node.cli import main
from tests.unit.test_inference_runtime import copy_model, write_manifest

pytestmark = pytest.mark.unit

# b'caf\xe9.jpg': a Latin-1 name on a Linux file system, as Python holds it (surrogate-escaped)
ODD = os.fsdecode(b"caf\xe9")


def plate_image(text: str) -> np.ndarray:
    return cv2.resize(PlateGenerator(0).clean_plate(text), (300, 150), interpolation=cv2.INTER_AREA)


def write_rgb(path: Path, image: np.ndarray) -> None:
    # imencode + write_bytes: OpenCV's imwrite crashes on a surrogate-escaped name
    ok, data = cv2.imencode(path.suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(data.tobytes())


def close_up(text: str, width: int = 440, height: int = 230) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A 300x150 plate on a plain grey image, filling about 45 % of it: `recognize` reads it as
    a crop and reports the whole image as its box (IoU with the plate's box about 0.44)."""
    image = np.full((height, width, 3), 120, np.uint8)
    x, y = (width - 300) // 2, (height - 150) // 2
    image[y:y + 150, x:x + 300] = plate_image(text)
    return image, (x, y, 300, 150)


def scene_folder(tmp_path: Path, labels: dict[str, list[tuple[tuple[int, int, int, int], str]]],
                 images: dict[str, np.ndarray]) -> Path:
    folder = tmp_path / "scenes"
    folder.mkdir(exist_ok=True)
    for stem, image in images.items():
        write_rgb(folder / f"{stem}.png", image)
        rows = [f"{stem}.png\t{x}\t{y}\t{w}\t{h}\t{text}" for (x, y, w, h), text in labels[stem]]
        (folder / f"{stem}.txt").write_text("\n".join(rows) + "\n")
    return folder


# 1. a whole-image reading of a close-up is the plate found, not a miss and a false positive


def test_eval_counts_a_correct_whole_image_read_of_a_close_up(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image, box = close_up("7XYZ123")
    folder = scene_folder(tmp_path, {"close": [(box, "7XYZ123")]}, {"close": image})
    assert main(["recognize", "--json", str(folder / "close.png")]) == 0
    plates = json.loads(capsys.readouterr().out)["plates"]
    assert plates[0]["plate"] == "7XYZ123" and plates[0]["box"] == [0, 0, 440, 230]  # read as a crop
    assert main(["eval", str(folder), "--json", "--sheet", str(tmp_path / "s.html")]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["reading"]["exact_pct"] == 100.0
    assert figures["reported_plates"]["recall_pct"] == 100.0
    assert figures["reported_plates"]["precision_pct"] == 100.0
    assert "7XYZ123" not in (tmp_path / "s.html").read_text().split("misreads")[-1]


def test_eval_matches_a_whole_image_reading_by_text_then_by_size(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from inference.recognizer import PlateResult, Recognizer

    image = np.full((400, 800, 3), 120, np.uint8)
    big, small = ((100, 100, 360, 180), "7XYZ123"), ((600, 300, 120, 60), "KLM4821")
    reads = {"KLM4821": "KLM4821", "ZZZ999": "ZZZ999"}
    folder = scene_folder(tmp_path, {"a": [big, small], "b": [big, small]}, {"a": image, "b": image})

    def recognize_with_detections(self: Recognizer, img: np.ndarray) -> tuple[list, list]:
        text = reads["KLM4821"] if recognize_with_detections.calls == 0 else reads["ZZZ999"]
        recognize_with_detections.calls += 1
        return [], [PlateResult((0, 0, img.shape[1], img.shape[0]), text, 0.9, "ca", 0.8, [(text, 0.9)])]

    recognize_with_detections.calls = 0
    monkeypatch.setattr(Recognizer, "recognize_with_detections", recognize_with_detections)
    assert main(["eval", str(folder), "--json", "--sheet", str(tmp_path / "s.html")]) == 0
    figures = json.loads(capsys.readouterr().out)
    # a: the whole-image read is the small plate's text: it goes to that plate (exact), the big one is missed
    # b: a misread goes to the largest plate; the small one is missed
    assert figures["reading"]["plates"] == 4 and figures["reading"]["exact_pct"] == 25.0
    assert figures["reported_plates"]["recall_pct"] == 50.0 and figures["reported_plates"]["precision_pct"] == 100.0
    sheet = (tmp_path / "s.html").read_text()
    assert "ZZZ999" in sheet  # b's reading, shown against the big plate's truth


def test_a_part_box_is_still_matched_by_iou_alone() -> None:
    from inference.recognizer import PlateResult
    from node.commands.evaluate import whole_image_matches

    truths = [(100, 100, 360, 180)]
    part = PlateResult((0, 0, 400, 200), "7XYZ123", 0.9, None, 0.0, [])  # not the whole 800x400 image
    whole = PlateResult((0, 0, 800, 400), "7XYZ123", 0.9, None, 0.0, [])
    assert whole_image_matches(truths, ["7XYZ123"], [part], [], 800, 400) == []
    assert whole_image_matches(truths, ["7XYZ123"], [whole], [], 800, 400) == [(0, 0)]
    assert whole_image_matches(truths, ["7XYZ123"], [whole], [(0, 5)], 800, 400) == []  # already matched
    assert whole_image_matches([(700, 300, 300, 150)], ["X"], [whole], [], 800, 400) == []  # mostly outside


# 2. the figures survive a sheet that cannot be written


def crop_folder(tmp_path: Path, names: dict[str, str], truth: dict[str, str] | None = None) -> Path:
    folder = tmp_path / "crops"
    folder.mkdir()
    rows = ["file,state,plate"]
    for name, text in names.items():
        write_rgb(folder / name, plate_image(text))
        rows.append(f"{name},ca,{(truth or {}).get(name, text)}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.mark.parametrize("as_json", [True, False])
def test_eval_prints_the_figures_when_the_sheet_cannot_be_written(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                  as_json: bool) -> None:
    folder = crop_folder(tmp_path, {"p.png": "ABC1234", "q.png": "KLM4821"}, {"q.png": "WRONG1"})
    sheet = tmp_path / "missing" / "s.html"
    code = main(["eval", str(folder), "--sheet", str(sheet), *(["--json"] if as_json else [])])
    out, err = capsys.readouterr()
    assert code == 3
    assert f"cannot write the misread sheet {sheet}" in err
    if as_json:
        figures = json.loads(out)
        assert figures["reading"]["plates"] == 2 and figures["reading"]["exact_pct"] == 50.0
    else:
        assert "reading: exact 50.0% of 2" in out and "misreads sheet" not in out
    assert not (tmp_path / "missing").exists()


def test_eval_help_says_what_exit_status_a_lost_sheet_gives(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert "3 the figures were printed but the misread sheet could not be written" in " ".join(capsys.readouterr().out.split())


def test_a_failed_sheet_write_leaves_the_old_sheet_and_no_partial_file(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from node.commands import evaluate

    sheet = tmp_path / "s.html"
    sheet.write_text("old sheet")

    def fail(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        evaluate.write_sheet(sheet, "t", [], {})
    assert sheet.read_text() == "old sheet" and sorted(p.name for p in tmp_path.iterdir()) == ["s.html"]


# 3. file names that are not UTF-8


def test_eval_writes_a_sheet_naming_a_file_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image, box = close_up("7XYZ123")
    folder = tmp_path / "scenes"
    folder.mkdir()
    write_rgb(folder / f"{ODD}.png", image)
    (folder / f"{ODD}.txt").write_text(f"x\t{box[0]}\t{box[1]}\t{box[2]}\t{box[3]}\tWRONG1\n")  # a misread
    sheet = tmp_path / "s.html"
    assert main(["eval", str(folder), "--sheet", str(sheet)]) == 0  # human output, on capsys' strict UTF-8
    out = capsys.readouterr().out
    assert "reading: exact 0.0% of 1" in out and f"misreads sheet: {sheet}" in out
    page = sheet.read_bytes().decode("utf-8")  # whole and valid UTF-8
    assert "caf\\xe9.png" in page and "WRONG1" in page and page.endswith("</html>")


@pytest.mark.parametrize("encoding", ["utf-8", "ascii"])
def test_recognize_human_output_survives_a_name_that_is_not_utf8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  encoding: str) -> None:
    odd, good = tmp_path / f"{ODD}.png", tmp_path / "good.png"
    write_rgb(odd, plate_image("7XYZ123"))
    write_rgb(good, plate_image("ABC1234"))
    stdout = io.TextIOWrapper(io.BytesIO(), encoding=encoding, errors="strict")
    monkeypatch.setattr(sys, "stdout", stdout)
    assert main(["recognize", str(odd), str(good)]) == 0
    stdout.flush()
    lines = stdout.buffer.getvalue().decode(encoding).splitlines()
    assert lines[0].startswith(f"{tmp_path}/caf\\xe9.png: 7XYZ123 (")
    assert lines[1].startswith(f"{good}: ABC1234 (")


# 4. an image too large for the memory there is
HUGE = np.full((900, 1600, 3), 120, np.uint8)


def huge_and_good(tmp_path: Path) -> tuple[Path, Path]:
    """huge.png (1600x900, no plate) and good.png (ABC1234) in tmp_path."""
    huge, good = tmp_path / "huge.png", tmp_path / "good.png"
    write_rgb(huge, HUGE)
    write_rgb(good, plate_image("ABC1234"))
    return huge, good


def short_of_memory(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    """Recognizer.`method` runs out of memory on a 1600 px wide image, and works on the others."""
    from inference.recognizer import Recognizer

    real = getattr(Recognizer, method)

    def patched(self: Recognizer, image: np.ndarray):
        if image.shape[1] == 1600:
            raise MemoryError
        return real(self, image)

    monkeypatch.setattr(Recognizer, method, patched)


@pytest.mark.parametrize("as_json", [True, False])
def test_recognize_goes_on_after_an_image_runs_out_of_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch, as_json: bool) -> None:
    huge, good = huge_and_good(tmp_path)
    short_of_memory(monkeypatch, "recognize")
    code = main(["recognize", *(["--json"] if as_json else []), str(huge), str(good)])
    out, err = capsys.readouterr()
    assert code == 1
    assert f"alpr-node: error: {huge}: out of memory on this image (1600x900 px)" in err
    lines = out.splitlines()
    if as_json:
        first = json.loads(lines[0])
        assert set(first) == {"file", "error"} and first["file"] == str(huge) and "1600x900" in first["error"]
        assert json.loads(lines[1])["plates"][0]["plate"] == "ABC1234"
    else:
        assert len(lines) == 1 and lines[0].startswith(f"{good}: ABC1234")


@pytest.mark.parametrize("failure", [MemoryError(), cv2.error("OpenCV(4.10.0) alloc.cpp:73: error: (-4:Insufficient "
                                                                 "memory) Failed to allocate 4320000 bytes")])
def test_an_image_that_runs_out_of_memory_decoding_is_named_with_its_header_size(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, failure: Exception) -> None:
    huge, good = huge_and_good(tmp_path)
    data, imdecode = huge.read_bytes(), cv2.imdecode

    def decode(buf: np.ndarray, flags: int) -> np.ndarray:
        if buf.tobytes() == data:
            raise failure
        return imdecode(buf, flags)

    monkeypatch.setattr(cv2, "imdecode", decode)
    assert main(["recognize", "--json", str(huge), str(good)]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0] == {"file": str(huge), "error": "out of memory on this image (1600x900 px): too large to process here"}
    assert lines[1]["plates"][0]["plate"] == "ABC1234"


def test_eval_scores_the_others_when_one_image_runs_out_of_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    folder = crop_folder(tmp_path, {"good.png": "ABC1234"})
    write_rgb(folder / "huge.png", HUGE)
    with (folder / "labels.csv").open("a") as handle:
        handle.write("huge.png,ca,KLM4821\n")
    short_of_memory(monkeypatch, "recognize_with_detections")
    assert main(["eval", str(folder), "--json", "--sheet", str(tmp_path / "s.html")]) == 1
    figures = json.loads(capsys.readouterr().out)
    assert figures["unreadable"] == 1 and "1600x900" in figures["errors"][0]["error"]
    assert figures["reading"]["plates"] == 1 and figures["reading"]["exact_pct"] == 100.0


# 5. labels.csv saved by Excel as "CSV UTF-8" starts with a byte order mark


def test_labels_csv_with_a_byte_order_mark(tmp_path: Path) -> None:
    from inference.datasets import read_folder

    write_rgb(tmp_path / "p.png", plate_image("ABC1234"))
    (tmp_path / "labels.csv").write_bytes(b"\xef\xbb\xbffile,state,plate\r\np.png,ca,ABC1234\r\n")
    items = read_folder(tmp_path)
    assert [(i.path.name, i.plates[0].text, i.region) for i in items] == [("p.png", "ABC1234", "ca")]


# 6. manifest params are checked at load, naming the file and the key


@pytest.mark.parametrize("key", ["score_threshold", "tile_score_threshold"])
@pytest.mark.parametrize("value", [None, "high", math.nan, math.inf, 1.5, -0.1, True, [0.5]])
def test_bad_detector_thresholds_are_refused_naming_file_and_key(tmp_path: Path, key: str, value: object) -> None:
    path, manifest = copy_model(tmp_path, DETECTOR_MODEL)
    manifest["output"]["params"][key] = value
    write_manifest(path, manifest)  # NaN / Infinity: as Python writes them
    with pytest.raises(ModelError, match=rf"plate_detector\.json: manifest key 'output\.params\.{key}' must be"):
        Manifest.load(path.with_suffix(".json"))


def test_the_detector_refuses_a_null_threshold_with_a_model_error(tmp_path: Path) -> None:
    from inference.detector import PlateDetector

    path, manifest = copy_model(tmp_path, DETECTOR_MODEL)
    manifest["output"]["params"]["score_threshold"] = None
    write_manifest(path, manifest)
    with pytest.raises(ModelError, match=r"plate_detector\.json: .*'output\.params\.score_threshold'"):
        PlateDetector(path)


@pytest.mark.parametrize("value", [None, "10", 0, -3, 2.5, True])
def test_a_bad_ocr_max_len_is_refused(tmp_path: Path, value: object) -> None:
    path, manifest = copy_model(tmp_path, OCR_MODEL)
    manifest["output"]["params"]["max_len"] = value
    write_manifest(path, manifest)
    with pytest.raises(ModelError, match=r"plate_ocr\.json: manifest key 'output\.params\.max_len' must be a positive"):
        Manifest.load(path.with_suffix(".json"))


@pytest.mark.parametrize("name", [DETECTOR_MODEL, OCR_MODEL])
def test_good_params_still_load(tmp_path: Path, name: str) -> None:
    path, manifest = copy_model(tmp_path, name)
    manifest["output"]["params"].update({"score_threshold": 0, "tile_score_threshold": 1} if name == DETECTOR_MODEL else {})
    manifest["output"]["params"]["note"] = "free-form keys stay free"
    write_manifest(path, manifest)
    assert Manifest.load(path.with_suffix(".json")).params["note"] == "free-form keys stay free"


# 7. no empty candidate plate: reading nothing is not a plate a person could be shown


def test_reported_plates_hold_no_empty_candidate(monkeypatch: pytest.MonkeyPatch) -> None:
    from inference.detector import Detection, PlateDetector
    from inference.ocr import PlateReader, PlateText
    from inference.recognizer import Recognizer

    detector, reader = PlateDetector(), PlateReader()
    monkeypatch.setattr(detector, "detect", lambda image, windows=False: [Detection((100, 100, 200, 100), 0.9)])
    faint = PlateText("7ABC123", 0.6, [0.9] * 7, [("7ABC123", 0.6), ("7A8C123", 0.2), ("", 0.1), ("7ABC12", 0.05)])
    monkeypatch.setattr(reader, "read_views", lambda crop, views=3: faint)
    monkeypatch.setattr(reader, "read", lambda crop, settle=True: faint)
    results = Recognizer(detector, reader, windows="off", tiles="off", zoom_out="off",
                         whole_image="never").recognize(np.zeros((480, 640, 3), np.uint8))
    assert [r.plate for r in results] == ["7ABC123"]
    assert [t for t, _ in results[0].candidates] == ["7ABC123", "7A8C123", "7ABC12"]


def test_the_misread_sheet_is_private_and_not_written_through_a_planted_link(tmp_path: Path) -> None:
    # It holds plate crops and their text.
    from node.commands import evaluate

    target = tmp_path / "elsewhere"
    target.write_text("not yours")
    (tmp_path / "s.html.tmp").symlink_to(target)
    sheet = tmp_path / "s.html"
    evaluate.write_sheet(sheet, "t", [], {})
    assert sheet.stat().st_mode & 0o777 == 0o600 and target.read_text() == "not yours"
