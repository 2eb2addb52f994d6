"""Shared fixtures: a real Mosquitto broker on a free loopback port inside a provisioned lab."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", help="run long soaks (100+ kills, hours of traffic)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Long soaks are opt-in by design, not skipped silently: they are deselected and counted.
    if config.getoption("--long"):
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("long") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test sees an empty home and none of the operator's ALPR_* or sudo variables: a
    developer's real ~/.config/alpr-hq/session or $ALPR_HQ_PASSWORD must not decide a result."""
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
    for name in ("ALPR_HQ_SESSION", "ALPR_HQ_PASSWORD", "ALPR_HQ_NEW_PASSWORD", "ALPR_HQ_DIR", "ALPR_DATA",
                 "ALPR_CACHE", "SUDO_USER", "SUDO_UID"):
        monkeypatch.delenv(name, raising=False)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `predicate` until true; fail the test naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def lab(tmp_path: Path):
    """A lab (CA, HQ, registry) with its broker running. Fails, never skips, without mosquitto."""
    from hil.lab import Lab

    the_lab = Lab(tmp_path / "lab", hq_workers=2)
    the_lab.broker.start()
    procs: list[subprocess.Popen] = []
    the_lab.track = procs.append  # type: ignore[attr-defined]
    yield the_lab
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    the_lab.close()
