"""The read envelope: sign with the node's Ed25519 key, encrypt for HQ with HPKE (RFC 9180).

Wire message (deterministic CBOR, see docs/wire-format.md):

    message  = [ header_bytes: bstr, sealed: bstr ]
    header   = { "v": 1, "kind", "node", "seq", "t_ns", "sk", "rk" }        (cleartext)
    sealed   = HPKE-Base-Seal(pk_HQ, info = INFO_PREFIX || SHA-256(header_bytes), aad = "",
                              pt = [ payload_bytes: bstr, signature: bstr ])
    signature = Ed25519(sk_node, [ "alpr-sig-v1", header_bytes, payload_bytes ])

The header travels in clear for routing and dedup, and is bound twice: into HPKE's key
schedule through `info` (RFC 9180 §8.1: single-shot APIs carry associated data in info) and
under the node's signature. The signature is made over the exact bytes sent, never over
re-serialised data.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

from transport import cbor
from transport.errors import EncodingError, EnvelopeError
from transport.keys import key_id

VERSION = 1
INFO_PREFIX = b"alpr-envelope-v1\x00"
SIG_CONTEXT = "alpr-sig-v1"
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# A real header is under 200 bytes (node ids are at most 63 characters). It is decoded before
# anything is authenticated, so it gets a small limit of its own.
MAX_HEADER_BYTES = 1024
# A read's payload is about a hundred CBOR items (see docs/wire-format.md); the limit leaves
# room for new optional fields, and keeps what one signed payload costs to decode (a node's
# key may be stolen before it is revoked) near the cost of its decryption.
MAX_PAYLOAD_ITEMS = 4096
HEADER_FIELDS = ("v", "kind", "node", "seq", "t_ns", "sk", "rk")
HPKE_SUITE = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.CHACHA20_POLY1305)
ENC_LEN = 32
TAG_LEN = 16


@dataclass(frozen=True)
class Header:
    """The cleartext header: what the broker and anything on the path can see."""

    kind: str
    node_id: str
    seq: int
    time_ns: int
    signer_key_id: str
    recipient_key_id: str
    version: int = VERSION

    def to_wire(self) -> dict[str, Any]:
        return {
            "v": self.version,
            "kind": self.kind,
            "node": self.node_id,
            "seq": self.seq,
            "t_ns": self.time_ns,
            "sk": self.signer_key_id,
            "rk": self.recipient_key_id,
        }


@dataclass(frozen=True)
class Opened:
    """A verified, decrypted envelope."""

    header: Header
    header_bytes: bytes
    payload: dict[str, Any]
    payload_bytes: bytes
    signature: bytes


def hpke_info(header_bytes: bytes) -> bytes:
    """The HPKE `info` that binds the ciphertext to this header."""
    return INFO_PREFIX + hashlib.sha256(header_bytes).digest()


def signed_bytes(header_bytes: bytes, payload_bytes: bytes) -> bytes:
    """The exact bytes the node signs."""
    return cbor.dumps([SIG_CONTEXT, header_bytes, payload_bytes])


def seal(
    payload: Mapping[str, Any],
    *,
    kind: str,
    node_id: str,
    seq: int,
    time_ns: int,
    signing_key: ed25519.Ed25519PrivateKey,
    recipient: x25519.X25519PublicKey,
) -> bytes:
    """Sign `payload` as the node and encrypt it for HQ; returns the wire message."""
    header = Header(kind, node_id, seq, time_ns, key_id(signing_key.public_key()), key_id(recipient))
    header_bytes = cbor.dumps(header.to_wire())
    payload_bytes = cbor.dumps(dict(payload))
    signature = signing_key.sign(signed_bytes(header_bytes, payload_bytes))
    plaintext = cbor.dumps([payload_bytes, signature])
    sealed = HPKE_SUITE.encrypt(plaintext, recipient, info=hpke_info(header_bytes))
    return cbor.dumps([header_bytes, sealed])


def bstr_pair(data: bytes, what: str, shape: str) -> tuple[bytes, bytes]:
    """Decode the `[bstr, bstr]` framing all our messages use; EnvelopeError("malformed") if not.

    This runs before any signature or decryption, so it reads only the heads of the two
    strings (`cbor.loads_bstr_array`): anything else is refused without being decoded.
    """
    try:
        first, second = cbor.loads_bstr_array(data, 2)
    except EncodingError as exc:
        raise EnvelopeError("malformed", f"{what} must be [{shape}] ({exc})") from exc
    return first, second


def read_header(message: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> tuple[Header, bytes, bytes]:
    """Parse the cleartext part of a message without trusting it: (header, header_bytes, sealed)."""
    if len(message) > max_bytes:
        raise EnvelopeError("oversize", f"{len(message)} bytes exceeds the {max_bytes} byte limit")
    header_bytes, sealed = bstr_pair(message, "envelope", "header bstr, sealed bstr")
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise EnvelopeError("oversize",
                            f"header of {len(header_bytes)} bytes exceeds the {MAX_HEADER_BYTES} byte limit")
    try:
        raw = cbor.loads(header_bytes)
    except EncodingError as exc:
        raise EnvelopeError("malformed", f"header is not deterministic CBOR ({exc})") from exc
    if not isinstance(raw, dict):
        raise EnvelopeError("malformed", "header is not a map")
    # `type(...) is int`: CBOR true decodes to Python True, which == 1, and would be a second
    # valid encoding of a version 1 header.
    if type(raw.get("v")) is not int or raw["v"] != VERSION:
        raise EnvelopeError("unsupported", f"header field v: version {raw.get('v')!r} is not supported")
    if set(raw) != set(HEADER_FIELDS):
        raise EnvelopeError("malformed", f"header fields must be exactly {', '.join(HEADER_FIELDS)}")
    text = ("kind", "node", "sk", "rk")
    if not all(isinstance(raw[k], str) for k in text):
        raise EnvelopeError("malformed", "header fields kind, node, sk, rk must be text")
    if not all(isinstance(raw[k], int) and not isinstance(raw[k], bool) and 0 <= raw[k] < 2**63
               for k in ("seq", "t_ns")):
        # 63 bits: they must fit the signed 64-bit integers of SQL stores.
        raise EnvelopeError("malformed", "header fields seq and t_ns must be unsigned integers below 2^63")
    header = Header(raw["kind"], raw["node"], raw["seq"], raw["t_ns"], raw["sk"], raw["rk"])
    return header, header_bytes, sealed


def open_envelope(
    message: bytes,
    *,
    signer_for: Callable[[Header], ed25519.Ed25519PublicKey],
    decryption_keys: Mapping[str, x25519.X25519PrivateKey],
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> Opened:
    """Decrypt and verify a message; raise EnvelopeError with a reason on any failure.

    `signer_for(header)` returns the enrolled public key for the header's node and key id,
    or raises EnvelopeError("unknown-node" / "revoked" / ...) itself; it is called before
    any decryption so unknown senders cost nothing. `decryption_keys` maps HQ key ids to
    private keys (several during a rotation).
    """
    header, header_bytes, sealed = read_header(message, max_bytes)
    public = signer_for(header)
    if key_id(public) != header.signer_key_id:
        raise EnvelopeError("wrong-key", f"node {header.node_id}: signer key id {header.signer_key_id} is not enrolled")
    private = decryption_keys.get(header.recipient_key_id)
    if private is None:
        raise EnvelopeError("unknown-recipient", f"no HQ key with id {header.recipient_key_id}")
    if len(sealed) < ENC_LEN + TAG_LEN:
        raise EnvelopeError("malformed", "sealed part too short")
    try:
        plaintext = HPKE_SUITE.decrypt(sealed, private, info=hpke_info(header_bytes))
    except Exception as exc:  # cryptography raises InvalidTag or ValueError; one opaque reason for all
        raise EnvelopeError("decrypt", f"node {header.node_id} seq {header.seq}: cannot decrypt (tampered or wrong key)") from exc
    payload_bytes, signature = bstr_pair(plaintext, "decrypted body", "payload bstr, signature bstr")
    try:
        public.verify(signature, signed_bytes(header_bytes, payload_bytes))
    except InvalidSignature as exc:
        raise EnvelopeError("signature", f"node {header.node_id} seq {header.seq}: bad signature") from exc
    try:
        payload = cbor.loads(payload_bytes, max_items=MAX_PAYLOAD_ITEMS)
    except EncodingError as exc:
        raise EnvelopeError("malformed", f"payload is not CBOR ({exc})") from exc
    if not isinstance(payload, dict):
        raise EnvelopeError("malformed", "payload is not a map")
    for field_name, expected in (("node", header.node_id), ("seq", header.seq), ("kind", header.kind)):
        if payload.get(field_name) != expected:
            raise EnvelopeError("binding", f"payload field {field_name} does not match the header")
    # The header's t_ns is what revocation and key retirement are judged by; the payload's
    # t_ns is what HQ stores as the capture time. Unbound, a stolen key could backdate only
    # the header (accepted within the revocation grace) and have a read stored as made after
    # the revocation. Every read and event payload has t_ns (ingest's schema check requires
    # it), so it must be the header's.
    if "t_ns" in payload and (type(payload["t_ns"]) is not int or payload["t_ns"] != header.time_ns):
        raise EnvelopeError("binding", "payload field t_ns does not match the header")
    return Opened(header, header_bytes, payload, payload_bytes, signature)
