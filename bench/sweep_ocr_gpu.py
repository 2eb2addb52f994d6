"""OCR configuration sweep on an accelerator: many cross-validation twins at once (research tool).

The shipped OCR is chosen by 4-fold cross-validation on the train + val us-plates crops, and on
the 2-core machine one twin takes ~40 minutes, so only a couple of configurations can be
compared per day, with one seed each, while two seeds of one configuration differ by 13 of 585
crops. This script trains the same network (`train_ocr.build_model`), the same data and the same
loss with Keras on JAX, the 4 fold twins of one (configuration, seed) in one jitted step, so a
GPU machine can give each configuration several seeds. Measured on an H200: one group of 4 twins
alone, 17.7 ms a step (11,000 steps in 195 s); six groups as six processes, ~63 ms a step each.

It is not the shipping pipeline: `alpr-train` (TensorFlow, CPU) trains what ships. Scores here
are float, one view, greedy CTC, on each fold's original crops: comparable between the twins of
one run, and calibrated against the CPU twins with the `score-tflite` command.

Input is a pack made from the real data (`--pack`, see `pack()`), since the data folder is not
on the accelerator machine; the synthetic plates are generated there.

    KERAS_BACKEND=jax python bench/sweep_ocr_gpu.py run --pack .devdata/pack.npz --out OUT \
        --configs R,RS6,B128 --seeds 0,1 --procs 3 --deadline 420
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

log = logging.getLogger("sweep")

# name -> overrides of the shipped configuration R (train_ocr defaults)
CONFIGS: dict[str, dict[str, Any]] = {
    "R": {},
    "RS6": {"real_share": 0.6},
    "B128": {"batch": 128, "steps": 5500},
    "WD": {"weight_decay": 0.01},
    "ST2": {"steps": 22000},
    "W2": {"width": 2},
}
BASE = {"steps": 11000, "batch": 64, "real_share": 0.4, "lr": 2e-3, "weight_decay": 0.0, "width": 1,
        "dropout": (0.2, 0.3)}
FOLDS = 4
COPIES = 30  # augmented copies of each real crop, as alpr-train makes them


def pack(out: Path, data: Path, scenes_npz: Path) -> None:
    """Write the train + val crops (orig + 30 augmented, as `real_set` makes them) and the eu/br
    scene plates as JPEG q90, with labels, fold numbers and the lossless originals."""
    import cv2

    from inference.datasets import fold_of
    from inference.training.ocr_data import real_set

    parts = [real_set(data / "us-plates", split, COPIES, 0) for split in ("train", "val")]
    pool = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    with np.load(scenes_npz) as d:
        scenes = {k: d[k] for k in d.files}

    def encode(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        blobs = [cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for im in images]
        return np.frombuffer(b"".join(blobs), np.uint8), np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)

    orig = np.zeros(len(pool["images"]), bool)
    orig[::COPIES + 1] = True  # real_set puts each original before its copies
    arrays: dict[str, np.ndarray] = {}
    for name, d in (("real", pool), ("scenes", scenes)):
        arrays[f"{name}_jpg"], arrays[f"{name}_off"] = encode(d["images"])
        for k in ("labels", "lengths", "regions", "texts"):
            arrays[f"{name}_{k}"] = d[k]
    arrays["real_orig"] = orig
    arrays["real_fold"] = np.array([fold_of(f, FOLDS) for f in pool["files"]], np.int32)
    arrays["real_files"] = pool["files"]  # not read back: a record of which files the pack holds (train + val only)
    arrays["eval_images"] = pool["images"][orig]
    np.savez_compressed(out, **arrays)


def _decode_jpegs(blob: np.ndarray, off: np.ndarray) -> np.ndarray:
    import cv2

    return np.stack([cv2.imdecode(blob[off[i]:off[i + 1]], cv2.IMREAD_GRAYSCALE) for i in range(len(off) - 1)])


def prepare(pack_path: Path, work: Path, synth_count: int, workers: int) -> None:
    """Decode the pack and generate the synthetic plates into `work` (.npy, memory-mapped later)."""
    from inference.training.ocr_data import synth_set

    work.mkdir(parents=True, exist_ok=True)
    with np.load(pack_path) as d:
        for name in ("real", "scenes"):
            np.save(work / f"{name}_images.npy", _decode_jpegs(d[f"{name}_jpg"], d[f"{name}_off"]))
            for k in ("labels", "lengths", "regions", "texts"):
                np.save(work / f"{name}_{k}.npy", d[f"{name}_{k}"])
        for k in ("real_orig", "real_fold", "eval_images"):
            np.save(work / f"{k}.npy", d[k])
    start = time.monotonic()
    synth = synth_set(synth_count, 0, workers=workers)
    for k in ("images", "labels", "lengths", "regions", "texts"):
        np.save(work / f"synth_{k}.npy", synth[k])
    log.info("synthetic plates: %d in %.0f s", synth_count, time.monotonic() - start)


def _load(work: Path, name: str) -> dict[str, np.ndarray]:
    return {k: np.load(work / f"{name}_{k}.npy", mmap_mode="r" if k == "images" else None)
            for k in ("images", "labels", "lengths", "regions", "texts")}


def greedy(probs: np.ndarray) -> list[str]:
    """Best-path CTC readings of [N, T, 1 + len(ALPHABET)], by the runtime's own decoder."""
    from inference.ocr_decode import ctc_greedy
    from inference.training.plates import ALPHABET

    return [ctc_greedy(p, ALPHABET).text for p in probs]


