"""Provisioning without a broker: ca init, keygen, enroll, bundle, install, rotation, revocation, audit."""
from __future__ import annotations

import base64
import datetime as dt
import getpass
import json
import stat
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from provisioning import bundle as bundle_format
from provisioning import cli, enroll, hqsetup, local, nodeside, pki, request
from provisioning import state as hq_state
from provisioning.authority import Authority
from provisioning.errors import BadBundle, BadRequest, ProvisioningError, StateError
from transport import cbor, envelope, provenance
from transport.errors import EnvelopeError
from transport.keys import key_id, load_private_key
from transport.registry import Registry

pytestmark = pytest.mark.unit
ME = getpass.getuser()
# what a technician adds for the site (the bundle decides only [node] and [broker])
LOCAL = '[pipeline]\nmode = "continuous"\n'
# the real default, read before the guard below moves it
REAL_DEFAULT_CONFIG = nodeside.DEFAULT_CONFIG


@pytest.fixture(autouse=True)
def _never_write_etc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`node install`'s default is /etc/alpr-node/node.toml: tests (often run as root) write a copy instead."""
    fake = tmp_path / "etc" / "alpr-node" / "node.toml"
    monkeypatch.setattr(nodeside, "DEFAULT_CONFIG", fake)
    return fake


@pytest.fixture
def hq(tmp_path: Path) -> Path:
    hq_dir = tmp_path / "hq"
    hqsetup.init_hq(hq_dir, actor="alice", broker_names=["127.0.0.1"], broker_port=18883, broker_user=ME,
                    workers=2)
    return hq_dir


def keygen_enroll(hq: Path, data: Path, node_id: str, **enroll_kw):
    made = nodeside.keygen(data, node_id, actor="bob", hq_key_id=local.hq_key_id(hq))
    enroll.enroll(hq, made.request, site="north", actor="alice", **enroll_kw)
    return made


# -- HQ trust anchors ---------------------------------------------------------------------
def test_ca_init_puts_files_where_hq_config_and_keyring_look(hq: Path) -> None:
    from hq import config as hq_config
    from hq.keyring import load_hpke_keys, load_sign_key

    cfg = hq_config.load(hq / "hq.toml")
    assert cfg.hq.data_dir == hq.resolve() and cfg.broker.client_id == "hq-ingest-1"
    for worker in ("hq-ingest-1", "hq-ingest-2"):
        assert cfg.path(None, f"tls/{worker}.pem").exists() and cfg.path(None, f"tls/{worker}.key").exists()
    assert cfg.path(cfg.broker.ca, "tls/ca.pem").exists()
    st = hq_state.load(hq)
    assert list(load_hpke_keys(hq / "keys")) == [st.hpke_current]
    load_sign_key(hq / "keys")
    for key in [*(hq / "keys").glob("*.key"), *(hq / "tls").glob("*.key"), st.ca_dir / "ca.key"]:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    # the offline CA lives outside HQ's data folder, and its key is nowhere under it
    assert hq.resolve() not in st.ca_dir.parents and not list(hq.rglob("ca.key"))
    conf = (hq / "broker" / "mosquitto.conf").read_text()
    assert f"crlfile {hq.resolve() / 'broker' / 'crl.pem'}" in conf
    assert "require_certificate true" in conf and "use_identity_as_username true" in conf
    assert conf.index("use_username_as_clientid true") > conf.index("listener 18883")
    acl = (hq / "broker" / "acl").read_text()
    assert "user hq-ingest-2" in acl and "pattern write alpr/v1/node/%u/read" in acl
    ca = x509.load_pem_x509_certificate((st.ca_dir / "ca.pem").read_bytes())
    crl = x509.load_pem_x509_crl((hq / "broker" / "crl.pem").read_bytes())
    assert crl.is_signature_valid(ca.public_key()) and len(crl) == 0
    server = x509.load_pem_x509_certificate((hq / "broker" / "server.pem").read_bytes())
    assert server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.IPAddress)[0].compressed == "127.0.0.1"


def test_ca_init_refuses_to_run_twice_or_put_the_ca_inside_hq(hq: Path, tmp_path: Path) -> None:
    with pytest.raises(StateError, match="provisioning.toml: HQ is already initialised"):
        hqsetup.init_hq(hq, actor="alice")
    with pytest.raises(ProvisioningError, match="outside HQ's data folder"):
        hqsetup.init_hq(tmp_path / "hq2", actor="alice", ca_dir=tmp_path / "hq2" / "ca")


def test_issue_hq_worker_and_reserved_names(hq: Path) -> None:
    cert = hqsetup.issue_worker(hq, "hq-ingest-3", actor="alice")
    assert cert == hq.resolve() / "tls" / "hq-ingest-3.pem"
    assert "user hq-ingest-3" in (hq / "broker" / "acl").read_text()
    with pytest.raises(ProvisioningError, match="must start with 'hq-'"):
        hqsetup.issue_worker(hq, "gate-9", actor="alice")


def test_rotate_hpke_keeps_old_keys_and_bundles_carry_the_new_one(hq: Path, tmp_path: Path) -> None:
    from hq.keyring import load_hpke_keys
    node = local.provision_node(hq, tmp_path / "n1", "gate-1", actor="bob", extra_toml=LOCAL)
    old = hq_state.load(hq).hpke_current
    new, kept = hqsetup.rotate_hpke(hq, actor="alice")
    assert new != old and set(kept) == {old, new} and set(load_hpke_keys(hq / "keys")) == {old, new}
    nodeside.install(enroll.make_bundle(hq, "gate-1", actor="alice"), node.data_dir, actor="bob")
    from node import config as node_config
    from node.identity import Identity
    ident = Identity.load(node_config.load(node.config))
    assert key_id(ident.hq_hpke) == new
    with pytest.raises(ProvisioningError, match="is the current one"):
        hqsetup.retire_hpke(hq, new, actor="alice")
    hqsetup.retire_hpke(hq, old, actor="alice")
    assert set(load_hpke_keys(hq / "keys")) == {new}


