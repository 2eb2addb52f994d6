"""Train the plate OCR (small CNN + CTC, with a state head) and export float and int8 TFLite."""
from __future__ import annotations

import logging
import time
from typing import Any

import cv2
import numpy as np

from inference.plate_formats import PlateFormats
from inference.training.common import (
    Paths,
    Timer,
    cached_arrays,
    export_tflite,
    write_model,
)
from inference.training.ocr_data import (
    MAX_LEN,
    OCR_DATA_VERSION,
    OCR_H,
    OCR_W,
    REGIONS,
    SCENE_PLATES_VERSION,
    real_set,
    scene_plate_set,
    synth_set,
)
from inference.training.plates import ALPHABET, GENERATOR_VERSION

log = logging.getLogger(__name__)

MODEL_NAME = "plate_ocr"
VERSION = "1.0.0"
# The defaults below are those of one network, `alpr-train ocr` (configuration R, the single-network
# OCR); `alpr-train all` trains the OCR pair instead, whose two networks are `ensemble.MEMBERS`.
STEPS = 11000  # configuration R's training steps
SCENE_FOLDERS = ("eu-scenes", "br-scenes")
SCENE_COPIES = 30  # augmented cuts of each train-split eu/br scene plate (shipped model: 30; 0 = US crops only)
DROPOUT = (0.2, 0.3)  # spatial dropout on the 4 x 32 map, dropout on the sequence and state features (shipped model)
PRECISIONS = ("float32", "bfloat16")
PRECISION = "float32"  # configuration R's training arithmetic (the pair's members: bfloat16)
SEED = 1  # configuration R's seed: of its two seeds, the one with the better val stand-in


