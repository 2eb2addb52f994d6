"""Several trained OCR networks exported as one int8 file that `PlateReader` reads as an ensemble.

Each member keeps its own CTC output (the reader decodes them apart and fuses their candidates,
since members need not align frame by frame); their state softmaxes are averaged in the graph.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.training.common import Paths, Timer
from inference.training.ocr_data import OCR_H, OCR_W
from inference.training.train_ocr import MODEL_NAME, SCENE_COPIES, datasets, export

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Member:
    """How one member of the OCR ensemble is trained (`alpr-train ocr` settings)."""

    seed: int  # its own seed; `alpr-train all --seed S` gives member i seed S + i instead
    dropout: tuple[float, float]
    steps: int
    precision: str = "float32"  # training arithmetic (`train_ocr.build_model`)


# The shipped OCR is E9 (inference/models/NOTES.md): two networks of configuration R, seeds 5 and
# 6, each 9,000 steps. Members that short are what lets two of them and the detector fit
# `alpr-train all`'s 60 minutes on two cores; in cross-validation the pair read 556 of 585 where
# its members read 543 and 549.
MEMBERS = (Member(seed=5, dropout=(0.2, 0.3), steps=9000, precision="bfloat16"),
           Member(seed=6, dropout=(0.2, 0.3), steps=9000, precision="bfloat16"))


def member_seed(index: int, base: int | None) -> int:
    """Member `index`'s seed: its own, or `base + index` when a run asks for another seed."""
    return MEMBERS[index].seed if base is None else base + index


def member_paths(paths: Paths, index: int) -> Paths:
    """Where member `index` trains: a cache folder of its own, so that members trained side by side
    never write the same `.keras` or result file."""
    folder = paths.cache / "ocr_members" / f"m{index}"
    return Paths(paths.data, folder, folder / "out")


def member_keras(paths: Paths, index: int) -> Path:
    """The trained member's Keras file, which `export_ensemble` combines."""
    return member_paths(paths, index).cache / "models" / f"{MODEL_NAME}.keras"


def combine(members: list[Any]) -> Any:
    """One Keras model: the members' character outputs side by side and their mean state output."""
    import keras
    from keras import layers

    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least two members, got {len(members)}")
    inp = keras.Input((OCR_H, OCR_W, 1), name="image")
    chars, regions = [], []
    for i, member in enumerate(members):
        # a wrapper per member so that members built by the same code get distinct names
        wrapped = keras.Model(member.inputs, member.outputs, name=f"member_{i}")
        member_chars, member_region = wrapped(inp)
        chars.append(member_chars)
        regions.append(member_region)
    region = layers.Average(name="region")(regions)
    return keras.Model(inp, [*chars, region], name=MODEL_NAME)


def export_ensemble(paths: Paths, member_files: list[Path], seed: int = 0, holdout: str | None = None,
                    data_paths: Paths | None = None, synth_count: int = 30000, real_copies: int = 30) -> dict[str, Any]:
    """Load the members' `.keras` files, combine them and export float + int8 like `alpr-train ocr`.

    `data_paths` names the cache whose prepared sets (same `seed`, `synth_count`, `real_copies` as a
    member's training) give the int8 representative data and the val/test figures."""
    import keras

    missing = [str(p) for p in member_files if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"ensemble member not found: {', '.join(missing)} (each is a training cache's models/{MODEL_NAME}.keras)")
    timer = Timer()
    # The representative data for int8 and the val/test figures come from the same prepared
    # sets as the members' own training (the cached arrays, so nothing is regenerated).
    sets = timer.run("ocr_data", lambda: datasets(data_paths or paths, synth_count, real_copies, SCENE_COPIES, seed, holdout))
    members = [keras.models.load_model(p, compile=False) for p in member_files]
    model = combine(members)
    hyper: dict[str, Any] = {"members": [_member_record(Path(p)) for p in member_files], "seed": seed}
    if holdout:
        hyper["holdout"] = holdout
    log.info("ensemble of %d members: %s", len(members), ", ".join(map(str, member_files)))
    return export(paths, model, sets, timer, hyper, pipeline="alpr-train ensemble")


def _member_record(keras_path: Path) -> dict[str, Any]:
    """What the manifest keeps of a member: its file's hash and, when its training cache still
    has it, the training run's settings (so the ensemble can be reproduced member by member)."""
    record: dict[str, Any] = {"file": f"{keras_path.parent.parent.name}/{keras_path.parent.name}/{keras_path.name}",
                              "sha256": hashlib.sha256(keras_path.read_bytes()).hexdigest()}
    run = keras_path.parent.parent / "train_ocr.json"
    if run.is_file():
        record["hyper"] = json.loads(run.read_text(encoding="utf-8"))["ocr"]["training"]["hyper"]
    return record
