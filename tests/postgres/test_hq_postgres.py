"""The HQ store on a real PostgreSQL server: migrations, month partitions, purge by dropping
partitions (holds kept), exactly-once, search, and the access log."""
from __future__ import annotations

import datetime as dt

import pytest
from argon2 import PasswordHasher

from hq import migrations, retention
from hq.access import SYSTEM, Access, Actor
from hq.search import SearchQuery, run_search, search
from hq.store import ReadStore
from hq.synthetic import FakeClock, SyntheticNode

pytestmark = pytest.mark.postgres

DAY = 86400 * 10**9
NOW = int(dt.datetime(2026, 9, 15, 12, tzinfo=dt.UTC).timestamp()) * 10**9
PW = "correct horse battery"


def _ns(y, m, d):
    return int(dt.datetime(y, m, d, 12, tzinfo=dt.UTC).timestamp()) * 10**9


def _partitions(store):
    return [r[0] for r in store.db.rows(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid=i.inhrelid "
        "JOIN pg_class p ON p.oid=i.inhparent WHERE p.relname='reads' ORDER BY 1")]


def test_migrations_apply_once_and_reads_are_partitioned_by_month(pg_url):
    store = ReadStore(pg_url)
    assert store.db.postgres
    assert store.db.rows("SELECT version FROM schema_version ORDER BY 1") == [(v,) for v in range(1, migrations.LATEST + 1)]
    assert store.db.value("SELECT relkind FROM pg_class WHERE relname='reads'") == "p"
    node = SyntheticNode.create()
    out = store.store([node.read(1, "7ABC123", _ns(2026, 8, 3)), node.read(2, "8XYZ999", _ns(2026, 9, 1)),
                       node.read(1, "7ABC123", _ns(2026, 8, 3))])
    assert [r.outcome for r in out] == ["stored", "stored", "duplicate"]
    assert _partitions(store) == ["reads_p202608", "reads_p202609"]
    assert store.store([node.read(2, "CHANGED", _ns(2026, 9, 1))])[0].outcome == "conflict"
    assert (store.count(), store.seqs("node-1"), store.duplicate_count(), store.conflicts()) == (2, [1, 2], 0, 1)
    store.close()
    second = ReadStore(pg_url)  # reopening applies nothing
    assert migrations.migrate(second.db) == []
    assert [r.plate for r in second.reads_after(0)] == ["7ABC123", "8XYZ999"]
    second.close()


def test_search_exact_pattern_confusable(pg_url):
    store = ReadStore(pg_url)
    node = SyntheticNode.create()
    store.store([node.read(i, p, NOW - i * DAY) for i, p in
                 enumerate(["7ABC123", "7A8C1Z3", "7ABD125", "8XYZ999", "TABC123"], 1)])
    assert {h.row.plate for h in run_search(store, SearchQuery("7AB?12*").checked())} == {"7ABC123", "7ABD125"}
    assert {(h.row.plate, h.match) for h in run_search(store, SearchQuery("7ABC123", confusable=True).checked())} == {
        ("7ABC123", "exact"), ("7A8C1Z3", "confusable")}
    hits = run_search(store, SearchQuery("*99?", since_ns=NOW - 5 * DAY, until_ns=NOW).checked())
    assert [h.row.plate for h in hits] == ["8XYZ999"]
    store.close()


