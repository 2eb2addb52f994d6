"""HQ records: gaps between the ALPR policy (docs/records.md) and what the code enforced.

Live `reads tail` re-checks; approved releases fix the exported reads; refused attempts leave
a log row; `audit verify --expect-head` and missing triggers; trimmed case numbers; `hotlist
show`; training for every logged-in action; retention across 29 February; private crop and
package files; strict date options.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import stat
import time

import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric import ed25519

from hq import (
    alerts,
    cli,
    evidence,
    hotlist,
    migrations,
    partitions,
    releases,
    report,
    retention,
)
from hq.access import SYSTEM, Access, Actor
from hq.errors import AccessDenied, NotFound, PolicyError
from hq.records_cli import parse_time
from hq.search import SearchQuery, search
from hq.store import ReadStore
from hq.synthetic import FakeClock, SyntheticNode, tiny_jpeg
from tests.support.hq_site import hq_site
from transport.registry import Registry

pytestmark = pytest.mark.unit

DAY = 86400 * 10**9
NOW = int(dt.datetime(2026, 9, 15, 12, tzinfo=dt.UTC).timestamp()) * 10**9
PW = "correct horse battery"
ADA, BEA = Actor("ada", "administrator"), Actor("bea", "administrator")
IVAN, AUDREY, TOM = Actor("ivan", "investigator"), Actor("audrey", "auditor"), Actor("tom", "technician")


def utc_ns(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=dt.UTC).timestamp()) * 10**9


@pytest.fixture
def env(tmp_path):
    store = ReadStore(tmp_path / "hq.db")
    clock = FakeClock(NOW)
    access = Access(store.db, clock=clock, hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    access.add_user(None, "ada", "administrator", PW, NOW + 400 * DAY)
    for name, role in (("bea", "administrator"), ("ivan", "investigator"), ("audrey", "auditor"),
                       ("tom", "technician")):
        access.add_user(ADA, name, role, PW, NOW + 30 * DAY)
    node = SyntheticNode.create("node-a", "main-st")
    registry = Registry(tmp_path / "registry.db")
    registry.enroll("node-a", "main-st", node.key.public_key(), actor="installer")
    store.store([node.read(i, p, NOW - i * DAY, crop=tiny_jpeg(p))
                 for i, p in enumerate(["7ABC123", "8XYZ999", "5SAM555"], 1)])
    ids = [r.id for r in store.reads_after(0)]
    yield store, access, clock, registry, ids
    registry.close()
    store.close()


def last_entry(access):
    return access.log.entries()[-1]


def denied_rows(access):
    return [(e.user, e.action, e.detail) for e in access.log.entries() if e.outcome == "denied"]


# -- the command line -------------------------------------------------------------------------------
@pytest.fixture
def site(tmp_path, monkeypatch):
    run, data, _ = hq_site(tmp_path, monkeypatch, lambda node, now: [
        node.read(1, "7ABC123", now - DAY, crop=tiny_jpeg("7ABC123")),
        node.read(2, "7A8C1Z3", now - 2 * DAY, crop=tiny_jpeg("7A8C1Z3"))])

    def sql(statement, params=()):
        db = sqlite3.connect(data / "hq.db", isolation_level=None)
        try:
            return db.execute(statement, params).fetchall()
        finally:
            db.close()

    assert run("users", "add", "ada", "--role", "administrator", "--trained-until", "2099-01-01", "--bootstrap",
               new_password=PW) == 0
    assert run("users", "add", "ivan", "--role", "investigator", "--trained-until", "2099-01-01", "--user", "ada",
               password=PW, new_password=PW) == 0
    return run, sql, tmp_path


# -- 1. `reads tail` re-checks the access while it runs ----------------------------------------------
def _revoke_during_tail(monkeypatch, tmp, revoke):
    """After tail's first poll, `revoke` runs; later polls would each bring a new read."""
    polls = []
    original = ReadStore.reads_after

    def reads_after(self, last_id, limit=1000):
        polls.append(last_id)
        if len(polls) == 1:
            revoke()
        elif len(polls) < 5:
            other = ReadStore(tmp / "data" / "hq.db")
            other.store([SyntheticNode.create("node-a", "main-st").read(10 + len(polls), f"NEW{len(polls):04d}",
                                                                        time.time_ns())])
            other.close()
        return original(self, last_id, limit)

    monkeypatch.setattr(ReadStore, "reads_after", reads_after)
    monkeypatch.setattr(cli, "POLL_S", 0.01, raising=False)  # raising=False: runs against older code too


