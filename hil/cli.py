"""`alpr-hil`: make clips, run scenarios against the real runtime, record clips on a Pi.

    alpr-hil synth [NAME ...] [--out DIR]            the shipped synthetic clips (default: all, into hil/clips)
    alpr-hil list                                    shipped scenarios and clips
    alpr-hil run SCENARIO [SCENARIO ...] [--junit FILE] [--html FILE] [--out DIR]
    alpr-hil run --all [--long]                      every short scenario (and the soaks with --long)
    alpr-hil record OUT --seconds 60 [--pin 17:loop1] [--pin 27:loop2] [--overwrite]   on a Pi: camera + loops → clip
    alpr-hil drive CLIP --map 17=22 [--map 27=23] [--player CMD]          bench: loop edges on GPIO outputs

Exit status of `run`: see RUN_EXIT_STATUS (also in `alpr-hil run --help`).
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from hardware.errors import HardwareError
from hil.errors import HilError

if TYPE_CHECKING:
    from hil.runner import RunResult

PROG = "alpr-hil"
log = logging.getLogger(PROG)
# What a scenario run can fail with that is the bench's or the setup's problem, not a verdict.
_RUN_ERRORS = (HilError, HardwareError, OSError, ValueError, subprocess.SubprocessError)
RUN_EXIT_STATUS = """exit status:
  0  every scenario passed
  1  at least one scenario FAILED (whatever the others did: a FAIL is never hidden behind 2)
  2  no scenario failed, but one could not be run (setup error, e.g. the node or HQ would not
     start), or was INCONCLUSIVE (the machine was too busy to replay in real time while a
     vehicle was in view), or the command itself was wrong (usage, a broken scenario or clip:
     then nothing is run)"""


def _synth(args: argparse.Namespace) -> int:
    from hil.catalog import CLIPS
    from hil.scenario import CLIP_DIR
    from hil.synth import write_clip

    names = args.names or sorted(CLIPS)
    unknown = [n for n in names if n not in CLIPS]
    if unknown:
        raise HilError(f"unknown clip name(s) {', '.join(unknown)} (known: {', '.join(sorted(CLIPS))})")
    out = Path(args.out) if args.out else CLIP_DIR
    for name in names:
        started = time.monotonic()
        clip = write_clip(CLIPS[name], out / name, overwrite=True)
        size = sum(p.stat().st_size for p in (out / name).rglob("*") if p.is_file())
        print(f"{out / name}: {len(clip)} frames, {clip.duration_ns / 1e9:.1f}s, {len(clip.vehicles)} vehicles, "
              f"{len(clip.triggers)} trigger edges, {size / 1e6:.2f} MB ({time.monotonic() - started:.1f}s)")
    return 0


def _list(args: argparse.Namespace) -> int:
    from hil.scenario import CLIP_DIR, shipped

    for s in shipped(include_long=True):
        faults = ", ".join(f"{f.kind}@{f.at_s:g}s" for f in s.faults) or "no faults"
        print(f"{s.name:28s} {'(long) ' if s.long else ''}clip {s.clip.name}, speed {s.speed:g}, {faults}")
    for clip in sorted(p.parent.name for p in CLIP_DIR.glob("*/clip.json")):
        print(f"clip: {clip}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from hil import scenario as scenarios
    from hil.report import write_reports
    from hil.runner import run_scenario

    # Every scenario is loaded (its clip validated, every frame's size too) before any is run:
    # a broken clip fails the command at once instead of after the runs before it.
    if args.all:
        chosen = scenarios.shipped(include_long=args.long)
    elif args.scenarios:
        chosen = [scenarios.load(scenarios.find(n)) for n in args.scenarios]
    else:
        raise HilError("name at least one scenario, or --all")
    for s in chosen:
        for warning in s.warnings:
            print(f"warning: {warning}", flush=True)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="alpr-hil-"))
    results = []
    not_run: dict[str, str] = {}
    for s in chosen:
        print(f"{s.name}: running (clip {s.clip.name}, speed {s.speed:g}, {len(s.faults)} faults) ...", flush=True)
        try:
            result = run_scenario(s, out / s.name)
        except _RUN_ERRORS as exc:
            # One scenario that cannot run must not cost the reports of the others.
            log.debug("%s could not be run", s.name, exc_info=True)
            not_run[s.name] = f"{type(exc).__name__}: {exc}"
            print(f"{s.name}: ERROR (not run) - {not_run[s.name]}", flush=True)
            (out / s.name).mkdir(parents=True, exist_ok=True)
            (out / s.name / "result.json").write_text(json.dumps(
                {"scenario": s.name, "passed": False, "error": not_run[s.name]}, indent=1) + "\n")
            continue
        (out / s.name / "result.json").write_text(json.dumps(result.to_json(), indent=1) + "\n")
        f = result.judgement.figures()
        if not result.judgement.latency_measured:
            lat = "latency n/a (speed 0)"
        elif f["latency_median_s"] is None:
            lat = "latency - (no reads)"
        else:
            lat = f"latency median {f['latency_median_s']}s worst {f['latency_worst_s']}s"
        if result.judgement.latency_measured and f["trigger_to_hq_median_s"] is not None:
            lat += (f", trigger->HQ (read or no_read) median {f['trigger_to_hq_median_s']}s "
                    f"worst {f['trigger_to_hq_worst_s']}s")
        print(f"{s.name}: {result.verdict} in {result.wall_s:.1f}s - vehicles {f['vehicles']}, "
              f"correct {f['reads_correct']}, misread {f['misread']}, missed {f['missed']}, duplicates "
              f"{f['duplicates']}, false reads {f['phantom_reads']}, {lat}, committed {f['committed']}, "
              f"dropped {f['dropped_under_quota']}, lost {f['data_lost']}{_pace_figures(result)}")
        for line in _details(result):
            print(f"  {line}")
        for t in result.judgement.triggers:
            if t.outcome in ("unaccounted", "suppressed as duplicate"):
                why = " (the node logged a dedup suppression)" if t.outcome != "unaccounted" else ""
                print(f"  trigger {t.name}@{t.t_s:.2f}s (run {t.run + 1}): no read and no no_read event at HQ{why}")
            elif t.outcome == "dropped under quota":
                said = (f"the node logged {', '.join(t.node_logged)} and dropped seq "
                        f"{', '.join(map(str, t.node_dropped))} under its outbox quota" if t.node_dropped
                        else "no message at HQ, excused by the node's count of drops under its outbox quota")
                print(f"  trigger {t.name}@{t.t_s:.2f}s (run {t.run + 1}): {said}")
        results.append(result)
    write_reports(results, junit=Path(args.junit) if args.junit else None,
                  html_path=Path(args.html) if args.html else None, not_run=not_run)
    print(f"logs and results under {out}")
    return _exit_status(results, not_run)


def _exit_status(results: list[RunResult], not_run: dict[str, str]) -> int:
    """1 if any scenario FAILED, else 2 if one could not be run or was INCONCLUSIVE, else 0."""
    if any(r.verdict == "FAIL" for r in results):
        return 1
    if not_run or any(r.verdict == "INCONCLUSIVE" for r in results):
        return 2
    return 0


def _pace_figures(result: RunResult) -> str:
    """`, replay behind by at most 0.03s (limit 0.48s)` for a timed real-time run, else ``."""
    limit = result.real_time_limit_s
    lags = [p.max_lag_s for p in result.pace if p.max_lag_s is not None]
    if limit is None or not lags:
        return ""
    return f", replay behind by at most {max(lags):.2f}s (limit {limit:.2f}s)"


def _details(result: RunResult) -> list[str]:
    """The lines under a scenario's summary: problems, then each vehicle not read right and each false read."""
    note = result.real_time_note()
    out = [*result.errors, *([note] if note else []), *result.expectation_failures(),
           *result.judgement.lane_failures(), *result.judgement.problems]
    for v in result.judgement.vehicles:
        if v.unwired_pin is not None and not v.matches:
            out.append(f"{v.excuse_text}: {v.plate} ({v.trigger}, legible {v.t_start_s:.2f}-{v.t_end_s:.2f}s)")
        if v.correct or (v.excused and not v.matches):
            continue
        readings = ", ".join(f"{m.read.plate} ({m.read.confidence:.2f}, run {m.run + 1})" for m in v.matches)
        also = (f"; no read in run {', '.join(str(r + 1) for r in v.missed_runs)}"
                if v.missed_runs and v.matches else "")
        out.append(f"{v.outcome}: truth {v.plate}, read {readings or 'nothing'}{also} "
                   f"(legible {v.t_start_s:.2f}-{v.t_end_s:.2f}s)")
    for m in result.judgement.phantom_reads:
        out.append(f"false read: {m.read.plate} ({m.read.confidence:.2f}, run {m.run + 1}) seq {m.read.seq}, "
                   f"outside every vehicle's legible window")
    for m in result.judgement.unjudged_reads:
        out.append(f"not judged: clip has no ground truth: read {m.read.plate} ({m.read.confidence:.2f}, "
                   f"run {m.run + 1}) seq {m.read.seq}")
    return out


