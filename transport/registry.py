"""HQ's node registry: which nodes are enrolled, with which keys, and which are revoked.

A SQLite file shared by provisioning (which writes it) and HQ ingest (which reads it), so
it lives with the wire format in transport/. Every change is recorded in `audit` with the
name of the person who made it.
"""
from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from transport.errors import EnvelopeError, TransportError
from transport.keys import key_id, raw_public
from transport.provenance import KINDS, KeyProof

SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    node_id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    enrolled_ns INTEGER NOT NULL,
    enrolled_by TEXT NOT NULL,
    revoked_ns INTEGER,
    revoked_by TEXT,
    revoke_reason TEXT,
    cert_serial TEXT,
    details TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS node_keys (
    node_id TEXT NOT NULL REFERENCES nodes(node_id),
    key_id TEXT NOT NULL,
    public_raw BLOB NOT NULL,
    valid_from_ns INTEGER NOT NULL,
    retired_ns INTEGER,
    PRIMARY KEY (node_id, key_id)
);
-- What proves each key is the node's without this file (transport.provenance): the CA's
-- certificate chain from enrolment, or the rotation request signed by the key it replaced.
CREATE TABLE IF NOT EXISTS key_proofs (
    node_id TEXT NOT NULL REFERENCES nodes(node_id),
    key_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('certificate', 'rotation')),
    document BLOB NOT NULL,
    added_ns INTEGER NOT NULL,
    PRIMARY KEY (node_id, key_id, kind)
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    t_ns INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    node_id TEXT,
    detail TEXT NOT NULL DEFAULT ''
);
"""


class RegistryError(TransportError, ValueError):
    """A registry operation that cannot be done (unknown node, duplicate enrolment, ...)."""


@dataclass(frozen=True)
class NodeKey:
    """One of a node's signing keys and when it may sign."""

    node_id: str
    key_id: str
    public: ed25519.Ed25519PublicKey
    valid_from_ns: int
    retired_ns: int | None


@dataclass(frozen=True)
class NodeRecord:
    """A node as the registry knows it."""

    node_id: str
    site_id: str
    status: str
    enrolled_ns: int
    enrolled_by: str
    revoked_ns: int | None
    revoked_by: str | None
    cert_serial: str | None


