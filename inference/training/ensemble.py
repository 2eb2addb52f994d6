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

from inference.training import train_ocr
from inference.training.common import Paths, Timer
from inference.training.ocr_data import OCR_H, OCR_W

log = logging.getLogger(__name__)

MODEL_NAME = train_ocr.MODEL_NAME


@dataclass(frozen=True)
class Member:
    """How one member of the OCR pair is trained (`alpr-train ocr` settings)."""

    seed: int  # its own seed; `alpr-train all --seed S` gives member i seed S + i instead
    dropout: tuple[float, float]
    steps: int
    precision: str = "float32"  # training arithmetic (`train_ocr.build_model`)


# The OCR that `alpr-train all` makes, shipped as P18 (inference/models/NOTES.md): two networks
# of configuration R, seeds 5 and 6, each 9,000 steps, trained in mixed bfloat16 with
# sparse-label CTC (E9b's configuration). Members that short are what lets two of them and the
# detector fit `alpr-train all`'s 60 minutes on two cores (54.9 min measured for P18); the design
# was adopted on the mean of three pairs in cross-validation, 555 of 585 crops (E9 556, E9b 551,
# E78 558), against the single R's 547.5.
MEMBERS = (Member(seed=5, dropout=(0.2, 0.3), steps=9000, precision="bfloat16"),
           Member(seed=6, dropout=(0.2, 0.3), steps=9000, precision="bfloat16"))


def member_seed(index: int, base: int | None) -> int:
    """Member `index`'s seed: its own, or `base + index` when a run asks for another seed."""
    return MEMBERS[index].seed if base is None else base + index


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


def combined_model(member_files: list[Path]) -> Any:
    """Load the members' `.keras` files and `combine` them (the part that needs TensorFlow)."""
    import keras

    return combine([keras.models.load_model(p, compile=False) for p in member_files])


def export_ensemble(paths: Paths, member_files: list[Path], seed: int = train_ocr.SEED, holdout: str | None = None,
                    data_paths: Paths | None = None, synth_count: int = 30000, real_copies: int = 30,
                    scene_copies: int = train_ocr.SCENE_COPIES, variant: str = "",
                    records: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Load the members' `.keras` files, combine them and export float + int8 like `alpr-train ocr`.

    `data_paths` names the cache whose prepared sets (same `seed`, `synth_count`, `real_copies`,
    `scene_copies` as a member's training) give the int8 representative data and the val/test
    figures. `variant` places the combined Keras and float models in the cache
    (`Paths.float_models`); `records` (one per member, optional) give the manifest each member's
    "file" label and training "hyper" where the caller knows them better than `_member_record`."""
    missing = [str(p) for p in member_files if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"ensemble member not found: {', '.join(missing)} "
                                f"(each is a trained OCR's {MODEL_NAME}.keras)")
    timer = Timer()
    # The representative data for int8 and the val/test figures come from the same prepared
    # sets as the members' own training (the cached arrays, so nothing is regenerated).
    sets = timer.run("ocr_data", lambda: train_ocr.datasets(data_paths or paths, synth_count, real_copies, scene_copies,
                                                            seed, holdout))
    model = combined_model([Path(p) for p in member_files])
    given = records or [{} for _ in member_files]
    hyper: dict[str, Any] = {"members": [_member_record(Path(p), extra) for p, extra in zip(member_files, given)],
                             "seed": seed}
    if holdout:
        hyper["holdout"] = holdout
    log.info("ensemble of %d members: %s", len(member_files), ", ".join(map(str, member_files)))
    return train_ocr.export(paths, model, sets, timer, hyper, variant, pipeline="alpr-train ensemble")


def _member_record(keras_path: Path, given: dict[str, Any]) -> dict[str, Any]:
    """What the manifest keeps of a member: its file (a label) and the file's hash and, when
    known, the training run's settings (so the ensemble can be reproduced member by member).
    `given` overrides the file label and the settings found beside the file."""
    record: dict[str, Any] = {"file": f"{keras_path.parent.parent.name}/{keras_path.parent.name}/{keras_path.name}",
                              "sha256": hashlib.sha256(keras_path.read_bytes()).hexdigest()}
    hyper = _training_hyper(keras_path)
    if hyper is not None:
        record["hyper"] = hyper
    record.update({k: v for k, v in given.items() if v is not None})
    return record


def _training_hyper(keras_path: Path) -> dict[str, Any] | None:
    """The training settings of the run that left `keras_path`, from its result file where one is
    found: beside it (a staged member), or in the cache it was saved to (`train_ocr.json` for
    `<cache>/models/`, `train_ocr-VARIANT.json` for `<cache>/models/VARIANT/`)."""
    folder = keras_path.parent
    candidates = [folder / "train_ocr.json"]
    if folder.name == "models":
        candidates.append(folder.parent / "train_ocr.json")
    elif folder.parent.name == "models":
        candidates.append(folder.parent.parent / f"train_ocr-{folder.name}.json")
    for run in candidates:
        if not run.is_file():
            continue
        try:
            hyper = json.loads(run.read_text(encoding="utf-8"))["ocr"]["training"]["hyper"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: no training settings to record for %s (%s)", run, keras_path, exc)
            continue
        if isinstance(hyper, dict):
            return hyper
    return None
