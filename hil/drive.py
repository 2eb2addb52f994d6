"""`alpr-hil drive` (bench mode): replay a clip's loop edges onto real GPIO outputs in real time.

Run on the driver Pi (or on the node Pi with a loopback wire, see docs/hil.md), wired to the
node's trigger inputs. Electrical edges are replayed as recorded: the output is high at rest
(the node's pulled-up input reads "no vehicle"), low from each falling edge to the next rising
edge. An optional player command (showing the clip on the monitor in front of the camera) is
started at clip time 0 so picture and loops stay in step.
"""
from __future__ import annotations

import logging
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any

from hardware.clip import Clip
from hardware.gpio import OutputPin
from hil.errors import BadArgument

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriveReport:
    """What was driven: (clip t_ns, output BCM pin, level) in order, and the worst lateness."""

    edges: list[tuple[int, int, int]]
    worst_late_ms: float


def parse_map(text: str) -> tuple[int, int]:
    """'17=22': the clip's pin 17 is driven on output BCM 22."""
    left, sep, right = text.partition("=")
    if not sep or not left.isdigit() or not right.isdigit() or not (0 <= int(left) <= 27 and 0 <= int(right) <= 27):
        raise BadArgument(f"--map {text!r}: expected CLIP_PIN=OUTPUT_PIN with BCM numbers 0-27, e.g. 17=22")
    return int(left), int(right)


def drive(clip: Clip, pin_map: dict[int, int], *, gpio_module: Any | None = None, player: str | None = None,
          stop: threading.Event | None = None, speed: float = 1.0) -> DriveReport:
    """Drive the clip's trigger edges on the mapped outputs at their times; returns what was driven."""
    if speed <= 0:
        raise BadArgument("--speed: must be > 0 (edges are driven in real time)")
    missing = sorted({t.pin for t in clip.triggers} - set(pin_map))
    if missing:
        raise BadArgument(f"{clip.path}: trigger pins {missing} have no --map CLIP_PIN=OUTPUT_PIN")
    stop = stop or threading.Event()
    outputs: dict[int, OutputPin] = {}
    try:
        for src, dst in pin_map.items():
            # active_high=False: "on" is the low level, i.e. a vehicle on the loop.
            outputs[src] = OutputPin(dst, name=f"drive{src}", active_high=False, initial=False, gpio_module=gpio_module)
    except BaseException:
        # The pins already set up are released before the error (GpioError: exit 2 in the CLI) goes up.
        for out in outputs.values():
            out.close()
        raise
    proc = subprocess.Popen(shlex.split(player)) if player else None
    origin = time.monotonic_ns()
    edges: list[tuple[int, int, int]] = []
    worst = 0.0
    try:
        for trig in clip.triggers:
            due = origin + int(trig.t_ns / speed)
            if stop.wait(max(0.0, (due - time.monotonic_ns()) / 1e9)):
                break
            out = outputs[trig.pin]
            if trig.edge == "falling":
                out.on()
            else:
                out.off()
            worst = max(worst, (time.monotonic_ns() - due) / 1e6)
            edges.append((trig.t_ns, pin_map[trig.pin], 0 if trig.edge == "falling" else 1))
    finally:
        for out in outputs.values():
            out.close()
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
    log.info("drive: %d edges, worst %.1f ms late", len(edges), worst)
    return DriveReport(edges, worst)