@pytest.mark.parametrize("how, reason", [
    ("logout", "session is not valid (logged out or ended)"),
    ("expire", "session expired"),
    ("disable", "session is not valid (logged out or ended)"),  # disabling ends the user's sessions
    ("training", "ALPR training expired"),
])
def test_reads_tail_stops_when_the_session_or_user_no_longer_qualifies(site, capsys, monkeypatch, how, reason):
    run, sql, tmp = site
    sess = ["--session", str(tmp / "s-ivan")]
    assert run("login", "--user", "ivan", *sess, password=PW) == 0
    revoke = {
        "logout": lambda: run("logout", *sess),
        "expire": lambda: sql("UPDATE sessions SET expires_ns=? WHERE user_name='ivan'", (time.time_ns() - 1,)),
        "disable": lambda: run("users", "disable", "ivan", "--user", "ada", password=PW),
        "training": lambda: sql("UPDATE users SET trained_until_ns=? WHERE name='ivan'", (time.time_ns() - 1,)),
    }[how]
    _revoke_during_tail(monkeypatch, tmp, revoke)
    capsys.readouterr()
    assert run("reads", "tail", "--count", "1", "--purpose", "watch desk", *sess) == 2
    out, err = capsys.readouterr()
    assert "NEW" not in out
    assert reason in err
    [(user, action, outcome, detail)] = sql("SELECT user_name, action, outcome, detail FROM access_log "
                                            "ORDER BY id DESC LIMIT 1")
    assert (user, outcome) == ("ivan", "denied") and action in ("session", "view") and reason in detail


def test_reads_tail_with_a_password_login_stops_when_training_lapses(site, capsys, monkeypatch):
    run, sql, tmp = site
    _revoke_during_tail(monkeypatch, tmp, lambda: sql("UPDATE users SET trained_until_ns=NULL WHERE name='ivan'"))
    capsys.readouterr()
    assert run("reads", "tail", "--count", "1", "--purpose", "watch desk", "--user", "ivan", password=PW) == 2
    out, err = capsys.readouterr()
    assert "NEW" not in out and "view stopped: user 'ivan' has no ALPR training on file" in err
    assert sql("SELECT action, outcome FROM access_log ORDER BY id DESC LIMIT 1") == [("view", "denied")]


def test_long_running_password_login_expires_like_a_session(env):
    _, access, clock, _, _ = env
    grant = access.authorize(IVAN, "view", purpose="watch desk", query={"tail": True})
    access.recheck(grant, login_ns=NOW)
    clock.advance(8 * 3600 + 1)
    with pytest.raises(AccessDenied, match="older than the session limit"):
        access.recheck(grant, login_ns=NOW)
    assert (last_entry(access).action, last_entry(access).outcome) == ("view", "denied")


# -- 2. an approved release fixes the reads that leave ----------------------------------------------------
def _approved_release(store, access, ids, case="C1"):
    retention.place_hold(store, access, IVAN, case_no=case, reason="robbery", read_ids=ids)
    req = releases.request(store, access, IVAN, case_no=case, agency="County DA", requester="DDA Smith",
                           purpose="prosecution")
    return releases.review(store, access, ADA, req.id, approve=True, note="PC 1054")


