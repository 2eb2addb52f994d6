"""HQ records, found by review (round 20): look-alike user names, plates and patterns ending in
a newline, hot-list patterns that match everything or nothing, blank and repeated hold
releases, read-only commands leaving no access-log row, a reversed audit period, releases
reviewed in a period, the published hot list's file mode, two reviews at once, an
administrator certifying themselves, a retention period past what dates hold, key files
looked for before the login, forged evidence packages passing without --hq-key, and events
never purged. Real SQLite stores throughout.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import sqlite3
import stat
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric import ed25519

from hq import cli, evidence, plates, releases, report, retention
from hq.access import SYSTEM, Access, Actor
from hq.errors import PolicyError
from hq.store import ReadStore
from hq.synthetic import FakeClock, SyntheticNode, tiny_jpeg
from tests.support.hq_site import hq_site
from transport import cbor
from transport.envelope import Header, Opened, signed_bytes
from transport.keys import key_id, raw_public, write_public_key

pytestmark = pytest.mark.unit

DAY = 86400 * 10**9
NOW = int(dt.datetime(2026, 9, 15, 12, tzinfo=dt.UTC).timestamp()) * 10**9
PW = "correct horse battery"
ADA, BEA, CY = Actor("ada", "administrator"), Actor("bea", "administrator"), Actor("cy", "administrator")
IVAN = Actor("ivan", "investigator")


@pytest.fixture
def env(tmp_path):
    """A store with users (ada, bea, cy administrators; ivan investigator; aud auditor), a fake
    clock, and node-a's reads 1..3 (read 3 a year and a half old)."""
    store = ReadStore(tmp_path / "hq.db")
    clock = FakeClock(NOW)
    access = Access(store.db, clock=clock, hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    access.add_user(None, "ada", "administrator", PW, NOW + 400 * DAY)
    for name, role in (("bea", "administrator"), ("cy", "administrator"), ("ivan", "investigator"),
                       ("aud", "auditor")):
        access.add_user(ADA, name, role, PW, NOW + 400 * DAY)
    node = SyntheticNode.create("node-a", "main-st")
    store.store([node.read(1, "7ABC123", NOW - DAY), node.read(2, "8XYZ999", NOW - 2 * DAY),
                 node.read(3, "OLD0001", NOW - 500 * DAY)])
    yield store, access, clock, node
    store.close()


def denied(access: Access) -> list[tuple[str, str, str]]:
    return [(e.user, e.action, e.detail) for e in access.log.entries() if e.outcome == "denied"]


@pytest.fixture
def site(tmp_path, monkeypatch):
    """The command line on a site with ada and bea (administrators), ivan (investigator), aud
    (auditor) and tech (technician), all trained."""
    run, data, key = hq_site(tmp_path, monkeypatch, lambda node, now: [
        node.read(1, "7ABC123", now - DAY, crop=tiny_jpeg("7ABC123")), node.read(2, "7A8C1Z3", now - 2 * DAY)])
    assert run("users", "add", "ada", "--role", "administrator", "--trained-until", "2099-01-01", "--bootstrap",
               new_password=PW) == 0
    for name, role in (("bea", "administrator"), ("ivan", "investigator"), ("aud", "auditor"),
                       ("tech", "technician")):
        assert run("users", "add", name, "--role", role, "--trained-until", "2099-01-01", "--user", "ada",
                   password=PW, new_password=PW) == 0

    def sql(statement, params=()):
        db = sqlite3.connect(data / "hq.db", isolation_level=None)
        try:
            return db.execute(statement, params).fetchall()
        finally:
            db.close()

    return run, sql, data, key


def last_row(sql) -> tuple:
    return sql("SELECT user_name, action, outcome, purpose, detail FROM access_log ORDER BY id DESC LIMIT 1")[0]


# -- 1. user names are ASCII ---------------------------------------------------------------------------
@pytest.mark.parametrize("name, char", [("\u0455ystem", "U+0455"), ("b\u0435a", "U+0435"), ("ada\n", "U+000A"),
                                        ("x" * 65, "1-64 characters")])
def test_look_alike_user_names_are_refused_naming_the_character(env, name, char):
    _, access, _, _ = env
    with pytest.raises(PolicyError, match=re.escape(char)):
        access.add_user(ADA, name, "administrator", PW, NOW + DAY)
    assert denied(access)[-1][:2] == ("ada", "users") and char in denied(access)[-1][2]
    assert name not in [u.name for u in access.users()]


# -- 2. plates and patterns: whole text, and hot-list patterns that can match ------------------------------
def test_a_plate_or_pattern_ending_in_a_newline_is_refused_naming_it():
    for check, text in ((plates.check_plate, "7ABC123\n"), (plates.check_pattern, "7AB*\n"),
                        (plates.check_plate, "7ABC\x00123"), (plates.check_pattern, "7AB\r*")):
        with pytest.raises(plates.PlateQueryError, match=r"character '\\[nx0r]+' \(U\+00"):
            check(text)
    assert plates.check_plate("7ab c-12\t3") == "7ABC123"  # spaces, dashes, tabs still ignored
    # `$` matched before a final newline: a 4-character pattern matched a 5-character text.
    assert not plates.to_regex("7AB?").match("7AB1\n")
    assert plates.to_regex("7AB?").match("7AB1")


def test_hotlist_patterns_that_match_nothing_or_too_much_are_refused(site, capsys):
    run, sql, _, _ = site
    who = ["--user", "ivan"]
    hot = ["--reason", "stolen-vehicle", "--source", "NCIC", "--expires", "2099-01-01", "--purpose", "t", *who]
    for text, why in (("7ABC123\n", "character '\\n'"), ("ABCDEFGHIJK*", "11 characters besides '*'"),
                      ("*0*", f"at least {plates.MIN_HOTLIST_LITERALS}"), ("?0??", "1 letter(s) or digit(s)")):
        capsys.readouterr()
        assert run("hotlist", "add", text, *hot, password=PW) == 2, text
        assert why in capsys.readouterr().err
        user, action, outcome, _, detail = last_row(sql)
        assert (user, action, outcome) == ("ivan", "hotlist-edit", "denied") and why in detail
    assert sql("SELECT COUNT(*) FROM hotlist_entries") == [(0,)]
    assert run("hotlist", "add", "*0A*", *hot, password=PW) == 0  # two literals
    # Searches may be broader (logged with a purpose), but not past a plate's length.
    assert run("search", "*0*", "--purpose", "t", *who, password=PW) == 0
    assert run("search", "7ABC123\n", "--purpose", "t", *who, password=PW) == 2


# -- 3. releasing a hold: a note, and once --------------------------------------------------------------
@pytest.mark.parametrize("note", ["", " "])
def test_a_hold_is_not_released_with_a_blank_note(env, note):
    store, access, _, _ = env
    hold = retention.place_hold(store, access, IVAN, case_no="C1", reason="robbery", read_ids=[3])
    with pytest.raises(Exception, match=r"purpose is required \(--note\)"):
        retention.release_hold(store, access, IVAN, hold.id, note=note)
    assert retention.get_hold(store, hold.id).released_ns is None
    assert denied(access)[-1] == ("ivan", "hold", "a purpose is required (--note)")


def test_a_hold_released_meanwhile_is_not_released_again(env, monkeypatch):
    store, access, _, _ = env
    hold = retention.place_hold(store, access, IVAN, case_no="C1", reason="robbery", read_ids=[3])
    gate = access.authorize

    def authorize(actor, action, **kw):  # ada's release commits between bea's check and her write
        grant = gate(actor, action, **kw)
        if actor == BEA:
            retention.release_hold(store, access, ADA, hold.id, note="case closed")
        return grant

    monkeypatch.setattr(access, "authorize", authorize)
    with pytest.raises(PolicyError, match=f"hold {hold.id} was already released"):
        retention.release_hold(store, access, BEA, hold.id, note="no longer needed")
    assert store.db.one("SELECT released_by, release_note FROM holds WHERE id=?", (hold.id,)) == ("ada", "case closed")
    assert denied(access)[-1][:2] == ("bea", "hold")


# -- 4. read-only commands leave a row when allowed -----------------------------------------------------
def test_allowed_read_only_commands_are_logged(site):
    run, sql, _, _ = site
    for argv, user, action, purpose in (
            (["release", "list"], "ada", "release-review", "list release requests"),
            (["users", "list"], "ada", "users", "list users"),
            (["audit", "verify"], "aud", "audit", "verify access log"),
            (["retention", "status"], "tech", "retention", "store status")):
        before = sql("SELECT MAX(id) FROM access_log")[0][0]
        assert run(*argv, "--user", user, password=PW) == 0, argv
        assert sql("SELECT user_name, action, outcome, purpose FROM access_log WHERE id > ?", (before,)) == [
            (user, action, "ok", purpose)], argv
    assert run("audit", "verify", "--user", "aud", password=PW) == 0  # the chain, these rows included


# -- 5. audit report: --to after --from ---------------------------------------------------------------------
def test_audit_report_refuses_a_period_that_ends_before_it_starts(site, capsys):
    run, sql, _, _ = site
    capsys.readouterr()
    assert run("audit", "report", "--from", "2099-12-31", "--to", "2020-01-01", "--user", "aud", password=PW) == 2
    assert "--to must be after --from" in capsys.readouterr().err
    assert last_row(sql)[:3] == ("aud", "audit", "denied") and "--to must be after --from" in last_row(sql)[4]


# -- 6. audit report: releases reviewed in the period --------------------------------------------------------
def test_audit_report_lists_requests_reviewed_or_exported_in_the_period(env):
    store, access, clock, _ = env
    jan, feb, mar = (int(dt.datetime(2026, m, 1, tzinfo=dt.UTC).timestamp()) * 10**9 for m in (1, 2, 3))
    clock.t_ns = jan + 20 * DAY
    retention.place_hold(store, access, ADA, case_no="C1", reason="r", read_ids=[1])
    req = releases.request(store, access, ADA, case_no="C1", agency="Other PD", requester="X", purpose="p")
    clock.t_ns = feb + 9 * DAY
    releases.review(store, access, BEA, req.id, approve=True, note="ok")
    doc = report.build(store, access, Actor("aud", "auditor"), since_ns=feb, until_ns=mar)
    assert [(r["id"], r["status"], r["reviewed_by"]) for r in doc["releases"]] == [(req.id, "approved", "bea")]
    # Nothing of it happened in March.
    assert report.build(store, access, Actor("aud", "auditor"), since_ns=mar, until_ns=mar + DAY)["releases"] == []


# -- 7. the published hot list: 0600, never through a link ----------------------------------------------------
def test_hotlist_publish_writes_a_private_file_and_replaces_a_planted_link(site, tmp_path):
    run, _, _, _ = site
    assert run("hotlist", "add", "7AB*", "--reason", "stolen-vehicle", "--source", "NCIC", "--expires",
               "2099-01-01", "--purpose", "t", "--user", "ivan", password=PW) == 0
    out, elsewhere = tmp_path / "hl.msg", tmp_path / "elsewhere.txt"
    out.symlink_to(elsewhere)
    old = os.umask(0o022)
    try:
        assert run("hotlist", "publish", "--out", str(out), "--purpose", "daily", "--user", "ada", password=PW) == 0
    finally:
        os.umask(old)
    assert not elsewhere.exists() and not out.is_symlink()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert b"7AB*" in out.read_bytes()


# -- 8. two reviews at once: one decision -------------------------------------------------------------
def test_two_reviews_at_once_record_one_decision(env, monkeypatch):
    store, access, _, _ = env
    retention.place_hold(store, access, ADA, case_no="C1", reason="r", read_ids=[1])
    req = releases.request(store, access, ADA, case_no="C1", agency="LAPD", requester="X", purpose="p")
    gate = access.authorize

    def authorize(actor, action, **kw):  # cy's review commits between bea's check and her write
        grant = gate(actor, action, **kw)
        if actor == BEA and action == "release-review":
            releases.review(store, access, CY, req.id, approve=False, note="deny: no basis")
        return grant

    monkeypatch.setattr(access, "authorize", authorize)
    with pytest.raises(PolicyError, match="reviewed by cy while this review was being made"):
        releases.review(store, access, BEA, req.id, approve=True, note="approve")
    now = releases.get(store, req.id)
    assert (now.status, now.reviewed_by) == ("denied", "cy")
    decisions = [e.user for e in access.log.entries() if e.action in ("release-approved", "release-denied")]
    assert decisions == ["cy"]
    assert denied(access)[-1][:2] == ("bea", "release-review")


# -- 9. nobody records their own training ----------------------------------------------------------------
def test_an_administrator_may_not_record_their_own_training(env, site, capsys):
    _, access, clock, _ = env
    with pytest.raises(PolicyError, match="may not record their own training"):
        access.set_training(BEA, "bea", clock() + 900 * DAY)
    assert denied(access)[-1][:2] == ("bea", "users")
    access.set_training(ADA, "bea", clock() + 900 * DAY)  # another administrator may
    run, sql, _, _ = site
    sql("UPDATE users SET trained_until_ns=1 WHERE name='ada'")
    capsys.readouterr()
    assert run("users", "training", "ada", "--until", "2099-01-01", "--user", "ada", password=PW) == 2
    assert "may not record their own training" in capsys.readouterr().err
    assert sql("SELECT trained_until_ns FROM users WHERE name='ada'") == [(1,)]
    assert run("users", "training", "ada", "--until", "2099-01-01", "--user", "bea", password=PW) == 0


# -- 10. --min-days within what dates hold ---------------------------------------------------------------
def test_min_days_past_a_century_is_refused_naming_the_option(site, capsys):
    run, sql, _, _ = site
    capsys.readouterr()
    assert run("retention", "run", "--system", "--min-days", "1000000") == 2
    assert "--min-days 1000000: at most 36500 days" in capsys.readouterr().err
    assert last_row(sql)[:3] == ("system", "retention", "denied")
    assert run("retention", "run", "--system", "--min-days", "36500") == 0


# -- 11. key files after the login, refused after the gate -------------------------------------------------
def test_missing_key_files_are_refused_after_the_login_and_logged(site, capsys, tmp_path):
    run, sql, data, _ = site
    (data / "keys" / "hq-sign.key").unlink()
    capsys.readouterr()
    assert run("hotlist", "publish", "--out", str(tmp_path / "hl.msg"), "--purpose", "daily", "--user", "ada",
               password=PW) == 2
    assert "hq-sign.key" in capsys.readouterr().err
    user, action, outcome, _, detail = last_row(sql)
    assert (user, action, outcome) == ("ada", "hotlist-publish", "denied") and "hq-sign.key" in detail
    # Someone who may not publish is refused for that, and learns nothing about the key.
    assert run("hotlist", "publish", "--out", str(tmp_path / "hl.msg"), "--purpose", "daily", "--user", "ivan",
               password=PW) == 2
    assert "hq-sign.key" not in capsys.readouterr().err
    assert last_row(sql)[:3] == ("ivan", "hotlist-publish", "denied")
    (data / "registry.db").unlink()
    assert run("evidence", "export", "--case", "C1", "--release", "1", "--out", str(tmp_path / "pkg"), "--user",
               "ivan", password=PW) == 2
    assert "registry" in capsys.readouterr().err
    user, action, outcome, _, detail = last_row(sql)
    assert (user, action, outcome) == ("ivan", "export", "denied") and "registry" in detail
    # Nobody logged in: the missing session is what is refused (and logged), before any file.
    (tmp_path / "session").unlink(missing_ok=True)
    assert run("evidence", "export", "--case", "C1", "--release", "1", "--out", str(tmp_path / "pkg")) == 2
    assert last_row(sql)[1:3] == ("session", "denied")


# -- 12. evidence verify: no trusted HQ key, no verdict ----------------------------------------------------
def _forged_package(root: Path) -> ed25519.Ed25519PrivateKey:
    """A package made from nothing: its own "node" key signs a made-up read, its own "HQ" key
    the manifest naming that node key. Returns the "HQ" key."""
    node_key, hq_key = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    t_ns = NOW - DAY
    header = cbor.dumps({"v": 1, "kind": "read", "node": "gate-12", "seq": 1, "t_ns": t_ns,
                         "sk": key_id(node_key.public_key()), "rk": "00" * 8})
    payload = cbor.dumps({"kind": "read", "node": "gate-12", "seq": 1, "t_ns": t_ns, "plate": "FRAMED1", "crop": b""})
    docs = {"reads/1/header.cbor": header, "reads/1/payload.cbor": payload,
            "reads/1/signature.bin": node_key.sign(signed_bytes(header, payload)),
            "nodes/gate-12.json": json.dumps({"node_id": "gate-12", "keys": [
                {"key_id": key_id(node_key.public_key()), "public_raw": raw_public(node_key.public_key()).hex()}]
            }).encode()}
    for rel, data in docs.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    manifest = (json.dumps({"format": evidence.FORMAT, "case": "X", "reads": [1],
                            "hq_public_key": raw_public(hq_key.public_key()).hex(),
                            "hq_key_id": key_id(hq_key.public_key()),
                            "files": {rel: hashlib.sha256(data).hexdigest() for rel, data in docs.items()}},
                           indent=2, sort_keys=True) + "\n").encode()
    (root / "manifest.json").write_bytes(manifest)
    (root / "manifest.sig").write_text(hq_key.sign(manifest).hex() + "\n")
    return hq_key


def test_a_forged_package_is_unverified_without_a_trusted_hq_key(tmp_path, capsys):
    forger = _forged_package(tmp_path / "pkg")
    check = evidence.verify_package(tmp_path / "pkg")
    assert check.problems == () and check.reads_checked == 1  # consistent with itself ...
    assert not check.ok  # ... which proves nothing
    capsys.readouterr()
    assert cli.main(["evidence", "verify", str(tmp_path / "pkg")]) == 3
    out = capsys.readouterr().out
    assert out.startswith("UNVERIFIED") and "--hq-key" in out and "OK" not in out
    # Against HQ's real key it fails; only the key that signed it would pass it.
    real = ed25519.Ed25519PrivateKey.generate()
    write_public_key(tmp_path / "hq.pub", real.public_key())
    assert cli.main(["evidence", "verify", str(tmp_path / "pkg"), "--hq-key", str(tmp_path / "hq.pub")]) == 1
    assert "not the trusted HQ key" in capsys.readouterr().out
    assert evidence.verify_package(tmp_path / "pkg", forger.public_key()).ok


# -- 13. events go with the reads -------------------------------------------------------------------------
def _event(node: SyntheticNode, seq: int, t_ns: int, **fields) -> Opened:
    header = Header("event", node.node_id, seq, t_ns, key_id(node.key.public_key()), "hq0000000000000")
    payload = {"kind": "event", "node": node.node_id, "seq": seq, "t_ns": t_ns, **fields}
    header_bytes, payload_bytes = cbor.dumps(header.to_wire()), cbor.dumps(payload)
    return Opened(header, header_bytes, payload, payload_bytes,
                  node.key.sign(signed_bytes(header_bytes, payload_bytes)))


@pytest.mark.parametrize("batch", [retention.BATCH, 1])
def test_retention_purges_events_but_keeps_the_overview_of_a_held_read(tmp_path, monkeypatch, batch):
    monkeypatch.setattr(retention, "BATCH", batch)  # 1: the held overview is passed over batch after batch
    store = ReadStore(tmp_path / "hq.db")
    access = Access(store.db, clock=FakeClock(NOW), hasher=PasswordHasher(time_cost=1, memory_cost=1024,
                                                                           parallelism=1))
    access.add_user(None, "ada", "administrator", PW, NOW + 400 * DAY)
    node = SyntheticNode.create("gate-12", "main-st")
    old = NOW - 400 * DAY
    store.store([node.read(1, "7ABC123", old), node.read(2, "8XYZ999", old),
                 _event(node, 3, old, event="no_read", frame=b"\xff\xd8CAR\xff\xd9", duplicate_of="7ABC123"),
                 _event(node, 4, old, event="overview", read_seq=1, image=b"\xff\xd8HELD\xff\xd9"),
                 _event(node, 5, old, event="overview", read_seq=2, image=b"\xff\xd8GONE\xff\xd9"),
                 _event(node, 6, NOW - DAY, event="no_read", frame=None, duplicate_of=None)])
    held = [r.id for r in store.reads_after(0) if r.seq == 1]
    retention.place_hold(store, access, ADA, case_no="C1", reason="robbery", read_ids=held)
    result = retention.purge(store, access, SYSTEM, min_days=365)
    assert store.seqs("gate-12", "events") == [4, 6]
    assert (result.reads_deleted, result.events_deleted, result.events_held) == (1, 2, 1)
    assert store.seqs("gate-12") == [1]
    # Purged events are not gaps: the watermark covers them.
    assert store.sequence_gaps("gate-12") == (6, 0, [])
    assert "deleted 2 events, kept 1 held events" in access.log.entries()[-1].detail
    store.close()
