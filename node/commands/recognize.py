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
    # str, not Path: each output line names the file exactly as given (Path would turn
    # "./a.jpg" into "a.jpg" and "dir//a.jpg" into "dir/a.jpg", so a caller could not match it)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
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
    """`--windows auto|on|off`, `--tiles auto|off` and `--zoom-out auto|off`, shared with `eval`
    so that it scores what `recognize` does."""
    # literal choices: importing the recognizer (numpy, LiteRT) here would slow every sub-command
    parser.add_argument("--windows", choices=("auto", "on", "off"), default="auto",
                        help="detector passes on windows of its own shape across images of another shape (4:3, "
                             "square, portrait), so plates are seen larger: auto (default) = when one pass finds no "
                             "sure plate; on = always; off = never")
    parser.add_argument("--tiles", choices=("auto", "off"), default="auto",
                        help="detector passes on a grid of tiles (2x2, 3x3 above three times the detector's "
                             "input width) of images more than twice that width, so small plates are seen larger: "
                             "auto (default) = when no sure plate was found otherwise; off = never")
    parser.add_argument("--zoom-out", choices=("auto", "off"), default="auto",
                        help="a detector pass with the image shown smaller, for plates too large for the detector "
                             "to box whole (close-ups, loose crops): auto (default) = when the first pass boxes a "
                             "plate filling a quarter of its input's width or height; off = never")


def load_image(path: str | Path) -> Any:
    """An image file as an RGB uint8 array, as an image viewer shows it: EXIF orientation applied,
    grey / palette / 16-bit made 8-bit RGB, transparent pixels over white, and of a truncated
    file the part that could be decoded (with a warning). BadInput naming the file (as given)
    when it is missing, empty or not an image."""
    import cv2
    import numpy as np

    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: is a directory, not an image file") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not data:
        raise BadInput(f"{path}: empty file")
    if _has_transparency(data):
        # OpenCV's 3-channel decode drops the alpha channel and shows whatever colour lies under
        # transparent pixels (often black, so black lettering on a transparent plate vanishes)
        image = _decode_with_pillow(data, path)
        if image is not None:
            return image
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        # OpenCV asserts rather than returning None on some files, e.g. a PNG declaring more
        # pixels than CV_IO_MAX_IMAGE_PIXELS
        reason = getattr(exc, "err", "") or str(exc)
        if "Failed to allocate" in reason or "Insufficient memory" in reason:
            raise out_of_memory(path) from None  # an image, but too large for the memory there is
        raise BadInput(f"{path}: not a readable image (OpenCV: {reason})") from None
    if image is None:
        # OpenCV 5 refuses a JPEG with any data missing, even only its end marker (a photo cut
        # short in a copy or an upload), where viewers and OpenCV 4 show what is there
        image = _decode_with_pillow(data, path)
        if image is None:
            raise BadInput(f"{path}: not a readable image")
        return image
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


# Pillow modes that carry an alpha channel (palette and colour-key transparency show up as
# "transparency" in the image's info instead)
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def _has_transparency(data: bytes) -> bool:
    """Whether the image declares transparency, from its header alone (Pillow opens lazily)."""
    import io
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            # a 100-megapixel phone photo is fine here: only the header is read
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                return im.mode in ALPHA_MODES or "transparency" in im.info
    except (OSError, ValueError, Image.DecompressionBombError):
        return False  # not a format Pillow knows (or too large for it): OpenCV decides


