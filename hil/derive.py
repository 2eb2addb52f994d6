"""Clips derived from a shipped clip for one run: camera stalls (gaps) and repeats (soaks).

A derived clip is a new clip.json whose `frames` directory is a symlink to the original's, so
nothing is copied: a 1000x repeat costs one JSON file (or, to time the node's reads of them, a
copy of the frames it uses: hil.pace). The result is loaded with `Clip.load`,
so it is validated like any clip.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from hardware.clip import CLIP_JSON, Clip


def derive_clip(source: Clip, out: Path, *, gaps: list[tuple[int, int]] | None = None, repeat: int = 1,
                copy_frames: bool = False) -> Clip:
    """Write `out` from `source` repeated `repeat` times, then with frames in each gap removed.

    gaps: (start_ns, length_ns) in the derived clip's time; frames in [start, start + length)
    are left out, so the camera sees nothing for that long (a stall once longer than the
    capture timeout). Triggers are kept (the loop still sees the vehicle). Ground-truth boxes
    in removed frames go; a vehicle's window shrinks to its remaining boxes.
    copy_frames: copy the frame files the derived clip uses instead of linking the source's
    frames folder, so that this run's reads can be timed on them (hil.pace) without touching
    the source clip.
    """
    out.mkdir(parents=True, exist_ok=True)
    link = out / "frames"
    if link.is_symlink():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    if not copy_frames:
        os.symlink((source.path / "frames").resolve(), link, target_is_directory=True)
    period = repeat_period_ns(source)
    frames: list[dict[str, Any]] = []
    triggers: list[dict[str, Any]] = []
    vehicles: list[dict[str, Any]] = []
    gaps = gaps or []

    def removed(t_ns: int) -> bool:
        return any(start <= t_ns < start + length for start, length in gaps)

    index_map: dict[int, int] = {}
    for r in range(repeat):
        offset = r * period
        for i, frame in enumerate(source.frames):
            t_ns = frame.t_ns + offset
            if removed(t_ns):
                continue
            index_map[r * len(source.frames) + i] = len(frames)
            entry: dict[str, Any] = {"file": frame.file, "t_ns": t_ns}
            if frame.metadata:
                entry["metadata"] = frame.metadata
            frames.append(entry)
        for trig in source.triggers:
            entry = {"pin": trig.pin, "edge": trig.edge, "t_ns": trig.t_ns + offset}
            if trig.name:
                entry["name"] = trig.name
            triggers.append(entry)
        for v in source.vehicles:
            boxes = [{"frame": index_map[r * len(source.frames) + b.frame], "box": list(b.box)}
                     for b in v.boxes if r * len(source.frames) + b.frame in index_map]
            start, end = v.t_start_ns + offset, v.t_end_ns + offset
            if boxes:
                start, end = frames[boxes[0]["frame"]]["t_ns"], frames[boxes[-1]["frame"]]["t_ns"]
            vehicles.append({"plate": v.plate, "t_start_ns": start, "t_end_ns": end, "boxes": boxes})
    if copy_frames:
        link.mkdir()
        for name in sorted({f["file"] for f in frames}):
            # copyfile, not copy2: a new modification time, and no access time carried over.
            shutil.copyfile(source.path / name, out / name)
    cam = source.camera
    camera: dict[str, Any] = {"resolution": list(cam.resolution), "lores_size": list(cam.lores_size), "fps": cam.fps}
    for key in ("exposure_us", "analogue_gain", "model"):
        if getattr(cam, key) is not None:
            camera[key] = getattr(cam, key)
    what = []
    if repeat > 1:
        what.append(f"repeated {repeat}x")
    if gaps:
        what.append(", ".join(f"stall {s / 1e9:.1f}s+{n / 1e9:.1f}s" for s, n in gaps))
    doc = {"format": "alpr-clip", "version": 1,
           "description": f"{source.description or source.path.name} ({'; '.join(what) or 'copy'})",
           "camera": camera, "frames": frames, "triggers": triggers, "ground_truth": {"vehicles": vehicles}}
    tmp = out / (CLIP_JSON + ".tmp")
    tmp.write_text(json.dumps(doc) + "\n", encoding="utf-8")
    os.replace(tmp, out / CLIP_JSON)
    return Clip.load(out)


def repeat_period_ns(source: Clip) -> int:
    """How far apart two repeats of `source` start in a repeated clip: its last frame plus one frame period."""
    return source.duration_ns + _frame_period_ns(source)


def _frame_period_ns(clip: Clip) -> int:
    if len(clip.frames) > 1:
        return (clip.frames[-1].t_ns - clip.frames[0].t_ns) // (len(clip.frames) - 1)
    return int(1e9 / clip.camera.fps)
