"""The long soak (hil/scenarios/soak.toml, about two hours): only with `pytest --long`."""
from __future__ import annotations

import pytest

from hil import scenario as scenarios
from hil.runner import run_scenario

pytestmark = [pytest.mark.hil, pytest.mark.long]


@pytest.mark.timeout(8000)
def test_soak_repeated_faults_lose_nothing(tmp_path):
    s = scenarios.load(scenarios.find("soak"))
    r = run_scenario(s, tmp_path / "soak")
    d = r.judgement.data
    assert not r.errors, r.errors
    assert d.lost == 0 and d.duplicates == 0 and d.conflicts == 0
    assert not [t for t in r.judgement.triggers if t.outcome == "unaccounted"]
    assert not [v for v in r.judgement.vehicles if v.outcome == "duplicate"]
    assert not r.expectation_failures()
