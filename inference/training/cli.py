"""`alpr-train`: reproduce the shipped models (needs the `train` extra: tensorflow-cpu).

    alpr-train all          # the OCR's two members and the detector side by side, then the OCR
                            # pair in one file; writes inference/models/ and the REPORT figures
    alpr-train ocr|detector # one model (`ocr`: one network, not the pair)
    alpr-train ensemble --members A.keras B.keras  # trained OCRs as one file the reader fuses
    alpr-train report       # rewrite inference/models/REPORT.md from the manifests
    alpr-train all --quick  # tiny end-to-end check, into <cache>/quick-models (never the shipped folder)

A training run writes its models into a staging folder under the cache and moves them into
--models only when every model of the run has been trained, exported and measured, so a failed
run leaves the models it would have replaced as they were.

Nothing a run caches can be taken for, or replace, what a run of another configuration cached:
a quick run generates everything under <cache>/quick/; the float and Keras models of a
configuration other than the shipped one go under <cache>/models/<variant>/ (`variant`); arrays
made from another --data folder than the default carry it in their names (`Paths.data_key`).

The shipped configuration is `alpr-train all` with its defaults: the detector and the OCR pair
(`ensemble.MEMBERS`). The pair's combined models go where the shipped OCR's go, each member's
under <cache>/models/member<i>/ (`<variant>-member<i>` for another configuration), and a single
network of `alpr-train ocr` is never the shipped OCR: its variant starts with "single".
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from inference.training import ensemble, train_detector, train_ocr
from inference.training.common import (
    DATA_FOLDERS,
    MODELS_DIR,
    Paths,
    TrainingError,
    is_shipped,
    new_staging,
    promote,
)
from inference.training.ensemble import MEMBERS, member_seed

log = logging.getLogger("alpr-train")

# The models each command trains (manifest / file names).
MODELS_OF = {
    "all": (train_ocr.MODEL_NAME, train_detector.MODEL_NAME),
    "ocr": (train_ocr.MODEL_NAME,),
    "detector": (train_detector.MODEL_NAME,),
    "ensemble": (train_ocr.MODEL_NAME,),
}
INSTALL_HINT = ".venv/bin/pip install -e '.[train]'"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alpr-train", description="train the plate detector and OCR")
    parser.add_argument("what", choices=("all", "ocr", "detector", "ensemble", "report"),
                        help="all: train both models (the detector and the OCR pair's two networks side by side, then "
                             "the pair combined into one OCR file) and rewrite REPORT.md; ocr / detector: train one "
                             "(ocr: one network); ensemble: combine trained OCR networks (--members) into one file; "
                             "report: rewrite REPORT.md in --models from its manifests and the figures in <cache>/final")
    parser.add_argument("--data", type=Path, default=None, help="real data folder (default ../shared/data or $ALPR_DATA)")
    parser.add_argument("--cache", type=Path, default=None, help="generated-data cache (default .cache/)")
    parser.add_argument("--models", type=Path, default=None,
                        help="models folder (default inference/models/, the shipped models; with --quick <cache>/quick-models)")
    parser.add_argument("--threads", type=int, default=2,
                        help="TensorFlow threads (default 2; `all` gives each of its three trainings half)")
    parser.add_argument("--sequential", action="store_true",
                        help="all: train the OCR pair's networks, then the detector, each with every thread "
                             "(default: side by side)")
    parser.add_argument("--seed", type=int, default=None,
                        help="random seed (default: each model's own: the OCR pair's members "
                             f"{', '.join(str(m.seed) for m in MEMBERS)} (with --seed S: S, S+1), `ocr` {train_ocr.SEED}, "
                             f"`ensemble` {train_ocr.SEED} (the prepared sets used), detector {train_detector.SEED})")
    parser.add_argument("--ocr-steps", type=int, default=None,
                        help=f"OCR training steps (default: `all`, each member of the pair: {MEMBERS[0].steps}; "
                             f"`ocr`: {train_ocr.STEPS})")
    parser.add_argument("--ocr-scene-copies", type=int, default=train_ocr.SCENE_COPIES,
                        help="augmented cuts of each train eu/br scene plate added to the OCR's real crops "
                             f"(shipped model: {train_ocr.SCENE_COPIES}; 0 = US crops only)")
    parser.add_argument("--ocr-dropout", type=_dropout, default=None, metavar="SPATIAL,SEQ",
                        help="OCR dropout: spatial on the feature map, then on the sequence and state features "
                             f"(default: `all`, each member's: {','.join(map(str, MEMBERS[0].dropout))}; "
                             f"`ocr`: {','.join(map(str, train_ocr.DROPOUT))})")
    parser.add_argument("--ocr-precision", choices=train_ocr.PRECISIONS, default=None,
                        help=f"OCR training arithmetic (default: `all`, each member's: {MEMBERS[0].precision}; "
                             f"`ocr`: {train_ocr.PRECISION}); bfloat16 is faster on CPUs with AVX512-BF16 or AMX, "
                             "and the exported files are float32 / int8 either way")
    parser.add_argument("--ocr-holdout", type=_holdout, default=None, metavar="K/N",
                        help="cross-validation: train the OCR on train + val but the K-th of N folds and measure "
                             "that fold in val's place (`ocr`, or `ensemble` for twins; never for the shipped model; "
                             "needs --models elsewhere)")
    parser.add_argument("--members", type=Path, nargs="+", default=[], metavar="KERAS",
                        help="ensemble: the trained OCRs to combine, each a training's <cache>/models[/VARIANT]/plate_ocr.keras")
    parser.add_argument("--data-cache", type=Path, default=None,
                        help="ensemble: the cache whose prepared OCR sets (same --seed and --ocr-holdout as a member's "
                             "training) give the int8 calibration data and val/test figures (default --cache)")
    parser.add_argument("--det-steps", type=int, default=train_detector.STEPS,
                        help=f"detector training steps (shipped model: {train_detector.STEPS})")
    parser.add_argument("--quick", action="store_true",
                        help="tiny run (about a minute on 2 cores) to check the pipeline end to end; its models go to "
                             "<cache>/quick-models unless --models says elsewhere, never to the shipped folder; "
                             "uses the real data where present and runs without it")
    parser.add_argument("--synthetic-only", action="store_true",
                        help="train without the real data (synthetic plates and scenes only, nothing real to measure "
                             "on); without it a training run stops when the real data folders are missing")
    # Internal: a child of the side-by-side `all` run, whose --models is the parent's staging
    # folder; it writes there directly and the parent installs the pair.
    parser.add_argument("--staged", action="store_true", help=argparse.SUPPRESS)
    # Internal, with `ocr --staged`: train member I of the OCR pair (`ensemble.MEMBERS`) for an
    # `all` run, which combines the members once every one of them is trained.
    parser.add_argument("--member", type=int, default=None, metavar="I", help=argparse.SUPPRESS)
    return parser


def _dropout(text: str) -> tuple[float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected two rates separated by a comma, e.g. 0.1,0.2") from None
    if len(values) != 2 or not all(0.0 <= v < 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected two rates from 0 up to 1, e.g. 0.1,0.2")
    return values[0], values[1]


def ocr_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options `train_ocr.train` gets from `args` for one network of `alpr-train ocr` (all
    but the threads and the variant)."""
    # no --seed: the seed of configuration R's network
    return _train_options(args, train_ocr.SEED if args.seed is None else args.seed, train_ocr.DROPOUT,
                          train_ocr.PRECISION, train_ocr.STEPS)


