"""Plates larger than the detector can box: close-ups and loose crops, read whole with the
zoomed-out pass (`Recognizer(zoom_out="auto")`, `PlateDetector.detect_zoomed_out`)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from inference.detector import Detection, PlateDetector
from inference.metrics import box_iou
from inference.ocr import PlateReader
from inference.recognizer import Recognizer
from inference.training.plates import PlateGenerator

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def detector() -> PlateDetector:
    return PlateDetector()


@pytest.fixture(scope="module")
def recognizer(detector: PlateDetector) -> Recognizer:
    return Recognizer(detector, PlateReader(), views=3)  # as `alpr-node recognize` runs it


def closeup(text: str, width: int, height: int, plate_w: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A frame filled by a car body with a 2:1 plate `plate_w` px wide in its middle (a phone
    photo taken close to the car), and the plate's box."""
    rng = np.random.default_rng(0)
    frame = np.clip(np.full((height, width, 3), (150.0, 30.0, 30.0)) + rng.normal(0, 4, (height, width, 3)), 0, 255)
    frame = frame.astype(np.uint8)
    plate_h = plate_w // 2
    plate = cv2.resize(PlateGenerator(0).clean_plate(text), (plate_w, plate_h), interpolation=cv2.INTER_AREA)
    x, y = (width - plate_w) // 2, (height - plate_h) // 2
    frame[y:y + plate_h, x:x + plate_w] = plate
    return frame, (x, y, plate_w, plate_h)


# the plate 60 % of a 4:3 frame's width: about 1.3x the largest plate the shipped detector was
# trained on, whose single-pass boxes stop at about that size and cut a character off
@pytest.mark.parametrize("text", ["ABC1234", "7XYZ123", "ZXC9087"])
@pytest.mark.parametrize("size", [(640, 480, 380), (1280, 960, 760)])
def test_a_plate_close_to_the_camera_is_read_whole(recognizer: Recognizer, text: str,
                                                   size: tuple[int, int, int]) -> None:
    frame, truth = closeup(text, *size)
    results = sorted(recognizer.recognize(frame), key=lambda r: -r.confidence)  # as printed
    assert results, "no plate"
    assert results[0].plate == text
    assert box_iou(results[0].box, truth) >= 0.6


def test_the_zoomed_out_pass_boxes_the_whole_plate_in_image_pixels(detector: PlateDetector) -> None:
    frame, truth = closeup("KLM4821", 640, 480, 380)
    single = detector.detect(frame)
    zoomed = detector.detect_zoomed_out(frame)
    assert zoomed and box_iou(zoomed[0].box, truth) >= 0.7
    # the single pass boxes part of it (the reason for the second pass)
    assert all(box_iou(d.box, truth) < box_iou(zoomed[0].box, truth) for d in single)


