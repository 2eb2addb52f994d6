"""Plate detection on whole frames: `PlateDetector(model_path, threads).detect(image_rgb)`."""
from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

from inference.detect_decode import (
    RawBox,
    decode_ssd,
    decode_yolo,
    nms,
    ssd_order_from_names,
    ssd_shape_problem,
    suppress_across_classes,
    yolo_row_lengths,
)
from inference.errors import ModelError
from inference.models_dir import DETECTOR_MODEL, shipped_model
from inference.runtime import MIN_IMAGE_SIDE, Geometry, TFLiteModel

log = logging.getLogger(__name__)

DETECTOR_KINDS = ("yolo", "yolov8", "ssd_postprocess")
MAX_TILE_GRID = 3  # detect_tiles' largest automatic grid: 9 tile passes
ZOOM_OUT = 2.0     # detect_zoomed_out shows the frame this many times smaller than the single pass
CANVAS_GREY = 114  # what detect_zoomed_out pads with: the letterbox grey the models are trained on


def tile_grid(width: int, input_width: int) -> int:
    """The tiles x tiles grid for a frame `width` px wide: tiles at most twice the model's input
    width, so a small plate is seen at about the same scale in any frame (2x2 up to 3x the input
    width, 3x3 above); at least 2, at most MAX_TILE_GRID (larger stills get larger tiles)."""
    return max(2, min(MAX_TILE_GRID, math.ceil(width / input_width) - 1))


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _timed(method: _Method) -> _Method:
    """Add the time a public detection method takes to its detector's `busy_ms` (whether it
    returns or raises), so a caller can tell detection time from reading time per image."""
    @functools.wraps(method)
    def wrapper(self: PlateDetector, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            self.busy_ms += (time.perf_counter() - start) * 1000.0
    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class Detection:
    """A plate found in an image: box (x, y, w, h) in input-image pixels, and its score."""

    box: tuple[int, int, int, int]
    score: float


class PlateDetector:
    """Runs a detector model (dense YOLO-style or SSD post-processed) and returns plate boxes.

    `tiles` > 1 also runs the model on a tiles x tiles grid of overlapping crops of frames more
    than twice the input width (tiles**2 + 1 passes: more time, smaller plates found); boxes
    from all passes are merged by NMS. Tile passes keep boxes from `tile_score_threshold` (the
    manifest's, else `score_threshold`): a plate seen that small scores lower than a plate of
    the size the main threshold was chosen on.

    `windows` also runs the model on overlapping windows of its own aspect ratio across frames
    of another shape (a 4:3, square or portrait still in front of a 16:9 model), so no pixels
    of the input are spent on letterbox padding: a plate is seen 1.3x larger in a 4:3 still,
    1.8x in a square one, more in a portrait one.

    `busy_ms` is the time spent in the `detect*` methods since the detector was made: the
    difference across one image's recognition is that image's detection time.
    """

    def __init__(self, model_path: Path | None = None, threads: int = 1, score_threshold: float | None = None,
                 iou_threshold: float = 0.45, tiles: int = 1, windows: bool = False,
                 tile_score_threshold: float | None = None) -> None:
        self.model = TFLiteModel(Path(model_path) if model_path else shipped_model(DETECTOR_MODEL), threads)
        manifest = self.model.manifest
        if manifest.output_kind not in DETECTOR_KINDS:
            raise ModelError(f"{self.model.path}: output kind {manifest.output_kind!r} is not a detector kind {DETECTOR_KINDS}")
        params = manifest.params
        self.score_threshold = float(score_threshold if score_threshold is not None else params.get("score_threshold", 0.3))
        tile = tile_score_threshold if tile_score_threshold is not None else params.get("tile_score_threshold")
        # never stricter than the single pass: tiles are there to find more, not fewer
        self.tile_score_threshold = min(self.score_threshold, float(tile)) if tile is not None else self.score_threshold
        self.iou_threshold = iou_threshold
        self.tiles = max(1, int(tiles))
        self.windows = windows
        self.busy_ms = 0.0
        self._channels = yolo_row_lengths(manifest.output_kind, len(manifest.classes))
        # Which class ids count as plates: all, unless the manifest names a 'plate' class.
        names = [c.lower() for c in manifest.classes]
        self._plate_ids = {i for i, n in enumerate(names) if "plate" in n} if any("plate" in n for n in names) else None
        # Which SSD output is which: the manifest's output.params.order (checked against the
        # outputs at load), else the post-process op's own tensor names when the model kept them,
        # else told apart by their values at each pass (decode_ssd).
        self._ssd_order: tuple[str, ...] | None = None
        if manifest.output_kind == "ssd_postprocess":
            order = params.get("order") or ssd_order_from_names(self.model.output_names)
            if order and not ssd_shape_problem(self.model.output_shapes, order):
                self._ssd_order = tuple(order)

    def _raw(self, image: np.ndarray, score_threshold: float) -> tuple[list[RawBox], Geometry]:
        outputs, geometry = self.model.run(image)
        kind = self.model.manifest.output_kind
        try:
            if kind == "ssd_postprocess":
                raw = decode_ssd(outputs, self.model.input_size, score_threshold=score_threshold, order=self._ssd_order)
                if self._plate_ids is not None:
                    raw = [r for r in raw if r.class_id in self._plate_ids]
                # the op suppresses class by class (regular NMS): plate classes boxed on one plate
                # are one plate
                raw = suppress_across_classes(raw, self.iou_threshold)
            else:
                # non-plate classes are dropped before NMS, which then runs across the plate classes
                raw = decode_yolo(outputs[0], self.model.input_size, objectness=(kind == "yolo"),
                                  score_threshold=score_threshold, iou_threshold=self.iou_threshold,
                                  channels=self._channels, keep_classes=self._plate_ids)
        except ValueError as exc:
            # the load-time checks should have refused such a model; a ModelError names the file
            # and is reported per image instead of stopping a batch
            raise ModelError(f"{self.model.path}: detector output cannot be decoded as {kind!r}: {exc}") from exc
        return raw, geometry

    def _pass(self, image: np.ndarray, off_x: int = 0, off_y: int = 0,
              score_threshold: float | None = None) -> list[tuple[float, float, float, float, float]]:
        raw, geo = self._raw(image, self.score_threshold if score_threshold is None else score_threshold)
        height, width = image.shape[:2]
        out = []
        for r in raw:
            x1, y1 = geo.to_image(r.x1, r.y1)
            x2, y2 = geo.to_image(r.x2, r.y2)
            x1, x2 = max(0.0, x1), min(float(width), x2)
            y1, y2 = max(0.0, y1), min(float(height), y2)
            if x2 - x1 >= 2 and y2 - y1 >= 2:
                out.append((x1 + off_x, y1 + off_y, x2 + off_x, y2 + off_y, r.score))
        return out

    @_timed
    def detect(self, image_rgb: np.ndarray, windows: bool | None = None) -> list[Detection]:
        """Plates in `image_rgb` (uint8 HxWx3), best score first; `windows` overrides the setting."""
        windows = self.windows if windows is None else windows
        tile_boxes = self._tile_boxes(image_rgb, self.tiles)
        window_boxes = self._window_boxes(image_rgb) if windows else []
        return self._merge(self._pass(image_rgb) + tile_boxes + window_boxes, bool(tile_boxes or window_boxes))

    @_timed
    def detect_tiles(self, image_rgb: np.ndarray, tiles: int | None = None) -> list[Detection]:
        """Plates found by the passes on a tiles x tiles grid alone (none for a frame up to twice
        the model's input width): what `tiles` adds, for a caller that has run the single pass.
        `tiles` None: the grid `tile_grid` gives for the frame's width."""
        if tiles is None:
            tiles = tile_grid(image_rgb.shape[1], self.model.input_size[0])
        return self._merge(self._tile_boxes(image_rgb, tiles), True)

    def _tile_boxes(self, image_rgb: np.ndarray, tiles: int) -> list[tuple[float, float, float, float, float]]:
        height, width = image_rgb.shape[:2]
        if tiles <= 1 or width <= 2 * self.model.input_size[0]:
            return []
        # a tiles x tiles grid of overlapping crops, each 2/(tiles+1) of the frame per side,
        # so small plates are seen at up to (tiles+1)/2 times the full-frame scale
        tile_w, tile_h = int(2 * width / (tiles + 1)), int(2 * height / (tiles + 1))
        if min(tile_w, tile_h) < MIN_IMAGE_SIDE:
            return []  # a strip a few px high: its tiles are too thin for the model (the single pass has seen it)
        boxes = []
        for row in range(tiles):
            for col in range(tiles):
                x0, y0 = int(col * tile_w / 2), int(row * tile_h / 2)
                boxes += self._pass(np.ascontiguousarray(image_rgb[y0:y0 + tile_h, x0:x0 + tile_w]), x0, y0,
                                    self.tile_score_threshold)
        return boxes

    @_timed
    def detect_zoomed_out(self, image_rgb: np.ndarray, factor: float = ZOOM_OUT) -> list[Detection]:
        """Plates found with the frame shown `factor` times smaller than the single pass shows it
        (shrunk onto a grey canvas of the model's input size): the opposite of the tiles, for a
        plate too large for the detector. A detector boxes plates up to about the largest size it
        was trained on (the shipped one: 180 px of its 512 px input, about 35 %); a plate filling
        more of its input -- a close-up, a loose crop -- comes back as a box on part of it, which
        then reads with characters missing. Seen smaller, it is boxed whole."""
        height, width = image_rgb.shape[:2]
        in_w, in_h = self.model.input_size
        scale = min(in_w / width, in_h / height) / max(1.0, float(factor))
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        if min(new_w, new_h) < MIN_IMAGE_SIDE:
            return []
        # the canvas is the model's input size, so the model's own resize leaves it as it is
        canvas = np.full((in_h, in_w, 3), CANVAS_GREY, np.uint8)
        off_x, off_y = (in_w - new_w) // 2, (in_h - new_h) // 2
        canvas[off_y:off_y + new_h, off_x:off_x + new_w] = cv2.resize(image_rgb, (new_w, new_h), interpolation=cv2.INTER_AREA)
        boxes = []
        for x1, y1, x2, y2, score in self._pass(canvas):
            x1, x2 = max(0.0, (x1 - off_x) / scale), min(float(width), (x2 - off_x) / scale)
            y1, y2 = max(0.0, (y1 - off_y) / scale), min(float(height), (y2 - off_y) / scale)
            if x2 - x1 >= 2 and y2 - y1 >= 2:
                boxes.append((x1, y1, x2, y2, score))
        return self._merge(boxes, False)  # one pass: its decoder has NMSed it

    def input_fraction(self, box: tuple[int, int, int, int], width: int, height: int) -> float:
        """How much of the model input's width or height (the larger share) a box (x, y, w, h)
        of a `width` x `height` frame fills in the single pass (letterboxed: both axes scaled
        alike; stretched: each on its own)."""
        in_w, in_h = self.model.input_size
        sx, sy = in_w / max(1, width), in_h / max(1, height)
        if self.model.manifest.input.resize != "stretch":
            sx = sy = min(sx, sy)
        return max(box[2] * sx / in_w, box[3] * sy / in_h)

    @_timed
    def detect_windows(self, image_rgb: np.ndarray) -> list[Detection]:
        """Plates found by the window passes alone (none for a frame of about the model's shape):
        what `detect(windows=True)` adds, for a caller that has already run the single pass."""
        return self._merge(self._window_boxes(image_rgb), True)

    def _window_boxes(self, image_rgb: np.ndarray) -> list[tuple[float, float, float, float, float]]:
        height, width = image_rgb.shape[:2]
        boxes = []
        for x0, y0, w, h in aspect_windows(width, height, *self.model.input_size):
            if min(w, h) < MIN_IMAGE_SIDE:
                continue  # aspect_windows refuses slivers already; this keeps a pass from ever failing on one
            boxes += self._pass(np.ascontiguousarray(image_rgb[y0:y0 + h, x0:x0 + w]), x0, y0)
        return boxes

    def _merge(self, boxes: list[tuple[float, float, float, float, float]], several_passes: bool) -> list[Detection]:
        """Boxes (x1, y1, x2, y2, score) as Detections, best first; NMS when they come from
        several passes (one pass is already NMSed by its decoder)."""
        if not boxes:
            return []
        arr = np.array(boxes, dtype=np.float64)
        keep = nms(arr[:, :4], arr[:, 4], self.iou_threshold) if several_passes else list(range(len(arr)))
        result = []
        for i in keep:
            x1, y1, x2, y2, score = arr[i]
            result.append(Detection((int(round(x1)), int(round(y1)), int(round(x2 - x1)), int(round(y2 - y1))), float(score)))
        result.sort(key=lambda d: -d.score)
        return result


MAX_WINDOWS = 8     # a strip of a frame needing more gets none (each window is a full pass)
MIN_WINDOW_SIDE = 64  # px: a window shorter than this holds no readable plate


def aspect_windows(width: int, height: int, model_w: int, model_h: int, min_gain: float = 1.15) -> list[tuple[int, int, int, int]]:
    """Windows (x, y, w, h) of the model's aspect ratio spanning a frame's short side, overlapping
    by at least half, that together cover the frame; none when the frame already has about the
    model's shape (a window would show the plates less than `min_gain` times larger), when the
    windows would be tiny, or when it would take more than MAX_WINDOWS of them."""
    aspect = model_w / model_h
    if width / height < aspect:          # taller than the model: full-width bands, top to bottom
        win_w, win_h, span, along = width, int(round(width / aspect)), height, "y"
    else:                                # wider: full-height columns, left to right
        win_w, win_h, span, along = int(round(height * aspect)), height, width, "x"
    size = win_h if along == "y" else win_w
    if min(win_w, win_h) < MIN_WINDOW_SIDE or span / size < min_gain:
        return []
    count = int(np.ceil((span - size) / (size / 2))) + 1
    if count > MAX_WINDOWS:
        return []
    starts = [int(round(i * (span - size) / (count - 1))) for i in range(count)]
    return [(0, s, win_w, win_h) if along == "y" else (s, 0, win_w, win_h) for s in starts]
