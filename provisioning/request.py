"""Request files a node makes for HQ: enrolment (new node) and key rotation.

A request is a small JSON file the technician carries from the Pi to HQ. It holds only
public material: the node id, its Ed25519 public key, a CSR for its TLS key, who made it,
and signatures proving the node holds the private keys (the CSR is self-signed by the TLS
key; the Ed25519 key signs the whole request; a rotation is also signed by the old key).
Both the Pi and HQ print the request's fingerprint so the technician can check it was not
swapped on the way.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from provisioning import pki
from provisioning.errors import BadRequest, PKIError
from transport import atomic, provenance
from transport.keys import key_id, raw_public

# The format is transport.provenance's: HQ's evidence verifier checks rotation requests too.
ENROLL = provenance.ENROLL
ROTATE = provenance.ROTATE
_FIELDS = provenance.REQUEST_FIELDS


@dataclass(frozen=True)
class Request:
    """A parsed request whose signatures have been checked (the rotation's old-key one excepted)."""

    kind: str
    node_id: str
    sign_public: ed25519.Ed25519PublicKey
    created: str
    actor: str
    host: str
    fingerprint: str
    csr: x509.CertificateSigningRequest | None = None
    old_key_id: str = ""
    old_signature: bytes = b""
    signed_bytes: bytes = b""

    @property
    def sign_key_id(self) -> str:
        return key_id(self.sign_public)

    def verify_old_key(self, old: ed25519.Ed25519PublicKey, source: str) -> None:
        """A rotation must be signed by the node's enrolled key: BadRequest if not."""
        try:
            old.verify(self.old_signature, self.signed_bytes)
        except InvalidSignature as exc:
            raise BadRequest(f"{source}: field sig_old: not signed by the node's enrolled key {key_id(old)}") from exc


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _fingerprint(signed: bytes) -> str:
    digest = hashlib.sha256(signed).hexdigest()[:16]
    return "-".join(digest[i:i + 4] for i in range(0, 16, 4))


def _now_text() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def make_enroll(node_id: str, sign_key: ed25519.Ed25519PrivateKey, csr: x509.CertificateSigningRequest, *,
                actor: str, host: str) -> tuple[dict, str]:
    """An enrolment request (JSON-ready dict) and its fingerprint."""
    from cryptography.hazmat.primitives import serialization
    body = {"node_id": node_id, "sign_pub": _b64(raw_public(sign_key.public_key())),
            "csr": csr.public_bytes(serialization.Encoding.PEM).decode(), "created": _now_text(),
            "actor": actor, "host": host}
    signed = provenance.request_signed_bytes({"format": ENROLL, **body})
    return {"format": ENROLL, **body, "sig": _b64(sign_key.sign(signed))}, _fingerprint(signed)


def make_rotate(node_id: str, new_key: ed25519.Ed25519PrivateKey, old_key: ed25519.Ed25519PrivateKey, *,
                actor: str, host: str) -> tuple[dict, str]:
    """A key-rotation request signed by both the new key and the enrolled one."""
    body = {"node_id": node_id, "sign_pub": _b64(raw_public(new_key.public_key())),
            "old_key_id": key_id(old_key.public_key()), "created": _now_text(), "actor": actor, "host": host}
    signed = provenance.request_signed_bytes({"format": ROTATE, **body})
    request = {"format": ROTATE, **body, "sig": _b64(new_key.sign(signed)), "sig_old": _b64(old_key.sign(signed))}
    return request, _fingerprint(signed)


def dumps(request: dict) -> bytes:
    """A request file's bytes (what `write` puts in the file)."""
    return (json.dumps(request, indent=1) + "\n").encode()


def write(path: Path, request: dict) -> None:
    """Write a request file (public material only, mode 0644)."""
    atomic.write_bytes(Path(path), dumps(request))


def _decode(raw: dict, name: str, source: str) -> bytes:
    try:
        return base64.b64decode(raw[name], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"{source}: field {name}: not base64") from exc


def read(path: Path) -> bytes:
    """A request file's bytes; BadRequest names the file if it cannot be read. For a caller
    that keeps the very bytes it checked (`loads`)."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise BadRequest(f"{path}: request file not found") from exc
    except OSError as exc:
        raise BadRequest(f"{path}: cannot read request file: {exc.strerror or exc}") from exc


def load(path: Path, kind: str | None = None) -> Request:
    """Read and check a request file; BadRequest names the file and the field that is wrong."""
    return loads(read(path), Path(path), kind)


def loads(data: bytes, path: Path, kind: str | None = None) -> Request:
    """Check the bytes of a request file read from `path` (named in errors), as `load`.

    For a caller that must read the file its own way: root reads the node's own
    rotate-request.json from the service user's folder without following a symlink (safefs).
    """
    path = Path(path)
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError too
        raise BadRequest(f"{path}: not a JSON request file ({exc})") from exc
    if not isinstance(raw, dict) or raw.get("format") not in _FIELDS:
        raise BadRequest(f"{path}: field format: expected {ENROLL} or {ROTATE}")
    fmt = raw["format"]
    if kind is not None and fmt != kind:
        raise BadRequest(f"{path}: field format: this is a {fmt}, expected a {kind}")
    sig_fields = ("sig", "sig_old") if fmt == ROTATE else ("sig",)
    for name in (*_FIELDS[fmt], *sig_fields):
        if not isinstance(raw.get(name), str):
            raise BadRequest(f"{path}: field {name}: missing or not text")
    extra = set(raw) - {"format", *_FIELDS[fmt], *sig_fields}
    if extra:
        raise BadRequest(f"{path}: unknown field(s) {', '.join(sorted(extra))}")
    body = {"format": fmt, **{name: raw[name] for name in _FIELDS[fmt]}}
    try:
        signed = provenance.request_signed_bytes(body)
    except ValueError as exc:  # UnicodeEncodeError: a lone surrogate, valid in JSON, is not UTF-8
        raise BadRequest(f"{path}: a field is not UTF-8 text ({exc})") from exc
    pub_raw = _decode(raw, "sign_pub", str(path))
    if len(pub_raw) != 32:
        raise BadRequest(f"{path}: field sign_pub: expected 32 bytes, got {len(pub_raw)}")
    public = ed25519.Ed25519PublicKey.from_public_bytes(pub_raw)
    try:
        public.verify(_decode(raw, "sig", str(path)), signed)
    except InvalidSignature as exc:
        raise BadRequest(f"{path}: field sig: signature does not match sign_pub (file altered?)") from exc
    csr = None
    if fmt == ENROLL:
        try:
            csr = pki.load_csr(raw["csr"].encode(), f"{path}: field csr")
        except PKIError as exc:
            raise BadRequest(str(exc)) from exc
        if not csr.is_signature_valid:
            raise BadRequest(f"{path}: field csr: CSR signature is invalid")
        if pki.common_name(csr.subject) != raw["node_id"]:
            raise BadRequest(f"{path}: field csr: CN {pki.common_name(csr.subject)!r} is not the node id "
                             f"{raw['node_id']!r}")
    return Request(kind=fmt, node_id=raw["node_id"], sign_public=public, created=raw["created"],
                   actor=raw["actor"], host=raw["host"], fingerprint=_fingerprint(signed), csr=csr,
                   old_key_id=raw.get("old_key_id", ""),
                   old_signature=_decode(raw, "sig_old", str(path)) if fmt == ROTATE else b"",
                   signed_bytes=signed)