def member_options(args: argparse.Namespace, index: int) -> dict[str, Any]:
    """The options `train_ocr.train` gets from `args` for member `index` of the OCR pair: the
    member's own (`ensemble.MEMBERS`) where `args` leaves them to it."""
    member = MEMBERS[index]
    return _train_options(args, member_seed(index, args.seed), member.dropout, member.precision, member.steps)


def _train_options(args: argparse.Namespace, seed: int, dropout: Any, precision: str, steps: int) -> dict[str, Any]:
    """`train_ocr.train`'s options: the network's own dropout, precision and steps unless `args`
    sets them; `--quick`'s few steps on little data."""
    fixed: dict[str, Any] = {"seed": seed, "holdout": args.ocr_holdout,
                             "dropout": dropout if args.ocr_dropout is None else args.ocr_dropout,
                             "precision": args.ocr_precision or precision}
    if args.quick:
        return {**fixed, "steps": 20, "synth_count": 500, "real_copies": 1}
    return {**fixed, "steps": steps if args.ocr_steps is None else args.ocr_steps, "scene_copies": args.ocr_scene_copies}


def pair_options(args: argparse.Namespace) -> dict[str, Any]:
    """The OCR pair's options for naming its variant: each key's value when every member has the
    same, else the members' values in order (the seeds: 5, 6 as shipped)."""
    members = [member_options(args, i) for i in range(len(MEMBERS))]
    return {key: _same_or_each([m[key] for m in members]) for key in members[0]}


