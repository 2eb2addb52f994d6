"""Fault times against the clip: a fault the run would never reach is refused when the scenario is
loaded, before anything runs, naming the scenario file, the fault, its time and the clip's length.

The shipped clips used here (hil/clips): day-3-vehicles is 69 frames at 8 fps (8.62 s long, last
frame at 8.50 s); false-trigger is 49 frames (6.12 s long, last frame at 6.00 s).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hil import cli
from hil import runner as hil_runner
from hil import scenario as scenarios
from hil.errors import BadScenario

pytestmark = pytest.mark.hil

DAY = '[scenario]\nclip = "day-3-vehicles"\n'


def _write(tmp_path: Path, body: str, name: str = "late") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(body)
    return path


def _refusal(path: Path) -> str:
    with pytest.raises(BadScenario) as info:
        scenarios.load(path)
    return str(info.value)


def test_a_fault_after_the_clip_ends_is_refused_naming_file_fault_time_and_clip_length(tmp_path: Path):
    path = _write(tmp_path, DAY + '[[faults]]\nkind = "broker_outage"\nat_s = 30\nduration_s = 2\n')
    message = _refusal(path)
    assert message.startswith(f"{path}: faults[0].at_s: broker_outage at 30 s is after the replay ends: ")
    assert "clip day-3-vehicles is 8.62 s long, last frame at 8.50 s" in message
    assert "a fault must begin before 8.50 s" in message


def test_alpr_hil_run_refuses_it_before_any_scenario_runs(tmp_path: Path, monkeypatch, capsys):
    good = _write(tmp_path, DAY + '[[faults]]\nkind = "broker_restart"\nat_s = 4\n', "good")
    late = _write(tmp_path, DAY + '[[faults]]\nkind = "power_cut"\nat_s = 30\nduration_s = 2\n')
    ran: list[str] = []
    monkeypatch.setattr(hil_runner, "run_scenario", lambda s, out: ran.append(s.name))
    assert cli.main(["run", str(good), str(late), "--out", str(tmp_path / "out")]) == 2
    assert ran == [], "nothing may run when one named scenario has a fault it would never reach"
    err = capsys.readouterr().err
    assert f"{late}: faults[0].at_s: power_cut at 30 s is after the replay ends" in err
    assert "8.62 s long" in err


@pytest.mark.parametrize("at_s, ok", [(8.4, True), (8.5, False), (8.6, False)])
def test_the_bound_is_the_last_frame(tmp_path: Path, at_s: float, ok: bool):
    # The node finishes soon after its replay delivers the last frame: a fault due then races
    # the node's exit, so it is refused with the ones after the clip.
    path = _write(tmp_path, DAY + f'[[faults]]\nkind = "broker_restart"\nat_s = {at_s}\n')
    if ok:
        assert [f.at_s for f in scenarios.load(path).faults] == [at_s]
    else:
        assert f"broker_restart at {at_s:g} s is after the replay ends" in _refusal(path)


def test_an_outage_may_run_past_the_end_of_the_clip(tmp_path: Path):
    # The node cannot finish before its outbox has drained, so the bench still ends the outage
    # and the run waits for it (false-trigger-disk-full keeps the broker down past its clip).
    path = _write(tmp_path, '[scenario]\nclip = "false-trigger"\n[[faults]]\nkind = "broker_outage"\nat_s = 5\n'
                            'duration_s = 20\n[[faults]]\nkind = "ingest_down"\nat_s = 5.9\nduration_s = 20\n')
    assert [(f.kind, f.end_s) for f in scenarios.load(path).faults] == [("broker_outage", 25.0), ("ingest_down", 25.9)]
    assert scenarios.load(scenarios.find("false-trigger-disk-full")).faults[0].end_s > 6.125


def test_a_camera_stall_must_end_before_the_last_frame(tmp_path: Path):
    # The gap is only a stall if a frame comes after it; one running to the end just ends the clip.
    message = _refusal(_write(tmp_path, DAY + '[[faults]]\nkind = "camera_stall"\nat_s = 6\nduration_s = 3\n'))
    assert "faults[0].duration_s: camera_stall from 6 s to 9 s (clip time) does not end before the clip's " \
           "last frame: clip day-3-vehicles is 8.62 s long, last frame at 8.50 s" in message
    message = _refusal(_write(tmp_path, DAY + '[[faults]]\nkind = "camera_stall"\nat_s = 30\nduration_s = 3\n'))
    assert "faults[0].at_s: camera_stall from 30 s to 33 s" in message
    ok = _write(tmp_path, DAY + '[[faults]]\nkind = "camera_stall"\nat_s = 5\nduration_s = 3\n')
    assert scenarios.load(ok).faults[0].end_s == 8.0


def test_a_power_cut_restarts_the_replay_and_so_moves_the_end(tmp_path: Path):
    # Power back at 6 s: the restarted node replays the whole clip again, until 6 + 8.5 = 14.5 s.
    cut = '[[faults]]\nkind = "power_cut"\nat_s = 4\nduration_s = 2\n'
    ok = _write(tmp_path, DAY + cut + '[[faults]]\nkind = "broker_restart"\nat_s = 14.4\n')
    assert [f.kind for f in scenarios.load(ok).faults] == ["power_cut", "broker_restart"]
    message = _refusal(_write(tmp_path, DAY + cut + '[[faults]]\nkind = "broker_restart"\nat_s = 14.6\n'))
    assert "faults[1].at_s: broker_restart at 14.6 s is after the replay ends: the node restarted after the " \
           "power cut at 4 s replays the clip until 14.50 s" in message
    message = _refusal(_write(tmp_path, DAY + cut + '[[faults]]\nkind = "power_cut"\nat_s = 5\nduration_s = 1\n'))
    assert "faults[1].at_s: power_cut at 5 s comes while the node is still off after the power cut at 4 s" in message
    message = _refusal(_write(tmp_path, DAY + '[[faults]]\nkind = "power_cut"\nat_s = 1\nduration_s = 1\n'
                                              'every_s = 5\n'))
    assert "faults[0].every_s: is not supported for power_cut" in message


def test_the_bound_follows_the_speed_and_the_repeats(tmp_path: Path):
    fast = _write(tmp_path, DAY.replace("\n", "\nspeed = 2\n", 1) + '[[faults]]\nkind = "broker_restart"\nat_s = 5\n')
    assert "(4.25 s into the run at speed 2)" in _refusal(fast)
    looped = _write(tmp_path, DAY.replace("\n", "\nrepeat = 3\n", 1) + '[[faults]]\nkind = "broker_restart"\n'
                                                                      'at_s = 20\nevery_s = 5\n')
    # 3 x 8.625 s, last frame at 25.75 s: the repeats stop inside the replay
    assert [f.at_s for f in scenarios.load(looped).faults] == [20.0, 25.0]
    late = _write(tmp_path, DAY.replace("\n", "\nrepeat = 3\n", 1) + '[[faults]]\nkind = "broker_restart"\nat_s = 26\n')
    assert "clip day-3-vehicles x3 is 25.88 s long, last frame at 25.75 s" in _refusal(late)


def test_faults_and_the_replay_must_end_before_the_timeout(tmp_path: Path):
    head = '[scenario]\nclip = "day-3-vehicles"\ntimeout_s = 20\n'
    message = _refusal(_write(tmp_path, head + '[[faults]]\nkind = "ingest_down"\nat_s = 5\nduration_s = 15\n'))
    assert "faults[0].duration_s: ingest_down at 5 s ends at 20 s, not before scenario.timeout_s = 20" in message
    message = _refusal(_write(tmp_path, head.replace("20", "8") + '[[faults]]\nkind = "broker_restart"\nat_s = 4\n'))
    assert "scenario.timeout_s: 8 s does not cover the replay, which ends 8.50 s after the node starts" in message



def _blank_clip(path: Path, seconds: float) -> Path:
    """Black 1280x720 frames at 8 fps, no trigger, no vehicle: a lossless replay of it is over in moments."""
    from hardware.clip import CameraSettings, ClipWriter

    with ClipWriter(path, CameraSettings((1280, 720), (640, 352), 8.0)) as w:
        for i in range(int(seconds * 8)):
            w.add_frame(np.zeros((720, 1280, 3), np.uint8), i * 125_000_000)
    return path


def test_a_fault_a_lossless_replay_never_reaches_is_a_bench_error_not_applied_late(tmp_path: Path):
    # At speed 0 the replay runs at the machine's pace, so load() can only bound faults by the
    # clip's own length (20 s here): the node is done long before 15 s. The fault must then be
    # reported as not applied, not applied to a node that has exited while the run passes.
    clip = _blank_clip(tmp_path / "blank", 20.0)
    path = _write(tmp_path, f'[scenario]\nclip = "{clip}"\nspeed = 0\ntimeout_s = 60\n'
                            '[[faults]]\nkind = "broker_restart"\nat_s = 15\n')
    scenario = scenarios.load(path)
    result = hil_runner.run_scenario(scenario, tmp_path / "out")
    assert not result.passed
    assert any(e.startswith("broker_restart at 15s was not applied: the node had finished its run") for e in
               result.errors), result.errors
    assert not any(e.kind == "fault" for e in result.timeline), "the fault must not be applied after the node exited"
    node = [e.wall_ns for e in result.timeline if e.kind == "node"]
    assert (node[-1] - node[0]) / 1e9 < 15, "the bench must not keep the run going for a fault it will not apply"
