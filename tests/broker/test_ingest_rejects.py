"""HQ ingest against hostile input: each bad message is rejected with its reason, ingest keeps going."""
from __future__ import annotations

import json
import sqlite3
import threading
import time

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from paho.mqtt.enums import CallbackAPIVersion

from hq.ingest import Ingest
from hq.keyring import load_hpke_keys, load_sign_key
from hq.store import ReadStore
from tests.conftest import wait_for
from tests.support.vectors import sample_read
from transport import cbor, envelope, topics
from transport.keys import load_private_key
from transport.mqtt import BrokerSettings
from transport.registry import Registry

pytestmark = pytest.mark.broker


def start_world(lab, store_path=None, **options):
    """An ingest worker (SQLite store in the lab unless `store_path`; `options` for Ingest) and
    node-a's MQTT client, with the PUBACKs ingest sends recorded in `ingest.pubacks` (message ids)."""
    node = lab.add_node("node-a")
    lab.add_node("node-b")
    tls = lab.hq_dir / "tls"
    ingest = Ingest(BrokerSettings("127.0.0.1", lab.broker.port, tls / "ca.pem", tls / "hq-ingest-1.pem",
                                   tls / "hq-ingest-1.key", "hq-ingest-1"),
                    store_path=store_path or lab.hq_dir / "hq.db", registry_path=lab.registry_path,
                    decryption_keys=load_hpke_keys(lab.hq_dir / "keys"), sign_key=load_sign_key(lab.hq_dir / "keys"),
                    **options)
    ingest.pubacks = []
    puback = ingest.link.client.ack

    def recording_ack(mid, qos):
        ingest.pubacks.append(mid)
        return puback(mid, qos)
    ingest.link.client.ack = recording_ack
    ingest.start()
    assert ingest.link.wait_connected(10)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="node-a", protocol=paho.MQTTv5)
    client.tls_set(str(node.data_dir / "tls/ca.pem"), str(node.data_dir / "tls/node.pem"),
                   str(node.data_dir / "tls/node.key"))
    acks: list[bytes] = []
    got_ack = threading.Event()

    def on_message(c, u, m):
        acks.append(m.payload)
        got_ack.set()
    client.on_message = on_message
    client.connect("127.0.0.1", lab.broker.port)
    client.subscribe(topics.node_topic("node-a", "ack"), qos=1)
    client.loop_start()
    sign_key = load_private_key(node.data_dir / "keys/node-sign.key", ed25519.Ed25519PrivateKey)
    return ingest, client, sign_key, acks


def stop_world(ingest, client):
    client.loop_stop()
    client.disconnect()
    ingest.stop()


@pytest.fixture
def world(lab):
    ingest, client, sign_key, acks = start_world(lab)
    yield lab, ingest, client, sign_key, acks
    stop_world(ingest, client)


def good_message(lab, sign_key, seq=1, node_id="node-a", t_ns=None, **fields):
    read = sample_read()
    t_ns = t_ns or read.capture_time_ns
    wire = dict(read.to_wire(), node=node_id, seq=seq, t_ns=t_ns, **fields)
    return envelope.seal(wire, kind="read", node_id=node_id, seq=seq, time_ns=t_ns,
                         signing_key=sign_key, recipient=lab.hq_hpke.public_key())


def acked_seqs(acks: list[bytes]) -> list[int]:
    return sorted(seq for message in acks for seq in cbor.loads(cbor.loads(message)[0])["seqs"])


def send(client, payload, leaf="read", node_id="node-a"):
    client.publish(topics.node_topic(node_id, leaf), payload, qos=1).wait_for_publish(10)


def test_each_bad_message_is_rejected_with_its_reason_and_ingest_keeps_running(world):
    lab, ingest, client, sign_key, acks = world
    forger = ed25519.Ed25519PrivateKey.generate()
    good = good_message(lab, sign_key, seq=1)
    header_bytes, sealed = cbor.loads(good)
    header = cbor.loads(header_bytes)
    header["seq"] = 999
    tampered = cbor.dumps([cbor.dumps(header), sealed])
    cases = [
        (good_message(lab, forger, seq=2), "wrong-key"),                     # forged: a key HQ never enrolled
        (good_message(lab, sign_key, seq=3, node_id="node-b"), "binding"),  # node-a posing as node-b on its topic
        (tampered, "decrypt"),                                                 # header edited in transit
        (b"\x00\xffgarbage", "malformed"),
        (b"\x00" * (10 * 1024 * 1024), "oversize"),                            # 10 MB
    ]
    for payload, _ in cases:
        send(client, payload)
    expected: dict[str, int] = {}
    for _, why in cases:
        expected[why] = expected.get(why, 0) + 1
    wait_for(lambda: sum(ingest.stats.rejected.values()) >= len(cases), 20, "all bad messages rejected")
    assert dict(ingest.stats.rejected) == expected
    # ...and ingest is still alive: a good read is stored and acked.
    send(client, good)
    wait_for(lambda: ingest.stats.stored == 1, 10, "the good read stored")
    wait_for(lambda: len(acks) == 1, 10, "the ack for it")