# -- the node's path ----------------------------------------------------------------------
def test_full_flow_makes_a_node_config_that_alpr_node_can_load(hq: Path, tmp_path: Path) -> None:
    from node import config as node_config
    from node.identity import Identity
    from node.runtime import broker_settings

    data = tmp_path / "n1"
    made = nodeside.keygen(data, "gate-1", actor="bob", hq_key_id=local.hq_key_id(hq)[:16])
    for rel in (nodeside.SIGN_KEY, nodeside.TLS_KEY):
        assert stat.S_IMODE((data / rel).stat().st_mode) == 0o600
    req_text = made.request.read_text()
    assert "PRIVATE" not in req_text and json.loads(req_text)["actor"] == "bob"
    done = enroll.enroll(hq, made.request, site="north", actor="alice", camera="cam2", lane="in",
                         expect_fingerprint=made.fingerprint)
    assert done.fingerprint == made.fingerprint and done.record.enrolled_by == "alice"
    out = enroll.make_bundle(hq, "gate-1", actor="alice", out=tmp_path / "usb" / "gate-1.alprbundle")
    result = nodeside.install(out, data, actor="bob", extra_toml=LOCAL)
    cfg = node_config.load(result.config)
    assert (cfg.node.id, cfg.node.site, cfg.node.camera, cfg.node.lane) == ("gate-1", "north", "cam2", "in")
    assert (cfg.broker.host, cfg.broker.port) == ("127.0.0.1", 18883)
    settings = broker_settings(cfg)
    for path in (settings.ca_file, settings.cert_file, settings.key_file):
        assert path.exists(), path
    cert = x509.load_pem_x509_certificate(settings.cert_file.read_bytes())
    assert pki.common_name(cert.subject) == "gate-1"
    ident = Identity.load(cfg)
    assert key_id(ident.sign_key.public_key()) == made.sign_key_id
    # HQ can open what this node seals
    from hq.keyring import load_hpke_keys
    registry = Registry(hq / "registry.db")
    try:
        msg = envelope.seal({"x": 1, "node": "gate-1", "seq": 1, "kind": "read"}, kind="read", node_id="gate-1",
                            seq=1, time_ns=time.time_ns(), signing_key=ident.sign_key, recipient=ident.hq_hpke)
        opened = envelope.open_envelope(msg, signer_for=registry.signer_lookup(),
                                        decryption_keys=load_hpke_keys(hq / "keys"))
        assert opened.payload["x"] == 1
        actions = [(a, action, n) for _, a, action, n, _ in registry.audit_log()]
    finally:
        registry.close()
    assert ("alice", "ca-init", None) in actions and ("alice", "enroll", "gate-1") in actions
    assert ("alice", "bundle", "gate-1") in actions
    node_log = [json.loads(line) for line in (data / nodeside.AUDIT).read_text().splitlines()]
    assert [(e["actor"], e["action"]) for e in node_log] == [("bob", "keygen"), ("bob", "install")]


def test_keygen_refuses_reserved_ids_and_existing_keys(hq: Path, tmp_path: Path) -> None:
    with pytest.raises(ProvisioningError, match="reserved for HQ"):
        nodeside.keygen(tmp_path / "x", "hq-ingest-1", actor="bob")
    nodeside.keygen(tmp_path / "n1", "gate-1", actor="bob")
    with pytest.raises(StateError, match="node-sign.key: keys exist already"):
        nodeside.keygen(tmp_path / "n1", "gate-1", actor="bob")
    with pytest.raises(BadBundle, match="at least 16 hex digits"):
        nodeside.keygen(tmp_path / "n2", "gate-2", actor="bob", hq_key_id="abc")


def test_enroll_refuses_altered_swapped_duplicate_and_mismatched_requests(hq: Path, tmp_path: Path) -> None:
    made = nodeside.keygen(tmp_path / "n1", "gate-1", actor="bob")
    raw = json.loads(made.request.read_text())
    altered = tmp_path / "altered.json"
    altered.write_text(json.dumps(dict(raw, node_id="gate-2")))
    with pytest.raises(BadRequest, match="altered.json: field sig"):
        enroll.enroll(hq, altered, site="north", actor="alice")
    with pytest.raises(BadRequest, match="fingerprint .* is not the 0000-0000-0000-0000"):
        enroll.enroll(hq, made.request, site="north", actor="alice", expect_fingerprint="0000-0000-0000-0000")
    missing = dict(raw)
    del missing["csr"]
    (tmp_path / "missing.json").write_text(json.dumps(missing))
    with pytest.raises(BadRequest, match="missing.json: field csr: missing"):
        enroll.enroll(hq, tmp_path / "missing.json", site="north", actor="alice")
    with pytest.raises(BadRequest, match="nope.json: request file not found"):
        enroll.enroll(hq, tmp_path / "nope.json", site="north", actor="alice")
    # a CSR for another CN, properly signed by the node's keys: still refused
    sign = ed25519.Ed25519PrivateKey.generate()
    forged, _ = request.make_enroll("gate-5", sign, pki.make_csr("gate-1", pki.new_key()), actor="eve", host="x")
    request.write(tmp_path / "cn.json", forged)
    with pytest.raises(BadRequest, match="field csr: CN 'gate-1' is not the node id 'gate-5'"):
        enroll.enroll(hq, tmp_path / "cn.json", site="north", actor="alice")
    first = enroll.enroll(hq, made.request, site="north", actor="alice")
    # the same request again (a lost terminal, a rerun): the first enrolment, nothing new signed
    again = enroll.enroll(hq, made.request, site="north", actor="alice")
    assert (again.cert_serial, again.fingerprint) == (first.cert_serial, first.fingerprint)
    assert [c.serial for c in Authority(hq_state.load(hq).ca_dir).issued()
            if c.common_name == "gate-1"] == [int(first.cert_serial, 16)]
    # another Pi's request for the same id is still refused
    other = nodeside.keygen(tmp_path / "n3", "gate-1", actor="eve")
    with pytest.raises(StateError, match=f"gate-1 is already enrolled .* from another request than "
                                         f"{other.fingerprint}"):
        enroll.enroll(hq, other.request, site="north", actor="alice")


