"""Labelled image folders (plate crops with labels.csv, scenes with NAME.txt) and the fixed split.

The split is by file name, hashed with a fixed seed, so it is the same for training and for
`alpr-node eval --split test`, does not depend on listing order, and stays put when files are
added to a folder.
"""
from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from inference.errors import InferenceError

SPLIT_SEED = "alpr-split-v1"
SPLIT_FRACTIONS = (("train", 0.7), ("val", 0.1), ("test", 0.2))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


class DatasetError(InferenceError, ValueError):
    """A labelled folder is malformed (the message names the file and line)."""


@dataclass(frozen=True)
class PlateBox:
    """A labelled plate in a scene: box (x, y, w, h) in pixels and its text ('' if unknown)."""

    box: tuple[int, int, int, int]
    text: str


@dataclass(frozen=True)
class LabelledImage:
    """One image of a labelled folder: crop labels have no boxes; scene labels do."""

    path: Path
    plates: tuple[PlateBox, ...]
    region: str | None = None
    is_crop: bool = False


def split_of(name: str, seed: str = SPLIT_SEED) -> str:
    """'train', 'val' or 'test' for the file `name` (base name only is used)."""
    digest = hashlib.sha256(f"{seed}:{Path(name).name}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for split, share in SPLIT_FRACTIONS:
        edge += share
        if fraction < edge:
            return split
    return SPLIT_FRACTIONS[-1][0]


FOLD_SEED = "alpr-fold-v1"
_FOLD = re.compile(r"^(fold|rest)([1-9][0-9]*)of([1-9][0-9]*)$")


def fold_of(name: str, folds: int, seed: str = FOLD_SEED) -> int:
    """Which of `folds` cross-validation folds (1-based) the file `name` falls in (by hash, like the split)."""
    digest = hashlib.sha256(f"{seed}:{Path(name).name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % folds + 1


def check_split(split: str) -> None:
    """Raise DatasetError naming `split` unless `in_split` knows it."""
    in_split("", split)


def in_split(name: str, split: str) -> bool:
    """True when the file `name` belongs to `split`: 'train', 'val', 'test', or for
    cross-validation over train + val (test is never in a fold) 'foldKofN', the K-th of N folds,
    and 'restKofN', train + val without it."""
    fold = _FOLD.match(split)
    if fold:
        kind, k, n = fold.group(1), int(fold.group(2)), int(fold.group(3))
        if k > n:
            raise DatasetError(f"unknown split {split!r}: fold {k} of {n}")
        if split_of(name) == "test":
            return False
        return (fold_of(name, n) == k) == (kind == "fold")
    if split not in {s for s, _ in SPLIT_FRACTIONS}:
        raise DatasetError(f"unknown split {split!r}: use train, val, test, foldKofN or restKofN")
    return split_of(name) == split


def read_folder(folder: Path, split: str | None = None) -> list[LabelledImage]:
    """Every labelled image in `folder` (labels.csv crops and/or NAME.txt scenes), sorted by name.

    `split` keeps only that part of the fixed split ('train', 'val', 'test') or of the
    cross-validation folds over train + val ('fold2of4', 'rest2of4'; see `in_split`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder")
    items: dict[str, LabelledImage] = {}
    labels = folder / "labels.csv"
    if labels.is_file():
        # utf-8-sig: Excel's "CSV UTF-8" starts the file with a byte order mark, which would
        # otherwise become part of the first column's name ("\ufefffile")
        with labels.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "file" not in reader.fieldnames or "plate" not in reader.fieldnames:
                raise DatasetError(f"{labels}: header must include 'file' and 'plate'")
            for line, row in enumerate(reader, start=2):
                name = (row.get("file") or "").strip()
                if not name:
                    raise DatasetError(f"{labels}:{line}: empty 'file'")
                plate = normalise_plate(row.get("plate") or "")
                region = (row.get("state") or row.get("region") or "").strip().lower() or None
                items[name] = LabelledImage(folder / name, (PlateBox((0, 0, 0, 0), plate),), region, True)
    for txt in sorted(folder.glob("*.txt")):
        image = _image_for(txt)
        if image is None:
            continue
        plates = []
        for line_no, line in enumerate(txt.read_text(encoding="utf-8-sig", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split("\t") if "\t" in line else line.split()
            if len(parts) < 5:
                raise DatasetError(f"{txt}:{line_no}: expected 'file x y w h PLATE'")
            try:
                x, y, w, h = (int(float(v)) for v in parts[1:5])
            except ValueError:
                raise DatasetError(f"{txt}:{line_no}: box values must be numbers") from None
            plates.append(PlateBox((x, y, w, h), normalise_plate(parts[5] if len(parts) > 5 else "")))
        items[image.name] = LabelledImage(image, tuple(plates), None, False)
    result = [items[k] for k in sorted(items)]
    if split is not None:
        check_split(split)  # an unknown split is an error even in an empty folder
        result = [item for item in result if in_split(item.path.name, split)]
    return result


def normalise_plate(text: str) -> str:
    """Upper case, no spaces, dashes or dots: the form plates are compared in."""
    return "".join(ch for ch in text.upper() if ch.isalnum())


def _image_for(txt: Path) -> Path | None:
    for suffix in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES):
        candidate = txt.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None
