"""Measure an OCR TFLite model on prepared arrays (grey OCR inputs with labels)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from inference.metrics import OcrScore
from inference.ocr_decode import ctc_beam_search, ctc_greedy
from inference.runtime import TFLiteModel


def evaluate_tflite(model_path: Path, data: dict[str, np.ndarray]) -> dict[str, Any]:
    """Exact plate, character, top-10 and state figures of `model_path` on `data`."""
    model = TFLiteModel(model_path)
    manifest = model.manifest
    score = OcrScore()
    regions = manifest.region_classes
    for image, text, region_id in zip(data["images"], data["texts"], data["regions"]):
        outputs = model.run(np.ascontiguousarray(image))[0]
        chars = next(o for o in outputs if o.ndim == 3)[0]
        region_out = next((o for o in outputs if o.ndim == 2), None)
        beams = ctc_beam_search(chars, manifest.alphabet, manifest.blank_index, top_k=10)
        best = beams[0][0] if beams else ctc_greedy(chars, manifest.alphabet, manifest.blank_index).text
        region = regions[int(np.argmax(region_out[0]))] if region_out is not None and regions else None
        truth_region = regions[region_id] if region_id >= 0 else None
        score.add(str(text), best, [b[0] for b in beams], truth_region, region)
    return score.as_dict()
