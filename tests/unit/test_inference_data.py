"""The synthetic generators, labelled-folder readers, the fixed split and the scoring helpers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference.datasets import DatasetError, in_split, normalise_plate, read_folder, split_of
from inference.metrics import (
    DetectionScore,
    OcrScore,
    box_iou,
    edit_distance,
    match_boxes,
)
from inference.training.plates import ALPHABET, STATES, PlateGenerator
from inference.training.scenes import SceneGenerator, SourceScene, letterbox

pytestmark = pytest.mark.unit


def test_plate_generator_is_deterministic_and_labels_are_clean() -> None:
    a = [PlateGenerator(3).plate() for _ in range(1)]
    gen1, gen2 = PlateGenerator(5), PlateGenerator(5)
    for _ in range(5):
        p1, p2 = gen1.plate(), gen2.plate()
        assert p1.text == p2.text and p1.region == p2.region
        assert np.array_equal(p1.image, p2.image)
        assert p1.image.dtype == np.uint8 and p1.image.ndim == 3 and p1.image.shape[2] == 3
        assert 2 <= len(p1.text) <= 10 and set(p1.text) <= set(ALPHABET)
        assert p1.region in STATES
        h, w = p1.image.shape[:2]
        assert 1.2 < w / h < 3.2  # roughly 2:1 crops
    assert a[0].text


def test_clean_plate_is_the_same_in_every_process() -> None:
    first = PlateGenerator(0).clean_plate("ABC123")
    again = PlateGenerator(99).clean_plate("ABC123")
    assert np.array_equal(first, again)
    assert first.shape == (128, 256, 3)
    # dark characters on a light plate
    assert first.mean() > 150 and first.min() < 60


def test_scene_generator_boxes_lie_inside_the_canvas() -> None:
    source = np.full((400, 800, 3), 80, np.uint8)
    source[300:330, 350:450] = 230
    gen = SceneGenerator(1, 512, 288, [SourceScene(source, np.array([[350, 300, 450, 330]], np.float32))],
                         [PlateGenerator(0).clean_plate("XYZ987")])
    total = 0
    for _ in range(12):
        scene = gen.scene()
        assert scene.image.shape == (288, 512, 3)
        boxes = scene.boxes
        total += len(boxes)
        assert np.all(boxes[:, 0] >= 0) and np.all(boxes[:, 2] <= 512) and np.all(boxes[:, 3] <= 288)
        assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
    assert total > 0


def test_letterbox_keeps_aspect() -> None:
    canvas, scale, pad_x, pad_y = letterbox(np.zeros((100, 400, 3), np.uint8), 512, 288)
    assert canvas.shape == (288, 512, 3) and scale == pytest.approx(1.28)
    assert pad_x == 0 and pad_y == (288 - 128) // 2


def test_split_is_fixed_by_name_and_roughly_70_10_20() -> None:
    assert split_of("ca123.png") == split_of("/some/where/ca123.png")
    names = [f"img{i}.jpg" for i in range(3000)]
    counts = {s: sum(split_of(n) == s for n in names) for s in ("train", "val", "test")}
    assert 0.65 < counts["train"] / 3000 < 0.75
    assert 0.07 < counts["val"] / 3000 < 0.13
    assert 0.17 < counts["test"] / 3000 < 0.23


def test_cross_validation_folds_partition_train_and_val_and_never_touch_test() -> None:
    names = [f"img{i}.jpg" for i in range(2000)]
    held_out = {n for n in names if split_of(n) in ("train", "val")}
    folds = [{n for n in names if in_split(n, f"fold{k}of4")} for k in range(1, 5)]
    assert set().union(*folds) == held_out and sum(map(len, folds)) == len(held_out)  # disjoint, complete
    assert all(0.2 < len(f) / len(held_out) < 0.3 for f in folds)
    for k, fold in enumerate(folds, start=1):
        assert {n for n in names if in_split(n, f"rest{k}of4")} == held_out - fold
    with pytest.raises(DatasetError, match="fold 5 of 4"):
        in_split("a.png", "fold5of4")
    with pytest.raises(DatasetError, match="unknown split 'folds'"):
        in_split("a.png", "folds")


def test_read_folder_reads_both_label_formats(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("file,state,plate\na.png,CA,abc-123\nb.png,ny,X Y 1\n")
    (tmp_path / "car.jpg").write_bytes(b"")
    (tmp_path / "car.txt").write_text("car.jpg\t10\t20\t30\t8\tAB123\n")
    (tmp_path / "orphan.txt").write_text("notes without an image\n")
    items = read_folder(tmp_path)
    assert [i.path.name for i in items] == ["a.png", "b.png", "car.jpg"]
    assert items[0].plates[0].text == "ABC123" and items[0].region == "ca" and items[0].is_crop
    assert items[2].plates[0].box == (10, 20, 30, 8) and not items[2].is_crop
    wanted = {i.path.name for i in items if split_of(i.path.name) == "test"}
    assert {i.path.name for i in read_folder(tmp_path, "test")} == wanted


def test_read_folder_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "car.jpg").write_bytes(b"")
    (tmp_path / "car.txt").write_text("car.jpg\t10\t20\n")
    with pytest.raises(DatasetError, match=r"car.txt:1"):
        read_folder(tmp_path)
    with pytest.raises(DatasetError, match="not a folder"):
        read_folder(tmp_path / "nope")
    with pytest.raises(DatasetError, match="unknown split"):
        (tmp_path / "car.txt").write_text("car.jpg\t1\t2\t3\t4\tA\n")
        read_folder(tmp_path, "holdout")


def test_scoring_helpers() -> None:
    assert normalise_plate("ab-12 3.") == "AB123"
    assert edit_distance("ABC123", "ABC123") == 0
    assert edit_distance("ABC123", "A8C12") == 2
    assert box_iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(1 / 3)
    assert match_boxes([(0, 0, 10, 10), (100, 100, 10, 10)], [(101, 100, 10, 10), (50, 50, 5, 5)]) == [(1, 0)]
    score = OcrScore()
    score.add("ABC123", "ABC123", ["ABC123"], "ca", "ca")
    score.add("XYZ789", "XYZ780", ["XYZ780", "XYZ789"], "ny", "nj")
    fig = score.as_dict()
    assert fig["exact_pct"] == 50.0 and fig["top10_pct"] == 100.0
    assert fig["char_accuracy_pct"] == pytest.approx(100 * 11 / 12, abs=0.01)
    assert fig["region_top1_pct"] == 50.0
    det = DetectionScore()
    det.add([(0, 0, 10, 10)], [(0, 0, 10, 10), (50, 50, 10, 10)])
    assert det.as_dict()["recall_pct"] == 100.0 and det.as_dict()["precision_pct"] == 50.0


def test_generator_uses_only_the_shipped_fonts_mostly_plate_like_ones() -> None:
    from inference.training.plates import PLATE_LIKE_FONTS, font_paths

    fonts = font_paths()
    assert all(p.parent.name == "fonts" and p.parent.parent.name == "inference" for p in fonts)
    assert {p.name for p in fonts} >= set(PLATE_LIKE_FONTS)
    gen = PlateGenerator(0)
    share = sum(w for f, w in zip(gen.fonts, gen.main_font_weights) if Path(f).name in PLATE_LIKE_FONTS)
    assert share == pytest.approx(0.75)


def test_detector_threshold_is_the_highest_keeping_the_best_recall() -> None:
    from inference.training.evaluate_detector import choose_threshold

    curve = {
        "0.30": {"recall_pct": 100.0, "precision_pct": 50.0},
        "0.50": {"recall_pct": 100.0, "precision_pct": 80.0},
        "0.60": {"recall_pct": 100.0, "precision_pct": 90.0},
        "0.70": {"recall_pct": 96.0, "precision_pct": 100.0},
    }
    assert choose_threshold(curve) == 0.6


def test_ocr_jitter_keeps_shape_and_moves_pixels() -> None:
    from inference.training.ocr_data import OCR_H, OCR_W
    from inference.training.train_ocr import jitter

    rng = np.random.default_rng(0)
    images = np.zeros((8, OCR_H, OCR_W), np.uint8)
    images[:, 8:24, 40:88] = 200
    out = jitter(images, rng)
    assert out.shape == images.shape and out.dtype == np.uint8
    assert not np.array_equal(out, images)
    # the bright block stays roughly where it was: framing moves by a few pixels, not more
    assert all(abs(float(o.mean()) - float(i.mean())) < 40 for o, i in zip(out, images))


def test_swapped_plate_is_us_sized_where_the_real_plate_was_and_hides_it() -> None:
    from inference.training.scenes import US_WIDTH_RATIO

    source = np.full((400, 800, 3), 80, np.uint8)
    source[300:340, 300:500] = 230  # a 5:1 European plate, 200 px wide
    us_crop = PlateGenerator(0).clean_plate("XYZ987")
    gen = SceneGenerator(2, 512, 288, [], [us_crop])
    for _ in range(5):
        image, boxes = gen._swap_plates(source, np.array([[300, 300, 500, 340]], np.float64))
        assert source[320, 310, 0] == 230  # the source photo is not changed
        (x1, y1, x2, y2), = boxes
        width = x2 - x1
        assert US_WIDTH_RATIO[0] * 200 - 1 <= width <= US_WIDTH_RATIO[1] * 200 + 1
        assert 1.6 < width / (y2 - y1) < 2.5  # the US plate keeps its own shape
        assert abs((x1 + x2) / 2 - 400) <= 0.1 * 200 + 1 and abs((y1 + y2) / 2 - 320) <= 1
        # the old plate is gone: what is left of it outside the new one has the colour around it
        left = image[305:335, 300:int(x1)]
        assert left.size == 0 or abs(float(left.mean()) - 80) < 5


def test_augmented_real_crops_range_from_tight_to_detector_margins() -> None:
    from inference.training.ocr_data import augment_crop

    crop = np.full((100, 200, 3), 40, np.uint8)
    crop[10:90, 10:190] = 220  # the plate fills the crop with a thin dark border
    rng = np.random.default_rng(0)
    fill = []
    for _ in range(60):
        out = augment_crop(crop, rng).astype(np.float32).mean(axis=2)
        h, w = out.shape
        fill.append(float((out[h // 2] > out[h // 2].max() * 0.6).mean()))
    # some crops are tight (the plate spans nearly the whole width), typical ones show a margin
    # like a detector's box (median 0.84 here; tight-only framing gave 0.90)
    assert max(fill) > 0.9 and float(np.median(fill)) < 0.87


def test_scene_plates_are_cut_from_their_scene_with_the_car_around_them(tmp_path: Path) -> None:
    import cv2

    from inference.training.ocr_data import OCR_H, OCR_W, scene_plate_set

    scene = np.full((400, 600, 3), 30, np.uint8)  # a dark car ...
    scene[200:240, 250:350] = 230                   # ... with a bright plate on it
    names = [f"car{i}.png" for i in range(40)]
    for name in names:
        cv2.imwrite(str(tmp_path / name), scene)
        (tmp_path / name.replace(".png", ".txt")).write_text(f"{name}\t250\t200\t100\t40\tAB123\n")
    data = scene_plate_set([tmp_path], "train", 3, seed=0)
    in_train = sum(split_of(n) == "train" for n in names)
    assert data["images"].shape == (3 * in_train, OCR_H, OCR_W)
    assert set(data["texts"]) == {"AB123"} and set(data["regions"]) == {-1}  # no state for eu/br plates
    rows = data["images"][:, OCR_H // 2].astype(np.float32)
    bright = (rows > 130).mean(axis=1)
    # the plate is what the cut shows, with some of the real (dark) car beside it in most cuts
    assert float(np.median(bright)) > 0.6 and float((bright < 0.97).mean()) > 0.5


def test_real_pools_concatenate_on_their_common_keys() -> None:
    from inference.training.train_ocr import concat_sets

    a = {"images": np.zeros((2, 4)), "texts": np.array(["A", "B"]), "files": np.array(["a", "b"])}
    b = {"images": np.ones((1, 4)), "texts": np.array(["C"])}
    pool = concat_sets([a, b])
    assert set(pool) == {"images", "texts"} and list(pool["texts"]) == ["A", "B", "C"] and pool["images"].shape == (3, 4)