def test_approval_records_the_held_reads_and_export_writes_exactly_those(env, tmp_path):
    store, access, _, registry, ids = env
    req = _approved_release(store, access, ids[:1])
    assert req.read_ids == (ids[0],)
    assert json.loads(store.db.value("SELECT read_ids FROM release_requests WHERE id=?", (req.id,))) == [ids[0]]
    # Held for the same case after approval: not part of what was approved.
    retention.place_hold(store, access, IVAN, case_no="C1", reason="more", read_ids=ids[1:2])
    key = ed25519.Ed25519PrivateKey.generate()
    out = tmp_path / "pkg"
    result = evidence.export(store, access, IVAN, case_no="C1", release_id=req.id, out=out, sign_key=key,
                             registry=registry)
    manifest = json.loads((out / "manifest.json").read_text())
    assert result.reads == 1 and manifest["reads"] == [ids[0]]
    assert sorted(p.name for p in (out / "reads").iterdir()) == [str(ids[0])]
    assert json.loads((out / "release.json").read_text())["read_ids"] == [ids[0]]
    assert evidence.verify_package(out, key.public_key()).ok


def test_export_refuses_when_an_approved_read_is_no_longer_held(env, tmp_path):
    store, access, _, registry, ids = env
    req = _approved_release(store, access, ids[:2])
    [hold] = retention.holds(store, "C1")
    retention.release_hold(store, access, IVAN, hold.id, note="hold lifted")
    retention.place_hold(store, access, IVAN, case_no="C1", reason="again", read_ids=ids[:1])
    with pytest.raises(PolicyError, match=f"read {ids[1]} is no longer under an active hold for case C1"):
        evidence.export(store, access, IVAN, case_no="C1", release_id=req.id, out=tmp_path / "pkg",
                        sign_key=ed25519.Ed25519PrivateKey.generate(), registry=registry)
    assert not (tmp_path / "pkg").exists()
    assert releases.get(store, req.id).status == "approved"
    e = last_entry(access)
    assert (e.user, e.action, e.outcome) == ("ivan", "export", "denied") and f"read {ids[1]}" in e.detail


def test_approval_with_nothing_held_is_refused(env):
    store, access, _, _, _ = env
    req = releases.request(store, access, IVAN, case_no="C5", agency="County DA", requester="DDA Smith",
                           purpose="prosecution")
    with pytest.raises(PolicyError, match="no reads under an active hold"):
        releases.review(store, access, ADA, req.id, approve=True, note="ok")
    assert releases.get(store, req.id).status == "pending"
    # A denial needs no reads.
    assert releases.review(store, access, ADA, req.id, approve=False, note="no").read_ids is None


# -- 3. refused attempts leave a row, and the gate comes first ---------------------------------------------
def test_release_review_refusals_are_logged(env):
    store, access, _, _, ids = env
    retention.place_hold(store, access, IVAN, case_no="C1", reason="robbery", read_ids=ids[:1])
    req = releases.request(store, access, ADA, case_no="C1", agency="County DA", requester="DDA Smith",
                           purpose="prosecution")
    with pytest.raises(PolicyError, match="another administrator"):
        releases.review(store, access, ADA, req.id, approve=True, note="ok")
    assert denied_rows(access)[-1][:2] == ("ada", "release-review")
    with pytest.raises(PolicyError, match="--note"):
        releases.review(store, access, BEA, req.id, approve=True, note=" ")
    assert denied_rows(access)[-1] == ("bea", "release-review", "record the basis for the decision (--note)")
    releases.review(store, access, BEA, req.id, approve=False, note="no")
    with pytest.raises(PolicyError, match="is denied, not pending"):
        releases.review(store, access, BEA, req.id, approve=True, note="changed my mind")
    assert "is denied, not pending" in denied_rows(access)[-1][2]
    with pytest.raises(NotFound):
        releases.review(store, access, BEA, 999, approve=True, note="x")
    assert denied_rows(access)[-1][2] == "release request 999: no such request"


