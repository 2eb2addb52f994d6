"""HQ-signed control messages (acks, hot lists, configuration) sent down to nodes.

    message = [ body_bytes: bstr, signature: bstr ]
    signature = Ed25519(sk_HQ, [ "alpr-ctl-v1", kind, body_bytes ])

The body is a deterministic CBOR map with at least "v", "node" (or "*") and "t_ns". The node
checks the signature before it looks at anything in the body.

Only kinds meant for every node (BROADCAST_KINDS: hot lists, configuration, ingest generations)
may say "*": an ack
or a bundle addressed to "*" would act on every node that sees it (an ack deletes those
sequence numbers from the outbox), so it is refused.
"""
from __future__ import annotations

from typing import Any, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from transport import cbor
from transport.envelope import bstr_pair
from transport.errors import EncodingError, EnvelopeError

CONTEXT = "alpr-ctl-v1"
BROADCAST_KINDS = ("hotlist", "config", "ingest")


def sign(kind: str, body: Mapping[str, Any], key: ed25519.Ed25519PrivateKey) -> bytes:
    """Sign a control message body of the given kind ("ack", "hotlist", "config")."""
    body_bytes = cbor.dumps(dict(body))
    return cbor.dumps([body_bytes, key.sign(cbor.dumps([CONTEXT, kind, body_bytes]))])


def verify(kind: str, message: bytes, keys: list[ed25519.Ed25519PublicKey], node_id: str,
           max_bytes: int = 8 * 1024 * 1024) -> dict[str, Any]:
    """Check a control message against HQ's public key(s) and return its body.

    EnvelopeError with a reason (`oversize`, `malformed`, `signature`, `unsupported`,
    `binding`) for anything else; the body is parsed only once the signature holds.
    """
    if len(message) > max_bytes:
        raise EnvelopeError("oversize", f"{kind} message of {len(message)} bytes")
    body_bytes, signature = bstr_pair(message, f"{kind} message", "body bstr, signature bstr")
    signed = cbor.dumps([CONTEXT, kind, body_bytes])
    for key in keys:
        try:
            key.verify(signature, signed)
            break
        except InvalidSignature:
            continue
    else:
        raise EnvelopeError("signature", f"{kind} message not signed by HQ")
    try:
        body = cbor.loads(body_bytes)
    except EncodingError as exc:  # signed, but not a body we can read: callers catch EnvelopeError
        raise EnvelopeError("malformed", f"{kind} body is not deterministic CBOR ({exc})") from exc
    # `type(...) is int`: CBOR true decodes to Python True, which == 1.
    version = body.get("v") if isinstance(body, dict) else None
    if type(version) is not int or version != 1:
        raise EnvelopeError("unsupported", f"{kind} body field 'v' is {version!r}; only version 1 is read")
    allowed = (node_id, "*") if kind in BROADCAST_KINDS else (node_id,)
    if body.get("node") not in allowed:
        raise EnvelopeError("binding", f"{kind} message is for node {body.get('node')!r}, not {node_id!r}")
    return body
