"""Node-key provenance: the CA names the signing key in the enrolment certificate, rotations are
kept as signed requests, and an evidence package carries both so a verifier can follow each
read's key back to the CA, not only to HQ's registry."""
from __future__ import annotations

import base64
import dataclasses
import getpass
import hashlib
import datetime as dt
import json
import os
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from hq import cli, evidence, releases, retention
from hq.access import Access, Actor
from hq.store import ReadStore
from hq.synthetic import FakeClock, SyntheticNode, tiny_jpeg
from provisioning import enroll, hqsetup, local, pki, request
from transport import provenance
from transport.keys import key_id, write_public_key
from transport.registry import Registry

pytestmark = pytest.mark.unit

DAY = 86400 * 10**9
NOW = int(dt.datetime(2026, 9, 15, 12, tzinfo=dt.UTC).timestamp()) * 10**9
PW = "correct horse battery"
ADA, BEA, IVAN = Actor("ada", "administrator"), Actor("bea", "administrator"), Actor("ivan", "investigator")


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _enrolment_chain(ca: pki.CertPair, node_id: str, public: ed25519.Ed25519PublicKey) -> bytes:
    """What enroll.enroll keeps: the node certificate naming `public`, then the CA's."""
    cert = pki.sign_csr(ca, pki.make_csr(node_id, pki.new_key()), uris=[provenance.sign_key_uri(public)])
    return _pem(cert) + ca.cert.read_bytes()


# -- the proofs themselves ---------------------------------------------------------------------------


def test_certificate_proof_names_node_and_key_and_needs_the_ca(tmp_path: Path) -> None:
    ca = pki.create_ca(tmp_path / "ca")
    other_ca = pki.create_ca(tmp_path / "other", "Another CA")
    key, stranger = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    chain = _enrolment_chain(ca, "gate-1", key.public_key())
    ca_cert = pki.load_cert(ca.cert)
    assert provenance.certificate_problem(chain, ca_cert, "gate-1", key.public_key()) is None
    assert provenance.carried_ca(chain) == ca_cert
    assert "was not issued by the CA 'Another CA'" in provenance.certificate_problem(
        chain, pki.load_cert(other_ca.cert), "gate-1", key.public_key())
    assert "not node gate-2" in provenance.certificate_problem(chain, ca_cert, "gate-2", key.public_key())
    assert f"does not name signing key {key_id(stranger.public_key())}" in provenance.certificate_problem(
        chain, ca_cert, "gate-1", stranger.public_key())
    # a certificate without the URI (enrolled before the CA named keys) names no key
    bare = _pem(pki.sign_csr(ca, pki.make_csr("gate-1", pki.new_key())))
    assert "does not name signing key" in provenance.certificate_problem(bare, ca_cert, "gate-1", key.public_key())
    assert "not a PEM certificate chain" in provenance.certificate_problem(b"junk", ca_cert, "gate-1",
                                                                          key.public_key())


def test_rotation_proof_needs_both_keys_signatures(tmp_path: Path) -> None:
    old, new, eve = (ed25519.Ed25519PrivateKey.generate() for _ in range(3))
    made, _ = request.make_rotate("gate-1", new, old, actor="tech", host="pi")
    doc = request.dumps(made)
    assert provenance.rotation_problem(doc, "gate-1", new.public_key(), old.public_key()) is None
    assert provenance.rotation_old_key_id(doc) == key_id(old.public_key())
    assert "field node_id" in provenance.rotation_problem(doc, "gate-2", new.public_key(), old.public_key())
    assert "field old_key_id" in provenance.rotation_problem(doc, "gate-1", new.public_key(), eve.public_key())
    assert "field sign_pub" in provenance.rotation_problem(doc, "gate-1", eve.public_key(), old.public_key())
    # the old key's signature is what hands the node over: a request signed by another key fails
    forged, _ = request.make_rotate("gate-1", new, eve, actor="eve", host="x")
    forged["old_key_id"] = key_id(old.public_key())
    body = {k: v for k, v in forged.items() if k not in ("sig", "sig_old")}
    forged["sig"] = base64.b64encode(new.sign(provenance.request_signed_bytes(body))).decode()
    assert provenance.rotation_problem(request.dumps(forged), "gate-1", new.public_key(), old.public_key()) == \
        f"field sig_old: not signed by key {key_id(old.public_key())}"
    forged["sig"] = made["sig"]  # the new key's signature over other bytes
    assert provenance.rotation_problem(request.dumps(forged), "gate-1", new.public_key(), old.public_key()) == \
        f"field sig: not signed by key {key_id(new.public_key())}"


