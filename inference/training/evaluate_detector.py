"""Measure a detector TFLite model on the real scene folders (eu-scenes + br-scenes) of one split."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inference.datasets import read_folder
from inference.detector import PlateDetector
from inference.metrics import DetectionScore
from inference.training.ocr_data import load_rgb

FOLDERS = ("eu-scenes", "br-scenes")
CURVE_THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)


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
