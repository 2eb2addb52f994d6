"""The read envelope: exact test vectors, round trips, and every way a message can be bad."""
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from tests.support import vectors
from transport import cbor, envelope
from transport.errors import EnvelopeError
from transport.keys import key_id
from transport.payload import ReadPayload

pytestmark = pytest.mark.unit
VECTORS = json.loads((Path(__file__).parent.parent / "vectors" / "envelope-v1.json").read_text())


def test_committed_vectors_are_reproduced_exactly():
    assert vectors.build() == VECTORS


def test_production_opens_the_vector_message():
    node, hq, _ = vectors.keys()
    opened = envelope.open_envelope(bytes.fromhex(VECTORS["message"]), signer_for=lambda h: node.public_key(),
                                    decryption_keys={key_id(hq.public_key()): hq})
    assert opened.payload_bytes.hex() == VECTORS["payload_cbor"]
    assert opened.signature.hex() == VECTORS["signature"]
    assert ReadPayload.from_wire(opened.payload) == vectors.sample_read()


def test_production_seal_matches_vector_up_to_the_random_hpke_part():
    node, hq, _ = vectors.keys()
    read = vectors.sample_read()
    message = envelope.seal(read.to_wire(), kind="read", node_id=read.node_id, seq=read.seq,
                            time_ns=read.capture_time_ns, signing_key=node, recipient=hq.public_key())
    header_bytes, sealed = cbor.loads(message)
    assert header_bytes.hex() == VECTORS["header_cbor"]
    assert sealed != bytes.fromhex(VECTORS["sealed"])  # fresh ephemeral key each time
    opened = envelope.open_envelope(message, signer_for=lambda h: node.public_key(),
                                    decryption_keys={key_id(hq.public_key()): hq})
    assert opened.signature.hex() == VECTORS["signature"]  # Ed25519 is deterministic


@pytest.fixture
def keys():
    return ed25519.Ed25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()


def seal(keys, payload=None, **over):
    node, hq = keys
    args = dict(kind="read", node_id="n1", seq=7, time_ns=123, signing_key=node, recipient=hq.public_key())
    args.update(over)
    body = payload if payload is not None else {"kind": args["kind"], "node": args["node_id"], "seq": args["seq"]}
    return envelope.seal(body, **args)


def open_(keys, message, signer=None):
    node, hq = keys
    return envelope.open_envelope(message, signer_for=lambda h: signer or node.public_key(),
                                  decryption_keys={key_id(hq.public_key()): hq})


def reason(keys, message, signer=None):
    with pytest.raises(EnvelopeError) as info:
        open_(keys, message, signer)
    return info.value.reason


def test_round_trip(keys):
    opened = open_(keys, seal(keys))
    assert opened.header.seq == 7 and opened.payload["node"] == "n1"


def test_forged_signature_by_another_key(keys):
    forger = ed25519.Ed25519PrivateKey.generate()
    message = seal(keys, signing_key=forger)
    # The forger's key id is not the enrolled one.
    assert reason(keys, message) == "wrong-key"


def test_forged_signature_with_enrolled_key_id(keys):
    node, hq = keys
    forger = ed25519.Ed25519PrivateKey.generate()
    body = {"kind": "read", "node": "n1", "seq": 7}
    header = envelope.Header("read", "n1", 7, 123, key_id(node.public_key()), key_id(hq.public_key()))
    hb = cbor.dumps(header.to_wire())
    pb = cbor.dumps(body)
    sig = forger.sign(envelope.signed_bytes(hb, pb))
    sealed = envelope.HPKE_SUITE.encrypt(cbor.dumps([pb, sig]), hq.public_key(), info=envelope.hpke_info(hb))
    assert reason(keys, cbor.dumps([hb, sealed])) == "signature"


def test_tampered_header_breaks_decryption(keys):
    header_bytes, sealed = cbor.loads(seal(keys))
    header = cbor.loads(header_bytes)
    header["seq"] = 8
    assert reason(keys, cbor.dumps([cbor.dumps(header), sealed])) == "decrypt"


def test_tampered_ciphertext(keys):
    header_bytes, sealed = cbor.loads(seal(keys))
    flipped = bytearray(sealed)
    flipped[-20] ^= 1
    assert reason(keys, cbor.dumps([header_bytes, bytes(flipped)])) == "decrypt"


def test_payload_must_match_header(keys):
    message = seal(keys, payload={"kind": "read", "node": "someone-else", "seq": 7})
    assert reason(keys, message) == "binding"


@pytest.mark.parametrize("garbage", [b"", b"\x00", b"hello world", b"\x82\x40", bytes(1000)])
def test_garbage(keys, garbage):
    assert reason(keys, garbage) == "malformed"


def test_oversize(keys):
    assert reason(keys, b"\x00" * (envelope.MAX_MESSAGE_BYTES + 1)) == "oversize"


def test_unsupported_version(keys):
    header_bytes, sealed = cbor.loads(seal(keys))
    header = cbor.loads(header_bytes)
    header["v"] = 2
    assert reason(keys, cbor.dumps([cbor.dumps(header), sealed])) == "unsupported"


def test_unknown_recipient_key(keys):
    node, _ = keys
    other_hq = x25519.X25519PrivateKey.generate()
    assert reason(keys, seal(keys, recipient=other_hq.public_key())) == "unknown-recipient"


def test_read_payload_validation_names_the_field():
    wire = vectors.sample_read().to_wire()
    wire["conf"] = "high"
    with pytest.raises(EnvelopeError, match="field conf"):
        ReadPayload.from_wire(wire)
    del wire["conf"]
    with pytest.raises(EnvelopeError, match="field conf: missing"):
        ReadPayload.from_wire(wire)