def test_replayed_envelope_is_acked_again_but_stored_once(world):
    lab, ingest, client, sign_key, acks = world
    good = good_message(lab, sign_key, seq=5)
    for _ in range(3):
        send(client, good)
    wait_for(lambda: ingest.stats.stored + ingest.stats.duplicates == 3, 10, "three deliveries handled")
    assert (ingest.stats.stored, ingest.stats.duplicates) == (1, 2)
    # Deliveries handled in one batch share one ack message: count acknowledged deliveries.
    wait_for(lambda: acked_seqs(acks) == [5, 5, 5], 10, "all three deliveries acknowledged")
    store = ReadStore(lab.hq_dir / "hq.db")
    assert store.seqs("node-a") == [5]
    store.close()


def test_unknown_and_revoked_nodes_are_rejected(world):
    lab, ingest, client, sign_key, acks = world
    registry = Registry(lab.registry_path)
    revoked_at = time.time_ns()
    registry.revoke("node-a", actor="auditor-1", reason="stolen from pole 12", at_ns=revoked_at)
    registry.close()
    send(client, good_message(lab, sign_key, seq=7, t_ns=revoked_at + 1))
    wait_for(lambda: ingest.stats.rejected["revoked"] == 1, 10, "read made after revocation rejected")
    # A read made before the revocation (queued in the outbox while offline) is still accepted.
    send(client, good_message(lab, sign_key, seq=6, t_ns=revoked_at - 10**9))
    wait_for(lambda: ingest.stats.stored == 1, 10, "read made before revocation stored")
    # A node with a valid broker certificate that HQ never enrolled.
    from provisioning import pki
    pair = pki.issue(lab.ca, "node-zz", lab.root / "stranger")
    stranger_client = paho.Client(CallbackAPIVersion.VERSION2, client_id="node-zz", protocol=paho.MQTTv5)
    stranger_client.tls_set(str(lab.ca.cert), str(pair.cert), str(pair.key))
    stranger_client.connect("127.0.0.1", lab.broker.port)
    stranger_client.loop_start()
    stranger = ed25519.Ed25519PrivateKey.generate()
    read = sample_read()
    msg = envelope.seal(dict(read.to_wire(), node="node-zz", seq=1), kind="read", node_id="node-zz", seq=1,
                        time_ns=read.capture_time_ns, signing_key=stranger, recipient=lab.hq_hpke.public_key())
    send(stranger_client, msg, node_id="node-zz")
    wait_for(lambda: ingest.stats.rejected["unknown-node"] == 1, 10, "unknown node rejected")
    stranger_client.loop_stop()
    stranger_client.disconnect()
    assert ingest.stats.stored == 1 and len(acks) == 1


def _refuse_reads(store_path, name, when="1"):
    """A trigger that makes SQLite refuse some reads the way PostgreSQL refuses a value its
    schema cannot hold: an error about the data (IntegrityError), the store itself healthy."""
    store = ReadStore(store_path)
    store.db.execute(f"CREATE TRIGGER {name} BEFORE INSERT ON reads WHEN {when} "
                     f"BEGIN SELECT RAISE(ABORT, '{name}'); END")
    store.close()


def _drop_trigger(store_path, name):
    store = ReadStore(store_path)
    store.db.execute(f"DROP TRIGGER {name}")
    store.close()


