"""The short scenarios of hil/scenarios, run once each against the real runtime (real mosquitto,
`alpr-node run` and `alpr-hq ingest` child processes), then checked.

The data-path assertions hold whatever the models can read: every message the node committed
is stored at HQ exactly once (or counted as dropped under quota), every trigger ends in a read
or a no_read event, the reports are written. Plate correctness is asserted against the ground
truth at the level each scenario's [expect] min_correct sets (raise it as the models improve);
the measured figures are in each scenario's result.json and in the JUnit properties.
"""
from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hil import scenario as scenarios
from hil.judge import normalise
from hil.report import write_reports
from hil.runner import RunResult, run_scenario

pytestmark = pytest.mark.hil

SHORT = {s.name: s for s in scenarios.shipped()}
CLI_SCENARIO = "false-trigger-disk-full"  # run through the `alpr-hil run` command line; the rest via the API


class Runs:
    """Each scenario run once, on first use (so each test's setup holds at most one run)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.results: dict[str, RunResult] = {}

    def __getitem__(self, name: str) -> RunResult:
        if name not in self.results:
            self.results[name] = run_scenario(SHORT[name], self.out / name)
        return self.results[name]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    return Runs(tmp_path_factory.mktemp("hil"))


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("hil-cli")
    proc = subprocess.run([sys.executable, "-m", "hil.cli", "run", CLI_SCENARIO, "--out", str(out),
                           "--junit", str(out / "junit.xml"), "--html", str(out / "report.html")],
                          capture_output=True, text=True, timeout=180, check=False)
    return proc, out


def test_shipped_scenarios_are_short_and_cover_every_fault():
    kinds = {f.kind for s in SHORT.values() for f in s.faults}
    assert kinds == set(scenarios.FAULT_KINDS)
    assert all(s.timeout_s <= 100 and s.repeat == 1 for s in SHORT.values())
    assert any(s.long for s in scenarios.shipped(include_long=True))


# Vehicles the shipped models misread in a scenario's clip, with the reason in its [expect]
# comment (close-following: lane 2's small JNX5206, read JNX5286 by the OCR pair P18).
KNOWN_MISREADS = {"close-following": 1}


def test_one_wrong_vehicle_more_than_known_fails_every_short_scenario():
    # The shipped models read every vehicle of these clips but the known misreads (see the
    # [expect] comments): a min_correct that still passes with one more vehicle wrong hides a
    # wrong ground truth or a new misread. Counting every vehicle of the clip is the strictest
    # case (excused ones only make the judged count smaller, and (n - 1) / n with it). A scenario
    # that admits a misread must still want a read for every vehicle (min_read 1): losing one is
    # the runtime's fault, whatever the models do.
    from hardware.clip import Clip

    for s in SHORT.values():
        n = len(Clip.load(s.clip).vehicles)
        known = KNOWN_MISREADS.get(s.name, 0)
        right = n - known
        assert right / n >= s.expect.min_correct, f"{s.name}: min_correct {s.expect.min_correct} fails {right}/{n}"
        assert (right - 1) / n < s.expect.min_correct, \
            f"{s.name}: min_correct {s.expect.min_correct} passes {right - 1}/{n}"
        if known:
            assert s.expect.min_read == 1.0, f"{s.name}: admits a misread, so every vehicle must get a read"


@pytest.mark.parametrize("name", sorted(set(SHORT) - {CLI_SCENARIO}))
def test_data_path_is_exactly_once_and_every_trigger_is_accounted(runs, name):
    r = runs[name]
    assert not r.errors, r.errors
    d = r.judgement.data
    assert d.committed > 0, "the node committed nothing: no read and no no_read event"
    assert d.lost == 0, f"lost {d.lost}; missing seqs {d.missing_seqs}"
    assert d.duplicates == 0 and d.conflicts == 0
    assert d.stored_reads + d.stored_events + d.dropped == d.committed
    unaccounted = [t for t in r.judgement.triggers if t.outcome == "unaccounted"]
    assert not unaccounted, unaccounted
    assert all(code == 0 for code in r.node_exit_codes[-1:]), r.node_exit_codes


@pytest.mark.parametrize("name", sorted(set(SHORT) - {CLI_SCENARIO}))
def test_vehicle_outcomes_against_ground_truth(runs, name):
    r = runs[name]
    for v in r.judgement.vehicles:
        for m in v.matches:
            assert m.correct == (normalise(m.read.plate) == normalise(v.plate))
        # Two different misreads of one vehicle are a model matter (reported as "duplicate");
        # the right plate sent twice in one run is the node's dedup failing.
        if v.duplicate_correct:
            pytest.fail(f"{v.plate}: sent more than once in one node run: {[m.read.plate for m in v.matches]}")
    f = r.judgement.figures()
    judged = f["vehicles"] - f["excused"]
    # every judged vehicle has exactly one outcome (re-reads after a power cut count as correct)
    assert f["reads_correct"] + f["misread"] + f["missed"] + f["duplicates"] == judged
    if r.inconclusive:
        # The plate marks hold for a node whose camera keeps time (every vehicle read, on a
        # normal machine); this machine was too busy to give it that, measured (hil.pace).
        pytest.skip(f"{name}: {r.real_time_note()}; missed marks: {r.expectation_failures()}")
    assert not r.expectation_failures(), r.expectation_failures()


@pytest.mark.parametrize("name", sorted(n for n in set(SHORT) - {CLI_SCENARIO} if SHORT[n].speed > 0))
def test_the_real_time_replay_is_timed_frame_by_frame(runs, name):
    # Every frame of the clip is read by the node's camera in each node run (the replay never
    # skips one: late frames come late), and how late is measured and reported.
    r = runs[name]
    assert len(r.pace) == len(r.node_exit_codes), r.pace
    last = r.pace[-1]
    assert last.frames_read == len(r.clip), (last, len(r.clip))
    if last.max_lag_s is None:
        pytest.skip("the filesystem under the run folder keeps no access times")
    assert last.max_lag_s >= 0
    assert r.kept_real_time == all(p.max_lag_s < r.real_time_limit_s for p in r.pace)
    assert r.to_json()["real_time"]["node_runs"][-1]["frames_read"] == len(r.clip)


def test_power_cut_commits_before_the_kill_reach_hq_once_and_the_replay_is_judged_per_run(runs):
    r = runs["power-cut"]
    assert len(r.node_exit_codes) == 2 and r.node_exit_codes[0] == -9 and r.node_exit_codes[1] == 0
    runs_seen = {t.run for t in r.judgement.triggers}
    assert runs_seen == {0, 1}
    # the second run replays the whole clip: each of its triggers ends in a read or no_read
    assert all(t.outcome in ("read", "no_read", "suppressed as duplicate") for t in r.judgement.triggers if t.run == 1)
    assert r.judgement.data.lost == 0 and r.judgement.data.duplicates == 0


def test_camera_stall_excuses_the_hidden_vehicle_but_its_trigger_still_ends_in_an_event(runs):
    r = runs["camera-stall"]
    hidden = [v for v in r.judgement.vehicles if v.excused]
    assert len(hidden) == 1 and hidden[0].plate == "KXT4821"
    trig = [t for t in r.judgement.triggers if abs(t.t_s - 3.84) < 0.1]
    assert trig and trig[0].outcome in ("no_read", "read")
    assert any(e.kind == "fault" and "camera stall" in e.text for e in r.timeline)


def test_reports_are_written_and_agree_with_the_results(runs):
    names = sorted(set(SHORT) - {CLI_SCENARIO})
    results = [runs[name] for name in names]
    write_reports(results, junit=runs.out / "junit.xml", html_path=runs.out / "report.html")
    tree = ET.parse(runs.out / "junit.xml")
    suites = {s.get("name"): s for s in tree.getroot().findall("testsuite")}
    assert sorted(suites) == names
    for name, suite in suites.items():
        r = runs[name]
        props = {p.get("name"): p.get("value") for p in suite.find("properties")}
        assert props["data_lost"] == "0" and int(props["vehicles"]) == len(r.judgement.vehicles)
        data_case = next(c for c in suite.findall("testcase") if c.get("name").startswith("data path"))
        assert data_case.find("failure") is None
    page = (runs.out / "report.html").read_text()
    for r in results:
        assert f"id='{r.scenario.name}'" in page
        for v in r.judgement.vehicles:
            assert v.plate in page
            if any(m.read.crop for m in v.matches):
                assert "data:image/jpeg;base64," in page


def test_cli_false_trigger_with_a_nearly_full_disk(cli_run):
    proc, out = cli_run
    result = json.loads((out / CLI_SCENARIO / "result.json").read_text())
    # exit status 0 exactly when the scenario passed (misreads or a false read can fail it)
    assert proc.returncode == (0 if result["passed"] else 1), proc.stdout + proc.stderr
    assert result["data_path_ok"]
    data = result["data"]
    assert data["lost"] == 0 and data["duplicates"] == 0
    assert data["dropped"] > 0, "quota 0.015 MB with the broker down should have forced drops"
    assert data["stored_reads"] + data["stored_events"] + data["dropped"] == data["committed"]
    # The false trigger (1.0 s) ends in a no_read event, never a read. Under this quota that
    # no_read is the oldest message, the one the outbox drops: then the node's log is where it is
    # seen (committed as a no_read, then dropped under quota), since HQ never gets it.
    false = next(t for t in result["triggers"] if abs(t["t_s"] - 1.0) < 0.05)
    if false["outcome"] == "dropped under quota":
        assert len(false["node_dropped"]) == 1, false
        assert false["node_logged"] == [f"no_read seq {false['node_dropped'][0]}"], false
    else:
        assert false["outcome"] == "no_read", false
    assert not result["phantom_reads"] and result["expect"]["max_false_reads"] == 0
    assert (out / "junit.xml").read_text().startswith("<?xml")
    assert "false-trigger-disk-full" in (out / "report.html").read_text()
