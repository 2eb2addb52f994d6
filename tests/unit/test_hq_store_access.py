"""HQ records: store migrations, users and sessions, the access gate and the access log's hash chain."""
from __future__ import annotations

import os
import sqlite3
import stat

import pytest
from argon2 import PasswordHasher

from hq import migrations
from hq.access import Access, Actor
from hq.accesslog import AccessLog
from hq.errors import AccessDenied, PolicyError
from hq.store import ReadStore, open_store
from hq.synthetic import FakeClock, SyntheticNode

pytestmark = pytest.mark.unit

NOW = 1_790_000_000 * 10**9  # 2026-09-21
DAY = 86400 * 10**9
PW = "correct horse battery"


@pytest.fixture
def env(tmp_path):
    store = ReadStore(tmp_path / "hq.db")
    clock = FakeClock(NOW)
    access = Access(store.db, clock=clock, hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    admin = access.add_user(None, "ada", "administrator", PW, NOW + 365 * DAY)
    boss = Actor(admin.name, admin.role)
    access.add_user(boss, "ivan", "investigator", PW, NOW + 30 * DAY)
    access.add_user(boss, "una", "investigator", PW, None)
    access.add_user(boss, "audrey", "auditor", PW, NOW + 30 * DAY)
    access.add_user(boss, "tom", "technician", PW, NOW + 30 * DAY)
    yield store, access, clock
    store.close()


def test_legacy_store_is_migrated_in_place_and_keeps_its_reads(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    for stmt in migrations._SQLITE_V1:  # the schema ingest shipped before migrations
        db.execute(stmt)
    db.execute("INSERT INTO reads (node_id, seq, kind, plate, confidence, capture_ns, stored_ns, site_id, camera_id, "
               "payload_sha256, header, payload, signature) VALUES ('n', 1, 'read', '7ab-c12', 9000, 1, 1, 's', 'c', "
               "x'00', x'00', x'00', x'00')")
    db.commit()
    db.close()
    store = ReadStore(path)
    assert store.db.rows("SELECT version FROM schema_version ORDER BY version") == [(v,) for v in range(1, migrations.LATEST + 1)]
    assert store.db.one("SELECT plate_norm, plate_skel FROM reads") == ("7ABC12", "1A8C12")
    assert store.count() == 1
    store.close()
    assert migrations.migrate(ReadStore(path).db) == []  # nothing left to apply


def test_store_newer_than_code_is_refused(tmp_path):
    store = ReadStore(tmp_path / "hq.db")
    store.db.execute("INSERT INTO schema_version VALUES (99, 0, 'future')")
    store.close()
    with pytest.raises(Exception, match="newer than this HQ"):
        ReadStore(tmp_path / "hq.db")


def test_store_exactly_once_and_open_store(tmp_path):
    node = SyntheticNode.create()
    store = open_store(tmp_path / "hq.db")
    r1 = node.read(1, "7ABC123", NOW)
    out = store.store([r1, r1, node.read(2, "8XYZ999", NOW), node.read(2, "OTHER", NOW)])
    assert [r.outcome for r in out] == ["stored", "duplicate", "stored", "conflict"]
    assert store.count() == 2 and store.seqs("node-1") == [1, 2] and store.duplicate_count() == 0
    assert store.conflicts() == 1
    stored = store.read(store.reads_after(0)[0].id)
    assert stored.header == r1.header_bytes and stored.payload == r1.payload_bytes and stored.signature == r1.signature


def test_new_sqlite_store_is_private_to_hq(tmp_path):
    # A permissive umask, as a service or shell commonly has: HQ must not rely on it.
    old_umask = os.umask(0o022)
    try:
        data = tmp_path / "data"
        store = ReadStore(data / "hq.db")
        store.store([SyntheticNode.create().read(1, "7ABC123", NOW)])  # a write: -wal and -shm exist now
        modes = {name: stat.S_IMODE((data / name).stat().st_mode) for name in ("hq.db", "hq.db-wal", "hq.db-shm")}
        store.close()
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert modes == {"hq.db": 0o600, "hq.db-wal": 0o600, "hq.db-shm": 0o600}
    assert ReadStore(data / "hq.db").count() == 1  # the pre-created empty file became a normal store


def test_existing_store_folder_keeps_its_mode(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o750)
    os.chmod(data, 0o750)
    ReadStore(data / "hq.db").close()
    assert stat.S_IMODE(data.stat().st_mode) == 0o750
    assert stat.S_IMODE((data / "hq.db").stat().st_mode) == 0o600


def test_last_id_is_the_newest_read(tmp_path):
    store = ReadStore(tmp_path / "hq.db")
    assert store.last_id() == 0
    node = SyntheticNode.create()
    store.store([node.read(i, f"7ABC{i:03d}", NOW) for i in range(1, 6)])
    assert store.last_id() == max(r.id for r in store.reads_after(0)) == 5
    store.db.execute("DELETE FROM reads WHERE id=2")
    assert store.last_id() == 5
    store.close()


def test_passwords_are_argon2id_and_login_sessions_expire(env):
    store, access, clock = env
    assert store.db.value("SELECT password_hash FROM users WHERE name='ivan'").startswith("$argon2id$")
    with pytest.raises(AccessDenied, match="bad user name or password"):
        access.login("ivan", "wrong password!!")
    token = access.login("ivan", PW)
    assert access.session(token) == Actor("ivan", "investigator")
    assert token not in str(store.db.rows("SELECT * FROM sessions"))  # only the hash is stored
    clock.advance(8 * 3600 + 1)
    with pytest.raises(AccessDenied, match="expired"):
        access.session(token)
    token = access.login("ivan", PW)
    access.logout(token)
    with pytest.raises(AccessDenied, match="not valid"):
        access.session(token)


def test_bootstrap_only_once_and_only_admins_add_users(env):
    _, access, _ = env
    with pytest.raises(AccessDenied, match="users exist"):
        access.add_user(None, "mallory", "administrator", PW)
    with pytest.raises(AccessDenied, match="may not users"):
        access.add_user(Actor("ivan", "investigator"), "eve", "investigator", PW)
    with pytest.raises(PolicyError, match="at least 12"):
        access.add_user(Actor("ada", "administrator"), "eve", "investigator", "short")


def test_disabled_user_cannot_log_in_and_loses_sessions(env):
    _, access, _ = env
    token = access.login("ivan", PW)
    access.set_active(Actor("ada", "administrator"), "ivan", False)
    with pytest.raises(AccessDenied):
        access.session(token)
    with pytest.raises(AccessDenied):
        access.login("ivan", PW)


@pytest.mark.parametrize("user,role,why", [
    ("una", "investigator", "no ALPR training on file"),
    ("audrey", "auditor", "role auditor may not search"),
    ("tom", "technician", "role technician may not search"),
])
def test_data_access_refused_and_the_refusal_logged(env, user, role, why):
    _, access, _ = env
    with pytest.raises(AccessDenied, match=why):
        access.authorize(Actor(user, role), "search", purpose="stolen car", query={"plate": "7ABC123"})
    last = access.log.entries()[-1]
    assert (last.user, last.action, last.outcome) == (user, "search", "denied") and why in last.detail


def test_expired_training_refused(env):
    _, access, clock = env
    ivan = Actor("ivan", "investigator")
    access.authorize(ivan, "search", purpose="p")
    clock.advance(31 * 86400)
    with pytest.raises(AccessDenied, match="training expired"):
        access.authorize(ivan, "search", purpose="p")
    access.set_training(Actor("ada", "administrator"), "ivan", clock() + DAY)
    access.authorize(ivan, "search", purpose="p")


def test_purpose_and_case_requirements(env):
    _, access, _ = env
    ivan = Actor("ivan", "investigator")
    with pytest.raises(AccessDenied, match="purpose is required"):
        access.authorize(ivan, "search", purpose=" ")
    with pytest.raises(AccessDenied, match="requires a case number"):
        access.authorize(ivan, "export", purpose="court")
    grant = access.authorize(ivan, "search", purpose="robbery", case_no="24-001", query={"plate": "7ABC123"})
    e = access.log.entries()[-1]
    assert e.id == grant.log_id
    assert (e.user, e.role, e.action, e.purpose, e.case_no, e.query) == (
        "ivan", "investigator", "search", "robbery", "24-001", '{"plate":"7ABC123"}')
    assert e.t_ns == NOW


def test_access_log_is_append_only_in_the_database(env):
    store, _, _ = env
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store.db.execute("UPDATE access_log SET purpose='x' WHERE id=1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store.db.execute("DELETE FROM access_log WHERE id=1")


def _tamper(store, sql, params=()):
    """What someone with direct write access to the file could do: drop the guard, edit, and put
    the guard back (so only the chain itself can give the edit away)."""
    store.db.execute("DROP TRIGGER IF EXISTS access_log_no_update")
    store.db.execute("DROP TRIGGER IF EXISTS access_log_no_delete")
    store.db.execute(sql, params)
    for stmt in migrations._append_only("sqlite"):
        store.db.execute(stmt)


def _fill(access, n=6):
    ivan = Actor("ivan", "investigator")
    for i in range(n):
        access.authorize(ivan, "search", purpose=f"case work {i}", case_no=f"C{i}")


def test_chain_verifies_and_names_an_edited_entry(env):
    store, access, _ = env
    _fill(access)
    result = access.log.verify()
    assert result.ok and result.entries == len(access.log.entries())
    target = access.log.entries()[-3].id
    _tamper(store, "UPDATE access_log SET purpose='routine' WHERE id=?", (target,))
    assert access.log.verify().problems == (f"entry {target}: content was edited (hash mismatch)",)


def test_chain_names_deleted_entries_inside_and_at_the_end(env):
    store, access, _ = env
    _fill(access)
    ids = [e.id for e in access.log.entries()]
    _tamper(store, "DELETE FROM access_log WHERE id=?", (ids[2],))
    assert access.log.verify().problems == (f"entries {ids[2]}..{ids[2]} are missing (deleted)",)
    _tamper(store, "DELETE FROM access_log WHERE id>=?", (ids[-2],))
    problems = access.log.verify().problems
    assert f"entries {ids[-2]}..{ids[-1]} at the end are missing (deleted)" in problems


def test_chain_detects_a_replaced_entry_with_a_recomputed_own_hash(env):
    store, access, _ = env
    _fill(access)
    e = access.log.entries()[3]
    # Recompute the edited entry's own hash: the next entry no longer follows it.
    from hq.accesslog import entry_hash
    forged = entry_hash(e.id, e.t_ns, e.user, e.role, e.action, e.outcome, "routine", e.case_no, e.query, e.detail,
                        e.prev_hash)
    _tamper(store, "UPDATE access_log SET purpose='routine', hash=? WHERE id=?", (forged, e.id))
    expected = f"entry {e.id + 1}: does not follow entry {e.id} (an entry was deleted or replaced)"
    assert access.log.verify().problems == (expected,)


def test_two_writers_share_one_chain(tmp_path):
    a = ReadStore(tmp_path / "hq.db")
    b = ReadStore(tmp_path / "hq.db")
    la, lb = AccessLog(a.db), AccessLog(b.db)
    for i in range(5):
        (la if i % 2 else lb).append(user="u", role="investigator", action="search", purpose=str(i))
    result = la.verify()
    assert result.ok and result.entries == 5
