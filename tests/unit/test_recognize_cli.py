"""`alpr-node recognize` and `alpr-node eval` on images the project renders itself."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
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
    assert "missing.jpg" in err and "broken.jpg" in err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 1
    record = lines[0]
    assert record["file"] == str(good) and record["ms"] > 0
    assert record["plates"], "no plate read"
    best = record["plates"][0]
    assert best["plate"] == "ABC1234"
    assert len(best["box"]) == 4 and 0 < best["confidence"] <= 1
    assert 1 <= len(best["candidates"]) <= 10
    assert set(best["candidates"][0]) == {"plate", "confidence"}
    confidences = [p["confidence"] for p in record["plates"]]
    assert confidences == sorted(confidences, reverse=True)


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


def test_train_ensemble_names_missing_members(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from inference.training.cli import main as train_main

    with pytest.raises(SystemExit):
        train_main(["ensemble", "--members", str(tmp_path / "a.keras")])
    assert "give two or more --members" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_main(["ensemble", "--members", str(tmp_path / "a.keras"), str(tmp_path / "b.keras")])
    assert f"no such member file: {tmp_path / 'a.keras'}, {tmp_path / 'b.keras'}" in capsys.readouterr().err