def test_export_refusals_are_logged(env, tmp_path):
    store, access, _, registry, ids = env
    retention.place_hold(store, access, IVAN, case_no="C1", reason="robbery", read_ids=ids[:1])
    req = releases.request(store, access, IVAN, case_no="C1", agency="County DA", requester="DDA Smith",
                           purpose="prosecution")
    key = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(PolicyError, match="before approval"):
        evidence.export(store, access, IVAN, case_no="C1", release_id=req.id, out=tmp_path / "p", sign_key=key,
                        registry=registry)
    assert denied_rows(access)[-1][:2] == ("ivan", "export") and "before approval" in denied_rows(access)[-1][2]
    with pytest.raises(NotFound):
        evidence.export(store, access, IVAN, case_no="C1", release_id=77, out=tmp_path / "p", sign_key=key,
                        registry=registry)
    assert denied_rows(access)[-1] == ("ivan", "export", "release request 77: no such request")
    # An auditor is refused for the role, before anything about the request is looked at.
    with pytest.raises(AccessDenied, match="role auditor may not export"):
        evidence.export(store, access, AUDREY, case_no="C1", release_id=77, out=tmp_path / "p", sign_key=key,
                        registry=registry)


def test_invalid_sessions_are_logged_with_the_user_and_reason(env):
    store, access, clock, _, _ = env
    with pytest.raises(AccessDenied, match="unknown token"):
        access.session("not-a-token", attempt="search")
    e = last_entry(access)
    assert (e.user, e.action, e.outcome, e.query) == ("unknown", "session", "denied", '{"command":"search"}')
    token = access.login("ivan", PW)
    clock.advance(8 * 3600 + 1)
    with pytest.raises(AccessDenied, match="expired"):
        access.session(token)
    assert (last_entry(access).user, last_entry(access).detail) == ("ivan", "session expired: log in again")
    token = access.login("ivan", PW)
    access.logout(token)
    with pytest.raises(AccessDenied, match="logged out"):
        access.session(token)
    assert (last_entry(access).user, last_entry(access).outcome) == ("ivan", "denied")
    token = access.login("ivan", PW)
    # Disabled in the database directly (set_active would also end the session).
    store.db.execute("UPDATE users SET active=0 WHERE name='ivan'")
    with pytest.raises(AccessDenied, match="disabled"):
        access.session(token)
    assert last_entry(access).detail == "user 'ivan' is disabled"


def test_alert_verify_checks_the_user_before_the_id(env):
    store, access, _, _, ids = env
    node = SyntheticNode.create("node-a", "main-st")
    store.store([node.read(20, "7ABC123", NOW, kind="alert", hotlist={"list_version": "1", "entry": "1",
                                                                        "reason": "warrant", "match": "exact"})])
    alert_id = store.reads_after(0)[-1].id
    # Who may not verify alerts learns nothing about which ids are alerts: same refusal for both.
    for read_id in (alert_id, ids[0]):
        with pytest.raises(AccessDenied, match="role auditor may not alert-verify"):
            alerts.verify_alert(store, access, AUDREY, read_id, outcome="confirmed", note="x")
    assert [d[:2] for d in denied_rows(access)] == [("audrey", "alert-verify")] * 2
    with pytest.raises(NotFound, match=f"alert {ids[0]}: no alert read"):
        alerts.verify_alert(store, access, IVAN, ids[0], outcome="confirmed", note="CLETS 1")
    assert denied_rows(access)[-1] == ("ivan", "alert-verify", f"alert {ids[0]}: no alert read with this id")


def test_audit_report_lists_the_new_refusals(env):
    store, access, _, _, _ = env
    with pytest.raises(AccessDenied):
        access.session("stale")
    req = releases.request(store, access, ADA, case_no="C1", agency="DA", requester="R", purpose="p")
    with pytest.raises(PolicyError):
        releases.review(store, access, ADA, req.id, approve=False, note="x")
    doc = report.build(store, access, AUDREY, since_ns=0, until_ns=2**62)
    assert [(d["user"], d["action"]) for d in doc["denied"]] == [("unknown", "session"), ("ada", "release-review")]


def test_cli_session_refusal_is_logged_with_the_command(site, capsys):
    run, sql, tmp = site
    (tmp / "stale").write_text("no-such-token\n")
    assert run("search", "7ABC123", "--purpose", "x", "--session", str(tmp / "stale")) == 2
    assert "session is not valid" in capsys.readouterr().err
    assert sql("SELECT user_name, action, outcome, query FROM access_log ORDER BY id DESC LIMIT 1") == [
        ("unknown", "session", "denied", '{"command":"search"}')]