def test_enrolment_and_rotation_keep_their_proofs_in_the_registry(tmp_path: Path) -> None:
    """The real technician's path: the CA's certificate names the key, the registry keeps it."""
    hq = tmp_path / "hq"
    hqsetup.init_hq(hq, actor="alice", broker_names=["127.0.0.1"], broker_port=18883,
                    broker_user=getpass.getuser())
    local.provision_node(hq, tmp_path / "n1", "gate-1")
    registry = Registry(hq / "registry.db")
    first = registry.keys("gate-1")[0]
    [proof] = registry.proofs("gate-1")
    assert (proof.kind, proof.key_id) == ("certificate", first.key_id)
    ca = pki.load_cert(hqsetup.default_ca_dir(hq) / "ca.pem")
    assert provenance.certificate_problem(proof.document, ca, "gate-1", first.public) is None
    # the certificate the node uses for TLS is that same certificate
    assert x509.load_pem_x509_certificates(proof.document)[0] == pki.load_cert(hq / "nodes" / "gate-1" / "node.pem")
    registry.close()
    new_kid = local.rotate_node_key(hq, tmp_path / "n1")
    registry = Registry(hq / "registry.db")
    rotation = [p for p in registry.proofs("gate-1") if p.kind == "rotation"]
    keys = {k.key_id: k.public for k in registry.keys("gate-1")}
    registry.close()
    assert [p.key_id for p in rotation] == [new_kid]
    assert provenance.rotation_problem(rotation[0].document, "gate-1", keys[new_kid], first.public) is None
    assert rotation[0].document == (hq / "nodes" / "gate-1" / f"rotate-{new_kid}.json").read_bytes()


