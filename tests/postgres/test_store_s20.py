"""PostgreSQL: read ids are never reused (reads_id_seq; migration 6 changes nothing there) and a
conflicting message is kept once per content (migration 7), as on SQLite."""
from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from hq import migrations
from hq.db import open_postgres
from hq.store import ReadStore
from hq.synthetic import SyntheticNode

pytestmark = pytest.mark.postgres

DAY = 86400 * 10**9
NOW = int(dt.datetime(2026, 9, 15, 12, tzinfo=dt.UTC).timestamp()) * 10**9


def test_a_purged_read_id_is_not_reused(pg_url):
    store = ReadStore(pg_url)
    node = SyntheticNode.create()
    store.store([node.read(1, "NEW0001", NOW - DAY), node.read(2, "OLD9999", NOW - 40 * DAY)])
    old_id = store.last_id()
    store.db.execute("DELETE FROM reads WHERE id=?", (old_id,))
    store.store([node.read(3, "ZZZ0003", NOW)])
    assert store.db.value("SELECT id FROM reads WHERE plate='ZZZ0003'") == old_id + 1
    assert store.db.rows("SELECT version FROM schema_version WHERE version >= 6") == [
        (v,) for v in range(6, migrations.LATEST + 1)]
    store.close()


def test_a_conflicting_read_replayed_is_kept_once_in_a_batch_and_across_batches(pg_url):
    store = ReadStore(pg_url)
    node = SyntheticNode.create()
    store.store([node.read(9, "GOOD009", NOW)])
    other = node.read(9, "OTHER01", NOW)
    out = store.store([other, other, node.read(10, "NEXT010", NOW)]) + store.store([other])
    assert [(r.outcome, r.new) for r in out] == [("conflict", True), ("conflict", False), ("stored", True),
                                                 ("conflict", False)]
    assert store.conflicts() == 1
    assert store.db.value("SELECT payload_sha256 FROM seq_conflicts") == hashlib.sha256(other.payload_bytes).digest()
    store.close()


def test_the_migration_keeps_the_first_copy_of_each_conflict(pg_url):
    db = open_postgres(pg_url)
    migrations.migrate(db, tuple(m for m in migrations.MIGRATIONS if m.version < 7))
    for i, payload in enumerate((b"A", b"A", b"B", b"A")):
        db.execute("INSERT INTO seq_conflicts (node_id, seq, stored_ns, header, payload, signature) "
                   "VALUES ('node-1', 9, ?, ?, ?, ?)", (i, b"h", payload, b"s"))
    db.close()
    store = ReadStore(pg_url)
    assert store.db.rows("SELECT stored_ns, payload, payload_sha256 FROM seq_conflicts ORDER BY id") == [
        (0, b"A", hashlib.sha256(b"A").digest()), (2, b"B", hashlib.sha256(b"B").digest())]
    assert store.db.value("SELECT is_nullable FROM information_schema.columns "
                          "WHERE table_name='seq_conflicts' AND column_name='payload_sha256'") == "NO"
    store.close()
