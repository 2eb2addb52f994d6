"""`alpr-node recognize` and `alpr-node eval` on images the project renders itself."""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from inference.training.plates import PlateGenerator
from node.cli import main

pytestmark = pytest.mark.unit


def write_plate(path: Path, text: str) -> None:
    plate = cv2.resize(PlateGenerator(0).clean_plate(text), (300, 150), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(path), cv2.cvtColor(plate, cv2.COLOR_RGB2BGR))


def test_json_output_one_line_per_image_and_errors_name_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "plate.png"
    write_plate(good, "ABC1234")
    missing = tmp_path / "missing.jpg"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    code = main(["recognize", "--json", str(missing), str(good), str(broken)])
    out, err = capsys.readouterr()
    assert code != 0
    assert f"alpr-node: error: {missing}: no such file" in err and f"alpr-node: error: {broken}: not a readable image" in err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 3  # one object per image given, in order; a failed one says why
    assert lines[0] == {"file": str(missing), "error": "no such file"}
    assert lines[2] == {"file": str(broken), "error": "not a readable image"}
    record = lines[1]
    assert record["file"] == str(good) and record["ms"] > 0
    assert record["plates"], "no plate read"
    best = record["plates"][0]
    assert best["plate"] == "ABC1234"
    assert len(best["box"]) == 4 and 0 < best["confidence"] <= 1
    assert 1 <= len(best["candidates"]) <= 10
    assert set(best["candidates"][0]) == {"plate", "confidence"}
    confidences = [p["confidence"] for p in record["plates"]]
    assert confidences == sorted(confidences, reverse=True)