def test_a_registry_from_before_the_proofs_reads_as_none(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "registry.db"
    registry = Registry(path)
    registry.enroll("gate-1", "s", ed25519.Ed25519PrivateKey.generate().public_key(), actor="a")
    registry.close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE key_proofs")
    db.commit()
    db.close()
    old = Registry(path, read_only=True)
    assert old.proofs("gate-1") == []
    old.close()


# -- evidence packages ---------------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path):
    """An HQ store with node-a's reads: two signed with its enrolled key, one with its rotated key."""
    store = ReadStore(tmp_path / "hq.db")
    access = Access(store.db, clock=FakeClock(NOW),
                    hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    access.add_user(None, "ada", "administrator", PW, NOW + 400 * DAY)
    for name, role in (("bea", "administrator"), ("ivan", "investigator")):
        access.add_user(ADA, name, role, PW, NOW + 400 * DAY)
    ca = pki.create_ca(tmp_path / "ca", "County ALPR CA")
    node = SyntheticNode.create("node-a", "main-st")
    registry = Registry(tmp_path / "registry.db")
    registry.enroll("node-a", "main-st", node.key.public_key(), actor="installer",
                    certificate=_enrolment_chain(ca, "node-a", node.key.public_key()))
    rotated = dataclasses.replace(node, key=ed25519.Ed25519PrivateKey.generate())
    made, _ = request.make_rotate("node-a", rotated.key, node.key, actor="tech", host="pi")
    registry.add_key("node-a", rotated.key.public_key(), actor="ada", retire_old_after_s=None,
                     rotation_request=request.dumps(made))
    store.store([node.read(1, "7ABC123", NOW - 2 * DAY, crop=tiny_jpeg("7ABC123")),
                 node.read(2, "8XYZ999", NOW - DAY, crop=tiny_jpeg("8XYZ999")),
                 rotated.read(3, "5DEF456", NOW - DAY // 2, crop=tiny_jpeg("5DEF456"))])
    ids = [r.id for r in store.reads_after(0)]
    yield store, access, registry, ids, ca
    registry.close()
    store.close()


def _export(site, tmp_path: Path, read_ids: list[int]) -> tuple[Path, ed25519.Ed25519PrivateKey]:
    store, access, registry, _ids, _ca = site
    key = ed25519.Ed25519PrivateKey.generate()
    retention.place_hold(store, access, IVAN, case_no="C1", reason="robbery", read_ids=read_ids)
    req = releases.request(store, access, IVAN, case_no="C1", agency="County DA", requester="DDA Smith",
                           purpose="prosecution of robbery")
    releases.review(store, access, ADA, req.id, approve=True, note="ok")
    out = tmp_path / "pkg"
    evidence.export(store, access, IVAN, case_no="C1", release_id=req.id, out=out, sign_key=key, registry=registry)
    return out, key


def test_package_keys_follow_back_to_the_ca(site, tmp_path: Path) -> None:
    _store, _access, registry, ids, ca = site
    out, key = _export(site, tmp_path, ids)
    kids = [k.key_id for k in reversed(registry.keys("node-a"))]  # enrolled, then rotated
    assert (out / "nodes" / "node-a" / f"{kids[0]}.certificate.pem").is_file()
    assert (out / "nodes" / "node-a" / f"{kids[1]}.rotation.json").is_file()
    check = evidence.verify_package(out, key.public_key(), trusted_ca=pki.load_cert(ca.cert))
    assert check.ok, check.problems
    assert (check.summary["node_keys"], check.summary["node_keys_attested"]) == (2, 2)
    assert check.summary["ca"] == "CA 'County ALPR CA' (--ca-cert)"
    assert not [w for w in check.warnings if "node key" in w or "proof" in w]
    # Without the CA certificate the proofs are checked against the one they carry, which proves nothing.
    check = evidence.verify_package(out, key.public_key())
    assert check.ok and check.summary["node_keys_attested"] == 0
    assert any("the CA certificate the package carries (CA 'County ALPR CA')" in w for w in check.warnings)


def test_a_package_from_another_ca_or_with_a_broken_rotation_fails(site, tmp_path: Path) -> None:
    _store, _access, registry, ids, ca = site
    out, key = _export(site, tmp_path, ids)
    impostor = pki.load_cert(pki.create_ca(tmp_path / "impostor", "County ALPR CA").cert)
    kids = [k.key_id for k in reversed(registry.keys("node-a"))]
    problems = evidence.verify_package(out, key.public_key(), trusted_ca=impostor).problems
    assert f"nodes/node-a/{kids[0]}.certificate.pem: certificate" in " ".join(problems)
    assert "was not issued by the CA 'County ALPR CA'" in " ".join(problems)
    # HQ's registry adding a key the node never handed over: the rotation request does not hold.
    # (HQ re-signs the manifest here, as an HQ with a tampered registry would.)
    rel = f"nodes/node-a/{kids[1]}.rotation.json"
    doc = json.loads((out / rel).read_bytes())
    doc["host"] = "elsewhere"
    os.chmod(out / rel, 0o600)
    (out / rel).write_bytes(request.dumps(doc))
    manifest = json.loads((out / "manifest.json").read_bytes())
    manifest["files"][rel] = hashlib.sha256((out / rel).read_bytes()).hexdigest()
    data = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    for name, content in (("manifest.json", data), ("manifest.sig", (key.sign(data).hex() + "\n").encode())):
        os.chmod(out / name, 0o600)
        (out / name).write_bytes(content)
    check = evidence.verify_package(out, key.public_key(), trusted_ca=pki.load_cert(ca.cert))
    assert f"{rel}: field sig: not signed by key {kids[1]}" in check.problems, check.problems
    assert check.summary["node_keys_attested"] == 1


def test_a_node_enrolled_before_proofs_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    store = ReadStore(tmp_path / "hq.db")
    access = Access(store.db, clock=FakeClock(NOW), hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    access.add_user(None, "ada", "administrator", PW, NOW + 400 * DAY)
    access.add_user(ADA, "ivan", "investigator", PW, NOW + 400 * DAY)
    node = SyntheticNode.create("node-b", "elm-st")
    registry = Registry(tmp_path / "registry.db")
    registry.enroll("node-b", "elm-st", node.key.public_key(), actor="installer")  # no certificate kept
    store.store([node.read(1, "7ABC123", NOW - DAY, crop=tiny_jpeg("x"))])
    ids = [r.id for r in store.reads_after(0)]
    try:
        out, key = _export((store, access, registry, ids, None), tmp_path, ids)
        ca = pki.load_cert(pki.create_ca(tmp_path / "ca").cert)
        check = evidence.verify_package(out, key.public_key(), trusted_ca=ca)
        assert check.ok, check.problems
        assert check.summary["node_keys_attested"] == 0
        assert any(f"node node-b: key {key_id(node.key.public_key())} has no proof in the package" in w
                   for w in check.warnings)
    finally:
        registry.close()
        store.close()


def test_verify_command_takes_the_ca_certificate(site, tmp_path: Path, capsys) -> None:
    _store, _access, _registry, ids, ca = site
    out, key = _export(site, tmp_path, ids)
    write_public_key(tmp_path / "hq-sign.pub", key.public_key())
    argv = ["evidence", "verify", str(out), "--hq-key", str(tmp_path / "hq-sign.pub")]
    assert cli.main([*argv, "--ca-cert", str(ca.cert)]) == 0
    assert "node keys        2 of 2 that signed these reads attested by CA 'County ALPR CA' (--ca-cert)" in \
        capsys.readouterr().out
    (tmp_path / "bad.pem").write_text("not a certificate")
    assert cli.main([*argv, "--ca-cert", str(tmp_path / "bad.pem")]) == 2
    assert f"--ca-cert {tmp_path / 'bad.pem'}: not a PEM certificate" in capsys.readouterr().err
    readme = (out / "README.txt").read_text()
    assert "--ca-cert ca.pem" in readme


# -- a tampered package gives FAIL lines, never an exception ---------------------------------------------


def _overwrite(path: Path, data: bytes) -> None:
    os.chmod(path, 0o600)
    path.write_bytes(data)


def _proof(out: Path, suffix: str) -> Path:
    [found] = [p for p in (out / "nodes" / "node-a").iterdir() if p.name.endswith(suffix)]
    return found


def _cli_fails_on_node_a(out: Path, key: ed25519.Ed25519PrivateKey, tmp_path: Path, capsys) -> None:
    """`alpr-hq evidence verify` prints a FAIL line about node-a's proofs and exits 1."""
    write_public_key(tmp_path / "hq.pub", key.public_key())
    assert cli.main(["evidence", "verify", str(out), "--hq-key", str(tmp_path / "hq.pub")]) == 1
    assert "FAIL  nodes/node-a/" in capsys.readouterr().out


def test_a_malformed_carried_ca_is_a_failure_not_a_crash(site, tmp_path: Path, capsys) -> None:
    out, key = _export(site, tmp_path, site[3])
    cert_file = _proof(out, ".certificate.pem")
    leaf, ca = x509.load_pem_x509_certificates(cert_file.read_bytes())
    # one byte of the carried CA's CN made invalid UTF-8: cryptography raises only when the name is read
    der = ca.public_bytes(serialization.Encoding.DER).replace(b"County ALPR CA", b"County ALPR C\xff")
    body = base64.encodebytes(der).replace(b"\n", b"")
    pem = b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(body[i:i + 64] for i in range(0, len(body), 64)) + \
        b"\n-----END CERTIFICATE-----\n"
    _overwrite(cert_file, _pem(leaf) + pem)
    problems = evidence.verify_package(out, key.public_key()).problems
    assert any(p.startswith(f"{cert_file.relative_to(out).as_posix()}: certificate") for p in problems), problems
    _cli_fails_on_node_a(out, key, tmp_path, capsys)


def test_a_deeply_nested_json_proof_is_a_failure_not_a_crash(site, tmp_path: Path) -> None:
    out, key = _export(site, tmp_path, site[3])
    rotation = _proof(out, ".rotation.json")
    _overwrite(rotation, b"[" * 200_000 + b"]" * 200_000)
    _overwrite(out / "nodes" / "node-a.json", b"[" * 200_000 + b"]" * 200_000)
    problems = evidence.verify_package(out, key.public_key()).problems
    assert any(p.startswith("nodes/node-a.json: not valid JSON") for p in problems), problems


def test_a_key_without_proof_on_a_node_enrolled_with_one_fails(site, tmp_path: Path) -> None:
    """A key the registry gained without the node handing it over (no rotation request), on a
    node whose enrolment the CA proves: what --ca-cert is for, so a failure, not a warning."""
    store, _access, registry, _ids, ca = site
    forged = ed25519.Ed25519PrivateKey.generate()
    registry.add_key("node-a", forged.public_key(), actor="mallory")
    fake = dataclasses.replace(SyntheticNode.create("node-a", "main-st"), key=forged)
    store.store([fake.read(9, "FAKE123", NOW - DAY // 4, crop=tiny_jpeg("FAKE123"))])
    out, key = _export(site, tmp_path, [r.id for r in store.reads_after(0)])
    check = evidence.verify_package(out, key.public_key(), trusted_ca=pki.load_cert(ca.cert))
    assert not check.ok
    assert any(p.startswith(f"nodes/node-a/: key {key_id(forged.public_key())} has no proof in the package, though "
                            "the node's enrolment has one") for p in check.problems), check.problems
    assert (check.summary["node_keys"], check.summary["node_keys_attested"]) == (3, 2)


def test_a_lone_surrogate_in_a_rotation_request_is_a_failure_not_a_crash(site, tmp_path: Path, capsys) -> None:
    out, key = _export(site, tmp_path, site[3])
    rotation = _proof(out, ".rotation.json")
    doc = json.loads(rotation.read_bytes())
    doc["host"] = "\ud800"  # valid JSON (written as the escape), not encodable as UTF-8
    _overwrite(rotation, json.dumps(doc).encode())
    problems = evidence.verify_package(out, key.public_key(), trusted_ca=pki.load_cert(site[4].cert)).problems
    assert f"{rotation.relative_to(out).as_posix()}: fields node_id, sign_pub, old_key_id, created, actor, host: " \
        "not encodable as UTF-8 text" in problems
    with pytest.raises(request.BadRequest, match="a field is not UTF-8 text"):
        request.loads(json.dumps(doc).encode(), rotation, request.ROTATE)
    _cli_fails_on_node_a(out, key, tmp_path, capsys)


def test_a_duplicate_extension_in_a_carried_chain_is_a_failure_not_a_crash(site, tmp_path: Path) -> None:
    """cryptography raises DuplicateExtension (not a ValueError) when the extensions are first read."""
    out, key = _export(site, tmp_path, site[3])
    cert_file = _proof(out, ".certificate.pem")
    ca_key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "County ALPR CA")])
    node_name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "node-a")])
    now = dt.datetime.now(dt.UTC)

    def build(subject: x509.Name, public, extensions: list) -> x509.Certificate:
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(name).public_key(public).serial_number(7)
             .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1)))
        for ext in extensions:
            b = b.add_extension(ext, critical=False)
        return b.sign(ca_key, None)

    enrolled = site[2].keys("node-a")[-1].public
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(provenance.sign_key_uri(enrolled))])
    twin = x509.UnrecognizedExtension(x509.ObjectIdentifier("2.5.29.99"), san.public_bytes())
    leaf = build(node_name, pki.new_key().public_key(), [san, twin])
    # rename the twin's OID to subjectAltName's and sign again: two subjectAltName extensions
    tbs = leaf.tbs_certificate_bytes.replace(bytes.fromhex("0603551d63"), bytes.fromhex("0603551d11"))
    der = leaf.public_bytes(serialization.Encoding.DER).replace(leaf.tbs_certificate_bytes, tbs) \
        .replace(leaf.signature, ca_key.sign(tbs))
    doubled = x509.load_der_x509_certificate(der)
    _overwrite(cert_file, _pem(doubled) + _pem(build(name, ca_key.public_key(), [])))
    problems = evidence.verify_package(out, key.public_key()).problems
    assert any("certificate 7 is malformed (Duplicate 2.5.29.17 extension" in p for p in problems), problems


def test_a_deeply_nested_manifest_is_a_failure_not_a_crash(site, tmp_path: Path) -> None:
    out, key = _export(site, tmp_path, site[3])
    _overwrite(out / "manifest.json", b"[" * 200_000 + b"]" * 200_000)
    check = evidence.verify_package(out, key.public_key())
    assert not check.intact and "not an evidence package: manifest.json" in check.problems[-1]
