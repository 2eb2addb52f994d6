"""Shared helpers for the training pipeline: paths, caching, TFLite export and manifests."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = PACKAGE_DIR.parent
MODELS_DIR = PACKAGE_DIR / "models"
DEFAULT_DATA = REPO_DIR.parent / "shared" / "data"
# The subfolder of the cache that a quick run generates into (data, models, results, staging):
# its artefacts share names with a full run's (the float models' above all), and a quick run
# must never replace what a full run left there for a later export, report or run.
QUICK_FOLDER = "quick"
# The real data folders the pipeline trains and measures on (../shared/data/README.md).
DATA_FOLDERS = ("us-plates", "eu-scenes", "br-scenes")


class TrainingError(RuntimeError):
    """A training run cannot go on or cannot hand over its models; the message says why."""


@dataclass(frozen=True)
class Paths:
    """Where the pipeline reads real data, caches generated data and writes models.

    `real_data` False (`alpr-train --synthetic-only`) keeps the real folders out of training and
    evaluation even where `data` has them. `quick` (`alpr-train --quick`) moves everything the
    run generates into the cache's `quick/` subfolder (`work`); `cache` stays the root, where
    `final/` holds the figures measured on the installed models.
    """

    data: Path
    cache: Path
    models: Path
    real_data: bool = True
    quick: bool = False

    def real(self, name: str) -> Path | None:
        """The real data folder `name` when it is to be used and exists, else None."""
        folder = self.data / name
        return folder if self.real_data and folder.is_dir() else None

    @property
    def work(self) -> Path:
        """The folder this run generates into: the cache, or its `quick/` subfolder for a quick run."""
        return self.cache / QUICK_FOLDER if self.quick else self.cache

    @property
    def data_key(self) -> str:
        """Part of the cache key of everything made from the real data: "" for the default data
        folder (so the cache names of the shipped runs stay as they were) or without real data,
        else "data" and 8 hex digits of the folder's resolved path.

        Without it a run on another --data folder loaded the arrays cached from the default one
        (or left its own for a later default run to load), silently training on the wrong data.
        """
        if not self.real_data or self.data.resolve() == DEFAULT_DATA.resolve():
            return ""
        return "data" + hashlib.sha256(str(self.data.resolve()).encode()).hexdigest()[:8]

    def float_models(self, variant: str = "") -> Path:
        """The folder for a training's float TFLite and Keras models (not shipped, kept for
        inspection and fine-tuning): `<work>/models`, or `<work>/models/<variant>` for a
        configuration other than the shipped one (`cli.variant`), so that no run replaces the
        float model of another configuration, nor measures another run's in its own place."""
        return self.work / "models" / variant if variant else self.work / "models"

    @classmethod
    def default(cls, data: Path | None = None, cache: Path | None = None, models: Path | None = None) -> Paths:
        """The folders of a run: the arguments given, else $ALPR_DATA / $ALPR_CACHE, else the defaults."""
        data = data or Path(os.environ.get("ALPR_DATA", DEFAULT_DATA))
        cache = cache or Path(os.environ.get("ALPR_CACHE", REPO_DIR / ".cache"))
        return cls(Path(data), Path(cache), Path(models or MODELS_DIR))


class Timer:
    """Wall-clock stage timer whose results end up in the report."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        start = time.monotonic()
        result = fn()
        self.stages[name] = round(time.monotonic() - start, 1)
        log.info("stage %s took %.1f s", name, self.stages[name])
        return result


def cached_arrays(path: Path, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Load `path` (.npz) if present, else build, save and return the arrays."""
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            log.info("using cached %s", path)
            return {k: data[k] for k in data.files}
    arrays = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_for(path)
    try:
        with tmp.open("wb") as out:
            np.savez(out, **arrays)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return arrays


