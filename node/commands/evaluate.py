"""`alpr-node eval FOLDER`: score the recogniser on a labelled folder and write a misread sheet.

Both label formats are read: `labels.csv` (`file,state,plate`, plate crops) and one
`NAME.txt` per scene image (`file x y w h PLATE`, tab separated). `--split test` keeps the
same fixed-seed part of the folder that training held out.

Scene readings are matched to labelled plates by box: IoU >= --iou (0.5), best first, one
to one. A reading whose box is the whole image is the recognizer reading the image as a plate
crop (a close-up: the plate fills much of it, so that box's IoU with the plate's is below 0.5);
after the IoU matches it goes to a labelled plate left unmatched that lies (90 % or more)
inside the image: the one whose text it reads, else the largest. Such matches count for
`reported_plates` recall and precision but not its `mean_iou`. The detector's own boxes
(`detection`) are matched by IoU alone.

The figures are printed first, then the misread sheet is written (whole or not at all). A
sheet that cannot be written is an error on stderr naming it, and the exit status is 3 (the
figures printed are complete); otherwise it is 1 when some image could not be scored, else 0.
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from node.commands.recognize import (
    add_search_options,
    by_confidence,
    image_error,
    load_image,
    out_of_memory,
    printable,
)
from node.errors import BadInput
from transport import atomic


def _split(text: str) -> str:
    from inference.datasets import DatasetError, check_split  # light: no numpy, no LiteRT

    try:
        check_split(text)
    except DatasetError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def register(subparsers: Any) -> None:
    """Add the `eval` sub-command."""
    parser = subparsers.add_parser("eval", help="score recognition on a labelled folder",
                                   description="Score detection and reading on a labelled folder of images.",
                                   epilog="Exit status: 0 all scored; 1 some images could not be read (the rest "
                                          "are scored); 2 nothing scored (an error); 3 the figures were printed but "
                                          "the misread sheet could not be written.")
    parser.add_argument("folder", type=Path, metavar="FOLDER", help="folder with labels.csv and/or NAME.txt labels")
    parser.add_argument("--split", type=_split, default=None,
                        help="only this part of the fixed-seed split used in training: train, val, test, or for "
                             "cross-validation over train + val foldKofN (the K-th of N folds) or restKofN (the others)")
    parser.add_argument("--sheet", type=Path, default=None,
                        help="contact sheet of misreads (HTML; default ./alpr-eval-FOLDER.html), written after the "
                             "figures are printed; if it cannot be written the exit status is 3")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--views", type=int, default=3, choices=(1, 2, 3),
                        help="margins read and fused per plate, as `recognize` does (default 3)")
    add_search_options(parser)
    parser.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    parser.add_argument("--detector", type=Path, default=None, help="detector .tflite (default: shipped model)")
    parser.add_argument("--ocr", type=Path, default=None, help="OCR .tflite (default: shipped model)")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU for a detection to count (default 0.5)")
    parser.add_argument("--limit", type=int, default=0, help="score only the first N images (0 = all)")
    parser.set_defaults(func=run)


@dataclass
class Misread:
    """One plate read wrong (or not found), for the contact sheet."""

    file: str
    truth: str
    reading: str
    crop_png: bytes


class Progress:
    """A one-line progress bar on stderr (redrawn in place)."""

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 30) -> None:
        self.total, self.width, self.done = max(1, total), width, 0
        self.stream = stream if stream is not None else sys.stderr

    def step(self, label: str = "") -> None:
        self.done += 1
        filled = int(self.width * self.done / self.total)
        label = printable(label[:40], self.stream)  # a name that is not UTF-8 must not stop the run
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} {label:<40}")
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def _png(image: Any) -> bytes:
    import cv2

    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return data.tobytes() if ok else b""


def _text(value: str) -> str:
    r"""`value` HTML-escaped and encodable as UTF-8: a file name that is not valid UTF-8 (held by
    Python as surrogates, 'caf\udce9.jpg') shows its odd bytes as \xe9."""
    return html.escape(printable(value, encoding="utf-8"))


def write_sheet(path: Path, title: str, misreads: list[Misread], figures: dict[str, Any]) -> None:
    """An HTML page with every misread: crop, truth and reading. Written whole or not at all (a
    temporary file beside it, renamed over it), so a failed write leaves no partial page."""
    rows = []
    for m in misreads:
        src = "data:image/png;base64," + base64.b64encode(m.crop_png).decode("ascii") if m.crop_png else ""
        rows.append(
            f"<tr><td>{_text(m.file)}</td><td><img src=\"{src}\" style=\"max-height:80px\"></td>"
            f"<td><code>{_text(m.truth)}</code></td><td><code>{_text(m.reading or '(none)')}</code></td></tr>"
        )
    page = (
        f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{_text(title)}</title></head><body>"
        f"<h1>{_text(title)}</h1><pre>{html.escape(json.dumps(figures, indent=2))}</pre>"
        f"<h2>{len(misreads)} misreads</h2><table border=\"1\" cellpadding=\"4\">"
        "<tr><th>file</th><th>crop</th><th>truth</th><th>reading</th></tr>" + "".join(rows) + "</table></body></html>"
    )
    data = page.encode("utf-8", "backslashreplace")  # before any file is touched
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {path.parent} does not exist")
    # Plate crops and their text: 0600, and written so that a planted link is not followed
    # (transport.atomic: O_EXCL|O_NOFOLLOW temp file, fsync, rename).
    atomic.write_bytes(path, data, 0o600)


def whole_image_matches(truths: list[tuple[int, int, int, int]], texts: list[str], readings: list[Any],
                        pairs: list[tuple[int, int]], width: int, height: int) -> list[tuple[int, int]]:
    """More (label, reading) pairs beyond the IoU ones `pairs`: a reading whose box is the whole
    `width` x `height` image (read as a plate crop) goes to an unmatched label lying inside the
    image, the one whose text it reads, else the largest."""
    used_truths, used_readings = {t for t, _ in pairs}, {r for _, r in pairs}
    extra = []
    for ri, reading in enumerate(readings):
        if ri in used_readings or tuple(int(v) for v in reading.box) != (0, 0, width, height):
            continue
        free = [ti for ti, box in enumerate(truths) if ti not in used_truths and _inside(box, width, height)]
        if not free:
            continue
        same = [ti for ti in free if texts[ti] and texts[ti] == reading.plate]
        ti = same[0] if same else max(free, key=lambda i: truths[i][2] * truths[i][3])
        used_truths.add(ti)
        extra.append((ti, ri))
    return extra


# A labelled plate this much inside the image can be the one a whole-image read is of.
INSIDE_SHARE = 0.9


def _inside(box: tuple[int, int, int, int], width: int, height: int) -> bool:
    """Whether INSIDE_SHARE or more of a (x, y, w, h) box lies inside the image (labels may
    overrun its edge by a pixel or two)."""
    x, y, w, h = box
    if w <= 0 or h <= 0:
        return False
    iw = max(0, min(x + w, width) - max(x, 0))
    ih = max(0, min(y + h, height) - max(y, 0))
    return iw * ih >= INSIDE_SHARE * w * h


def run(args: argparse.Namespace) -> int:
    """Score the folder; print the figures; write the contact sheet."""
    from inference.datasets import read_folder
    from inference.detector import PlateDetector
    from inference.errors import InferenceError
    from inference.metrics import DetectionScore, OcrScore
    from inference.ocr import PlateReader
    from inference.recognizer import Recognizer

    items = read_folder(args.folder, args.split)
    if args.limit > 0:
        items = items[: args.limit]
    if not items:
        raise BadInput(f"{args.folder}: no labelled images{' in split ' + args.split if args.split else ''}")
    detector, reader = PlateDetector(args.detector, threads=args.threads), PlateReader(args.ocr, threads=args.threads)
    recognizer = Recognizer(detector, reader, views=args.views, windows=args.windows, tiles=args.tiles,
                            zoom_out=args.zoom_out)
    # det scores the detector's raw boxes; reported scores the plates recognize would print
    # (boxes whose reading passed the recognizer's checks), which is what a user sees.
    ocr, det, reported = OcrScore(), DetectionScore(), DetectionScore()
    regions = bool(reader.model.manifest.region_classes)
    detect_ms: list[float] = []
    ocr_ms: list[float] = []
    total_ms: list[float] = []
    misreads: list[Misread] = []
    errors: list[dict[str, str]] = []
    progress = Progress(len(items))
    for item in items:
        progress.step(item.path.name)
        image = None
        try:
            try:
                image = load_image(item.path)
                start = time.perf_counter()
                detector_ms = detector.busy_ms
                detections, results = recognizer.recognize_with_detections(image)
            except MemoryError:  # a huge image: the others may fit
                raise out_of_memory(item.path, image) from None
        except (BadInput, InferenceError) as exc:  # e.g. BadImage: an image 1 px high; the others still count
            image = None
            reason = image_error(item.path, exc)
            errors.append({"file": str(item.path), "error": reason})
            print(printable(f"\nalpr-node: error: {item.path}: {reason}", sys.stderr), file=sys.stderr)
            continue
        total_ms.append((time.perf_counter() - start) * 1000.0)
        # every scored image took its detector passes, plates found or not (a result's own
        # detect_ms exists only where a plate was reported, and not all passes before it)
        detect_ms.append(detector.busy_ms - detector_ms)
        ocr_ms.extend(r.ocr_ms for r in results)
        if item.is_crop:
            truth = item.plates[0].text
            # the plate `recognize` prints first (by confidence), not the recognizer's rank order
            best = by_confidence(results)[0] if results else None
            reading = best.plate if best else ""
            # an OCR without a region output is not scored on regions (null, not 0 %)
            ocr.add(truth, reading, [c for c, _ in best.candidates] if best else [], item.region if regions else None,
                    best.region if best else None)
            if reading != truth:
                misreads.append(Misread(item.path.name, truth, reading, _png(image)))
            continue
        truths = [p.box for p in item.plates]
        det.add(truths, [d.box for d in detections], args.iou)
        iou_pairs = reported.add(truths, [r.box for r in results], args.iou)
        # a whole-image reading (the image read as a crop) of a plate filling less than half of it
        height, width = image.shape[:2]
        extra = whole_image_matches(truths, [p.text for p in item.plates], results, iou_pairs, width, height)
        reported.matched += len(extra)
        pairs = dict(iou_pairs + extra)
        for ti, plate in enumerate(item.plates):
            if not plate.text:
                continue
            found = results[pairs[ti]] if ti in pairs else None
            reading = found.plate if found else ""
            ocr.add(plate.text, reading, [c for c, _ in found.candidates] if found else [])
            if reading != plate.text:
                x, y, w, h = plate.box
                crop = image[max(0, y): y + h, max(0, x): x + w]
                misreads.append(Misread(item.path.name, plate.text, reading, _png(crop) if crop.size else b""))
    # "models": which models the figures are of (manifest name -> sha256), so that REPORT.md can
    # tell figures of the shipped pair from figures of an older one
    figures: dict[str, Any] = {"folder": str(args.folder), "split": args.split or "all", "images": len(items),
                               "unreadable": len(errors), "errors": errors,
                               "models": {m.manifest.name: m.manifest.sha256 for m in (detector.model, reader.model)},
                               "reading": ocr.as_dict()}
    if det.truths:
        figures["detection"] = {"iou": args.iou, **det.as_dict()}
        figures["reported_plates"] = {"iou": args.iou, **reported.as_dict()}
    figures["ms"] = {
        "total_median": round(statistics.median(total_ms), 2) if total_ms else 0.0,
        "detect_median": round(statistics.median(detect_ms), 2) if detect_ms else 0.0,
        "ocr_median_per_plate": round(statistics.median(ocr_ms), 2) if ocr_ms else 0.0,
    }
    sheet = args.sheet or Path(f"alpr-eval-{args.folder.resolve().name}.html")
    title = f"alpr-node eval {args.folder} ({figures['split']})"
    page_figures = dict(figures)
    figures["sheet"] = str(sheet)
    # the figures first: a sheet that cannot be written must not cost the run
    if args.json:
        print(json.dumps(figures), flush=True)
    else:
        r = figures["reading"]
        print(printable(f"{args.folder} [{figures['split']}]: {len(items)} images"))
        print(f"  reading: exact {r['exact_pct']}% of {r['plates']}, characters {r['char_accuracy_pct']}%, "
              f"top-10 {r['top10_pct']}%, region top-1 "
              + (f"{r['region_top1_pct']}%" if r["region_top1_pct"] is not None else "n/a"))
        if "detection" in figures:
            d = figures["detection"]
            print(f"  detection @IoU>={args.iou}: recall {d['recall_pct']}%, precision {d['precision_pct']}% "
                  f"({d['truths']} plates, {d['predictions']} boxes)")
            p = figures["reported_plates"]
            print(f"  plates reported @IoU>={args.iou}: recall {p['recall_pct']}%, precision {p['precision_pct']}% "
                  f"({p['predictions']} reported)")
        m = figures["ms"]
        print(f"  ms: total {m['total_median']}, detect {m['detect_median']}, ocr/plate {m['ocr_median_per_plate']} (medians)")
        if errors:
            print(f"  not scored: {len(errors)} image(s) that could not be read (errors above)")
        sys.stdout.flush()
    try:
        write_sheet(sheet, title, misreads, page_figures)
    except OSError as exc:
        print(printable(f"alpr-node: error: cannot write the misread sheet {sheet}: {exc.strerror or exc} "
                        "(the figures printed are complete)", sys.stderr), file=sys.stderr)
        return 3
    if not args.json:
        print(printable(f"  misreads sheet: {sheet}"))
    return 1 if errors else 0
