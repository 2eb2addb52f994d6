"""Read payload bounds: what `from_wire` accepts must fit HQ's SQL columns, or one signed read
could fail a whole store batch (conf is a 32-bit INTEGER on PostgreSQL; text cannot hold NUL)."""
from __future__ import annotations

from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from hq.ingest import check_event
from tests.support import vectors
from transport import envelope
from transport.errors import EnvelopeError
from transport.keys import key_id
from transport.payload import SCALE, ReadPayload

pytestmark = pytest.mark.unit


def wire(**over):
    w = vectors.sample_read().to_wire()
    w.update(over)
    return w


def refused(w) -> str:
    with pytest.raises(EnvelopeError) as err:
        ReadPayload.from_wire(w)
    assert err.value.reason == "payload"
    return str(err.value)


@pytest.mark.parametrize("field", ["conf", "region_conf"])
def test_confidences_are_bounded_to_basis_points(field):
    assert ReadPayload.from_wire(wire(**{field: 0})) is not None
    assert ReadPayload.from_wire(wire(**{field: SCALE})) is not None
    for bad in (SCALE + 1, 2**31, 2**63 - 1, -1):
        assert f"field {field}:" in refused(wire(**{field: bad}))


def test_per_character_and_alternate_confidences_are_bounded_and_named_by_index():
    assert "field char_conf[2]:" in refused(wire(char_conf=[9900, 9800, 2**31]))
    assert "field char_conf[0]:" in refused(wire(char_conf=[-5]))
    assert "field alts[1]:" in refused(wire(alts=[["7ABC123", 9731], ["7A8C123", SCALE + 1]]))


def test_what_a_node_sends_is_always_in_range():
    # to_units clamps, so an honest node never trips the bound, whatever its models say.
    read = vectors.sample_read()
    odd = replace(read, confidence=1.7, region_confidence=-0.2, char_confidences=(1.2, 0.5))
    back = ReadPayload.from_wire(odd.to_wire())
    assert (back.confidence, back.region_confidence, back.char_confidences) == (1.0, 0.0, (1.0, 0.5))


@pytest.mark.parametrize("field", ["plate", "node", "site", "camera", "trigger", "region", "trigger_id", "lane"])
def test_nul_in_text_is_refused_naming_the_field(field):
    assert f"field {field}: text must not contain U+0000" in refused(wire(**{field: "7AB\x00C"}))


def test_nul_in_nested_text_is_refused():
    assert "field alts[0]:" in refused(wire(alts=[["7AB\x00", 9000]]))
    assert "field models[" in refused(wire(models={"ocr": "alpr-ocr\x00@1"}))
    assert "field models[" in refused(wire(models={"o\x00cr": "alpr-ocr@1"}))
    assert "field hotlist[" in refused(wire(kind="alert", hotlist={"reason": "stolen\x00"}))


def test_hotlist_must_be_text_to_text():
    assert "field hotlist: expected a map of text to text" in refused(wire(kind="alert", hotlist={"entry": 7}))
    ok = ReadPayload.from_wire(wire(kind="alert", hotlist={"list_version": "3", "entry": "12"}))
    assert ok.hotlist == {"list_version": "3", "entry": "12"}


def test_integers_stay_below_2_63():
    assert "field t_ns:" in refused(wire(t_ns=2**63))
    assert "field seq:" in refused(wire(seq=2**63))


def test_vector_read_still_valid():
    assert ReadPayload.from_wire(vectors.sample_read().to_wire()) == vectors.sample_read()


def test_signed_read_with_out_of_range_conf_is_refused_when_opened():
    # The reviewer's poison message: validly signed by an enrolled node, conf = 2^31.
    node, hq = ed25519.Ed25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()
    read = vectors.sample_read()
    message = envelope.seal(wire(conf=2**31), kind="read", node_id=read.node_id, seq=read.seq,
                            time_ns=read.capture_time_ns, signing_key=node, recipient=hq.public_key())
    opened = envelope.open_envelope(message, signer_for=lambda h: node.public_key(),
                                    decryption_keys={key_id(hq.public_key()): hq})
    assert "field conf:" in refused(opened.payload)


def test_event_text_without_nul():
    check_event({"event": "no_read", "t_ns": 1})
    with pytest.raises(EnvelopeError, match="event field event: text must not contain U\\+0000"):
        check_event({"event": "no_\x00read", "t_ns": 1})
