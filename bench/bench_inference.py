"""Benchmark the shipped detector and OCR on one CPU thread: median of many runs.

    .venv/bin/python bench/bench_inference.py [--runs 200] [--threads 1] [--data ../shared/data] [--ocr MODEL]

Uses real images from ../shared/data when present (one eu/br scene, one us-plates crop),
else images rendered by the synthetic generator. Not a test: timings depend on the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inference.detector import PlateDetector
from inference.ocr import PlateReader
from inference.recognizer import Recognizer


def _images(data: Path) -> tuple[np.ndarray, np.ndarray]:
    scenes = sorted((data / "br-scenes").glob("*.jpg")) + sorted((data / "eu-scenes").glob("*.jpg"))
    crops = sorted((data / "us-plates").glob("*.png"))
    if scenes and crops:
        scene = cv2.cvtColor(cv2.imread(str(scenes[0])), cv2.COLOR_BGR2RGB)
        crop = cv2.cvtColor(cv2.imread(str(crops[0])), cv2.COLOR_BGR2RGB)
        return scene, crop
    from inference.training.plates import PlateGenerator

    crop = PlateGenerator(0).clean_plate("ABC1234")
    scene = np.full((1080, 1920, 3), 100, np.uint8)
    scene[800:928, 900:1156] = crop
    return scene, crop


def _time(fn, runs: int) -> dict[str, float]:
    for _ in range(10):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000.0)
    samples.sort()
    return {"median_ms": round(statistics.median(samples), 3), "p90_ms": round(samples[int(0.9 * len(samples)) - 1], 3),
            "min_ms": round(samples[0], 3), "runs": runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--ocr", type=Path, default=None, help="OCR model to time (default: the shipped one)")
    args = parser.parse_args()
    scene, crop = _images(args.data)
    detector = PlateDetector(threads=args.threads)
    reader = PlateReader(args.ocr, threads=args.threads)
    recognizer = Recognizer(detector, reader)
    ocr_model = reader.model
    det_model = detector.model
    prepared_crop = np.ascontiguousarray(crop)
    ocr_model.prepare(prepared_crop)
    det_model.prepare(scene)
    report = {
        "machine": {"cpu_count": os.cpu_count(), "threads": args.threads},
        "ocr_model": str(reader.model.path),
        # manifest name -> sha256 of the models timed, checked by `alpr-train report`
        "models": {m.manifest.name: m.manifest.sha256 for m in (det_model, ocr_model)},
        "scene_size": list(scene.shape[:2][::-1]),
        "detector_invoke": _time(det_model.invoke, args.runs),
        "detector_frame": _time(lambda: detector.detect(scene), args.runs),
        "ocr_invoke": _time(ocr_model.invoke, args.runs * 5),
        "ocr_plate": _time(lambda: reader.read(prepared_crop), args.runs * 5),
        "recognize_frame": _time(lambda: recognizer.recognize(scene), max(20, args.runs // 4)),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