def _same_or_each(values: list[Any]) -> Any:
    """The one value when all of `values` are equal, else all of them as a tuple."""
    return values[0] if all(v == values[0] for v in values) else tuple(values)


def ensemble_options(args: argparse.Namespace) -> dict[str, Any]:
    """What an `alpr-train ensemble` run's OCR is made of: its members' files (by content), the
    prepared sets that calibrate and measure it, and where they are cached."""
    options: dict[str, Any] = {"members": _digest(*(p.read_bytes() for p in args.members)),
                               "seed": train_ocr.SEED if args.seed is None else args.seed,
                               "holdout": args.ocr_holdout, "scene_copies": args.ocr_scene_copies,
                               "data_cache": _digest(str(args.data_cache.resolve()).encode()) if args.data_cache else ""}
    if args.quick:
        return {**options, "synth_count": 500, "real_copies": 1}
    return options


def _digest(*parts: bytes) -> str:
    """8 hex digits of the parts' sha256 (of each part's sha256 in order); "" for no parts."""
    if not parts:
        return ""
    return hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).hexdigest()[:8]


def the_ocr_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options that make the OCR of the run `args` describes: the pair's for `all` and its
    members, one network's for `ocr`, the combined members' for `ensemble`."""
    if args.what == "ensemble":
        return ensemble_options(args)
    if args.what == "all" or args.member is not None:
        return pair_options(args)
    return ocr_options(args)


def detector_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options `train_detector.train` gets from `args` (all but the threads and the variant)."""
    seed = train_detector.SEED if args.seed is None else args.seed
    if args.quick:
        return {"seed": seed, "steps": 20, "synth_count": 100}
    return {"seed": seed, "steps": args.det_steps}


OPTIONS_OF = {train_ocr.MODEL_NAME: the_ocr_options, train_detector.MODEL_NAME: detector_options}
# The command-line options that are not in a variant as training options: those that do not
# change what is trained, --quick (which moves the whole run to <cache>/quick/ instead) and
# --data (in it as Paths.data_key); a test checks that every option is either here or changes
# the variant of a model it applies to (--member: as the "member<i>" part).
NOT_IN_VARIANT = frozenset({"what", "data", "cache", "models", "threads", "sequential", "quick", "staged"})


