"""Synthetic clips: the shipped set matches its definitions, stays small, and its ground truth is sane."""
from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest

from hardware.clip import Clip
from hil.catalog import CLIPS
from hil.derive import derive_clip
from hil.scenario import CLIP_DIR
from hil.synth import ClipSpec, FalseTrigger, Look, VehiclePass, write_clip

pytestmark = pytest.mark.hil


def test_shipped_clips_are_the_catalogue_and_fit_in_10_mb():
    total = sum(p.stat().st_size for p in CLIP_DIR.rglob("*") if p.is_file())
    assert total <= 10 * 1024 * 1024, f"hil/clips is {total / 1e6:.1f} MB"
    assert sorted(p.parent.name for p in CLIP_DIR.glob("*/clip.json")) == sorted(CLIPS)
    for name, spec in CLIPS.items():
        clip = Clip.load(CLIP_DIR / name)
        assert clip.camera.resolution == (1280, 720) and clip.camera.lores_size == (640, 352)
        assert [v.plate for v in clip.vehicles] == [v.label for v in spec.vehicles]
        falling = [t for t in clip.triggers if t.edge == "falling"]
        assert len(falling) == len(spec.vehicles) + len(spec.false_triggers)
        assert {t.pin for t in clip.triggers} <= {17, 27}
        for v in clip.vehicles:
            assert v.boxes and v.t_end_ns > v.t_start_ns
            # each vehicle's loop fires while its plate is legible
            assert any(v.t_start_ns - 500_000_000 <= t.t_ns <= v.t_end_ns for t in falling)


def test_false_trigger_clip_has_an_edge_with_no_vehicle_in_view():
    clip = Clip.load(CLIP_DIR / "false-trigger")
    lonely = [t for t in clip.triggers if t.edge == "falling"
              and not any(v.t_start_ns - 1_000_000_000 <= t.t_ns <= v.t_end_ns + 1_000_000_000 for v in clip.vehicles)]
    assert len(lonely) == 1


def test_synthesis_approach_night_two_lanes_and_occlusion(tmp_path: Path):
    spec = ClipSpec(name="t", duration_s=3.0, fps=8.0, size=(640, 360), lores_size=(320, 176), seed=3,
                    look=Look(night_ir=True, noise_sigma=3.0, exposure_us=8000, lux=2.0),
                    vehicles=(VehiclePass("AB 1234", enter_s=0.0), VehiclePass("CD 5678", enter_s=0.7),
                              VehiclePass("EF 9012", enter_s=0.5, lane=2)),
                    false_triggers=(FalseTrigger(2.6, 0.2, lane=2),))
    clip = write_clip(spec, tmp_path / "t")
    assert len(clip) == 25 and clip.camera.exposure_us == 8000
    by_plate = {v.plate: v for v in clip.vehicles}
    near = by_plate["AB1234"]
    widths = [b.box[2] - b.box[0] for b in near.boxes]
    assert widths == sorted(widths) and widths[-1] > 1.5 * widths[0], "the plate grows as the vehicle approaches"
    assert all(0 <= b.box[0] < b.box[2] <= 640 and 0 <= b.box[1] < b.box[3] <= 360 for b in near.boxes)
    # the follower in the same lane is hidden behind the leader for part of its approach
    assert len(by_plate["CD5678"].boxes) < len(near.boxes)
    pins = {(t.pin, t.name) for t in clip.triggers}
    assert pins == {(17, "loop1"), (27, "loop2")}
    rgb = clip.read_main(10)
    assert (rgb[..., 0] == rgb[..., 1]).all(), "night IR frames are monochrome"


def test_derived_clip_with_a_stall_and_repeats_links_frames(tmp_path: Path):
    source = write_clip(replace(CLIPS["false-trigger"], size=(320, 180), lores_size=(160, 88)), tmp_path / "src")
    derived = derive_clip(source, tmp_path / "d", gaps=[(3_000_000_000, 2_000_000_000)], repeat=2)
    period = source.duration_ns + 125_000_000
    assert len(derived.triggers) == 2 * len(source.triggers)
    times = [f.t_ns for f in derived.frames]
    assert not [t for t in times if 3_000_000_000 <= t < 5_000_000_000]
    assert max(b - a for a, b in itertools.pairwise(times)) >= 2_000_000_000
    assert derived.frames[-1].t_ns == source.frames[-1].t_ns + period
    assert (tmp_path / "d" / "frames").is_symlink()
    assert len(derived.vehicles) == 2 and derived.vehicles[1].t_start_ns >= period
