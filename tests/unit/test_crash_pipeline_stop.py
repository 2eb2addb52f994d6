"""A pipeline worker that outlives its stop bound is still reported alive, so the runtime does not
close the outbox under the flush it is still doing."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_watchdog_liveness import hung_pipeline

pytestmark = pytest.mark.unit


def test_a_worker_still_busy_at_the_stop_bound_stays_alive(tmp_path: Path) -> None:
    pipeline, detector = hung_pipeline(tmp_path)
    try:
        pipeline.stop(0.5)
        # Pipeline.stop used to forget its thread after the join timed out: alive() said False
        # while the worker ran on, and Runtime.stop closed the outbox it was about to flush into.
        assert pipeline.alive()
    finally:
        detector.release.set()
        pipeline.stop(10)
    assert not pipeline.alive()
    assert pipeline.done.is_set()
