"""Lanes on the bench: a scenario wires the node's inputs ([[node.triggers]], with lanes), the
runner passes them into the node's config, and the judge checks every read is stored in its
vehicle's lane (review s20, finding F4: every replayed read was stored in lane "1")."""
from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from hardware.clip import CameraSettings, Clip, ClipWriter
from hil import scenario as scenarios
from hil.errors import BadScenario
from hil.judge import Judge, NodeRun, OutboxStatus, StoredRead
from hil.runner import RunResult, ScenarioRunner, run_scenario
from hil.scenario import Expect, Scenario

pytestmark = pytest.mark.hil

S = 1_000_000_000
OFFSET = 1_700_000_000 * S  # wall - monotonic
ORIGIN = 5_000 * S           # the run's replay origin (monotonic)
CLOSE_FOLLOWING = Path(__file__).resolve().parents[2] / "hil" / "clips" / "close-following"
TWO_LANES = """
[[node.triggers]]
name = "loop1"
pin = 17
lane = "1"

[[node.triggers]]
name = "loop2"
pin = 27
lane = "2"
"""


def write_scenario(tmp_path: Path, extra: str, clip: Path = CLOSE_FOLLOWING) -> Path:
    path = tmp_path / "lanes.toml"
    path.write_text(f'[scenario]\nclip = "{clip}"\nspeed = 0\ntimeout_s = 60\n{extra}')
    return path