# -- 4. audit verify: a head noted off-site, and the triggers ---------------------------------------------
def _head(out: str) -> str:
    return next(line.split()[1] for line in out.splitlines() if line.startswith("head "))


def test_audit_verify_expect_head_catches_a_cut_end_with_a_fixed_head_row(site, capsys):
    run, sql, _ = site
    for i in range(3):
        assert run("search", "7ABC123", "--purpose", f"case work {i}", "--user", "ivan", password=PW) == 0
    capsys.readouterr()
    assert run("audit", "verify", "--user", "ada", password=PW) == 0
    noted = _head(capsys.readouterr().out)
    head_id = int(noted.split(":")[0])
    assert run("audit", "verify", "--expect-head", noted, "--user", "ada", password=PW) == 0
    assert f"entry {head_id} still has the hash noted earlier" in capsys.readouterr().out
    # Someone with the file: drop the guards, cut the last two entries, fix the head row, restore the guards.
    sql("DROP TRIGGER access_log_no_delete")
    sql("DELETE FROM access_log WHERE id > ?", (head_id - 2,))
    [(new_hash,)] = sql("SELECT hash FROM access_log WHERE id=?", (head_id - 2,))
    sql("UPDATE access_log_head SET last_id=?, last_hash=?", (head_id - 2, new_hash))
    for stmt in migrations._append_only("sqlite")[1:]:
        sql(stmt)
    capsys.readouterr()
    # The chain alone cannot tell (each verify writes its own row first, after the fixed head).
    assert run("audit", "verify", "--user", "ada", password=PW) == 0
    assert f"head {head_id - 1}:" in capsys.readouterr().out
    assert run("audit", "verify", "--expect-head", noted, "--user", "ada", password=PW) == 1
    out = capsys.readouterr().out
    # Rows written since the cut took the cut rows' ids, with other hashes: the noted head is
    # gone either way.
    assert f"FAIL  entry {head_id}" in out and "the log was" in out


def test_audit_verify_expect_head_catches_a_rewritten_entry(env):
    _, access, _, _, _ = env
    head = access.log.verify()
    assert access.log.verify(expect_head=(head.head_id, head.head_hash)).ok
    problems = access.log.verify(expect_head=(head.head_id, "0" * 64)).problems
    assert problems == ((f"entry {head.head_id}: hash {head.head_hash} is not the {'0' * 64} noted earlier: "
                         "the log was rewritten"),)


def test_audit_verify_fails_without_the_append_only_triggers(site, capsys):
    run, sql, _ = site
    sql("DROP TRIGGER access_log_no_update")
    capsys.readouterr()
    assert run("audit", "verify", "--user", "ada", password=PW) == 1
    out = capsys.readouterr().out
    assert "FAIL  trigger access_log_no_update on access_log is missing (the log is no longer append-only)" in out
    assert "head " in out


def test_audit_verify_fails_on_a_trigger_that_never_fires(site, capsys):
    """`WHEN 0` keeps RAISE(ABORT in the trigger's text, but it never fires: not HQ's trigger."""
    run, sql, _ = site
    sql("DROP TRIGGER access_log_no_delete")
    sql("CREATE TRIGGER access_log_no_delete BEFORE DELETE ON access_log WHEN 0 "
        "BEGIN SELECT RAISE(ABORT, 'access_log is append-only'); END")
    capsys.readouterr()
    assert run("audit", "verify", "--user", "ada", password=PW) == 1
    assert ("FAIL  trigger access_log_no_delete on access_log is not the one HQ made (the log is no longer "
            "append-only)") in capsys.readouterr().out


def test_audit_verify_fails_on_an_emptied_log(site, capsys):
    run, sql, _ = site
    sql("DROP TRIGGER access_log_no_delete")
    sql("DELETE FROM access_log")
    sql("DELETE FROM access_log_head")
    sql(migrations._append_only("sqlite")[1])
    capsys.readouterr()
    assert run("audit", "verify", "--user", "ada", password=PW) == 1
    assert "2 users exist but the log records only 0 user-add entries" in capsys.readouterr().out


