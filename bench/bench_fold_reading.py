"""What the reading side can still gain, measured on cross-validation folds (no test data).

Given OCR models trained with `alpr-train ocr --ocr-holdout K/N` (each never saw fold K of
train + val), this reads every fold crop of us-plates with each model under several framings and
reports, pooled over the folds:

- each model alone with `recognize`'s three views (the baseline), and with other view sets: the
  three plus one more framing, and larger sets (do more views help?);
- ensembles of 1, 2, 3, ... of the given models, every combination, members fused like the
  members of one file and the state voted (do more members help, and how far?).

    .venv/bin/python bench/bench_fold_reading.py --models '.cache/cv/E9s5_f{k}/out/plate_ocr.tflite' \
        --models '.cache/cv/E9s6_f{k}/out/plate_ocr.tflite' ... [--folds 4] [--data ../shared/data]

Reading follows `PlateReader.read_views`: in each view the members' candidates are fused, the
O / 0 of each candidate settled by the state's formats when the state is sure enough, then the
views fused with the state voted. Figures are exact-plate counts of the fold crops.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inference.datasets import normalise_plate, read_folder  # noqa: E402
from inference.ocr import PlateReader, PlateText, fuse_readings, margin_views  # noqa: E402
from inference.plate_formats import MIN_STATE_CONFIDENCE  # noqa: E402
from inference.training.ocr_data import load_rgb  # noqa: E402


def _pad(crop: np.ndarray, fx: float, fy: float) -> np.ndarray:
    h, w = crop.shape[:2]
    px, py = int(fx * w), int(fy * h)
    return np.pad(crop, [(py, py), (px, px), (0, 0)], mode="edge")


def _shift(crop: np.ndarray, fraction: float) -> np.ndarray:
    w = crop.shape[1]
    s = max(1, int(abs(fraction) * w))
    if fraction > 0:
        return np.pad(crop[:, s:], [(0, 0), (0, s), (0, 0)], mode="edge")
    return np.pad(crop[:, :w - s], [(0, 0), (s, 0), (0, 0)], mode="edge")


def _rotate(crop: np.ndarray, degrees: float) -> np.ndarray:
    h, w = crop.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(crop, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _gamma(crop: np.ndarray, gamma: float) -> np.ndarray:
    return (255 * (np.arange(256) / 255) ** gamma).clip(0, 255).astype(np.uint8)[crop]


def _crop(crop: np.ndarray, fx: float, fy: float) -> np.ndarray:
    h, w = crop.shape[:2]
    cx, cy = int(fx * w), int(fy * h)
    return np.ascontiguousarray(crop[cy:h - cy, cx:w - cx])


# today's three views (margin_views), then other framings a still image could be read with
TODAY = ("orig", "pad4", "crop3")
EXTRA = {
    "pad8": lambda c: _pad(c, 0.08, 0.12), "crop6": lambda c: _crop(c, 0.06, 0.10),
    "shift+3": lambda c: _shift(c, 0.03), "shift-3": lambda c: _shift(c, -0.03),
    "rot+2": lambda c: _rotate(c, 2.0), "rot-2": lambda c: _rotate(c, -2.0),
    "gamma0.7": lambda c: _gamma(c, 0.7), "gamma1.4": lambda c: _gamma(c, 1.4),
    "padx8": lambda c: _pad(c, 0.08, 0.0), "cropy8": lambda c: _crop(c, 0.0, 0.08),
}


def views_of(crop: np.ndarray) -> dict[str, np.ndarray]:
    """Every framing by name: today's three first."""
    views = dict(zip(TODAY, margin_views(crop)))
    views.update({name: make(crop) for name, make in EXTRA.items()})
    return views


def read_all(models: list[str], folds: int, data: Path) -> tuple[list[list[dict[str, PlateText]]], list[str], list[PlateReader]]:
    """readings[m][i][view]: model m's unsettled reading of fold crop i; the truths; for each crop, the first
    model's reader of its fold, whose manifest has the state classes and the formats of that fold's training
    labels (another fold's formats would hold this fold's own labels)."""
    readings: list[list[dict[str, PlateText]]] = [[] for _ in models]
    truths: list[str] = []
    manifests: list[PlateReader] = []
    for k in range(1, folds + 1):
        readers = [PlateReader(Path(pattern.format(k=k))) for pattern in models]
        items = read_folder(data / "us-plates", f"fold{k}of{folds}")
        for item in items:
            views = views_of(load_rgb(item.path))
            truths.append(normalise_plate(item.plates[0].text))
            manifests.append(readers[0])
            for m, reader in enumerate(readers):
                readings[m].append({name: reader.read(view, settle=False) for name, view in views.items()})
        print(f"fold {k}: {len(items)} crops read by {len(models)} models in {len(EXTRA) + len(TODAY)} views",
              file=sys.stderr, flush=True)
    return readings, truths, manifests


def settled(reading: PlateText, reader: PlateReader) -> PlateText:
    """The reading with O / 0 settled by its state's formats, as `PlateReader.read` does."""
    formats = reader.model.manifest.plate_formats
    if formats is None or reading.region_confidence < MIN_STATE_CONFIDENCE:
        return reading
    candidates = formats.settle_candidates(reading.candidates, reading.region)
    return PlateText(candidates[0][0], candidates[0][1], [], candidates[:10], reading.region,
                     reading.region_confidence, reading.region_probs)


def combined(readings: list[dict[str, PlateText]], views: tuple[str, ...], reader: PlateReader) -> str:
    """The text several models read for one crop over `views`."""
    classes = reader.model.manifest.region_classes
    per_view = [settled(fuse_readings([r[name] for r in readings], classes), reader) for name in views]
    return fuse_readings(per_view, classes).text


def right(readings: list[list[dict[str, PlateText]]], truths: list[str], members: tuple[int, ...],
          views: tuple[str, ...], readers: list[PlateReader]) -> int:
    """How many crops the members read exactly."""
    return sum(combined([readings[m][i] for m in members], views, readers[i]) == truth for i, truth in enumerate(truths))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", action="append", required=True,
                        help="an OCR model path with {k} for the fold, e.g. .cache/cv/S5_f{k}/out/plate_ocr.tflite (repeat)")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    readings, truths, readers = read_all(args.models, args.folds, args.data)
    n = len(truths)
    print(f"{n} fold crops, {len(args.models)} models")
    everyone = tuple(range(len(args.models)))
    view_sets = {"today (3)": TODAY, **{f"today + {x}": TODAY + (x,) for x in EXTRA},
                 "today + pad8, crop6": TODAY + ("pad8", "crop6"), f"all {len(TODAY) + len(EXTRA)}": TODAY + tuple(EXTRA)}
    for label, views in view_sets.items():
        counts = [right(readings, truths, (m,), views, readers) for m in everyone]
        print(f"views {label:24s} per model {counts}  sum {sum(counts)}")
    for size in range(1, len(args.models) + 1):
        counts = [right(readings, truths, members, TODAY, readers) for members in itertools.combinations(everyone, size)]
        print(f"{size} members: mean {np.mean(counts):.1f} of {n} ({100 * np.mean(counts) / n:.2f} %), "
              f"min {min(counts)}, max {max(counts)}, {len(counts)} combinations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
