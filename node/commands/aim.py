"""`alpr-node aim`: the installer's check — is the camera aimed, focused and exposed for plates?

Captures frames for a few seconds (or a clip), runs the plate detector, and reports at the
trigger point (or the frame with the clearest plate) the plate width in pixels, sharpness,
exposure and the motion blur a vehicle at the given speed would have, each with pass/fail
guidance, then saves an annotated snapshot. Where `[[triggers]]` have image regions it draws
them on the snapshot and says which of them holds the plate found.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from node import config as node_config
from transport import atomic

PLATE_WIDTH_M = 0.305  # a US plate; EU plates are 0.52 m: pass --plate-width-m


@dataclass
class Check:
    name: str
    value: float
    unit: str
    verdict: str  # "pass" | "warn" | "fail"
    advice: str


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("aim", help="installation check: plate size, focus, exposure, motion blur")
    p.add_argument("--config", "-c", type=Path, default=node_config.DEFAULT_PATH)
    p.add_argument("--seconds", type=float, default=10.0, help="how long to look (live camera)")
    p.add_argument("--speed-kmh", type=float, default=50.0, help="vehicle speed for the motion-blur estimate")
    p.add_argument("--plate-width-m", type=float, default=PLATE_WIDTH_M, help="physical plate width")
    p.add_argument("--snapshot", type=Path, default=None,
                   help="annotated image to write (default: aim-snapshot.jpg in node.data_dir)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def _watch_triggers(config: node_config.NodeConfig, src: Any, on_trigger: Callable[[Any], None]) -> list[Any]:
    """Trigger inputs for the report's moment: a clip's recorded pins, or on a live camera the
    configured [[triggers]] (the node service must be stopped: it holds the pins, as it holds
    the camera). A GPIO that cannot be opened is said, and the report falls back to the clearest
    plate, since the camera check is still worth having."""
    from hardware.errors import GpioError
    from hardware.gpio import TriggerInput

    if src.clip is not None:
        return [TriggerInput(pin, gpio_module=src.gpio, clock_ns=src.clock_ns, on_trigger=on_trigger)
                for pin in sorted({t.pin for t in src.clip.triggers})]
    inputs = []
    for t in config.triggers:
        try:
            inputs.append(TriggerInput(t.pin, name=t.name, kind=t.kind, pull=t.pull, active_low=t.active_low,
                                       bouncetime_ms=t.bouncetime_ms, gpio_module=src.gpio, clock_ns=src.clock_ns,
                                       on_trigger=on_trigger))
        except GpioError as exc:
            print(f"alpr-node aim: trigger {t.name} (BCM {t.pin}) not watched: {exc}; reporting the clearest "
                  "plate instead", file=sys.stderr)
    return inputs


def sharpness(grey: np.ndarray) -> float:
    """Variance of the Laplacian: high for crisp edges, low when out of focus."""
    g = grey.astype(np.float32)
    lap = -4 * g[1:-1, 1:-1] + g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:]
    return float(lap.var()) if lap.size else 0.0


def assess(frame_main: np.ndarray, box: tuple[int, int, int, int] | None, exposure_us: float | None,
           speed_kmh: float, plate_width_m: float) -> list[Check]:
    """The checks for one frame and (if found) its plate box in main-image pixels."""
    grey = frame_main.mean(axis=2)
    checks = []
    if box is None:
        checks.append(Check("plate found", 0, "", "fail", "no plate detected: aim at the lane, check focus and light"))
        region = grey
    else:
        x, y, w, h = box
        region = grey[y:y + h, x:x + w]
        verdict = "pass" if w >= 130 else "warn" if w >= 60 else "fail"
        checks.append(Check("plate width", w, "px", verdict,
                            "good" if verdict == "pass" else "zoom in or move closer: aim for 130 px or more "
                            "(60 px is the detector's floor)"))
    sharp = sharpness(region)
    checks.append(Check("sharpness", round(sharp, 1), "laplacian var", "pass" if sharp >= 100 else
                        "warn" if sharp >= 30 else "fail", "good" if sharp >= 100 else "adjust focus (lens_position)"))
    mean = float(region.mean())
    clipped = float((region >= 250).mean())
    verdict = "pass" if 60 <= mean <= 200 and clipped < 0.02 else "warn" if 30 <= mean <= 230 else "fail"
    checks.append(Check("exposure", round(mean, 1), "mean level", verdict,
                        "good" if verdict == "pass" else "too dark: raise gain or IR" if mean < 60 else
                        "too bright or glare: lower gain or exposure"))
    if box is not None and exposure_us:
        px_per_m = box[2] / plate_width_m
        blur = speed_kmh / 3.6 * exposure_us / 1e6 * px_per_m
        checks.append(Check("motion blur", round(blur, 2), f"px at {speed_kmh:.0f} km/h",
                            # A character stroke is ~1/40 of the plate width: blur beyond ~3 px
                            # at 130 px plates starts merging strokes.
                            "pass" if blur <= 3 else "warn" if blur <= 6 else "fail",
                            "good" if blur <= 3 else "shorten exposure_us (add IR light or gain)"))
    return checks


def region_check(box: tuple[int, int, int, int] | None, frame_size: tuple[int, int],
                 triggers: list[node_config.TriggerSection]) -> Check | None:
    """Which triggers' regions hold the centre of the plate found (None: no region set, or no plate).

    A plate in no region is credited to no trigger's pass (unless a trigger without a region is
    open), so the installer is told now rather than by no_read events later.
    """
    with_region = [t for t in triggers if t.region is not None]
    if box is None or not with_region:
        return None
    w, h = frame_size
    cx, cy = (box[0] + box[2] / 2) / w, (box[1] + box[3] / 2) / h
    holders = [t for t in with_region if t.region[0] <= cx <= t.region[2] and t.region[1] <= cy <= t.region[3]]
    where = f"centre ({cx:.2f}, {cy:.2f})"
    if holders:
        return Check("plate in region", len(holders), "region(s)", "pass",
                     f"{where} is in " + ", ".join(f"{t.name} (lane {t.lane})" for t in holders))
    others = [t.name for t in triggers if t.region is None]
    return Check("plate in region", 0, "region(s)", "warn",
                 f"{where} is in no trigger's region: its reads would go only to "
                 + (", ".join(others) if others else "no pass") + "; widen a [[triggers]] region or re-aim")


def draw_regions(draw: ImageDraw.ImageDraw, frame_size: tuple[int, int],
                 triggers: list[node_config.TriggerSection]) -> None:
    """Outline each trigger's region on the snapshot, labelled with its trigger and lane."""
    w, h = frame_size
    for t in triggers:
        if t.region is None:
            continue
        x0, y0, x1, y1 = t.region
        # a region reaching the frame's edge (1.0) is drawn on its last pixel, not past it
        box = [min(x0 * w, w - 1), min(y0 * h, h - 1), min(x1 * w, w - 1), min(y1 * h, h - 1)]
        draw.rectangle(box, outline=(0, 200, 255), width=2)
        draw.text((box[0] + 6, box[3] - 18), f"{t.name} (lane {t.lane})", fill=(0, 200, 255))


