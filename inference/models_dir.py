"""Where the shipped models live (inside the package, wherever it is installed)."""
from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent / "models"
DETECTOR_MODEL = "plate_detector.tflite"
OCR_MODEL = "plate_ocr.tflite"


def shipped_model(name: str) -> Path:
    """Path of a model shipped in `inference/models/`."""
    return MODELS_DIR / name
