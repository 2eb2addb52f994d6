"""Detection + OCR on whole images: `Recognizer(detector, reader).recognize(image_rgb)`."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from inference.detector import Detection, PlateDetector
from inference.ocr import PlateReader, PlateText

log = logging.getLogger(__name__)

PLATE_ASPECT = (1.5, 3.5)   # width / height of images that may be large plate crops
CROP_CONFIDENCE = 0.5       # whole-image read at least this sure: the image is a plate crop
PLATE_LENGTH = (4, 8)       # ... and reads as this many characters
WINDOW_MODES = ("auto", "on", "off")
TILE_MODES = ("auto", "off")
ZOOM_MODES = ("auto", "off")
# A detection this large a part of the detector's input width or height may be a plate larger
# than the detector can box (the shipped one is trained on plates up to 180 px of its 512 px
# width, and its boxes stop growing there): `zoom_out` "auto" then looks again with the frame
# shown smaller (PlateDetector.detect_zoomed_out). Below the largest trained size, so that a
# plate past it, whose box is cut to about that size, is always looked at again.
LARGE_BOX = 0.25
# The smallest image worth reading, in pixels: a plate of 5-8 characters narrower than 32 px has
# under 4 px a character, shorter than 12 px under ~8 px of character height; whatever the OCR
# makes of fewer pixels is a guess (a 20x10 image read as a confident plate). The smallest
# us-plates crop is 74x36, the smallest plate the detector must find 60 px wide.
MIN_IMAGE_PX = (32, 12)
MIN_CHARS = 3               # a detection that reads as fewer characters is not reported as a plate
# ... nor one whose reading is less sure than this. Rule: half the lowest confidence of a right
# read on the val splits (US plates on real cars from bench_us_scenes, EU and BR scenes), rounded
# down to 0.05; bench/bench_read_threshold.py computes it. The R pair OCR with the v8 detector:
# lowest right read 0.245, so 0.10 (the single R's was 0.356, so 0.15; the v9 OCR's 0.29, so
# 0.10; the v8 OCR's 0.33, so 0.15).
MIN_READ_CONFIDENCE = 0.10


@dataclass(frozen=True)
class PlateResult:
    """One read plate: box (x, y, w, h) in image pixels, text, confidences and stage times."""

    box: tuple[int, int, int, int]
    plate: str
    confidence: float
    region: str | None
    region_confidence: float
    candidates: list[tuple[str, float]] = field(default_factory=list)
    char_confidences: list[float] = field(default_factory=list)
    detection_score: float = 0.0
    detect_ms: float = 0.0
    ocr_ms: float = 0.0
    # "detector"; "whole_image" when the image itself was read as a plate crop; or
    # "whole_image_fallback" when it was read whole without being judged a crop (no detection
    # was found, or whole_image="always")
    source: str = "detector"


def looks_like_plate_crop(width: int, height: int) -> bool:
    """True for images shaped like a tight plate crop rather than a scene (small and wide).

    From 1.5:1 (US crops are 1.6 to 2.8:1), so that a small 4:3 photo of a car is a scene."""
    return height <= 260 and 1.5 <= width / max(1, height) <= 6.0


def expand_box(box: tuple[int, int, int, int], width: int, height: int, fx: float = 0.06, fy: float = 0.12) -> tuple[int, int, int, int]:
    """Grow a detection box a little (the OCR was trained on crops with some margin), clipped to the image."""
    x, y, w, h = box
    x1, y1 = max(0, int(round(x - w * fx))), max(0, int(round(y - h * fy)))
    x2, y2 = min(width, int(round(x + w * (1 + fx)))), min(height, int(round(y + h * (1 + fy))))
    return x1, y1, x2 - x1, y2 - y1


class Recognizer:
    """Finds plates, reads them, and reads the whole image too when it looks like a plate crop."""

    def __init__(self, detector: PlateDetector, reader: PlateReader, whole_image: str = "auto",
                 min_confidence: float = 0.0, max_plates: int = 8, views: int = 1, min_chars: int = MIN_CHARS,
                 min_read_confidence: float = MIN_READ_CONFIDENCE, windows: str = "auto", tiles: str = "auto",
                 zoom_out: str = "auto") -> None:
        if whole_image not in ("auto", "always", "never"):
            raise ValueError(f"whole_image must be 'auto', 'always' or 'never', got {whole_image!r}")
        if windows not in WINDOW_MODES:
            raise ValueError(f"windows must be one of {WINDOW_MODES}, got {windows!r}")
        if tiles not in TILE_MODES:
            raise ValueError(f"tiles must be one of {TILE_MODES}, got {tiles!r}")
        if zoom_out not in ZOOM_MODES:
            raise ValueError(f"zoom_out must be one of {ZOOM_MODES}, got {zoom_out!r}")
        self.detector = detector
        self.reader = reader
        self.whole_image = whole_image
        self.min_confidence = min_confidence
        self.max_plates = max_plates  # bounds the OCR time of a frame full of false detections
        self.views = views  # >1: read each crop with several margins and fuse (still images)
        # Badges, lamps and lettering the detector keeps mostly read as one or two characters.
        self.min_chars = min_chars
        self.min_read_confidence = min_read_confidence
        # Detector windows across stills of another shape (PlateDetector.detect): "auto" only
        # when the single pass gives no confident plate, since every extra pass is also another
        # chance for a badge to be kept.
        self.windows = windows
        # Tile passes over frames more than twice the detector's input width, when nothing sure
        # was found yet: on val a plate 60 px wide in a 1920x1080 still (3x3 grid) is found
        # 20 -> 100 % with the shipped detector.
        self.tiles = tiles
        # A second pass with the frame shown smaller when the first boxed a plate about as large
        # as the detector can (close-ups, loose crops): its box then cuts characters off.
        self.zoom_out = zoom_out

    @classmethod
    def default(cls, threads: int = 1) -> Recognizer:
        """The shipped detector and OCR models from `inference/models/`."""
        return cls(PlateDetector(threads=threads), PlateReader(threads=threads))

    def _read(self, image: np.ndarray, box: tuple[int, int, int, int]) -> tuple[PlateText, float]:
        x, y, w, h = box
        start = time.perf_counter()
        crop = np.ascontiguousarray(image[y:y + h, x:x + w])
        text = self.reader.read_views(crop, self.views) if self.views > 1 else self.reader.read(crop)
        return text, (time.perf_counter() - start) * 1000.0

    def _large(self, detection: Detection, width: int, height: int) -> bool:
        """Whether `detection` fills LARGE_BOX or more of the detector's input width or height."""
        return self.detector.input_fraction(detection.box, width, height) >= LARGE_BOX

    def _zoomed_out(self, image_rgb: np.ndarray, detections: list[Detection]) -> list[Detection]:
        """The detections with each large box that a box of the zoomed-out pass covers replaced
        by that box (the plate framed whole rather than in part); the other boxes are kept, and
        a zoomed-out box on a plate the single pass boxed at a size it handles is left out."""
        height, width = image_rgb.shape[:2]
        zoomed = self.detector.detect_zoomed_out(image_rgb)
        kept = [d for d in detections
                if not (self._large(d, width, height) and any(_covered(d.box, z.box) for z in zoomed))]
        # one-sided: a small kept box inside a zoomed-out box (a sticker or the state name on
        # the plate) must not drop the plate's own box
        added = [z for z in zoomed if not any(_inside(z.box, d.box) for d in kept)]
        return sorted(kept + added, key=lambda d: -d.score)

    def _read_detections(self, image_rgb: np.ndarray, detections: list[Detection], detect_ms: float) -> list[PlateResult]:
        """Read each detection; keep those that read like a plate."""
        height, width = image_rgb.shape[:2]
        results = []
        for det in detections:
            box = expand_box(det.box, width, height)
            if box[2] < 4 or box[3] < 4:
                continue
            text, ocr_ms = self._read(image_rgb, box)
            if len(text.text) >= self.min_chars and text.confidence >= max(self.min_confidence, self.min_read_confidence):
                results.append(PlateResult(det.box, text.text, text.confidence, text.region, text.region_confidence,
                                           _plates(text.candidates), text.char_confidences, det.score, detect_ms,
                                           ocr_ms))
        return results

    def recognize(self, image_rgb: np.ndarray) -> list[PlateResult]:
        """Every plate read in `image_rgb` (uint8 HxWx3), best first (see `rank`)."""
        return self.recognize_with_detections(image_rgb)[1]

    def recognize_with_detections(self, image_rgb: np.ndarray) -> tuple[list[Detection], list[PlateResult]]:
        """The raw detections (for scoring the detector) and the read plates, best first."""
        height, width = image_rgb.shape[:2]
        start = time.perf_counter()
        # Detection first: it refuses what is no image at all (wrong type, channels, a side
        # under the runtime's minimum) with BadImage, which callers report as an error.
        detections: list[Detection] = self.detector.detect(image_rgb, windows=self.windows == "on")
        detect_ms = (time.perf_counter() - start) * 1000.0
        if width < MIN_IMAGE_PX[0] or height < MIN_IMAGE_PX[1]:
            log.warning("image %dx%d is smaller than the smallest readable plate (%dx%d px): nothing read",
                        width, height, *MIN_IMAGE_PX)
            return [], []
        auto = self.whole_image == "auto"
        # A plate crop holds one plate: read it whole and nothing inside it (parts of a plate
        # -- a slogan, a sticker -- otherwise come back as extra, sometimes confident, plates).
        shaped_crop = auto and looks_like_plate_crop(width, height)
        crop = False
        whole_read: tuple[PlateText, float] | None = None
        if shaped_crop:
            # Small and plate-shaped: a crop when its whole read is sure. An unsure one may be a
            # loose crop (the plate with a wide margin, which the OCR reads poorly whole: real
            # us-plates val crops shrunk to 120x60 with half their size of margin each side read
            # right 25 of 68 times whole only, 60 with their boxes read too, bench_closeups; tight crops the
            # same, 66 of 68) or a small scene: its boxes are read too, the whole read staying
            # among the readings.
            whole_read = self._read(image_rgb, (0, 0, width, height))
            crop = _reads_as_plate(whole_read[0])
        if (self.zoom_out == "auto" and not crop
                and any(self._large(d, width, height) for d in detections)):
            start = time.perf_counter()
            detections = self._zoomed_out(image_rgb, detections)
            detect_ms += (time.perf_counter() - start) * 1000.0
        big = [d for d in detections if d.box[2] * d.box[3] >= 0.4 * width * height]
        crop = crop or (auto and bool(big))
        if auto and not crop and not shaped_crop and PLATE_ASPECT[0] <= width / max(1, height) <= PLATE_ASPECT[1]:
            # Plate-shaped but large: a big crop (the detector is trained on plates that fill a
            # small part of the frame) or a wide scene. A confident plate-like whole-image read
            # says crop; a scene squeezed into the OCR input reads as low-confidence noise.
            whole_read = self._read(image_rgb, (0, 0, width, height))
            crop = _reads_as_plate(whole_read[0])
        results = [] if crop else self._read_detections(image_rgb, detections[: self.max_plates], detect_ms)
        searches = []
        if self.windows == "auto":
            searches.append(self.detector.detect_windows)
        if self.tiles == "auto" and self.detector.tiles <= 1:  # not when the detector tiles every frame itself
            searches.append(self.detector.detect_tiles)  # its grid grows with the frame
        for search in searches:
            if crop or any(_sure_plate(r) for r in results):
                break
            start = time.perf_counter()
            # a box mostly inside a box already read is the same plate framed again
            more = [d for d in search(image_rgb) if not any(_covered(d.box, seen.box) for seen in detections)]
            detect_ms += (time.perf_counter() - start) * 1000.0
            budget = max(0, self.max_plates - min(len(detections), self.max_plates))
            results += self._read_detections(image_rgb, more[:budget], detect_ms)
            detections = sorted(detections + more, key=lambda d: -d.score)
        whole = self.whole_image == "always" or crop or shaped_crop or (auto and not detections)
        if whole:
            text, ocr_ms = whole_read or self._read(image_rgb, (0, 0, width, height))
            # read whole only because nothing was found: a scene squeezed into the OCR input, so
            # it must look like a plate read as much as a detection's reading must
            as_crop = crop or shaped_crop
            fallback = not as_crop and self.whole_image != "always"
            if fallback:
                plausible = len(text.text) >= self.min_chars and text.confidence >= self.min_read_confidence
            elif not crop:
                # Plate-shaped but not read surely (sky, road, a badge cut out): the same
                # confidence floor as a detection's reading, not its length floor -- real crops
                # labelled with one or two characters read right this way (train: "0" three times).
                plausible = text.confidence >= self.min_read_confidence
            else:
                plausible = True
            if text.text and text.confidence >= self.min_confidence and plausible:
                results.append(PlateResult((0, 0, width, height), text.text, text.confidence, text.region,
                                           text.region_confidence, _plates(text.candidates), text.char_confidences,
                                           0.0, detect_ms, ocr_ms, "whole_image" if as_crop else "whole_image_fallback"))
        results.sort(key=rank, reverse=True)
        # One entry per plate: two boxes on one plate read alike (a loose and a tight one, or a
        # box and the whole image) give one entry, the best ranked; and a detection half or more
        # covered by a better-ranked detection's box is that plate again, whatever it read (a
        # part of the plate boxed on its own, the county name or a slogan inside it), not a
        # second plate. Plates of two vehicles do not overlap like that.
        unique: dict[str, PlateResult] = {}
        kept_boxes: list[tuple[int, int, int, int]] = []
        for result in results:
            if result.source == "detector":
                if any(_covered(result.box, box) for box in kept_boxes):
                    continue
                kept_boxes.append(result.box)
            unique.setdefault(result.plate, result)
        return detections, list(unique.values())


