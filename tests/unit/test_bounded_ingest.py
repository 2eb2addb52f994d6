"""HQ ingest's queue of messages waiting for the store stays bounded while the store is down."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

import hq.ingest as ingest_mod
from tests.unit.test_hq_ingest_hardening import FakeClient, FakeLink, World
from transport import topics

pytestmark = pytest.mark.unit


class Published:
    """A message as paho hands it to the callback, at the QoS it was delivered with."""

    def __init__(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        self.topic, self.payload, self.mid, self.qos = topic, payload, mid, qos


def test_a_qos0_flood_while_the_store_is_down_is_bounded(tmp_path: Path, monkeypatch) -> None:
    """QoS 0 copies need no PUBACK, so the broker's in-flight limit does not hold them back: a
    client publishing them (many distinct node topics, any content) while the store is down used
    to grow the queue without end. QoS 1 messages are still all kept (the broker bounds those)."""
    monkeypatch.setattr(ingest_mod, "MqttLink", FakeLink)
    world = World(tmp_path, max_pending=100)
    ingest, client = world.ingest, FakeClient()
    ingest._retry_at = time.monotonic() + 3600  # the store is down: ingest backs off, nothing drains
    for i in range(5000):
        ingest._message(client, Published(topics.node_topic(f"node-{i}", "read"), b"x" * 1000, 0, 0))
        ingest._tick(client)
    assert len(ingest._pending) == 100
    assert ingest.stats.rejected["overload"] == 4900 and ingest.stats.received == 4900
    assert client.pubacks == []
    for mid in range(1, 11):
        ingest._message(client, Published(topics.node_topic("node-a", "read"), b"y", mid, 1))
    assert len(ingest._pending) == 110  # never dropped unacknowledged
