"""The pipeline's passes stay bounded when a trigger chatters with no vehicle, and every pass
still ends in a read or a no_read event."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from hardware.frame import Frame
from hardware.gpio import TriggerEvent
from node.identity import Identity
from node.pipeline import MAX_OPEN_PASSES, Pipeline, PipelineSettings
from node.sink import ReadSink
from transport.outbox import Outbox

pytestmark = pytest.mark.unit
MS = 10**6


class NoPlates:
    """A detector that finds nothing (no vehicle is there)."""

    def detect(self, image: np.ndarray) -> list:
        return []


class NoReader:
    def read(self, crop: np.ndarray) -> None:  # pragma: no cover - nothing is detected
        raise AssertionError("no plate to read")


def _pipeline(tmp_path: Path) -> tuple[Pipeline, Outbox]:
    outbox = Outbox(tmp_path / "outbox.db")
    sink = ReadSink(Identity("n1", ed25519.Ed25519PrivateKey.generate(),
                             x25519.X25519PrivateKey.generate().public_key(), ()), outbox)
    # The longest window the config allows after a vehicle leaves: each pass stays open 30 s.
    settings = PipelineSettings(mode="triggered", window_after_s=30.0, node_id="n1", site_id="s1", camera_id="c0")
    pipeline = Pipeline(camera_factory=lambda: None, detector=NoPlates(), reader=NoReader(), sink=sink,
                        settings=settings, clock_ns=lambda: 0)
    return pipeline, outbox


def _frame(index: int, t_ns: int) -> Frame:
    return Frame(main=np.zeros((48, 64, 3), np.uint8), lores=np.zeros((24, 32, 3), np.uint8),
                 timestamp_ns=t_ns, wall_time_ns=t_ns, index=index)


def test_a_chattering_trigger_keeps_a_bounded_number_of_passes(tmp_path: Path) -> None:
    """A loop input that flaps every few milliseconds (a fault, interference, bouncetime 0):
    each active edge opens a pass that stays open window_after_s, each holding a frame. They
    used to pile up without limit (300 here, for 30 s); now the oldest close early."""
    pipeline, outbox = _pipeline(tmp_path)
    edges = 300
    peak = 0
    for i in range(edges):
        t = i * 4 * MS
        pipeline.on_trigger(TriggerEvent(17, "loop1", "loop", "falling", True, t))
        pipeline.on_trigger(TriggerEvent(17, "loop1", "loop", "rising", False, t + 2 * MS))
        pipeline._take_triggers(t + 3 * MS)
        pipeline._process(_frame(i, t + 3 * MS))  # each pass takes a frame as its no_read frame
        peak = max(peak, len(pipeline._passes))
    assert peak <= MAX_OPEN_PASSES
    assert pipeline.stats["passes_closed_early"] == edges - len(pipeline._passes)
    pipeline._finish(edges * 4 * MS)
    # Capture accounting is kept: every pass, closed early or not, is a pass without a read.
    counted = sum(c["passes"] for lane in pipeline.accounting.report().values() for c in lane.values())
    assert counted == edges
    assert pipeline.stats["no_reads"] == edges
    assert outbox.stats().depth == edges  # one no_read event each
    outbox.close()
