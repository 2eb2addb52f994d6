"""HQ ingest's shared subscription group comes from hq.toml: a node that joins the well-known
default group (Mosquitto's ACL file does not check SUBSCRIBE) takes nothing from HQ's."""
from __future__ import annotations

import threading

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.broker.test_ingest_rejects import acked_seqs, good_message, send, start_world, stop_world
from tests.conftest import wait_for
from transport import topics

pytestmark = pytest.mark.broker

SECRET_GROUP = "hq-ingest-" + "5f0e" * 8


def _intruder(lab, node_id: str) -> paho.Client:
    """A node's own MQTT client (its real certificate), subscribed to the default group."""
    node = lab.nodes[node_id]
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=node_id, protocol=paho.MQTTv5)
    client.tls_set(str(node.data_dir / "tls/ca.pem"), str(node.data_dir / "tls/node.pem"),
                   str(node.data_dir / "tls/node.key"))
    subscribed = threading.Event()
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect("127.0.0.1", lab.broker.port)
    client.loop_start()
    client.subscribe(f"$share/{topics.INGEST_GROUP}/{topics.ROOT}/+/read", qos=1)
    assert subscribed.wait(10), "the broker did not answer the SUBSCRIBE"
    return client


def test_a_node_in_the_default_group_takes_no_turn_of_a_secret_group(lab):
    ingest, client, sign_key, acks = start_world(lab, share_group=SECRET_GROUP)
    intruder = None
    try:
        intruder = _intruder(lab, "node-b")
        for seq in range(1, 9):
            send(client, good_message(lab, sign_key, seq=seq))
        # All of them, at once: none was dealt to the intruder and dropped (no resends here).
        wait_for(lambda: acked_seqs(acks) == list(range(1, 9)), 20, "every read stored and acknowledged")
        assert ingest.stats.stored == 8 and dict(ingest.stats.rejected) == {}
    finally:
        if intruder is not None:
            intruder.loop_stop()
            intruder.disconnect()
        stop_world(ingest, client)