# -- bundle checks on the node ------------------------------------------------------------
def test_tampered_bundle_is_refused(hq: Path, tmp_path: Path) -> None:
    data = tmp_path / "n1"
    keygen_enroll(hq, data, "gate-1")
    good = enroll.make_bundle(hq, "gate-1", actor="alice")
    magic, hq_pub, message = cbor.loads(good.read_bytes())
    body_bytes, sig = cbor.loads(message)
    body = cbor.loads(body_bytes)
    body["broker_host"] = "evil.example"
    bad = tmp_path / "tampered.alprbundle"
    bad.write_bytes(cbor.dumps([magic, hq_pub, cbor.dumps([cbor.dumps(body), sig])]))
    with pytest.raises(BadBundle, match="tampered.alprbundle: signature check failed"):
        nodeside.install(bad, data, actor="bob")
    garbage = tmp_path / "garbage.alprbundle"
    garbage.write_bytes(good.read_bytes()[:-7])
    with pytest.raises(BadBundle, match="garbage.alprbundle: not a provisioning bundle"):
        nodeside.install(garbage, data, actor="bob")
    # a bundle signed by another key (someone else's "HQ") fails the pin
    other = bundle_format.build(node="gate-1", site="x", camera="c", lane="", broker_host="evil", broker_port=1,
                                node_sign_pub=body["node_sign_pub"], cert=body["cert"], ca=body["ca"],
                                hq_hpke_pub=body["hq_hpke_pub"], issued_by="eve",
                                sign_key=ed25519.Ed25519PrivateKey.generate(), valid_s=3600)
    (tmp_path / "other.alprbundle").write_bytes(other)
    with pytest.raises(BadBundle, match="other.alprbundle: signed by HQ key .* not the pinned"):
        nodeside.install(tmp_path / "other.alprbundle", data, actor="bob")
    assert not (data / "node.toml").exists() and not (data / nodeside.TLS_CERT).exists()


def test_bundle_for_another_node_or_another_key_is_refused(hq: Path, tmp_path: Path) -> None:
    keygen_enroll(hq, tmp_path / "n1", "gate-1")
    keygen_enroll(hq, tmp_path / "n2", "gate-2")
    for_2 = enroll.make_bundle(hq, "gate-2", actor="alice")
    with pytest.raises(BadBundle, match="field node: bundle is for node 'gate-2', this node is 'gate-1'"):
        nodeside.install(for_2, tmp_path / "n1", actor="bob")
    # a second Pi claiming gate-1's id (its own keys) cannot use gate-1's bundle
    nodeside.keygen(tmp_path / "impostor", "gate-1", actor="eve", hq_key_id=local.hq_key_id(hq))
    for_1 = enroll.make_bundle(hq, "gate-1", actor="alice")
    with pytest.raises(BadBundle, match="field node_sign_pub: .* not this node's signing key"):
        nodeside.install(for_1, tmp_path / "impostor", actor="eve")


def test_expired_bundle_and_expired_certificate_are_refused(hq: Path, tmp_path: Path) -> None:
    keygen_enroll(hq, tmp_path / "n1", "gate-1")
    out = enroll.make_bundle(hq, "gate-1", actor="alice", valid_hours=1)
    with pytest.raises(BadBundle, match="field expires: the bundle expired at"):
        nodeside.install(out, tmp_path / "n1", actor="bob", now_ns=time.time_ns() + 2 * 3600 * 10**9)
    # a certificate that expired yesterday, in a bundle made while it was still valid
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    keygen_enroll(hq, tmp_path / "n2", "gate-2", cert_days=1, not_before=past)
    with pytest.raises(StateError, match="node.pem: certificate expired"):
        enroll.make_bundle(hq, "gate-2", actor="alice")
    old = enroll.make_bundle(hq, "gate-2", actor="alice", now_ns=int((past.timestamp() + 3600) * 1e9),
                             valid_hours=24 * 30)
    with pytest.raises(BadBundle, match="field cert: certificate expired on"):
        nodeside.install(old, tmp_path / "n2", actor="bob")


def test_missing_files_are_named(hq: Path, tmp_path: Path) -> None:
    with pytest.raises(StateError, match=r"provisioning/node.json: missing; run alpr-provision node keygen"):
        nodeside.install(tmp_path / "b.alprbundle", tmp_path / "blank", actor="bob")
    keygen_enroll(hq, tmp_path / "n1", "gate-1")
    with pytest.raises(BadBundle, match="nope.alprbundle: bundle file not found"):
        nodeside.install(tmp_path / "nope.alprbundle", tmp_path / "n1", actor="bob")
    out = enroll.make_bundle(hq, "gate-1", actor="alice")
    (tmp_path / "n1" / nodeside.TLS_KEY).unlink()
    with pytest.raises(StateError, match=r"tls/node.key: missing"):
        nodeside.install(out, tmp_path / "n1", actor="bob")
    (hq / "nodes" / "gate-1" / "node.pem").unlink()
    with pytest.raises(ProvisioningError, match=r"node.pem: cannot read certificate"):
        enroll.make_bundle(hq, "gate-1", actor="alice")
    with pytest.raises(StateError, match=r"provisioning.toml: not found; run alpr-provision ca init"):
        enroll.make_bundle(tmp_path / "nohq", "gate-1", actor="alice")


def test_trust_anchor_needs_a_pin_then_sticks_to_the_installed_key(hq: Path, tmp_path: Path) -> None:
    data = tmp_path / "n1"
    made = nodeside.keygen(data, "gate-1", actor="bob")  # nothing pinned at keygen
    enroll.enroll(hq, made.request, site="north", actor="alice")
    out = enroll.make_bundle(hq, "gate-1", actor="alice")
    with pytest.raises(BadBundle, match="no trusted HQ key on this node yet: pass --hq-key-id"):
        nodeside.install(out, data, actor="bob")
    with pytest.raises(BadBundle, match="not the pinned 0123456789abcdef"):
        nodeside.install(out, data, actor="bob", hq_key_id="0123 4567 89ab cdef")
    first = nodeside.install(out, data, actor="bob", hq_key_id=local.hq_key_id(hq)[:16])
    # later bundles need no pin: the installed HQ key is the anchor; older bundles are refused
    second = enroll.make_bundle(hq, "gate-1", actor="alice", out=tmp_path / "second.alprbundle")
    nodeside.install(second, data, actor="bob")
    with pytest.raises(BadBundle, match="older than the bundle installed already"):
        nodeside.install(out, data, actor="bob")
    assert first.hq_key_id == local.hq_key_id(hq)[:16]


