"""HQ access log: every refused attempt leaves a row.

1. A command run with nobody logged in (no session file, an unreadable one, --user without a
   password, `users add --bootstrap` once users exist) is logged as a denied row naming the
   operating-system account (`os:NAME`, role "none"), the command and a fixed reason; the row
   carries no text the caller chose.
2. Input checks come after the access gate, for every command that needs a login: a user who
   may not act is refused for that (and learns nothing about how input is checked); a
   permitted user's bad input is refused with its reason, and that refusal is logged too.
"""
from __future__ import annotations

import datetime as dt
import io
import json
import os
import pwd
import re
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import argon2
import pytest
from argon2 import PasswordHasher

from hq import access as access_module
from hq import hotlist, releases, retention
from hq.access import NO_LOGIN_REASONS, SYSTEM, Access, Actor, os_account
from hq.errors import AccessDenied, NotFound, PolicyError
from hq.plates import PlateQueryError
from hq.search import SearchQuery, search
from hq.store import ReadStore
from hq.synthetic import FakeClock, SyntheticNode, tiny_jpeg
from tests.support.hq_site import hq_site

pytestmark = pytest.mark.unit

DAY = 86400 * 10**9
NOW = int(dt.datetime(2026, 9, 15, 12, tzinfo=dt.UTC).timestamp()) * 10**9
PW = "correct horse battery"
ADA, IVAN, AUDREY, TOM = (Actor("ada", "administrator"), Actor("ivan", "investigator"), Actor("audrey", "auditor"),
                          Actor("tom", "technician"))


def me() -> str:
    """The OS account as the log should name it, found independently of hq.access."""
    return "os:" + pwd.getpwuid(os.getuid()).pw_name


