"""Synthetic detector scenes: plates pasted into real and procedural backgrounds.

Pure numpy / Pillow / OpenCV. Scenes are produced directly at the detector's input size
(letterboxed like the runtime does it), with plate boxes (x1, y1, x2, y2) in those pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from PIL import Image, ImageDraw

from inference.training.plates import STATES, PlateGenerator, _text_image

LETTERBOX_FILL = 114
SCENES_VERSION = 3  # part of the cache key: bump when the rendered scenes change
# A US plate (305 mm) is narrower than the plates in the real scenes (EU 520 mm, BR 400 mm):
# a swapped-in US plate is this fraction of the real plate's width.
US_WIDTH_RATIO = (0.55, 0.8)
SWAP_SHARE = 0.5  # share of real plates replaced by a US plate in real scenes


@dataclass(frozen=True)
class Scene:
    """One training scene: RGB uint8 [H, W, 3] and plate boxes [K, 4] (x1, y1, x2, y2)."""

    image: np.ndarray
    boxes: np.ndarray


@dataclass(frozen=True)
class SourceScene:
    """A real labelled photograph: RGB image and plate boxes (x1, y1, x2, y2)."""

    image: np.ndarray
    boxes: np.ndarray


def letterbox(image: np.ndarray, width: int, height: int) -> tuple[np.ndarray, float, int, int]:
    """Fit `image` into width x height keeping aspect, grey padding: (canvas, scale, pad_x, pad_y)."""
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    pad_x, pad_y = (width - new_w) // 2, (height - new_h) // 2
    canvas = np.full((height, width, 3), LETTERBOX_FILL, np.uint8)
    canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = cv2.resize(
        image, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return canvas, scale, pad_x, pad_y


class SceneGenerator:
    """Deterministic (per seed) scene generator."""

    def __init__(self, seed: int, width: int, height: int, sources: list[SourceScene] | None = None,
                 crops: list[np.ndarray] | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.width = width
        self.height = height
        self.sources = sources or []
        self.crops = crops or []
        self.plates = PlateGenerator(seed + 7)

    # -- backgrounds ----------------------------------------------------------------------
    def _procedural(self) -> np.ndarray:
        rng = self.rng
        h, w = self.height, self.width
        small = rng.integers(0, 256, (int(rng.integers(2, 9)), int(rng.integers(2, 12)), 3)).astype(np.uint8)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        for _ in range(int(rng.integers(3, 15))):
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            kind = rng.integers(4)
            p1 = (int(rng.integers(-20, w)), int(rng.integers(-20, h)))
            if kind == 0:
                p2 = (p1[0] + int(rng.integers(10, w // 2)), p1[1] + int(rng.integers(10, h // 2)))
                cv2.rectangle(img, p1, p2, colour, -1 if rng.random() < 0.7 else int(rng.integers(1, 4)))
            elif kind == 1:
                cv2.circle(img, p1, int(rng.integers(4, h // 3)), colour, -1)
            elif kind == 2:
                p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
                cv2.line(img, p1, p2, colour, int(rng.integers(1, 6)))
            else:  # distractor text (signs, stickers): not a plate
                word = "".join(chr(65 + int(rng.integers(26))) for _ in range(int(rng.integers(3, 12))))
                cv2.putText(img, word, p1, int(rng.integers(0, 8)), float(rng.uniform(0.3, 1.5)), colour, int(rng.integers(1, 3)))
        noise = rng.normal(0, rng.uniform(2, 15), img.shape)
        return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)

    def _from_source(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """A real photo letterboxed or zoomed into the canvas, with its plate boxes."""
        rng = self.rng
        src = self.sources[rng.integers(len(self.sources))]
        image, boxes = src.image, src.boxes.astype(np.float64)
        if len(boxes) and rng.random() < SWAP_SHARE:
            image, boxes = self._swap_plates(image, boxes)
        if rng.random() < 0.5:
            image = image[:, ::-1]
            boxes = boxes.copy()
            boxes[:, [0, 2]] = image.shape[1] - boxes[:, [2, 0]]
        h, w = image.shape[:2]
        base = min(self.width / w, self.height / h)
        zoom = 1.0 if rng.random() < 0.3 else float(rng.uniform(0.5, 3.0))
        scale = base * zoom
        # a canvas-sized window onto the scaled image, placed at random (grey where it runs off)
        out_w, out_h = w * scale, h * scale
        off_x = rng.uniform(min(0.0, self.width - out_w), max(0.0, self.width - out_w))
        off_y = rng.uniform(min(0.0, self.height - out_h), max(0.0, self.height - out_h))
        matrix = np.float32([[scale, 0, off_x], [0, scale, off_y]])
        canvas = cv2.warpAffine(image, matrix, (self.width, self.height), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=(LETTERBOX_FILL,) * 3)
        out = []
        for box in boxes:
            b = box * scale + np.array([off_x, off_y, off_x, off_y])
            clipped = np.clip(b, [0, 0, 0, 0], [self.width, self.height, self.width, self.height])
            area = (b[2] - b[0]) * (b[3] - b[1])
            kept = (clipped[2] - clipped[0]) * (clipped[3] - clipped[1])
            if area > 0 and kept / area > 0.6:
                out.append(clipped)
            elif area > 0 and kept > 0:
                # a plate mostly outside the window: grey it out so it is neither positive nor negative
                x1, y1, x2, y2 = (int(v) for v in clipped)
                canvas[y1:y2 + 1, x1:x2 + 1] = LETTERBOX_FILL
        return np.ascontiguousarray(canvas), out

    def _swap_plates(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The photo with each plate covered in the colour around it and a US plate put there.

        The real scenes are European and Brazilian; without this the detector only ever sees
        US plates pasted at random places, never on a bumper between the lamps where a
        camera meets them.
        """
        rng = self.rng
        image = image.copy()
        height, width = image.shape[:2]
        out = []
        for box in boxes:
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            if min(width, x2) - max(0, x1) < 8 or min(height, y2) - max(0, y1) < 4:
                out.append(box)
                continue
            plate = self._us_plate()
            ratio = float(rng.uniform(*US_WIDTH_RATIO))
            stretch = float(rng.uniform(0.9, 1.1))
            out.append(put_plate(image, box, plate, ratio, shift=float(rng.uniform(-0.1, 0.1)), stretch=stretch))
        return image, np.array(out, np.float64).reshape(-1, 4)

    def _us_plate(self) -> np.ndarray:
        """A US plate image: a real training crop when there are any, else a rendered 2:1 plate."""
        rng = self.rng
        if self.crops and rng.random() < 0.7:
            return self.crops[rng.integers(len(self.crops))]
        gen = self.plates
        gen.width, gen.height = 128, 64
        return gen.render(gen.random_text(), gen.regions[rng.integers(len(gen.regions))])

    # -- plates ---------------------------------------------------------------------------
    def _plate_image(self) -> np.ndarray:
        rng = self.rng
        if self.crops and rng.random() < 0.35:
            return self.crops[rng.integers(len(self.crops))]
        aspect = float(rng.choice([2.0, 2.0, 3.0, 4.5]))
        gen = self.plates
        gen.width, gen.height = int(64 * aspect), 64
        region = gen.regions[rng.integers(len(gen.regions))]
        flat = gen.render(gen.random_text(), region)
        if aspect > 2.5 and rng.random() < 0.6:
            # EU / BR style: white or yellow field, dark text, optional blue band at the left
            flat = flat.copy()
            grey = cv2.cvtColor(flat, cv2.COLOR_RGB2GRAY)
            dark = grey < 110
            field = np.array([240, 240, 235] if rng.random() < 0.7 else [245, 200, 30], np.uint8)
            flat[:] = field
            flat[dark] = (20, 20, 20)
            if rng.random() < 0.6:
                flat[:, : flat.shape[1] // 12] = (20, 50, 160)
        return flat

    def _paste(self, canvas: np.ndarray, plate: np.ndarray, taken: list[np.ndarray]) -> np.ndarray | None:
        rng = self.rng
        ph, pw = plate.shape[:2]
        width = float(np.exp(rng.uniform(math.log(14), math.log(180))))
        height = width * ph / pw * rng.uniform(0.85, 1.15)
        if height < 5:
            return None
        for _ in range(10):
            x = rng.uniform(0, self.width - width)
            y = rng.uniform(0, self.height - height)
            box = np.array([x, y, x + width, y + height])
            if all(_overlap(box, t) < 0.05 for t in taken):
                break
        else:
            return None
        jitter = np.stack([rng.uniform(-0.06, 0.06, 4) * width, rng.uniform(-0.1, 0.1, 4) * height], axis=1)
        angle = math.radians(rng.normal(0, 4))
        quad = np.array([[0, 0], [width, 0], [width, height], [0, height]]) + jitter
        centre = quad.mean(axis=0)
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        quad = (quad - centre) @ rot.T + centre + np.array([x, y])
        src = np.float32([[0, 0], [pw, 0], [pw, ph], [0, ph]])
        matrix = cv2.getPerspectiveTransform(src, quad.astype(np.float32))
        warped = cv2.warpPerspective(plate, matrix, (self.width, self.height), flags=cv2.INTER_AREA)
        mask = cv2.warpPerspective(np.full((ph, pw), 255, np.uint8), matrix, (self.width, self.height), flags=cv2.INTER_AREA)
        alpha = (mask.astype(np.float32) / 255.0)[..., None]
        gain = rng.uniform(0.5, 1.2)
        canvas[:] = (canvas * (1 - alpha) + np.clip(warped * gain, 0, 255) * alpha).astype(np.uint8)
        x1, y1 = quad.min(axis=0)
        x2, y2 = quad.max(axis=0)
        return np.clip(np.array([x1, y1, x2, y2]), [0, 0, 0, 0], [self.width, self.height, self.width, self.height])

    # -- distractors -----------------------------------------------------------------------
    def _distractor(self, canvas: np.ndarray, taken: list[np.ndarray]) -> None:
        """Paint something plate-sized that is not a plate: a badge, an emblem or a grille.

        Most false boxes on real cars were model badges, maker emblems and chrome lettering,
        i.e. text or shapes without a plate's light rectangle around them.
        """
        rng = self.rng
        width = float(np.exp(rng.uniform(math.log(16), math.log(160))))
        kind = int(rng.integers(4))
        aspect = rng.uniform(2.0, 6.0) if kind in (0, 3) else rng.uniform(1.0, 2.2)
        height = max(5.0, width / aspect)
        x = rng.uniform(0, max(1.0, self.width - width))
        y = rng.uniform(0, max(1.0, self.height - height))
        box = np.array([x, y, x + width, y + height])
        if any(_overlap(box, t) > 0.0 for t in taken):
            return
        w, h = int(width), int(height)
        if w < 4 or h < 4:
            return
        chrome = rng.random() < 0.6
        colour = tuple(int(v) for v in (rng.integers(170, 256, 3) if chrome else rng.integers(0, 256, 3)))
        layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        font = self.plates.fonts[int(rng.integers(len(self.plates.fonts)))]
        if kind in (0, 3):  # lettering: model names, engine badges, dealer stickers' words
            letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
            word = "".join(letters[int(rng.integers(26))] if rng.random() < 0.8 else str(int(rng.integers(10)))
                           for _ in range(int(rng.integers(2, 9))))
            if rng.random() < 0.3:
                word = word[:2] + "." + word[2:] if len(word) > 3 else word
            if rng.random() < 0.4:
                word = word.capitalize() if rng.random() < 0.5 else word.lower()
            text = _text_image(word, font, 48, colour)
            layer = text.resize((w, h), Image.Resampling.BILINEAR)
        elif kind == 1:  # emblem: a ring, sometimes with letters in it
            thick = max(1, int(min(w, h) * rng.uniform(0.06, 0.15)))
            draw.ellipse((0, 0, w - 1, h - 1), outline=colour + (255,), width=thick)
            if rng.random() < 0.6 and w > 12:
                word = "".join(chr(65 + int(rng.integers(26))) for _ in range(int(rng.integers(1, 5))))
                inner = _text_image(word, font, 40, colour)
                layer.alpha_composite(inner.resize((max(1, int(w * 0.6)), max(1, int(h * 0.4)))), (int(w * 0.2), int(h * 0.3)))
        else:  # grille / vents: parallel bars
            bars = int(rng.integers(3, 8))
            for i in range(bars):
                y0 = int(i * h / bars)
                draw.rectangle((0, y0, w - 1, y0 + max(1, int(h / bars * 0.5))), fill=colour + (255,))
        patch = np.asarray(layer, np.float32)
        alpha = patch[..., 3:4] / 255.0 * rng.uniform(0.7, 1.0)
        x0, y0 = int(x), int(y)
        region = canvas[y0:y0 + h, x0:x0 + w].astype(np.float32)
        hh, ww = region.shape[:2]
        if chrome and rng.random() < 0.7:  # a dark edge under chrome letters
            shadow = np.roll(alpha[:hh, :ww], (max(1, h // 12), max(1, w // 40)), axis=(0, 1))
            region = region * (1 - 0.5 * shadow)
        blended = region * (1 - alpha[:hh, :ww]) + patch[:hh, :ww, :3] * alpha[:hh, :ww]
        canvas[y0:y0 + hh, x0:x0 + ww] = np.clip(blended, 0, 255).astype(np.uint8)

    def scene(self) -> Scene:
        """One scene with its plate boxes."""
        rng = self.rng
        if self.sources and rng.random() < 0.6:
            canvas, boxes = self._from_source()
            extra = int(rng.choice([0, 0, 1, 2]))
        else:
            canvas, boxes = self._procedural(), []
            extra = int(rng.choice([0, 1, 1, 2, 3, 4]))
        for _ in range(extra):
            box = self._paste(canvas, self._plate_image(), boxes)
            if box is not None:
                boxes.append(box)
        if rng.random() < 0.7:
            for _ in range(int(rng.integers(1, 4))):
                self._distractor(canvas, boxes)
        img = canvas.astype(np.float32) * rng.uniform(0.5, 1.3) + rng.uniform(-25, 25)
        if rng.random() < 0.1:
            img = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2)
        if rng.random() < 0.3:
            img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.3, 1.2)))
        img = np.clip(img + rng.normal(0, rng.uniform(0, 6), img.shape), 0, 255).astype(np.uint8)
        array = np.array(boxes, np.float32).reshape(-1, 4)
        return Scene(img, array)


