"""Sends HQ-signed control messages (hot lists) to nodes over the broker.

Each goes retained, QoS 1, to every active node's own topic, so a node that is offline now
gets it when it next connects.
"""
from __future__ import annotations

import logging
import threading

import paho.mqtt.client as paho

from transport import topics
from transport.mqtt import BrokerSettings, MqttLink
from transport.registry import Registry

log = logging.getLogger(__name__)


def push(settings: BrokerSettings, registry_path, leaf: str, message: bytes, timeout: float = 30.0) -> list[str]:
    """Publish `message` retained to `alpr/v1/node/<id>/<leaf>` of every active node; returns the ids."""
    # Only what nodes act on: the `config` topic is reserved (nodes log and ignore it), so a
    # push there would look sent and change nothing.
    if leaf != "hotlist":
        raise ValueError(f"push: leaf must be hotlist, not {leaf!r} (config is reserved: nodes do not act on it)")
    registry = Registry(registry_path)
    try:
        node_ids = [n.node_id for n in registry.nodes() if n.status == "active"]
    finally:
        registry.close()
    done = threading.Event()
    pending: list = []

    def on_connect(client: paho.Client, session_present: bool) -> None:
        for node_id in node_ids:
            pending.append(client.publish(topics.node_topic(node_id, leaf), message, qos=1, retain=True))

    def on_tick(client: paho.Client) -> None:
        if pending and all(info.is_published() for info in pending):
            done.set()

    link = MqttLink(settings, name=f"push-{leaf}", on_connect=on_connect, on_message=lambda c, m: None,
                    on_tick=on_tick)
    link.start()
    try:
        if node_ids and not done.wait(timeout):
            raise TimeoutError(f"push {leaf}: the broker did not confirm within {timeout}s")
    finally:
        link.stop()
    log.info("pushed %s (%d bytes) to %d nodes", leaf, len(message), len(node_ids))
    return node_ids