# -- 1. nobody logged in -----------------------------------------------------------------------------------
@pytest.fixture
def site(tmp_path, monkeypatch):
    """An HQ site with ada (administrator), ivan, audrey (auditor), tom (technician), all trained,
    each logged in with a session file; `run`, `sql`, `as_(name)` (the session option)."""
    # Cheap argon2 parameters for the command line's hasher: the fixture logs in four users.
    monkeypatch.setattr(argon2, "PasswordHasher", lambda: PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    run, data, _ = hq_site(tmp_path, monkeypatch, lambda node, now: [
        node.read(1, "7ABC123", now - DAY, crop=tiny_jpeg("7ABC123"))])
    # Who ran the command is the process's account, whatever the environment claims.
    monkeypatch.delenv("SUDO_USER", raising=False)
    monkeypatch.setenv("USER", "ada")
    monkeypatch.setenv("LOGNAME", "ada")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # not a terminal: no password prompt

    def sql(statement: str, params: tuple = ()) -> list[tuple]:
        db = sqlite3.connect(data / "hq.db", isolation_level=None)
        try:
            return db.execute(statement, params).fetchall()
        finally:
            db.close()

    assert run("users", "add", "ada", "--role", "administrator", "--trained-until", "2099-01-01", "--bootstrap",
               new_password=PW) == 0
    for name, role in (("ivan", "investigator"), ("audrey", "auditor"), ("tom", "technician")):
        assert run("users", "add", name, "--role", role, "--trained-until", "2099-01-01", "--user", "ada",
                   password=PW, new_password=PW) == 0
    for name in ("ada", "ivan", "audrey", "tom"):
        assert run("login", "--user", name, "--session", str(tmp_path / f"s-{name}"), password=PW) == 0

    def as_(name: str) -> list[str]:
        return ["--session", str(tmp_path / f"s-{name}")]

    return run, sql, tmp_path, as_


def last_row(sql: Callable[..., list[tuple]]) -> tuple:
    [row] = sql("SELECT user_name, role, action, outcome, query, detail FROM access_log ORDER BY id DESC LIMIT 1")
    return row


def rows_after(sql: Callable[..., list[tuple]], after: int) -> list[tuple]:
    return sql("SELECT user_name, role, action, outcome, query, detail FROM access_log WHERE id > ? ORDER BY id",
               (after,))


def head(sql: Callable[..., list[tuple]]) -> int:
    return sql("SELECT MAX(id) FROM access_log")[0][0]


@pytest.mark.parametrize("argv, command", [
    (["search", "7ABC123", "--purpose", "x"], "search"),
    (["read", "1", "--purpose", "x"], "read"),
    (["reads", "tail", "--count", "1", "--purpose", "x"], "reads tail"),
    (["alerts", "list", "--purpose", "x"], "alerts list"),
    (["hotlist", "list", "--purpose", "x"], "hotlist list"),
    (["evidence", "holds", "--purpose", "x"], "evidence holds"),
    (["release", "list"], "release list"),
    (["users", "list"], "users list"),
    (["retention", "status"], "retention status"),
    (["audit", "verify"], "audit verify"),
])
def test_a_command_with_no_session_file_is_logged_under_the_os_account(site, capsys, argv, command):
    run, sql, tmp, as_ = site
    assert not (tmp / "session").exists()  # $ALPR_HQ_SESSION: nobody logged in
    before = head(sql)
    capsys.readouterr()
    assert run(*argv) == 2
    assert "no session" in capsys.readouterr().err
    assert rows_after(sql, before) == [(me(), "none", "session", "denied", json.dumps({"command": command}, separators=(",", ":")),
                                        NO_LOGIN_REASONS["no-session"])]
    assert me() != "os:ada"  # $USER / $LOGNAME said ada: not believed
    # The chain takes the new row like any other, and the audit report lists it.
    capsys.readouterr()
    assert run("audit", "verify", *as_("audrey")) == 0
    capsys.readouterr()
    assert run("audit", "report", "--from", "2000-01-01", "--to", "2099-01-01", "--json", *as_("audrey")) == 0
    denied = json.loads(capsys.readouterr().out)["denied"]
    assert (me(), "session", NO_LOGIN_REASONS["no-session"]) in [(d["user"], d["action"], d["why"]) for d in denied]


def test_an_unreadable_session_file_is_logged_under_the_os_account(site, capsys):
    run, sql, tmp, _ = site
    (tmp / "a-folder").mkdir()
    assert run("search", "7ABC123", "--purpose", "x", "--session", str(tmp / "a-folder")) == 2
    assert "cannot read the session file" in capsys.readouterr().err
    assert last_row(sql) == (me(), "none", "session", "denied", '{"command":"search"}',
                             NO_LOGIN_REASONS["session-unreadable"])


def test_user_without_a_password_is_logged_under_the_os_account(site, capsys):
    run, sql, _, _ = site
    assert run("search", "7ABC123", "--purpose", "x", "--user", "ivan") == 2
    assert "no password" in capsys.readouterr().err
    assert last_row(sql) == (me(), "none", "login", "denied", '{"command":"search","login_as":"ivan"}',
                             NO_LOGIN_REASONS["no-password"])
    assert run("login", "--user", "ivan") == 2
    assert last_row(sql)[:4] == (me(), "none", "login", "denied")


def test_bootstrap_once_users_exist_is_logged_under_the_os_account(site, capsys):
    run, sql, _, _ = site
    assert run("users", "add", "mallory", "--role", "administrator", "--bootstrap", new_password=PW) == 2
    assert "users exist already" in capsys.readouterr().err
    assert last_row(sql) == (me(), "none", "users", "denied", '{"command":"users add"}',
                             NO_LOGIN_REASONS["users-exist"])
    assert not sql("SELECT 1 FROM users WHERE name='mallory'")


def test_rows_without_a_login_hold_no_text_the_caller_chose(site, capsys):
    run, sql, tmp, _ = site
    before = head(sql)
    planted = "ada approved release 7 IGNORE"
    assert run("search", "7ABC123", "--purpose", planted, "--session", str(tmp / planted)) == 2
    assert run("search", "7ABC123", "--purpose", planted, "--user", planted) == 2
    assert run("users", "add", planted, "--role", "administrator", "--bootstrap", new_password=PW) == 2
    rows = rows_after(sql, before)
    assert len(rows) == 3 and all(r[:2] == (me(), "none") and r[3] == "denied" for r in rows)
    assert not any("IGNORE" in str(field) for r in rows for field in r)
    assert rows[1][4] == '{"command":"search"}'  # a --user that no user could have is left out


def test_the_log_names_the_sudo_user_only_for_root(monkeypatch):
    monkeypatch.setattr(access_module.os, "getuid", lambda: 0)
    monkeypatch.setenv("SUDO_USER", "alice")
    monkeypatch.setenv("USER", "bob")
    assert os_account() == "os:root (sudo alice)"
    monkeypatch.setenv("SUDO_USER", "alice\nada")  # a name is only letters, digits, . - _
    assert os_account() == "os:root (sudo aliceada)"
    uid = next(p.pw_uid for p in pwd.getpwall() if p.pw_uid != 0)
    monkeypatch.setattr(access_module.os, "getuid", lambda: uid)
    assert os_account() == "os:" + pwd.getpwuid(uid).pw_name  # $SUDO_USER is anyone's to set below root


def test_no_login_rows_take_only_fixed_reasons(tmp_path):
    store = ReadStore(tmp_path / "hq.db")
    access = Access(store.db, hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    with pytest.raises(PolicyError, match="not one HQ records"):
        access.refuse_without_login("session", "search", "ada approved it")
    with pytest.raises(PolicyError, match="not one HQ records"):
        access.refuse_without_login("export", "search", "no-session")
    access.refuse_without_login("session", "search\n; ada approved", "no-session")
    [entry] = access.log.entries()
    assert entry.query == '{"command":"search ada approved"}'  # letters, digits, spaces, dashes only
    # `os:` names cannot be taken by an HQ user.
    access.add_user(None, "ada", "administrator", PW, NOW + DAY)
    with pytest.raises(PolicyError, match="letters, digits"):
        access.add_user(ADA, "os:root", "administrator", PW)
    assert access.log.verify().ok
    store.close()


# -- 2. the gate before the input: the library ----------------------------------------------------------
@pytest.fixture
def env(tmp_path):
    store = ReadStore(tmp_path / "hq.db")
    clock = FakeClock(NOW)
    access = Access(store.db, clock=clock, hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    access.add_user(None, "ada", "administrator", PW, NOW + 400 * DAY)
    for name, role in (("ivan", "investigator"), ("audrey", "auditor"), ("tom", "technician")):
        access.add_user(ADA, name, role, PW, NOW + 30 * DAY)
    node = SyntheticNode.create("node-a", "main-st")
    store.store([node.read(1, "7ABC123", NOW - DAY, crop=tiny_jpeg("7ABC123"))])
    ids = [r.id for r in store.reads_after(0)]
    (tmp_path / "a-file").write_text("x")
    yield store, access, ids, tmp_path
    store.close()


Call = Callable[[ReadStore, Access, Actor, list[int], Path], Any]
CASES: list[tuple[str, str, Actor, Actor, Call, type[Exception], str]] = [
    # (name, action, may act, may not, call, error for the one who may, its message)
    ("pattern", "search", IVAN, AUDREY,
     lambda s, a, u, ids, t: search(s, a, u, SearchQuery("*?*"), purpose="p"), PlateQueryError, "at least one letter"),
    ("plate", "search", IVAN, AUDREY,
     lambda s, a, u, ids, t: search(s, a, u, SearchQuery("7AB%"), purpose="p"), PlateQueryError, "letters and digits"),
    ("time range", "search", IVAN, TOM,
     lambda s, a, u, ids, t: search(s, a, u, SearchQuery("7ABC123", since_ns=NOW, until_ns=NOW - 1), purpose="p"),
     PolicyError, "--to must be after"),
    ("limit", "search", IVAN, AUDREY,
     lambda s, a, u, ids, t: search(s, a, u, SearchQuery("7ABC123", limit=0), purpose="p"), PolicyError, "limit 0"),
    ("crops file", "search", IVAN, AUDREY,
     lambda s, a, u, ids, t: search(s, a, u, SearchQuery("7ABC123"), purpose="p", crops_dir=t / "a-file"),
     PolicyError, "not a folder"),
    ("hold reason", "hold", IVAN, AUDREY,
     lambda s, a, u, ids, t: retention.place_hold(s, a, u, case_no="C1", reason=" ", read_ids=ids),
     AccessDenied, r"a purpose is required \(--why\)"),
    ("hold reads", "hold", IVAN, AUDREY,
     lambda s, a, u, ids, t: retention.place_hold(s, a, u, case_no="C1", reason="robbery", read_ids=[]),
     PolicyError, "at least one read"),
    ("hold unknown read", "hold", IVAN, AUDREY,
     lambda s, a, u, ids, t: retention.place_hold(s, a, u, case_no="C1", reason="robbery", read_ids=[*ids, 99]),
     NotFound, r"reads \[99\]"),
    ("hot-list reason", "hotlist-edit", IVAN, AUDREY,
     lambda s, a, u, ids, t: hotlist.add_entry(s, a, u, plate="7ABC123", reason="parking", source="NCIC",
                                               expires_ns=NOW + DAY, purpose="p"), PolicyError, "reason 'parking'"),
    ("hot-list source", "hotlist-edit", IVAN, AUDREY,
     lambda s, a, u, ids, t: hotlist.add_entry(s, a, u, plate="7ABC123", reason="warrant", source=" ",
                                               expires_ns=NOW + DAY, purpose="p"), PolicyError, "its source"),
    ("hot-list plate", "hotlist-edit", IVAN, AUDREY,
     lambda s, a, u, ids, t: hotlist.add_entry(s, a, u, plate="7A[B]*", reason="warrant", source="DA",
                                               expires_ns=NOW + DAY, purpose="p"), PlateQueryError, "pattern"),
    ("hot-list expiry", "hotlist-edit", IVAN, AUDREY,
     lambda s, a, u, ids, t: hotlist.add_entry(s, a, u, plate="7ABC123", reason="warrant", source="DA",
                                               expires_ns=NOW - 1, purpose="p"), PolicyError, "in the future"),
    ("release agency", "release-request", IVAN, AUDREY,
     lambda s, a, u, ids, t: releases.request(s, a, u, case_no="C1", agency=" ", requester="R", purpose="p"),
     PolicyError, "needs --agency"),
    ("new user password", "users", ADA, IVAN,
     lambda s, a, u, ids, t: a.add_user(u, "eve", "investigator", "short"), PolicyError, "at least 12"),
    ("new user name", "users", ADA, IVAN,
     lambda s, a, u, ids, t: a.add_user(u, "eve smith", "investigator", PW), PolicyError, "letters, digits"),
    ("new user taken", "users", ADA, IVAN,
     lambda s, a, u, ids, t: a.add_user(u, "tom", "investigator", PW), PolicyError, "exists already"),
    ("new user role", "users", ADA, TOM,
     lambda s, a, u, ids, t: a.add_user(u, "eve", "janitor", PW), PolicyError, "role 'janitor'"),
    ("training of nobody", "users", ADA, IVAN,
     lambda s, a, u, ids, t: a.set_training(u, "nobody", NOW + DAY), NotFound, "no such user"),
    ("disable nobody", "users", ADA, IVAN,
     lambda s, a, u, ids, t: a.set_active(u, "nobody", False), NotFound, "no such user"),
    ("password of nobody", "users", ADA, IVAN,
     lambda s, a, u, ids, t: a.set_password(u, "nobody", PW), NotFound, "no such user"),
    ("own password short", "passwd", IVAN, Actor("una", "investigator"),
     lambda s, a, u, ids, t: a.set_password(u, u.name, "short"), PolicyError, "at least 12"),
    ("retention floor", "retention", TOM, IVAN,
     lambda s, a, u, ids, t: retention.purge(s, a, u, min_days=30, retention_days=365), PolicyError,
     "below records.retention_days"),
    ("retention zero", "retention", TOM, AUDREY,
     lambda s, a, u, ids, t: retention.purge(s, a, u, min_days=0), PolicyError, "at least 1"),
]


@pytest.mark.parametrize("name, action, may, may_not, call, error, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_after_the_gate_and_logged(env, name, action, may, may_not, call, error, message):
    store, access, ids, tmp = env
    before = access.log.verify().head_id
    # Who may not act is refused for that, whatever the input: nothing about how it is checked.
    with pytest.raises(AccessDenied) as refused:
        call(store, access, may_not, ids, tmp)
    assert not re.search(message, str(refused.value))
    # Who may act is told what is wrong with the input, and that refusal is on the record too.
    with pytest.raises(error, match=message):
        call(store, access, may, ids, tmp)
    rows = [(e.user, e.action, e.outcome, e.detail) for e in access.log.entries() if e.id > before]
    assert [r[:3] for r in rows] == [(may_not.name, action, "denied"), (may.name, action, "denied")]
    assert "may not" in rows[0][3] or "unknown or disabled" in rows[0][3]
    assert re.search(message, rows[1][3])
    assert access.log.verify().ok


def test_a_hold_on_a_missing_read_leaves_no_allowed_row(env):
    store, access, _, _ = env
    with pytest.raises(NotFound):
        retention.place_hold(store, access, IVAN, case_no="C1", reason="robbery", read_ids=[99])
    assert [(e.action, e.outcome) for e in access.log.entries() if e.action == "hold"] == [("hold", "denied")]
    assert retention.holds(store) == []


def test_publishing_too_many_entries_is_a_logged_refusal(env, monkeypatch):
    store, access, _, _ = env
    hotlist.add_entry(store, access, IVAN, plate="7ABC123", reason="warrant", source="DA", expires_ns=NOW + DAY,
                      purpose="p")
    monkeypatch.setattr(hotlist, "MAX_ENTRIES", 0)
    from cryptography.hazmat.primitives.asymmetric import ed25519

    with pytest.raises(PolicyError, match="exceeds"):
        hotlist.publish(store, access, ADA, ed25519.Ed25519PrivateKey.generate(), purpose="daily")
    e = access.log.entries()[-1]
    assert (e.user, e.action, e.outcome) == ("ada", "hotlist-publish", "denied") and "exceeds" in e.detail
    assert not store.db.rows("SELECT 1 FROM hotlist_versions")


def test_the_scheduled_job_below_the_floor_is_logged_as_system(env):
    store, access, _, _ = env
    with pytest.raises(PolicyError, match="below records.retention_days"):
        retention.purge(store, access, SYSTEM, min_days=30, retention_days=365)
    e = access.log.entries()[-1]
    assert (e.user, e.action, e.outcome, e.query) == ("system", "retention", "denied", '{"min_days":30}')


# -- 2. the gate before the input: the command line -------------------------------------------------------
CLI_CASES: list[tuple[str, list[str], str, str, str, str]] = [
    # (name, argv, action, who may, who may not, what the permitted user is told)
    ("search --from", ["search", "7ABC123", "--from", "20250301", "--purpose", "x"], "search", "ivan", "audrey",
     "--from '20250301': use YYYY-MM-DD"),
    ("search --to", ["search", "7ABC123", "--to", "2025-3-1", "--purpose", "x"], "search", "ivan", "tom",
     "--to '2025-3-1': use YYYY-MM-DD"),
    ("search pattern", ["search", "7A[B]*", "--purpose", "x"], "search", "ivan", "audrey", "pattern '7A[B]*'"),
    ("read unknown", ["read", "999", "--purpose", "x"], "view", "ivan", "audrey", "read 999: not in the store"),
    ("hotlist --expires", ["hotlist", "add", "7ABC123", "--reason", "warrant", "--source", "DA", "--expires",
                           "next week", "--purpose", "x"], "hotlist-edit", "ivan", "audrey",
     "--expires 'next week': use YYYY-MM-DD"),
    ("hold reason", ["evidence", "hold", "--case", "C1", "--why", " ", "--read", "1"], "hold", "ivan", "audrey",
     "a purpose is required (--why)"),
    ("release agency", ["release", "request", "--case", "C1", "--agency", " ", "--requester", "R", "--purpose",
                        "x"], "release-request", "ivan", "tom", "needs --agency"),
    ("users training --until", ["users", "training", "ivan", "--until", "soon"], "users", "ada", "ivan",
     "--until 'soon': use YYYY-MM-DD"),
    ("users add no password", ["users", "add", "eve", "--role", "auditor"], "users", "ada", "ivan",
     "no password for the new user"),
    ("users add --trained-until", ["users", "add", "eve", "--role", "auditor", "--trained-until", "2099",
                                   "--new-password", PW], "users",
     "ada", "audrey", "--trained-until '2099': use YYYY-MM-DD"),
    ("retention --min-days", ["retention", "run", "--min-days", "30"], "retention", "tom", "ivan",
     "--min-days 30: below records.retention_days = 365"),
    ("audit verify --expect-head", ["audit", "verify", "--expect-head", "12-abc"], "audit", "audrey", "ivan",
     "--expect-head '12-abc': use ID:HASH"),
    ("audit report --to", ["audit", "report", "--from", "2025-01-01", "--to", "2025-3-1"], "audit", "audrey", "tom",
     "--to '2025-3-1': use YYYY-MM-DD"),
]


@pytest.mark.parametrize("name, argv, action, may, may_not, told", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_checks_the_user_before_the_input_and_logs_both_refusals(site, capsys, name, argv, action, may, may_not,
                                                                      told):
    run, sql, _, as_ = site
    before = head(sql)
    capsys.readouterr()
    assert run(*argv, *as_(may_not)) == 2
    err = capsys.readouterr().err
    assert f"may not {action}" in err and told not in err
    assert run(*argv, *as_(may)) == 2
    assert told in capsys.readouterr().err
    rows = rows_after(sql, before)
    assert [(r[0], r[2], r[3]) for r in rows] == [(may_not, action, "denied"), (may, action, "denied")]
    assert f"may not {action}" in rows[0][5] and told in rows[1][5]
    capsys.readouterr()
    assert run("audit", "verify", *as_("audrey")) == 0


def test_cli_scheduled_retention_below_the_floor_is_logged(site, capsys):
    run, sql, _, _ = site
    assert run("retention", "run", "--system", "--min-days", "1") == 2
    assert "--min-days 1: below records.retention_days = 365" in capsys.readouterr().err
    user, _, action, outcome, query, _ = last_row(sql)
    assert (user, action, outcome, query) == ("system", "retention", "denied", '{"min_days":1}')


def test_under_sudo_each_operator_has_a_session_file_of_their_own(tmp_path):
    """HQ commands run under sudo, where `~` is root's for everyone: one default session file
    would let bob act under the name alice logged in with, and the access log would say alice."""
    from hq.records_cli import default_session_path

    home = tmp_path / "root"
    alice = default_session_path({"SUDO_USER": "alice"}, euid=0, home=home)
    bob = default_session_path({"SUDO_USER": "bob"}, euid=0, home=home)
    assert alice == home / ".config" / "alpr-hq" / "sessions" / "alice" and bob != alice
    assert default_session_path({}, euid=0, home=home) == home / ".config" / "alpr-hq" / "session"
    assert default_session_path({"SUDO_USER": "alice"}, euid=1000, home=home) == home / ".config" / "alpr-hq" / "session"
    assert default_session_path({"SUDO_USER": "../etc"}, euid=0, home=home) == home / ".config" / "alpr-hq" / "session"
    assert default_session_path({"ALPR_HQ_SESSION": str(tmp_path / "s"), "SUDO_USER": "bob"}, euid=0) == tmp_path / "s"


def test_a_training_day_is_shown_as_that_day():
    """`--trained-until 2027-12-01` is valid through that day: shown as the stored next
    midnight, it read as a day too many."""
    from hq.records_cli import fmt_until, parse_time

    assert fmt_until(parse_time("2027-12-01", end=True, option="--trained-until")) == "through 2027-12-01 (UTC)"
    assert fmt_until(parse_time("2027-12-01T12:30Z", end=True, option="--trained-until")) == "until 2027-12-01 12:30:00Z"
    assert fmt_until(None) == "none"


def test_entries_written_while_the_log_is_checked_are_no_cut_end(env, monkeypatch):
    """A live HQ logs while an auditor verifies: an entry written between reading the rows and
    reading the head used to be reported as 'entries N..M at the end are missing (deleted)',
    the very message of a real cut."""
    store, access = env[0], env[1]
    other = Access(ReadStore(store.path).db, clock=FakeClock(NOW),
                   hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    real_execute = access.log.db.execute

    def execute_then_someone_logs(sql, params=()):
        cursor = real_execute(sql, params)
        if "FROM access_log" in sql and "ORDER BY id" in sql:
            rows = list(cursor)  # the check has its rows: now another user's access is logged
            other.refuse_without_login("session", "search", "no-session")
            return iter(rows)
        return cursor

    monkeypatch.setattr(access.log.db, "execute", execute_then_someone_logs)
    result = access.log.verify()
    assert result.ok, result.problems