def test_install_keeps_the_technicians_local_sections(hq: Path, tmp_path: Path) -> None:
    from node import config as node_config
    node = local.provision_node(hq, tmp_path / "n1", "gate-1",
                                extra_toml='[broker]\nbackoff_max_s = 2\n\n[source]\nkind = "synthetic"\n\n'
                                           '[outbox]\nquota_mb = 64\n')
    nodeside.install(enroll.make_bundle(hq, "gate-1", actor="alice"), node.data_dir, actor="bob")
    cfg = node_config.load(node.config)
    assert cfg.source.kind == "synthetic" and cfg.outbox.quota_mb == 64
    assert (cfg.broker.host, cfg.broker.port, cfg.broker.backoff_max_s) == ("127.0.0.1", 18883, 2)
    for extra, error in (('[broker]\nhost = "evil"\n', "--extra: broker.host come from the bundle"),
                         ('[keys]\nsign_key = "/tmp/k"\n', "--extra: keys come from the bundle"),
                         ("[source\n", "--extra: not valid TOML")):
        with pytest.raises(ProvisioningError, match=error):
            nodeside.install(enroll.make_bundle(hq, "gate-1", actor="alice"), node.data_dir, actor="bob",
                             extra_toml=extra)


# -- rotation and revocation --------------------------------------------------------------
def _header(sign_key: ed25519.Ed25519PrivateKey, t_ns: int) -> envelope.Header:
    """The header of a read this key made at `t_ns` (what signer_lookup judges)."""
    msg = envelope.seal({"node": "gate-1", "seq": 1, "kind": "read"}, kind="read", node_id="gate-1", seq=1,
                        time_ns=t_ns, signing_key=sign_key, recipient=x25519.X25519PrivateKey.generate().public_key())
    return envelope.read_header(msg)[0]


def test_rotate_key_keeps_old_key_for_messages_made_before(hq: Path, tmp_path: Path) -> None:
    node = local.provision_node(hq, tmp_path / "n1", "gate-1")
    old = load_private_key(node.data_dir / nodeside.SIGN_KEY, ed25519.Ed25519PrivateKey)
    before = time.time_ns()
    new_kid = local.rotate_node_key(hq, node.data_dir, grace_hours=0)
    after = time.time_ns() + 1
    new = load_private_key(node.data_dir / nodeside.SIGN_KEY, ed25519.Ed25519PrivateKey)
    assert key_id(new.public_key()) == new_kid != key_id(old.public_key())
    assert not (node.data_dir / nodeside.NEXT_SIGN_KEY).exists()
    registry = Registry(hq / "registry.db")
    try:
        lookup = registry.signer_lookup()
        assert registry.keys("gate-1")[0].key_id == new_kid
        assert key_id(lookup(_header(old, before))) == key_id(old.public_key())  # queued read: still valid
        with pytest.raises(EnvelopeError, match="retired"):
            lookup(_header(old, after))
        assert key_id(lookup(_header(new, after))) == new_kid
    finally:
        registry.close()


def test_reads_the_old_key_sealed_are_valid_whenever_they_arrive(hq: Path, tmp_path: Path) -> None:
    """A node that was offline for days after a rotation still holds reads it sealed with the old
    key, and cannot sign them again (the signature is inside the ciphertext): HQ must take them.
    Revocation, not rotation, is what bounds a stolen key's backdated reads."""
    node = local.provision_node(hq, tmp_path / "n1", "gate-1")
    old = load_private_key(node.data_dir / nodeside.SIGN_KEY, ed25519.Ed25519PrivateKey)
    sealed = time.time_ns()
    local.rotate_node_key(hq, node.data_dir, grace_hours=0)
    registry = Registry(hq / "registry.db")
    try:
        lookup = registry.signer_lookup(grace_s=1e-9)  # the revocation grace is long over
        time.sleep(0.01)
        assert key_id(lookup(_header(old, sealed))) == key_id(old.public_key())
    finally:
        registry.close()


def test_rotation_request_must_be_signed_by_the_enrolled_key(hq: Path, tmp_path: Path) -> None:
    local.provision_node(hq, tmp_path / "n1", "gate-1")
    registry = Registry(hq / "registry.db")
    enrolled_kid = registry.keys("gate-1")[0].key_id
    registry.close()
    new, stranger = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    forged, _ = request.make_rotate("gate-1", new, stranger, actor="eve", host="x")
    # claim the enrolled key, sign everything else correctly: only sig_old is wrong
    forged["old_key_id"] = enrolled_kid
    body = {k: v for k, v in forged.items() if k not in ("sig", "sig_old")}
    signed = provenance.request_signed_bytes(body)
    forged["sig"] = base64.b64encode(new.sign(signed)).decode()
    forged["sig_old"] = base64.b64encode(stranger.sign(signed)).decode()
    request.write(tmp_path / "forged.json", forged)
    with pytest.raises(BadRequest, match=f"forged.json: field sig_old: not signed by the node's enrolled key {enrolled_kid}"):
        enroll.add_key(hq, tmp_path / "forged.json", actor="alice")
    registry = Registry(hq / "registry.db")
    assert [k.key_id for k in registry.keys("gate-1")] == [enrolled_kid]
    registry.close()


def test_revoke_updates_registry_crl_and_runs_the_reload_command(hq: Path, tmp_path: Path) -> None:
    local.provision_node(hq, tmp_path / "n1", "gate-1")
    marker = tmp_path / "reloaded"
    st = hq_state.load(hq)
    st.with_(broker_reload=f"{sys.executable} -c \"open('{marker}', 'w').write('ok')\"").save()
    done = enroll.revoke(hq, "gate-1", actor="alice", reason="stolen")
    assert done.record.status == "revoked" and marker.read_text() == "ok"
    crl = x509.load_pem_x509_crl((hq / "broker" / "crl.pem").read_bytes())
    serial = int(Registry(hq / "registry.db").node("gate-1").cert_serial, 16)
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    with pytest.raises(StateError, match="not active|revoked"):
        enroll.make_bundle(hq, "gate-1", actor="alice")
    actions = [(a, action) for _, a, action, n, _ in enroll.audit(hq, node_id="gate-1")]
    assert ("alice", "revoke") in actions and ("alice", "crl") in actions and ("alice", "broker-reload") in actions