def score(truths: list[str], readings: list[str]) -> dict[str, Any]:
    """Exact reads and character accuracy, counted as `alpr-node eval` counts them."""
    from inference.metrics import OcrScore

    tally = OcrScore()
    for truth, reading in zip(truths, readings):
        tally.add(truth, reading)
    figures = tally.as_dict()
    return {"plates": tally.plates, "exact": tally.exact, "char_accuracy_pct": figures["char_accuracy_pct"]}


def fold_figures(truths: list[str], readings: list[str], folds: np.ndarray) -> dict[str, Any]:
    """`score` over all crops and per fold (`folds[j]` is crop j's fold, 1-based)."""
    per_fold = {}
    for k in range(1, FOLDS + 1):
        idx = np.flatnonzero(folds == k)
        per_fold[str(k)] = score([truths[j] for j in idx], [readings[j] for j in idx])
    return {"all": score(truths, readings), "folds": per_fold}


def train_group(config: str, seed: int, work: Path, out: Path, overrides: dict[str, Any] | None = None,
                twin_mode: str = "vmap") -> None:
    """Train the FOLDS twins of (config, seed) in one vmapped step; write their fold readings."""
    import jax
    import jax.numpy as jnp
    import keras
    import optax

    from inference.training.ocr_data import OCR_W
    from inference.training.train_ocr import build_model, jitter

    hyper = {**BASE, **CONFIGS[config], **(overrides or {})}
    steps, batch = int(hyper["steps"]), int(hyper["batch"])
    synth, scenes, real = _load(work, "synth"), _load(work, "scenes"), _load(work, "real")
    fold_of = np.load(work / "real_fold.npy")
    orig = np.load(work / "real_orig.npy")
    eval_images = np.load(work / "eval_images.npy")
    eval_fold = fold_of[orig]
    eval_texts = [str(t) for t in real["texts"][orig]]
    # each twin's real pool: its rest-of-folds crops (orig + augmented) and the scene plates
    scene_base = len(real["images"])
    real_idx = [np.concatenate([np.flatnonzero(fold_of != k), scene_base + np.arange(len(scenes["images"]))])
                for k in range(1, FOLDS + 1)]
    pool_images = np.concatenate([np.asarray(real["images"]), np.asarray(scenes["images"])])
    pool = {k: np.concatenate([real[k], scenes[k]]) for k in ("labels", "lengths", "regions")}
    synth_images = np.asarray(synth["images"])

    # one Keras model per twin only to draw its initial weights; all twins run through the first
    params, states = [], []
    for k in range(FOLDS):
        keras.utils.set_random_seed(seed * 1000 + k + 1)
        twin = build_model(width=int(hyper["width"]), dropout=tuple(hyper["dropout"]))
        params.append([v.value for v in twin.trainable_variables])
        states.append([v.value for v in twin.non_trainable_variables])
        if k == 0:
            model = twin
    seed_slots = [i for i, v in enumerate(model.non_trainable_variables) if "seed_generator" in v.path]
    for k in range(FOLDS):  # distinct dropout streams per twin, whatever keras derived
        for j, i in enumerate(seed_slots):
            states[k][i] = jnp.asarray(np.array([seed * 1000 + k + 1, 7 * j + 1], dtype=np.asarray(states[k][i]).dtype))

    def stack(trees: list[Any]) -> Any:
        return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)

    params, states = stack(params), stack(states)
    schedule = optax.cosine_decay_schedule(float(hyper["lr"]), steps, alpha=0.02)
    if hyper["weight_decay"]:
        tx = optax.adamw(schedule, eps=1e-7, weight_decay=float(hyper["weight_decay"]))
    else:
        tx = optax.adam(schedule, eps=1e-7)
    opt_state = jax.vmap(tx.init)(params)
    t_len = OCR_W // 4

    def loss_fn(p: Any, s: Any, images: Any, labels: Any, lengths: Any, regions: Any) -> Any:
        (chars, region), s = model.stateless_call(p, s, images, training=True)
        logp = jnp.log(chars + 1e-7)
        n = images.shape[0]
        ctc = optax.ctc_loss(logp, jnp.zeros((n, t_len)), labels,
                             (jnp.arange(labels.shape[1])[None] >= lengths[:, None]).astype(jnp.float32), blank_id=0)
        ctc = jnp.mean(ctc)
        mask = (regions >= 0).astype(jnp.float32)
        picked = jnp.take_along_axis(region, jnp.maximum(regions, 0)[:, None], axis=1)[:, 0]
        rce = -jnp.log(jnp.clip(picked, 1e-7, 1.0))
        rloss = jnp.sum(rce * mask) / jnp.maximum(jnp.sum(mask), 1.0)
        return ctc + 0.5 * rloss, (s, ctc, rloss)

    def one_step(p: Any, s: Any, o: Any, images: Any, labels: Any, lengths: Any, regions: Any) -> Any:
        (_, (s, ctc, rloss)), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, s, images, labels, lengths, regions)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), s, o, ctc, rloss

    if twin_mode == "vmap":
        step = jax.jit(jax.vmap(one_step), donate_argnums=(0, 1, 2))
    else:
        # vmapping a convolution over its kernels makes it a grouped convolution, which may be
        # what kept the first device run at 17.7 ms a step; "unroll" gives each twin its own
        # ordinary convolutions inside the one jitted step instead
        def unrolled(p: Any, s: Any, o: Any, *batch: Any) -> Any:
            outs = []
            for k in range(FOLDS):
                def pick(tree: Any, k: int = k) -> Any:
                    return jax.tree_util.tree_map(lambda a: a[k], tree)

                outs.append(one_step(pick(p), pick(s), pick(o), *(b[k] for b in batch)))
            return tuple(stack([out[i] for out in outs]) for i in range(5))

        step = jax.jit(unrolled, donate_argnums=(0, 1, 2))

    def infer(p: Any, s: Any, images: Any) -> Any:
        (chars, _), _ = model.stateless_call(p, s, images, training=False)
        return chars

    infer_all = jax.jit(jax.vmap(infer, in_axes=(0, 0, None)))
    rngs = [np.random.default_rng(seed * 1000 + k + 1) for k in range(FOLDS)]
    n_real = round(batch * hyper["real_share"])
    n_synth = batch - n_real

    def sample() -> tuple[np.ndarray, ...]:
        ims, labs, lens, regs = [], [], [], []
        for k in range(FOLDS):
            rng = rngs[k]
            si = rng.integers(0, len(synth_images), n_synth)
            ri = real_idx[k][rng.integers(0, len(real_idx[k]), n_real)]
            images = np.concatenate([synth_images[si], pool_images[ri]])
            ims.append(jitter(images, rng).astype(np.float32)[..., None] / 255.0)
            labs.append(np.concatenate([synth["labels"][si], pool["labels"][ri]]))
            lens.append(np.concatenate([synth["lengths"][si], pool["lengths"][ri]]))
            regs.append(np.concatenate([synth["regions"][si], pool["regions"][ri]]))
        return tuple(np.stack(x) for x in (ims, labs, lens, regs))

    start = time.monotonic()
    batch_next = sample()
    for i in range(steps):
        params, states, opt_state, ctc, rloss = step(params, states, opt_state, *batch_next)
        batch_next = sample()  # overlaps the device's step
        if i % 1000 == 0 or i == steps - 1:
            log.info("%s s%d step %d/%d ctc %s region %s (%.0f s)", config, seed, i, steps,
                     np.round(np.asarray(ctc), 3).tolist(), np.round(np.asarray(rloss), 3).tolist(),
                     time.monotonic() - start)
    train_s = time.monotonic() - start
    probs = np.asarray(infer_all(params, states, jnp.asarray(eval_images.astype(np.float32)[..., None] / 255.0)))
    # each crop read by the one twin that did not train on it
    own = np.stack([probs[eval_fold[j] - 1][j] for j in range(len(eval_texts))])
    readings = greedy(own)
    result: dict[str, Any] = {"config": config, "seed": seed, "hyper": {**hyper, "dropout": list(hyper["dropout"])},
                              "train_seconds": round(train_s, 1), **fold_figures(eval_texts, readings, eval_fold),
                              "readings": readings, "truths": eval_texts}
    own = own.astype(np.float16)
    np.save(out / f"probs_{config}_s{seed}.npy", own)
    (out / f"result_{config}_s{seed}.json").write_text(json.dumps(result) + "\n")
    log.info("%s s%d: %d/%d exact, chars %.2f %% (train %.0f s)", config, seed, result["all"]["exact"],
             len(eval_texts), result["all"]["char_accuracy_pct"], train_s)