class Registry:
    """The node registry file. Open one per thread (sqlite3 connections are per thread)."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        """Open (and create) the registry; `read_only` opens an existing one without writing
        anything (SQLite mode=ro: no journal mode, no schema), for a listing by a user who may
        not write it. SQLite reads a WAL database so only while its -shm file exists (HQ ingest
        keeps the registry open) or can be created."""
        self.path = Path(path)
        if read_only:
            self._db = sqlite3.connect(self.path.absolute().as_uri() + "?mode=ro", uri=True, isolation_level=None,
                                       timeout=10)
            try:
                self._db.execute("SELECT count(*) FROM nodes").fetchone()  # fail here, not halfway through a listing
            except BaseException:
                self._db.close()
                raise
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        """Close the file; safe to call twice."""
        if self._db is not None:
            self._db.close()
            self._db = None  # type: ignore[assignment]

    def _audit(self, actor: str, action: str, node_id: str | None, detail: str = "") -> None:
        self._db.execute("INSERT INTO audit (t_ns, actor, action, node_id, detail) VALUES (?,?,?,?,?)",
                         (time.time_ns(), actor, action, node_id, detail))

    def enroll(self, node_id: str, site_id: str, public: ed25519.Ed25519PublicKey, *, actor: str,
               cert_serial: str | None = None, details: str = "{}", certificate: bytes | None = None) -> NodeRecord:
        """Register a new node and its first signing key; `certificate`: the chain (PEM) the CA
        issued for it, which names the key (transport.provenance), kept as the key's proof."""
        now = time.time_ns()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if self._db.execute("SELECT 1 FROM nodes WHERE node_id=?", (node_id,)).fetchone():
                raise RegistryError(f"node {node_id} is already enrolled; revoke it or use another id")
            self._db.execute(
                "INSERT INTO nodes (node_id, site_id, status, enrolled_ns, enrolled_by, cert_serial, details) "
                "VALUES (?,?,?,?,?,?,?)", (node_id, site_id, "active", now, actor, cert_serial, details))
            self._db.execute("INSERT INTO node_keys VALUES (?,?,?,?,NULL)",
                             (node_id, key_id(public), raw_public(public), now))
            if certificate is not None:
                self._add_proof(KeyProof(node_id, key_id(public), "certificate", certificate), now)
            self._audit(actor, "enroll", node_id, f"site={site_id} key={key_id(public)} cert={cert_serial}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return self.node(node_id)

    def add_key(self, node_id: str, public: ed25519.Ed25519PublicKey, *, actor: str,
                retire_old_after_s: float | None = None, rotation_request: bytes | None = None) -> None:
        """Rotate: add a new signing key; old keys stay valid for messages made before the rotation.
        `rotation_request`: the request file's bytes, signed by the new key and the one it
        replaces, kept as the new key's proof."""
        self.node(node_id)
        now = time.time_ns()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if retire_old_after_s is not None:
                self._db.execute("UPDATE node_keys SET retired_ns=? WHERE node_id=? AND retired_ns IS NULL",
                                 (now + int(retire_old_after_s * 1e9), node_id))
            self._db.execute("INSERT OR REPLACE INTO node_keys VALUES (?,?,?,?,NULL)",
                             (node_id, key_id(public), raw_public(public), now))
            if rotation_request is not None:
                self._add_proof(KeyProof(node_id, key_id(public), "rotation", rotation_request), now)
            self._audit(actor, "rotate-key", node_id, f"new key={key_id(public)}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _add_proof(self, proof: KeyProof, now: int) -> None:
        if proof.kind not in KINDS:
            raise RegistryError(f"key proof kind {proof.kind!r}: expected one of {', '.join(KINDS)}")
        self._db.execute("INSERT OR REPLACE INTO key_proofs VALUES (?,?,?,?,?)",
                         (proof.node_id, proof.key_id, proof.kind, bytes(proof.document), now))

    def proofs(self, node_id: str) -> list[KeyProof]:
        """The proofs kept for a node's keys, oldest first (none for a node enrolled before
        the registry kept them, or in a registry that predates them, opened read-only)."""
        try:
            rows = self._db.execute("SELECT node_id, key_id, kind, document FROM key_proofs WHERE node_id=? "
                                    "ORDER BY added_ns, key_id, kind", (node_id,)).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        return [KeyProof(r[0], r[1], r[2], bytes(r[3])) for r in rows]

    def revoke(self, node_id: str, *, actor: str, reason: str, at_ns: int | None = None) -> NodeRecord:
        """Revoke a node: messages it made after `at_ns` (default now) are rejected."""
        record = self.node(node_id)
        if record.status == "revoked":
            raise RegistryError(f"node {node_id} was already revoked by {record.revoked_by}")
        at_ns = time.time_ns() if at_ns is None else at_ns
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute("UPDATE nodes SET status='revoked', revoked_ns=?, revoked_by=?, revoke_reason=? WHERE node_id=?",
                         (at_ns, actor, reason, node_id))
        self._audit(actor, "revoke", node_id, reason)
        self._db.execute("COMMIT")
        return self.node(node_id)

    def record(self, actor: str, action: str, node_id: str | None = None, detail: str = "") -> None:
        """Record a provisioning action in the audit trail."""
        self._audit(actor, action, node_id, detail)

    def node(self, node_id: str) -> NodeRecord:
        """The registry's record of a node; RegistryError if unknown."""
        row = self._db.execute(
            "SELECT node_id, site_id, status, enrolled_ns, enrolled_by, revoked_ns, revoked_by, cert_serial "
            "FROM nodes WHERE node_id=?", (node_id,)).fetchone()
        if row is None:
            raise RegistryError(f"node {node_id} is not enrolled")
        return NodeRecord(*row)

    def nodes(self) -> list[NodeRecord]:
        """All nodes, by id."""
        rows = self._db.execute(
            "SELECT node_id, site_id, status, enrolled_ns, enrolled_by, revoked_ns, revoked_by, cert_serial "
            "FROM nodes ORDER BY node_id").fetchall()
        return [NodeRecord(*row) for row in rows]

    def keys(self, node_id: str) -> list[NodeKey]:
        """A node's signing keys, newest first."""
        rows = self._db.execute(
            "SELECT node_id, key_id, public_raw, valid_from_ns, retired_ns FROM node_keys WHERE node_id=? "
            "ORDER BY valid_from_ns DESC", (node_id,)).fetchall()
        return [NodeKey(r[0], r[1], ed25519.Ed25519PublicKey.from_public_bytes(r[2]), r[3], r[4]) for r in rows]

    def audit_log(self, since_ns: int = 0) -> list[tuple[int, str, str, str | None, str]]:
        """Provisioning audit entries (t_ns, actor, action, node_id, detail) since a time."""
        return self._db.execute("SELECT t_ns, actor, action, node_id, detail FROM audit WHERE t_ns >= ? ORDER BY id",
                                (since_ns,)).fetchall()

    def signer_lookup(self, cache_s: float = 0.0, grace_s: float = 24 * 3600.0):
        """A `signer_for(header)` for envelope.open_envelope that enforces enrolment and revocation.

        With `cache_s` > 0 a node's record and keys are kept that long, but the whole cache is
        dropped as soon as any other connection changes the registry (SQLite's data_version),
        so a revocation takes effect for the very next message.

        A revoked node's messages dated before the revocation are accepted only until `grace_s`
        after it, by HQ's clock: reads queued while offline still arrive, but a key stolen with
        the node cannot keep signing backdated reads for ever.

        A retired key (rotation) signs nothing dated at or after its retirement, but what it
        signed before stays valid whenever it arrives: those are reads the node sealed before it
        installed its new key and still holds in its outbox (HQ down, a bad link), which it can
        never sign again, since the signature is inside the HPKE ciphertext. A key believed
        stolen is a revocation, not a rotation.
        """
        cache: dict[str, tuple[float, NodeRecord | None, list[NodeKey]]] = {}
        version = [self._db.execute("PRAGMA data_version").fetchone()[0]]

        def load(node_id: str) -> tuple[NodeRecord | None, list[NodeKey]]:
            now = time.monotonic()
            current = self._db.execute("PRAGMA data_version").fetchone()[0]
            if current != version[0]:
                version[0] = current
                cache.clear()
            hit = cache.get(node_id)
            if hit is not None and hit[0] > now:
                return hit[1], hit[2]
            try:
                record = self.node(node_id)
                keys = self.keys(node_id)
            except RegistryError:
                record, keys = None, []
            if cache_s > 0:
                if len(cache) > 10_000:
                    cache.clear()
                cache[node_id] = (now + cache_s, record, keys)
            return record, keys

        def signer_for(header) -> ed25519.Ed25519PublicKey:
            record, keys = load(header.node_id)
            if record is None:
                raise EnvelopeError("unknown-node", f"node {header.node_id} is not enrolled")
            now = time.time_ns()
            grace = int(grace_s * 1e9)
            if record.status == "revoked":
                revoked = record.revoked_ns or 0
                if header.time_ns >= revoked:
                    raise EnvelopeError("revoked", f"node {header.node_id} was revoked; message made after revocation")
                if now > revoked + grace:
                    raise EnvelopeError("revoked", f"node {header.node_id} was revoked and its grace period is over")
            for key in keys:
                if key.key_id == header.signer_key_id:
                    if key.retired_ns is not None and header.time_ns >= key.retired_ns:
                        raise EnvelopeError("wrong-key", f"node {header.node_id}: key {key.key_id} was retired; "
                                                         f"message made after its retirement")
                    return key.public
            raise EnvelopeError("wrong-key", f"node {header.node_id}: key id {header.signer_key_id} is not enrolled")
        return signer_for