@pytest.fixture
def two_lane_clip(tmp_path: Path) -> Clip:
    """10 s at 10 fps: ABC123 on loop1 (BCM 17, falls at 2 s), XYZ789 on loop2 (BCM 27, falls at 6 s)."""
    with ClipWriter(tmp_path / "c", CameraSettings((64, 36), (32, 18), 10.0)) as w:
        for i in range(101):
            w.add_frame(np.zeros((36, 64, 3), np.uint8), i * S // 10)
        for pin, name, fall in ((17, "loop1", 2.0), (27, "loop2", 6.0)):
            w.add_trigger(pin, "falling", int(fall * S), name=name)
            w.add_trigger(pin, "rising", int((fall + 0.6) * S), name=name)
        w.add_vehicle("ABC123", int(1.6 * S), int(2.8 * S))
        w.add_vehicle("XYZ789", int(5.6 * S), int(6.8 * S))
    return Clip.load(tmp_path / "c")


def stored(seq: int, plate: str, clip_t: float, trigger: str, trigger_t: float, lane: str) -> StoredRead:
    capture = ORIGIN + int(clip_t * S) + OFFSET
    return StoredRead(seq, plate, 0.9, capture, capture + S // 2, f"{trigger}-{ORIGIN + int(trigger_t * S)}", lane)


def one_run() -> list[NodeRun]:
    return [NodeRun(0, ORIGIN + 40_000_000, ORIGIN + 20 * S, False)]


# -- the scenario carries [[node.triggers]] into the node's config ---------------------------

def test_a_scenario_wires_the_nodes_inputs_with_lanes(tmp_path: Path):
    s = scenarios.load(write_scenario(tmp_path, TWO_LANES))
    assert s.wiring() == {17: ("loop1", "1"), 27: ("loop2", "2")}
    assert "triggers" not in s.node
    body = ScenarioRunner(s, tmp_path / "out")._node_body(Clip.load(CLOSE_FOLLOWING))
    doc = tomllib.loads(body)
    assert doc["triggers"] == [{"name": "loop1", "pin": 17, "lane": "1"}, {"name": "loop2", "pin": 27, "lane": "2"}]
    assert doc["source"]["kind"] == "clip"


def test_the_node_config_the_bench_writes_validates(tmp_path: Path):
    from node.config import NodeConfig

    s = scenarios.load(write_scenario(tmp_path, TWO_LANES + 'region = [0.5, 0, 1, 1]\n'))
    doc = tomllib.loads(ScenarioRunner(s, tmp_path / "out")._node_body(Clip.load(CLOSE_FOLLOWING)))
    cfg = NodeConfig.model_validate({"node": {"id": "hil-node", "site": "hil"}, **doc})
    assert [(t.name, t.pin, t.lane, t.region) for t in cfg.triggers] == [
        ("loop1", 17, "1", None), ("loop2", 27, "2", (0.5, 0.0, 1.0, 1.0))]


def test_the_benchs_trigger_keys_are_the_nodes():
    from node.config import TriggerSection

    assert scenarios.TRIGGER_KEYS == set(TriggerSection.model_fields)


def test_a_trigger_without_a_lane_is_in_lane_1(tmp_path: Path):
    s = scenarios.load(write_scenario(tmp_path, '[[node.triggers]]\nname = "north"\npin = 17\n'))
    assert s.wiring() == {17: ("north", "1")}
    assert scenarios.load(write_scenario(tmp_path, "")).wiring() is None


@pytest.mark.parametrize("extra, expected", [
    ('[[node.triggers]]\nname = "loop2"\npin = 27\nlane = 2\n',
     'node.triggers[0].lane: must be a non-empty string, e.g. lane = "2" (got 2)'),
    ('[[node.triggers]]\nname = "loop2"\npin = 27\nlaen = "2"\n', "node.triggers[0].laen: unknown key (typo?)"),
    ('[[node.triggers]]\npin = 27\n', "node.triggers[0].name: required: the trigger's name (got None)"),
    ('[[node.triggers]]\nname = "a"\npin = 40\n', "node.triggers[0].pin: required: a BCM pin 0-27 (got 40)"),
    (TWO_LANES + '[[node.triggers]]\nname = "loop3"\npin = 27\n',
     "node.triggers[2].pin: BCM 27 is also node.triggers[1]'s pin"),
    (TWO_LANES + '[[node.triggers]]\nname = "loop1"\npin = 22\n',
     "node.triggers[2].name: 'loop1' is also node.triggers[0]'s name"),
    ('[node]\ntriggers = { name = "a", pin = 17 }\n', "node.triggers: must be an array of tables"),
    ('[node]\npipeline = 3\n', "node.pipeline: must be a table"),
])
def test_bad_triggers_are_refused_naming_the_key(tmp_path: Path, extra: str, expected: str):
    path = write_scenario(tmp_path, extra)
    with pytest.raises(BadScenario) as info:
        scenarios.load(path)
    assert str(info.value).startswith(f"{path}: {expected}")


# -- the judge compares lanes ---------------------------------------------------------------

def test_a_read_stored_in_another_lane_fails_the_run(two_lane_clip: Clip, tmp_path: Path):
    wiring = {17: ("loop1", "1"), 27: ("loop2", "2")}
    reads = [_stored(1, "ABC123", 2.2, "loop1", 2.0, "1"), stored(2, "XYZ789", 6.3, "loop2", 6.0, "1")]
    j = Judge(two_lane_clip, one_run(), OFFSET, speed=1.0, wiring=wiring).judge(reads, [], OutboxStatus(2, 2, 0, {}))
    assert [v.lane for v in j.vehicles] == ["1", "2"]
    assert [v.outcome for v in j.vehicles] == ["correct", "correct"]
    assert j.lane_failures() == [("wrong lane: XYZ789 drives lane 2's loop (loop2@6.00s), but HQ stored its read "
                                  f"XYZ789 (seq 2, run 1, trigger loop2-{ORIGIN + 6 * S}) in lane 1")]
    assert j.figures()["wrong_lane"] == 1
    scenario = Scenario(name="t", path=tmp_path / "t.toml", clip=two_lane_clip.path, expect=Expect())
    result = RunResult(scenario, two_lane_clip, j, [], 0, 1.0, [0], tmp_path)
    assert result.verdict == "FAIL" and not result.inconclusive
    assert result.to_json()["lane_failures"] == j.lane_failures()

    right = [reads[0], stored(2, "XYZ789", 6.3, "loop2", 6.0, "2")]
    j = Judge(two_lane_clip, one_run(), OFFSET, speed=1.0, wiring=wiring).judge(right, [], OutboxStatus(2, 2, 0, {}))
    assert j.lane_failures() == []
    assert RunResult(scenario, two_lane_clip, j, [], 0, 1.0, [0], tmp_path).verdict == "PASS"


def test_without_wiring_no_lane_is_judged(two_lane_clip: Clip):
    reads = [_stored(1, "ABC123", 2.2, "loop1", 2.0, "1"), stored(2, "XYZ789", 6.3, "loop2", 6.0, "1")]
    j = Judge(two_lane_clip, one_run(), OFFSET, speed=1.0).judge(reads, [], OutboxStatus(2, 2, 0, {}))
    assert [v.lane for v in j.vehicles] == [None, None] and j.lane_failures() == []


def test_the_node_names_passes_after_its_triggers_and_unwired_pins_owe_no_message(two_lane_clip: Clip):
    # Wired as "north" on BCM 17 only: the node's trigger ids say "north", and loop2's edges go
    # nowhere (the node warns at start), so they are not unaccounted triggers.
    reads = [_stored(1, "ABC123", 2.2, "north", 2.0, "1")]
    j = Judge(two_lane_clip, one_run(), OFFSET, speed=1.0, wiring={17: ("north", "1")}).judge(
        reads, [], OutboxStatus(1, 1, 0, {}))
    assert [(t.name, t.outcome) for t in j.triggers] == [("north", "read")]
    assert j.every_trigger_has_a_message and j.lane_failures() == []
    assert [v.lane for v in j.vehicles] == ["1", None]
    assert j.vehicles[1].outcome == "missed"


# -- end to end: the real runtime stores lane 2's vehicle in lane 2 --------------------------

def test_close_following_wired_by_lane_stores_each_read_in_its_lane(tmp_path: Path):
    path = write_scenario(tmp_path, TWO_LANES + "\n[expect]\nmin_read = 1.0\n")
    result = run_scenario(scenarios.load(path), tmp_path / "out")
    j = result.judgement
    assert result.errors == [], result.errors
    assert {v.plate: v.lane for v in j.vehicles} == {"4PLM218": "1", "BWK7731": "1", "6TRE045": "1", "JNX5206": "2"}
    lanes = {v.plate: {m.read.lane for m in v.matches} for v in j.vehicles}
    assert lanes["JNX5206"] == {"2"}, lanes
    assert j.lane_failures() == [] and j.data_path_ok and j.every_trigger_has_a_message
    assert result.to_json()["vehicles"][3]["lane"] == "2"


def test_a_clip_without_trigger_edges_is_replayed_continuously(tmp_path: Path):
    # The node refuses triggered mode with no [[triggers]] and no edge in the clip (it would read
    # nothing), so the bench's node config replays such a clip continuously, unless told otherwise.
    blank = tmp_path / "blank"
    with ClipWriter(blank, CameraSettings((64, 36), (32, 18), 8.0)) as w:
        for i in range(8):
            w.add_frame(np.zeros((36, 64, 3), np.uint8), i * S // 8)
    clip = Clip.load(blank)
    s = scenarios.load(write_scenario(tmp_path, "", clip=blank))
    assert tomllib.loads(ScenarioRunner(s, tmp_path / "out")._node_body(clip))["pipeline"]["mode"] == "continuous"
    s = scenarios.load(write_scenario(tmp_path, '[node]\npipeline = { mode = "triggered" }\n', clip=blank))
    assert tomllib.loads(ScenarioRunner(s, tmp_path / "out")._node_body(clip))["pipeline"]["mode"] == "triggered"
    wired = scenarios.load(write_scenario(tmp_path, ""))
    body = tomllib.loads(ScenarioRunner(wired, tmp_path / "out")._node_body(Clip.load(CLOSE_FOLLOWING)))
    assert "mode" not in body["pipeline"]


# -- side by side --------------------------------------------------------------------------
_S = 1_000_000_000
_OFFSET = 1_700_000_000 * _S
_ORIGIN = 5_000 * _S


def _stored(seq, plate, clip_t, trigger, trigger_t, lane):
    capture = _ORIGIN + int(clip_t * _S) + _OFFSET
    return StoredRead(seq, plate, 0.9, capture, capture + _S // 2, f"{trigger}-{_ORIGIN + int(trigger_t * _S)}", lane)


def test_side_by_side_vehicles_legible_at_once_are_not_judged_by_the_other_lanes_loop(tmp_path):
    """Two vehicles side by side, legible at once: time cannot say whose loop edge was whose, so
    neither lane is judged (before, both were given loop2's lane and a right node FAILED)."""
    with ClipWriter(tmp_path / "c", CameraSettings((64, 36), (32, 18), 10.0)) as w:
        for i in range(61):
            w.add_frame(np.zeros((36, 64, 3), np.uint8), i * _S // 10)
        w.add_trigger(17, "falling", int(1.2 * _S), name="loop1"); w.add_trigger(17, "rising", int(1.8 * _S), name="loop1")
        w.add_trigger(27, "falling", int(1.9 * _S), name="loop2"); w.add_trigger(27, "rising", int(2.5 * _S), name="loop2")
        w.add_vehicle("ABC123", int(1.0 * _S), int(3.0 * _S))   # lane 1, on loop1 at 1.2 s
        w.add_vehicle("XYZ789", int(1.5 * _S), int(2.5 * _S))   # lane 2, on loop2 at 1.9 s
    clip = Clip.load(tmp_path / "c")
    wiring = {17: ("loop1", "1"), 27: ("loop2", "2")}
    # the node got it right: each read credited to its own loop, in its own lane
    reads = [_stored(1, "ABC123", 1.4, "loop1", 1.2, "1"), _stored(2, "XYZ789", 2.0, "loop2", 1.9, "2")]
    runs = [NodeRun(0, _ORIGIN + 40_000_000, _ORIGIN + 20 * _S, False)]
    j = Judge(clip, runs, _OFFSET, speed=1.0, wiring=wiring).judge(reads, [], OutboxStatus(2, 2, 0, {}))
    assert j.lane_failures() == []
    assert [v.lane for v in j.vehicles] == [None, None]
