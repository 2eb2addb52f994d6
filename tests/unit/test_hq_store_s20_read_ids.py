"""SQLite read ids are never handed out twice (migration 6): a purged read's id must not come back
as another plate's, or approvals, holds and access-log entries that name it would name that plate,
and `reads tail` (ids above the last one seen) would skip it."""
from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import pytest

from hq import migrations
from hq.db import open_sqlite
from hq.store import ReadStore
from hq.synthetic import SyntheticNode

pytestmark = pytest.mark.unit

DAY = 86400 * 10**9
NOW = int(dt.datetime(2026, 9, 15, 12, tzinfo=dt.UTC).timestamp()) * 10**9
BEFORE_6 = tuple(m for m in migrations.MIGRATIONS if m.version < 6)


def _store_at_version_5(path: Path) -> None:
    """A store as HQ left it before migration 6 (ids reused after a purge)."""
    db = open_sqlite(path)
    migrations.migrate(db, BEFORE_6)
    db.close()


def _schema(db, table: str) -> dict[str, str]:
    return {name: sql for name, sql in db.rows(
        "SELECT name, sql FROM sqlite_master WHERE tbl_name=? AND type IN ('index', 'trigger') AND sql IS NOT NULL",
        (table,))}


def _log_entry(db, entry_id: int, action: str, query: dict | str, outcome: str = "ok") -> None:
    text = query if isinstance(query, str) else json.dumps(query, sort_keys=True, separators=(",", ":"))
    db.execute("INSERT INTO access_log (id, t_ns, user_name, role, action, outcome, purpose, case_no, query, detail, "
               "prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
               (entry_id, NOW, "ada", "investigator", action, outcome, "case work", "C7", text, "", "0" * 64, "0" * 64))


def test_the_id_of_the_newest_read_is_not_reused_after_it_is_purged(tmp_path):
    store = ReadStore(tmp_path / "hq.db")
    node = SyntheticNode.create("node-a")
    store.store([node.read(1, "NEW0001", NOW - DAY), node.read(2, "OLD9999", NOW - 400 * DAY)])
    old_id = store.db.value("SELECT id FROM reads WHERE plate='OLD9999'")
    assert old_id == store.last_id() == 2
    store.db.execute("DELETE FROM reads WHERE id=?", (old_id,))  # what retention's purge does to it
    store.store([node.read(3, "ZZZ0003", NOW)])
    assert store.db.rows("SELECT id, plate FROM reads ORDER BY id") == [(1, "NEW0001"), (3, "ZZZ0003")]
    store.close()
    reopened = ReadStore(tmp_path / "hq.db")  # the sequence is kept in the file, not in the process
    reopened.db.execute("DELETE FROM reads WHERE id=3")
    reopened.store([node.read(4, "ZZZ0004", NOW)])
    assert reopened.last_id() == 4
    reopened.close()


def test_reads_tail_started_at_the_last_id_sees_the_read_stored_after_a_purge(tmp_path):
    store = ReadStore(tmp_path / "hq.db")
    node = SyntheticNode.create("node-a")
    store.store([node.read(1, "AAA0001", NOW), node.read(2, "OLD0002", NOW - 400 * DAY)])
    last = store.last_id()
    store.db.execute("DELETE FROM reads WHERE id=?", (last,))
    store.store([node.read(3, "BBB0003", NOW)])
    assert [r.plate for r in store.reads_after(last)] == ["BBB0003"]
    store.close()


