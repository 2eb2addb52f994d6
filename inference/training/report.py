"""Write `inference/models/REPORT.md` from the shipped manifests (figures and provenance).

The measured sections (whole pipeline, US stand-in, speed) come from the JSON files that the
commands listed in docs/models.md ("Measured sections of REPORT.md") write into `.cache/final/`.
Each of those files records the sha256 of the models it measured (`"models"`: name -> sha256);
a section is shown only when they are exactly the models whose manifests are in the report's
folder, else a one-line note says the figures are stale and which command re-measures them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inference.recognizer import MIN_CHARS, MIN_READ_CONFIDENCE

MODEL_NAMES = ("plate_ocr", "plate_detector")
DOC = 'docs/models.md, "Measured sections of REPORT.md"'
# The commands that write the measured files, as Markdown (docs/models.md lists them too).
EVAL_COMMAND = ("`alpr-node eval ../shared/data/NAME --split test --views 1 --json "
                "--sheet .cache/final/misreads-NAME.html > .cache/final/eval-NAME.json` and the same with "
                "`--views 3` into `eval-NAME-views3.json`, for NAME us-plates, eu-scenes, br-scenes")
US_SCENES_COMMAND = "`.venv/bin/python bench/bench_us_scenes.py --split val test > .cache/final/us_scenes.json`"
BENCH_COMMAND = "`.venv/bin/python bench/bench_inference.py --runs 200 > .cache/final/bench.json`"


def current_models(models: Path) -> dict[str, str]:
    """name -> sha256 of the models whose manifests are in `models` (the report's subject)."""
    out = {}
    for name in MODEL_NAMES:
        path = models / f"{name}.json"
        if path.is_file():
            out[name] = str(json.loads(path.read_text(encoding="utf-8")).get("sha256", "")).lower()
    return out


def measured_on(figures: dict[str, Any], current: dict[str, str]) -> bool:
    """Whether `figures` record having been measured on exactly the models in `current`.

    A file without a `"models"` object (written before the commands recorded it) cannot be
    told apart from one measured on older models, so it counts as not measured on them.
    """
    recorded = figures.get("models")
    if not isinstance(recorded, dict) or not current:
        return False
    return {str(k): str(v).lower() for k, v in recorded.items()} == current


def _stale_note(what: str, files: list[Path], command: str) -> str:
    names = ", ".join(f"`{f.name}`" for f in files)
    return (f"_{what}: left out as stale: {names} in `.cache/final/` were not measured on the models above (their "
            f"recorded sha256 differ, or they record none); re-measure with {command} ({DOC}), then run "
            "`alpr-train report`._")


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def ocr_section(manifest: dict[str, Any]) -> str:
    m = manifest.get("metrics", {})
    rows = []
    for split in ("real_val", "real_test"):
        for kind in ("float", "int8"):
            fig = m.get(f"{split}_{kind}")
            if fig:
                rows.append((split.replace("real_", "us-plates "), kind, fig["plates"], fig["exact_pct"], fig["char_accuracy_pct"],
                             fig["top10_pct"], fig["region_top1_pct"]))
    t = manifest.get("training", {})
    return "\n\n".join([
        f"## OCR `plate_ocr.tflite` ({m.get('size_bytes', '?')} bytes, int8)",
        _table(rows, ("split", "model", "plates", "exact %", "char %", "top-10 %", "state top-1 %")),
        f"Training data (images): `{json.dumps(t.get('data', {}))}`; hyper-parameters: `{json.dumps(t.get('hyper', {}))}`; "
        f"stage seconds: `{json.dumps(t.get('stage_seconds', {}))}`.",
    ])


def detector_section(manifest: dict[str, Any]) -> str:
    m = manifest.get("metrics", {})
    rows = []
    for split in ("val", "test"):
        for kind in ("float", "int8"):
            fig = m.get(f"{split}_{kind}")
            if not fig:
                continue
            for folder in ("eu-scenes", "br-scenes", "all"):
                if folder in fig:
                    f = fig[folder]
                    rows.append((split, kind, folder, f["truths"], f["predictions"], f["recall_pct"], f["precision_pct"], f["mean_iou"]))
    t = manifest.get("training", {})
    threshold = manifest.get("output", {}).get("params", {}).get("score_threshold")
    curve_rows = []
    val_curve, test_curve = m.get("val_curve_int8", {}), m.get("test_curve_int8", {})
    for key in val_curve:
        v, tc = val_curve[key], test_curve.get(key, {})
        curve_rows.append((key, v["recall_pct"], v["precision_pct"], tc.get("recall_pct", "-"), tc.get("precision_pct", "-")))
    curve = ""
    if curve_rows:
        curve = (f"Score threshold {threshold}: {m.get('score_threshold_rule', '')} (int8, all scenes; test shown for "
                 "information only, it played no part in the choice):\n\n"
                 + _table(curve_rows, ("threshold", "val recall %", "val precision %", "test recall %", "test precision %")))
    tiles = m.get("val_small_plates_tile_curve_int8", {})
    if tiles:
        tile_threshold = manifest.get("output", {}).get("params", {}).get("tile_score_threshold")
        curve += (f"\n\nTile passes' score threshold {tile_threshold}: {m.get('tile_score_threshold_rule', '')} "
                  "(`evaluate_detector.tile_threshold_curve`: us-plates val crops in br-scenes val frames, the tile "
                  "passes alone):\n\n"
                  + _table([(k, v["plates"], v["recall_pct"]) for k, v in tiles.items()],
                           ("threshold", "small plates", "tile recall %")))
    return "\n\n".join([
        f"## Detector `plate_detector.tflite` ({m.get('size_bytes', '?')} bytes, int8)",
        _table(rows, ("split", "model", "folder", "plates", "boxes", "recall %", "precision %", "mean IoU")),
        *([curve] if curve else []),
        f"Training data: `{json.dumps(t.get('data', {}))}`; hyper-parameters: `{json.dumps(t.get('hyper', {}))}`; "
        f"stage seconds: `{json.dumps(t.get('stage_seconds', {}))}`.",
    ])


def measured_section(folder: Path, models: Path) -> str:
    """Figures of the pair in `models` through the whole pipeline (`alpr-node eval`) and the benchmarks.

    Reads `eval-NAME[-views3].json`, `us_scenes.json` and `bench.json` from `folder` (written by
    the commands quoted); a section whose files were measured on other models than those in
    `models` is replaced by a one-line note.
    """
    current = current_models(models)
    parts = []
    shown = False
    rows = []
    stale: list[Path] = []
    for name in ("us-plates", "eu-scenes", "br-scenes"):
        for views, suffix in ((1, ""), (3, "-views3")):
            path = folder / f"eval-{name}{suffix}.json"
            if not path.is_file():
                continue
            fig = json.loads(path.read_text())
            if not measured_on(fig, current):
                stale.append(path)
                continue
            r, d, ms = fig["reading"], fig.get("detection", {}), fig["ms"]
            p = fig.get("reported_plates", {})
            rows.append((name, views, fig["images"], r["plates"], r["exact_pct"], r["char_accuracy_pct"], r["top10_pct"],
                         r["region_top1_pct"] if name == "us-plates" else "-", d.get("recall_pct", "-"),
                         d.get("precision_pct", "-"), p.get("recall_pct", "-"), p.get("precision_pct", "-"),
                         ms["detect_median"], ms["ocr_median_per_plate"], ms["total_median"]))
    if stale:  # one section: never some rows of one pair beside rows of another
        parts.append(_stale_note("Whole pipeline on the real test split (`alpr-node eval`)", stale, EVAL_COMMAND))
    elif rows:
        shown = True
        parts.append("## Whole pipeline on the real test split (`alpr-node eval`)")
        parts.append("Command: `alpr-node eval ../shared/data/NAME --split test --views 1 --json --sheet misreads-NAME.html`, "
                     "and the same with `--views 3` (what `recognize` runs by default: each plate read with three margins, "
                     "fused). Shipped int8 models, 1 thread, this 2-core x86 machine; `--windows auto --tiles auto`, as "
                     "`recognize` runs.")
        parts.append(_table(rows, ("folder", "views", "images", "plates", "exact %", "char %", "top-10 %", "state top-1 %",
                                   "det recall %", "det precision %", "reported recall %", "reported precision %",
                                   "detect ms", "OCR ms/plate", "total ms")))
        parts.append("For scenes, a plate counts as read only when a box with IoU >= 0.5 reads it exactly; the "
                     "OCR's real crops are US plates plus the train-split eu/br scene plates. det = every "
                     "box the detector keeps; reported = the plates `recognize` prints (boxes whose reading has "
                     f"{MIN_CHARS} or more characters at {MIN_READ_CONFIDENCE * 100:.0f} % confidence or more).")
    us = folder / "us_scenes.json"
    if us.is_file():
        u = json.loads(us.read_text())
        if not measured_on(u, current):
            parts.append(_stale_note("US plates on real cars (`bench/bench_us_scenes.py`)", [us], US_SCENES_COMMAND))
        else:
            shown = True
            urows = [(split, f["plates"], f["found_pct"], f["top1_pct"], f["any_pct"], f["extra_plates"], f["median_ms"])
                     for split, f in u.items() if isinstance(f, dict) and "plates" in f]
            parts.append("## US plates on real cars (`.venv/bin/python bench/bench_us_scenes.py --split SPLIT`)")
            parts.append("Real us-plates crops put in place of the plates of real eu/br scene photos, US-sized, frames and "
                         "crops of the same held-out split; `recognize`'s defaults (windows and tiles auto, 3 views; one placement, seed 0). found = a "
                         "detection with IoU >= 0.5; first = the first plate reported is the truth; any = some reported "
                         "plate is; extra = plates reported elsewhere in the frames.")
            parts.append(_table(urows, ("split", "plates", "found %", "first read right %", "any read right %",
                                        "extra plates", "median ms")))
    bench = folder / "bench.json"
    if bench.is_file():
        b = json.loads(bench.read_text())
        if not measured_on(b, current):
            parts.append(_stale_note("Speed (`bench/bench_inference.py`)", [bench], BENCH_COMMAND))
        else:
            shown = True
            brow = [(k, v["median_ms"], v["p90_ms"], v["runs"]) for k, v in b.items() if isinstance(v, dict) and "median_ms" in v]
            parts.append("## Speed (`.venv/bin/python bench/bench_inference.py --runs 200`)")
            parts.append(f"One thread (`--threads 1`), scene {b.get('scene_size')} px; medians of many runs.")
            parts.append(_table(brow, ("what", "median ms", "p90 ms", "runs")))
    if shown:
        parts.insert(0, "Measured on the models above (" + ", ".join(f"{k} sha256 `{v[:12]}`" for k, v in current.items())
                     + f"): each command records the hashes of the models it ran and `alpr-train report` shows only "
                     f"figures of these; the files and the commands that write them: {DOC}.")
    return "\n\n".join(parts)


def _training_seconds(training: dict[str, Any]) -> float:
    """Seconds a model's stages took: its own, plus, for an ensemble whose members recorded
    theirs, the slowest member's (`alpr-train all` trains the members side by side)."""
    own = sum(float(v) for v in training.get("stage_seconds", {}).values())
    members = training.get("hyper", {}).get("members") or []
    member_seconds = [sum(float(v) for v in (m.get("stage_seconds") or {}).values())
                      for m in members if isinstance(m, dict)]
    return own + max(member_seconds, default=0.0)


def write_report(models: Path, extra: str = "") -> Path:
    """Compose REPORT.md in `models` from the manifests found there."""
    parts = ["# Shipped models: how they were made and how they measure",
             "Generated by `alpr-train report` from the manifests beside the models; figures are on the real "
             "data in `../shared/data`, split by file name (`inference.datasets.split_of`, 70/10/20), "
             "reported on the held-out splits only. int8 = the shipped full-integer model; float = the same "
             "network before quantisation (kept in `.cache/models/`, not shipped)."]
    ocr = models / "plate_ocr.json"
    det = models / "plate_detector.json"
    if ocr.is_file():
        parts.append(ocr_section(json.loads(ocr.read_text())))
    if det.is_file():
        parts.append(detector_section(json.loads(det.read_text())))
    totals = {}
    for name, path in (("OCR", ocr), ("detector", det)):
        if path.is_file():
            training = json.loads(path.read_text()).get("training", {})
            totals[name] = round(_training_seconds(training), 1)
    if totals:
        parts.append("## Reproduction time\n\n"
                     "Command: `alpr-train all`, which trains the two side by side (or `alpr-train ocr` and "
                     "`alpr-train detector`; `alpr-train report` rewrites this file). Wall time of the stages "
                     "recorded in the manifests by the run that made each model (an OCR pair: its slowest member's "
                     "stages plus the combining), which may have shared the "
                     "machine with other runs (data generation + training + export + evaluation; the notes "
                     "below give the clean timings of `alpr-train all` from an empty cache): "
                     + ", ".join(f"{k} {v / 60:.1f} min" for k, v in totals.items())
                     + f"; run side by side, as `alpr-train all` does by default, the run takes at least the "
                     f"longer of the two, {max(totals.values()) / 60:.1f} min (`--sequential`: the sum), and more "
                     "when it runs more processes than the machine has cores (an OCR pair's two members beside "
                     "the detector on two cores): the notes give the measured time.")
    if extra:
        parts.append(extra)
    notes = models / "NOTES.md"
    if notes.is_file():  # hand-written: how the figures came about, caveats, what was chosen on what
        parts.append(notes.read_text(encoding="utf-8").strip())
    path = models / "REPORT.md"
    path.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return path
