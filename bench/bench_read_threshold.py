"""Re-derive `recognizer.MIN_READ_CONFIDENCE` by its rule: half the lowest confidence of a right
read on the val splits, rounded down to 0.05.

Right reads are counted on the US stand-in (bench_us_scenes: val us-plates crops on val eu/br
scene photos, placements seeded 0..4) and on the val eu-scenes and br-scenes photos, each read
by `recognize`'s defaults with the threshold itself off. Also prints how many reported plates
that are not a right read fall under each candidate threshold (what the threshold removes).

    .venv/bin/python bench/bench_read_threshold.py [--ocr MODEL] [--placements 5]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_us_scenes import SCENE_PLATE_WIDTH_MM, stand_in  # noqa: E402
from inference.datasets import read_folder  # noqa: E402
from inference.detector import PlateDetector  # noqa: E402
from inference.metrics import box_iou  # noqa: E402
from inference.ocr import PlateReader  # noqa: E402
from inference.recognizer import MIN_READ_CONFIDENCE, Recognizer  # noqa: E402
from inference.training.ocr_data import load_rgb  # noqa: E402


def frames(data: Path, placements: int) -> Iterator[tuple[np.ndarray, list[tuple[tuple[int, int, int, int], str]]]]:
    """(frame, [(box, truth text)]) for the val stand-in placements and the val scene photos."""
    for seed in range(placements):
        for crop_item, _, frame, box in stand_in(data, "val", seed):
            yield frame, [(box, crop_item.plates[0].text)]
    for folder in SCENE_PLATE_WIDTH_MM:
        for scene in read_folder(data / folder, "val"):
            if scene.plates:
                yield load_rgb(scene.path), [(p.box, p.text) for p in scene.plates]


def main() -> int:
    """Read every val frame with the threshold off and print the rule's figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--ocr", type=Path, default=None, help="OCR .tflite (default: shipped)")
    parser.add_argument("--placements", type=int, default=5, help="stand-in placements (seeds 0..N-1)")
    args = parser.parse_args()
    recognizer = Recognizer(PlateDetector(), PlateReader(args.ocr), views=3, min_read_confidence=0.0)
    right: list[float] = []
    other: list[float] = []
    for frame, truths in frames(args.data, args.placements):
        for result in recognizer.recognize(frame):
            ok = any(box_iou(box, result.box) >= 0.5 and result.plate == text for box, text in truths)
            (right if ok else other).append(result.confidence)
    lowest = min(right)
    threshold = math.floor(lowest / 2 / 0.05 + 1e-9) * 0.05
    report = {
        "right_reads": len(right), "other_reads": len(other), "lowest_right": round(lowest, 3),
        "rule_threshold": round(threshold, 2), "current_threshold": MIN_READ_CONFIDENCE,
        "other_removed": {f"{t:.2f}": sum(c < t for c in other) for t in (0.05, 0.10, 0.15, 0.20)},
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