def test_an_existing_store_is_rebuilt_with_its_rows_indexes_and_triggers(tmp_path):
    path = tmp_path / "hq.db"
    _store_at_version_5(path)
    node = SyntheticNode.create("node-a")
    db = open_sqlite(path)
    # An operator's own trigger and view on reads must come through as they were.
    db.execute("CREATE TABLE read_audit (read_id INTEGER, plate TEXT)")
    db.execute("CREATE TRIGGER reads_audit AFTER INSERT ON reads BEGIN "
               "INSERT INTO read_audit VALUES (new.id, new.plate); END")
    db.execute("CREATE VIEW recent_plates AS SELECT id, plate FROM reads WHERE capture_ns > 0")
    db.close()
    old = ReadStore.__new__(ReadStore)  # store with the code of migration 5's time: the rows go in as then
    old.db, old._months = open_sqlite(path), set()
    old.store([node.read(1, "AAA0001", NOW, crop=b"\xff\xd8crop"), node.read(2, "BBB0002", NOW - DAY),
               node.read(3, "CCC0003", NOW - 2 * DAY)])
    old.db.execute("DELETE FROM reads WHERE id=3")  # purged: id 3 is free, and nothing refers to it
    rows_before = old.db.rows("SELECT * FROM reads ORDER BY id")
    table_before = old.db.value("SELECT sql FROM sqlite_master WHERE name='reads'")
    schema_before = _schema(old.db, "reads")
    old.db.close()

    store = ReadStore(path)
    assert store.db.rows("SELECT version FROM schema_version WHERE version >= 6") == [
        (v,) for v in range(6, migrations.LATEST + 1)]
    assert store.db.rows("SELECT * FROM reads ORDER BY id") == rows_before
    table_after = store.db.value("SELECT sql FROM sqlite_master WHERE name='reads'")
    assert "AUTOINCREMENT" in table_after
    # The same statement but for the name SQLite writes quoted after the rename and AUTOINCREMENT.
    assert (table_after.replace('"reads"', "reads").replace("PRIMARY KEY AUTOINCREMENT", "PRIMARY KEY")
            == table_before)
    assert _schema(store.db, "reads") == schema_before
    assert "reads_audit" in schema_before and "reads_time_cover" in schema_before
    assert store.db.value("SELECT sql FROM sqlite_master WHERE name='recent_plates'").startswith("CREATE VIEW")
    assert store.db.value("SELECT COUNT(*) FROM sqlite_master WHERE name='reads_rebuild'") == 0
    assert store.db.value("PRAGMA integrity_check") == "ok"
    assert store.db.rows("PRAGMA foreign_key_check") == []
    assert store.db.value("SELECT COUNT(*) FROM sqlite_stat1 WHERE tbl='reads'") > 0  # planner statistics back
    # Still exactly once per (node, seq), and the read's signed bytes are untouched.
    with pytest.raises(sqlite3.IntegrityError):
        store.db.execute("INSERT INTO reads SELECT * FROM reads WHERE id=1")
    assert store.read(1).crop_jpeg() == b"\xff\xd8crop"

    # Id 3 was purged before the migration and nothing names it: the store kept no trace of it,
    # so the sequence starts above the highest id still there (or still named, see below).
    store.store([node.read(4, "DDD0004", NOW)])
    assert store.db.rows("SELECT id, plate FROM reads ORDER BY id") == [(1, "AAA0001"), (2, "BBB0002"),
                                                                         (3, "DDD0004")]
    # The trigger fires for new reads, and did not for the rows the rebuild copied.
    assert store.db.rows("SELECT read_id, plate FROM read_audit") == [(1, "AAA0001"), (2, "BBB0002"),
                                                                      (3, "CCC0003"), (3, "DDD0004")]
    store.db.execute("DELETE FROM reads WHERE id=3")  # from now on a purged id is never handed out again
    store.store([node.read(5, "EEE0005", NOW)])
    assert store.last_id() == 4
    store.close()
    assert migrations.migrate(ReadStore(path).db) == []


def test_the_sequence_starts_above_purged_ids_that_approvals_holds_and_the_log_still_name(tmp_path):
    path = tmp_path / "hq.db"
    _store_at_version_5(path)
    old = ReadStore.__new__(ReadStore)
    old.db, old._months = open_sqlite(path), set()
    node = SyntheticNode.create("node-a")
    old.store([node.read(i, f"AAA000{i}", NOW) for i in range(1, 4)])
    db = old.db
    # Reads 2..3 purged after they were held, approved, viewed: max(id) is 1 now, but 2..9 were handed out.
    db.execute("INSERT INTO holds (id, case_no, reason, created_by, created_ns, released_ns) "
               "VALUES (1, 'C7', 'r', 'ivan', 1, 2)")
    db.execute("INSERT INTO hold_reads (hold_id, read_id, capture_ns) VALUES (1, 3, 1)")
    db.execute("INSERT INTO release_requests (case_no, agency, requester, purpose, requested_by, requested_ns, "
               "status, read_ids) VALUES ('C7', 'DA', 'R', 'p', 'ivan', 1, 'approved', '[3, 5]')")
    db.execute("INSERT INTO alert_outcomes (read_id, capture_ns, outcome, note, by_user, t_ns) "
               "VALUES (6, 1, 'confirmed', '', 'ivan', 1)")
    _log_entry(db, 1, "view", {"read": 7})
    _log_entry(db, 2, "export", {"release": 1, "reads": [8, 9]})
    # Refused attempts name ids a user typed: never handed out, they do not move the sequence.
    _log_entry(db, 3, "view", {"read": 10**15}, outcome="denied")
    _log_entry(db, 4, "view", {"read": 2**62 + 5})  # a damaged row is not believed either
    _log_entry(db, 5, "search", "not json {")
    db.execute("DELETE FROM reads WHERE id > 1")
    db.close()

    store = ReadStore(path)
    assert store.db.value("SELECT seq FROM sqlite_sequence WHERE name='reads'") == 9
    store.store([node.read(10, "NEW0010", NOW)])
    assert store.db.value("SELECT id FROM reads WHERE plate='NEW0010'") == 10
    store.close()


def test_an_empty_store_gets_a_sequence_above_ids_it_still_refers_to(tmp_path):
    path = tmp_path / "hq.db"
    _store_at_version_5(path)
    db = open_sqlite(path)
    _log_entry(db, 1, "view", {"read": 41})  # every read purged; the log still names read 41
    db.close()
    store = ReadStore(path)
    store.store([SyntheticNode.create().read(1, "AAA0001", NOW)])
    assert store.last_id() == 42
    store.close()


