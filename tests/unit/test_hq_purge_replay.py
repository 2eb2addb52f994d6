"""A read resent (or replayed) after retention purged it is not stored again.

Purging deletes a read, and with it the record that dedups its (node, seq). A per-node purge
watermark (highest sequence number purged, and the purge's cutoff) remembers enough: a read at
or below it, captured before the cutoff and no longer in the store was stored and purged (or is
older than retention anyway), so it is acknowledged as `purged` and nothing is stored.
"""
from __future__ import annotations

import datetime as dt

import pytest

from hq import retention
from hq.access import SYSTEM, Access, Actor
from hq.store import ReadStore
from hq.synthetic import FakeClock, SyntheticNode
from transport import cbor
from transport.envelope import Header, Opened, signed_bytes
from transport.keys import key_id

pytestmark = pytest.mark.unit

DAY = 86400 * 10**9
NOW = int(dt.datetime(2026, 9, 15, 12, tzinfo=dt.UTC).timestamp()) * 10**9
OLD = NOW - 400 * DAY  # past a 365-day retention
PW = "correct horse battery"


@pytest.fixture
def env(tmp_path):
    store = ReadStore(tmp_path / "hq.db")
    access = Access(store.db, clock=FakeClock(NOW))
    yield store, access, SyntheticNode.create("node-a", "main-st")
    store.close()


def _event(node: SyntheticNode, seq: int, t_ns: int) -> Opened:
    header = Header("event", node.node_id, seq, t_ns, key_id(node.key.public_key()), "hq")
    hb = cbor.dumps(header.to_wire())
    payload = {"kind": "event", "node": node.node_id, "seq": seq, "event": "no_read", "t_ns": t_ns}
    pb = cbor.dumps(payload)
    return Opened(header, hb, payload, pb, node.key.sign(signed_bytes(hb, pb)))


def test_the_same_bytes_resent_after_a_purge_are_not_stored_again(env):
    store, access, node = env
    read = node.read(7, "AB12CDE", OLD)
    assert [r.outcome for r in store.store([read, read])] == ["stored", "duplicate"]
    assert retention.purge(store, access, SYSTEM, min_days=365).reads_deleted == 1
    assert store.count("node-a") == 0
    # The replay: acknowledged (so a node that missed its ack stops resending), never stored.
    assert [r.outcome for r in store.store([read, read])] == ["purged", "purged"]
    assert store.count("node-a") == 0 and store.conflicts() == 0
    # Another purge finds nothing to purge: the replay did not come back.
    assert retention.purge(store, access, SYSTEM, min_days=365).reads_deleted == 0


def test_the_watermark_is_one_row_per_node_with_the_highest_purged_seq(env):
    store, access, node = env
    other = SyntheticNode.create("node-b", "harbor")
    store.store([node.read(s, f"OLD{s:04d}", OLD + s) for s in (3, 9, 5)] + [other.read(2, "B000002", OLD)]
                + [node.read(20, "NEW0020", NOW - DAY)])
    retention.purge(store, access, SYSTEM, min_days=365)
    marks = store.db.rows("SELECT node_id, seq FROM purge_watermarks ORDER BY node_id")
    assert marks == [("node-a", 9), ("node-b", 2)]
    # A second purge with nothing older keeps the marks (never lowered).
    store.store([node.read(1, "OLD0001", OLD)])  # seq 1 <= 9, captured before the cutoff: purged already
    retention.purge(store, access, SYSTEM, min_days=365)
    assert store.db.rows("SELECT node_id, seq FROM purge_watermarks ORDER BY node_id") == marks


def test_held_reads_stay_and_still_dedup_normally(env):
    store, access, node = env
    held, gone = node.read(4, "HELD004", OLD), node.read(5, "GONE005", OLD)
    store.store([held, gone])
    held_id = next(r.id for r in store.reads_after(0) if r.plate == "HELD004")
    access.add_user(None, "ada", "administrator", PW, NOW + 400 * DAY)
    retention.place_hold(store, access, Actor("ada", "administrator"), case_no="C1", reason="robbery",
                         read_ids=[held_id])
    result = retention.purge(store, access, SYSTEM, min_days=365)
    assert (result.reads_deleted, result.held_kept) == (1, 1)
    assert store.db.value("SELECT seq FROM purge_watermarks WHERE node_id='node-a'") == 5
    outcomes = [r.outcome for r in store.store([held, node.read(4, "CHANGED", OLD), gone])]
    assert outcomes == ["duplicate", "conflict", "purged"]
    assert store.conflicts() == 1


def test_reads_the_watermark_does_not_cover_are_stored(env):
    store, access, node = env
    store.store([node.read(10, "OLD0010", OLD)])
    retention.purge(store, access, SYSTEM, min_days=365)
    out = store.store([
        node.read(11, "NEXT011", NOW - DAY),   # above the watermark: new
        node.read(8, "LATE008", NOW - DAY),    # below it but captured after the purge's cutoff: never purged
        _event(node, 9, OLD),                  # events are purged with reads: not stored again either
    ])
    assert [r.outcome for r in out] == ["stored", "stored", "purged"]
    assert store.seqs("node-a") == [8, 11] and store.seqs("node-a", "events") == []


def test_purge_in_several_batches_marks_every_batch(env, monkeypatch):
    store, access, node = env
    monkeypatch.setattr(retention, "BATCH", 3)
    reads = [node.read(s, f"OLD{s:04d}", OLD + s) for s in range(1, 11)]
    store.store(reads)
    assert retention.purge(store, access, SYSTEM, min_days=365).reads_deleted == 10
    assert store.db.value("SELECT seq FROM purge_watermarks WHERE node_id='node-a'") == 10
    assert {r.outcome for r in store.store(reads)} == {"purged"}
    assert store.count() == 0


def test_the_migration_covers_purges_made_before_it(tmp_path):
    # A store purged by an older HQ has no watermark: the migration marks the nodes it knows
    # up to the last purge's cutoff (every seq), the only bound it can prove.
    store = ReadStore(tmp_path / "hq.db")
    node = SyntheticNode.create("node-a", "main-st")
    store.store([node.read(2, "NEW0002", NOW - DAY)])
    cutoff = NOW - 380 * DAY
    store.db.execute("INSERT INTO purges (t_ns, by_user, cutoff_ns, reads_deleted, partitions_dropped, held_kept, "
                     "seconds) VALUES (?,?,?,?,?,?,?)", (NOW, "system", cutoff, 5, 0, 0, 0.1))
    store.db.execute("DROP TABLE purge_watermarks")
    store.db.execute("DELETE FROM schema_version WHERE version=5")  # re-run migration 5 alone
    store.close()
    store = ReadStore(tmp_path / "hq.db")
    assert store.db.rows("SELECT node_id, seq, cutoff_ns FROM purge_watermarks") == [("node-a", 2**63 - 1, cutoff)]
    out = store.store([node.read(1, "OLD0001", cutoff - DAY), node.read(3, "NEW0003", NOW)])
    assert [r.outcome for r in out] == ["purged", "stored"]
    store.close()