def rank(result: PlateResult) -> float:
    """Order of reported plates: how sure the reading is, times how sure the detector was that
    it is a plate (a badge can read confidently; the detector rarely scores it high). A plate
    crop read whole counts as sure; a whole image read for want of any detection, or besides
    them (`whole_image="always"`), counts as a detection at half score."""
    factor = {"detector": result.detection_score, "whole_image": 1.0}.get(result.source, 0.5)
    return result.confidence * factor


def _plates(candidates: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """The candidates that are plates: the decoder also ranks reading nothing (''), which is
    no plate to show anyone, and weighs it when it fuses views, so it is dropped only here."""
    return [(text, p) for text, p in candidates if text]


def _reads_as_plate(text: PlateText) -> bool:
    """A whole-image read sure enough, and of a plate's length, to call the image a plate crop."""
    return text.confidence >= CROP_CONFIDENCE and PLATE_LENGTH[0] <= len(text.text) <= PLATE_LENGTH[1]


def _sure_plate(result: PlateResult) -> bool:
    """Read at CROP_CONFIDENCE or more from a box the detector also more likely than not calls a
    plate: no need to look again with windows or tiles (a badge can read confidently, at a low score)."""
    return result.confidence >= CROP_CONFIDENCE and result.detection_score >= 0.5


def _covered(box: tuple[int, int, int, int], other: tuple[int, int, int, int]) -> bool:
    """Half or more of the smaller of the two boxes lies inside the other."""
    ix = max(0, min(box[0] + box[2], other[0] + other[2]) - max(box[0], other[0]))
    iy = max(0, min(box[1] + box[3], other[1] + other[3]) - max(box[1], other[1]))
    smaller = min(box[2] * box[3], other[2] * other[3])
    return smaller > 0 and ix * iy >= 0.5 * smaller


def _inside(box: tuple[int, int, int, int], other: tuple[int, int, int, int]) -> bool:
    """Half or more of `box` lies inside `other`."""
    ix = max(0, min(box[0] + box[2], other[0] + other[2]) - max(box[0], other[0]))
    iy = max(0, min(box[1] + box[3], other[1] + other[3]) - max(box[1], other[1]))
    return box[2] * box[3] > 0 and ix * iy >= 0.5 * box[2] * box[3]