def test_revoke_without_the_offline_ca_changes_nothing(hq: Path, tmp_path: Path) -> None:
    local.provision_node(hq, tmp_path / "n1", "gate-1")
    st = hq_state.load(hq)
    st.ca_dir.rename(st.ca_dir.with_name("unmounted"))
    with pytest.raises(StateError, match="ca.pem: missing; is the offline CA folder mounted"):
        enroll.revoke(hq, "gate-1", actor="alice", reason="stolen")
    assert Registry(hq / "registry.db").node("gate-1").status == "active"


# -- the command line ---------------------------------------------------------------------
def test_cli_walks_the_technicians_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hq_dir, ca_dir, data = str(tmp_path / "hq"), str(tmp_path / "usb-ca"), str(tmp_path / "pi")
    def run(*argv: str) -> str:
        assert cli.main(list(argv)) == 0, capsys.readouterr().err
        return capsys.readouterr().out
    out = run("ca", "init", "--dir", hq_dir, "--ca-dir", ca_dir, "--actor", "alice", "--broker-name", "10.0.0.5",
              "--broker-port", "8883", "--broker-user", ME)
    assert "next:" in out and "HQ signing key fingerprint" in out
    pin = local.hq_key_id(Path(hq_dir))
    assert pin[:4] + " " + pin[4:8] in out
    out = run("node", "keygen", "--data-dir", data, "--node-id", "gate-1", "--actor", "bob")
    fp = out.split("request fingerprint: ")[1].split()[0]
    out = run("node", "enroll", f"{data}/provisioning/request.json", "--dir", hq_dir, "--site", "north",
              "--actor", "alice", "--fingerprint", fp)
    assert "enrolled node gate-1" in out and "next: alpr-provision node bundle gate-1" in out
    out = run("node", "bundle", "gate-1", "--dir", hq_dir, "--actor", "alice", "--out", str(tmp_path / "b.alprbundle"))
    assert "next:" in out
    out = run("node", "install", str(tmp_path / "b.alprbundle"), "--data-dir", data, "--actor", "bob",
              "--hq-key-id", pin[:16])
    # no --config: written where alpr-node and its systemd unit read it (the guard's copy here)
    assert nodeside.DEFAULT_CONFIG.exists() and not (Path(data) / "node.toml").exists()
    assert f"check-config --config {nodeside.DEFAULT_CONFIG}" in out and "systemctl enable --now alpr-node" in out
    out = run("node", "rotate-key", "--data-dir", data, "--actor", "bob")
    out = run("node", "add-key", f"{data}/provisioning/rotate-request.json", "--dir", hq_dir, "--actor", "alice")
    assert "enrolled" in out
    out = run("node", "list", "--dir", hq_dir)
    assert "gate-1" in out and "active" in out
    out = run("ca", "rotate-hpke", "--dir", hq_dir, "--actor", "alice")
    out = run("node", "revoke", "gate-1", "--dir", hq_dir, "--actor", "carol", "--reason", "stolen")
    assert "systemctl" in out and "revoked node gate-1" in out
    out = run("audit", "--dir", hq_dir)
    for actor, action in (("alice", "ca-init"), ("alice", "enroll"), ("alice", "bundle"), ("alice", "rotate-key"),
                          ("alice", "rotate-hpke"), ("carol", "revoke"), ("carol", "crl")):
        assert any(actor in line and action in line for line in out.splitlines()), (actor, action)
    # errors: one line naming the file, exit 2; --actor is required
    assert cli.main(["node", "enroll", str(tmp_path / "none.json"), "--dir", hq_dir, "--site", "s",
                     "--actor", "a"]) == 2
    assert "alpr-provision: error:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["node", "revoke", "gate-1", "--dir", hq_dir, "--reason", "x"])


def test_keygen_gives_keys_to_the_service_user_only_as_root(tmp_path: Path) -> None:
    import os
    import pwd
    nobody = pwd.getpwnam("nobody")
    if os.geteuid() == 0:
        nodeside.keygen(tmp_path / "n1", "gate-1", actor="bob", user="nobody")
        for rel in (nodeside.SIGN_KEY, nodeside.TLS_KEY, "keys", "tls", "."):
            assert (tmp_path / "n1" / rel).stat().st_uid == nobody.pw_uid, rel
        assert stat.S_IMODE((tmp_path / "n1" / nodeside.SIGN_KEY).stat().st_mode) == 0o600
    else:
        with pytest.raises(ProvisioningError, match="--user nobody: only root"):
            nodeside.keygen(tmp_path / "n1", "gate-1", actor="bob", user="nobody")


def test_incomplete_bundle_even_if_signed_by_hq_names_the_field(hq: Path, tmp_path: Path) -> None:
    from transport import signed
    keygen_enroll(hq, tmp_path / "n1", "gate-1")
    good = enroll.make_bundle(hq, "gate-1", actor="alice")
    magic, hq_pub, message = cbor.loads(good.read_bytes())
    body = cbor.loads(cbor.loads(message)[0])
    sign_key = hqsetup.load_sign_key(hq_state.load(hq))
    for change, error in ((lambda b: b.pop("cert"), r"field\(s\) missing: cert"),
                          (lambda b: b.__setitem__("broker_port", "8883"), "field broker_port: expected int"),
                          (lambda b: b.__setitem__("hq_hpke_pub", b"short"), "field hq_hpke_pub: expected 32 bytes")):
        bad_body = dict(body)
        change(bad_body)
        path = tmp_path / "bad.alprbundle"
        path.write_bytes(cbor.dumps([magic, hq_pub, signed.sign(bundle_format.KIND, bad_body, sign_key)]))
        with pytest.raises(BadBundle, match=error):
            nodeside.install(path, tmp_path / "n1", actor="bob")


def test_revoked_node_backdated_reads_accepted_only_within_the_grace(tmp_path):
    import time as _time

    from cryptography.hazmat.primitives.asymmetric import ed25519 as _ed

    from transport.envelope import Header
    from transport.errors import EnvelopeError
    from transport.keys import key_id
    from transport.registry import Registry

    reg = Registry(tmp_path / "r.db")
    key = _ed.Ed25519PrivateKey.generate()
    reg.enroll("n1", "s", key.public_key(), actor="t")
    now = _time.time_ns()
    reg.revoke("n1", actor="t", reason="stolen", at_ns=now - 2 * 3600 * 10**9)  # revoked two hours ago
    backdated = Header("read", "n1", 1, now - 3 * 3600 * 10**9, key_id(key.public_key()), "x")
    assert reg.signer_lookup(grace_s=3 * 3600)(backdated) is not None       # within the grace: queued read
    with pytest.raises(EnvelopeError, match="grace period is over"):
        reg.signer_lookup(grace_s=3600)(backdated)                          # after it: refused
    reg.close()


