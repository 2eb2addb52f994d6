"""The MQTT topic tree. One place, so ACLs, node and HQ agree.

Up (node → HQ), under alpr/v1/node/<node_id>/:
    read     sealed read envelopes                      QoS 1
    alert    sealed hot-list match envelopes            QoS 1, published ahead of reads
    event    sealed events (vehicle passed, no read)    QoS 1
    status   {"state": "online"|"offline", "t_ns"} JSON, retained, also the last will
    health   heartbeat JSON (no plate data)             QoS 0
Down (HQ → node):
    ack      HQ-signed list of stored sequence numbers  QoS 1
    hotlist  HQ-signed hot list, retained               QoS 1
    config   HQ-signed configuration, retained          QoS 1
And one topic for every node, alpr/v1/hq/ingest (HQ_INGEST): HQ-signed, retained, QoS 1; a new
"generation" each time an ingest worker (re)subscribes, on which nodes publish what HQ has
not acknowledged again at once (see transport.uplink).
"""
from __future__ import annotations

import re

ROOT = "alpr/v1/node"
UP = ("read", "alert", "event", "status", "health")
DOWN = ("ack", "hotlist", "config")
SEALED = ("read", "alert", "event")
INGEST_GROUP = "hq-ingest"
HQ_INGEST = "alpr/v1/hq/ingest"
_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# A share name is one topic level: no '/', and no wildcard characters (MQTT v5 §4.8.2).
_SHARE_GROUP = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


def valid_node_id(node_id: str) -> bool:
    """Node ids are safe in topics, file names and certificate CNs."""
    return bool(_NODE_ID.match(node_id))


def node_topic(node_id: str, leaf: str) -> str:
    """The topic for one node and one leaf of the tree."""
    if leaf not in UP + DOWN:
        raise ValueError(f"unknown topic leaf {leaf!r}")
    if not valid_node_id(node_id):
        raise ValueError(f"node id {node_id!r}: use 1-63 letters, digits, '_', '.', '-'")
    return f"{ROOT}/{node_id}/{leaf}"


def ingest_subscriptions(shared: bool = True, group: str = INGEST_GROUP) -> list[str]:
    """What HQ ingest workers subscribe to; MQTT v5 shared subscriptions split the load.

    `group` names the shared subscription. Mosquitto 2.0's ACL file does not check
    SUBSCRIBE, so any client that knows the name can join the group; the broker then gives it
    its turn of every node's messages, refuses to deliver them (read ACL) and drops them for
    the group. A deployment should pass a group name it keeps secret (e.g. random, from HQ's
    configuration) rather than the well-known default.
    """
    if not _SHARE_GROUP.match(group):
        raise ValueError(f"share group {group!r}: use 1-100 letters, digits, '_', '.', '-'")
    topics = [f"{ROOT}/+/{leaf}" for leaf in SEALED]
    return [f"$share/{group}/{t}" for t in topics] if shared else topics


def node_state_subscriptions(shared: bool = True, group: str = INGEST_GROUP) -> list[tuple[str, int]]:
    """(topic filter, QoS) for the nodes' heartbeats and status, which HQ ingest keeps the latest of.

    Shared like the sealed leaves (one worker records each message); a shared subscription
    gets no retained message when it subscribes, so a node's status shows from its next change.
    """
    if not _SHARE_GROUP.match(group):
        raise ValueError(f"share group {group!r}: use 1-100 letters, digits, '_', '.', '-'")
    filters = [(f"{ROOT}/+/health", 0), (f"{ROOT}/+/status", 1)]
    return [(f"$share/{group}/{t}", q) for t, q in filters] if shared else filters


def parse(topic: str) -> tuple[str, str] | None:
    """(node_id, leaf) for a topic of the tree, or None."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != ROOT or parts[4] not in UP + DOWN:
        return None
    return parts[3], parts[4]
