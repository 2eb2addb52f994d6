"""Build the wire-format test vectors from fixed keys and inputs (see docs/wire-format.md)."""
from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from tests.support import hpke_ref
from transport import cbor, envelope
from transport.keys import key_id, raw_public
from transport.payload import Candidate, ReadPayload

NODE_SEED = bytes(range(1, 33))
HQ_SEED = bytes(range(33, 65))
EPHEMERAL_SEED = bytes(range(65, 97))


def keys():
    node = ed25519.Ed25519PrivateKey.from_private_bytes(NODE_SEED)
    hq = x25519.X25519PrivateKey.from_private_bytes(HQ_SEED)
    eph = x25519.X25519PrivateKey.from_private_bytes(EPHEMERAL_SEED)
    return node, hq, eph


def sample_read() -> ReadPayload:
    return ReadPayload(
        plate="7ABC123", confidence=0.9731, capture_time_ns=1_790_000_000_123_456_789, node_id="node-0001",
        site_id="site-main-st", camera_id="cam0", crop_jpeg=bytes.fromhex("ffd8ffe000104a464946") + b"\x00" * 6 + bytes.fromhex("ffd9"),
        char_confidences=(0.99, 0.98, 0.97, 0.99, 0.95, 0.99, 0.96),
        candidates=(Candidate("7ABC123", 0.9731), Candidate("7A8C123", 0.0212)),
        region="ca", region_confidence=0.91, clock_sync="synced", direction="approaching",
        trigger_source="loop", trigger_id="loop0-42", lane="1", box=(812, 604, 160, 80),
        models={"detector": "alpr-det@1", "ocr": "alpr-ocr@1"}, seq=42,
    )


def build() -> dict[str, str]:
    """Every intermediate value of one envelope, as hex strings."""
    node, hq, eph = keys()
    read = sample_read()
    header = envelope.Header("read", read.node_id, read.seq, read.capture_time_ns, key_id(node.public_key()),
                             key_id(hq.public_key()))
    header_bytes = cbor.dumps(header.to_wire())
    payload_bytes = cbor.dumps(read.to_wire())
    to_sign = envelope.signed_bytes(header_bytes, payload_bytes)
    signature = node.sign(to_sign)
    plaintext = cbor.dumps([payload_bytes, signature])
    info = envelope.hpke_info(header_bytes)
    sealed = hpke_ref.seal(hq.public_key(), eph, info, b"", plaintext)
    message = cbor.dumps([header_bytes, sealed])
    return {
        "node_ed25519_seed": NODE_SEED.hex(),
        "node_ed25519_public": raw_public(node.public_key()).hex(),
        "hq_x25519_private": HQ_SEED.hex(),
        "hq_x25519_public": raw_public(hq.public_key()).hex(),
        "ephemeral_x25519_private": EPHEMERAL_SEED.hex(),
        "header_cbor": header_bytes.hex(),
        "payload_cbor": payload_bytes.hex(),
        "signed_bytes": to_sign.hex(),
        "signature": signature.hex(),
        "hpke_info": info.hex(),
        "hpke_plaintext": plaintext.hex(),
        "sealed": sealed.hex(),
        "message": message.hex(),
    }


if __name__ == "__main__":
    import json
    print(json.dumps(build(), indent=2))
