"""Train the plate detector (tiny CNN, centre grid decoded in-model to YOLO-style rows) and export it.

Output: [1, N, 5] rows (cx, cy, w, h, objectness), box values normalised to the input size,
N = (W/8) * (H/8) grid cells; the runtime decodes them with `decode_yolo` (+ NMS).
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from inference.datasets import read_folder
from inference.training.common import Paths, Timer, export_tflite, temp_for, write_model
from inference.training.ocr_data import load_rgb
from inference.training.plates import GENERATOR_VERSION
from inference.training.scenes import SCENES_VERSION, SceneGenerator, SourceScene

log = logging.getLogger(__name__)

MODEL_NAME = "plate_detector"
VERSION = "1.0.0"
STEPS = 2500  # the shipped model's training steps
SEED = 0  # the shipped model's seed
DET_W, DET_H = 512, 288
STRIDE = 8
GRID_W, GRID_H = DET_W // STRIDE, DET_H // STRIDE
ANCHOR_W, ANCHOR_H = 32.0, 10.0  # input pixels; the head scales them by (3 * sigmoid)^2, up to 9x
MAX_BOXES = 8


def build_model() -> Any:
    """RGB DET_H x DET_W in, [GRID_H*GRID_W, 5] decoded rows out."""
    import keras
    from keras import layers

    def conv(x: Any, filters: int, stride: int = 1, kernel: int = 3) -> Any:
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU(6.0)(x)

    inp = keras.Input((DET_H, DET_W, 3), name="image")
    x = conv(inp, 12, 2)           # /2
    x = conv(x, 24, 2)             # /4
    x = conv(x, 24)
    x = conv(x, 40, 2)             # /8
    s8 = conv(x, 40)
    x = conv(s8, 64, 2)            # /16
    x = conv(x, 64)
    x = conv(x, 64)
    up = layers.UpSampling2D(2, interpolation="nearest")(x)
    x = layers.Concatenate()([s8, up])
    x = conv(x, 48, kernel=1)
    x = conv(x, 48)
    head = layers.Conv2D(5, 1)(x)
    return keras.Model(inp, _decode_layer(head), name=MODEL_NAME)


def _decode_layer(head: Any) -> Any:
    """In-model decoding of the grid into normalised (cx, cy, w, h, obj) rows."""
    from keras import layers, ops

    gy, gx = np.mgrid[0:GRID_H, 0:GRID_W].astype(np.float32)
    grid_x = (gx - 0.5)[None, :, :, None] / GRID_W
    grid_y = (gy - 0.5)[None, :, :, None] / GRID_H

    class Decode(layers.Layer):
        def call(self, t: Any) -> Any:
            s = ops.sigmoid(t)
            cx = s[..., 0:1] * (2.0 / GRID_W) + grid_x
            cy = s[..., 1:2] * (2.0 / GRID_H) + grid_y
            w = ops.square(s[..., 2:3] * 3.0) * (ANCHOR_W / DET_W)
            h = ops.square(s[..., 3:4] * 3.0) * (ANCHOR_H / DET_H)
            rows = ops.concatenate([cx, cy, w, h, s[..., 4:5]], axis=-1)
            return ops.reshape(rows, (-1, GRID_H * GRID_W, 5))

    return Decode(name="rows")(head)


def _sources(folder: Path, split: str) -> list[SourceScene]:
    out = []
    if not folder.is_dir():
        return out
    for item in read_folder(folder, split):
        boxes = np.array([[p.box[0], p.box[1], p.box[0] + p.box[2], p.box[1] + p.box[3]] for p in item.plates], np.float32)
        out.append(SourceScene(load_rgb(item.path), boxes.reshape(-1, 4)))
    return out


def _crops(folder: Path) -> list[np.ndarray]:
    if not folder.is_dir():
        return []
    return [load_rgb(i.path) for i in read_folder(folder, "train")]


_WORKER: dict[str, Any] = {}


def _init_worker(data: str) -> None:
    # data "" = no real data (--synthetic-only): procedural scenes and synthetic plates alone
    if not data:
        _WORKER["sources"], _WORKER["crops"] = [], []
        return
    root = Path(data)
    _WORKER["sources"] = _sources(root / "eu-scenes", "train") + _sources(root / "br-scenes", "train")
    _WORKER["crops"] = _crops(root / "us-plates")


def _uses_real_data(paths: Paths) -> bool:
    return any(paths.real(name) is not None for name in ("eu-scenes", "br-scenes", "us-plates"))


def _scene_chunk(args: tuple[int, int, str]) -> tuple[np.ndarray, np.ndarray]:
    seed, count, path = args
    gen = SceneGenerator(seed, DET_W, DET_H, _WORKER["sources"], _WORKER["crops"])
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(count, DET_H, DET_W, 3))
    boxes = np.zeros((count, MAX_BOXES, 4), np.float32)
    for i in range(count):
        scene = gen.scene()
        images[i] = scene.image
        k = min(MAX_BOXES, len(scene.boxes))
        boxes[i, :k] = scene.boxes[:k]
    images.flush()
    return boxes, np.array([path])


def scene_cache(paths: Paths, count: int, seed: int) -> Path:
    """The cache folder of `scene_set(paths, count, seed)`.

    Scenes made without the real folders get their own entry, so that a synthetic-only run never
    hands its scenes to a later run that has the data; scenes made from another --data folder
    than the default carry it in the key (`Paths.data_key`); a quick run's are under its own
    quick/ cache (`Paths.work`), since it may have only some of the real folders.
    """
    if _uses_real_data(paths):
        source = f"_{paths.data_key}" if paths.data_key else ""
    else:
        source = "_synthetic"
    return paths.work / "detector" / f"scenes_{count}_{seed}_v{SCENES_VERSION}_g{GENERATOR_VERSION}{source}"


def scene_set(paths: Paths, count: int, seed: int, workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """`count` scenes as a uint8 memmap [count, H, W, 3] (cached under the cache) and boxes [count, MAX_BOXES, 4]."""
    folder = scene_cache(paths, count, seed)
    images_path, boxes_path = folder / "images.npy", folder / "boxes.npy"
    if not (images_path.is_file() and boxes_path.is_file()):
        folder.parent.mkdir(parents=True, exist_ok=True)
        # Rendered in a folder of this process's own, then moved into place: two runs sharing
        # the cache that render the same scenes at once wrote the same part and temporary files.
        work = temp_for(folder)
        work.mkdir()
        try:
            _render_scenes(paths, count, seed, work, workers)
            folder.mkdir(exist_ok=True)
            # boxes first: a reader takes the entry once images.npy is there too
            os.replace(work / "boxes.npy", boxes_path)
            os.replace(work / "images.npy", images_path)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return np.load(images_path, mmap_mode="r"), np.load(boxes_path)


def _render_scenes(paths: Paths, count: int, seed: int, folder: Path, workers: int) -> None:
    """Render `count` scenes into `folder`/images.npy and `folder`/boxes.npy."""
    chunk = 500
    jobs = [(seed * 7919 + i, min(chunk, count - i * chunk), str(folder / f"part{i}.npy")) for i in range((count + chunk - 1) // chunk)]
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(str(paths.data) if paths.real_data else "",)) as pool:
        parts = list(pool.map(_scene_chunk, jobs))
    images = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.uint8, shape=(count, DET_H, DET_W, 3))
    start = 0
    for (_, part_path), (_, n, _) in zip(parts, jobs):
        part = np.load(part_path[0], mmap_mode="r")
        images[start:start + n] = part
        start += n
        del part
        Path(part_path[0]).unlink()
    images.flush()
    del images
    np.save(folder / "boxes.npy", np.concatenate([p[0] for p in parts]))


def targets(boxes: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-cell targets for a batch of boxes [B, MAX_BOXES, 4] (x1, y1, x2, y2 input pixels).

    Each plate is assigned to the cell holding its centre plus the nearest neighbour cell
    in x and in y (YOLOv5 style; the head's offset range is -0.5..1.5 cells). Cells inside a
    plate's middle that are not assigned are ignored for objectness rather than negatives.
    """
    batch = boxes.shape[0]
    obj = np.zeros((batch, GRID_H, GRID_W), np.float32)
    weight = np.ones((batch, GRID_H, GRID_W), np.float32)
    box_t = np.zeros((batch, GRID_H, GRID_W, 4), np.float32)
    for b in range(batch):
        for x1, y1, x2, y2 in boxes[b]:
            w, h = x2 - x1, y2 - y1
            if w < 2 or h < 2:
                continue
            cx, cy = (x1 + x2) / 2 / STRIDE, (y1 + y2) / 2 / STRIDE
            ix0, ix1 = int(max(0, (x1 + w * 0.25) // STRIDE)), int(min(GRID_W - 1, (x2 - w * 0.25) // STRIDE))
            iy0, iy1 = int(max(0, (y1 + h * 0.25) // STRIDE)), int(min(GRID_H - 1, (y2 - h * 0.25) // STRIDE))
            weight[b, iy0:iy1 + 1, ix0:ix1 + 1] = 0.0
            gx, gy = int(min(GRID_W - 1, cx)), int(min(GRID_H - 1, cy))
            cells = [(gx, gy), (gx - 1 if cx - gx < 0.5 else gx + 1, gy), (gx, gy - 1 if cy - gy < 0.5 else gy + 1)]
            for cxi, cyi in cells:
                if 0 <= cxi < GRID_W and 0 <= cyi < GRID_H:
                    obj[b, cyi, cxi] = 1.0
                    weight[b, cyi, cxi] = 1.0
                    box_t[b, cyi, cxi] = (cx / GRID_W, cy / GRID_H, w / DET_W, h / DET_H)
    n = GRID_H * GRID_W
    return obj.reshape(batch, n), weight.reshape(batch, n), box_t.reshape(batch, n, 4)


def train(paths: Paths, steps: int = STEPS, batch: int = 24, synth_count: int = 6000, seed: int = SEED, threads: int = 2,
          variant: str = "") -> dict[str, Any]:
    """Train, export `plate_detector.tflite` (int8) + manifest, return the figures.

    `variant` names the configuration when it is not the shipped one (`cli.variant`): the float
    model goes under it in the cache."""
    timer = Timer()
    images, boxes = timer.run("det_data", lambda: scene_set(paths, synth_count, seed))
    model = fit(images, boxes, timer, steps=steps, batch=batch, seed=seed, threads=threads)
    rep_idx = np.random.default_rng(1).choice(len(images), min(200, len(images)), replace=False)
    representative = [np.asarray(images[i], np.float32) / 255.0 for i in rep_idx]
    hyper = dict(steps=steps, batch=batch, synth_count=synth_count, seed=seed)
    return export(paths, model, representative, timer, hyper, len(images), variant)


def fit(images: np.ndarray, boxes: np.ndarray, timer: Timer, steps: int, batch: int, seed: int, threads: int) -> Any:
    """The trained Keras model (the only part of `train` that needs TensorFlow)."""
    import tensorflow as tf

    from inference.training.common import set_threads

    set_threads(threads)
    tf.random.set_seed(seed)
    model = build_model()
    schedule = tf.keras.optimizers.schedules.CosineDecay(3e-3, steps, alpha=0.02)
    optimizer = tf.keras.optimizers.Adam(schedule)

    @tf.function
    def step(x: tf.Tensor, obj: tf.Tensor, weight: tf.Tensor, box_t: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            rows = model(x, training=True)
            p = tf.clip_by_value(rows[..., 4], 1e-6, 1 - 1e-6)
            # focal loss, normalised by the number of positive cells
            pt = tf.where(obj > 0.5, p, 1 - p)
            alpha = tf.where(obj > 0.5, 0.75, 0.25)
            focal = -alpha * tf.pow(1 - pt, 2.0) * tf.math.log(pt) * weight
            npos = tf.maximum(tf.reduce_sum(obj), 1.0)
            obj_loss = tf.reduce_sum(focal) / npos
            pos = obj[..., None]
            pred = rows[..., :4]
            centre = tf.abs(pred[..., :2] - box_t[..., :2]) * tf.constant([GRID_W, GRID_H], tf.float32)
            size = tf.abs(tf.math.log(tf.maximum(pred[..., 2:4], 1e-4)) - tf.math.log(tf.maximum(box_t[..., 2:4], 1e-4)))
            box_loss = tf.reduce_sum(tf.concat([centre, size], -1) * pos) / npos
            loss = obj_loss + box_loss
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return obj_loss, box_loss

    rng = np.random.default_rng(seed)

    def sample() -> tuple[np.ndarray, ...]:
        idx = np.sort(rng.choice(len(images), batch, replace=False))
        x = np.asarray(images[idx], dtype=np.float32) / 255.0
        bx = boxes[idx].copy()
        flip = rng.random(batch) < 0.5
        x[flip] = x[flip, :, ::-1]
        valid = (bx[..., 2] - bx[..., 0]) > 0
        flipped = bx[flip].copy()
        flipped[..., 0], flipped[..., 2] = DET_W - bx[flip][..., 2], DET_W - bx[flip][..., 0]
        flipped[~valid[flip]] = 0
        bx[flip] = flipped
        return (x, *targets(bx))

    def loop() -> None:
        start = time.monotonic()
        for i in range(steps):
            obj_l, box_l = step(*sample())
            if i % 100 == 0 or i == steps - 1:
                log.info("det step %d/%d obj %.3f box %.3f (%.0f s)", i, steps, float(obj_l), float(box_l), time.monotonic() - start)

    timer.run("det_train", loop)
    return model


def manifest_for(dtype: str, training: dict[str, Any], metrics: dict[str, Any], score_threshold: float = 0.5,
                 tile_score_threshold: float | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"score_threshold": score_threshold, "stride": STRIDE, "box_format": "cxcywh normalised"}
    if tile_score_threshold is not None:
        params["tile_score_threshold"] = tile_score_threshold
    return {
        "name": MODEL_NAME,
        "version": VERSION,
        "sha256": "",
        "input": {"shape": [1, DET_H, DET_W, 3], "dtype": dtype, "colour": "rgb", "resize": "letterbox",
                  "normalisation": {"mean": [0.0, 0.0, 0.0], "std": [255.0, 255.0, 255.0]}},
        "output": {"kind": "yolo", "classes": ["plate"], "params": params},
        "training": training,
        "metrics": metrics,
    }


def export(paths: Paths, model: Any, representative: list[np.ndarray], timer: Timer, hyper: dict[str, Any], scenes: int,
           variant: str = "") -> dict[str, Any]:
    """Write the float TFLite (cache, `Paths.float_models(variant)`) and the int8 TFLite
    (`paths.models`) and measure both on the real scene splits."""
    from inference.training.evaluate_detector import (
        FOLDERS,
        choose_threshold,
        evaluate_detector,
        threshold_curve,
        tile_threshold_curve,
    )

    training = {
        "pipeline": "alpr-train detector",
        "data": {"synthetic_scenes": scenes},
        "real_source": "eu-scenes + br-scenes train split as backgrounds/positives; us-plates train crops pasted",
        "synthetic": "inference.training.scenes.SceneGenerator",
        "hyper": hyper,
        "stage_seconds": timer.stages,
    }
    float_path = paths.float_models(variant) / f"{MODEL_NAME}_float.tflite"
    int8_path = paths.models / f"{MODEL_NAME}.tflite"
    write_model(float_path, timer.run("det_export_float", lambda: export_tflite(model, None)), manifest_for("float32", training, {}))
    content = timer.run("det_export_int8", lambda: export_tflite(model, representative))
    metrics: dict[str, Any] = {}
    write_model(int8_path, content, manifest_for("int8", training, metrics))
    # The score thresholds are chosen on the val split only; the test curve is reported beside it.
    def evaluate() -> tuple[float, float | None]:
        if not any(paths.real(name) is not None for name in FOLDERS):
            return 0.5, None
        metrics["val_curve_int8"] = threshold_curve(int8_path, paths.data, "val")
        threshold = choose_threshold(metrics["val_curve_int8"])
        metrics["test_curve_int8"] = threshold_curve(int8_path, paths.data, "test")
        metrics["score_threshold_rule"] = "highest threshold keeping the best val recall"
        for label, path in (("float", float_path), ("int8", int8_path)):
            for split in ("val", "test"):
                metrics[f"{split}_{label}"] = evaluate_detector(path, paths.data, split, score_threshold=threshold)
        # The tile passes are for small plates, which score lower: their own threshold, by the
        # same rule on the case they are for, never above the single pass's.
        metrics["val_small_plates_tile_curve_int8"] = tile_threshold_curve(int8_path, paths.data, "val")
        if not metrics["val_small_plates_tile_curve_int8"]:
            return threshold, None
        metrics["tile_score_threshold_rule"] = ("highest threshold keeping the best val recall of the tile passes on "
                                                "small plates (60/80/120 px in 1920x1080), not above score_threshold")
        return threshold, min(threshold, choose_threshold(metrics["val_small_plates_tile_curve_int8"]))

    threshold, tile_threshold = timer.run("det_evaluate", evaluate)
    metrics["size_bytes"] = len(content)
    write_model(int8_path, content, manifest_for("int8", training, metrics, threshold, tile_threshold))
    return {"training": training, "metrics": metrics}