def _decode_with_pillow(data: bytes, path: str | Path) -> Any:
    """RGB uint8 array of `data` decoded by Pillow (EXIF orientation applied, transparency over
    white), the decodable part of a truncated file with a warning; None when Pillow cannot."""
    import io
    import warnings

    import numpy as np
    from PIL import Image, ImageFile, ImageOps

    def decode() -> Any:
        # no `with`: exif_transpose may hand back the image itself, which must stay open
        im = Image.open(io.BytesIO(data))
        im.load()
        return ImageOps.exif_transpose(im)

    try:
        with warnings.catch_warnings():
            # OpenCV has already let the image's size through; Pillow's lower limit is no reason to warn
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                image = decode()
            except OSError:
                # "image file is truncated": decode again keeping what is there (the rest is grey)
                previous = ImageFile.LOAD_TRUNCATED_IMAGES
                ImageFile.LOAD_TRUNCATED_IMAGES = True
                try:
                    image = decode()
                finally:
                    ImageFile.LOAD_TRUNCATED_IMAGES = previous
                log.warning("%s: the file is truncated or damaged: reading the part of the image that decodes", path)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None  # not an image Pillow can read either (SyntaxError: some broken headers)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit (or wider) grey: Pillow's own conversion to 8 bits clips instead of scaling
        grey = np.asarray(image, dtype=np.float64)
        sixteen = image.mode.startswith("I;16") or (image.mode == "I" and grey.size > 0 and grey.max() > 255)
        image = Image.fromarray(np.clip(grey * (255.0 / 65535.0 if sixteen else 1.0), 0, 255).astype(np.uint8))
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def printable(text: str, stream: Any = None, encoding: str | None = None) -> str:
    r"""`text` as `stream` (default stdout), or `encoding`, can write it: a file name that is
    not valid UTF-8 (b'caf\xe9.jpg' on Linux, which Python holds as 'caf\udce9.jpg') shows its
    odd bytes as \xe9, and characters the encoding lacks as \u escapes, instead of stopping
    the batch with a UnicodeEncodeError."""
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no file name decoding made
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    encoding = encoding or getattr(stream if stream is not None else sys.stdout, "encoding", None) or "utf-8"
    try:
        return text.encode(encoding, "backslashreplace").decode(encoding)
    except LookupError:  # an encoding name Python does not know: ASCII is safe anywhere
        return text.encode("ascii", "backslashreplace").decode("ascii")


def image_size(path: str | Path, image: Any = None) -> str:
    """'WxH' of an image: of the array when it was decoded, else from the file's header
    (Pillow reads only that); '' when neither tells."""
    if image is not None and getattr(image, "ndim", 0) >= 2:
        return f"{image.shape[1]}x{image.shape[0]}"
    import warnings

    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None  # the header of a huge image is what is wanted (nothing is decoded)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                return f"{im.width}x{im.height}"
    except Exception:  # noqa: BLE001 - only a better message is at stake
        return ""
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def out_of_memory(path: str | Path, image: Any = None) -> BadInput:
    """The error for an image too large to decode or recognise in the memory there is."""
    size = image_size(path, image)
    return BadInput(f"{path}: out of memory on this image{' (' + size + ' px)' if size else ''}: "
                    "too large to process here")


def image_error(path: str | Path, exc: Exception) -> str:
    """Why one image failed, without the leading `PATH: ` that load_image's errors carry (the
    caller names the file once, on stderr and in the JSON object's "file")."""
    return str(exc).removeprefix(f"{path}: ")


def report_error(path: str | Path, exc: Exception, as_json: bool) -> None:
    """One failed image: `alpr-node: error: PATH: why` on stderr and, with --json, its
    {"file", "error"} object on stdout so that every image given has a line."""
    reason = image_error(path, exc)
    print(printable(f"alpr-node: error: {path}: {reason}", sys.stderr), file=sys.stderr, flush=True)
    if as_json:
        print(json.dumps({"file": str(path), "error": reason}), flush=True)


def by_confidence(results: list[Any]) -> list[Any]:
    """Plates as printed: by reading confidence, best first (the interface contract of `recognize`);
    the recognizer's own order (`recognizer.rank`) also weighs the detection score."""
    return sorted(results, key=lambda r: -float(r.confidence))


def result_dict(path: str | Path, ms: float, results: list[Any]) -> dict[str, Any]:
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


def human_line(path: str | Path, ms: float, results: list[Any]) -> str:
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
                            whole_image=args.whole_image, views=args.views, windows=args.windows, tiles=args.tiles,
                            zoom_out=args.zoom_out)
    failures = 0
    for path in args.images:
        image = None
        try:
            image = load_image(path)
            start = time.perf_counter()
            results = recognizer.recognize(image)
        except (BadInput, InferenceError) as exc:  # e.g. BadImage: an image 1 px high
            failures += 1
            report_error(path, exc, args.json)
            continue
        except MemoryError:  # e.g. a 25000x25000 scan under a memory limit: the next image may fit
            failures += 1
            oom = out_of_memory(path, image)
            image = None  # let the array go before the next image
            report_error(path, oom, args.json)
            continue
        ms = (time.perf_counter() - start) * 1000.0
        # JSON is ASCII (json.dumps escapes); a human line may hold a name stdout cannot encode
        line = json.dumps(result_dict(path, ms, results)) if args.json else printable(human_line(path, ms, results))
        print(line, flush=True)
    return 1 if failures else 0
