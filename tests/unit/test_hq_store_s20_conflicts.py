"""A conflicting message (same node and seq, other content) is kept once per content (migration 7):
a captured conflicting copy replayed without end is acknowledged every time but adds no row."""
from __future__ import annotations

import datetime as dt
import hashlib
import logging

import pytest

import hq.ingest as ingest_mod
from hq import migrations
from hq.db import open_sqlite
from hq.store import ReadStore
from hq.synthetic import SyntheticNode
from tests.unit.test_hq_ingest_hardening import FakeLink, World
from transport import cbor
from transport.envelope import Header, Opened, signed_bytes
from transport.keys import key_id

pytestmark = pytest.mark.unit

NOW = int(dt.datetime(2026, 9, 15, 12, tzinfo=dt.UTC).timestamp()) * 10**9


def _event(node: SyntheticNode, seq: int, text: str) -> Opened:
    """A signed event as ingest would have opened it."""
    payload = {"event": text, "t_ns": NOW}
    header = Header("event", node.node_id, seq, NOW, key_id(node.key.public_key()), "hq0000000000000")
    header_bytes, payload_bytes = cbor.dumps(header.to_wire()), cbor.dumps(payload)
    signature = node.key.sign(signed_bytes(header_bytes, payload_bytes))
    return Opened(header, header_bytes, payload, payload_bytes, signature)


def test_a_conflicting_read_replayed_is_kept_once(tmp_path):
    store = ReadStore(tmp_path / "hq.db")
    node = SyntheticNode.create()
    store.store([node.read(9, "GOOD009", NOW)])
    other = node.read(9, "OTHER01", NOW, crop=b"\xff" * 100_000)
    results = [store.store([other])[0] for _ in range(5)] + store.store([other, other])
    assert [r.outcome for r in results] == ["conflict"] * 7
    assert [r.new for r in results] == [True] + [False] * 6
    assert store.conflicts() == 1
    third = node.read(9, "THIRD03", NOW)  # another content for the same seq is kept too, once
    assert [(r.outcome, r.new) for r in store.store([third, third])] == [("conflict", True), ("conflict", False)]
    assert store.conflicts() == 2
    assert store.db.rows("SELECT payload_sha256 FROM seq_conflicts ORDER BY id") == [
        (hashlib.sha256(other.payload_bytes).digest(),), (hashlib.sha256(third.payload_bytes).digest(),)]
    store.close()


def test_a_conflicting_event_replayed_is_kept_once(tmp_path):
    store = ReadStore(tmp_path / "hq.db")
    node = SyntheticNode.create()
    store.store([_event(node, 4, "boot")])
    out = store.store([_event(node, 4, "tamper")] * 3)
    assert [(r.outcome, r.new) for r in out] == [("conflict", True), ("conflict", False), ("conflict", False)]
    assert store.conflicts() == 1
    store.close()


def test_the_migration_keeps_the_first_copy_of_each_conflict_stored_before(tmp_path):
    path = tmp_path / "hq.db"
    db = open_sqlite(path)
    migrations.migrate(db, tuple(m for m in migrations.MIGRATIONS if m.version < 7))
    rows = [("node-1", 9, b"A"), ("node-1", 9, b"A"), ("node-1", 9, b"B"), ("node-1", 9, b"A"), ("node-2", 9, b"A"),
            ("node-1", 10, b"A")]
    for i, (node_id, seq, payload) in enumerate(rows):
        db.execute("INSERT INTO seq_conflicts (node_id, seq, stored_ns, header, payload, signature) "
                   "VALUES (?,?,?,?,?,?)", (node_id, seq, i, b"h", payload, b"s"))
    db.close()
    store = ReadStore(path)
    kept = store.db.rows("SELECT id, node_id, seq, stored_ns, payload, payload_sha256 FROM seq_conflicts ORDER BY id")
    assert kept == [
        (1, "node-1", 9, 0, b"A", hashlib.sha256(b"A").digest()),
        (3, "node-1", 9, 2, b"B", hashlib.sha256(b"B").digest()),
        (5, "node-2", 9, 4, b"A", hashlib.sha256(b"A").digest()),
        (6, "node-1", 10, 5, b"A", hashlib.sha256(b"A").digest()),
    ]
    assert "UNIQUE" in store.db.value("SELECT sql FROM sqlite_master WHERE name='seq_conflicts_once'")
    store.close()


def test_the_backfill_goes_in_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(migrations, "CONFLICT_BACKFILL_BATCH", 2)
    path = tmp_path / "hq.db"
    db = open_sqlite(path)
    migrations.migrate(db, tuple(m for m in migrations.MIGRATIONS if m.version < 7))
    for seq in range(1, 6):
        db.execute("INSERT INTO seq_conflicts (node_id, seq, stored_ns, header, payload, signature) "
                   "VALUES ('n', ?, 0, x'00', ?, x'00')", (seq, bytes([seq])))
    db.close()
    store = ReadStore(path)
    assert store.db.rows("SELECT payload_sha256 FROM seq_conflicts ORDER BY id") == [
        (hashlib.sha256(bytes([seq])).digest(),) for seq in range(1, 6)]
    store.close()


def test_ingest_acknowledges_every_replayed_copy_and_keeps_one(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(ingest_mod, "MqttLink", FakeLink)
    w = World(tmp_path)
    w.deliver(w.message(9, NOW))
    conflicting = w.message(9, NOW, plate="OTHER1")  # one ciphertext, captured and replayed
    with caplog.at_level(logging.WARNING, logger="hq.ingest"):
        mids = [w.deliver(conflicting)[0] for _ in range(5)]
    assert set(mids) <= set(w.client.pubacks)  # each copy PUBACKed: the broker forgets it
    assert w.client.acked_seqs() == [9] * 6     # and acknowledged to the node each time
    assert w.ingest.stats.conflicts == 5
    kept = [r for r in caplog.records if r.getMessage().endswith("; kept in seq_conflicts")]
    again = [r for r in caplog.records if "not kept again" in r.getMessage()]
    assert [r.levelno for r in kept] == [logging.ERROR] and len(again) == 4
    w.ingest._store.close()
    store = w.store()
    assert store.conflicts() == 1
    store.close()