def run(args: argparse.Namespace) -> int:
    from hardware.camera import CameraState, CameraSupervisor
    from hardware.frame_queue import FrameQueue
    from inference.detector import PlateDetector
    from node.pipeline_factory import camera_source

    config = node_config.load(args.config)
    detector = PlateDetector(config.models.detector, threads=config.pipeline.threads)
    src = camera_source(config)
    frames = FrameQueue(maxsize=4)
    triggers: list[int] = []
    inputs = _watch_triggers(config, src, lambda e: triggers.append(e.time_ns) if e.active else None)
    supervisor = CameraSupervisor(src.factory, frames.put, capture_timeout_s=config.camera.capture_timeout_s)
    supervisor.start()
    if src.pins is not None:
        src.pins.start()
    best = None  # (score, closeness to trigger, frame, box)
    deadline = time.monotonic() + args.seconds
    try:
        while time.monotonic() < deadline:
            frame = frames.get(timeout=0.5)
            if frame is None:
                if supervisor.state is CameraState.ENDED:
                    break
                continue
            dets = detector.detect(frame.lores)
            if not dets:
                if best is None:
                    best = (0.0, 0, frame, None)
                continue
            det = max(dets, key=lambda d: d.score)
            sx = frame.main.shape[1] / frame.lores.shape[1]
            sy = frame.main.shape[0] / frame.lores.shape[0]
            box = (int(det.box[0] * sx), int(det.box[1] * sy), int(det.box[2] * sx), int(det.box[3] * sy))
            near = -min((abs(frame.timestamp_ns - t) for t in triggers), default=0)
            key = (1 if triggers else 0, near if triggers else det.score)
            if best is None or best[3] is None or key > best[1]:
                best = (det.score, key, frame, box)
    finally:
        if src.pins is not None:
            src.pins.stop()
        supervisor.stop()
        for i in inputs:
            i.close()
    if best is None:
        raise node_config.BadConfig("aim: the camera gave no frames")
    _, _, frame, box = best
    near_trigger = bool(triggers) and box is not None
    moment = ("the detected plate nearest a trigger" if near_trigger else
              "the clearest plate (no trigger fired)" if box is not None else "no plate detected")
    checks = assess(frame.main, box, frame.metadata.get("ExposureTime", config.camera.exposure_us),
                    args.speed_kmh, args.plate_width_m)
    frame_size = (frame.main.shape[1], frame.main.shape[0])
    in_region = region_check(box, frame_size, config.triggers)
    if in_region is not None:
        checks.append(in_region)
    image = Image.fromarray(frame.main)
    draw = ImageDraw.Draw(image)
    draw_regions(draw, frame_size, config.triggers)
    if box is not None:
        draw.rectangle([box[0], box[1], box[0] + box[2], box[1] + box[3]], outline=(0, 255, 0), width=3)
    for i, c in enumerate(checks):
        colour = {"pass": (0, 200, 0), "warn": (230, 160, 0), "fail": (230, 0, 0)}[c.verdict]
        draw.text((10, 10 + 16 * i), f"{c.name}: {c.value} {c.unit} {c.verdict.upper()} - {c.advice}", fill=colour)
    # The report is the point of the command: a snapshot that cannot be written (a read-only
    # working directory under sudo -u alpr) is reported beside it, not instead of it.
    snapshot: Path | None = args.snapshot or config.node.data_dir / node_config.AIM_SNAPSHOT_NAME
    snapshot_error = ""
    try:
        # A real vehicle and its plate in clear: 0600 and written atomically (a planted link is
        # not followed), and the node removes the default one when it starts (node.runtime), so
        # the data directory holds only ciphertext once the reader runs.
        if args.snapshot is not None and not snapshot.parent.is_dir():
            # a folder the technician named is not made for them: a typo would hide the file
            raise FileNotFoundError(f"folder {snapshot.parent} does not exist")
        jpeg = io.BytesIO()
        image.save(jpeg, format="JPEG", quality=90)
        atomic.write_bytes(snapshot, jpeg.getvalue(), 0o600)
    except (OSError, ValueError) as exc:
        snapshot_error = f"--snapshot {snapshot}: not written: {exc}"
        snapshot = None
    overall = "fail" if any(c.verdict == "fail" for c in checks) else "warn" if any(
        c.verdict == "warn" for c in checks) else "pass"
    if args.json:
        print(json.dumps({"result": overall, "frame": moment, "triggers_seen": len(triggers),
                          "checks": [asdict(c) for c in checks],
                          "snapshot": str(snapshot) if snapshot else None, "snapshot_error": snapshot_error or None}))
    else:
        for c in checks:
            print(f"{c.verdict.upper():4}  {c.name:<12} {c.value} {c.unit}  {c.advice}")
        print(f"frame: {moment}; triggers seen: {len(triggers)}")
        print(f"overall: {overall.upper()}; annotated snapshot: {snapshot or 'none'}")
    if snapshot_error:
        print(f"alpr-node aim: {snapshot_error}", file=sys.stderr)
    return 0 if overall != "fail" else 1