def test_audit_verify_names_a_malformed_expect_head(site, capsys):
    run, _, _ = site
    capsys.readouterr()
    assert run("audit", "verify", "--expect-head", "12-abc", "--user", "ada", password=PW) == 2
    assert "--expect-head '12-abc': use ID:HASH" in capsys.readouterr().err


# -- 5. case numbers are stored as the log has them ------------------------------------------------------
def test_holds_and_requests_store_the_trimmed_case_number(env, tmp_path):
    store, access, _, registry, ids = env
    hold = retention.place_hold(store, access, IVAN, case_no="  C7 ", reason="robbery", read_ids=ids[:1])
    assert hold.case_no == "C7" == last_entry(access).case_no
    req = releases.request(store, access, IVAN, case_no=" C7\t", agency="DA", requester="R", purpose="p")
    assert req.case_no == "C7"
    releases.review(store, access, ADA, req.id, approve=True, note="ok")
    result = evidence.export(store, access, IVAN, case_no="C7 ", release_id=req.id, out=tmp_path / "pkg",
                             sign_key=ed25519.Ed25519PrivateKey.generate(), registry=registry)
    assert result.reads == 1
    assert [h.case_no for h in retention.holds(store, " C7")] == ["C7"]


def test_migration_trims_case_numbers_stored_before(tmp_path):
    store = ReadStore(tmp_path / "hq.db")
    store.db.execute("INSERT INTO holds (case_no, reason, created_by, created_ns) VALUES (' C8 ', 'r', 'ivan', 1)")
    store.db.execute("INSERT INTO release_requests (case_no, agency, requester, purpose, requested_by, requested_ns, "
                     "status) VALUES ('C8 ', 'DA', 'R', 'p', 'ivan', 1, 'pending')")
    store.db.execute("DELETE FROM schema_version WHERE version=4")
    store.db.execute("ALTER TABLE release_requests DROP COLUMN read_ids")
    store.close()
    store = ReadStore(tmp_path / "hq.db")
    assert store.db.value("SELECT case_no FROM holds") == "C8"
    assert store.db.value("SELECT case_no FROM release_requests") == "C8"
    store.close()


# -- 6. a hot-list entry can be looked up after it left the list -----------------------------------------
def test_hotlist_show_gives_removed_and_expired_entries_with_their_source(env):
    store, access, clock, _, _ = env
    gone = hotlist.add_entry(store, access, IVAN, plate="7ABC123", reason="stolen-vehicle", source="NCIC 123",
                             expires_ns=NOW + 10 * DAY, purpose="report")
    hotlist.remove_entry(store, access, IVAN, gone.id, purpose="recovered")
    lapsing = hotlist.add_entry(store, access, IVAN, plate="8XY?99*", reason="warrant", source="DA",
                                expires_ns=NOW + DAY, purpose="warrant")
    clock.advance(2 * 86400)
    e = hotlist.show_entry(store, access, IVAN, gone.id, purpose="alert 17 follow-up", case_no="C1")
    assert (e.source, e.state(clock()), e.removed_by) == ("NCIC 123", "removed", "ivan")
    assert hotlist.show_entry(store, access, IVAN, lapsing.id, purpose="x").state(clock()) == "expired"
    entry = next(x for x in access.log.entries() if x.action == "hotlist-view")
    assert (entry.purpose, entry.case_no, entry.query) == ("alert 17 follow-up", "C1", f'{{"show":{gone.id}}}')
    with pytest.raises(AccessDenied):
        hotlist.show_entry(store, access, AUDREY, gone.id, purpose="x")
    with pytest.raises(NotFound):
        hotlist.show_entry(store, access, IVAN, 999, purpose="x")
    assert denied_rows(access)[-1] == ("ivan", "hotlist-view", "hot-list entry 999: no such entry")


