"""Measure a detector TFLite model on the real scene folders (eu-scenes + br-scenes) of one split."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from inference.datasets import read_folder
from inference.detector import PlateDetector
from inference.metrics import DetectionScore
from inference.training.ocr_data import load_rgb


def evaluate_detector(model_path: Path, data: Path, split: str, threshold: float = 0.5) -> dict[str, Any]:
    """Precision / recall at IoU >= `threshold` per folder and overall."""
    detector = PlateDetector(model_path)
    result: dict[str, Any] = {}
    total = DetectionScore()
    for name in ("eu-scenes", "br-scenes"):
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
