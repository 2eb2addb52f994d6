"""`alpr-node recognize IMAGE... [--json]`: detect and read plates in still images."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from node.errors import BadInput

log = logging.getLogger(__name__)

MAX_CANDIDATES = 10


def register(subparsers: Any) -> None:
    """Add the `recognize` sub-command."""
    parser = subparsers.add_parser("recognize", help="detect and read plates in still images",
                                   description="Detect and read licence plates in still images (whole scenes or plate crops).")
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per image per line: its plates by confidence, best first, or "
                             "{\"file\": ..., \"error\": ...} for an image that could not be read")
    parser.add_argument("--views", type=int, default=3, choices=(1, 2, 3),
                        help="read each plate with this many margins and fuse them (default 3; 1 = fastest)")
    add_search_options(parser)
    parser.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    parser.add_argument("--detector", type=Path, default=None, help="detector .tflite (default: shipped model)")
    parser.add_argument("--ocr", type=Path, default=None, help="OCR .tflite (default: shipped model)")
    parser.add_argument("--whole-image", choices=("auto", "always", "never"), default="auto",
                        help="also read the whole image as a plate: auto = when it looks like a crop or nothing is detected")
    parser.set_defaults(func=run)


def add_search_options(parser: argparse.ArgumentParser) -> None:
    """`--windows auto|on|off` and `--tiles auto|off`, shared with `eval` so that it scores what
    `recognize` does."""
    # literal choices: importing the recognizer (numpy, LiteRT) here would slow every sub-command
    parser.add_argument("--windows", choices=("auto", "on", "off"), default="auto",
                        help="detector passes on windows of its own shape across images of another shape (4:3, "
                             "square, portrait), so plates are seen larger: auto (default) = when one pass finds no "
                             "sure plate; on = always; off = never")
    parser.add_argument("--tiles", choices=("auto", "off"), default="auto",
                        help="detector passes on a grid of tiles (2x2, 3x3 above three times the detector's "
                             "input width) of images more than twice that width, so small plates are seen larger: "
                             "auto (default) = when no sure plate was found otherwise; off = never")


def load_image(path: Path) -> Any:
    """An image file as an RGB uint8 array; BadInput naming the file when missing or unreadable."""
    import cv2
    import numpy as np

    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except cv2.error as exc:
        # OpenCV asserts rather than returning None on some files, e.g. a PNG declaring more
        # pixels than CV_IO_MAX_IMAGE_PIXELS
        raise BadInput(f"{path}: not a readable image (OpenCV: {getattr(exc, 'err', '') or exc})") from None
    if image is None:
        raise BadInput(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def image_error(path: Path, exc: Exception) -> str:
    """Why one image failed, without the leading `PATH: ` that load_image's errors carry (the
    caller names the file once, on stderr and in the JSON object's "file")."""
    return str(exc).removeprefix(f"{path}: ")


def report_error(path: Path, exc: Exception, as_json: bool) -> None:
    """One failed image: `alpr-node: error: PATH: why` on stderr and, with --json, its
    {"file", "error"} object on stdout so that every image given has a line."""
    reason = image_error(path, exc)
    print(f"alpr-node: error: {path}: {reason}", file=sys.stderr, flush=True)
    if as_json:
        print(json.dumps({"file": str(path), "error": reason}), flush=True)


def by_confidence(results: list[Any]) -> list[Any]:
    """Plates as printed: by reading confidence, best first (the interface contract of `recognize`);
    the recognizer's own order (`recognizer.rank`) also weighs the detection score."""
    return sorted(results, key=lambda r: -float(r.confidence))


def result_dict(path: Path, ms: float, results: list[Any]) -> dict[str, Any]:
    """The JSON object printed for one image; plates by confidence, best first."""
    return {
        "file": str(path),
        "ms": round(ms, 2),
        "plates": [
            {
                "plate": r.plate,
                "confidence": round(float(r.confidence), 4),
                "box": [int(v) for v in r.box],
                "region": r.region,
                "region_confidence": round(float(r.region_confidence), 4),
                "candidates": [{"plate": t, "confidence": round(float(p), 4)} for t, p in r.candidates[:MAX_CANDIDATES]],
            }
            for r in by_confidence(results)
        ],
    }


def human_line(path: Path, ms: float, results: list[Any]) -> str:
    """One readable line for one image; plates by confidence, best first."""
    if not results:
        return f"{path}: no plate ({ms:.0f} ms)"
    parts = [f"{r.plate} ({r.confidence:.2f}{', ' + r.region.upper() if r.region else ''}) at {list(r.box)}"
             for r in by_confidence(results)]
    return f"{path}: " + "; ".join(parts) + f" ({ms:.0f} ms)"


def run(args: argparse.Namespace) -> int:
    """Recognise every image; errors on single images are reported and the others still run."""
    from inference.detector import PlateDetector
    from inference.errors import InferenceError
    from inference.ocr import PlateReader
    from inference.recognizer import Recognizer

    recognizer = Recognizer(PlateDetector(args.detector, threads=args.threads), PlateReader(args.ocr, threads=args.threads),
                            whole_image=args.whole_image, views=args.views, windows=args.windows, tiles=args.tiles)
    failures = 0
    for path in args.images:
        try:
            image = load_image(path)
            start = time.perf_counter()
            results = recognizer.recognize(image)
        except (BadInput, InferenceError) as exc:  # e.g. BadImage: an image 1 px high
            failures += 1
            report_error(path, exc, args.json)
            continue
        ms = (time.perf_counter() - start) * 1000.0
        line = json.dumps(result_dict(path, ms, results)) if args.json else human_line(path, ms, results)
        print(line, flush=True)
    return 1 if failures else 0
