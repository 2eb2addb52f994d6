"""Security review of transport/: each test here demonstrates a defect found by the review
(it fails on the code before the fix) and pins the fix.

The threat model is an IoT one: nodes sit on poles and can be opened, so an attacker may hold
one node's TLS certificate and key (and so publish on that node's topics) or, for a while, a
stolen node signing key; HQ and the broker are trusted, the network is not.
"""
from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from tests.unit.test_mqtt_link_stop import _self_signed
from transport import atomic, cbor, envelope, signed, topics
from transport.errors import EnvelopeError, KeyFileError
from transport.keys import key_id
from transport.mqtt import BrokerSettings, MqttLink
from transport.outbox import Outbox
from transport.registry import Registry
from transport.uplink import Uplink, UplinkStats

pytestmark = pytest.mark.unit

MiB = 1024 * 1024


# -- decoding cost before any authentication ------------------------------------------------
class _DecodeCounter:
    """Counts the CBOR items the generic decoder builds (cbor._decode calls) while active."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = cbor._decode

        def counting(*args):
            self.calls += 1
            return real(*args)
        monkeypatch.setattr(cbor, "_decode", counting)


def _reason(call) -> str:
    with pytest.raises(EnvelopeError) as info:
        call()
    return info.value.reason


def test_an_outer_structure_that_is_not_two_byte_strings_is_refused_without_decoding_it(monkeypatch) -> None:
    # 4 MiB (the ingest limit) of one CBOR array of ~4 million zeros: before the fix the whole
    # array was decoded into a Python list (about a second of CPU on the ingest thread, per
    # message) before its shape was checked, by anyone who can publish on a node topic.
    n = 4 * MiB - 8
    message = bytes([0x9A]) + n.to_bytes(4, "big") + bytes(n)
    counter = _DecodeCounter(monkeypatch)
    assert _reason(lambda: envelope.read_header(message)) == "malformed"
    assert counter.calls < 100


def test_a_huge_header_is_refused_before_it_is_decoded(monkeypatch) -> None:
    # A real header is under 200 bytes; a 4 MiB map of small integers took ~1.5 s to decode.
    body = bytearray()
    count = 0
    while len(body) < 4 * MiB - 64:
        body += cbor.dumps(count) + b"\x00"
        count += 1
    header_bytes = bytes([0xBA]) + count.to_bytes(4, "big") + bytes(body)
    message = cbor.dumps([header_bytes, bytes(48)])
    counter = _DecodeCounter(monkeypatch)
    assert _reason(lambda: envelope.read_header(message)) == "oversize"
    assert counter.calls < 100


def test_a_control_message_of_another_shape_is_refused_without_decoding_it(monkeypatch) -> None:
    hq = ed25519.Ed25519PrivateKey.generate()
    n = 2 * MiB
    message = bytes([0x9A]) + n.to_bytes(4, "big") + bytes(n)
    counter = _DecodeCounter(monkeypatch)
    assert _reason(lambda: signed.verify("ack", message, [hq.public_key()], "n1")) == "malformed"
    assert counter.calls < 100


def test_the_pair_decoder_keeps_the_strict_rules() -> None:
    good = cbor.dumps([b"a", b"bc"])
    assert envelope.bstr_pair(good, "x", "a, b") == (b"a", b"bc")
    for bad in (good + b"\x00",                        # trailing bytes
                cbor.dumps([b"a", b"b", b"c"]),         # three items
                cbor.dumps([b"a", "b"]),                # text, not bytes
                cbor.dumps([b"a"]),                     # one item
                bytes([0x82, 0x58, 0x01, 0x61, 0x41, 0x62]),  # non-shortest length head
                bytes([0x9F, 0x41, 0x61, 0x41, 0x62, 0xFF]),  # indefinite-length array
                bytes([0x82, 0x41, 0x61, 0x45, 0x62]),  # truncated second string
                b""):
        assert _reason(lambda bad=bad: envelope.bstr_pair(bad, "x", "a, b")) == "malformed", bad.hex()


def test_a_signed_payload_bomb_is_refused_at_its_head(monkeypatch) -> None:
    # Only a holder of an enrolled key gets this far, but a node's key can be stolen before it
    # is revoked: a signed 4 MiB payload of one-byte items cost ~1.6 s of CPU to decode, more
    # than a hundred times a 4 MiB crop, so one node could stall ingest for every other.
    node = ed25519.Ed25519PrivateKey.generate()
    hq = x25519.X25519PrivateKey.generate()
    wire = {"kind": "read", "node": "n1", "seq": 1, "t_ns": 5, "x": [0] * (4 * MiB - 4096)}
    message = envelope.seal(wire, kind="read", node_id="n1", seq=1, time_ns=5, signing_key=node,
                            recipient=hq.public_key())
    counter = _DecodeCounter(monkeypatch)
    assert _reason(lambda: envelope.open_envelope(
        message, signer_for=lambda h: node.public_key(),
        decryption_keys={key_id(hq.public_key()): hq})) == "malformed"
    assert counter.calls < 100


def test_the_item_budget_leaves_room_for_every_real_payload() -> None:
    from dataclasses import replace

    from tests.support import vectors
    from transport.payload import Candidate

    read = vectors.sample_read()
    alert = replace(read, kind="alert", char_confidences=(0.9,) * 16,
                    candidates=tuple(Candidate("ABCDEFGH", 0.5) for _ in range(10)),
                    models={f"stage{i}": "model@1" for i in range(8)},
                    hotlist={"list_version": "1", "entry": "2", "reason": "r", "match": "exact",
                             "matched_text": "X", "via": "plate"})
    for payload in (read, alert):
        assert cbor.loads(cbor.dumps(payload.to_wire()), max_items=envelope.MAX_PAYLOAD_ITEMS // 20)
    with pytest.raises(cbor.EncodingError):
        cbor.loads(cbor.dumps({"a": [1, 2, 3]}), max_items=4)  # 2 (the map) + 3 (the array) > 4
    assert cbor.loads(cbor.dumps({"a": [1, 2, 3]}), max_items=5) == {"a": [1, 2, 3]}


# -- what the node signs: the time HQ judges is the time HQ stores ----------------------------
def _read_wire(node_id: str, seq: int, t_ns: int) -> dict:
    return {"kind": "read", "node": node_id, "seq": seq, "t_ns": t_ns, "plate": "AB12CDE"}


def test_a_stolen_key_cannot_date_a_read_after_the_revocation(tmp_path: Path) -> None:
    # The header's t_ns decides revocation and key retirement; the payload's t_ns is what HQ
    # stores as the capture time. Before the fix nothing tied them together: with a node key
    # stolen before the revocation, a read claiming (in its stored capture time) to be from
    # after the revocation was accepted, by backdating only the header.
    node = ed25519.Ed25519PrivateKey.generate()
    hq = x25519.X25519PrivateKey.generate()
    registry = Registry(tmp_path / "registry.db")
    try:
        registry.enroll("gate-1", "north", node.public_key(), actor="alice")
        revoked_at = time.time_ns() - 10**9
        registry.revoke("gate-1", actor="alice", reason="stolen", at_ns=revoked_at)
        signer_for = registry.signer_lookup(grace_s=24 * 3600)
        keys = {key_id(hq.public_key()): hq}

        def sealed(header_t: int, payload_t: int) -> bytes:
            return envelope.seal(_read_wire("gate-1", 5, payload_t), kind="read", node_id="gate-1", seq=5,
                                 time_ns=header_t, signing_key=node, recipient=hq.public_key())

        # what the node makes: the same time in both, before the revocation: accepted (grace)
        before = revoked_at - 60 * 10**9
        assert envelope.open_envelope(sealed(before, before), signer_for=signer_for,
                                      decryption_keys=keys).payload["t_ns"] == before
        # backdated header, fresh capture time
        forged = sealed(before, time.time_ns())
        assert _reason(lambda: envelope.open_envelope(forged, signer_for=signer_for,
                                                      decryption_keys=keys)) == "binding"
    finally:
        registry.close()


def test_payload_time_must_equal_the_header_time() -> None:
    node = ed25519.Ed25519PrivateKey.generate()
    hq = x25519.X25519PrivateKey.generate()
    message = envelope.seal(_read_wire("n1", 7, 124), kind="read", node_id="n1", seq=7, time_ns=123,
                            signing_key=node, recipient=hq.public_key())
    assert _reason(lambda: envelope.open_envelope(
        message, signer_for=lambda h: node.public_key(),
        decryption_keys={key_id(hq.public_key()): hq})) == "binding"


def test_a_header_version_of_true_is_not_version_1() -> None:
    # CBOR `true` == 1 in Python: the header check let it through as version 1, a second
    # encoding of the same header (the format promises exactly one).
    hq = x25519.X25519PrivateKey.generate()
    header = {"v": True, "kind": "read", "node": "n1", "seq": 1, "t_ns": 1, "sk": "00" * 8,
              "rk": key_id(hq.public_key())}
    message = cbor.dumps([cbor.dumps(header), bytes(48)])
    assert _reason(lambda: envelope.read_header(message)) == "unsupported"


# -- acknowledgements ---------------------------------------------------------------------
def _uplink(tmp_path: Path, hq_key: ed25519.Ed25519PrivateKey) -> tuple[Uplink, Outbox]:
    """An Uplink without a broker link: only what `_apply_ack` uses."""
    box = Outbox(tmp_path / "outbox.db")
    up = Uplink.__new__(Uplink)
    up.outbox, up.node_id, up.hq_sign_keys, up.stats = box, "n1", [hq_key.public_key()], UplinkStats()
    up._progress_ns = 0
    return up, box


def test_an_ack_addressed_to_every_node_deletes_nothing(tmp_path: Path) -> None:
    # signed.verify accepts node "*" (meant for hot lists sent to every node); for an ack that
    # would let one signed ack delete the same sequence numbers from every node's outbox.
    hq = ed25519.Ed25519PrivateKey.generate()
    up, box = _uplink(tmp_path, hq)
    try:
        seq = box.commit("read", lambda s: b"sealed")
        up._apply_ack(signed.sign("ack", {"v": 1, "node": "*", "seqs": [seq], "t_ns": 1}, hq))
        assert box.stats().depth == 1 and up.stats.bad_acks == 1
        up._apply_ack(signed.sign("ack", {"v": 1, "node": "n1", "seqs": [seq], "t_ns": 1}, hq))
        assert box.stats().depth == 0 and up.stats.acked == 1
    finally:
        box.close()


def test_an_ack_with_non_integer_seqs_deletes_nothing(tmp_path: Path) -> None:
    hq = ed25519.Ed25519PrivateKey.generate()
    up, box = _uplink(tmp_path, hq)
    try:
        seq = box.commit("read", lambda s: b"sealed")
        assert seq == 1
        up._apply_ack(signed.sign("ack", {"v": 1, "node": "n1", "seqs": [True], "t_ns": 1}, hq))
        assert box.stats().depth == 1 and up.stats.bad_acks == 1
    finally:
        box.close()


def test_a_signed_control_body_that_is_not_cbor_is_an_envelope_error() -> None:
    # Callers (the hot list, the bundle check) catch EnvelopeError: a raw EncodingError from a
    # bad body escaped bundle.verify as an unexpected exception.
    hq = ed25519.Ed25519PrivateKey.generate()
    body = b"\xff"
    message = cbor.dumps([body, hq.sign(cbor.dumps([signed.CONTEXT, "ack", body]))])
    assert _reason(lambda: signed.verify("ack", message, [hq.public_key()], "n1")) == "malformed"
    true_v = cbor.dumps({"v": True, "node": "n1", "seqs": [], "t_ns": 1})
    message = cbor.dumps([true_v, hq.sign(cbor.dumps([signed.CONTEXT, "ack", true_v]))])
    assert _reason(lambda: signed.verify("ack", message, [hq.public_key()], "n1")) == "unsupported"


# -- files ------------------------------------------------------------------------------------
def test_an_atomic_write_does_not_follow_a_planted_temp_symlink(tmp_path: Path) -> None:
    # The temp name is predictable (<name>.tmp). Provisioning writes keys as root (sudo) into a
    # folder it chowns to the node's service user: that user could plant <key>.tmp -> any file
    # and have root truncate and overwrite it, chmod it, and leave the key path a symlink to it.
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    folder = tmp_path / "keys"
    folder.mkdir()
    target = folder / "node-sign.next.key"
    (folder / "node-sign.next.key.tmp").symlink_to(victim)
    atomic.write_bytes(target, b"SECRET KEY", 0o600)
    assert victim.read_bytes() == b"precious"
    assert not target.is_symlink() and target.read_bytes() == b"SECRET KEY"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_an_atomic_write_never_puts_secret_bytes_in_a_readable_file(tmp_path: Path, monkeypatch) -> None:
    # A stale temp file (a crash, or planted) keeps its mode under O_CREAT|O_TRUNC: the secret
    # was written into a world-readable file and only chmodded afterwards.
    target = tmp_path / "hq-sign.key"
    stale = tmp_path / "hq-sign.key.tmp"
    stale.write_bytes(b"old")
    stale.chmod(0o644)
    modes: list[int] = []
    real_write = os.write

    def spying_write(fd: int, data) -> int:
        modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_write(fd, data)
    monkeypatch.setattr(atomic.os, "write", spying_write)
    atomic.write_bytes(target, b"SECRET", 0o600)
    assert modes and all(m == 0o600 for m in modes), [oct(m) for m in modes]
    assert target.read_bytes() == b"SECRET"


def test_the_tls_client_key_must_not_be_readable_by_others(tmp_path: Path) -> None:
    # The node's TLS key lets its holder connect as the node (take over its session, read its
    # retained hot list, swallow its acks); the signing keys were mode-checked, this one not.
    cert, key = _self_signed(tmp_path, 0o644)
    settings = BrokerSettings("127.0.0.1", 1, cert, cert, key, "n1")
    with pytest.raises(KeyFileError, match="readable by others"):
        MqttLink(settings, name="t", on_connect=lambda c, s: None, on_message=lambda c, m: None)
    key.chmod(0o600)
    MqttLink(settings, name="t", on_connect=lambda c, s: None, on_message=lambda c, m: None)


# -- the shared subscription group --------------------------------------------------------------
def test_the_ingest_share_group_can_be_a_deployment_secret() -> None:
    # mosquitto 2.0's ACL file does not check SUBSCRIBE: a node may join `$share/hq-ingest/...`
    # and the broker then hands it its share of every node's messages, which the read ACL
    # refuses to deliver, so they are dropped for the group (seen with mosquitto 2.0.11: HQ got
    # 5 of 10 reads). A group name HQ keeps secret makes the group unguessable.
    group = "hq-ingest-" + "ab" * 16
    subs = topics.ingest_subscriptions(group=group)
    assert subs == [f"$share/{group}/{topics.ROOT}/+/{leaf}" for leaf in topics.SEALED]
    assert topics.ingest_subscriptions() == [f"$share/{topics.INGEST_GROUP}/{topics.ROOT}/+/{leaf}"
                                             for leaf in topics.SEALED]
    for bad in ("", "a/b", "a+b", "a#", "x" * 200):
        with pytest.raises(ValueError):
            topics.ingest_subscriptions(group=bad)
