"""Which names may be node ids and which are HQ's: the broker's ACL trusts the certificate CN.

An HQ worker's CN reads every node's topics, so a node id must never be one: HQ workers
are named `hq-...` and node ids may not start with `hq-`; `broker` is the server's CN.
"""
from __future__ import annotations

from transport.topics import valid_node_id

HQ_PREFIX = "hq-"
RESERVED = ("broker",)
# HQ's hot-list sender (`alpr-hq push`, default --worker hq-push): `ca init` issues its
# certificate; the ACL lets it (and hq-push-<anything>) write retained hot lists, nothing else
PUSH_CLIENT = "hq-push"


def node_id_problem(node_id: str) -> str | None:
    """Why `node_id` cannot be a node id, or None if it can."""
    if not valid_node_id(node_id):
        return f"node id {node_id!r}: use 1-63 letters, digits, '_', '.', '-' (it is an MQTT topic level and a CN)"
    if node_id.lower().startswith(HQ_PREFIX) or node_id.lower() in RESERVED:
        return f"node id {node_id!r}: names starting with {HQ_PREFIX!r} and {', '.join(RESERVED)!r} are reserved for HQ"
    return None


def worker_problem(name: str) -> str | None:
    """Why `name` cannot be an HQ worker name, or None if it can."""
    if not valid_node_id(name) or not name.startswith(HQ_PREFIX):
        return f"HQ worker name {name!r}: must start with {HQ_PREFIX!r} and use letters, digits, '_', '.', '-'"
    return None


def is_push_client(name: str) -> bool:
    """Whether HQ client `name` is a hot-list sender (hq-push, hq-push-2, ...) rather than an ingest worker."""
    return name == PUSH_CLIENT or name.startswith(PUSH_CLIENT + "-")
