"""`alpr-train`: reproduce the shipped models (needs the `train` extra: tensorflow-cpu).

    alpr-train all          # the OCR's two members and the detector side by side, then the OCR
                            # ensemble; writes inference/models/ and the REPORT figures
    alpr-train ocr|detector # one model (`ocr`: one network)
    alpr-train ensemble --members A.keras B.keras  # trained OCRs as one file the reader fuses
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
from inference.training.ensemble import MEMBERS, export_ensemble, member_keras, member_paths, member_seed

log = logging.getLogger("alpr-train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alpr-train", description="train the plate detector and OCR")
    parser.add_argument("what", choices=("all", "ocr", "detector", "ensemble", "report"), help="which model(s) to train")
    parser.add_argument("--data", type=Path, default=None, help="real data folder (default ../shared/data or $ALPR_DATA)")
    parser.add_argument("--cache", type=Path, default=None, help="generated-data cache (default .cache/)")
    parser.add_argument("--models", type=Path, default=None, help="output folder (default inference/models/)")
    parser.add_argument("--threads", type=int, default=2,
                        help="TensorFlow threads (default 2; `all` gives each of its two trainings half)")
    parser.add_argument("--sequential", action="store_true",
                        help="all: train the OCR, then the detector, each with every thread (default: side by side)")
    parser.add_argument("--seed", type=int, default=None,
                        help=f"random seed (default: each shipped model's own, OCR {train_ocr.SEED}, detector {train_detector.SEED})")
    parser.add_argument("--ocr-steps", type=int, default=None,
                        help=f"OCR training steps (default: `ocr` {train_ocr.STEPS}; `all`, each member of the "
                             f"ensemble: {MEMBERS[0].steps})")
    parser.add_argument("--ocr-scene-copies", type=int, default=train_ocr.SCENE_COPIES,
                        help="augmented cuts of each train eu/br scene plate added to the OCR's real crops "
                             f"(shipped model: {train_ocr.SCENE_COPIES}; 0 = US crops only)")
    parser.add_argument("--ocr-dropout", type=_dropout, default=train_ocr.DROPOUT, metavar="SPATIAL,SEQ",
                        help="OCR dropout: spatial on the feature map, then on the sequence and state features "
                             f"(shipped model: {','.join(map(str, train_ocr.DROPOUT))})")
    parser.add_argument("--ocr-precision", choices=train_ocr.PRECISIONS, default=None,
                        help=f"OCR training arithmetic (default: `ocr` {train_ocr.PRECISION}; `all`, each member's: "
                             f"{MEMBERS[0].precision}); bfloat16 is faster on CPUs with AVX512-BF16 or AMX, and the "
                             "exported files are float32 / int8 either way")
    parser.add_argument("--ocr-holdout", type=_holdout, default=None, metavar="K/N",
                        help="cross-validation: train the OCR on train + val but the K-th of N folds and measure "
                             "that fold in val's place (never for the shipped model; needs --models elsewhere)")
    parser.add_argument("--members", type=Path, nargs="+", default=[], metavar="KERAS",
                        help="ensemble: the trained OCRs to combine, each a training cache's models/plate_ocr.keras")
    parser.add_argument("--data-cache", type=Path, default=None,
                        help="ensemble: the cache whose prepared OCR sets (same --seed and --ocr-holdout as a member's "
                             "training) give the int8 calibration data and val/test figures (default --cache)")
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
        if args.what not in ("ocr", "ensemble"):
            parser.error("--ocr-holdout: only with `alpr-train ocr` or `ensemble`")
        if paths.models.resolve() == MODELS_DIR.resolve():
            parser.error(f"--ocr-holdout: give --models another folder than {MODELS_DIR} (the shipped models use the fixed split)")
    results: dict[str, Any] = {}
    start = time.monotonic()
    if args.what == "all" and not args.sequential:
        results.update(_side_by_side(args, paths))
    elif args.what == "all":
        results["ocr_members"] = [train_ocr.train(member_paths(paths, i), seed=member_seed(i, args.seed), threads=args.threads,
                                                  dropout=m.dropout, precision=args.ocr_precision or m.precision,
                                                  **_ocr_kwargs(args, m.steps)) for i, m in enumerate(MEMBERS)]
        results["ocr"] = _export_shipped_ensemble(args, paths)
    elif args.what == "ocr":
        results["ocr"] = train_ocr.train(paths, threads=args.threads, holdout=args.ocr_holdout, dropout=args.ocr_dropout,
                                         precision=args.ocr_precision or train_ocr.PRECISION,
                                         **_seed(args), **_ocr_kwargs(args, train_ocr.STEPS))
    if args.what == "ensemble":
        if len(args.members) < 2:
            parser.error("ensemble: give two or more --members (trained OCRs' .keras files)")
        missing = [str(m) for m in args.members if not m.is_file()]
        if missing:
            parser.error(f"ensemble: no such member file: {', '.join(missing)} (a training cache's models/plate_ocr.keras)")
        data_paths = Paths(paths.data, args.data_cache, paths.models) if args.data_cache else None
        results["ocr"] = export_ensemble(paths, args.members, seed=train_ocr.SEED if args.seed is None else args.seed,
                                         holdout=args.ocr_holdout, data_paths=data_paths)
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


def _ocr_kwargs(args: argparse.Namespace, default_steps: int) -> dict[str, Any]:
    if args.quick:
        return dict(steps=20, synth_count=500, real_copies=1)
    return dict(steps=args.ocr_steps or default_steps, scene_copies=args.ocr_scene_copies)


def _export_shipped_ensemble(args: argparse.Namespace, paths: Paths) -> dict[str, Any]:
    """Combine the trained members into the shipped OCR file."""
    sizes = dict(synth_count=500, real_copies=1) if args.quick else {}
    return export_ensemble(paths, [member_keras(paths, i) for i in range(len(MEMBERS))], seed=member_seed(0, args.seed),
                           data_paths=member_paths(paths, 0), **sizes)


def _side_by_side(args: argparse.Namespace, paths: Paths) -> dict[str, Any]:
    """Train the OCR's members and the detector in separate processes at once, one thread each
    (half of `--threads`), then combine the members into the shipped OCR."""
    threads = max(1, args.threads // 2)
    quick = ["--quick"] if args.quick else []
    seed = [] if args.seed is None else ["--seed", str(args.seed)]
    jobs: dict[str, tuple[list[str], Path]] = {
        "detector": (["detector", "--data", str(paths.data), "--cache", str(paths.cache), "--models", str(paths.models),
                      "--threads", str(threads), *seed, "--det-steps", str(args.det_steps), *quick],
                     paths.cache / "train_detector.json"),
    }
    for i, member in enumerate(MEMBERS):
        where = member_paths(paths, i)
        jobs[f"ocr member {i}"] = (
            ["ocr", "--data", str(paths.data), "--cache", str(where.cache), "--models", str(where.models),
             "--threads", str(threads), "--seed", str(member_seed(i, args.seed)),
             "--ocr-steps", str(args.ocr_steps or member.steps), "--ocr-scene-copies", str(args.ocr_scene_copies),
             "--ocr-dropout", ",".join(map(str, member.dropout)),
             "--ocr-precision", args.ocr_precision or member.precision, *quick],
            where.cache / "train_ocr.json")
    # Children log to our stderr; their result JSON is read from the files they write, so their
    # stdout is dropped and ours stays one JSON document.
    procs = {what: subprocess.Popen([sys.executable, "-m", "inference.training.cli", *argv], stdout=subprocess.DEVNULL)
             for what, (argv, _) in jobs.items()}
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
    done = {what: json.loads(out.read_text(encoding="utf-8")) for what, (_, out) in jobs.items()}
    return {"detector": done["detector"]["detector"],
            "ocr_members": [done[f"ocr member {i}"]["ocr"] for i in range(len(MEMBERS))],
            "ocr": _export_shipped_ensemble(args, paths)}


if __name__ == "__main__":
    sys.exit(main())