def test_cli_hotlist_show(site, capsys):
    run, _, _ = site
    who = ["--user", "ivan"]
    assert run("hotlist", "add", "7ABC123", "--reason", "stolen-vehicle", "--source", "NCIC 42", "--expires",
               "2099-01-01", "--purpose", "report", *who, password=PW) == 0
    assert run("hotlist", "remove", "1", "--purpose", "recovered", *who, password=PW) == 0
    capsys.readouterr()
    assert run("hotlist", "show", "1", "--purpose", "alert follow-up", *who, password=PW) == 0
    out = capsys.readouterr().out
    assert "source   NCIC 42" in out and "state    REMOVED" in out and "by ivan" in out


# -- 7. current training for every logged-in action ----------------------------------------------------
def test_lapsed_training_refuses_audit_retention_and_administration(env):
    store, access, clock, _, _ = env
    clock.advance(31 * 86400)  # everyone but ada lapses
    with pytest.raises(AccessDenied, match="training expired"):
        report.build(store, access, AUDREY, since_ns=0, until_ns=2**62)
    with pytest.raises(AccessDenied, match="audit refused: user 'audrey': ALPR training expired"):
        access.require_role(AUDREY, "audit")
    with pytest.raises(AccessDenied, match="retention refused"):
        retention.purge(store, access, TOM, min_days=365)
    with pytest.raises(AccessDenied, match="release-review refused"):
        access.require_role(BEA, "release-review")
    assert [d[:2] for d in denied_rows(access)] == [("audrey", "audit"), ("audrey", "audit"), ("tom", "retention"),
                                                    ("bea", "release-review")]
    # The scheduled job has no user and no training.
    assert retention.purge(store, access, SYSTEM, min_days=365).reads_deleted == 0
    # An administrator with lapsed training may still manage users, so training can be restored
    # (another administrator records one's own).
    access.set_training(BEA, "audrey", clock() + 30 * DAY)
    access.set_training(ADA, "bea", clock() + 30 * DAY)
    access.set_active(BEA, "tom", False)
    access.require_role(BEA, "release-review")
    report.build(store, access, AUDREY, since_ns=0, until_ns=2**62)


def test_lapsed_administrator_may_add_users_but_not_list_releases(site, capsys):
    run, sql, _ = site
    sql("UPDATE users SET trained_until_ns=1 WHERE name='ada'")
    assert run("users", "add", "cy", "--role", "auditor", "--user", "ada", password=PW, new_password=PW) == 0
    assert run("users", "training", "cy", "--until", "2099-01-01", "--user", "ada", password=PW) == 0
    capsys.readouterr()
    assert run("release", "list", "--user", "ada", password=PW) == 2
    assert "release-review refused: user 'ada': ALPR training expired" in capsys.readouterr().err
    assert run("retention", "status", "--user", "ada", password=PW) == 2
    assert run("retention", "run", "--user", "ada", password=PW) == 2
    assert run("retention", "run", "--system") == 0
    assert run("users", "training", "ada", "--until", "2099-01-01", "--user", "ada", password=PW) == 2  # not one's own
    sql("UPDATE users SET role='administrator' WHERE name='cy'")
    assert run("users", "training", "ada", "--until", "2099-01-01", "--user", "cy", password=PW) == 0
    assert run("release", "list", "--user", "ada", password=PW) == 0


def test_the_system_name_is_reserved(env):
    _, access, _, _, _ = env
    with pytest.raises(PolicyError, match="reserved"):
        access.add_user(ADA, "system", "technician", PW, NOW + DAY)


# -- 8. retention is never shorter than the calendar years it stands for --------------------------------
def test_retention_of_365_days_keeps_a_read_a_calendar_year_across_29_february():
    now = utc_ns(2028, 3, 31)
    read = utc_ns(2027, 3, 31, 12)  # one calendar year later is 2028-03-31 12:00: after `now`
    cutoff = partitions.retention_cutoff_ns(now, 365)
    assert read >= cutoff, "purged before it was a year old (2028 has 29 February)"
    assert cutoff == utc_ns(2027, 3, 1)
    # On the leap day itself, a year back is 28 February.
    assert partitions.retention_cutoff_ns(utc_ns(2028, 2, 29, 12), 365) == utc_ns(2027, 2, 1)


