"""`alpr-train`: reproduce the shipped models (needs the `train` extra: tensorflow-cpu).

    alpr-train all          # OCR and detector side by side, writes inference/models/ and REPORT figures
    alpr-train ocr|detector # one model
    alpr-train report       # rewrite inference/models/REPORT.md from the manifests
    alpr-train all --quick  # tiny end-to-end check, into <cache>/quick-models (never the shipped folder)

A training run writes its models into a staging folder under the cache and moves them into
--models only when every model of the run has been trained, exported and measured, so a failed
run leaves the models it would have replaced as they were.

Nothing a run caches can be taken for, or replace, what a run of another configuration cached:
a quick run generates everything under <cache>/quick/; the float and Keras models of a
configuration other than the shipped one go under <cache>/models/<variant>/ (`variant`); arrays
made from another --data folder than the default carry it in their names (`Paths.data_key`).
"""
from __future__ import annotations

import argparse
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

from inference.training import train_detector, train_ocr
from inference.training.common import (
    DATA_FOLDERS,
    MODELS_DIR,
    Paths,
    TrainingError,
    is_shipped,
    new_staging,
    promote,
)

log = logging.getLogger("alpr-train")

# The models each command trains (manifest / file names).
MODELS_OF = {
    "all": (train_ocr.MODEL_NAME, train_detector.MODEL_NAME),
    "ocr": (train_ocr.MODEL_NAME,),
    "detector": (train_detector.MODEL_NAME,),
}
INSTALL_HINT = ".venv/bin/pip install -e '.[train]'"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alpr-train", description="train the plate detector and OCR")
    parser.add_argument("what", choices=("all", "ocr", "detector", "report"),
                        help="all: train both models (side by side) and rewrite REPORT.md; ocr / detector: train one; "
                             "report: rewrite REPORT.md in --models from its manifests and the figures in <cache>/final")
    parser.add_argument("--data", type=Path, default=None, help="real data folder (default ../shared/data or $ALPR_DATA)")
    parser.add_argument("--cache", type=Path, default=None, help="generated-data cache (default .cache/)")
    parser.add_argument("--models", type=Path, default=None,
                        help="models folder (default inference/models/, the shipped models; with --quick <cache>/quick-models)")
    parser.add_argument("--threads", type=int, default=2,
                        help="TensorFlow threads (default 2; `all` gives each of its two trainings half)")
    parser.add_argument("--sequential", action="store_true",
                        help="all: train the OCR, then the detector, each with every thread (default: side by side)")
    parser.add_argument("--seed", type=int, default=None,
                        help=f"random seed (default: each shipped model's own, OCR {train_ocr.SEED}, detector {train_detector.SEED})")
    parser.add_argument("--ocr-steps", type=int, default=train_ocr.STEPS,
                        help=f"OCR training steps (shipped model: {train_ocr.STEPS})")
    parser.add_argument("--ocr-scene-copies", type=int, default=train_ocr.SCENE_COPIES,
                        help="augmented cuts of each train eu/br scene plate added to the OCR's real crops "
                             f"(shipped model: {train_ocr.SCENE_COPIES}; 0 = US crops only)")
    parser.add_argument("--ocr-dropout", type=_dropout, default=train_ocr.DROPOUT, metavar="SPATIAL,SEQ",
                        help="OCR dropout: spatial on the feature map, then on the sequence and state features "
                             f"(shipped model: {','.join(map(str, train_ocr.DROPOUT))})")
    parser.add_argument("--ocr-holdout", type=_holdout, default=None, metavar="K/N",
                        help="cross-validation: train the OCR on train + val but the K-th of N folds and measure "
                             "that fold in val's place (never for the shipped model; needs --models elsewhere)")
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
    """The options `train_ocr.train` gets from `args` (all but the threads and the variant)."""
    # no --seed: the seed of the shipped model
    fixed: dict[str, Any] = {"seed": train_ocr.SEED if args.seed is None else args.seed,
                             "holdout": args.ocr_holdout, "dropout": args.ocr_dropout}
    if args.quick:
        return {**fixed, "steps": 20, "synth_count": 500, "real_copies": 1}
    return {**fixed, "steps": args.ocr_steps, "scene_copies": args.ocr_scene_copies}