def test_a_plate_of_ordinary_size_costs_no_zoomed_out_pass(recognizer: Recognizer, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.unit.test_inference_recognition import scene_with_plate

    def refuse(image: np.ndarray) -> list[Detection]:
        raise AssertionError("zoomed-out pass run for a plate the detector boxes well")

    monkeypatch.setattr(recognizer.detector, "detect_zoomed_out", refuse)
    scene, _ = scene_with_plate(PlateGenerator(0).clean_plate("KLM4821"))  # 220 px wide in 1280x720
    assert recognizer.recognize(scene)[0].plate == "KLM4821"
    crop = cv2.resize(PlateGenerator(0).clean_plate("ABC1234"), (300, 150), interpolation=cv2.INTER_AREA)
    assert recognizer.recognize(crop)[0].plate == "ABC1234"  # a crop is read whole: no boxes to redo


def test_zoom_out_off_keeps_the_single_pass(detector: PlateDetector, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(image: np.ndarray) -> list[Detection]:
        raise AssertionError("zoomed-out pass run with zoom_out='off'")

    monkeypatch.setattr(detector, "detect_zoomed_out", refuse)
    frame, _ = closeup("ABC1234", 640, 480, 380)
    Recognizer(detector, PlateReader(), zoom_out="off").recognize(frame)
    with pytest.raises(ValueError, match="zoom_out"):
        Recognizer(detector, PlateReader(), zoom_out="on")


def test_a_large_box_is_replaced_but_a_small_box_inside_keeps_the_plate(detector: PlateDetector,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # single pass: part of the plate (large) and the state name on it (small); zoomed out: the
    # whole plate. The part gives way to the whole; the state name does not hide the plate.
    part, name, whole = Detection((150, 160, 300, 148), 0.9), Detection((260, 150, 120, 36), 0.8), \
        Detection((130, 140, 380, 195), 0.95)
    monkeypatch.setattr(detector, "detect_zoomed_out", lambda image: [whole])
    recognizer = Recognizer(detector, PlateReader())
    merged = recognizer._zoomed_out(np.zeros((480, 640, 3), np.uint8), [part, name])
    assert merged == [whole, name]


def loose_crop(text: str, plate_w: int, margin: float) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A crop with `margin` of the plate's width (and height) of car body around the plate on
    each side, as a crop cut loosely around a plate is; and the plate's box."""
    plate_h = plate_w // 2
    mx, my = int(plate_w * margin), int(plate_h * margin)
    frame, _ = closeup(text, plate_w + 2 * mx, plate_h + 2 * my, plate_w)
    return frame, (mx, my, plate_w, plate_h)


@pytest.mark.parametrize("text", ["7XYZ123", "KLM4821", "ZXC9087"])
@pytest.mark.parametrize("plate_w", [120, 200])
def test_a_small_loose_crop_is_read_from_its_plate_not_whole(recognizer: Recognizer, text: str, plate_w: int) -> None:
    # small and plate-shaped (240x120, 400x200), so it looks like a tight crop; read whole, its
    # plate fills a quarter of the OCR input and reads as noise, so its plate's box is read too
    frame, truth = loose_crop(text, plate_w, 0.5)
    results = sorted(recognizer.recognize(frame), key=lambda r: -r.confidence)  # as printed
    assert results and results[0].plate == text
    # the plate's box, or the whole image where that read surely (then it is taken for a crop)
    assert box_iou(results[0].box, truth) >= 0.5 or results[0].source == "whole_image"


def test_a_tight_crop_read_surely_whole_is_not_searched_inside(recognizer: Recognizer,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # a sure whole read settles a crop: no boxes inside it are read (a slogan could read as a plate)
    crop = cv2.resize(PlateGenerator(0).clean_plate("ABC1234"), (300, 150), interpolation=cv2.INTER_AREA)

    def refuse(*args: object) -> list[object]:
        raise AssertionError("boxes read inside a crop read surely whole")

    monkeypatch.setattr(recognizer, "_read_detections", refuse)
    results = recognizer.recognize(crop)
    assert [(r.plate, r.source, r.box) for r in results] == [("ABC1234", "whole_image", (0, 0, 300, 150))]


def test_a_box_inside_a_better_plate_box_is_not_a_second_plate(detector: PlateDetector,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A detection mostly covered by a better-ranked detection's box is that plate again (its
    county name, a part of it boxed on its own), whatever it reads: one physical plate is one
    entry. A plate elsewhere in the frame still counts."""
    frame, plate_box = closeup("KLM4821", 1280, 720, 240)
    other, other_box = closeup("ZXC9087", 1280, 720, 240)
    frame[:, :420] = other[:, 420:840]  # a second plate at the left, well apart
    other_box = (other_box[0] - 420, other_box[1], other_box[2], other_box[3])
    x, y, w, h = plate_box
    inner = Detection((x + w // 4, y + h // 2, w // 2, h // 3), 0.85)  # the lower half of the plate
    monkeypatch.setattr(detector, "detect", lambda image, windows=False: [
        Detection(plate_box, 0.95), inner, Detection(other_box, 0.9)])
    results = Recognizer(detector, PlateReader(), windows="off", tiles="off", zoom_out="off").recognize(frame)
    assert sorted(r.plate for r in results) == ["KLM4821", "ZXC9087"]
    assert all(r.box != inner.box for r in results)
