"""A PostgreSQL purge of many dedup keys does not hold ingest up for its whole length: the
keys go in batches, each its own short transaction under PURGE_LOCK, and stores run between
them; the watermarks and dedup outcomes are those of one big delete."""
from __future__ import annotations

import concurrent.futures
import datetime as dt
import itertools
import threading
import time

import pytest
from argon2 import PasswordHasher

from hq import retention
from hq.access import SYSTEM, Access, Actor
from hq.db import Database
from hq.store import ReadStore
from hq.synthetic import FakeClock, SyntheticNode

pytestmark = pytest.mark.postgres

DAY = 86400 * 10**9
NOW = int(dt.datetime(2026, 9, 15, 12, tzinfo=dt.UTC).timestamp()) * 10**9
OLD = int(dt.datetime(2025, 6, 1, tzinfo=dt.UTC).timestamp()) * 10**9  # a month past retention at NOW
KEYS = 120_000  # old keys without their reads (as after the partitions were dropped)
BATCH = 8_000  # so the purge takes about fifteen batches


def _bulk_keys(store: ReadStore, node_id: str, first_seq: int, n: int, spread_ns: int) -> None:
    """`n` old dedup keys of one node, captured across June 2025 (in seq order, so the order of
    capture times and of seqs differ between nodes' keys interleaved by time)."""
    store.db.execute("INSERT INTO read_keys (node_id, seq, payload_sha256, capture_ns) "
                     "SELECT ?, g, '\\x00'::bytea, ? + (g - ?) * ? FROM generate_series(?::bigint, ?::bigint) g",
                     (node_id, OLD, first_seq, spread_ns, first_seq, first_seq + n - 1))


def test_a_purge_of_many_keys_lets_stores_run_between_its_batches(pg_url, monkeypatch):
    store = ReadStore(pg_url)
    access = Access(store.db, clock=FakeClock(NOW), hasher=PasswordHasher(time_cost=1, memory_cost=1024,
                                                                             parallelism=1))
    access.add_user(None, "ada", "administrator", "correct horse battery", NOW + 400 * DAY)
    node = SyntheticNode.create("node-1")
    old = [node.read(s, f"OLD{s:04d}", OLD + s * DAY // 10) for s in (1, 2, 3)]
    store.store(old)
    held = [r.id for r in store.reads_after(0) if r.seq == 2]
    retention.place_hold(store, access, Actor("ada", "administrator"), case_no="C7", reason="robbery",
                         read_ids=held)
    _bulk_keys(store, "node-1", 1_000, KEYS // 2, 20 * DAY // KEYS)
    _bulk_keys(store, "node-3", 5_000, KEYS // 2, 20 * DAY // KEYS)
    store.db.execute("ANALYZE read_keys")
    monkeypatch.setattr(retention, "PG_KEY_BATCH", BATCH)

    # Each batch of keys, inside its transaction (PURGE_LOCK held): how many of the other
    # worker's stores had committed before it took the lock, as the database sees it.
    batches: list[int] = []
    raise_marks = retention.raise_purge_watermarks

    def counting(db: Database, highest: dict[str, int], cutoff_ns: int) -> None:
        committed = int(db.value("SELECT COUNT(*) FROM read_keys WHERE node_id = 'node-2'"))
        batches.append(committed)
        raise_marks(db, highest, cutoff_ns)

    monkeypatch.setattr(retention, "raise_purge_watermarks", counting)

    # Another ingest worker keeps storing current reads throughout, on its own connection.
    stop = threading.Event()
    latencies: list[tuple[float, float]] = []  # (started, seconds) of each store

    def worker() -> None:
        other = ReadStore(pg_url)
        live = SyntheticNode.create("node-2")
        seq = 0
        try:
            while not stop.is_set():
                seq += 1
                read = live.read(seq, f"NEW{seq:04d}", NOW - DAY)
                started = time.monotonic()
                assert other.store([read])[0].outcome == "stored"
                latencies.append((started, time.monotonic() - started))
        finally:
            other.close()

    # A future, so that a failure in the worker is raised here rather than lost with its thread.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(worker)
        deadline = time.monotonic() + 30
        while len(latencies) < 5 and time.monotonic() < deadline and not running.done():
            time.sleep(0.01)
        started = time.monotonic()
        try:
            result = retention.purge(store, access, SYSTEM, min_days=365)
            seconds = time.monotonic() - started
        finally:
            stop.set()
        running.result(timeout=30)

    # Several short transactions, and the other worker's stores committed between them
    # (counted by the database, not by the clock): a purge in one transaction has one batch.
    assert len(batches) >= KEYS // BATCH, batches
    between = sum(1 for a, b in itertools.pairwise(batches) if b > a)
    assert between >= (len(batches) - 1) // 2, batches
    # So no store waited for anything like the whole purge (each waits one batch at most).
    during = [s for t, s in latencies if started <= t <= started + seconds]
    assert during and max(during) < seconds / 3, (max(during), seconds, len(batches))

    # The outcome is that of one big delete: every unheld old key gone, the marks at each
    # node's highest purged seq, resends of purged reads acknowledged as purged, the held one
    # still deduplicated, and the other worker's reads all stored.
    assert result.reads_deleted == 2
    assert store.db.rows("SELECT node_id, seq FROM read_keys WHERE capture_ns < ?", (NOW - 365 * DAY,)) == [
        ("node-1", 2)]
    assert store.db.rows("SELECT node_id, seq FROM purge_watermarks ORDER BY 1") == [
        ("node-1", 1_000 + KEYS // 2 - 1), ("node-3", 5_000 + KEYS // 2 - 1)]
    assert [r.outcome for r in store.store(old)] == ["purged", "duplicate", "purged"]
    assert store.store([node.read(1_500, "GONE", OLD + DAY)])[0].outcome == "purged"
    assert store.seqs("node-2") == list(range(1, len(latencies) + 1))
    store.close()


def test_batched_key_purge_keeps_keys_of_equal_capture_time(pg_url, monkeypatch):
    # Batches resume at the capture time where the last one stopped: keys sharing that time
    # (here all of them) must not be skipped.
    store = ReadStore(pg_url)
    _bulk_keys(store, "node-1", 1, 25, 0)
    monkeypatch.setattr(retention, "PG_KEY_BATCH", 10)
    retention.purge(store, Access(store.db, clock=FakeClock(NOW)), SYSTEM, min_days=365)
    assert store.db.value("SELECT COUNT(*) FROM read_keys") == 0
    assert store.db.rows("SELECT node_id, seq FROM purge_watermarks") == [("node-1", 25)]
    store.close()