# -- review findings ------------------------------------------------------------------------
def _site_toml() -> str:
    """The site.toml docs/provisioning.md shows for `install --extra`."""
    import re
    text = (Path(__file__).resolve().parents[2] / "docs" / "provisioning.md").read_text()
    return re.search(r"```toml\n(# site.toml.*?)```", text, re.DOTALL).group(1)


def test_install_writes_node_toml_where_alpr_node_reads_it(hq: Path, tmp_path: Path, _never_write_etc: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from node import cli as node_cli
    from node import config as node_config

    # the real default is alpr-node's and the systemd unit's; the CLI uses it when --config is left out
    assert REAL_DEFAULT_CONFIG == node_config.DEFAULT_PATH == Path("/etc/alpr-node/node.toml")
    unit = (Path(__file__).resolve().parents[2] / "node/systemd/alpr-node.service").read_text()
    assert f"check-config --config {REAL_DEFAULT_CONFIG}" in unit and f"run --config {REAL_DEFAULT_CONFIG}" in unit
    assert cli.build_parser().parse_args(["node", "install", "b", "--actor", "x"]).config == _never_write_etc
    data = tmp_path / "pi"
    keygen_enroll(hq, data, "gate-1")
    bundle = enroll.make_bundle(hq, "gate-1", actor="alice")
    (tmp_path / "site.toml").write_text(_site_toml())
    assert cli.main(["node", "install", str(bundle), "--data-dir", str(data), "--actor", "bob",
                     "--extra", str(tmp_path / "site.toml")]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert not (data / "node.toml").exists()
    # the README's next step: alpr-node check-config on that file passes (a triggered pipeline with its
    # triggers), where picamera2 and RPi.GPIO can be imported (here: stand-ins, as on a Pi the real ones)
    import sys
    import types

    from hardware.standin_gpio import StandinGPIO
    from hardware.standin_picamera2 import StandinPicamera2Module
    with pytest.MonkeyPatch.context() as mp:
        for name in ("picamera2", "RPi", "RPi.GPIO"):
            mp.setitem(sys.modules, name, None)  # as a venv without --system-site-packages: not importable
        assert node_cli.main(["check-config", "--config", str(_never_write_etc)]) != 0
        assert "source.kind = 'camera': picamera2 is not installed" in capsys.readouterr().err
        gpio = StandinGPIO()
        mp.setitem(sys.modules, "picamera2", StandinPicamera2Module(lambda i: None))
        mp.setitem(sys.modules, "RPi", types.SimpleNamespace(GPIO=gpio))
        mp.setitem(sys.modules, "RPi.GPIO", gpio)
        assert node_cli.main(["check-config", "--config", str(_never_write_etc)]) == 0
    assert "ok (node gate-1" in capsys.readouterr().out
    cfg = node_config.load(_never_write_etc)
    assert cfg.pipeline.mode == "triggered" and cfg.node.data_dir == data.resolve()
    # a TLS key others can read: `run` refuses it, so check-config (the unit's ExecStartPre) must too
    (data / "tls" / "node.key").chmod(0o644)
    assert node_cli.main(["check-config", "--config", str(_never_write_etc)]) != 0
    err = capsys.readouterr().err
    assert "broker.key" in err and "chmod 600" in err


def test_install_carries_local_sections_from_the_old_data_dir_config(hq: Path, tmp_path: Path) -> None:
    from node import config as node_config

    node = local.provision_node(hq, tmp_path / "n1", "gate-1", extra_toml='[outbox]\nquota_mb = 64\n' + LOCAL)
    assert node.config == node.data_dir / "node.toml"  # where installs before /etc wrote it
    target = tmp_path / "etc" / "node.toml"
    nodeside.install(enroll.make_bundle(hq, "gate-1", actor="alice"), node.data_dir, actor="bob", config_path=target)
    assert node_config.load(target).outbox.quota_mb == 64


def test_install_refuses_an_unwritable_config_before_changing_anything(hq: Path, tmp_path: Path) -> None:
    data = tmp_path / "n1"
    keygen_enroll(hq, data, "gate-1")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ProvisioningError, match=r"--config .*afile/node.toml: cannot create"):
        nodeside.install(enroll.make_bundle(hq, "gate-1", actor="alice"), data, actor="bob",
                         config_path=tmp_path / "afile" / "node.toml")
    assert not (data / nodeside.INSTALLED).exists() and not (data / nodeside.TLS_CERT).exists()


def test_keygen_interrupted_after_the_keys_is_finished_by_a_rerun(hq: Path, tmp_path: Path) -> None:
    data = tmp_path / "n1"
    (tmp_path / "usb").write_text("not a folder")  # --out onto a file: the write fails after the keys
    with pytest.raises(OSError):
        nodeside.keygen(data, "gate-1", actor="bob", out=tmp_path / "usb" / "gate-1.json")
    assert (data / nodeside.SIGN_KEY).exists() and not (data / nodeside.META).exists()
    first_key = load_private_key(data / nodeside.SIGN_KEY, ed25519.Ed25519PrivateKey)
    # rotate-key cannot run on a half-made node, and says what to do
    with pytest.raises(StateError, match="node.json: missing; run alpr-provision node keygen"):
        nodeside.rotate_key(data, actor="bob")
    made = nodeside.keygen(data, "gate-1", actor="bob", hq_key_id=local.hq_key_id(hq), out=tmp_path / "ok.json")
    assert made.sign_key_id == key_id(first_key.public_key())  # the keys already made are kept
    assert json.loads((data / nodeside.META).read_text())["node_id"] == "gate-1"
    enroll.enroll(hq, made.request, site="north", actor="alice", expect_fingerprint=made.fingerprint)
    nodeside.install(enroll.make_bundle(hq, "gate-1", actor="alice"), data, actor="bob", extra_toml=LOCAL)
    with pytest.raises(StateError, match="keys exist already"):
        nodeside.keygen(data, "gate-1", actor="bob")
    log = [json.loads(line)["detail"] for line in (data / nodeside.AUDIT).read_text().splitlines()]
    assert "interrupted keygen, keys kept" in log[0]


def test_enroll_writes_hq_files_before_the_registry(hq: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    made = nodeside.keygen(tmp_path / "n1", "gate-1", actor="bob")
    def no_write(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(enroll.atomic, "write_text", no_write)
    with pytest.raises(OSError, match="No space left"):
        enroll.enroll(hq, made.request, site="north", actor="alice")
    registry = Registry(hq / "registry.db")
    try:
        assert [r.node_id for r in registry.nodes()] == []  # not registered without its files
    finally:
        registry.close()
    issued = [c for c in Authority(hq_state.load(hq).ca_dir).issued() if c.common_name == "gate-1"]
    assert len(issued) == 1 and issued[0].revoked_at  # the certificate that never left HQ is revoked
    monkeypatch.undo()
    done = enroll.enroll(hq, made.request, site="north", actor="alice")
    assert (hq / "nodes" / "gate-1" / "node.json").exists() and done.record.status == "active"


def test_enroll_fingerprint_accepts_dashes_spaces_colons_or_none(hq: Path, tmp_path: Path) -> None:
    made = nodeside.keygen(tmp_path / "n1", "gate-1", actor="bob")
    bare = made.fingerprint.replace("-", "")
    spaced = " ".join(bare.upper()[i:i + 4] for i in range(0, 16, 4))
    wrong = bare[:-1] + ("1" if bare[-1] == "0" else "0")
    with pytest.raises(BadRequest, match="is not the"):
        enroll.enroll(hq, made.request, site="north", actor="alice", expect_fingerprint=wrong)
    enroll.enroll(hq, made.request, site="north", actor="alice", expect_fingerprint=bare)
    again = enroll.enroll(hq, made.request, site="north", actor="alice", expect_fingerprint=spaced)
    assert again.fingerprint == made.fingerprint
    enroll.enroll(hq, made.request, site="north", actor="alice", expect_fingerprint=bare.replace("", ":")[1:-1])


def test_reenroll_via_cli_prints_the_next_step_again(hq: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    made = nodeside.keygen(tmp_path / "n1", "gate-1", actor="bob")
    argv = ["node", "enroll", str(made.request), "--dir", str(hq), "--site", "north", "--actor", "alice"]
    assert cli.main(argv) == 0
    first = capsys.readouterr().out
    assert cli.main(argv) == 0, capsys.readouterr().err
    second = capsys.readouterr().out
    assert "next: alpr-provision node bundle gate-1" in second and first.splitlines()[-1] == second.splitlines()[-1]


def test_retire_hpke_refuses_a_key_active_nodes_still_use(hq: Path, tmp_path: Path) -> None:
    from hq.keyring import load_hpke_keys
    n1 = local.provision_node(hq, tmp_path / "n1", "gate-1", actor="bob", extra_toml=LOCAL)
    local.provision_node(hq, tmp_path / "n2", "gate-2", actor="bob", extra_toml=LOCAL)
    local.provision_node(hq, tmp_path / "n3", "gate-3", actor="bob", extra_toml=LOCAL)
    old = hq_state.load(hq).hpke_current
    hqsetup.rotate_hpke(hq, actor="alice")
    nodeside.install(enroll.make_bundle(hq, "gate-1", actor="alice"), n1.data_dir, actor="bob")
    enroll.revoke(hq, "gate-3", actor="alice", reason="stolen", reload=False)
    # gate-2's latest bundle still carries the old key; gate-1 moved on; gate-3 is revoked
    with pytest.raises(StateError, match=f"hq-hpke-{old}.key: still used by active nodes .*: gate-2;"):
        hqsetup.retire_hpke(hq, old, actor="alice")
    assert old in load_hpke_keys(hq / "keys")
    assert cli.main(["ca", "retire-hpke", old, "--dir", str(hq), "--actor", "alice"]) == 2
    assert cli.main(["ca", "retire-hpke", old, "--dir", str(hq), "--actor", "alice", "--force"]) == 0
    assert old not in load_hpke_keys(hq / "keys")
    details = [d for _, _, action, _, d in enroll.audit(hq) if action == "retire-hpke"]
    assert details == [f"key={old} forced; still used by gate-2"]


def test_retire_hpke_refuses_a_key_nodes_were_last_seen_sealing_for(hq: Path, tmp_path: Path) -> None:
    """A bundle made is not a bundle installed: gate-1's bundle carries the new key, but until
    ingest opens a message gate-1 sealed for it, gate-1 still seals for the old one (or still
    holds reads sealed for it), and deleting that key would make them unreadable for ever."""
    from hq.keyring import load_hpke_keys
    from transport.key_usage import KeyUsage

    local.provision_node(hq, tmp_path / "n1", "gate-1", actor="bob", extra_toml=LOCAL)
    old = hq_state.load(hq).hpke_current
    new, _ = hqsetup.rotate_hpke(hq, actor="alice")
    enroll.make_bundle(hq, "gate-1", actor="alice")  # made, not installed: the audit trail says "new"
    clock = iter(range(1_000, 10_000))
    usage = KeyUsage(hq / "keys" / "hpke-used-hq-ingest-1.json", clock_ns=lambda: next(clock))
    usage.saw("gate-1", old)
    usage.flush(force=True)
    with pytest.raises(StateError, match=f"hq-hpke-{old}.key: nodes whose latest message HQ opened was sealed "
                                         f"for key {old}: gate-1 "):
        hqsetup.retire_hpke(hq, old, actor="alice")
    assert old in load_hpke_keys(hq / "keys")
    # a second worker sees gate-1's first message sealed for the new key: it has moved on
    other = KeyUsage(hq / "keys" / "hpke-used-hq-ingest-2.json", clock_ns=lambda: next(clock))
    other.saw("gate-1", new)
    other.flush(force=True)
    assert (hq / "keys" / "hpke-used-hq-ingest-2.json").stat().st_mode & 0o777 == 0o600
    hqsetup.retire_hpke(hq, old, actor="alice")
    assert old not in load_hpke_keys(hq / "keys")


def test_rotate_key_twice_refuses_unless_replace(hq: Path, tmp_path: Path) -> None:
    node = local.provision_node(hq, tmp_path / "n1", "gate-1", actor="bob", extra_toml=LOCAL)
    first = nodeside.rotate_key(node.data_dir, actor="bob")
    with pytest.raises(StateError, match=f"node-sign.next.key: key {first.sign_key_id} is already waiting"):
        nodeside.rotate_key(node.data_dir, actor="bob")
    pending = load_private_key(node.data_dir / nodeside.NEXT_SIGN_KEY, ed25519.Ed25519PrivateKey)
    assert key_id(pending.public_key()) == first.sign_key_id  # untouched by the refused run
    # a rotate-key that stopped before its request: a rerun remakes the request for the same key
    (node.data_dir / nodeside.ROTATE_REQUEST).unlink()
    resumed = nodeside.rotate_key(node.data_dir, actor="bob")
    assert resumed.sign_key_id == first.sign_key_id
    replaced = nodeside.rotate_key(node.data_dir, actor="bob", replace=True)
    assert replaced.sign_key_id != first.sign_key_id
    enroll.add_key(hq, replaced.request, actor="alice")
    done = nodeside.install(enroll.make_bundle(hq, "gate-1", actor="alice"), node.data_dir, actor="bob")
    assert done.rotated_to == replaced.sign_key_id


def test_cli_next_hints_quote_names_with_spaces(hq: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import shlex
    made = nodeside.keygen(tmp_path / "n1", "gate-1", actor="bob", hq_key_id=local.hq_key_id(hq))
    hq_dir = tmp_path / "my hq"
    hq.rename(hq_dir)
    assert cli.main(["node", "enroll", str(made.request), "--dir", str(hq_dir), "--site", "north",
                     "--actor", "J. Smith"]) == 0
    hint = capsys.readouterr().out.split("next: ", 1)[1].strip()
    argv = shlex.split(hint)
    assert argv[0] == "alpr-provision"
    args = cli.build_parser().parse_args(argv[1:])
    assert (args.actor, args.dir, args.node_id) == ("J. Smith", hq_dir, "gate-1")
    # and the pasted hint runs
    assert cli.main(argv[1:] + ["--out", str(tmp_path / "b.alprbundle")]) == 0
    capsys.readouterr()
    nodeside.install(tmp_path / "b.alprbundle", tmp_path / "n1", actor="bob", extra_toml=LOCAL)
    rotated = nodeside.rotate_key(tmp_path / "n1", actor="bob", out=tmp_path / "usb stick" / "rotate.json")
    assert cli.main(["node", "add-key", str(rotated.request), "--dir", str(hq_dir), "--actor", "J. Smith"]) == 0
    hint = capsys.readouterr().out.split("next: ", 1)[1].split(", then", 1)[0]
    args = cli.build_parser().parse_args(shlex.split(hint)[1:])
    assert (args.actor, args.dir, args.node_id) == ("J. Smith", hq_dir, "gate-1")


def test_install_hq_key_id_must_agree_with_the_keygen_pin(hq: Path, tmp_path: Path) -> None:
    data = tmp_path / "n1"
    pin = local.hq_key_id(hq)
    keygen_enroll(hq, data, "gate-1")
    bundle = enroll.make_bundle(hq, "gate-1", actor="alice")
    with pytest.raises(BadBundle, match=f"--hq-key-id 0123456789abcdef is not the HQ key {pin[:16]} pinned at "
                                        "keygen"):
        nodeside.install(bundle, data, actor="bob", hq_key_id="0123 4567 89ab cdef")
    assert not (data / nodeside.HQ_SIGN).exists()
    # a pin made at keygen that is wrong: the message blames the pin, not a mistyped --hq-key-id
    other = tmp_path / "n2"
    nodeside.keygen(other, "gate-2", actor="bob", hq_key_id="0123456789abcdef")
    enroll.enroll(hq, other / nodeside.REQUEST, site="north", actor="alice")
    with pytest.raises(BadBundle, match=r"not the pinned 0123456789abcdef: .*pin given at keygen") as caught:
        nodeside.install(enroll.make_bundle(hq, "gate-2", actor="alice"), other, actor="bob")
    assert "mistyped" not in str(caught.value)
    # agreeing pins (a longer prefix typed) install
    nodeside.install(bundle, data, actor="bob", hq_key_id=pin[:24], extra_toml=LOCAL)


def test_bundle_hours_must_be_positive(hq: Path, tmp_path: Path) -> None:
    keygen_enroll(hq, tmp_path / "n1", "gate-1")
    for hours in (0, -1, float("nan")):
        with pytest.raises(ProvisioningError, match=r"--hours .*: a bundle must stay valid for more than 0 hours"):
            enroll.make_bundle(hq, "gate-1", actor="alice", valid_hours=hours)
    assert not list((hq / "nodes" / "gate-1").glob("*.alprbundle"))


def test_issue_hq_refuses_an_existing_worker_unless_replace_and_revoke_hq(hq: Path) -> None:
    ca = Authority(hq_state.load(hq).ca_dir)
    before = [c.serial for c in ca.issued() if c.common_name == "hq-ingest-2"]
    key_before = (hq / "tls" / "hq-ingest-2.key").read_bytes()
    with pytest.raises(StateError, match="hq-ingest-2.pem: HQ worker hq-ingest-2 has a certificate already"):
        hqsetup.issue_worker(hq, "hq-ingest-2", actor="alice")
    assert (hq / "tls" / "hq-ingest-2.key").read_bytes() == key_before
    cert = hqsetup.issue_worker(hq, "hq-ingest-2", actor="alice", replace=True)
    new = pki.load_cert(cert)
    crl = x509.load_pem_x509_crl((hq / "broker" / "crl.pem").read_bytes())
    assert {r.serial_number for r in crl} == set(before) and crl.get_revoked_certificate_by_serial_number(
        new.serial_number) is None
    serials = hqsetup.revoke_worker(hq, "hq-ingest-2", actor="alice", reason="machine retired")
    assert serials == [new.serial_number]
    crl = x509.load_pem_x509_crl((hq / "broker" / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(new.serial_number) is not None
    assert "user hq-ingest-2" not in (hq / "broker" / "acl").read_text()
    assert hq_state.load(hq).workers == ("hq-ingest-1",)
    with pytest.raises(StateError, match="HQ worker hq-nope: no such worker"):
        hqsetup.revoke_worker(hq, "hq-nope", actor="alice", reason="x")
    assert cli.main(["ca", "revoke-hq", "--worker", "hq-ingest-2", "--reason", "again", "--dir", str(hq),
                     "--actor", "alice"]) == 0