def variant(args: argparse.Namespace, paths: Paths, what: str) -> str:
    """Name of the configuration `args` trains `what` (a command or model name) with, among runs
    of its kind (quick or not): "" for the shipped one, else its differences, e.g. "seed3_4" (the
    pair's members' seeds), "single-holdout2of4-dropout0.1_0.2" (one network of `alpr-train ocr`),
    "precisionfloat32", "synthetic", "data1a2b3c4d", "members1a2b3c4d" (`alpr-train ensemble`);
    member i of the pair adds "member<i>" to the pair's name.

    The float and Keras models of a configuration go to <cache>/models/<variant>/ and the run's
    result to train_WHAT-<variant>.json: with one folder for all, a twin, another seed or a
    synthetic-only run replaced the float model a full run left there, and twins trained side by
    side could measure each other's float model as their own.
    """
    member = [] if args.member is None else ["--member", str(args.member)]
    defaults = build_parser().parse_args([args.what, *member] + (["--quick"] if args.quick else []))
    names = MODELS_OF.get(what, (what,))
    parts: list[str] = []
    for name in names:
        if name == train_ocr.MODEL_NAME and args.what == "ocr" and args.member is None:
            parts.append("single")  # one network: never the shipped OCR, which is the pair
        options, shipped = OPTIONS_OF[name](args), OPTIONS_OF[name](defaults)
        parts += [_variant_part(key, value) for key, value in options.items() if value != shipped.get(key)]
    if not paths.real_data:
        parts.append("synthetic")
    if paths.data_key:
        parts.append(paths.data_key)
    if args.member is not None and train_ocr.MODEL_NAME in names:
        parts.append(f"member{args.member}")
    return "-".join(dict.fromkeys(parts))  # `all`: an option of both models (--seed) once


def _variant_part(key: str, value: Any) -> str:
    return key.replace("_", "") + "_".join(_flat(value))


def _flat(value: Any) -> list[str]:
    """`value` as text, a tuple or list (of tuples: the members' dropouts) item by item."""
    if isinstance(value, (tuple, list)):
        return [text for item in value for text in _flat(item)]
    return [str(value)]


def _holdout(text: str) -> str:
    parts = text.split("/")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or not 1 <= int(parts[0]) <= int(parts[1]) or int(parts[1]) < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: expected K/N with 1 <= K <= N and N >= 2, e.g. 2/4")
    return f"{int(parts[0])}of{int(parts[1])}"


def resolve_paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Paths:
    """The run's folders, after refusing what would harm the shipped models or train on no data.

    --quick never writes the shipped folder (its default is <cache>/quick-models); a training run
    without --quick or --synthetic-only stops, naming them, when the real data folders it trains
    on are missing (a mistyped --data used to train on synthetic data alone without a word).
    """
    paths = Paths.default(args.data, args.cache, args.models)
    if args.quick:
        # everything a quick run generates goes under <cache>/quick/ (Paths.work), out of the
        # way of what a full run cached
        paths = replace(paths, quick=True)
        if args.models is None:
            paths = replace(paths, models=paths.cache / "quick-models")
        elif is_shipped(paths.models):
            parser.error(f"--quick: give --models another folder than {MODELS_DIR} (a quick run's models are "
                         "not fit to ship), or leave it out for <cache>/quick-models")
    if args.member is not None:
        if args.what != "ocr" or not args.staged:
            parser.error("--member is internal to `alpr-train all` (with `ocr --staged`)")
        if not 0 <= args.member < len(MEMBERS):
            parser.error(f"--member {args.member}: the OCR pair has members 0 to {len(MEMBERS) - 1}")
    if (args.members or args.data_cache) and args.what != "ensemble":
        parser.error("--members / --data-cache: only with `alpr-train ensemble`")
    if args.what == "ensemble":
        if len(args.members) < 2:
            parser.error("ensemble: give two or more --members (trained OCRs' .keras files)")
        missing = [str(m) for m in args.members if not m.is_file()]
        if missing:
            parser.error(f"ensemble: no such member file: {', '.join(missing)} (a training cache's "
                         f"models[/VARIANT]/{train_ocr.MODEL_NAME}.keras)")
    if args.ocr_holdout:
        if args.what not in ("ocr", "ensemble"):
            parser.error("--ocr-holdout: only with `alpr-train ocr` or `ensemble`")
        if is_shipped(paths.models):
            parser.error(f"--ocr-holdout: give --models another folder than {MODELS_DIR} (the shipped models use the fixed split)")
        if args.synthetic_only:
            parser.error("--ocr-holdout: not with --synthetic-only (the folds are of the real us-plates crops)")
    if args.staged and is_shipped(paths.models):
        parser.error("--staged is internal to `alpr-train all`: never with the shipped models folder")
    if args.what == "report":
        return paths
    if args.synthetic_only:
        return replace(paths, real_data=False)
    if not args.quick:
        missing = missing_data(paths.data, args.what, args.ocr_scene_copies)
        if missing:
            parser.error(f"real data folder {paths.data} (--data, else $ALPR_DATA, else ../shared/data): "
                         f"{'not found' if not paths.data.is_dir() else 'no ' + ', '.join(missing)} "
                         f"(`alpr-train {args.what}` trains on {', '.join(needed_data(args.what, args.ocr_scene_copies))}); "
                         "give --data the folder that has them, or --synthetic-only to train without real data")
    return paths