def test_purge_drops_whole_partitions_and_keeps_held_reads(pg_url):
    store = ReadStore(pg_url)
    clock = FakeClock(NOW)
    access = Access(store.db, clock=clock, hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    access.add_user(None, "ada", "administrator", PW, NOW + 400 * DAY)
    node = SyntheticNode.create()
    reads = ([node.read(i, f"JUN{i:04d}", _ns(2025, 6, 1 + i % 28)) for i in range(20)]
             + [node.read(100 + i, f"JUL{i:04d}", _ns(2025, 7, 1 + i % 28)) for i in range(20)]
             + [node.read(200 + i, f"SEP{i:04d}", _ns(2025, 9, 20 + i % 5)) for i in range(5)]  # inside 365 d
             + [node.read(300, "NEW0001", NOW - DAY)])
    store.store(reads)
    july = [r.id for r in store.reads_after(0, 1000) if r.plate.startswith("JUL")][:3]
    retention.place_hold(store, access, Actor("ada", "administrator"), case_no="C1", reason="robbery",
                         read_ids=july)
    result = retention.purge(store, access, SYSTEM, min_days=365)
    assert result.partitions_dropped == 1                 # June: dropped whole
    assert result.reads_deleted == 20 + 17 and result.held_kept == 3  # July: only unheld rows deleted
    assert _partitions(store) == ["reads_p202507", "reads_p202509", "reads_p202609"]
    assert sorted(r.id for r in store.reads_after(0, 1000) if r.plate.startswith("JUL")) == sorted(july)
    assert store.db.value("SELECT COUNT(*) FROM read_keys") == 3 + 5 + 1
    # A purged read sent again is acknowledged (`purged`) and not stored again: its key is gone,
    # the node's purge watermark remembers it. Held reads still dedup on their keys.
    assert store.db.rows("SELECT node_id, seq FROM purge_watermarks") == [("node-1", 119)]
    out = store.store([reads[0], reads[20], reads[20 + 3], reads[40]])
    assert [r.outcome for r in out] == ["purged", "duplicate", "purged", "duplicate"]
    assert store.store([reads[0]])[0].outcome == "purged"  # alone (no key claimed in the batch) too
    assert store.db.value("SELECT COUNT(*) FROM read_keys") == 3 + 5 + 1
    assert store.count() == 3 + 5 + 1
    assert access.log.verify().ok
    store.close()


def test_purge_watermark_cases_match_sqlite(pg_url, tmp_path):
    # The same story on both backends: purge, then resends, late reads and events around the mark.
    outcomes = {}
    for name, target in (("postgres", pg_url), ("sqlite", tmp_path / "hq.db")):
        store = ReadStore(target)
        access = Access(store.db, clock=FakeClock(NOW))
        node = SyntheticNode.create()
        old = [node.read(s, f"OLD{s:04d}", _ns(2025, 6, 1) + s) for s in (1, 2, 3)]
        store.store(old + [node.read(4, "NEW0004", NOW - DAY)])
        retention.purge(store, access, SYSTEM, min_days=365)
        first = [r.outcome for r in store.store([
            old[0], old[2],                                  # the purged reads again
            node.read(2, "OTHER02", _ns(2025, 6, 2)),        # other content under a purged seq: unknowable
            node.read(3, "LATE003", NOW - DAY),              # seq purged but captured after the cutoff: kept
            #                                                  (PostgreSQL: claims the key old[2] lacks)
            node.read(5, "NEW0005", _ns(2025, 6, 3)),        # above the mark: stored (purged next run)
            _event(node, 1, _ns(2025, 6, 1)),                # events are purged with reads: under the mark too
        ])]
        # Above the mark the ordinary rules apply, whatever the capture time.
        second = [r.outcome for r in store.store([node.read(6, "OLD0006", _ns(2025, 6, 4)),
                                                  node.read(6, "NEW0006", NOW)])]
        outcomes[name] = (first, second, store.seqs("node-1"), store.conflicts(),
                          store.db.rows("SELECT node_id, seq FROM purge_watermarks"))
        store.close()
    assert outcomes["postgres"] == outcomes["sqlite"]
    assert outcomes["sqlite"][0] == ["purged", "purged", "purged", "stored", "stored", "purged"]
    assert outcomes["sqlite"][1] == ["stored", "conflict"]  # seq 6 > mark 3: nothing purged, ordinary rules
    assert outcomes["sqlite"][4] == [("node-1", 3)]


def test_migration_marks_nodes_purged_before_it(pg_url):
    store = ReadStore(pg_url)
    node = SyntheticNode.create()
    store.store([node.read(2, "NEW0002", NOW - DAY)])
    cutoff = NOW - 380 * DAY
    store.db.execute("INSERT INTO purges (t_ns, by_user, cutoff_ns, reads_deleted, partitions_dropped, held_kept, "
                     "seconds) VALUES (?,?,?,?,?,?,?)", (NOW, "system", cutoff, 5, 1, 0, 0.1))
    store.db.execute("DROP TABLE purge_watermarks")
    store.db.execute("DELETE FROM schema_version WHERE version=5")
    store.close()
    store = ReadStore(pg_url)
    assert store.db.rows("SELECT node_id, seq, cutoff_ns FROM purge_watermarks") == [("node-1", 2**63 - 1, cutoff)]
    out = store.store([node.read(1, "OLD0001", cutoff - DAY), node.read(3, "NEW0003", NOW)])
    assert [r.outcome for r in out] == ["purged", "stored"]
    store.close()


def test_access_log_append_only_and_search_logged(pg_url):
    import psycopg

    store = ReadStore(pg_url)
    access = Access(store.db, clock=FakeClock(NOW), hasher=PasswordHasher(time_cost=1, memory_cost=1024,
                                                                             parallelism=1))
    access.add_user(None, "ada", "administrator", PW, NOW + 400 * DAY)
    node = SyntheticNode.create()
    store.store([node.read(1, "7ABC123", NOW - DAY)])
    hits = search(store, access, Actor("ada", "administrator"), SearchQuery("7ABC123"), purpose="robbery",
                  case_no="C1")
    assert len(hits) == 1 and access.log.entries()[-1].case_no == "C1"
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        store.db.execute("UPDATE access_log SET purpose='x'")
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        store.db.execute("TRUNCATE access_log")
    assert access.log.verify().ok
    store.close()


def test_open_store_follows_the_configuration(pg_url, tmp_path):
    from hq.config import HQConfig
    from hq.store import open_store

    cfg = HQConfig.model_validate({"hq": {"data_dir": str(tmp_path)}, "store": {"url": pg_url}})
    store = open_store(cfg)
    assert store.db.postgres and store.count() == 0
    store.close()
    store.close()  # safe twice
    sqlite_store = open_store(HQConfig.model_validate({"hq": {"data_dir": str(tmp_path)}}))
    assert not sqlite_store.db.postgres and (tmp_path / "hq.db").exists()
    sqlite_store.close()


def _event(node, seq, t_ns):
    from transport import cbor
    from transport.envelope import Header, Opened, signed_bytes
    from transport.keys import key_id

    header = Header("event", node.node_id, seq, t_ns, key_id(node.key.public_key()), "hq")
    hb = cbor.dumps(header.to_wire())
    payload = {"kind": "event", "node": node.node_id, "seq": seq, "event": "no-read", "t_ns": t_ns}
    pb = cbor.dumps(payload)
    return Opened(header, hb, payload, pb, node.key.sign(signed_bytes(hb, pb)))


def test_batch_outcomes_match_sqlite(pg_url, tmp_path):
    node = SyntheticNode.create()
    first = node.read(1, "7ABC123", NOW)
    batch = [first, first, node.read(1, "DIFFERENT", NOW), _event(node, 1, NOW), node.read(2, "8XYZ999", NOW - DAY),
             _event(node, 1, NOW), node.read(2, "8XYZ999", NOW - DAY)]
    outcomes = {}
    for name, target in (("postgres", pg_url), ("sqlite", tmp_path / "hq.db")):
        store = ReadStore(target)
        outcomes[name] = ([r.outcome for r in store.store(batch)], [r.outcome for r in store.store(batch)],
                          store.count(), store.conflicts(), [r.plate for r in store.reads_after(0)])
        store.close()
    assert outcomes["postgres"] == outcomes["sqlite"]
    assert outcomes["sqlite"][0] == ["stored", "duplicate", "conflict", "stored", "stored", "duplicate", "duplicate"]
    assert outcomes["sqlite"][1] == ["duplicate", "duplicate", "conflict", "duplicate", "duplicate", "duplicate",
                                     "duplicate"]


def test_sequence_gaps_match_sqlite(pg_url, tmp_path):
    """`alpr-hq nodes` works its gaps out in SQL (LAG over a UNION): the same on both stores."""
    node = SyntheticNode.create("node-g", "main-st")
    rows = [node.read(seq, "7ABC123", NOW - DAY) for seq in (2, 3, 6, 7, 9)]
    pg = ReadStore(pg_url)
    lite = ReadStore(tmp_path / "hq.db")
    try:
        for store in (pg, lite):
            store.store(rows)
        assert pg.sequence_gaps("node-g") == lite.sequence_gaps("node-g") == (9, 4, [(1, 1), (4, 5), (8, 8)])
    finally:
        pg.close()
        lite.close()


def test_a_replica_only_or_hollowed_append_only_trigger_is_reported(pg_url):
    """ENABLE REPLICA TRIGGER (state 'R') lets normal sessions UPDATE and DELETE; it used to pass
    the check, which looked for 'D' alone. So did a function rewritten not to raise."""
    store = ReadStore(pg_url)
    log = Access(store.db, clock=FakeClock(NOW)).log
    try:
        assert log.guard_problems() == []
        store.db.execute("ALTER TABLE access_log ENABLE REPLICA TRIGGER access_log_append_only")
        assert log.guard_problems() == ["trigger access_log_append_only on access_log is disabled (enabled state 'R'; "
                                        "the log is no longer append-only)"]
        store.db.execute("ALTER TABLE access_log ENABLE TRIGGER access_log_append_only")
        store.db.execute("CREATE OR REPLACE FUNCTION access_log_append_only() RETURNS trigger LANGUAGE plpgsql "
                         "AS $f$ BEGIN RETURN NEW; END $f$")
        assert any("no longer refuses changes" in p for p in log.guard_problems())
    finally:
        store.db.execute("CREATE OR REPLACE FUNCTION access_log_append_only() RETURNS trigger LANGUAGE plpgsql "
                         "AS $f$ BEGIN RAISE EXCEPTION 'access_log is append-only'; END $f$")
        store.db.execute("ALTER TABLE access_log ENABLE TRIGGER access_log_append_only")
        store.close()
