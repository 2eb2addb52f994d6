"""`alpr-hil run` around the runner, without running the runtime: clips checked before any run,
a scenario that cannot run does not cost the others' reports, misreads listed under the summary."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest

from hardware.clip import CameraSettings, Clip, ClipWriter
from hardware.errors import ClipError
from hil import cli
from hil import runner as hil_runner
from hil import scenario as scenarios
from hil.errors import BadScenario, RunFailed
from hil.judge import Judge, NodeRun, OutboxStatus, StoredRead
from hil.runner import RunResult, ScenarioRunner

pytestmark = pytest.mark.hil

S = 1_000_000_000
OFFSET = 1_700_000_000 * S
ORIGIN = 5_000 * S


def _clip(path: Path) -> Path:
    """2 s at 10 fps, 64x36, one vehicle on loop1."""
    with ClipWriter(path, CameraSettings((64, 36), (32, 18), 10.0)) as w:
        for i in range(21):
            w.add_frame(np.zeros((36, 64, 3), np.uint8), i * S // 10)
        w.add_trigger(17, "falling", S // 2, name="loop1")
        w.add_trigger(17, "rising", S, name="loop1")
        w.add_vehicle("ABC123", S // 4, int(1.5 * S))
    return path


def _scenario_file(folder: Path, name: str, clip: Path) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(f'[scenario]\nclip = "{clip}"\nspeed = 0\n')
    return path


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return _scenario_file(tmp_path, "good", _clip(tmp_path / "clip-good"))


@pytest.fixture
def wrong_size(tmp_path: Path) -> Path:
    clip = _clip(tmp_path / "clip-wrong-size")
    _, data = cv2.imencode(".jpg", np.zeros((18, 32, 3), np.uint8))
    (clip / "frames" / "000006.jpg").write_bytes(data.tobytes())
    return _scenario_file(tmp_path, "wrong-size", clip)


def _result(scenario: scenarios.Scenario, out: Path, plate: str) -> RunResult:
    """A judged run of `scenario` in which HQ stored one read, `plate`, for its vehicle."""
    clip = Clip.load(scenario.clip)
    capture = ORIGIN + int(0.8 * S) + OFFSET
    reads = [StoredRead(1, plate, 0.87, capture, capture + S // 2, f"loop1-{ORIGIN + S // 2}", "1")]
    runs = [NodeRun(0, ORIGIN + 40_000_000, ORIGIN + 5 * S, False)]
    j = Judge(clip, runs, OFFSET, speed=0.0).judge(reads, [], OutboxStatus(1, 1, 0, {}))
    out.mkdir(parents=True, exist_ok=True)
    return RunResult(scenario, clip, j, [], 0, 1.0, [0], out)


def test_a_frame_of_the_wrong_size_fails_at_load_naming_the_frame_file_and_field(wrong_size: Path):
    with pytest.raises(BadScenario) as info:
        scenarios.load(wrong_size)
    message = str(info.value)
    assert message.startswith(f"{wrong_size}: scenario.clip: ")
    assert "frames/000006.jpg: frames[5].file is 32x18, camera.resolution says 64x36" in message
    with pytest.raises(ClipError, match=r"frames\[5\]\.file is 32x18"):
        scenarios.check_clip(wrong_size.parent / "clip-wrong-size")


def test_the_runner_checks_frame_sizes_before_starting_anything(good: Path, tmp_path: Path):
    scenario = scenarios.load(good)
    _, data = cv2.imencode(".jpg", np.zeros((18, 32, 3), np.uint8))
    (scenario.clip / "frames" / "000003.jpg").write_bytes(data.tobytes())   # broken after loading
    with pytest.raises(ClipError, match=r"000003.jpg: frames\[2\]\.file is 32x18"):
        ScenarioRunner(scenario, tmp_path / "out").run()
    assert not (tmp_path / "out" / "lab").exists(), "no lab, broker or node may be started for a broken clip"


def test_a_broken_clip_stops_a_multi_scenario_run_before_any_scenario_runs(good, wrong_size, monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(hil_runner, "run_scenario", lambda s, out: ran.append(s.name))
    assert cli.main(["run", str(good), str(wrong_size), "--out", str(good.parent / "out")]) == 2
    assert ran == []
    assert "frames[5].file is 32x18" in capsys.readouterr().err


def test_a_scenario_that_cannot_run_does_not_cost_the_reports_of_the_others(good, tmp_path, monkeypatch, capsys):
    second = _scenario_file(tmp_path, "second", _clip(tmp_path / "clip-second"))

    def fake_run(s: scenarios.Scenario, out: Path) -> RunResult:
        if s.name == "second":
            raise RunFailed("alpr-node run exited with 1 before starting; see lab/hil-node.log")
        return _result(s, out, "ABC123")
    monkeypatch.setattr(hil_runner, "run_scenario", fake_run)
    out = tmp_path / "out"
    code = cli.main(["run", str(good), str(second), "--out", str(out), "--junit", str(out / "j.xml"),
                     "--html", str(out / "r.html")])
    assert code == 2
    stdout = capsys.readouterr().out
    assert "good: PASS" in stdout and "second: ERROR (not run) - RunFailed: alpr-node run exited" in stdout
    assert json.loads((out / "good" / "result.json").read_text())["passed"] is True
    assert json.loads((out / "second" / "result.json").read_text())["error"].startswith("RunFailed")
    suites = {s.get("name"): s for s in ET.parse(out / "j.xml").getroot().findall("testsuite")}
    assert sorted(suites) == ["good", "second"]
    assert suites["good"].get("failures") == "0" and suites["second"].get("errors") == "1"
    assert suites["second"].find("testcase/error") is not None
    assert "not run" in (out / "r.html").read_text()


def test_each_misread_vehicle_is_listed_under_the_summary(good, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(hil_runner, "run_scenario", lambda s, out: _result(s, out, "A8C123"))
    assert cli.main(["run", str(good), "--out", str(tmp_path / "out")]) == 0   # min_correct 0 by default
    lines = capsys.readouterr().out.splitlines()
    summary = next(i for i, line in enumerate(lines) if line.startswith("good: PASS"))
    assert "misread 1" in lines[summary]
    assert lines[summary + 1] == "  misread: truth ABC123, read A8C123 (0.87, run 1) (legible 0.25-1.50s)"
