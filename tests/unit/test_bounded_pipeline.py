"""The pipeline's passes and events stay bounded when a trigger chatters with no vehicle: every
pass is still counted, and ends in a read, a no_read event, or the count a later no_read event of
its trigger carries (`suppressed`)."""
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
    # No flood of events (each carries a JPEG): the trigger's quota for the minute, the rest counted.
    limit = pipeline.settings.max_no_reads_per_min
    assert outbox.stats().depth == limit
    assert pipeline.stats["no_reads_held"] == edges - limit
    assert pipeline.health()["no_reads_held"] == {"loop1": edges - limit}
    outbox.close()


class _Clock:
    def __init__(self) -> None:
        self.t = 0

    def __call__(self) -> int:
        return self.t


class _Sink:
    """Records submitted events (the fields the pipeline sends), numbering them like an outbox."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def submit_event(self, event: str, t_ns: int, fields: dict) -> int:
        self.events.append(dict(fields, event=event))
        return len(self.events)


def _no_read(pipeline: Pipeline, clock: _Clock, name: str, t_ns: int) -> None:
    clock.t = t_ns
    pipeline.on_trigger(TriggerEvent(17 if name == "loop1" else 27, name, "loop", "falling", True, t_ns))
    pipeline.on_trigger(TriggerEvent(17 if name == "loop1" else 27, name, "loop", "rising", False, t_ns + MS))
    pipeline._take_triggers(t_ns + 2 * MS)
    pipeline._finish(t_ns + 3 * MS)


def test_held_no_reads_are_reported_by_the_next_event_sent_and_triggers_are_counted_apart() -> None:
    clock, sink = _Clock(), _Sink()
    settings = PipelineSettings(mode="triggered", window_after_s=0.0, node_id="n1", site_id="s1", camera_id="c0",
                                max_no_reads_per_min=3)
    pipeline = Pipeline(camera_factory=lambda: None, detector=NoPlates(), reader=NoReader(), sink=sink,
                        settings=settings, clock_ns=clock)
    second = 10**9
    for i in range(10):  # loop1 chatters: 10 passes in 10 s
        _no_read(pipeline, clock, "loop1", i * second)
    _no_read(pipeline, clock, "loop2", 11 * second)  # another lane's loop is not held back by it
    assert [(e["trigger_id"].split("-")[0], e["suppressed"]) for e in sink.events] == \
        [("loop1", 0), ("loop1", 0), ("loop1", 0), ("loop2", 0)]
    assert pipeline.stats["no_reads"] == 11 and pipeline.stats["no_reads_held"] == 7
    # A minute after the first of the three sent, loop1 may send again: that event says 7 were held.
    _no_read(pipeline, clock, "loop1", 60 * second)
    assert (sink.events[-1]["trigger_id"].split("-")[0], sink.events[-1]["suppressed"]) == ("loop1", 7)
    assert pipeline.health()["no_reads_held"] == {}
    # Capture accounting still counts every pass.
    counted = sum(c["passes"] for lane in pipeline.accounting.report().values() for c in lane.values())
    assert counted == 12


def test_the_quota_is_a_validated_config_key(tmp_path: Path) -> None:
    from node.config import load
    from node.errors import BadConfig

    base = (tmp_path / "node.toml")
    base.write_text('[node]\nid = "n1"\nsite = "s1"\n[source]\nkind = "synthetic"\n[pipeline]\nmax_no_reads_per_min = 0\n')
    with pytest.raises(BadConfig, match="pipeline.max_no_reads_per_min"):
        load(base)
