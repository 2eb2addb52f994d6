"""US plates on real cars, end to end: what `alpr-node recognize` reports for whole scenes.

There is no labelled set of whole US car photos in ../shared/data, so this builds a stand-in:
each real eu-scenes / br-scenes frame of the chosen split gets its own plate covered with the
colour around it and a real us-plates crop of the same split pasted where that plate was, at the
size a US plate would have on that car (US 305 mm wide against EU 520 mm and Brazilian 400 mm).
The frames and crops of one split never meet the training data of the models. Recognition
runs with `recognize`'s defaults (3 views, windows auto) unless told otherwise.

Per pasted plate it counts: found (a detection with IoU >= 0.5), top-1 (the first plate
reported is the truth, the figure a user sees), matched (the plate reported at the pasted box is
the truth, as `alpr-node eval` scores scenes), and extra plates reported elsewhere.

    .venv/bin/python bench/bench_us_scenes.py --split val test [--views 3] [--windows off] [--verbose]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inference.datasets import LabelledImage, read_folder  # noqa: E402
from inference.detector import PlateDetector  # noqa: E402
from inference.metrics import box_iou  # noqa: E402
from inference.ocr import PlateReader  # noqa: E402
from inference.recognizer import TILE_MODES, WINDOW_MODES, Recognizer  # noqa: E402
from inference.training.ocr_data import load_rgb  # noqa: E402
from inference.training.scenes import put_plate  # noqa: E402

US_WIDTH_MM = 305.0
SCENE_PLATE_WIDTH_MM = {"eu-scenes": 520.0, "br-scenes": 400.0}


def compose(scene: LabelledImage, plate_width_mm: float, crop: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The scene with its first plate replaced by `crop` at US size; returns (frame, pasted box)."""
    image = load_rgb(scene.path)
    x, y, w, h = scene.plates[0].box
    x1, y1, x2, y2 = put_plate(image, np.array([x, y, x + w, y + h], np.float64), crop, US_WIDTH_MM / plate_width_mm)
    return image, (int(x1), int(y1), int(x2 - x1), int(y2 - y1))


def stand_in(data: Path, split: str, seed: int) -> Iterator[tuple[LabelledImage, LabelledImage, np.ndarray, tuple[int, int, int, int]]]:
    """(crop, scene, frame, pasted box) for every us-plates crop of `split`, each on a scene of
    `split` (which scene fixed by `seed`)."""
    scenes = [(s, folder) for folder in SCENE_PLATE_WIDTH_MM for s in read_folder(data / folder, split) if s.plates]
    crops = read_folder(data / "us-plates", split)
    if not scenes or not crops:
        raise SystemExit(f"{data}: needs eu-scenes, br-scenes and us-plates (see ../shared/data/README.md)")
    order = np.random.default_rng(seed).permutation(len(scenes))
    for i, crop_item in enumerate(crops):
        scene, folder = scenes[order[i % len(scenes)]]
        frame, box = compose(scene, SCENE_PLATE_WIDTH_MM[folder], load_rgb(crop_item.path))
        yield crop_item, scene, frame, box


def run(data: Path, split: str, recognizer: Recognizer, seed: int, verbose: bool) -> dict[str, Any]:
    """Every us-plates crop of `split` on a scene of `split` (placement fixed by `seed`): the counts
    and percentages described at the top of this file."""
    counts = {"plates": 0, "found": 0, "top1": 0, "matched": 0, "any": 0, "extra_plates": 0, "frames_with_extra": 0}
    times = []
    for crop_item, scene, frame, box in stand_in(data, split, seed):
        truth = crop_item.plates[0].text
        start = time.perf_counter()
        detections, results = recognizer.recognize_with_detections(frame)
        times.append((time.perf_counter() - start) * 1000)
        at_box = [r for r in results if box_iou(box, r.box) >= 0.5]
        extra = len(results) - len(at_box)
        counts["plates"] += 1
        counts["found"] += any(box_iou(box, d.box) >= 0.5 for d in detections)
        counts["top1"] += bool(results) and results[0].plate == truth
        counts["matched"] += any(r.plate == truth for r in at_box)
        counts["any"] += any(r.plate == truth for r in results)
        counts["extra_plates"] += extra
        counts["frames_with_extra"] += extra > 0
        if verbose and not (results and results[0].plate == truth):
            shown = [(r.plate, round(r.confidence, 2), round(r.detection_score, 2), box_iou(box, r.box) >= 0.5) for r in results]
            print(f"{crop_item.path.name} on {scene.path.name}: truth {truth} {box[2]}px; got {shown}", file=sys.stderr)
    n = counts["plates"]
    report: dict[str, Any] = {k: v for k, v in counts.items()}
    for key in ("found", "top1", "matched", "any", "frames_with_extra"):
        report[f"{key}_pct"] = round(100.0 * counts[key] / n, 1)
    report["median_ms"] = round(float(np.median(times)), 1)
    return report


def main() -> int:
    """Parse the arguments, run each split, print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--split", nargs="+", default=["val"], choices=("val", "test"), help="held-out split(s)")
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--detector", type=Path, default=None, help="detector .tflite (default: shipped)")
    parser.add_argument("--ocr", type=Path, default=None, help="OCR .tflite (default: shipped)")
    parser.add_argument("--windows", choices=WINDOW_MODES, default="auto",
                        help="detector windows of its own aspect across stills of another shape (recognize's default: auto)")
    parser.add_argument("--tiles", choices=TILE_MODES, default="auto",
                        help="detector tiles over stills more than twice its input width (recognize's default: auto)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="print each plate not read right first")
    args = parser.parse_args()
    detector, reader = PlateDetector(args.detector), PlateReader(args.ocr)
    recognizer = Recognizer(detector, reader, views=args.views, windows=args.windows, tiles=args.tiles)
    # "models" (manifest name -> sha256): which pair the figures are of, checked by `alpr-train report`
    report: dict[str, Any] = {"views": args.views, "windows": args.windows, "tiles": args.tiles,
                              "models": {m.manifest.name: m.manifest.sha256 for m in (detector.model, reader.model)}}
    for split in args.split:
        report[split] = run(args.data, split, recognizer, args.seed, args.verbose)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
