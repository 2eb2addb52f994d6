"""Ingest's queue of messages waiting for the store is bounded in bytes as well as in messages:
2000 unauthenticated messages of 4 MiB each would be 7.8 GiB held before anything is checked."""
from __future__ import annotations

import logging
import sqlite3
import time

import pytest

import hq.ingest as ingest_mod
from tests.unit.test_bounded_ingest import Published
from tests.unit.test_hq_ingest_hardening import FakeClient, FakeLink, World
from transport import topics

pytestmark = pytest.mark.unit

MIB = 1024 * 1024


@pytest.fixture
def link(monkeypatch):
    monkeypatch.setattr(ingest_mod, "MqttLink", FakeLink)


def _store_down(ingest: ingest_mod.Ingest) -> None:
    ingest._retry_at = time.monotonic() + 3600  # ingest backs off: nothing is taken from the queue


def test_a_qos0_flood_of_large_messages_is_bounded_in_bytes(tmp_path, link, caplog):
    world = World(tmp_path, max_pending_bytes=8 * MIB)
    ingest, client = world.ingest, FakeClient()
    _store_down(ingest)
    blob = b"\x00" * MIB  # not even CBOR: nothing is checked before queuing
    with caplog.at_level(logging.WARNING, logger="hq.ingest"):
        for i in range(50):
            ingest._message(client, Published(topics.node_topic(f"node-{i}", "read"), blob, 0, 0))
            ingest._tick(client)
    assert len(ingest._pending) == 8 and ingest._pending.bytes == 8 * MIB
    assert sum(len(item[1]) for item in ingest._pending) == 8 * MIB
    assert ingest.stats.rejected["overload"] == 42 and ingest.stats.received == 42
    assert client.pubacks == []
    refused = [r.getMessage() for r in caplog.records if "overload" in r.getMessage()]
    assert len(refused) == 42 and all("max_pending_bytes 8388608" in m for m in refused)


def test_the_message_count_bound_still_applies_and_is_named(tmp_path, link, caplog):
    world = World(tmp_path, max_pending=3)
    ingest, client = world.ingest, FakeClient()
    _store_down(ingest)
    with caplog.at_level(logging.WARNING, logger="hq.ingest"):
        for i in range(5):
            ingest._message(client, Published(topics.node_topic("node-a", "read"), b"x", i, 0))
    assert len(ingest._pending) == 3
    assert "max_pending 3 messages" in caplog.records[-1].getMessage()


def test_qos1_messages_are_kept_past_the_bound_and_never_acknowledged(tmp_path, link):
    """The broker holds an unacknowledged QoS 1 message in flight for the session: dropped here it
    would come back only after a reconnect. The broker's in-flight limits bound those; they count
    against the bytes, so QoS 0 copies give way first."""
    world = World(tmp_path, max_pending_bytes=2 * MIB)
    ingest, client = world.ingest, FakeClient()
    _store_down(ingest)
    for mid in range(1, 5):
        ingest._message(client, Published(topics.node_topic("node-a", "read"), b"y" * MIB, mid, 1))
    assert len(ingest._pending) == 4 and ingest._pending.bytes == 4 * MIB
    ingest._message(client, Published(topics.node_topic("node-b", "read"), b"z", 99, 0))
    assert len(ingest._pending) == 4 and ingest.stats.rejected["overload"] == 1
    assert client.pubacks == []


def test_the_bytes_are_given_back_as_the_queue_drains(tmp_path, link):
    world = World(tmp_path, max_pending_bytes=3 * MIB)
    ingest, client = world.ingest, FakeClient()
    for i in range(3):
        ingest._message(client, Published(topics.node_topic("node-a", "read"), b"\x00" * MIB, i, 1))
    assert ingest._pending.bytes == 3 * MIB
    ingest._tick(client)  # the store is up: checked (and refused as invalid), the queue is empty
    assert len(ingest._pending) == 0 and ingest._pending.bytes == 0
    assert sum(ingest.stats.rejected.values()) == 3 and sorted(client.pubacks) == [0, 1, 2]  # settled
    for i in range(3):
        ingest._message(client, Published(topics.node_topic("node-a", "read"), b"\x00" * MIB, 10 + i, 0))
    assert len(ingest._pending) == 3 and ingest.stats.rejected["overload"] == 0
    if ingest._store is not None:
        ingest._store.close()


def test_a_batch_put_back_after_a_store_failure_counts_again(tmp_path, link):
    world = World(tmp_path)
    ingest = world.ingest
    world.deliver(world.message(1, time.time_ns()))  # opens the store
    # The store breaks under ingest (a real SQLite error, "no such table"): the batch waits.
    other = sqlite3.connect(tmp_path / "hq.db")
    other.execute("ALTER TABLE reads RENAME TO reads_away")
    other.commit()
    other.close()
    payload = world.message(2, time.time_ns())
    ingest._message(world.client, Published(topics.node_topic("node-a", "read"), payload, 77, 1))
    ingest._tick(world.client)
    assert ingest.stats.store_errors == 1
    assert len(ingest._pending) == 1 and ingest._pending.bytes == len(payload)  # verified, waiting again
    assert 77 not in world.client.pubacks


def test_the_default_bound_and_a_bad_one(tmp_path, link):
    assert ingest_mod.DEFAULT_MAX_PENDING_BYTES == 256 * MIB
    assert World(tmp_path).ingest.max_pending_bytes == 256 * MIB
    with pytest.raises(ValueError, match="max_pending_bytes"):
        (tmp_path / "bad").mkdir()
        World(tmp_path / "bad", max_pending_bytes=0)


def test_a_bound_below_the_message_size_still_takes_one_message_at_a_time(tmp_path, link):
    world = World(tmp_path, max_pending_bytes=1000)
    ingest, client = world.ingest, FakeClient()
    _store_down(ingest)
    for mid in range(3):
        ingest._message(client, Published(topics.node_topic("node-a", "read"), b"\x00" * 5000, mid, 0))
    assert len(ingest._pending) == 1 and ingest.stats.rejected["overload"] == 2