def put_plate(image: np.ndarray, box: np.ndarray, plate: np.ndarray, width_ratio: float,
              shift: float = 0.0, stretch: float = 1.0) -> np.ndarray:
    """Cover the plate at `box` (x1, y1, x2, y2) in `image` (changed in place) with the colour just
    above and below it, and put `plate` there: `width_ratio` times as wide, its own aspect
    (times `stretch`), centred (moved sideways by `shift` of the old width). Returns the new box."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(width, x2), min(height, y2)
    w = x2 - x1
    ring = np.concatenate([image[max(0, y1 - 3):y1, x1:x2].reshape(-1, 3), image[y2:y2 + 3, x1:x2].reshape(-1, 3)])
    image[y1:y2, x1:x2] = np.median(ring, axis=0) if len(ring) else LETTERBOX_FILL
    new_w = min(width, max(8, int(round(w * width_ratio))))
    new_h = min(height, max(4, int(round(new_w * plate.shape[0] / plate.shape[1] * stretch))))
    px = int(np.clip(round((x1 + x2 - new_w) / 2 + shift * w), 0, width - new_w))
    py = int(np.clip(round((y1 + y2 - new_h) / 2), 0, height - new_h))
    shrink = new_w < plate.shape[1]
    image[py:py + new_h, px:px + new_w] = cv2.resize(plate, (new_w, new_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.array([px, py, px + new_w, py + new_h], np.float64)


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1])
    return iw * ih / area if area > 0 else 0.0


__all__ = ["STATES", "Scene", "SceneGenerator", "SourceScene", "letterbox", "put_plate"]
