"""Plates too large for the detector: close-ups (`zoom_out`) and loose small crops, as `recognize` reads them.

Two measurements with the shipped models (or --detector / --ocr), both on real us-plates crops
of one held-out split (val unless `--split test`), scored on the first plate `alpr-node
recognize` prints (its plates by reading confidence, `node.commands.recognize.by_confidence`):

(a) Close-ups. Each crop is pasted at US size into a real eu-scenes / br-scenes frame of the same
    split (bench_us_scenes.py's stand-in, scenes placed by --seed), and the frame is cut 4:3
    around the plate so that the plate is F of the cut's width (at most the whole frame; the
    plate centred to within 15 % of the cut, by a random offset from one generator seeded with
    --seed, drawn per crop for each F in the order given, and the plate always kept inside: so
    `--fractions full 0.3 0.45 0.6` cuts the 45 and 60 % frames otherwise than the default);
    F `full` keeps the whole frame. Each image is recognised with `zoom_out` auto and off (3 views,
    windows and tiles auto: recognize's defaults). Per F and mode: first (the first plate printed
    is the crop's label), any (the label is among the plates printed) and extra (plates printed
    whose box overlaps the pasted plate with IoU under 0.3).

(b) Loose crops. Each crop is resized to WxH (cv2.INTER_AREA; `full` keeps its own size) and given
    a margin of M of that size on each side (M x width left and right, M x height above and below)
    of one random flat colour (each channel 20..199) plus Gaussian noise (sigma 5), drawn from a
    second generator seeded with --seed, per crop for each size in the order given. First is
    counted for recognize as it is (a small plate-shaped image is taken as a crop only if its
    whole read is sure; else its detections are read too) and for the image read whole (the
    recognizer's own reader with the same views: what recognize did with every small
    plate-shaped image before that rule, such as the 240x120 and 400x200 images of the default
    sizes; for an image that is not small and plate-shaped, such as many `full` ones, it is only
    the whole read, not what recognize did before).

    .venv/bin/python bench/bench_closeups.py --split val [--fractions 0.45 0.6 full] \\
        [--sizes 120x60 200x100 full] [--margin 0.5] [--json OUT]

Prints a table; `--json OUT` also writes the figures (with the models' sha256) to OUT.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_us_scenes import stand_in  # noqa: E402
from inference.datasets import read_folder  # noqa: E402
from inference.detector import PlateDetector  # noqa: E402
from inference.metrics import box_iou  # noqa: E402
from inference.ocr import PlateReader  # noqa: E402
from inference.recognizer import ZOOM_MODES, Recognizer  # noqa: E402
from inference.training.ocr_data import load_rgb  # noqa: E402
from node.commands.recognize import by_confidence  # noqa: E402

Box = tuple[int, int, int, int]
EXTRA_IOU = 0.3     # a printed plate whose box overlaps the pasted one less than this is an extra plate
CENTRE_JITTER = 0.15  # the plate's centre lies within this part of the cut's size from the cut's centre
FOLDERS = ("us-plates", "eu-scenes", "br-scenes")


def parse_fraction(text: str) -> float | None:
    """`full` (None) or a plate/frame width fraction in (0, 1]."""
    if text == "full":
        return None
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: a fraction in (0, 1] or 'full'") from exc
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: a fraction in (0, 1] or 'full'")
    return value


def parse_size(text: str) -> tuple[int, int] | None:
    """`full` (None) or WxH in pixels."""
    if text == "full":
        return None
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: WxH (such as 120x60) or 'full'") from exc
    if width < 8 or height < 8:
        raise argparse.ArgumentTypeError(f"{text!r}: at least 8x8")
    return width, height


def close_up(frame: np.ndarray, box: Box, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, Box]:
    """A 4:3 cut of `frame` in which the plate at `box` is `fraction` of the width (at most the
    whole frame), centred to within CENTRE_JITTER and wholly inside; returns (cut, plate box in it)."""
    height, width = frame.shape[:2]
    x, y, w, h = box
    cut_w = min(width, int(w / fraction))
    cut_h = min(height, int(cut_w * 3 / 4))
    cx = x + w / 2 + rng.uniform(-CENTRE_JITTER, CENTRE_JITTER) * cut_w
    cy = y + h / 2 + rng.uniform(-CENTRE_JITTER, CENTRE_JITTER) * cut_h
    x0 = int(np.clip(cx - cut_w / 2, 0, width - cut_w))
    y0 = int(np.clip(cy - cut_h / 2, 0, height - cut_h))
    x0, y0 = max(min(x0, x), x + w - cut_w), max(min(y0, y), y + h - cut_h)
    x0, y0 = int(np.clip(x0, 0, width - cut_w)), int(np.clip(y0, 0, height - cut_h))
    return np.ascontiguousarray(frame[y0:y0 + cut_h, x0:x0 + cut_w]), (x - x0, y - y0, w, h)


def loose(crop: np.ndarray, margin: float, rng: np.random.Generator) -> np.ndarray:
    """`crop` with `margin` of its width left and right and of its height above and below, of one
    random flat colour plus a little noise."""
    h, w = crop.shape[:2]
    mx, my = int(w * margin), int(h * margin)
    colour = rng.integers(20, 200, 3)
    out = np.empty((h + 2 * my, w + 2 * mx, 3), np.uint8)
    out[:] = colour
    out = np.clip(out + rng.normal(0, 5, out.shape), 0, 255).astype(np.uint8)
    out[my:my + h, mx:mx + w] = crop
    return out


def fraction_name(fraction: float | None) -> str:
    """`full` or the fraction as a percentage."""
    return "full" if fraction is None else f"{100 * fraction:g} %"


def size_name(size: tuple[int, int] | None) -> str:
    """`full` or WxH."""
    return "full" if size is None else f"{size[0]}x{size[1]}"


def measure_closeups(data: Path, split: str, fractions: list[float | None], recognizers: dict[str, Recognizer],
                     seed: int) -> dict[str, dict[str, Any]]:
    """Part (a): per F and zoom_out mode, the counts described at the top of this file."""
    rng = np.random.default_rng(seed)
    counts = {(f, m): {"first": 0, "any": 0, "extra_plates": 0} for f in fractions for m in recognizers}
    times: dict[tuple[float | None, str], list[float]] = {key: [] for key in counts}
    n = 0
    for crop_item, _scene, frame, box in stand_in(data, split, seed):
        n += 1
        truth = crop_item.plates[0].text
        for fraction in fractions:
            image, plate_box = (frame, box) if fraction is None else close_up(frame, box, fraction, rng)
            for mode, recognizer in recognizers.items():
                start = time.perf_counter()
                printed = by_confidence(recognizer.recognize(image))
                times[(fraction, mode)].append((time.perf_counter() - start) * 1000)
                c = counts[(fraction, mode)]
                c["first"] += bool(printed) and printed[0].plate == truth
                c["any"] += any(p.plate == truth for p in printed)
                c["extra_plates"] += sum(box_iou(plate_box, p.box) < EXTRA_IOU for p in printed)
    report: dict[str, dict[str, Any]] = {}
    for (fraction, mode), c in counts.items():
        report.setdefault(fraction_name(fraction), {})[f"zoom_out_{mode}"] = {
            **c, "plates": n, "first_pct": round(100 * c["first"] / n, 1), "any_pct": round(100 * c["any"] / n, 1),
            "median_ms": round(float(np.median(times[(fraction, mode)])), 1)}
    return report


def measure_loose(data: Path, split: str, sizes: list[tuple[int, int] | None], margin: float,
                  recognizer: Recognizer, seed: int) -> dict[str, dict[str, Any]]:
    """Part (b): per size, the first plate printed right by recognize and by a whole-image read."""
    rng = np.random.default_rng(seed)
    crops = read_folder(data / "us-plates", split)
    if not crops:
        raise SystemExit(f"{data / 'us-plates'}: no crops in split {split!r} (see ../shared/data/README.md)")
    report: dict[str, dict[str, Any]] = {}
    for size in sizes:
        recognized = whole = 0
        times = []
        for item in crops:
            crop = load_rgb(item.path)
            if size is not None:
                crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
            image = np.ascontiguousarray(loose(crop, margin, rng))
            truth = item.plates[0].text
            start = time.perf_counter()
            printed = by_confidence(recognizer.recognize(image))
            times.append((time.perf_counter() - start) * 1000)
            recognized += bool(printed) and printed[0].plate == truth
            read = recognizer.reader.read_views(image, recognizer.views) if recognizer.views > 1 else recognizer.reader.read(image)
            whole += read.text == truth
        height, width = image.shape[:2]
        n = len(crops)
        report[size_name(size)] = {
            "plates": n, "image": "varies" if size is None else f"{width}x{height}",
            "whole_first": whole, "whole_first_pct": round(100 * whole / n, 1),
            "recognize_first": recognized, "recognize_first_pct": round(100 * recognized / n, 1),
            "median_ms": round(float(np.median(times)), 1)}
    return report


def print_tables(report: dict[str, Any]) -> None:
    """The figures of `report` as two small tables."""
    split = report["split"]
    if report["closeups"]:
        print(f"(a) close-ups, {split}: first plate printed right / label among plates / extra plates")
        modes = list(next(iter(report["closeups"].values())))
        print(f"{'plate/width':>12}" + "".join(f" | {m:<28}" for m in modes))
        for name, row in report["closeups"].items():
            cells = "".join(f" | {r['first']:>3}/{r['plates']:<3} {r['any']:>3}/{r['plates']:<3} {r['extra_plates']:>4} "
                            f"{r['median_ms']:>5.0f}ms" for r in row.values())
            print(f"{name:>12}{cells}")
    if report["loose"]:
        print(f"(b) loose crops, margin {report['margin']:g} each side, {split}: first plate printed right")
        print(f"{'crop':>8} {'image':>8} | {'read whole':>10} | {'recognize':>10} | median ms")
        for name, r in report["loose"].items():
            print(f"{name:>8} {r['image']:>8} | {r['whole_first']:>4}/{r['plates']:<5} | "
                  f"{r['recognize_first']:>4}/{r['plates']:<5} | {r['median_ms']:>6.0f}")


def main() -> int:
    """Parse the arguments, measure, print the tables and optionally write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--split", choices=("val", "test"), default="val", help="held-out split of crops and scenes")
    parser.add_argument("--fractions", type=parse_fraction, nargs="*", default=[0.45, 0.6, None],
                        help="plate width / close-up width, or 'full' for the whole frame (default 0.45 0.6 full; "
                             "none: skip the close-ups)")
    parser.add_argument("--zoom-out", nargs="+", choices=ZOOM_MODES, default=list(ZOOM_MODES),
                        help="zoom_out modes compared on the close-ups (default auto off)")
    parser.add_argument("--sizes", type=parse_size, nargs="*", default=[(120, 60), (200, 100), None],
                        help="loose crops resized to WxH, or 'full' (default 120x60 200x100 full; none: skip)")
    parser.add_argument("--margin", type=float, default=0.5, help="loose crops' margin each side, part of their size")
    parser.add_argument("--views", type=int, default=3, help="OCR views (recognize's default 3)")
    parser.add_argument("--detector", type=Path, default=None, help="detector .tflite (default: shipped)")
    parser.add_argument("--ocr", type=Path, default=None, help="OCR .tflite (default: shipped)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the figures to OUT")
    args = parser.parse_args()
    missing = [name for name in FOLDERS if not (args.data / name).is_dir()]
    if missing:
        raise SystemExit(f"{args.data}: needs {', '.join(missing)} (see ../shared/data/README.md)")
    if args.margin < 0:
        parser.error("--margin must be 0 or more")
    detector, reader = PlateDetector(args.detector), PlateReader(args.ocr)
    recognizers = {mode: Recognizer(detector, reader, views=args.views, zoom_out=mode) for mode in args.zoom_out}
    # "models" (manifest name -> sha256): which pair the figures are of
    report: dict[str, Any] = {"split": args.split, "seed": args.seed, "views": args.views, "margin": args.margin,
                              "models": {m.manifest.name: m.manifest.sha256 for m in (detector.model, reader.model)}}
    report["closeups"] = measure_closeups(args.data, args.split, args.fractions, recognizers, args.seed) if args.fractions else {}
    default = Recognizer(detector, reader, views=args.views)
    report["loose"] = measure_loose(args.data, args.split, args.sizes, args.margin, default, args.seed) if args.sizes else {}
    print_tables(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
