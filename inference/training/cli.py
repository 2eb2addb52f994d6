"""`alpr-train`: reproduce the shipped models (needs the `train` extra: tensorflow-cpu).

    alpr-train all          # OCR and detector side by side, writes inference/models/ and REPORT figures
    alpr-train ocr|detector # one model
    alpr-train report       # rewrite inference/models/REPORT.md from the manifests
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inference.training import train_detector, train_ocr
from inference.training.common import MODELS_DIR, Paths

log = logging.getLogger("alpr-train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alpr-train", description="train the plate detector and OCR")
    parser.add_argument("what", choices=("all", "ocr", "detector", "report"), help="which model(s) to train")
    parser.add_argument("--data", type=Path, default=None, help="real data folder (default ../shared/data or $ALPR_DATA)")
    parser.add_argument("--cache", type=Path, default=None, help="generated-data cache (default .cache/)")
    parser.add_argument("--models", type=Path, default=None, help="output folder (default inference/models/)")
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
    parser.add_argument("--quick", action="store_true", help="tiny run to check the pipeline end to end")
    return parser


def _dropout(text: str) -> tuple[float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected two rates separated by a comma, e.g. 0.1,0.2") from None
    if len(values) != 2 or not all(0.0 <= v < 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected two rates from 0 up to 1, e.g. 0.1,0.2")
    return values[0], values[1]


def _seed(args: argparse.Namespace) -> dict[str, int]:
    # no --seed: each train() keeps its own default, the seed of the model it ships
    return {} if args.seed is None else {"seed": args.seed}


def _holdout(text: str) -> str:
    parts = text.split("/")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or not 1 <= int(parts[0]) <= int(parts[1]) or int(parts[1]) < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: expected K/N with 1 <= K <= N and N >= 2, e.g. 2/4")
    return f"{int(parts[0])}of{int(parts[1])}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `alpr-train`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    paths = Paths.default(args.data, args.cache, args.models)
    if args.ocr_holdout:
        if args.what != "ocr":
            parser.error("--ocr-holdout: only with `alpr-train ocr`")
        if paths.models.resolve() == MODELS_DIR.resolve():
            parser.error(f"--ocr-holdout: give --models another folder than {MODELS_DIR} (the shipped models use the fixed split)")
    results: dict[str, Any] = {}
    start = time.monotonic()
    if args.what == "all" and not args.sequential:
        results.update(_side_by_side(args, paths))
    elif args.what in ("all", "ocr"):
        kwargs = dict(steps=20, synth_count=500, real_copies=1) if args.quick else dict(steps=args.ocr_steps, scene_copies=args.ocr_scene_copies)
        results["ocr"] = train_ocr.train(paths, threads=args.threads, holdout=args.ocr_holdout,
                                         dropout=args.ocr_dropout, **_seed(args), **kwargs)
    if args.what == "detector" or (args.what == "all" and args.sequential):
        kwargs = dict(steps=20, synth_count=100) if args.quick else dict(steps=args.det_steps)
        results["detector"] = train_detector.train(paths, threads=args.threads, **_seed(args), **kwargs)
    if args.what == "report":
        from inference.training.report import measured_section, write_report

        print(write_report(paths.models, measured_section(paths.cache / "final")))
        return 0
    results["total_seconds"] = round(time.monotonic() - start, 1)
    out = paths.cache / f"train_{args.what}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if args.what == "all":
        from inference.training.report import write_report

        write_report(paths.models)
    print(json.dumps(results, indent=2))
    return 0


def _side_by_side(args: argparse.Namespace, paths: Paths) -> dict[str, Any]:
    """Train the OCR and the detector in two processes at once, each on half the threads.

    Neither network keeps two cores busy with its small convolutions: on the 2-core reference
    machine one thread each side by side ran the same steps in about 40 minutes that one after
    the other, two threads each, took about 56.
    """
    threads = max(1, args.threads // 2)
    common = ["--data", str(paths.data), "--cache", str(paths.cache), "--models", str(paths.models),
              "--threads", str(threads)] + ([] if args.seed is None else ["--seed", str(args.seed)]) + (["--quick"] if args.quick else [])
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
            if failed:  # no half-new pair: the finally below stops the other training too
                raise SystemExit(f"alpr-train: {' and '.join(failed)} training failed (see the log above)")
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
        results[what] = json.loads((paths.cache / f"train_{what}.json").read_text(encoding="utf-8"))[what]
    return results


if __name__ == "__main__":
    sys.exit(main())
