"""Measure a detector TFLite model on the real scene folders (eu-scenes + br-scenes) of one split."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inference.datasets import read_folder
from inference.detector import PlateDetector
from inference.metrics import DetectionScore, box_iou
from inference.training.ocr_data import load_rgb
from inference.training.scenes import LETTERBOX_FILL

FOLDERS = ("eu-scenes", "br-scenes")
CURVE_THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)
SMALL_FRAME = (1920, 1080)
SMALL_WIDTHS = (60, 80, 120)  # plate widths in SMALL_FRAME: the smallest (60 px) and up
SMALL_FRAMES = 40  # frames per width


def evaluate_detector(model_path: Path, data: Path, split: str, threshold: float = 0.5,
                      score_threshold: float | None = None) -> dict[str, Any]:
    """Precision / recall at IoU >= `threshold` per folder and overall (score threshold: the manifest's unless given)."""
    detector = PlateDetector(model_path, score_threshold=score_threshold)
    result: dict[str, Any] = {}
    total = DetectionScore()
    for name in FOLDERS:
        folder = data / name
        if not folder.is_dir():
            continue
        score = DetectionScore()
        for item in read_folder(folder, split):
            preds = [d.box for d in detector.detect(load_rgb(item.path))]
            truths = [p.box for p in item.plates]
            score.add(truths, preds, threshold)
            total.add(truths, preds, threshold)
        result[name] = score.as_dict()
    result["all"] = total.as_dict()
    return result


def threshold_curve(model_path: Path, data: Path, split: str, thresholds: Sequence[float] = CURVE_THRESHOLDS,
                    iou: float = 0.5) -> dict[str, dict[str, float | int]]:
    """Overall recall / precision for each score threshold, from one detection pass per image.

    Filtering the boxes kept at the lowest threshold gives exactly what a higher threshold
    would: NMS only ever suppresses a box with a higher-scoring one.
    """
    detector = PlateDetector(model_path, score_threshold=min(thresholds))
    images = []
    for name in FOLDERS:
        folder = data / name
        if folder.is_dir():
            for item in read_folder(folder, split):
                images.append(([p.box for p in item.plates], [(d.box, d.score) for d in detector.detect(load_rgb(item.path))]))
    curve: dict[str, dict[str, float | int]] = {}
    for t in thresholds:
        score = DetectionScore()
        for truths, found in images:
            score.add(truths, [box for box, s in found if s >= t], iou)
        curve[f"{t:.2f}"] = score.as_dict()
    return curve


def choose_threshold(curve: dict[str, dict[str, float | int]]) -> float:
    """The highest score threshold that keeps the best recall on the curve (more precision, no plate lost)."""
    best = max(float(v["recall_pct"]) for v in curve.values())
    return max(float(t) for t, v in curve.items() if float(v["recall_pct"]) >= best)


def small_plate_frames(data: Path, split: str, frames: int, width: int,
                       seed: int = 0) -> list[tuple[np.ndarray, tuple[int, int, int, int], str]]:
    """`frames` (frame, pasted box, plate text): a us-plates crop of `split` pasted `width` px wide
    at a random place into a br-scenes frame of `split` resized to 1920x1080, whose own plates are
    greyed out so they neither help nor count. Deterministic for `seed`; [] without the data."""
    rng = np.random.default_rng(seed)
    scenes = read_folder(data / "br-scenes", split) if (data / "br-scenes").is_dir() else []
    crops = read_folder(data / "us-plates", split) if (data / "us-plates").is_dir() else []
    if not scenes or not crops:
        return []
    frame_w, frame_h = SMALL_FRAME
    out = []
    for i in range(frames):
        scene = scenes[i % len(scenes)]
        image = load_rgb(scene.path)
        for plate in scene.plates:
            x, y, w, h = plate.box
            image[max(0, y):y + h, max(0, x):x + w] = LETTERBOX_FILL
        frame = cv2.resize(image, (frame_w, frame_h), interpolation=cv2.INTER_AREA)
        item = crops[int(rng.integers(len(crops)))]
        crop = load_rgb(item.path)
        height = max(4, round(width * crop.shape[0] / crop.shape[1]))
        small = cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)
        x = int(rng.integers(0, frame_w - width))
        y = int(rng.integers(frame_h // 3, frame_h - height))
        frame[y:y + height, x:x + width] = small
        out.append((frame, (x, y, width, height), item.plates[0].text))
    return out


def tile_threshold_curve(model_path: Path, data: Path, split: str, widths: Sequence[int] = SMALL_WIDTHS,
                         frames: int = SMALL_FRAMES, thresholds: Sequence[float] = CURVE_THRESHOLDS,
                         iou: float = 0.5) -> dict[str, dict[str, float | int]]:
    """Recall of the tile passes alone on small plates (`small_plate_frames`, all `widths`) for
    each score threshold; {} without the data."""
    detector = PlateDetector(model_path, score_threshold=min(thresholds), tile_score_threshold=min(thresholds))
    found: list[list[float]] = []  # per frame: scores of the tile boxes on the pasted plate
    for width in widths:
        for frame, box, _ in small_plate_frames(data, split, frames, width):
            found.append([d.score for d in detector.detect_tiles(frame) if box_iou(box, d.box) >= iou])
    if not found:
        return {}
    return {f"{t:.2f}": {"plates": len(found), "recall_pct": round(100.0 * sum(any(s >= t for s in scores) for scores in found) / len(found), 2)}
            for t in thresholds}