def test_a_read_the_store_refuses_is_set_aside_and_the_rest_of_its_batch_is_stored(world):
    lab, ingest, client, sign_key, acks = world
    _refuse_reads(lab.hq_dir / "hq.db", "poison_read", "NEW.plate = 'POISON1'")
    poison = good_message(lab, sign_key, seq=2, plate="POISON1")
    for payload in (good_message(lab, sign_key, seq=1), poison, good_message(lab, sign_key, seq=3)):
        send(client, payload)
    wait_for(lambda: ingest.stats.rejected["store"] == 1 and ingest.stats.stored == 2, 20,
             "the poison read set aside and the two good ones stored")
    wait_for(lambda: acked_seqs(acks) == [1, 3], 10, "the good reads acknowledged to the node")
    wait_for(lambda: len(ingest.pubacks) == 3, 10, "all three PUBACKed, the poison one too")
    assert dict(ingest.stats.rejected) == {"store": 1}
    store = ReadStore(lab.hq_dir / "hq.db")
    assert store.seqs("node-a") == [1, 3]
    store.close()
    # Nothing is lost: the exact bytes, the signed parts and the reason are kept for an operator.
    rejects = lab.hq_dir / "rejected"
    assert rejects.stat().st_mode & 0o777 == 0o700
    (msg,) = rejects.glob("node-a-2-*.msg")
    assert msg.read_bytes() == poison and msg.stat().st_mode & 0o777 == 0o600
    meta = json.loads(msg.with_suffix(".json").read_text())
    assert (meta["reason"], meta["node"], meta["seq"], meta["kind"]) == ("store", "node-a", 2, "read")
    assert "poison_read" in meta["error"]
    header_bytes, payload_bytes, signature = cbor.loads(msg.with_suffix(".signed").read_bytes())
    sign_key.public_key().verify(signature, envelope.signed_bytes(header_bytes, payload_bytes))
    assert cbor.loads(payload_bytes)["plate"] == "POISON1"
    # The node resends it (no signed ack): set aside again at once, not by failing another batch.
    written = msg.with_suffix(".json").read_bytes()
    send(client, poison)
    wait_for(lambda: ingest.stats.rejected["store"] == 2, 10, "the resend set aside")
    assert msg.with_suffix(".json").read_bytes() == written
    send(client, good_message(lab, sign_key, seq=4))
    wait_for(lambda: acked_seqs(acks) == [1, 3, 4], 10, "ingest still storing")
    assert ingest.stats.store_errors == 0


def test_a_store_outage_rejects_nothing_and_loses_nothing(world, monkeypatch):
    lab, ingest, client, sign_key, acks = world
    down = threading.Event()
    down.set()
    real_store = ReadStore.store

    def store(self, batch):
        if down.is_set():
            raise sqlite3.OperationalError("disk I/O error")
        return real_store(self, batch)
    monkeypatch.setattr(ReadStore, "store", store)
    for seq in (1, 2, 3):
        send(client, good_message(lab, sign_key, seq=seq))
    wait_for(lambda: ingest.stats.store_errors >= 2, 20, "two failed attempts to store")
    assert (dict(ingest.stats.rejected), ingest.stats.stored, acks, ingest.pubacks) == ({}, 0, [], [])
    assert not (lab.hq_dir / "rejected").exists()
    down.clear()
    wait_for(lambda: ingest.stats.stored == 3, 30, "all three stored once the store is back")
    wait_for(lambda: acked_seqs(acks) == [1, 2, 3], 10, "all three acknowledged")
    assert len(ingest.pubacks) == 3 and dict(ingest.stats.rejected) == {}


def test_a_store_that_refuses_every_message_rejects_none(world):
    # Every read refused alone too (say a broken migration): that is the store's fault, not theirs.
    lab, ingest, client, sign_key, acks = world
    _refuse_reads(lab.hq_dir / "hq.db", "schema_broken")
    for seq in (1, 2, 3):
        send(client, good_message(lab, sign_key, seq=seq))
    wait_for(lambda: ingest.stats.store_errors >= 2, 20, "two failed attempts to store")
    assert (dict(ingest.stats.rejected), ingest.stats.stored, acks, ingest.pubacks) == ({}, 0, [], [])
    _drop_trigger(lab.hq_dir / "hq.db", "schema_broken")
    wait_for(lambda: ingest.stats.stored == 3, 30, "all three stored once the store is fixed")
    wait_for(lambda: acked_seqs(acks) == [1, 2, 3], 10, "all three acknowledged")
    assert dict(ingest.stats.rejected) == {}


def test_a_full_batch_of_refused_reads_does_not_block_the_reads_behind_it(world):
    # A backlog of reads the store refuses (one node with a bad field, back online) must not sit
    # at the head of the queue for ever: the reads of others behind it are stored.
    lab, ingest, client, sign_key, acks = world
    ingest.max_batch = 2
    _refuse_reads(lab.hq_dir / "hq.db", "poison_reads", "NEW.plate LIKE 'POISON%'")
    for seq, plate in ((1, "POISON1"), (2, "POISON2"), (3, "7ABC123")):
        send(client, good_message(lab, sign_key, seq=seq, plate=plate))
    wait_for(lambda: acked_seqs(acks) == [3], 40, "the good read behind two refused ones stored and acked")
    store = ReadStore(lab.hq_dir / "hq.db")
    assert store.seqs("node-a") == [3]
    store.close()