def build_model(width: int = 1, dropout: tuple[float, float] = DROPOUT, precision: str = "float32") -> Any:
    """Grey OCR_H x OCR_W in, [T=OCR_W/4, 1+len(ALPHABET)] CTC softmax and [len(REGIONS)] state softmax out.

    `precision` "bfloat16" computes the hidden layers in bfloat16 (weights stay float32, Keras'
    mixed_bfloat16 policy) for training; the softmax outputs are float32 either way, and a model is
    exported from a float32 copy (`as_float32`)."""
    import keras
    from keras import layers

    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    hidden = keras.dtype_policies.DTypePolicy("mixed_bfloat16" if precision == "bfloat16" else "float32")

    def conv(x: Any, filters: int, kernel: tuple[int, int] = (3, 3), padding: str = "same") -> Any:
        x = layers.Conv2D(filters, kernel, padding=padding, use_bias=False, dtype=hidden)(x)
        x = layers.BatchNormalization(dtype=hidden)(x)
        return layers.ReLU(6.0, dtype=hidden)(x)

    inp = keras.Input((OCR_H, OCR_W, 1), batch_size=1 if width < 0 else None, name="image")
    x = conv(inp, 16 * width)
    x = layers.MaxPooling2D(2, dtype=hidden)(x)        # 16 x 64
    x = conv(x, 32 * width)
    x = layers.MaxPooling2D(2, dtype=hidden)(x)        # 8 x 32
    x = conv(x, 64 * width)
    x = conv(x, 64 * width)
    mid = x
    x = layers.MaxPooling2D((2, 1), dtype=hidden)(x)   # 4 x 32
    x = conv(x, 96 * width)
    # Dropout because the few hundred real crops are otherwise memorised (100 % on train,
    # ~90 % on val without it); it is a no-op in the exported model.
    x = layers.SpatialDropout2D(dropout[0], dtype=hidden)(x)
    seq = conv(x, 128, (OCR_H // 8, 1), padding="valid")  # 1 x 32: one column per time step
    seq = conv(seq, 128, (1, 3))
    seq = conv(seq, 128, (1, 3))
    seq = layers.Dropout(dropout[1], dtype=hidden)(seq)
    logits = layers.Conv2D(len(ALPHABET) + 1, 1, dtype=hidden)(seq)
    logits = layers.Reshape((OCR_W // 4, len(ALPHABET) + 1), dtype=hidden)(logits)
    chars = layers.Softmax(name="chars", dtype="float32")(logits)
    # The state comes from the plate's design (layout, art, header), so it gets its own small
    # branch off the 8 x 32 map: a linear head on the character features read only ~50 % of
    # val states once those features stopped memorising the training crops.
    r = layers.MaxPooling2D(2, dtype=hidden)(mid)      # 4 x 16
    r = conv(r, 96)
    r = layers.GlobalAveragePooling2D(dtype=hidden)(r)
    r = layers.Dropout(dropout[1], dtype=hidden)(r)
    region = layers.Dense(len(REGIONS), name="region_logits", dtype=hidden)(r)
    region = layers.Softmax(name="region", dtype="float32")(region)
    return keras.Model(inp, [chars, region], name=MODEL_NAME)


def as_float32(model: Any, dropout: tuple[float, float]) -> Any:
    """A float32 copy of a trained OCR (the same weights), for saving and TFLite export: a
    mixed-precision graph would carry its casts into the exported file."""
    copy = build_model(dropout=dropout)
    copy.set_weights(model.get_weights())
    return copy


def sparse_labels(labels: Any, lengths: Any) -> Any:
    """Padded labels [B, L] as a SparseTensor: with sparse labels `tf.nn.ctc_loss` runs TensorFlow's
    CPU CTC kernel (the same loss as with dense labels, about a tenth of a training step less)."""
    import tensorflow as tf

    mask = tf.sequence_mask(lengths, tf.shape(labels)[1])
    where = tf.where(mask)
    return tf.SparseTensor(where, tf.cast(tf.gather_nd(labels, where), tf.int32), tf.cast(tf.shape(labels), tf.int64))


def datasets(paths: Paths, synth_count: int, real_copies: int, scene_copies: int, seed: int,
             holdout: str | None = None) -> dict[str, dict[str, np.ndarray]]:
    """The OCR's prepared sets (synth, real_train, real_scenes_train, real_val, real_test), cached."""
    cache = paths.work / "ocr"
    us = paths.real("us-plates")
    version = f"v{GENERATOR_VERSION}_d{OCR_DATA_VERSION}"
    # The arrays made from the real data carry the data folder in their key (none for the
    # default folder): the same split of another folder is other crops.
    data_key = f"_{paths.data_key}" if paths.data_key else ""
    sets = {"synth": cached_arrays(cache / f"synth_{synth_count}_{seed}_{version}.npz", lambda: synth_set(synth_count, seed))}
    if us is not None:
        # holdout "KofN": cross-validation, training on train + val but the K-th of N folds,
        # which takes val's place; the fixed test split stays out either way
        train_split, val_split = (f"rest{holdout}", f"fold{holdout}") if holdout else ("train", "val")
        sets["real_train"] = cached_arrays(cache / f"real_{train_split}_{real_copies}_{seed}_d{OCR_DATA_VERSION}{data_key}.npz",
                                           lambda: real_set(us, train_split, real_copies, seed))
        scenes = [folder for folder in map(paths.real, SCENE_FOLDERS) if folder is not None]
        if scenes and scene_copies > 0:
            # A quick run may have only one of the two scene folders; it keeps its arrays under
            # its own quick/ cache (Paths.work), so a full run never loads such a partial set.
            sets["real_scenes_train"] = cached_arrays(
                cache / f"scenes_train_{scene_copies}_{seed}_s{SCENE_PLATES_VERSION}{data_key}.npz",
                lambda: scene_plate_set(scenes, "train", scene_copies, seed))
        sets["real_val"] = real_set(us, val_split, 0, seed)
        sets["real_test"] = real_set(us, "test", 0, seed)
    else:
        # only reached with --quick or --synthetic-only: `alpr-train` stops on missing data otherwise
        reason = "--synthetic-only" if not paths.real_data else f"{paths.data / 'us-plates'} not found"
        log.warning("%s: training on synthetic plates only", reason)
    return sets


def concat_sets(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One pool from several prepared sets (the keys they all have)."""
    keys = set.intersection(*(set(p) for p in parts))
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}


def jitter(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fresh framing and light for every sample: shift, scale, slight shear, gain/offset.

    The cached real copies repeat every ~30 steps; re-jittering them each time keeps the model
    from learning the copies rather than the characters.
    """
    out = np.empty_like(images)
    n = len(images)
    scale = rng.uniform(0.92, 1.08, n)
    stretch = rng.uniform(0.92, 1.08, n)
    shear = rng.uniform(-0.08, 0.08, n)
    dx = rng.uniform(-0.04, 0.04, n) * OCR_W
    dy = rng.uniform(-0.06, 0.06, n) * OCR_H
    gain = rng.uniform(0.75, 1.25, n)
    offset = rng.uniform(-25, 25, n)
    cx, cy = OCR_W / 2, OCR_H / 2
    for i in range(n):
        sx, sy = scale[i] * stretch[i], scale[i]
        matrix = np.float32([[sx, shear[i] * sy, cx - sx * cx - shear[i] * sy * cy + dx[i]],
                             [0, sy, cy - sy * cy + dy[i]]])
        warped = cv2.warpAffine(images[i], matrix, (OCR_W, OCR_H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out[i] = np.clip(warped.astype(np.float32) * gain[i] + offset[i], 0, 255).astype(np.uint8)
    return out


def train(paths: Paths, steps: int = STEPS, batch: int = 64, synth_count: int = 30000, real_copies: int = 30,
          real_share: float = 0.4, seed: int = SEED, threads: int = 2, scene_copies: int = SCENE_COPIES,
          holdout: str | None = None, dropout: tuple[float, float] = DROPOUT, precision: str = PRECISION,
          variant: str = "") -> dict[str, Any]:
    """Train, export `plate_ocr.tflite` (int8) + manifest and return the figures.

    `holdout` "KofN" trains a cross-validation twin: train + val crops but the K-th of N folds,
    which is measured in val's place (`real_val`). `precision` is the training arithmetic
    (`build_model`); the exported files are float32 and int8 either way. `variant` names the
    configuration when it is not the shipped one (`cli.variant`): the float and Keras models go
    under it in the cache."""
    timer = Timer()
    sets = timer.run("ocr_data", lambda: datasets(paths, synth_count, real_copies, scene_copies, seed, holdout))
    model = fit(sets, timer, steps=steps, batch=batch, real_share=real_share, seed=seed, threads=threads, dropout=dropout,
                precision=precision)
    hyper = dict(steps=steps, batch=batch, synth_count=synth_count, real_copies=real_copies, real_share=real_share,
                 seed=seed, scene_copies=scene_copies if "real_scenes_train" in sets else 0, dropout=list(dropout),
                 precision=precision)
    if holdout:
        hyper["holdout"] = holdout
    return export(paths, model, sets, timer, hyper, variant)


def fit(sets: dict[str, dict[str, np.ndarray]], timer: Timer, steps: int, batch: int, real_share: float, seed: int,
        threads: int, dropout: tuple[float, float], precision: str = PRECISION) -> Any:
    """The trained Keras model, float32 whatever `precision` it trained in (the only part of
    `train` that needs TensorFlow)."""
    import tensorflow as tf

    from inference.training.common import set_threads

    set_threads(threads)
    tf.random.set_seed(seed)
    real = [sets[k] for k in ("real_train", "real_scenes_train") if k in sets]
    pools = [sets["synth"]] + ([concat_sets(real)] if real else [])
    shares = [1.0 - real_share, real_share] if len(pools) == 2 else [1.0]
    model = build_model(dropout=dropout, precision=precision)
    schedule = tf.keras.optimizers.schedules.CosineDecay(2e-3, steps, alpha=0.02, warmup_target=None)
    optimizer = tf.keras.optimizers.Adam(schedule)

    @tf.function
    def step(images: tf.Tensor, labels: tf.Tensor, lengths: tf.Tensor, regions: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            chars, region = model(images, training=True)
            logp = tf.math.log(chars + 1e-7)
            t_len = tf.fill([tf.shape(images)[0]], OCR_W // 4)
            ctc = tf.reduce_mean(tf.nn.ctc_loss(sparse_labels(labels, lengths), logp, None, t_len,
                                                logits_time_major=False, blank_index=0))
            mask = tf.cast(regions >= 0, tf.float32)
            rce = tf.keras.losses.sparse_categorical_crossentropy(tf.maximum(regions, 0), region)
            rloss = tf.reduce_sum(rce * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)
            loss = ctc + 0.5 * rloss
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return ctc, rloss

    rng = np.random.default_rng(seed)
    counts = [int(round(batch * s)) for s in shares]
    counts[0] = batch - sum(counts[1:])

    def sample() -> tuple[np.ndarray, ...]:
        parts = []
        for pool, n in zip(pools, counts):
            idx = rng.integers(0, len(pool["images"]), n)
            parts.append((pool["images"][idx], pool["labels"][idx], pool["lengths"][idx], pool["regions"][idx]))
        images = jitter(np.concatenate([p[0] for p in parts]), rng).astype(np.float32)[..., None] / 255.0
        return images, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts])

    def loop() -> None:
        start = time.monotonic()
        for i in range(steps):
            ctc, rloss = step(*sample())
            if i % 200 == 0 or i == steps - 1:
                log.info("ocr step %d/%d ctc %.3f region %.3f (%.0f s)", i, steps, float(ctc), float(rloss), time.monotonic() - start)

    timer.run("ocr_train", loop)
    if precision != "float32":
        model = as_float32(model, dropout)
    return model


def plate_formats(sets: dict[str, dict[str, np.ndarray]]) -> PlateFormats:
    """Each state's serial formats, from the labels of the US crops the OCR trained on (the
    reader settles O / 0 by them; the eu / br scene plates carry no state)."""
    real = sets.get("real_train")
    if real is None:
        return PlateFormats({})
    return PlateFormats.from_labels((REGIONS[r] if r >= 0 else None, str(t)) for r, t in zip(real["regions"], real["texts"]))


def manifest_for(dtype: str, training: dict[str, Any], metrics: dict[str, Any],
                 formats: PlateFormats | None = None) -> dict[str, Any]:
    output: dict[str, Any] = {"kind": "ctc", "alphabet": ALPHABET, "blank_index": 0, "region_classes": list(REGIONS),
                              "params": {"max_len": MAX_LEN}}
    if formats is not None and formats.by_state:
        output["plate_formats"] = formats.to_dict()
    return {
        "name": MODEL_NAME,
        "version": VERSION,
        "sha256": "",
        "input": {"shape": [1, OCR_H, OCR_W, 1], "dtype": dtype, "colour": "grey", "resize": "stretch",
                  "normalisation": {"mean": [0.0], "std": [255.0]}},
        "output": output,
        "training": training,
        "metrics": metrics,
    }


def export(paths: Paths, model: Any, sets: dict[str, dict[str, np.ndarray]], timer: Timer, hyper: dict[str, Any],
           variant: str = "", pipeline: str = "alpr-train ocr") -> dict[str, Any]:
    """Write the Keras and float TFLite models (cache, `Paths.float_models(variant)`) and the int8
    TFLite (`paths.models`), and measure float and int8 on the real val and test splits.
    `pipeline` is the manifest's `training.pipeline` (the command that made the model)."""
    from inference.training.evaluate_ocr import evaluate_tflite

    cached = paths.float_models(variant)
    cached.mkdir(parents=True, exist_ok=True)
    model.save(cached / f"{MODEL_NAME}.keras")  # kept for fine-tuning and inspection; not shipped

    rep_pool = np.concatenate([sets[k]["images"][:200] for k in sets if k in ("synth", "real_train")])
    rng = np.random.default_rng(1)
    representative = [rep_pool[i][..., None].astype(np.float32) / 255.0 for i in rng.permutation(len(rep_pool))[:300]]
    training = {
        "pipeline": pipeline,
        "data": {k: len(v["images"]) for k, v in sets.items()},
        "real_source": "us-plates (openalpr benchmarks), split by file name hash, seed 'alpr-split-v1' 70/10/20",
        "synthetic": "inference.training.plates.PlateGenerator",
        "hyper": hyper,
        "stage_seconds": timer.stages,
    }
    formats = plate_formats(sets)
    float_path = cached / f"{MODEL_NAME}_float.tflite"
    int8_path = paths.models / f"{MODEL_NAME}.tflite"
    write_model(float_path, timer.run("ocr_export_float", lambda: export_tflite(model, None)), manifest_for("float32", training, {}, formats))
    content = timer.run("ocr_export_int8", lambda: export_tflite(model, representative))
    metrics: dict[str, Any] = {}
    write_model(int8_path, content, manifest_for("int8", training, metrics, formats))

    def evaluate() -> None:
        for label, path in (("float", float_path), ("int8", int8_path)):
            for split in ("real_val", "real_test"):
                if split in sets:
                    metrics[f"{split}_{label}"] = evaluate_tflite(path, sets[split])

    timer.run("ocr_evaluate", evaluate)
    metrics["size_bytes"] = len(content)
    write_model(int8_path, content, manifest_for("int8", training, metrics, formats))
    return {"training": training, "metrics": metrics}
