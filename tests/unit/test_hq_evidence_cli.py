"""HQ records: release requests, evidence export/verify, audit report, and the `alpr-hq` commands."""
from __future__ import annotations

import datetime as dt
import json
import os
import time

import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric import ed25519

from hq import cli, evidence, migrations, releases, report, retention
from hq.access import Access, Actor
from hq.db import open_sqlite
from hq.errors import AccessDenied, PolicyError
from hq.store import ReadStore
from hq.synthetic import FakeClock, SyntheticNode, tiny_jpeg
from tests.support.hq_site import hq_site
from transport import cbor
from transport.keys import write_public_key
from transport.registry import Registry

pytestmark = pytest.mark.unit

DAY = 86400 * 10**9
NOW = int(dt.datetime(2026, 9, 15, 12, tzinfo=dt.UTC).timestamp()) * 10**9
PW = "correct horse battery"
ADA, BEA, IVAN = Actor("ada", "administrator"), Actor("bea", "administrator"), Actor("ivan", "investigator")


@pytest.fixture
def env(tmp_path):
    store = ReadStore(tmp_path / "hq.db")
    access = Access(store.db, clock=FakeClock(NOW),
                    hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    access.add_user(None, "ada", "administrator", PW, NOW + 400 * DAY)
    for name, role in (("bea", "administrator"), ("ivan", "investigator"), ("audrey", "auditor")):
        access.add_user(ADA, name, role, PW, NOW + 400 * DAY)
    node = SyntheticNode.create("node-a", "main-st")
    registry = Registry(tmp_path / "registry.db")
    registry.enroll("node-a", "main-st", node.key.public_key(), actor="installer")
    store.store([node.read(i, p, NOW - i * DAY, crop=tiny_jpeg(p)) for i, p in enumerate(["7ABC123", "8XYZ999"], 1)])
    ids = [r.id for r in store.reads_after(0)]
    yield store, access, registry, ids
    registry.close()
    store.close()


def _approved(store, access, case="C1"):
    req = releases.request(store, access, IVAN, case_no=case, agency="County DA", requester="DDA Smith",
                           purpose="prosecution of robbery")
    return req


def test_release_needs_approval_by_another_administrator(env, tmp_path):
    store, access, registry, ids = env
    key = ed25519.Ed25519PrivateKey.generate()
    retention.place_hold(store, access, IVAN, case_no="C1", reason="robbery", read_ids=ids)
    req = releases.request(store, access, ADA, case_no="C1", agency="County DA", requester="DDA Smith",
                           purpose="prosecution")
    with pytest.raises(PolicyError, match="nothing is released before approval"):
        evidence.export(store, access, IVAN, case_no="C1", release_id=req.id, out=tmp_path / "pkg", sign_key=key,
                        registry=registry)
    with pytest.raises(PolicyError, match="another administrator"):
        releases.review(store, access, ADA, req.id, approve=True, note="ok")
    with pytest.raises(AccessDenied, match="may not release-review"):
        releases.review(store, access, IVAN, req.id, approve=True, note="ok")
    denied = releases.review(store, access, BEA, req.id, approve=False, note="not a public agency request")
    assert denied.status == "denied"
    with pytest.raises(PolicyError, match="denied"):
        evidence.export(store, access, IVAN, case_no="C1", release_id=req.id, out=tmp_path / "pkg", sign_key=key,
                        registry=registry)


def test_export_package_verifies_offline_and_detects_tampering(env, tmp_path):
    store, access, registry, ids = env
    key = ed25519.Ed25519PrivateKey.generate()
    retention.place_hold(store, access, IVAN, case_no="C1", reason="robbery", read_ids=ids[:1])
    req = _approved(store, access)
    with pytest.raises(PolicyError, match="is for case C1, not C2"):
        evidence.export(store, access, IVAN, case_no="C2", release_id=req.id, out=tmp_path / "x", sign_key=key,
                        registry=registry)
    releases.review(store, access, ADA, req.id, approve=True, note="DA request under PC 1054")
    out = tmp_path / "pkg"
    result = evidence.export(store, access, IVAN, case_no="C1", release_id=req.id, out=out, sign_key=key,
                             registry=registry)
    assert result.reads == 1
    assert releases.get(store, req.id).export_manifest_sha256 == result.manifest_sha256
    assert releases.get(store, req.id).status == "exported"
    with pytest.raises(PolicyError, match="exported"):  # one approval, one release
        evidence.export(store, access, IVAN, case_no="C1", release_id=req.id, out=tmp_path / "again", sign_key=key,
                        registry=registry)
    check = evidence.verify_package(out, key.public_key())
    assert check.ok and check.reads_checked == 1, check.problems
    log_doc = json.loads((out / "access-log.json").read_text())
    assert {e["action"] for e in log_doc} >= {"hold", "release-request", "release-review", "export"}
    # Someone edits the crop and the reads' summary on the media:
    for rel in (f"reads/{ids[0]}/crop.jpg", "reads.json"):
        os.chmod(out / rel, 0o644)
    (out / f"reads/{ids[0]}/crop.jpg").write_bytes(tiny_jpeg("FAKE"))
    problems = evidence.verify_package(out).problems
    assert f"reads/{ids[0]}/crop.jpg: SHA-256 differs from the manifest (file changed)" in problems
    assert f"read {ids[0]}: crop.jpg is not the crop the node signed" in problems
    os.chmod(out / "reads", 0o755)
    (out / "reads" / "manifest.json").write_text("{}")
    assert "reads/manifest.json: not in the manifest (file added)" in evidence.verify_package(out).problems
    other = ed25519.Ed25519PrivateKey.generate()
    assert "signed with a key that is not the trusted HQ key" in " ".join(evidence.verify_package(out, other.public_key()).problems)


def test_package_with_forged_payload_fails_node_signature(env, tmp_path):
    store, access, registry, ids = env
    key = ed25519.Ed25519PrivateKey.generate()
    retention.place_hold(store, access, IVAN, case_no="C1", reason="robbery", read_ids=ids[:1])
    req = _approved(store, access)
    releases.review(store, access, ADA, req.id, approve=True, note="ok")
    out = tmp_path / "pkg"
    evidence.export(store, access, IVAN, case_no="C1", release_id=req.id, out=out, sign_key=key, registry=registry)
    # A forger who also re-signs the manifest with their own key still cannot forge the node's signature.
    payload = out / f"reads/{ids[0]}/payload.cbor"
    os.chmod(payload, 0o644)
    payload.write_bytes(payload.read_bytes().replace(b"7ABC123", b"7ABC124"))
    assert f"read {ids[0]}: node signature does not verify" in evidence.verify_package(out).problems


def _export_both(env, tmp_path, key):
    store, access, registry, ids = env
    retention.place_hold(store, access, IVAN, case_no="C1", reason="robbery", read_ids=ids)
    req = _approved(store, access)
    releases.review(store, access, ADA, req.id, approve=True, note="ok")
    out = tmp_path / "pkg"
    evidence.export(store, access, IVAN, case_no="C1", release_id=req.id, out=out, sign_key=key, registry=registry)
    assert evidence.verify_package(out, key.public_key()).reads_checked == 2
    return out


def _rewrite(path, data: bytes):
    os.chmod(path, 0o644)  # export makes files read-only
    path.write_bytes(data)


@pytest.mark.parametrize("name, value, kind", [("header.cbor", ["node-a", 1], "list"),
                                               ("payload.cbor", 7, "int")])
def test_verify_names_a_read_file_that_is_not_a_cbor_map(env, tmp_path, capsys, name, value, kind):
    key = ed25519.Ed25519PrivateKey.generate()
    out = _export_both(env, tmp_path, key)
    ids = env[3]
    _rewrite(out / f"reads/{ids[0]}/{name}", cbor.dumps(value))
    check = evidence.verify_package(out, key.public_key())
    assert f"reads/{ids[0]}/{name}: not a CBOR map ({kind})" in check.problems
    assert f"reads/{ids[0]}/{name}: SHA-256 differs from the manifest (file changed)" in check.problems
    assert check.reads_checked == 1  # the other read is still checked
    capsys.readouterr()
    assert cli.main(["evidence", "verify", str(out)]) == 1
    assert f"FAIL  reads/{ids[0]}/{name}: not a CBOR map ({kind})" in capsys.readouterr().out


def test_verify_names_a_manifest_without_hq_public_key(env, tmp_path, capsys):
    key = ed25519.Ed25519PrivateKey.generate()
    out = _export_both(env, tmp_path, key)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["hq_public_key"]
    _rewrite(out / "manifest.json", json.dumps(manifest).encode())
    check = evidence.verify_package(out)
    assert "manifest.json: field hq_public_key missing" in check.problems
    assert check.reads_checked == 2  # files and node signatures are still checked
    # With HQ's key given, the signature is still checked, and the edit shows.
    trusted = evidence.verify_package(out, key.public_key())
    assert "manifest.sig: HQ signature does not verify (manifest edited or not from HQ)" in trusted.problems
    capsys.readouterr()
    assert cli.main(["evidence", "verify", str(out)]) == 1
    assert "FAIL  manifest.json: field hq_public_key missing" in capsys.readouterr().out


def test_verify_names_a_truncated_node_key_file(env, tmp_path, capsys):
    key = ed25519.Ed25519PrivateKey.generate()
    out = _export_both(env, tmp_path, key)
    ids = env[3]
    node_file = out / "nodes" / "node-a.json"
    _rewrite(node_file, node_file.read_bytes()[:20])
    check = evidence.verify_package(out, key.public_key())
    assert any(p.startswith("nodes/node-a.json: not valid JSON (") for p in check.problems), check.problems
    assert "nodes/node-a.json: SHA-256 differs from the manifest (file changed)" in check.problems
    assert sum(p.startswith(f"read {i}: no public key for node node-a") for p in check.problems for i in ids) == 2
    capsys.readouterr()
    assert cli.main(["evidence", "verify", str(out)]) == 1
    assert "FAIL  nodes/node-a.json: not valid JSON (" in capsys.readouterr().out


def test_audit_report(env):
    store, access, registry, ids = env
    access.authorize(IVAN, "search", purpose="patrol curiosity", query={"plate": "7ABC123"})
    access.authorize(IVAN, "search", purpose="robbery", case_no="C1", query={"plate": "7ABC123"})
    with pytest.raises(AccessDenied):
        access.authorize(Actor("audrey", "auditor"), "search", purpose="x")
    retention.place_hold(store, access, IVAN, case_no="C1", reason="robbery", read_ids=ids)
    with pytest.raises(AccessDenied):
        report.build(store, access, IVAN, since_ns=0, until_ns=NOW + 1)
    doc = report.build(store, access, Actor("audrey", "auditor"), since_ns=0, until_ns=2**62, registry=registry)
    assert doc["accesses_per_user"]["ivan"]["search | robbery"] == 1
    assert [s["purpose"] for s in doc["searches_without_case"]] == ["patrol curiosity"]
    assert [(d["user"], d["action"]) for d in doc["denied"]] == [("audrey", "search"), ("ivan", "audit")]
    assert doc["holds"][0]["case"] == "C1" and doc["holds"][0]["reads"] == 2
    assert [(p["actor"], p["action"]) for p in doc["provisioning"]] == [("installer", "enroll")]
    assert doc["access_log"]["intact"]


# -- the command line -----------------------------------------------------------------------------
@pytest.fixture
def site(tmp_path, monkeypatch):
    run, _, key = hq_site(tmp_path, monkeypatch, lambda node, now: [
        node.read(1, "7ABC123", now - DAY, crop=tiny_jpeg("7ABC123")),
        node.read(2, "7A8C1Z3", now - 2 * DAY), node.read(3, "OLD0001", now - 500 * DAY)])
    write_public_key(tmp_path / "hq-sign.pub", key.public_key())
    return run, tmp_path


def test_cli_end_to_end(site, capsys):
    run, tmp = site
    sess = ["--session", str(tmp / "s-ivan")]
    assert run("users", "add", "ada", "--role", "administrator", "--trained-until", "2099-01-01", "--bootstrap",
               new_password=PW) == 0
    assert run("users", "add", "bea", "--role", "administrator", "--trained-until", "2099-01-01", "--user", "ada",
               password=PW, new_password=PW) == 0
    assert run("users", "add", "ivan", "--role", "investigator", "--user", "ada", password=PW, new_password=PW) == 0
    assert run("login", "--user", "ivan", *sess, password=PW) == 0
    capsys.readouterr()
    # No training on file yet: refused, with the reason.
    assert run("search", "7ABC123", "--purpose", "robbery", *sess) == 2
    assert "no ALPR training on file" in capsys.readouterr().err
    assert run("users", "training", "ivan", "--until", "2099-01-01", "--user", "ada", password=PW) == 0
    capsys.readouterr()
    assert run("search", "7ABC123", "--confusable", "--purpose", "robbery", "--case", "C1", "--crops",
               str(tmp / "crops"), "--json", *sess) == 0
    hits = json.loads(capsys.readouterr().out)
    assert sorted(h["match"] for h in hits) == ["confusable", "exact"]
    assert len(list((tmp / "crops").iterdir())) == 1
    assert run("search", "7AB", "--purpose", "x", *sess) == 0  # exact, no hit
    assert run("search", "7AB%", "--purpose", "x", *sess) == 2
    assert "letters and digits" in capsys.readouterr().err
    ids = [h["id"] for h in hits]
    assert run("evidence", "hold", "--case", "C1", "--why", "robbery suspect", *[arg for i in ids for arg in ("--read", str(i))],
               *sess) == 0
    assert run("release", "request", "--case", "C1", "--agency", "County DA", "--requester", "DDA Smith",
               "--purpose", "prosecution", *sess) == 0
    assert run("evidence", "export", "--case", "C1", "--release", "1", "--out", str(tmp / "pkg"), *sess) == 2
    assert "before approval" in capsys.readouterr().err
    assert run("release", "review", "1", "--approve", "--note", "public agency, PC 1054", "--user", "bea",
               password=PW) == 0
    assert run("evidence", "export", "--case", "C1", "--release", "1", "--out", str(tmp / "pkg"), *sess) == 0
    capsys.readouterr()
    assert run("evidence", "verify", str(tmp / "pkg"), "--hq-key", str(tmp / "hq-sign.pub")) == 0
    assert "OK  2 read(s)" in capsys.readouterr().out
    assert run("retention", "run", "--system") == 0
    assert "purged 1 read(s)" in capsys.readouterr().out
    assert run("audit", "verify", "--user", "ada", password=PW) == 0
    capsys.readouterr()
    assert run("retention", "status", "--user", "ada", password=PW) == 0
    status = capsys.readouterr().out
    assert f"schema version {migrations.LATEST} (this HQ: {migrations.LATEST})" in status and "reads: 2," in status
    assert run("audit", "report", "--from", "2000-01-01", "--to", "2099-01-01", "--json", "--user", "ada",
               password=PW) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [s["purpose"] for s in doc["searches_without_case"]] == ["x"]  # the malformed one read nothing
    assert doc["purges"][0]["reads_deleted"] == 1 and doc["access_log"]["intact"]
    assert run("logout", *sess) == 0
    assert run("search", "7ABC123", "--purpose", "x", *sess) == 2
    assert "no session" in capsys.readouterr().err


def test_cli_hotlist_and_alerts(site, capsys):
    run, tmp = site
    run("users", "add", "ada", "--role", "administrator", "--trained-until", "2099-01-01", "--bootstrap",
        new_password=PW)
    who = ["--user", "ada"]
    assert run("hotlist", "add", "7ABC123", "--reason", "stolen-vehicle", "--source", "NCIC", "--expires",
               "2099-01-01", "--purpose", "stolen report", *who, password=PW) == 0
    assert run("hotlist", "publish", "--out", str(tmp / "hl.cbor"), "--purpose", "daily", *who, password=PW) == 0
    assert (tmp / "hl.cbor").stat().st_size > 100
    store = ReadStore(tmp / "data" / "hq.db")
    node = SyntheticNode.create("node-a", "main-st")
    store.store([node.read(9, "7ABC123", time.time_ns(), kind="alert",
                           hotlist={"list_version": "1", "entry": "1", "reason": "stolen-vehicle", "match": "exact"})])
    alert_id = store.reads_after(0)[-1].id
    store.close()
    capsys.readouterr()
    assert run("alerts", "list", "--purpose", "dispatch", *who, password=PW) == 0
    assert "UNVERIFIED" in capsys.readouterr().out
    assert run("alerts", "verify", str(alert_id), "--outcome", "confirmed", "--note", "CLETS ref 77", *who,
               password=PW) == 0
    assert run("alerts", "list", "--purpose", "dispatch", *who, password=PW) == 0
    assert "0 alert(s)" in capsys.readouterr().out


def test_cli_audit_verify_names_an_edited_entry(site, capsys):
    run, tmp = site
    run("users", "add", "ada", "--role", "administrator", "--trained-until", "2099-01-01", "--bootstrap",
        new_password=PW)
    run("search", "7ABC123", "--purpose", "robbery", "--user", "ada", password=PW)
    store = ReadStore(tmp / "data" / "hq.db")
    store.db.execute("DROP TRIGGER access_log_no_update")
    store.db.execute("UPDATE access_log SET purpose='routine' WHERE action='search'")
    entry = store.db.value("SELECT id FROM access_log WHERE action='search'")
    store.close()
    capsys.readouterr()
    assert run("audit", "verify", "--user", "ada", password=PW) == 1
    assert f"FAIL  entry {entry}: content was edited" in capsys.readouterr().out


def test_other_commands_can_use_the_gate(site):
    import argparse

    from hq import records_cli
    from hq.store import ReadStore

    run, tmp = site
    run("users", "add", "ada", "--role", "administrator", "--trained-until", "2099-01-01", "--bootstrap",
        new_password=PW)
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    records_cli.add_who_arguments(parser)
    args = parser.parse_args(["--config", str(tmp / "hq.toml"), "--user", "ada", "--password", PW,
                              "--purpose", "watch live reads"])
    records_cli.authorize_from_args(args, "view", {"tail": True})
    store = ReadStore(tmp / "data" / "hq.db")
    last = store.db.one("SELECT user_name, action, purpose, query FROM access_log ORDER BY id DESC LIMIT 1")
    store.close()
    assert last == ("ada", "view", "watch live reads", '{"tail":true}')
    bad = parser.parse_args(["--config", str(tmp / "hq.toml"), "--user", "ada", "--password", "wrong password",
                             "--purpose", "x"])
    with pytest.raises(AccessDenied):
        records_cli.authorize_from_args(bad, "view", {"tail": True})


def test_reads_tail_asks_who_and_why_and_is_logged(site, capsys):
    run, tmp = site
    run("users", "add", "ada", "--role", "administrator", "--trained-until", "2099-01-01", "--bootstrap",
        new_password=PW)
    capsys.readouterr()
    with pytest.raises(SystemExit):  # --purpose is required
        run("reads", "tail", "--all", "--count", "1", "--user", "ada", password=PW)
    assert run("reads", "tail", "--all", "--count", "3", "--user", "ada", "--purpose", "watch desk",
               password=PW) == 0
    out = capsys.readouterr().out
    assert "7ABC123" in out and "OLD0001" in out
    assert run("audit", "report", "--from", "2000-01-01", "--to", "2099-01-01", "--json", "--user", "ada",
               password=PW) == 0
    assert "watch desk" in capsys.readouterr().out


def _bootstrap_ada(run):
    assert run("users", "add", "ada", "--role", "administrator", "--trained-until", "2099-01-01", "--bootstrap",
               new_password=PW) == 0


def _read_count(tmp):
    store = ReadStore(tmp / "data" / "hq.db")
    try:
        return store.count()
    finally:
        store.close()


def test_retention_run_refuses_min_days_below_the_configured_period(site, capsys):
    run, tmp = site
    _bootstrap_ada(run)
    capsys.readouterr()
    assert run("retention", "run", "--system", "--min-days", "1") == 2
    err = capsys.readouterr().err
    assert "--min-days 1: below records.retention_days = 365" in err
    assert run("retention", "run", "--min-days", "364", "--user", "ada", password=PW) == 2
    assert "--min-days 364: below records.retention_days = 365" in capsys.readouterr().err
    assert _read_count(tmp) == 3  # nothing purged, not even the 500-day-old read
    # Longer than configured is allowed: only the 500-day-old read goes.
    assert run("retention", "run", "--system", "--min-days", "400") == 0
    assert "retention (400 days): purged 1 read(s)" in capsys.readouterr().out
    assert _read_count(tmp) == 2


def test_evidence_holds_lists_all_holds_without_a_case(site, capsys):
    run, tmp = site
    _bootstrap_ada(run)
    who = ["--user", "ada"]
    assert run("evidence", "hold", "--case", "C1", "--why", "robbery", "--read", "1", *who, password=PW) == 0
    assert run("evidence", "hold", "--case", "C2", "--why", "burglary", "--read", "2", *who, password=PW) == 0
    capsys.readouterr()
    assert run("evidence", "holds", "--purpose", "monthly hold review", *who, password=PW) == 0
    out = capsys.readouterr().out
    assert "case=C1" in out and "case=C2" in out
    assert run("evidence", "holds", "--purpose", "case file", "--case", "C2", *who, password=PW) == 0
    out = capsys.readouterr().out
    assert "case=C2" in out and "case=C1" not in out
    store = ReadStore(tmp / "data" / "hq.db")
    listed = store.db.rows("SELECT action, outcome, purpose, case_no, query FROM access_log "
                           "WHERE action = 'hold-list' ORDER BY id")
    denied = store.db.value("SELECT COUNT(*) FROM access_log WHERE outcome = 'denied'")
    store.close()
    assert listed == [("hold-list", "ok", "monthly hold review", "", '{"list":"all"}'),
                      ("hold-list", "ok", "case file", "C2", '{"list":"C2"}')]
    assert denied == 0
    # Placing a hold still needs a case number.
    with pytest.raises(SystemExit):
        run("evidence", "hold", "--why", "robbery", "--read", "1", *who, password=PW)


def test_nodes_uses_the_configured_store_url(site, capsys, monkeypatch):
    run, tmp = site
    # Stand in for PostgreSQL: the configured URL opens a store that is not data_dir/hq.db.
    elsewhere = tmp / "postgres-stand-in.db"
    (tmp / "data" / "hq.db").rename(elsewhere)
    opened = []

    def fake_postgres(url):
        opened.append(url)
        return open_sqlite(elsewhere)

    monkeypatch.setattr("hq.store.open_postgres", fake_postgres)
    config = tmp / "hq.toml"
    config.write_text(config.read_text() + '[store]\nurl = "postgresql://alpr@db.example/alpr"\n')
    assert run("users", "add", "ada", "--role", "administrator", "--trained-until", "2099-01-01", "--bootstrap",
               new_password=PW) == 0
    assert run("users", "add", "ivan", "--role", "investigator", "--trained-until", "2099-01-01", "--user", "ada",
               password=PW, new_password=PW) == 0
    capsys.readouterr()
    # the store is read only through a login, and only by a role that looks after nodes
    assert run("nodes", "--session", str(tmp / "no-session")) == 2
    assert run("nodes", "--user", "ivan", password=PW) == 2
    assert "node-a" not in capsys.readouterr().out
    assert run("nodes", "--user", "ada", password=PW) == 0
    out = capsys.readouterr().out
    assert opened and set(opened) == {"postgresql://alpr@db.example/alpr"}  # every command, nodes too
    assert "node-a" in out and "reads=3" in out
    assert run("audit", "report", "--from", "2000-01-01", "--to", "2099-01-01", "--json", "--user", "ada",
               password=PW) == 0
    doc = json.loads(capsys.readouterr().out)
    assert any(key.startswith("nodes") for key in doc["accesses_per_user"]["ada"])
    assert [(d["user"], d["action"]) for d in doc["denied"] if d["action"] == "nodes"] == [("ivan", "nodes")]
    assert not (tmp / "data" / "hq.db").exists()  # no stray empty SQLite store


def test_reads_tail_starts_at_the_newest_read_without_loading_them(site, capsys, monkeypatch):
    run, tmp = site
    _bootstrap_ada(run)
    calls = []
    original = ReadStore.reads_after

    def reads_after(self, last_id, limit=1000):
        assert limit <= 1000, f"reads_after({last_id}, {limit}): loads every read"
        if not calls:  # a read arrives once tail is watching
            other = ReadStore(tmp / "data" / "hq.db")
            other.store([SyntheticNode.create("node-a", "main-st").read(10, "NEW0001", time.time_ns())])
            other.close()
        calls.append(last_id)
        return original(self, last_id, limit)

    monkeypatch.setattr(ReadStore, "reads_after", reads_after)
    capsys.readouterr()
    assert run("reads", "tail", "--count", "1", "--user", "ada", "--purpose", "watch desk", password=PW) == 0
    out = capsys.readouterr().out
    assert "NEW0001" in out and "7ABC123" not in out and "OLD0001" not in out
    assert calls[0] == 3  # the newest read stored before tail started