def png_declaring(path: Path, width: int, height: int) -> None:
    """A tiny PNG file whose header declares width x height grey pixels (the data is one row)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(width + 1)))
                     + chunk(b"IEND", b""))


def test_an_image_opencv_refuses_to_decode_is_unreadable_not_a_crash(tmp_path: Path) -> None:
    from node.commands.recognize import load_image
    from node.errors import BadInput

    bomb = tmp_path / "bomb.png"
    png_declaring(bomb, 40000, 40000)  # 1.6 G pixels: over OpenCV's CV_IO_MAX_IMAGE_PIXELS
    with pytest.raises(BadInput, match=r"bomb\.png: not a readable image \(OpenCV: .*CV_IO_MAX_IMAGE_PIXELS"):
        load_image(bomb)


@pytest.mark.parametrize("as_json", [True, False])
def test_one_odd_image_does_not_stop_the_batch(tmp_path: Path, capsys: pytest.CaptureFixture[str], as_json: bool) -> None:
    line = tmp_path / "line.png"
    cv2.imwrite(str(line), np.full((1, 2000, 3), 120, np.uint8))  # the models cannot take an image 1 px high
    strip = tmp_path / "strip.png"
    cv2.imwrite(str(strip), np.full((3, 2000, 3), 120, np.uint8))  # fine, though its 3x3 tiles are 1 px high
    bomb = tmp_path / "bomb.png"
    png_declaring(bomb, 40000, 40000)
    good = tmp_path / "good.png"
    write_plate(good, "ABC1234")
    code = main(["recognize", *(["--json"] if as_json else []), str(line), str(bomb), str(strip), str(good)])
    out, err = capsys.readouterr()
    assert code == 1
    assert f"alpr-node: error: {line}: image too small: 2000x1" in err
    assert f"alpr-node: error: {bomb}: not a readable image (OpenCV:" in err
    assert str(strip) not in err and str(good) not in err
    if as_json:
        lines = [json.loads(text) for text in out.splitlines()]
        assert [record["file"] for record in lines] == [str(line), str(bomb), str(strip), str(good)]
        assert lines[0] == {"file": str(line), "error": "image too small: 2000x1"}
        assert set(lines[1]) == {"file", "error"} and lines[1]["error"].startswith("not a readable image (OpenCV:")
        assert "error" not in lines[2] and "plates" in lines[2]
        assert lines[3]["plates"][0]["plate"] == "ABC1234"
    else:
        assert [text.split(":")[0] for text in out.splitlines()] == [str(strip), str(good)]


def test_json_plates_are_sorted_by_confidence_not_by_rank(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from inference.recognizer import PlateResult, Recognizer, rank

    # read surer but from a box the detector doubts, against read less sure from a sure box:
    # the recognizer ranks the second first, the printed contract is by confidence
    badge = PlateResult((10, 10, 40, 20), "AUDI88", 0.9, None, 0.0, [("AUDI88", 0.9)], detection_score=0.3)
    plate = PlateResult((60, 60, 90, 45), "7XYZ123", 0.7, "ca", 0.8, [("7XYZ123", 0.7)], detection_score=0.95)
    assert rank(plate) > rank(badge)
    monkeypatch.setattr(Recognizer, "recognize", lambda self, image: sorted([badge, plate], key=rank, reverse=True))
    image = tmp_path / "two.png"
    write_plate(image, "7XYZ123")
    assert main(["recognize", "--json", str(image)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert [p["plate"] for p in record["plates"]] == ["AUDI88", "7XYZ123"]
    assert [p["confidence"] for p in record["plates"]] == [0.9, 0.7]
    assert main(["recognize", str(image)]) == 0
    human = capsys.readouterr().out
    assert human.index("AUDI88") < human.index("7XYZ123")


def test_eval_scores_the_other_images_when_one_cannot_be_used(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "crops"
    folder.mkdir()
    write_plate(folder / "good.png", "ABC1234")
    cv2.imwrite(str(folder / "line.png"), np.full((1, 2000, 3), 120, np.uint8))
    png_declaring(folder / "bomb.png", 40000, 40000)
    (folder / "labels.csv").write_text("file,state,plate\nline.png,ca,KLM4821\nbomb.png,ca,WPT509\ngood.png,ca,ABC1234\n")
    code = main(["eval", str(folder), "--json", "--sheet", str(tmp_path / "s.html")])
    out, err = capsys.readouterr()
    assert code == 1
    assert f"alpr-node: error: {folder / 'line.png'}: image too small: 2000x1" in err
    assert f"alpr-node: error: {folder / 'bomb.png'}: not a readable image (OpenCV:" in err
    figures = json.loads(out)
    assert figures["images"] == 3 and figures["unreadable"] == 2
    errors = {e["file"]: e["error"] for e in figures["errors"]}
    assert errors.keys() == {str(folder / "line.png"), str(folder / "bomb.png")}
    assert errors[str(folder / "line.png")] == "image too small: 2000x1"
    assert figures["reading"]["plates"] == 1 and figures["reading"]["exact_pct"] == 100.0


def test_human_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "p.png"
    write_plate(good, "7XYZ123")
    assert main(["recognize", str(good)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{good}: 7XYZ123 (")


def test_eval_scores_a_labelled_crop_folder_and_writes_a_sheet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "crops"
    folder.mkdir()
    rows = ["file,state,plate"]
    for i, text in enumerate(["ABC1234", "KLM4821"]):
        write_plate(folder / f"p{i}.png", text)
        rows.append(f"p{i}.png,ca,{text}")
    rows.append("p9.png,ca,WRONG1")  # labelled as another plate: one misread
    write_plate(folder / "p9.png", "ZZZ999")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    sheet = tmp_path / "sheet.html"
    assert main(["eval", str(folder), "--json", "--sheet", str(sheet)]) == 0
    out, err = capsys.readouterr()
    figures = json.loads(out)
    assert figures["reading"]["plates"] == 3
    assert figures["reading"]["exact_pct"] == pytest.approx(66.67)
    assert "3/3" in err  # progress bar
    page = sheet.read_text()
    assert "WRONG1" in page and "data:image/png;base64," in page and "ABC1234" not in page.split("misreads")[-1]


def test_eval_scores_scene_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.unit.test_inference_recognition import scene_with_plate

    folder = tmp_path / "scenes"
    folder.mkdir()
    scene, (x, y, w, h) = scene_with_plate(PlateGenerator(0).clean_plate("KLM4821"))
    cv2.imwrite(str(folder / "car.jpg"), cv2.cvtColor(scene, cv2.COLOR_RGB2BGR))
    (folder / "car.txt").write_text(f"car.jpg\t{x}\t{y}\t{w}\t{h}\tKLM4821\n")
    assert main(["eval", str(folder), "--json", "--sheet", str(tmp_path / "s.html")]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["detection"]["recall_pct"] == 100.0
    assert figures["reading"]["exact_pct"] == 100.0


def test_eval_of_an_empty_folder_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tmp_path)]) == 2
    assert "no labelled images" in capsys.readouterr().err


def test_eval_and_train_name_a_bad_cross_validation_split(capsys: pytest.CaptureFixture[str]) -> None:
    from inference.training.cli import main as train_main

    with pytest.raises(SystemExit):
        main(["eval", "anywhere", "--split", "fold"])
    assert "unknown split 'fold': use train, val, test, foldKofN or restKofN" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_main(["ocr", "--ocr-holdout", "3/2"])
    assert "'3/2': expected K/N" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a cross-validation twin must never overwrite the shipped model
        train_main(["ocr", "--ocr-holdout", "1/4"])
    assert "give --models another folder" in capsys.readouterr().err


def test_train_names_a_bad_dropout(capsys: pytest.CaptureFixture[str]) -> None:
    from inference.training.cli import main as train_main

    with pytest.raises(SystemExit):
        train_main(["ocr", "--ocr-dropout", "0.2"])
    assert "'0.2': expected two rates from 0 up to 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_main(["ocr", "--ocr-dropout", "0.2,high"])
    assert "'0.2,high': expected two rates separated by a comma" in capsys.readouterr().err


def test_eval_scores_the_plate_recognize_prints_first(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from inference.recognizer import PlateResult, Recognizer, rank

    # the recognizer ranks the surer box first; `recognize` prints the surer reading first, and
    # eval must score what a user of `recognize` sees
    plate = PlateResult((0, 0, 300, 150), "7XYZ123", 0.9, "ca", 0.8, [("7XYZ123", 0.9)], detection_score=0.3)
    part = PlateResult((40, 30, 200, 90), "XYZ123", 0.7, "ca", 0.8, [("XYZ123", 0.7)], detection_score=0.95)
    assert rank(part) > rank(plate)
    monkeypatch.setattr(Recognizer, "recognize_with_detections",
                        lambda self, image: ([], sorted([plate, part], key=rank, reverse=True)))
    folder = tmp_path / "crops"
    folder.mkdir()
    write_plate(folder / "p.png", "7XYZ123")
    (folder / "labels.csv").write_text("file,state,plate\np.png,ca,7XYZ123\n")
    assert main(["eval", str(folder), "--json", "--sheet", str(tmp_path / "s.html")]) == 0
    assert json.loads(capsys.readouterr().out)["reading"]["exact_pct"] == 100.0
    assert main(["recognize", "--json", str(folder / "p.png")]) == 0
    assert json.loads(capsys.readouterr().out)["plates"][0]["plate"] == "7XYZ123"


def test_train_ensemble_names_missing_members(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from inference.training.cli import main as train_main

    with pytest.raises(SystemExit):
        train_main(["ensemble", "--members", str(tmp_path / "a.keras")])
    assert "give two or more --members" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_main(["ensemble", "--members", str(tmp_path / "a.keras"), str(tmp_path / "b.keras")])
    assert f"no such member file: {tmp_path / 'a.keras'}, {tmp_path / 'b.keras'}" in capsys.readouterr().err