def needed_data(what: str, ocr_scene_copies: int = train_ocr.SCENE_COPIES) -> list[str]:
    """The real data folders (with a trailing slash) that `alpr-train WHAT` trains and measures on."""
    if what in ("ocr", "ensemble"):
        # the OCR's real crops are us-plates, plus the eu/br scene plates unless --ocr-scene-copies 0
        names = ("us-plates",) + (train_ocr.SCENE_FOLDERS if ocr_scene_copies > 0 else ())
    else:  # the detector pastes us-plates crops into eu/br scenes and is measured on all three
        names = DATA_FOLDERS
    return [f"{name}/" for name in names]


def missing_data(data: Path, what: str, ocr_scene_copies: int = train_ocr.SCENE_COPIES) -> list[str]:
    """The folders of `needed_data` that `data` lacks."""
    return [name for name in needed_data(what, ocr_scene_copies) if not (data / name).is_dir()]


def require_tensorflow(parser: argparse.ArgumentParser, what: str) -> None:
    """Stop with one clear line, not a traceback from deep in a training, when TensorFlow is missing."""
    try:
        import tensorflow  # noqa: F401  (imported once here only to check it; the trainings import it again)
    except ImportError as exc:
        parser.error(f"`alpr-train {what}` needs TensorFlow, which cannot be imported ({exc}): {INSTALL_HINT}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `alpr-train`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    paths = resolve_paths(parser, args)
    if args.what == "report":
        return _report(parser, paths)
    require_tensorflow(parser, args.what)
    names = MODELS_OF[args.what]
    if is_shipped(paths.models):
        log.warning("this run replaces the shipped %s in %s%s once its training succeeds "
                    "(--models DIR to write elsewhere)", ", ".join(f"{n}.tflite + {n}.json" for n in names),
                    paths.models, " and rewrites REPORT.md" if args.what == "all" else "")
    elif not args.staged:
        log.info("models go to %s", paths.models)
    start = time.monotonic()
    try:
        results = _train(args, paths)
    except TrainingError as exc:
        print(f"alpr-train: error: {exc}", file=sys.stderr)
        return 1
    results["total_seconds"] = round(time.monotonic() - start, 1)
    if args.staged:
        # for the parent only, in its staging folder: a result file in the cache could be
        # another run's by the time the parent reads it
        out = paths.models / f"train_{args.what}.json"
    else:
        run_variant = variant(args, paths, args.what)
        out = paths.work / f"train_{args.what}{'-' + run_variant if run_variant else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if args.what == "all":
        from inference.training.report import measured_section, write_report

        # new models: the measured sections are left out as stale until re-measured (docs/models.md)
        write_report(paths.models, measured_section(paths.cache / "final", paths.models))
    print(json.dumps(results, indent=2))
    return 0


def _report(parser: argparse.ArgumentParser, paths: Paths) -> int:
    """`alpr-train report`: rewrite REPORT.md in the models folder."""
    from inference.training.report import MODEL_NAMES, measured_section, write_report

    if not paths.models.is_dir():
        parser.error(f"report: models folder {paths.models} not found (--models)")
    if not any((paths.models / f"{name}.json").is_file() for name in MODEL_NAMES):
        parser.error(f"report: no {' or '.join(f'{n}.json' for n in MODEL_NAMES)} in {paths.models} to report on")
    print(write_report(paths.models, measured_section(paths.cache / "final", paths.models)))
    return 0


def _train(args: argparse.Namespace, paths: Paths) -> dict[str, Any]:
    """Train what `args.what` names into a staging folder, then install it into `paths.models`.

    A side-by-side child (--staged) is given the parent's staging folder (a member of the OCR
    pair: its own subfolder of it) as --models and writes there directly; the parent combines the
    OCR pair and installs it with the detector once every child has succeeded.
    """
    if args.staged:
        return _train_into(args, paths)
    staging = new_staging(paths.work, args.what)
    try:
        results = _train_into(args, replace(paths, models=staging))
        promote(staging, paths.models, MODELS_OF[args.what])
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # the staged files: installed, or of a failed run
    return results


def _train_into(args: argparse.Namespace, paths: Paths) -> dict[str, Any]:
    """Run the training(s) of `args.what`, writing the models into `paths.models`."""
    if args.what == "all" and not args.sequential:
        return _side_by_side(args, paths)
    results: dict[str, Any] = {}
    if args.what == "ocr" and args.member is not None:
        results["ocr"] = _train_member(args, paths)
    elif args.what == "ocr":
        results["ocr"] = train_ocr.train(paths, threads=args.threads, variant=variant(args, paths, train_ocr.MODEL_NAME),
                                         **ocr_options(args))
    elif args.what == "all":
        results["ocr_members"] = [_train_member(member_args(args, i), _member_staging(paths, i))
                                  for i in range(len(MEMBERS))]
        results["ocr"] = _export_pair(args, paths, results["ocr_members"])
    elif args.what == "ensemble":
        data_paths = replace(paths, cache=args.data_cache) if args.data_cache else None
        sizes = {"synth_count": 500, "real_copies": 1} if args.quick else {}
        results["ocr"] = ensemble.export_ensemble(
            paths, args.members, seed=train_ocr.SEED if args.seed is None else args.seed, holdout=args.ocr_holdout,
            data_paths=data_paths, scene_copies=args.ocr_scene_copies,
            variant=variant(args, paths, train_ocr.MODEL_NAME), **sizes)
    if args.what in ("all", "detector"):
        results["detector"] = train_detector.train(paths, threads=args.threads,
                                                   variant=variant(args, paths, train_detector.MODEL_NAME),
                                                   **detector_options(args))
    return results


def member_args(args: argparse.Namespace, index: int) -> argparse.Namespace:
    """`args` of an `all` run as its member `index`'s training sees them (`ocr --staged --member`)."""
    return argparse.Namespace(**{**vars(args), "what": "ocr", "member": index, "staged": True})


def _member_staging(paths: Paths, index: int) -> Paths:
    """`paths` of member `index`'s training within an `all` run whose staging folder is
    `paths.models`: a subfolder of its own, so that the members' files (the member's own int8
    model, its Keras file, its result) never meet each other's or the installed pair's."""
    return replace(paths, models=paths.models / f"member{index}")


def _train_member(args: argparse.Namespace, paths: Paths) -> dict[str, Any]:
    """Train member `args.member` of the OCR pair into `paths.models` (its staging subfolder),
    with a copy of its Keras file there for the `all` run to combine: the run takes its members
    from its own staging folder, never from a cache folder that another run may write."""
    name = variant(args, paths, train_ocr.MODEL_NAME)
    result = train_ocr.train(paths, threads=args.threads, variant=name, **member_options(args, args.member))
    keras_file = f"{train_ocr.MODEL_NAME}.keras"
    shutil.copyfile(paths.float_models(name) / keras_file, paths.models / keras_file)
    return result


def _export_pair(args: argparse.Namespace, paths: Paths, members: list[dict[str, Any]]) -> dict[str, Any]:
    """Combine the trained members in the staging folder `paths.models` into the pair's OCR file.

    `members` are the members' results; the int8 calibration data and val / test figures come
    from the first member's prepared sets (already cached by its training)."""
    keras_file = f"{train_ocr.MODEL_NAME}.keras"
    records = []
    for i, result in enumerate(members):
        cached = paths.float_models(variant(member_args(args, i), paths, train_ocr.MODEL_NAME)) / keras_file
        records.append({"file": str(cached.relative_to(paths.cache)),
                        "hyper": result.get("training", {}).get("hyper"),
                        # the members' own stages (data, training): the report's reproduction time
                        "stage_seconds": result.get("training", {}).get("stage_seconds")})
    first = member_options(args, 0)
    data = {key: first[key] for key in ("seed", "holdout", "synth_count", "real_copies", "scene_copies") if key in first}
    return ensemble.export_ensemble(paths, [_member_staging(paths, i).models / keras_file for i in range(len(MEMBERS))],
                                    variant=variant(args, paths, train_ocr.MODEL_NAME), records=records, **data)


def _side_by_side(args: argparse.Namespace, paths: Paths) -> dict[str, Any]:
    """Train the OCR pair's members and the detector in separate processes at once, one thread
    each (half of `--threads`), then combine the members into the OCR file.

    None of the small networks keeps two cores busy with its small convolutions: on the 2-core
    reference machine the E9b pair and the detector, three one-thread processes, took 51.4
    minutes from an empty cache (inference/models/NOTES.md, E9b).
    """
    threads = max(1, args.threads // 2)
    # --models is this run's staging folder: the children write there (--staged), each member into
    # its own subfolder, their result files included, and _train installs the pair only once all
    # have finished and the members are combined. --cache is the root: a quick child finds its
    # quick/ folder under it as this run did.
    common = (["--data", str(paths.data), "--cache", str(paths.cache), "--staged",
               "--threads", str(threads)] + ([] if args.seed is None else ["--seed", str(args.seed)])
              + (["--quick"] if args.quick else []) + (["--synthetic-only"] if args.synthetic_only else []))
    # the OCR options the run was given; a member takes its own for those it was not
    given = (["--ocr-scene-copies", str(args.ocr_scene_copies)]
             + ([] if args.ocr_steps is None else ["--ocr-steps", str(args.ocr_steps)])
             + ([] if args.ocr_dropout is None else ["--ocr-dropout", ",".join(map(str, args.ocr_dropout))])
             + ([] if args.ocr_precision is None else ["--ocr-precision", args.ocr_precision]))
    jobs: dict[str, tuple[list[str], Path]] = {
        "detector": (["detector", *common, "--models", str(paths.models), "--det-steps", str(args.det_steps)],
                     paths.models / "train_detector.json"),
    }
    for i in range(len(MEMBERS)):
        staged = _member_staging(paths, i).models
        jobs[f"ocr member {i}"] = (["ocr", *common, "--models", str(staged), "--member", str(i), *given],
                                   staged / "train_ocr.json")
    # Children log to our stderr; their result JSON is read from the files they write, so their
    # stdout is dropped and ours stays one JSON document.
    procs = {what: subprocess.Popen([sys.executable, "-m", "inference.training.cli", *argv], stdout=subprocess.DEVNULL)
             for what, (argv, _) in jobs.items()}
    try:
        while True:
            codes = {what: proc.poll() for what, proc in procs.items()}
            failed = [what for what, code in codes.items() if code not in (None, 0)]
            if failed:  # no half-new pair: the finally below stops the other trainings too, nothing is installed
                raise TrainingError(f"{' and '.join(failed)} training failed (see the log above); "
                                    "no model was replaced")
            if all(code == 0 for code in codes.values()):
                break
            time.sleep(1.0)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    done = {what: json.loads(out.read_text(encoding="utf-8")) for what, (_, out) in jobs.items()}
    members = [done[f"ocr member {i}"]["ocr"] for i in range(len(MEMBERS))]
    return {"detector": done["detector"]["detector"], "ocr_members": members,
            "ocr": _export_pair(args, paths, members)}


if __name__ == "__main__":
    sys.exit(main())
