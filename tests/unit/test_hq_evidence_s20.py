"""Evidence packages after the outside audit (/tmp/rv4c): reads.json bound to the signed payloads,
the checks ingest made repeated by verify (key window, revocation, time binding, the approval),
the package named by verify (--case/--release), links and folders in a package, an access-log
extract and holds limited to the approval, README.txt and UTC times."""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric import ed25519

from hq import cli, evidence, releases, retention
from hq.access import Access, Actor
from hq.accesslog import entry_hash
from hq.store import ReadStore
from hq.synthetic import SyntheticNode, tiny_jpeg
from transport import cbor
from transport.envelope import Header, Opened, signed_bytes
from transport.keys import key_id, write_public_key
from transport.payload import ReadPayload
from transport.registry import Registry

pytestmark = pytest.mark.unit

S = 10**9
DAY = 86400 * S
PW = "correct horse battery"
ADA, BEA, IVAN = Actor("ada", "administrator"), Actor("bea", "administrator"), Actor("ivan", "investigator")


class Site:
    """A store, access gate and registry with node-a enrolled before its reads (real clock, as
    the registry's), and HQ's signing key."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.now = time.time_ns()
        self.store = ReadStore(tmp_path / "hq.db")
        self.access = Access(self.store.db, clock=time.time_ns,
                             hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
        self.access.add_user(None, "ada", "administrator", PW, self.now + 400 * DAY)
        for name, role in (("bea", "administrator"), ("ivan", "investigator")):
            self.access.add_user(ADA, name, role, PW, self.now + 400 * DAY)
        self.node = SyntheticNode.create("node-a", "main-st")
        self.registry = Registry(tmp_path / "registry.db")
        self.registry.enroll("node-a", "main-st", self.node.key.public_key(), actor="installer")
        self.key = ed25519.Ed25519PrivateKey.generate()

    def add(self, *opened: Opened) -> list[int]:
        self.store.store(list(opened))
        return [r.id for r in self.store.reads_after(0)][-len(opened):]

    def read(self, seq: int, plate: str, t_ns: int | None = None) -> Opened:
        return self.node.read(seq, plate, self.now + seq * S if t_ns is None else t_ns, crop=tiny_jpeg(plate))

    def export(self, ids: list[int], case: str = "C1", out: str = "pkg", **kw) -> Path:
        retention.place_hold(self.store, self.access, IVAN, case_no=case, reason="robbery", read_ids=ids)
        req = releases.request(self.store, self.access, IVAN, case_no=case, agency="County DA", requester="DDA Smith",
                               purpose="prosecution")
        releases.review(self.store, self.access, ADA, req.id, approve=True, note="PC 1054")
        evidence.export(self.store, self.access, IVAN, case_no=case, release_id=req.id, out=self.tmp / out,
                        sign_key=self.key, registry=self.registry, **kw)
        return self.tmp / out

    def close(self) -> None:
        self.registry.close()
        self.store.close()


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    yield s
    s.close()


def _resign(out: Path, key: ed25519.Ed25519PrivateKey, edits: dict[str, bytes], manifest_edit=None) -> None:
    """Rewrite files and re-sign the manifest with HQ's key: what only a holder of HQ's key (or
    a faulty HQ) could do, so that each check after the signature is tested on its own."""
    for path in [out, *out.rglob("*")]:
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
    manifest = json.loads((out / "manifest.json").read_text())
    for rel, data in edits.items():
        (out / rel).write_bytes(data)
        manifest["files"][rel] = hashlib.sha256(data).hexdigest()
    if manifest_edit:
        manifest_edit(manifest)
    body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (out / "manifest.json").write_bytes(body)
    (out / "manifest.sig").write_text(key.sign(body).hex() + "\n")


def _json(out: Path, rel: str):
    return json.loads((out / rel).read_text())


# -- 1. reads.json from the signed payload, compared by verify ----------------------------------------
def test_reads_json_is_made_from_the_signed_payload_not_hq_database_columns(site):
    ids = site.add(site.read(1, "7ABC123"))
    # Someone who can write hq.db changes the index columns before the export (r01).
    site.store.db.execute("UPDATE reads SET plate='7ABC128', plate_norm='7ABC128', site_id='elm-st', "
                          "camera_id='cam-9', confidence=9999, capture_ns=capture_ns-3600000000000 WHERE id=?", (ids[0],))
    out = site.export(ids)
    entry = _json(out, "reads.json")[0]
    signed = cbor.loads((out / f"reads/{ids[0]}/payload.cbor").read_bytes())
    assert (entry["plate"], entry["site_id"], entry["camera_id"]) == ("7ABC123", "main-st", "cam-1")
    assert entry["capture_ns"] == signed["t_ns"] and entry["capture_utc"] == evidence.iso_utc(signed["t_ns"])
    assert entry["capture_utc"].endswith("Z") and entry["conf_units"] == 9300 and entry["confidence"] == 0.93
    assert entry["clock"] == "synced" and entry["direction"] == "approaching" and entry["trigger"] == "continuous"
    assert entry["crop_sha256"] == hashlib.sha256(signed["crop"]).hexdigest()
    assert evidence.verify_package(out, site.key.public_key()).ok


def test_verify_fails_a_reads_json_entry_that_differs_from_the_signed_payload(site, capsys):
    ids = site.add(site.read(1, "7ABC123"))
    out = site.export(ids)
    doc = _json(out, "reads.json")
    doc[0].update(plate="7ABC128", site_id="elm-st")
    _resign(out, site.key, {"reads.json": (json.dumps(doc) + "\n").encode()})
    check = evidence.verify_package(out, site.key.public_key())
    assert f"reads.json: read {ids[0]}: plate is '7ABC128', but the node signed '7ABC123'" in check.problems
    assert f"reads.json: read {ids[0]}: site_id is 'elm-st', but the node signed 'main-st'" in check.problems
    del doc[0]["clock"]
    _resign(out, site.key, {"reads.json": (json.dumps(doc) + "\n").encode()})
    assert (f"reads.json: read {ids[0]}: field clock missing (the node signed 'synced')"
            in evidence.verify_package(out, site.key.public_key()).problems)


# -- 2. what ingest checked: key window, revocation, time binding, the approval ------------------------
def _skewed(site: Site, seq: int, header_t: int, payload_t: int) -> Opened:
    """A read whose header time (what ingest judged revocation by) is not its payload time."""
    payload = ReadPayload(plate="7ABC123", confidence=0.9, capture_time_ns=payload_t, node_id="node-a",
                          site_id="main-st", camera_id="cam-1", crop_jpeg=tiny_jpeg("7ABC123"), seq=seq,
                          clock_sync="synced").to_wire()
    header = Header("read", "node-a", seq, header_t, key_id(site.node.key.public_key()), "hq0000000000000")
    hb, pb = cbor.dumps(header.to_wire()), cbor.dumps(payload)
    return Opened(header, hb, payload, pb, site.node.key.sign(signed_bytes(hb, pb)))


def test_verify_checks_key_retirement_time_binding_and_revocation(site):
    ids = site.add(site.read(1, "7ABC123"), _skewed(site, 2, site.now + 2 * S, site.now - DAY))
    # The old key retired 1 s after read 1, read 3 signed with it later; then the node revoked.
    site.registry.add_key("node-a", ed25519.Ed25519PrivateKey.generate().public_key(), actor="tech",
                          retire_old_after_s=(site.now + int(1.5 * S) - time.time_ns()) / S)
    ids += site.add(site.read(3, "7ABC123", site.now + 10 * S))
    site.registry.revoke("node-a", actor="sgt smith", reason="unit stolen", at_ns=site.now + 5 * S)
    out = site.export(ids)
    node = _json(out, "nodes/node-a.json")
    assert (node["status"], node["revoked_ns"], node["revoke_reason"]) == ("revoked", site.now + 5 * S, "unit stolen")
    assert node["revoked_utc"] == evidence.iso_utc(site.now + 5 * S)
    check = evidence.verify_package(out, site.key.public_key())
    text = "\n".join(check.problems)
    assert f"read {ids[1]}: payload field t_ns" in text
    assert f"read {ids[2]}: made {evidence.iso_utc(site.now + 10 * S)}, at or after its key" in text
    assert f"read {ids[2]}: made {evidence.iso_utc(site.now + 10 * S)}, at or after node node-a was revoked" in text
    assert "unit stolen" in text
    assert not any(p.startswith(f"read {ids[0]}:") for p in check.problems), check.problems
    assert any(w.startswith(f"read {ids[0]}: node node-a was revoked") for w in check.warnings)


def test_verify_fails_when_the_manifest_reads_are_not_the_approved_reads(site):
    ids = site.add(site.read(1, "7ABC123"), site.read(2, "7ABC123"))
    out = site.export(ids)

    def drop(manifest):
        manifest["reads"] = [ids[0]]
        manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith(f"reads/{ids[1]}/")}
    doc = [e for e in _json(out, "reads.json") if e["id"] == ids[0]]
    _resign(out, site.key, {"reads.json": (json.dumps(doc) + "\n").encode()}, drop)
    for rel in ("header.cbor", "payload.cbor", "signature.bin", "crop.jpg"):
        (out / f"reads/{ids[1]}/{rel}").unlink()
    (out / f"reads/{ids[1]}").rmdir()
    check = evidence.verify_package(out, site.key.public_key())
    assert (f"manifest.json: reads [{ids[0]}] are not the reads the release approved (release.json read_ids "
            f"[{ids[0]}, {ids[1]}])") in check.problems


# -- 3. verify names the package; --case / --release ----------------------------------------------------
def test_verify_names_the_package_and_refuses_another_case_or_release(site, capsys):
    ids = site.add(site.read(1, "7ABC123"))
    out = site.export(ids, case="CASE-B")
    write_public_key(site.tmp / "hq.pub", site.key.public_key())
    capsys.readouterr()
    assert cli.main(["evidence", "verify", str(out), "--hq-key", str(site.tmp / "hq.pub")]) == 0
    text = capsys.readouterr().out
    assert "case             CASE-B" in text and "approved by ada" in text and "exported by      ivan (investigator)" in text
    assert "release request  1 for County DA" in text and f"reads            1: {ids[0]}" in text
    created = _json(out, "manifest.json")["created_utc"]
    assert created.endswith("Z") and created in text
    assert cli.main(["evidence", "verify", str(out), "--hq-key", str(site.tmp / "hq.pub"), "--case", "CASE-A"]) == 1
    assert "FAIL  manifest.json: this package is for case 'CASE-B', not case 'CASE-A' (--case)" in capsys.readouterr().out
    assert cli.main(["evidence", "verify", str(out), "--hq-key", str(site.tmp / "hq.pub"), "--release", "7"]) == 1
    assert "not 7 (--release)" in capsys.readouterr().out
    assert cli.main(["evidence", "verify", str(out), "--hq-key", str(site.tmp / "hq.pub"), "--case", "CASE-B",
                     "--release", "1"]) == 0


# -- 4. links and folders ---------------------------------------------------------------------------------
def test_verify_fails_on_links_and_reports_a_crop_that_is_a_folder(site, capsys):
    ids = site.add(site.read(1, "7ABC123"), site.read(2, "7ABC123"))
    out = site.export(ids)
    planted = site.tmp / "planted"
    planted.mkdir()
    (planted / "crop.jpg").write_bytes(tiny_jpeg("6DEF456"))
    os.chmod(out / "reads", 0o700)
    os.symlink(planted, out / "reads" / "7")
    os.symlink(planted, out / "extra")
    problems = evidence.verify_package(out, site.key.public_key()).problems
    assert any(p.startswith("reads/7: is a symbolic link") for p in problems), problems
    assert any(p.startswith("extra: is a symbolic link") for p in problems), problems
    (out / "reads" / "7").unlink()
    (out / "extra").unlink()
    crop = out / f"reads/{ids[0]}/crop.jpg"
    os.chmod(crop.parent, 0o700)
    os.chmod(crop, 0o600)
    crop.unlink()
    crop.mkdir()
    capsys.readouterr()
    assert cli.main(["evidence", "verify", str(out)]) == 1  # no crash, FAIL lines
    text = capsys.readouterr().out
    assert f"FAIL  read {ids[0]}: crop.jpg unreadable (reads/{ids[0]}/crop.jpg: is a folder)" in text
    assert f"FAIL  reads/{ids[0]}/crop.jpg: missing" in text


# -- 5. access log and holds within the approval ------------------------------------------------------------
def test_access_log_extract_and_holds_redact_other_reads_and_plates(site):
    ids = site.add(site.read(1, "7ABC123"), site.read(2, "8XYZ999"))
    site.access.authorize(IVAN, "search", purpose="robbery, also 8XYZ999", case_no="C1", query={"plate": "8XYZ999"})
    site.access.authorize(IVAN, "view", purpose="curiosity", query={"read": ids[0]})  # no case
    site.access.authorize(BEA, "image", purpose="other matter", case_no="C9", query={"reads": [ids[1], ids[0]]})
    site.access.authorize(BEA, "view", purpose="other matter", case_no="C9", query={"read": ids[1]})
    out = site.export([ids[0]])
    retention.place_hold(site.store, site.access, IVAN, case_no="C1", reason="second car 8XYZ999", read_ids=[ids[1]])
    log = _json(out, "access-log.json")
    actions = [(e["action"], e["case_no"]) for e in log]
    assert ("view", "") in actions and ("image", "C9") in actions  # accesses to the read under no / another case
    assert ("view", "C9") not in actions  # a view of another read under another case
    assert "8XYZ999" not in (out / "access-log.json").read_text() + (out / "holds.json").read_text()
    search = next(e for e in log if e["action"] == "search")
    assert json.loads(search["query"])["plate"] == "[redacted]" and search["purpose"] == "robbery, also [redacted]"
    assert search["redacted"] == ["query.plate", "purpose"]
    image = next(e for e in log if e["action"] == "image")
    assert json.loads(image["query"])["reads"] == [ids[0]] and image["redacted"] == ["query.reads"]
    view = next(e for e in log if e["action"] == "view")
    assert "redacted" not in view and view["utc"] == evidence.iso_utc(view["t_ns"])
    assert [h["read_ids"] for h in _json(out, "holds.json")] == [[ids[0]]]
    check = evidence.verify_package(out, site.key.public_key())
    assert check.ok, check.problems


def test_verify_recomputes_unredacted_access_log_rows(site):
    ids = site.add(site.read(1, "7ABC123"))
    out = site.export(ids)
    log = _json(out, "access-log.json")
    fields = ("id", "t_ns", "user", "role", "action", "outcome", "purpose", "case_no", "query", "detail", "prev_hash")
    assert all(entry_hash(*(e[f] for f in fields)) == e["hash"] for e in log)  # docs/records.md formula
    hold = next(e for e in log if e["action"] == "hold")
    hold["user"] = "ada"
    _resign(out, site.key, {"access-log.json": (json.dumps(log) + "\n").encode()})
    assert (f"access-log.json: entry {hold['id']}: hash does not recompute (entry edited)"
            in evidence.verify_package(out, site.key.public_key()).problems)


# -- 6. for court: README, UTC, clock state, access-log head ----------------------------------------------
def test_readme_utc_times_clock_warning_and_log_head(site, capsys):
    payload = ReadPayload(plate="7ABC123", confidence=0.61, capture_time_ns=site.now + S, node_id="node-a",
                          site_id="main-st", camera_id="cam-1", crop_jpeg=tiny_jpeg("7ABC123"), seq=1,
                          clock_sync="unsynced", models={"ocr": "plate_ocr@1.0.0+bf8edfe26af7"}).to_wire()
    header = Header("read", "node-a", 1, site.now + S, key_id(site.node.key.public_key()), "hq0000000000000")
    hb, pb = cbor.dumps(header.to_wire()), cbor.dumps(payload)
    ids = site.add(Opened(header, hb, payload, pb, site.node.key.sign(signed_bytes(hb, pb))))
    out = site.export(ids, agency_name="Example County Sheriff")
    readme = (out / "README.txt").read_text()
    manifest = _json(out, "manifest.json")
    for text in ("Example County Sheriff", "Case:               C1", "Release request:    1", "ada",
                 "ivan (investigator)", manifest["created_utc"], "evidence verify", "--hq-key", "docs/records.md",
                 "UTC"):
        assert text in readme, text
    head_id, head_hash = manifest["access_log_head"].split(":")
    assert site.store.db.value("SELECT hash FROM access_log WHERE id=?", (int(head_id),)) == head_hash
    entry = _json(out, "reads.json")[0]
    assert entry["clock"] == "unsynced" and entry["models"] == {"ocr": "plate_ocr@1.0.0+bf8edfe26af7"}
    write_public_key(site.tmp / "hq.pub", site.key.public_key())
    capsys.readouterr()
    assert cli.main(["evidence", "verify", str(out), "--hq-key", str(site.tmp / "hq.pub")]) == 0  # a warning only
    text = capsys.readouterr().out
    assert f"WARN  read {ids[0]}: the node's clock was 'unsynced'" in text and "issued by        Example County" in text


def test_free_text_redacts_another_reads_plate_however_it_is_written(tmp_path):
    """A hold reason naming another case's plate as "XYZ 789" or "XYZ-789" left it in the package:
    only the unbroken spelling was redacted."""
    store = ReadStore(tmp_path / "hq.db")
    node = SyntheticNode.create("node-a", "main-st")
    now = time.time_ns()
    store.store([node.read(1, "XYZ789", now), node.read(2, "AB123", now)])
    redactor = evidence._Redactor(store, {2}, {"AB123"})
    text = "with XYZ 789 and XYZ-789 and xyz789 and XYZ\t789; AB 123 stays"
    assert redactor.text(text) == ("with [redacted] and [redacted] and [redacted] and [redacted]; AB 123 stays")
    store.close()