@pytest.mark.parametrize("days, years", [(365, 1), (400, 1), (730, 2), (1095, 3)])
def test_retention_cutoff_is_at_least_the_calendar_span_every_day(days, years):
    day = dt.datetime(2026, 1, 1, 6, tzinfo=dt.UTC)
    while day.year < 2030:
        back = day.replace(year=day.year - years, day=28) if (day.month, day.day) == (2, 29) else \
            day.replace(year=day.year - years)
        back -= dt.timedelta(days=days - 365 * years)
        cutoff = partitions.retention_cutoff_ns(int(day.timestamp()) * 10**9, days)
        assert cutoff <= int(back.timestamp()) * 10**9, day
        assert cutoff <= int((day - dt.timedelta(days=days)).timestamp()) * 10**9, day
        day += dt.timedelta(days=1)


def test_short_retention_is_still_counted_in_days():
    assert partitions.retention_cutoff_ns(utc_ns(2028, 3, 31), 30) == utc_ns(2028, 3, 1)


# -- 9. crops and packages are private -------------------------------------------------------------------
@pytest.fixture
def open_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_search_crops_are_private(env, tmp_path, open_umask):
    store, access, _, _, _ = env
    out = tmp_path / "new" / "crops"
    search(store, access, IVAN, SearchQuery("7ABC123"), purpose="robbery", crops_dir=out)
    [crop] = list(out.iterdir())
    assert (_mode(out), _mode(crop)) == (0o700, 0o600)
    os.chmod(crop, 0o644)  # a crop written before: rewriting makes it private too
    search(store, access, IVAN, SearchQuery("7ABC123"), purpose="robbery", crops_dir=out)
    assert _mode(crop) == 0o600


def test_evidence_package_is_private(env, tmp_path, open_umask):
    store, access, _, registry, ids = env
    req = _approved_release(store, access, ids[:2])
    out = tmp_path / "pkg"
    evidence.export(store, access, IVAN, case_no="C1", release_id=req.id, out=out,
                    sign_key=ed25519.Ed25519PrivateKey.generate(), registry=registry)
    dirs = [out, *(p for p in out.rglob("*") if p.is_dir())]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(dirs) >= 4 and {_mode(d) for d in dirs} == {0o700}
    assert len(files) >= 10 and {_mode(f) for f in files} == {0o400}


# -- 10. date options are a UTC day or a full ISO 8601 time --------------------------------------------
@pytest.mark.parametrize("text", ["20250301", "2025-03", "2025-3-1", "2025-03-01T10", "2025-W09", "yesterday"])
def test_dates_that_are_neither_a_day_nor_a_full_time_are_refused(text):
    with pytest.raises(PolicyError, match=f"--from {text!r}: use YYYY-MM-DD"):
        parse_time(text, option="--from")


def test_date_only_bounds_are_utc_days():
    assert parse_time("2025-03-01", option="--from") == utc_ns(2025, 3, 1)
    assert parse_time("2025-03-01", end=True, option="--to") == utc_ns(2025, 3, 2)
    assert parse_time("2025-03-01T10:00:00Z") == utc_ns(2025, 3, 1, 10)
    assert parse_time("2025-03-01T10:00-08:00") == utc_ns(2025, 3, 1, 18)
    assert parse_time("2025-03-01T10:00:00.000001") == utc_ns(2025, 3, 1, 10) + 1000


def test_cli_names_the_option_with_a_bad_date(site, capsys):
    run, _, _ = site
    capsys.readouterr()
    assert run("search", "7ABC123", "--from", "20250301", "--purpose", "x", "--user", "ivan", password=PW) == 2
    assert "--from '20250301': use YYYY-MM-DD" in capsys.readouterr().err
    assert run("audit", "report", "--from", "2025-01-01", "--to", "2025-3-1", "--user", "ada", password=PW) == 2
    assert "--to '2025-3-1': use YYYY-MM-DD" in capsys.readouterr().err