def _record(args: argparse.Namespace) -> int:
    from hil.record import RecordSettings, parse_pin, record

    settings = RecordSettings(seconds=args.seconds, main_size=tuple(args.size), lores_size=tuple(args.lores),
                              fps=args.fps, exposure_us=args.exposure_us,
                              pins=[parse_pin(p) for p in (args.pin or ["17:loop1"])], jpeg_quality=args.quality,
                              description=args.description)
    clip = record(Path(args.out), settings, overwrite=args.overwrite)
    print(f"{clip.path}: {len(clip)} frames, {len(clip.triggers)} trigger edges, {clip.duration_ns / 1e9:.1f}s")
    return 0


def _drive(args: argparse.Namespace) -> int:
    from hardware.clip import Clip
    from hil.drive import drive, parse_map

    pin_map = dict(parse_map(m) for m in (args.map or []))
    report = drive(Clip.load(Path(args.clip)), pin_map, player=args.player, speed=args.speed)
    print(f"drove {len(report.edges)} edges, worst {report.worst_late_ms:.1f} ms late")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests)."""
    parser = argparse.ArgumentParser(prog=PROG, description="Hardware-in-the-loop bench for alpr-node")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("synth", help="write the shipped synthetic clips")
    p.add_argument("names", nargs="*", help="clip names (default: all)")
    p.add_argument("--out", help="folder to write into (default: hil/clips)")
    p.set_defaults(func=_synth)
    p = sub.add_parser("list", help="shipped scenarios and clips")
    p.set_defaults(func=_list)
    p = sub.add_parser("run", help="run scenarios against the real runtime", epilog=RUN_EXIT_STATUS,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenarios", nargs="*", help="scenario names (hil/scenarios) or .toml paths")
    p.add_argument("--all", action="store_true", help="every shipped short scenario")
    p.add_argument("--long", action="store_true", help="with --all: the long soaks too")
    p.add_argument("--junit", help="write JUnit XML here")
    p.add_argument("--html", help="write the HTML report here")
    p.add_argument("--out", help="folder for labs, logs and result.json (default: a new temp folder)")
    p.set_defaults(func=_run)
    p = sub.add_parser("record", help="on a Pi: record the camera and trigger inputs into a clip")
    p.add_argument("out", help="clip folder to create")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--size", type=int, nargs=2, default=[1280, 720], metavar=("W", "H"))
    p.add_argument("--lores", type=int, nargs=2, default=[640, 352], metavar=("W", "H"))
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--exposure-us", type=int, default=1000)
    p.add_argument("--quality", type=int, default=85, help="JPEG quality")
    p.add_argument("--pin", action="append", help="BCM:NAME of a trigger input (repeatable; default 17:loop1)")
    p.add_argument("--description", default="")
    p.add_argument("--overwrite", action="store_true", help="replace a clip already recorded in OUT")
    p.set_defaults(func=_record)
    p = sub.add_parser("drive", help="bench mode: replay a clip's loop edges on GPIO outputs (optionally with a player)")
    p.add_argument("clip", help="clip folder")
    p.add_argument("--map", action="append", help="CLIP_PIN=OUTPUT_PIN (BCM), e.g. 17=22 (repeatable)")
    p.add_argument("--player", help="command started at clip time 0, e.g. mpv showing the clip's frames")
    p.add_argument("--speed", type=float, default=1.0)
    p.set_defaults(func=_drive)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `alpr-hil`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (HilError, HardwareError, OSError, ValueError) as exc:
        if args.debug:
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