def test_a_store_from_before_migrations_gets_ids_that_are_never_reused(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for stmt in migrations._SQLITE_V1:
        conn.execute(stmt)
    conn.execute("INSERT INTO reads (id, node_id, seq, kind, plate, confidence, capture_ns, stored_ns, site_id, "
                 "camera_id, payload_sha256, header, payload, signature) VALUES (7, 'n', 1, 'read', '7ab-c12', "
                 "9000, 1, 1, 's', 'c', x'00', x'00', x'00', x'00')")
    conn.commit()
    conn.close()
    store = ReadStore(path)
    assert store.db.one("SELECT id, plate_norm FROM reads") == (7, "7ABC12")
    store.db.execute("DELETE FROM reads")
    store.store([SyntheticNode.create().read(1, "AAA0001", NOW)])
    assert store.last_id() == 8
    store.close()


def test_a_reads_table_hq_did_not_create_is_refused_by_name(tmp_path):
    path = tmp_path / "hq.db"
    _store_at_version_5(path)
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE reads RENAME TO reads_v5")
    conn.execute("CREATE TABLE reads (rid INTEGER PRIMARY KEY, plate TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(Exception, match="migration 6: reads is not the table HQ created"):
        ReadStore(path)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone() == (5,)  # nothing half done
    conn.close()


def test_after_a_retention_purge_a_logged_read_id_names_no_other_plate(tmp_path):
    from hq import retention
    from hq.access import SYSTEM, Access
    from hq.errors import NotFound

    store = ReadStore(tmp_path / "hq.db")
    now = dt.datetime.now(dt.UTC)
    now_ns = int(now.timestamp()) * 10**9
    a, b = SyntheticNode.create("node-a", "s"), SyntheticNode.create("node-b", "s")
    store.store([a.read(1, "NEW0001", now_ns - DAY)])
    store.store([b.read(1, "OLD9999", now_ns - 400 * DAY)])  # delivered late: the highest id
    retention.purge(store, Access(store.db), SYSTEM, min_days=365, retention_days=365)
    assert store.db.rows("SELECT id, plate FROM reads") == [(1, "NEW0001")]
    store.store([a.read(2, "ZZZ0002", now_ns)])
    assert store.db.rows("SELECT id, plate FROM reads ORDER BY id") == [(1, "NEW0001"), (3, "ZZZ0002")]
    with pytest.raises(NotFound):
        store.read(2)  # still "purged", as an approval or the access log naming read 2 expects
    store.close()


def test_the_rebuild_keeps_rows_of_an_operators_table_that_refers_to_reads(tmp_path: Path):
    # With foreign keys on, DROP TABLE reads would run the ON DELETE actions of a table that
    # refers to it: migrations run with them off, and the rebuild checks them itself.
    path = tmp_path / "hq.db"
    _store_at_version_5(path)
    db = open_sqlite(path)
    db.execute("CREATE TABLE read_notes (read_id INTEGER REFERENCES reads(id) ON DELETE CASCADE, note TEXT)")
    for seq in (1, 2):
        db.execute("INSERT INTO reads (node_id, seq, kind, plate, plate_norm, plate_skel, confidence, region, "
                   "capture_ns, stored_ns, site_id, camera_id, payload_sha256, header, payload, signature) "
                   "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   ("n1", seq, "read", f"ABC{seq}", f"ABC{seq}", f"A8C{seq}", 9300, None, NOW, NOW, "s", "c",
                    b"d", b"h", b"p", b"s"))
    db.execute("INSERT INTO read_notes VALUES (1, 'evidence for case 7'), (2, 'owner called')")
    db.close()
    store = ReadStore(path)
    assert store.db.rows("SELECT read_id, note FROM read_notes ORDER BY read_id") == [
        (1, "evidence for case 7"), (2, "owner called")]
    assert store.db.value("PRAGMA foreign_keys") == 1  # switched back on after migrating
    store.close()


def test_a_trigger_on_another_table_that_names_reads_survives_the_rebuild(tmp_path: Path):
    path = tmp_path / "hq.db"
    _store_at_version_5(path)
    db = open_sqlite(path)
    db.execute("CREATE TABLE watch (plate TEXT)")
    db.execute("CREATE TRIGGER watch_hits AFTER INSERT ON watch BEGIN UPDATE reads SET lane = lane "
               "WHERE plate = NEW.plate; END")
    db.close()
    store = ReadStore(path)  # refused before: "error in trigger watch_hits: no such table: main.reads"
    assert store.db.value("SELECT COUNT(*) FROM sqlite_master WHERE type='trigger' AND name='watch_hits'") == 1
    assert "AUTOINCREMENT" in store.db.value("SELECT sql FROM sqlite_master WHERE name='reads'")
    store.close()