def detector_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options `train_detector.train` gets from `args` (all but the threads and the variant)."""
    seed = train_detector.SEED if args.seed is None else args.seed
    if args.quick:
        return {"seed": seed, "steps": 20, "synth_count": 100}
    return {"seed": seed, "steps": args.det_steps}


OPTIONS_OF = {train_ocr.MODEL_NAME: ocr_options, train_detector.MODEL_NAME: detector_options}
# The command-line options that are not in a variant as training options: those that do not
# change what is trained, --quick (which moves the whole run to <cache>/quick/ instead) and
# --data (in it as Paths.data_key); a test checks that every option is either here or changes
# the variant of a model it applies to.
NOT_IN_VARIANT = frozenset({"what", "data", "cache", "models", "threads", "sequential", "quick", "staged"})


def variant(args: argparse.Namespace, paths: Paths, what: str) -> str:
    """Name of the configuration `args` trains `what` (a command or model name) with, among runs
    of its kind (quick or not): "" for the shipped one, else its differences, e.g. "seed3",
    "holdout2of4-dropout0.1_0.2", "synthetic", "data1a2b3c4d".

    The float and Keras models of a configuration go to <cache>/models/<variant>/ and the run's
    result to train_WHAT-<variant>.json: with one folder for all, a twin, another seed or a
    synthetic-only run replaced the float model a full run left there, and twins trained side by
    side could measure each other's float model as their own.
    """
    defaults = build_parser().parse_args([args.what] + (["--quick"] if args.quick else []))
    parts: list[str] = []
    for name in MODELS_OF.get(what, (what,)):
        options, shipped = OPTIONS_OF[name](args), OPTIONS_OF[name](defaults)
        parts += [_variant_part(key, value) for key, value in options.items() if value != shipped.get(key)]
    if not paths.real_data:
        parts.append("synthetic")
    if paths.data_key:
        parts.append(paths.data_key)
    return "-".join(dict.fromkeys(parts))  # `all`: an option of both models (--seed) once


def _variant_part(key: str, value: Any) -> str:
    text = "_".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
    return key.replace("_", "") + text


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
    if args.ocr_holdout:
        if args.what != "ocr":
            parser.error("--ocr-holdout: only with `alpr-train ocr`")
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
    if what == "ocr":
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

    A side-by-side child (--staged) is given the parent's staging folder as --models and writes
    there directly; the parent installs the pair once both children have succeeded.
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
    if args.what in ("all", "ocr"):
        results["ocr"] = train_ocr.train(paths, threads=args.threads, variant=variant(args, paths, train_ocr.MODEL_NAME),
                                         **ocr_options(args))
    if args.what in ("all", "detector"):
        results["detector"] = train_detector.train(paths, threads=args.threads,
                                                   variant=variant(args, paths, train_detector.MODEL_NAME),
                                                   **detector_options(args))
    return results


def _side_by_side(args: argparse.Namespace, paths: Paths) -> dict[str, Any]:
    """Train the OCR and the detector in two processes at once, each on half the threads.

    Neither network keeps two cores busy with its small convolutions: on the 2-core reference
    machine one thread each side by side ran the same steps in about 40 minutes that one after
    the other, two threads each, took about 56.
    """
    threads = max(1, args.threads // 2)
    # --models is this run's staging folder: the children write there (--staged), their result
    # files included, and _train installs the pair only once both have finished. --cache is the
    # root: a quick child finds its quick/ folder under it as this run did.
    common = (["--data", str(paths.data), "--cache", str(paths.cache), "--models", str(paths.models), "--staged",
               "--threads", str(threads)] + ([] if args.seed is None else ["--seed", str(args.seed)])
              + (["--quick"] if args.quick else []) + (["--synthetic-only"] if args.synthetic_only else []))
    jobs = {
        "ocr": common + ["--ocr-steps", str(args.ocr_steps), "--ocr-scene-copies", str(args.ocr_scene_copies),
                "--ocr-dropout", ",".join(map(str, args.ocr_dropout))],
        "detector": common + ["--det-steps", str(args.det_steps)],
    }
    # Children log to our stderr; their result JSON is read from the files they write, so their
    # stdout is dropped and ours stays one JSON document.
    procs = {what: subprocess.Popen([sys.executable, "-m", "inference.training.cli", what, *extra], stdout=subprocess.DEVNULL)
             for what, extra in jobs.items()}
    try:
        while True:
            codes = {what: proc.poll() for what, proc in procs.items()}
            failed = [what for what, code in codes.items() if code not in (None, 0)]
            if failed:  # no half-new pair: the finally below stops the other training too, nothing is installed
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
    results = {}
    for what in jobs:
        results[what] = json.loads((paths.models / f"train_{what}.json").read_text(encoding="utf-8"))[what]
    return results


if __name__ == "__main__":
    sys.exit(main())
