"""OCR training data: synthetic plates plus augmented real crops, as model-ready arrays.

Everything is reduced to the OCR input (grey, OCR_H x OCR_W) the same way the runtime does
it: resize the RGB crop (area filter when shrinking), then convert to grey.
"""
from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from inference.datasets import read_folder
from inference.training.plates import ALPHABET, STATES, PlateGenerator

log = logging.getLogger(__name__)

OCR_H, OCR_W = 32, 128
MAX_LEN = 10
# Part of the cached arrays' names: bump when the synthetic or augmented crops change.
# v2: crops framed as loosely as a detector box grown by the recognizer's margin, not only tight.
OCR_DATA_VERSION = 2
# The eu/br scene plates (`scene_plate_set`) are cached under their own version.
SCENE_PLATES_VERSION = 1
LOOSE_SHARE = 0.35  # synthetic plates framed with 10-30 % margin, like a detector's crop
REGIONS = tuple(sorted(STATES))


def ocr_input(image_rgb: np.ndarray) -> np.ndarray:
    """RGB crop -> grey uint8 [OCR_H, OCR_W], exactly as the runtime prepares it."""
    h, w = image_rgb.shape[:2]
    shrink = (OCR_W / w) * (OCR_H / h) < 1
    resized = cv2.resize(image_rgb, (OCR_W, OCR_H), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return cv2.cvtColor(resized, cv2.COLOR_RGB2GRAY)


def encode_text(text: str) -> tuple[np.ndarray, int]:
    """Text -> (padded class ids with blank = 0, length)."""
    ids = np.zeros(MAX_LEN, np.int32)
    clean = [ch for ch in text if ch in ALPHABET][:MAX_LEN]
    for i, ch in enumerate(clean):
        ids[i] = ALPHABET.index(ch) + 1
    return ids, len(clean)


def _synth_chunk(args: tuple[int, int]) -> tuple[np.ndarray, list[str], list[str]]:
    seed, count = args
    gen = PlateGenerator(seed)
    images = np.zeros((count, OCR_H, OCR_W), np.uint8)
    texts, regions = [], []
    for i in range(count):
        plate = gen.plate(tight=gen.rng.random() >= LOOSE_SHARE)
        images[i] = ocr_input(plate.image)
        texts.append(plate.text)
        regions.append(plate.region)
    return images, texts, regions


def synth_set(count: int, seed: int, workers: int = 2) -> dict[str, np.ndarray]:
    """`count` synthetic plates (deterministic for `seed`)."""
    chunk = 1000
    jobs = [(seed * 100003 + i, min(chunk, count - i * chunk)) for i in range((count + chunk - 1) // chunk)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(_synth_chunk, jobs))
    images = np.concatenate([p[0] for p in parts])
    texts = [t for p in parts for t in p[1]]
    regions = [r for p in parts for r in p[2]]
    return _pack(images, texts, regions)


def _pack(images: np.ndarray, texts: list[str], regions: list[str | None]) -> dict[str, np.ndarray]:
    labels = np.zeros((len(texts), MAX_LEN), np.int32)
    lengths = np.zeros(len(texts), np.int32)
    for i, text in enumerate(texts):
        labels[i], lengths[i] = encode_text(text)
    region_ids = np.array([REGIONS.index(r) if r in REGIONS else -1 for r in regions], np.int32)
    return {"images": images, "labels": labels, "lengths": lengths, "regions": region_ids,
            "texts": np.array(texts, dtype="U16")}


def augment_crop(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A re-photographed version of a real plate crop: framing, perspective, light, blur, noise."""
    h, w = image.shape[:2]
    pad = int(0.2 * max(h, w))
    big = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE if rng.random() < 0.5 else cv2.BORDER_REFLECT)
    return _rephotograph(big, (pad, pad, w, h), rng)


def augment_scene_plate(scene: np.ndarray, box: tuple[int, int, int, int], rng: np.random.Generator) -> np.ndarray:
    """A plate of a whole scene photo cut out as a detector box would frame it, then
    re-photographed like `augment_crop`; the margin shows the real car around the plate."""
    return _rephotograph(scene, box, rng, cv2.BORDER_REPLICATE)  # a plate at the photo's edge


def _rephotograph(image: np.ndarray, box: tuple[int, int, int, int], rng: np.random.Generator,
                  border: int = cv2.BORDER_CONSTANT) -> np.ndarray:
    x, y, w, h = box
    corners = np.float32([[x, y], [x + w, y], [x + w, y + h], [x, y + h]])
    jitter = np.stack([rng.uniform(-0.07, 0.07, 4) * w, rng.uniform(-0.1, 0.1, 4) * h], axis=1).astype(np.float32)
    # from a tight crop out to the margin of a detector box grown by the recognizer (about
    # 10-25 % of the width and 15-30 % of the height more than the plate)
    grow = np.array([rng.uniform(-0.04, 0.24), rng.uniform(-0.06, 0.3)])
    centre = corners.mean(axis=0)
    src = ((corners - centre) * (1 + grow) + centre + jitter).astype(np.float32)
    out_w = int(rng.uniform(0.3, 1.0) * w) if rng.random() < 0.5 else w
    out_w = max(24, out_w)
    out_h = max(12, int(out_w * h / w * rng.uniform(0.9, 1.1)))
    dst = np.float32([[0, 0], [out_w, 0], [out_w, out_h], [0, out_h]])
    warped = cv2.warpPerspective(image, cv2.getPerspectiveTransform(src, dst), (out_w, out_h), flags=cv2.INTER_AREA,
                                 borderMode=border)
    img = warped.astype(np.float32)
    img = img * rng.uniform(0.5, 1.3) + rng.uniform(-30, 30)
    if rng.random() < 0.1:
        img *= rng.uniform(0.2, 0.5)
    if rng.random() < 0.1:
        grey = img.mean(axis=2, keepdims=True)
        img = np.repeat(255 - grey if rng.random() < 0.2 else grey, 3, axis=2)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.35:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.3, 1.4)))
    noise = rng.normal(0, rng.uniform(0, 8), img.shape)
    img = np.clip(img + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.4:
        ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 90))])
        if ok:
            img = cv2.imdecode(enc, cv2.IMREAD_UNCHANGED)
    return img


def load_rgb(path: Path) -> np.ndarray:
    """An image file as RGB uint8."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"{path}: cannot read image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def real_set(folder: Path, split: str, copies: int, seed: int) -> dict[str, np.ndarray]:
    """Real crops of one split; `copies` > 0 adds that many augmented versions of each."""
    items = read_folder(folder, split)
    rng = np.random.default_rng(seed)
    images, texts, regions = [], [], []
    for item in items:
        rgb = load_rgb(item.path)
        text = item.plates[0].text
        images.append(ocr_input(rgb))
        texts.append(text)
        regions.append(item.region)
        for _ in range(copies):
            images.append(ocr_input(augment_crop(rgb, rng)))
            texts.append(text)
            regions.append(item.region)
    data = _pack(np.stack(images) if images else np.zeros((0, OCR_H, OCR_W), np.uint8), texts, regions)
    data["files"] = np.array([i.path.name for i in items for _ in range(copies + 1)], dtype="U64")
    return data


def scene_plate_set(folders: list[Path], split: str, copies: int, seed: int) -> dict[str, np.ndarray]:
    """Plates of whole scene photos (eu/br), `copies` augmented cuts of each, no state label.

    They add real photographs of characters (light, blur, angle, a real car around the box)
    to the few hundred US crops; their formats are not US ones, so they stay a minority.
    """
    rng = np.random.default_rng(seed + 1)
    images, texts, names = [], [], []
    for folder in folders:
        for item in read_folder(folder, split):
            if item.is_crop:
                continue
            rgb = load_rgb(item.path)
            for plate in item.plates:
                for _ in range(copies):
                    images.append(ocr_input(augment_scene_plate(rgb, plate.box, rng)))
                    texts.append(plate.text)
                    names.append(item.path.name)
    data = _pack(np.stack(images) if images else np.zeros((0, OCR_H, OCR_W), np.uint8), texts, [None] * len(texts))
    data["files"] = np.array(names, dtype="U64")
    return data
