"""Which signing key is a node's, provable without HQ's registry: the proofs made at enrolment
and at each key rotation, and their checks.

A node's first signing key is attested by the offline CA: the TLS client certificate it issues
at enrolment names the key in a URI subjectAltName, `urn:alpr:node-sign-key:sha256:<hex>` (the
SHA-256 of the key's 32 raw bytes), beside the node id in the subject CN. A rotated key is
attested by the node's rotation request, signed by both the new key and the key it replaces.
So a chain of proofs leads from the CA to every key a node ever signed with, and an evidence
package that carries them can be checked against the CA certificate alone, not only against
HQ's word (its signature over the registry's copy of the keys).

The request format (fields, the signed bytes) is defined here because both provisioning, which
makes and checks requests, and HQ's evidence verifier, which checks rotations, need it.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from transport import cbor
from transport.keys import key_id, raw_public

SIGN_KEY_URI = "urn:alpr:node-sign-key:sha256:"
# Kinds of proof: the certificate chain the CA issued at enrolment (node certificate, then the
# CA's), and the rotation request file exactly as the technician carried it to HQ.
CERTIFICATE = "certificate"
ROTATION = "rotation"
KINDS = (CERTIFICATE, ROTATION)

# Request files (provisioning.request makes and loads them).
ENROLL = "alpr-enroll-request-v1"
ROTATE = "alpr-rotate-request-v1"
REQUEST_CONTEXT = "alpr-request-v1"
REQUEST_FIELDS = {ENROLL: ("node_id", "sign_pub", "csr", "created", "actor", "host"),
                  ROTATE: ("node_id", "sign_pub", "old_key_id", "created", "actor", "host")}


# What cryptography raises, lazily, on a certificate's malformed names or extensions (the last
# two are not ValueErrors).
_MALFORMED = (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType)


@dataclass(frozen=True)
class KeyProof:
    """One proof that `key_id` is node `node_id`'s: `document` is a certificate chain (PEM) or a
    rotation request (JSON bytes), as `kind` says."""

    node_id: str
    key_id: str
    kind: str
    document: bytes


def sign_key_uri(public: ed25519.Ed25519PublicKey) -> str:
    """The subjectAltName URI that names a signing key in a node's certificate."""
    return SIGN_KEY_URI + hashlib.sha256(raw_public(public)).hexdigest()


def request_signed_bytes(body: dict[str, str]) -> bytes:
    """The bytes a request's signatures cover: CBOR of [context, {format, fields...}]."""
    return cbor.dumps([REQUEST_CONTEXT, body])


def certificate_problem(chain_pem: bytes, ca: x509.Certificate, node_id: str,
                        public: ed25519.Ed25519PublicKey) -> str | None:
    """Why the certificate chain does not prove `public` is `node_id`'s key as attested by `ca`,
    or None when it does: the first certificate must be issued (signed) by `ca`, name `node_id`
    in its CN and the key in a subjectAltName URI. Validity dates are not checked: they bound
    the TLS key's use, and the signing key's window is the registry's (keys, revocation)."""
    try:
        certs = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        return f"not a PEM certificate chain ({exc})"
    cert = certs[0]
    # cryptography parses names and extensions when first read: a malformed one raises then
    try:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            return f"certificate {cert.serial_number:x} was not issued by the CA {ca_name(ca) or '(no name)'!r}"
        if _cn(cert.subject) != node_id:
            return f"certificate {cert.serial_number:x} is for {_cn(cert.subject)!r}, not node {node_id}"
        try:
            uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
                x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            uris = []
    except _MALFORMED as exc:
        return f"certificate {cert.serial_number:x} is malformed ({exc})"
    if sign_key_uri(public) not in uris:
        return f"certificate {cert.serial_number:x} does not name signing key {key_id(public)}"
    return None


def ca_name(ca: x509.Certificate) -> str:
    """A CA certificate's CN for messages ("" when it has none or it cannot be read)."""
    try:
        return _cn(ca.subject)
    except _MALFORMED:
        return ""


def carried_ca(chain_pem: bytes) -> x509.Certificate | None:
    """The CA certificate a chain carries after the node's (None if it has none): what a
    verifier uses when it was given no CA certificate of its own, which proves nothing."""
    try:
        certs = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        return None
    return certs[1] if len(certs) > 1 else None


def rotation_problem(request: bytes, node_id: str, new: ed25519.Ed25519PublicKey,
                     old: ed25519.Ed25519PublicKey) -> str | None:
    """Why the rotation request does not prove `old` handed over to `new` for `node_id`, or None
    when it does: both keys signed it, and it names the node, the new key and the old key's id."""
    try:
        raw = json.loads(request)
    except (ValueError, RecursionError) as exc:
        return f"not a JSON request ({exc})"
    if not isinstance(raw, dict) or raw.get("format") != ROTATE:
        return f"field format: not {ROTATE}"
    fields = REQUEST_FIELDS[ROTATE]
    if not all(isinstance(raw.get(name), str) for name in (*fields, "sig", "sig_old")):
        return "fields missing or not text"
    if raw["node_id"] != node_id:
        return f"field node_id: {raw['node_id']!r}, not {node_id!r}"
    if raw["old_key_id"] != key_id(old):
        return f"field old_key_id: {raw['old_key_id']}, not {key_id(old)}"
    try:
        sign_pub = base64.b64decode(raw["sign_pub"], validate=True)
        sig, sig_old = (base64.b64decode(raw[name], validate=True) for name in ("sig", "sig_old"))
    except (binascii.Error, ValueError):
        return "fields sign_pub, sig, sig_old: not base64"
    if sign_pub != raw_public(new):
        return f"field sign_pub: not key {key_id(new)}"
    try:
        signed = request_signed_bytes({"format": ROTATE, **{name: raw[name] for name in fields}})
    except ValueError:  # UnicodeEncodeError: a lone surrogate, valid in JSON, is not UTF-8
        return f"fields {', '.join(fields)}: not encodable as UTF-8 text"
    for name, signature, public in (("sig", sig, new), ("sig_old", sig_old, old)):
        try:
            public.verify(signature, signed)
        except InvalidSignature:
            return f"field {name}: not signed by key {key_id(public)}"
    return None


def rotation_old_key_id(request: bytes) -> str | None:
    """The `old_key_id` a rotation request names (None if it names none): where its chain goes next."""
    try:
        raw = json.loads(request)
    except (ValueError, RecursionError):
        return None
    value = raw.get("old_key_id") if isinstance(raw, dict) else None
    return value if isinstance(value, str) else None


def _cn(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else ""
    return value if isinstance(value, str) else value.decode(errors="replace")
