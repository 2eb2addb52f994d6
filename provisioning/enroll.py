"""HQ-side node lifecycle: enrol (sign the CSR, register), bundle, add a rotated key, revoke.

Every step is recorded in the registry's audit trail with the technician's name.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from provisioning import bundle as bundle_format
from provisioning import hqsetup, pki, request
from provisioning import state as hq_state
from provisioning.authority import Authority
from provisioning.errors import BadRequest, ProvisioningError, ReloadFailed, StateError
from provisioning.names import node_id_problem
from transport import atomic, provenance
from transport.keys import raw_public
from transport.registry import NodeRecord, Registry, RegistryError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Enrolled:
    """What `enroll` did."""

    record: NodeRecord
    cert: Path
    cert_serial: str
    sign_key_id: str
    fingerprint: str


@dataclass(frozen=True)
class Revoked:
    """What `revoke` did."""

    record: NodeRecord
    serials: list[str]
    crl: Path
    broker: str


def _registry(state: hq_state.HQState) -> Registry:
    """The registry, or StateError with a `sudo` hint when this user may not write it."""
    return hq_state.open_registry(state)


def _same_fingerprint(typed: str, actual: str) -> bool:
    """Request fingerprints compared as typed: case, dashes, spaces and colons do not matter."""
    def norm(text: str) -> str:
        return "".join(ch for ch in text.lower() if ch not in " :-")
    return norm(typed) == norm(actual)


def _enrolled_files(ndir: Path, req: request.Request) -> tuple[Path, str] | None:
    """(certificate, serial) if HQ_DIR/nodes/<id>/ holds a finished enrolment of exactly this request."""
    try:
        meta = json.loads((ndir / "node.json").read_text())
        cert = pki.load_cert(ndir / "node.pem")
    except (OSError, ValueError, pki.PKIError):
        return None
    if meta.get("request") != req.fingerprint or not pki.same_public_key(cert.public_key(), req.csr.public_key()):
        return None
    return ndir / "node.pem", format(cert.serial_number, "x")


def enroll(hq_dir: Path, request_path: Path, *, site: str, actor: str, camera: str = "cam0", lane: str = "",
           expect_fingerprint: str | None = None, cert_days: int = pki.CLIENT_DAYS,
           not_before=None) -> Enrolled:
    """Check a node's request, sign its CSR with the offline CA and register it.

    `expect_fingerprint`: the fingerprint the Pi printed; refused if it differs.
    HQ_DIR/nodes/<id>/ is written before the registry: a node the registry knows always has
    its certificate there. Enrolling the same request again (same fingerprint) is a no-op that
    returns the first enrolment, so a technician can rerun a step whose output was lost.
    """
    state = hq_state.load(hq_dir)
    data = request.read(request_path)
    # the bytes checked are the bytes kept (nodes/<id>/request.json), read once
    req = request.loads(data, Path(request_path), request.ENROLL)
    if expect_fingerprint and not _same_fingerprint(expect_fingerprint, req.fingerprint):
        raise BadRequest(f"{request_path}: fingerprint {req.fingerprint} is not the {expect_fingerprint} "
                         "the node printed; the request was changed or swapped")
    problem = node_id_problem(req.node_id)
    if problem:
        raise BadRequest(f"{request_path}: field node_id: {problem}")
    if not site:
        raise BadRequest("--site: required")
    ndir = state.node_dir(req.node_id)
    registry = _registry(state)
    try:
        try:
            existing = registry.node(req.node_id)
        except RegistryError:
            existing = None
        if existing is not None:
            again = _enrolled_files(ndir, req) if existing.status == "active" else None
            if again is not None:
                registry.record(actor, "enroll-again", req.node_id, f"request={req.fingerprint} (already enrolled; "
                                "nothing changed)")
                return Enrolled(existing, again[0], again[1], req.sign_key_id, req.fingerprint)
            raise StateError(f"node {req.node_id} is already enrolled ({existing.status}, by {existing.enrolled_by}) "
                             f"from another request than {req.fingerprint}; a revoked or taken id is never "
                             "reused: give the node a new id")
        authority = Authority(state.ca_dir)
        # The CA attests the signing key too (a URI subjectAltName), so an evidence package can
        # prove which key is the node's from the CA certificate, not only from HQ's registry.
        cert = authority.sign(req.csr, days=cert_days, not_before=not_before,
                              uris=[provenance.sign_key_uri(req.sign_public)])
        serial = format(cert.serial_number, "x")
        details = {"camera": camera, "lane": lane, "request": req.fingerprint, "host": req.host,
                   "keygen_by": req.actor, "keygen_at": req.created}
        try:
            pki.write_cert(ndir / "node.pem", cert)
            atomic.write_bytes(ndir / "request.json", data)
            atomic.write_text(ndir / "node.json", json.dumps({"site": site, **details}, indent=1, sort_keys=True)
                              + "\n")
            chain = cert.public_bytes(serialization.Encoding.PEM) + authority.cert.public_bytes(
                serialization.Encoding.PEM)
            record = registry.enroll(req.node_id, site, req.sign_public, actor=actor, cert_serial=serial,
                                     details=json.dumps(details, sort_keys=True), certificate=chain)
        except BaseException:
            # the certificate never left HQ; the files left in nodes/<id>/ are overwritten by a rerun
            authority.revoke_serial(cert.serial_number, "enrolment failed")
            raise
    finally:
        registry.close()
    return Enrolled(record, ndir / "node.pem", serial, req.sign_key_id, req.fingerprint)


def make_bundle(hq_dir: Path, node_id: str, *, actor: str, out: Path | None = None,
                valid_hours: float | None = None, now_ns: int | None = None) -> Path:
    """Write a signed provisioning bundle for an enrolled, active node, to `out` or else to
    HQ_DIR/nodes/<id>/<id>.alprbundle (only one of them: a lost copy is a new `make_bundle` away)."""
    state = hq_state.load(hq_dir)
    registry = _registry(state)
    try:
        record = registry.node(node_id)
        if record.status != "active":
            raise StateError(f"node {node_id} is {record.status}; no bundle for it")
        now = time.time_ns() if now_ns is None else now_ns
        keys = [k for k in registry.keys(node_id) if k.retired_ns is None or k.retired_ns > now]
        if not keys:
            raise StateError(f"node {node_id}: no signing key in the registry is still valid")
        ndir = state.node_dir(node_id)
        cert = pki.load_cert(ndir / "node.pem")
        if cert.not_valid_after_utc.timestamp() * 1e9 <= now:
            raise StateError(f"{ndir / 'node.pem'}: certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}; "
                             "renew it (new CSR) before bundling")
        meta = json.loads((ndir / "node.json").read_text())
        hours = valid_hours if valid_hours is not None else state.bundle_valid_hours
        if not hours > 0:  # also refuses NaN
            raise ProvisioningError(f"--hours {hours:g}: a bundle must stay valid for more than 0 hours")
        data = bundle_format.build(
            node=node_id, site=record.site_id, camera=meta.get("camera", "cam0"), lane=meta.get("lane", ""),
            broker_host=state.broker_host, broker_port=state.broker_port,
            node_sign_pub=raw_public(keys[0].public), cert=cert.public_bytes(serialization.Encoding.PEM),
            ca=(state.hq_dir / "tls" / "ca.pem").read_bytes(),
            hq_hpke_pub=raw_public(hqsetup.load_hpke_public(state)), issued_by=actor,
            sign_key=hqsetup.load_sign_key(state), valid_s=hours * 3600, now_ns=now)
        out = Path(out) if out else ndir / f"{node_id}.alprbundle"
        atomic.write_bytes(out, data)
        registry.record(actor, "bundle", node_id, f"file={out} key={keys[0].key_id} hpke={state.hpke_current} "
                        f"valid_hours={hours}")
        return out
    finally:
        registry.close()


def add_key(hq_dir: Path, request_path: Path, *, actor: str, grace_hours: float = 24.0) -> tuple[str, str]:
    """Enrol a rotated signing key; the old one stays valid for messages made up to `grace_hours` from now.

    Returns (node id, new key id).
    """
    state = hq_state.load(hq_dir)
    data = request.read(request_path)
    # the bytes checked are the bytes kept (registry proof, nodes/<id>/), read once
    req = request.loads(data, Path(request_path), request.ROTATE)
    registry = _registry(state)
    try:
        record = registry.node(req.node_id)
        if record.status != "active":
            raise StateError(f"node {req.node_id} is {record.status}; cannot add a key")
        old = {k.key_id: k for k in registry.keys(req.node_id)}.get(req.old_key_id)
        if old is None or (old.retired_ns is not None and old.retired_ns <= time.time_ns()):
            raise BadRequest(f"{request_path}: field old_key_id: {req.old_key_id} is not a valid key of "
                             f"node {req.node_id}")
        req.verify_old_key(old.public, str(request_path))
        registry.add_key(req.node_id, req.sign_public, actor=actor, retire_old_after_s=grace_hours * 3600,
                         rotation_request=data)
    finally:
        registry.close()
    atomic.write_bytes(state.node_dir(req.node_id) / f"rotate-{req.sign_key_id}.json", data)
    return req.node_id, req.sign_key_id


def revoke(hq_dir: Path, node_id: str, *, actor: str, reason: str, reload: bool = True) -> Revoked:
    """Revoke a node: registry (ingest rejects its new messages), CRL (the broker refuses it), reload.

    A failing reload command raises ReloadFailed, which says the revocation itself is done and
    carries its Revoked; `alpr-provision node revoke` revokes with reload=False and prints that
    first, then reloads.
    """
    if not reason:
        raise ProvisioningError("--reason: required")
    state = hq_state.load(hq_dir)
    authority = Authority(state.ca_dir)  # fail before changing anything if the CA is not mounted
    registry = _registry(state)
    try:
        record = registry.node(node_id)
        if record.status != "revoked":
            record = registry.revoke(node_id, actor=actor, reason=reason)
        # else: a second run finishes a revocation whose CRL step failed (CA not mounted, ...)
        serials = authority.revoke(node_id, reason)
        crl = state.broker_dir / "crl.pem"
        authority.write_crl(crl)
        hqsetup.give_broker_files(state)
        registry.record(actor, "crl", node_id, f"revoked serials={','.join(format(s, 'x') for s in serials)}")
    finally:
        registry.close()
    done = Revoked(record, [format(s, "x") for s in serials], crl, "not reloaded (--no-reload)")
    if not reload:
        return done
    try:
        told = reload_broker(hq_dir, actor=actor, node_id=node_id)
    except ProvisioningError as exc:
        raise ReloadFailed(f"node {node_id} revoked (registry, CRL {crl}); broker not reloaded: {exc}: fix the "
                           "command, then run `alpr-provision ca reload-broker`", done) from exc
    return Revoked(record, done.serials, crl, told)


def reload_broker(hq_dir: Path, *, actor: str, node_id: str | None = None) -> str:
    """Run the broker reload command from `ca init --broker-reload` (audited, and so is a failure);
    returns what happened."""
    state = hq_state.load(hq_dir)
    try:
        told = hqsetup.reload_broker(state)
    except ProvisioningError as exc:
        # the trail shows a revocation whose broker step is still owed
        with hq_state.registry(state) as registry:
            registry.record(actor, "broker-reload-failed", node_id, f"{state.broker_reload}: {exc}")
        raise
    if state.broker_reload:
        registry = _registry(state)
        try:
            registry.record(actor, "broker-reload", node_id, state.broker_reload)
        finally:
            registry.close()
    return told


def regenerate_crl(hq_dir: Path, *, actor: str) -> Path:
    """Write a fresh CRL (e.g. before the current one expires) to the CA and broker folders."""
    state = hq_state.load(hq_dir)
    authority = Authority(state.ca_dir)
    crl = authority.write_crl(state.broker_dir / "crl.pem")
    hqsetup.give_broker_files(state)
    registry = _registry(state)
    try:
        registry.record(actor, "crl", None, f"next_update={crl.next_update_utc:%Y-%m-%d}")
    finally:
        registry.close()
    return state.broker_dir / "crl.pem"


def nodes(hq_dir: Path) -> list[tuple[NodeRecord, list[str]]]:
    """Every node with its key ids (newest first)."""
    state = hq_state.load(hq_dir)
    with hq_state.registry(state, read_only=True) as registry:
        return [(r, [k.key_id for k in registry.keys(r.node_id)]) for r in registry.nodes()]


def audit(hq_dir: Path, *, node_id: str | None = None, since_ns: int = 0) -> list[tuple[int, str, str, str | None, str]]:
    """The audit trail (t_ns, actor, action, node id, detail), oldest first."""
    state = hq_state.load(hq_dir)
    with hq_state.registry(state, read_only=True) as registry:
        rows = registry.audit_log(since_ns)
    return [r for r in rows if node_id is None or r[3] == node_id]
