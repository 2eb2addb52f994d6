"""Measure an OCR TFLite model on prepared arrays (grey OCR inputs with labels)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from inference.metrics import OcrScore
from inference.ocr import PlateReader


def evaluate_tflite(model_path: Path, data: dict[str, np.ndarray]) -> dict[str, Any]:
    """Exact plate, character, top-10 and state figures of `model_path` on `data`, each array
    read once (one view) by the runtime's own `PlateReader`, so it is measured as it runs."""
    reader = PlateReader(model_path)
    regions = reader.model.manifest.region_classes
    score = OcrScore()
    for image, text, region_id in zip(data["images"], data["texts"], data["regions"]):
        reading = reader.read(np.ascontiguousarray(image))
        truth_region = regions[region_id] if region_id >= 0 and regions else None
        score.add(str(text), reading.text, [c for c, _ in reading.candidates], truth_region, reading.region)
    return score.as_dict()
