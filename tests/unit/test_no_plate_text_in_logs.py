"""The node never writes plate text (or its candidates) to its log, at any level.

Plates are personal data: reads are for official use only and seen only at HQ through a
logged login, while the node's journal is readable by other accounts on the Pi. The log names
the outbox seq, the track, the trigger and the hot-list entry instead.
"""
from __future__ import annotations

import logging
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from node.identity import Identity
from node.sink import ReadSink
from tests.unit.test_pipeline import (
    LEFT,
    TOP,
    committed,
    plate_text,
    scene_of,
    scripted,
    step_through,
    visible,
)
from transport.outbox import Outbox
from transport.payload import Candidate, ReadPayload

pytestmark = pytest.mark.unit
PLATE, RUNNER_UP, LOW = "7ABC123", "7ABC128", "5XYZ987"
# the hot-list entry's reason says something about whoever drives the car: not logged either
REASON = "missing-person"


@pytest.fixture
def keys() -> tuple[ed25519.Ed25519PrivateKey, x25519.X25519PrivateKey]:
    return ed25519.Ed25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()


def _hit(via: str = "candidate") -> dict[str, str]:
    return {"list_version": "2", "entry": "9", "reason": REASON, "match": "exact", "matched_text": RUNNER_UP,
            "via": via}


def test_sink_logs_an_alert_and_a_read_without_the_plate(tmp_path, keys, caplog: pytest.LogCaptureFixture) -> None:
    node, hq = keys
    outbox = Outbox(tmp_path / "outbox.db")
    sink = ReadSink(Identity("n1", node, hq.public_key(), ()), outbox,
                    hotlist_match=lambda read: _hit() if read.trigger_id == "loop1-5" else None)
    reads = [ReadPayload(plate=PLATE, confidence=0.9, capture_time_ns=time.time_ns(), node_id="n1", site_id="s",
                         camera_id="c", crop_jpeg=b"", candidates=(Candidate(PLATE, 0.9), Candidate(RUNNER_UP, 0.1)),
                         trigger_id=trigger) for trigger in ("loop1-5", "loop1-6")]
    with caplog.at_level(logging.DEBUG):
        assert [sink.submit_read(r) for r in reads] == [1, 2]
    outbox.close()
    for secret in (PLATE, RUNNER_UP, REASON):
        assert secret not in caplog.text
    alert = next(r for r in caplog.records if r.levelno == logging.WARNING)
    # what the log says instead: enough to find the read at HQ (a logged look there)
    assert alert.getMessage() == ("hot-list match committed as seq 1: list 2 entry 9 (exact match on the candidate), "
                                  "trigger loop1-5")
    assert "read committed as seq 2" in caplog.text


def test_pipeline_logs_reads_repeats_and_rejects_without_the_plate(tmp_path, keys,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A read, a duplicate sent as an alert, a suppressed duplicate and a low-confidence track."""
    at = {}

    def hotlist_match(read):
        texts = [read.plate] + [c.plate for c in read.candidates]
        return _hit("plate") if at["scene"].now_s >= 5.0 and PLATE in texts else None
    car = plate_text(PLATE, 0.9, [(PLATE, 0.9), (RUNNER_UP, 0.05)])
    script = scene_of(visible(0.5, 1.5, LEFT, car), visible(10.0, 11.0, LEFT, car), visible(20.0, 21.0, LEFT, car),
                      visible(30.0, 31.0, TOP, plate_text(LOW, 0.1)))
    pipeline, scene, outbox = scripted(tmp_path, keys, script, hotlist_match=hotlist_match, mode="continuous")
    at["scene"] = scene
    with caplog.at_level(logging.DEBUG):
        step_through(pipeline, scene, 33)
    messages, _ = committed(outbox, keys, kinds=("read", "alert"))
    assert sorted(m["kind"] for m in messages) == ["alert", "read"]  # the scene did what the test needs
    assert pipeline.stats["duplicates_suppressed"] == 1 and pipeline.stats["tracks_low_confidence"] == 1
    for secret in (PLATE, RUNNER_UP, LOW, REASON):
        assert secret not in caplog.text, secret
    text = caplog.text
    assert "plate seen again within 60s (read seq 1): not sent twice" in text  # what the HIL bench counts
    assert "repeats read seq 1 within 60s but matches hot-list entry 9: sent as an alert" in text
    assert "best reading (7 characters) at 0.10 is below the bar" in text


def test_the_read_line_still_parses_for_the_hil_bench(tmp_path, keys, caplog: pytest.LogCaptureFixture) -> None:
    """hil/nodelog.py reads seq and trigger id from the node's `read ...` lines: still there, no plate."""
    from hil import nodelog  # the bench parser, as the HIL runner uses it
    pipeline, scene, outbox = scripted(tmp_path, keys, visible(0.3, 1.2, LEFT, plate_text(PLATE)))
    with caplog.at_level(logging.INFO, logger="node.pipeline"):
        step_through(pipeline, scene, 4, [(0.5, True, "loop1"), (1.0, False, "loop1")])
    outbox.close()
    lines = "\n".join(f"2026-12-01 10:10:32,773 {r.levelname} {r.name}: {r.getMessage()}" for r in caplog.records)
    assert PLATE not in lines
    assert [(m.seq, m.kind, m.trigger_id) for m in nodelog.messages(lines)] == [(1, "read", "loop1-500000000")]
