"""Small plates in a 1920x1080 frame: how many the shipped detector finds, per plate width.

Real us-plates crops are pasted at a given width and a random place into real br-scenes frames
resized to 1920x1080 (both of one held-out split, val unless `--split test`), whose own plates
are greyed out so they neither help nor count. A pasted plate is found when a box overlaps it
with IoU >= 0.5. Choices are made on val; test is for the reported figure.

    .venv/bin/python bench/bench_small_plates.py --frames 40 --widths 60 80 120 --tiles 1 2 [--split test]

`--recognize auto off` also runs what `alpr-node recognize` does (3 views, windows auto) with
`--tiles auto` / `off`: a plate counts as found when a reported plate's box overlaps it, and as
read when that plate's text is the crop's label.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inference.detector import PlateDetector  # noqa: E402
from inference.metrics import box_iou  # noqa: E402
from inference.ocr import PlateReader  # noqa: E402
from inference.recognizer import TILE_MODES, Recognizer  # noqa: E402
from inference.training.evaluate_detector import small_plate_frames  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--widths", type=int, nargs="+", default=[60, 80, 120])
    parser.add_argument("--tiles", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--recognize", nargs="*", choices=TILE_MODES, default=[],
                        help="also measure recognize with these --tiles modes")
    parser.add_argument("--detector", type=Path, default=None, help="detector .tflite (default: shipped)")
    parser.add_argument("--ocr", type=Path, default=None, help="OCR .tflite (default: shipped)")
    parser.add_argument("--split", choices=("val", "test"), default="val", help="held-out split of crops and frames")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    report: dict[str, dict[str, float]] = {}
    frames = {width: small_plate_frames(args.data, args.split, args.frames, width, args.seed) for width in args.widths}
    if not all(frames.values()):
        raise SystemExit(f"{args.data}: needs br-scenes and us-plates (see ../shared/data/README.md)")
    for tiles in args.tiles:
        detector = PlateDetector(args.detector, tiles=tiles)
        for width in args.widths:
            found, times = 0, []
            for frame, box, _ in frames[width]:
                start = time.perf_counter()
                boxes = [d.box for d in detector.detect(frame)]
                times.append((time.perf_counter() - start) * 1000)
                found += any(box_iou(box, b) >= 0.5 for b in boxes)
            report[f"tiles{tiles}_width{width}"] = {"recall_pct": round(100 * found / args.frames, 1),
                                                    "median_ms": round(float(np.median(times)), 1), "frames": args.frames}
    for mode in args.recognize:
        recognizer = Recognizer(PlateDetector(args.detector), PlateReader(args.ocr), views=3, tiles=mode)
        for width in args.widths:
            found = read = 0
            times = []
            for frame, box, text in frames[width]:
                start = time.perf_counter()
                plates = [p for p in recognizer.recognize(frame) if box_iou(box, p.box) >= 0.5]
                times.append((time.perf_counter() - start) * 1000)
                found += bool(plates)
                read += any(p.plate == text for p in plates)
            report[f"recognize_tiles_{mode}_width{width}"] = {
                "found_pct": round(100 * found / args.frames, 1), "read_pct": round(100 * read / args.frames, 1),
                "median_ms": round(float(np.median(times)), 1), "frames": args.frames}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