def temp_for(dest: Path) -> Path:
    """A temporary name beside `dest` of this writer's own (process id and a random part), to
    build `dest` under before renaming it into place; temporaries of `dest` left by processes no
    longer running (a training stopped by a signal) are removed first.

    Runs sharing a cache (cross-validation twins, two at a time) build the same entry at once,
    and a fixed temporary name had each truncate, or rename away, the other's half-written file.
    """
    prefix, suffix = f".{dest.name}.", ".tmp"
    for old in dest.parent.glob(f"{prefix}*{suffix}"):
        pid = old.name[len(prefix):-len(suffix)].split("-")[0]
        if pid.isdigit() and int(pid) > 0 and not _running(int(pid)):
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
    return dest.parent / f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def set_threads(threads: int) -> None:
    """Pin TensorFlow's thread pools (the training machine is shared)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(max(1, threads // 2))


def export_tflite(model: Any, representative: Iterable[np.ndarray] | None) -> bytes:
    """Convert a Keras model: float32 when `representative` is None, else full-integer int8."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if representative is not None:
        samples = list(representative)

        def gen() -> Iterable[list[np.ndarray]]:
            for sample in samples:
                yield [sample.astype(np.float32)[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = gen
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    # The converter prints the exported model's signature to stdout, where `alpr-train` prints
    # its one JSON result; the log stream is the place for it.
    with contextlib.redirect_stdout(sys.stderr):
        return converter.convert()


def write_model(path: Path, content: bytes, manifest: dict[str, Any]) -> None:
    """Write `X.tflite` and its manifest `X.json` with the file's sha256 filled in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    manifest = dict(manifest)
    manifest["sha256"] = hashlib.sha256(content).hexdigest()
    path.with_suffix(".json").write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    log.info("wrote %s (%d bytes)", path, len(content))


def is_shipped(models: Path) -> bool:
    """Whether `models` is the shipped models folder (`inference/models/`)."""
    return models.resolve() == MODELS_DIR.resolve()


def new_staging(cache: Path, what: str) -> Path:
    """A fresh, empty folder under `cache`/staging for one run's models.

    One per run (not one fixed folder), so that runs sharing a cache, such as cross-validation
    twins trained two at a time, never take or delete each other's files.
    """
    root = cache / "staging"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{what}-", dir=root))


def promote(staging: Path, models: Path, names: Iterable[str]) -> list[Path]:
    """Install `NAME.tflite` and `NAME.json` of every name from `staging` into `models`, all or none.

    Every file is checked first (present, manifest hash matching its model) and copied beside
    its destination under a temporary name, so that a problem leaves `models` as it was; only
    then are the copies renamed over the old files, which leaves no window in which one model
    is new and the other old beyond those renames.
    """
    files: list[Path] = []
    problems: list[str] = []
    for name in names:
        model, manifest = staging / f"{name}.tflite", staging / f"{name}.json"
        if not model.is_file() or not manifest.is_file():
            problems.append(f"{name}: {model.name} or {manifest.name} missing")
            continue
        try:
            recorded = json.loads(manifest.read_text(encoding="utf-8")).get("sha256")
        except (OSError, ValueError) as exc:
            problems.append(f"{manifest.name}: unreadable ({exc})")
            continue
        if recorded != hashlib.sha256(model.read_bytes()).hexdigest():
            problems.append(f"{manifest.name}: sha256 does not match {model.name}")
            continue
        files += [model, manifest]
    if problems:
        raise TrainingError(f"{staging}: {'; '.join(problems)}; nothing was replaced in {models}")
    models.mkdir(parents=True, exist_ok=True)
    copies: list[tuple[Path, Path]] = []
    try:
        for src in files:
            tmp = models / f".{src.name}.new"
            copies.append((tmp, models / src.name))
            shutil.copyfile(src, tmp)  # a copy, not a rename: the cache may be on another file system
    except OSError as exc:
        for tmp, _ in copies:
            tmp.unlink(missing_ok=True)
        raise TrainingError(f"cannot copy the new models into {models}: {exc}; nothing was replaced") from exc
    for tmp, dest in copies:
        os.replace(tmp, dest)
        log.info("installed %s", dest)
    return [dest for _, dest in copies]
