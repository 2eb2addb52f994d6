"""The provisioning bundle: everything a node needs from HQ, signed by HQ's Ed25519 key.

    file   = CBOR [ "alpr-bundle-v1", hq_sign_pub: bstr(32), message ]
    message = transport.signed message of kind "bundle" (context "alpr-ctl-v1", so it can
              never be mistaken for an ack, hot list or config message)
    body   = { v: 1, node, t_ns, expires, id, site, camera, lane, broker_host, broker_port,
               node_sign_pub, cert, ca, hq_hpke_pub, hq_sign_pub, issued_by }

A bundle holds no secret. The HQ key carried in the file is only a candidate: the node
trusts it only if it matches what the node already trusts (see `verify`), and the signed
body repeats it so it cannot be swapped.
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import asdict, dataclass

from cryptography.hazmat.primitives.asymmetric import ed25519

from provisioning.errors import BadBundle
from transport import cbor, signed
from transport.errors import EncodingError, EnvelopeError

MAGIC = "alpr-bundle-v1"
KIND = "bundle"
MAX_BYTES = 256 * 1024


@dataclass(frozen=True)
class Bundle:
    """A bundle's body: what HQ says about one node."""

    node: str
    site: str
    camera: str
    lane: str
    broker_host: str
    broker_port: int
    node_sign_pub: bytes
    cert: bytes
    ca: bytes
    hq_hpke_pub: bytes
    hq_sign_pub: bytes
    issued_by: str
    t_ns: int
    expires: int
    id: str


def fingerprint(raw_public: bytes) -> str:
    """An HQ signing key's fingerprint: SHA-256 of its 32 raw bytes, hex (the key id is its first 16)."""
    return hashlib.sha256(raw_public).hexdigest()


def normalise_pin(text: str) -> str:
    """A typed fingerprint or key id without spaces, colons or dashes, lower case."""
    pin = "".join(ch for ch in text.lower() if ch not in " :-")
    if len(pin) < 16 or any(ch not in "0123456789abcdef" for ch in pin):
        raise BadBundle(f"--hq-key-id {text!r}: expected at least 16 hex digits of HQ's signing key fingerprint")
    return pin


def build(*, node: str, site: str, camera: str, lane: str, broker_host: str, broker_port: int,
          node_sign_pub: bytes, cert: bytes, ca: bytes, hq_hpke_pub: bytes, issued_by: str,
          sign_key: ed25519.Ed25519PrivateKey, valid_s: float, now_ns: int | None = None) -> bytes:
    """Make and sign a bundle file's bytes."""
    from transport.keys import raw_public
    now_ns = time.time_ns() if now_ns is None else now_ns
    hq_pub = raw_public(sign_key.public_key())
    body = Bundle(node=node, site=site, camera=camera, lane=lane, broker_host=broker_host,
                  broker_port=broker_port, node_sign_pub=node_sign_pub, cert=cert, ca=ca,
                  hq_hpke_pub=hq_hpke_pub, hq_sign_pub=hq_pub, issued_by=issued_by, t_ns=now_ns,
                  expires=now_ns + int(valid_s * 1e9), id=os.urandom(8).hex())
    message = signed.sign(KIND, {"v": 1, **asdict(body)}, sign_key)
    return cbor.dumps([MAGIC, hq_pub, message])


def candidate_key(data: bytes, source: str) -> tuple[bytes, bytes]:
    """(HQ public key the file names, signed message), without trusting either."""
    if len(data) > MAX_BYTES:
        raise BadBundle(f"{source}: {len(data)} bytes is too large for a provisioning bundle")
    try:
        outer = cbor.loads(data)
    except EncodingError as exc:
        raise BadBundle(f"{source}: not a provisioning bundle ({exc})") from exc
    if not (isinstance(outer, list) and len(outer) == 3 and outer[0] == MAGIC
            and isinstance(outer[1], bytes) and len(outer[1]) == 32 and isinstance(outer[2], bytes)):
        raise BadBundle(f"{source}: not a provisioning bundle (expected [{MAGIC!r}, key, message])")
    return outer[1], outer[2]


def verify(data: bytes, source: str, *, node_id: str, trusted: ed25519.Ed25519PublicKey,
           now_ns: int | None = None) -> Bundle:
    """Check the signature with the `trusted` HQ key, the node binding and the expiry."""
    from transport.keys import raw_public
    named, message = candidate_key(data, source)
    trusted_raw = raw_public(trusted)
    if named != trusted_raw:
        raise BadBundle(f"{source}: signed by HQ key {fingerprint(named)[:16]}, but this node trusts HQ key "
                        f"{fingerprint(trusted_raw)[:16]}; not from our HQ (or check --hq-key-id)")
    try:
        body = signed.verify(KIND, message, [trusted], node_id, max_bytes=MAX_BYTES)
    except EnvelopeError as exc:
        if exc.reason == "binding":
            raise BadBundle(f"{source}: field node: bundle is for node {_node_of(message)!r}, this node is "
                            f"{node_id!r}") from exc
        raise BadBundle(f"{source}: signature check failed ({exc.reason}): the bundle was altered or not made "
                        "by HQ") from exc
    fields = set(Bundle.__dataclass_fields__)
    missing = fields - set(body)
    if missing:
        raise BadBundle(f"{source}: field(s) missing: {', '.join(sorted(missing))}")
    for name in sorted(fields):
        expected = int if name in ("broker_port", "t_ns", "expires") else (
            bytes if name in ("node_sign_pub", "cert", "ca", "hq_hpke_pub", "hq_sign_pub") else str)
        if not isinstance(body[name], expected) or isinstance(body[name], bool):
            raise BadBundle(f"{source}: field {name}: expected {expected.__name__}")
    for name in ("node_sign_pub", "hq_hpke_pub", "hq_sign_pub"):
        if len(body[name]) != 32:
            raise BadBundle(f"{source}: field {name}: expected 32 bytes, got {len(body[name])}")
    bundle = Bundle(**{k: body[k] for k in fields})
    if bundle.hq_sign_pub != trusted_raw:
        raise BadBundle(f"{source}: field hq_sign_pub: does not match the key that signed the bundle")
    now_ns = time.time_ns() if now_ns is None else now_ns
    if now_ns >= bundle.expires:
        when = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(bundle.expires / 1e9))
        raise BadBundle(f"{source}: field expires: the bundle expired at {when}; ask HQ for a new one "
                        f"(alpr-provision node bundle {bundle.node})")
    return bundle


def _node_of(message: bytes) -> object:
    try:
        return cbor.loads(cbor.loads(message)[0]).get("node")
    except (EncodingError, AttributeError, IndexError, TypeError):
        return None