def _worker(queue: Any, work: str, out: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(processName)s %(message)s", stream=sys.stdout)
    import cv2
    import jax

    cv2.setNumThreads(1)  # one core per worker: the workers share the machine's cores
    log.info("devices: %s", jax.devices())
    while True:
        job = queue.get()
        if job is None:
            return
        try:
            train_group(job[0], job[1], Path(work), Path(out), job[2], job[3])
        except Exception:  # one broken group must not stop the others' results
            log.exception("group %s failed", job)


def run(args: argparse.Namespace) -> None:
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prepare(Path(args.pack), work, args.synth_count, args.synth_workers)
    # seed-major, so that any cut-off leaves the configurations balanced
    overrides = {"steps": args.steps} if args.steps else {}
    jobs = [(c, s, overrides, args.twin_mode) for s in args.seeds for c in args.configs]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    for job in jobs:
        queue.put(job)
    for _ in range(args.procs):
        queue.put(None)
    procs = [ctx.Process(target=_worker, args=(queue, str(work), str(out)), name=f"w{i}") for i in range(args.procs)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + args.deadline
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            log.warning("deadline: stopping %s", p.name)
            p.terminate()
    summarise(out)


def summarise(out: Path) -> None:
    """Per configuration: each seed's fold reads, the mean, and the probability-averaged ensemble."""
    results = [json.loads(p.read_text()) for p in sorted(out.glob("result_*.json"))]
    by_config: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_config.setdefault(r["config"], []).append(r)
    texts = results[0]["truths"] if results else None
    summary = {}
    for config, rs in by_config.items():
        exact = [r["all"]["exact"] for r in rs]
        entry = {"seeds": [r["seed"] for r in rs], "exact": exact, "mean": float(np.mean(exact)),
                 "chars": [r["all"]["char_accuracy_pct"] for r in rs],
                 "folds": [[r["folds"][str(k)]["exact"] for k in range(1, FOLDS + 1)] for r in rs]}
        if len(rs) > 1 and texts is not None:
            probs = np.mean([np.load(out / f"probs_{config}_s{r['seed']}.npy").astype(np.float32) for r in rs], axis=0)
            entry["ensemble"] = score(texts, greedy(probs))
        summary[config] = entry
        log.info("%s: %s", config, entry)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")


def score_tflite(pack_path: Path, pattern: str) -> dict[str, Any]:
    """The sweep's metric for CPU twins: `pattern` with {k} for the fold names each twin's float
    .tflite (as `alpr-train ocr --ocr-holdout K/4` leaves it), scored on its own fold's crops."""
    from inference.runtime import interpreter_class

    with np.load(pack_path) as d:
        orig, folds, texts = d["real_orig"], d["real_fold"], d["real_texts"]
        images = d["eval_images"]
    eval_fold, truths = folds[orig], [str(t) for t in texts[orig]]
    readings = [""] * len(truths)
    for k in range(1, FOLDS + 1):
        interp = interpreter_class()(model_path=pattern.format(k=k), num_threads=1)
        interp.allocate_tensors()
        inp = interp.get_input_details()[0]
        chars_out = next(o for o in interp.get_output_details() if len(o["shape"]) == 3)
        for j in np.flatnonzero(eval_fold == k):
            interp.set_tensor(inp["index"], images[j].astype(np.float32)[None, ..., None] / 255.0)
            interp.invoke()
            readings[j] = greedy(interp.get_tensor(chars_out["index"]))[0]
    return {**fold_figures(truths, readings, eval_fold), "readings": readings}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(processName)s %(message)s", stream=sys.stdout)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--out", required=True)
    p.add_argument("--data", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
    p.add_argument("--scenes-npz", required=True, help="a cached scenes_train_30_1_s1.npz of alpr-train (.cache/ocr/)")
    r = sub.add_parser("run")
    r.add_argument("--pack", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--work", default="/tmp/sweep_work")
    r.add_argument("--configs", type=lambda s: s.split(","), default=list(CONFIGS))
    r.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1])
    r.add_argument("--procs", type=int, default=3)
    r.add_argument("--deadline", type=float, default=420.0, help="seconds before unfinished groups are stopped")
    r.add_argument("--synth-count", type=int, default=30000)
    r.add_argument("--twin-mode", choices=("vmap", "unroll"), default="vmap",
                   help="the 4 twins as one vmapped step, or as 4 unrolled ones in one jitted step")
    r.add_argument("--synth-workers", type=int, default=os.cpu_count() or 2)
    r.add_argument("--steps", type=int, default=None, help="override every configuration's steps (smoke tests)")
    t = sub.add_parser("score-tflite", help="the sweep's metric for CPU-trained fold twins")
    t.add_argument("--pack", required=True)
    t.add_argument("--pattern", required=True, help="float .tflite path with {k} for the fold")
    t.add_argument("--out", help="write the result (with readings) here as JSON")
    s = sub.add_parser("summarise")
    s.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.cmd == "pack":
        pack(Path(args.out), Path(args.data), Path(args.scenes_npz))
    elif args.cmd == "run":
        run(args)
    elif args.cmd == "score-tflite":
        result = score_tflite(Path(args.pack), args.pattern)
        log.info("%s: %s %s", args.pattern, result["all"], {k: v["exact"] for k, v in result["folds"].items()})
        if args.out:
            Path(args.out).write_text(json.dumps(result) + "\n")
    else:
        summarise(Path(args.out))


if __name__ == "__main__":
    main()
