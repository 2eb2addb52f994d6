"""Ingest sends the hot list `alpr-hq push` last sent again to a node whose heartbeat reports an
older one: a push is confirmed by the broker's PUBACK, before its autosave (a broker killed
within a second lost the retained copy, and nothing repeated the push while the nodes' lists ran
out)."""
from __future__ import annotations

import json
import logging
import secrets
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

import hq.ingest as ingest_mod
from hq.files import PUSHED_HOTLIST
from hq.hotlist import build_body
from tests.unit.test_hq_ingest_hardening import Message, World, world  # noqa: F401  (fixture)
from transport import signed, topics
from transport.registry import Registry

pytestmark = pytest.mark.unit
HOUR = 3600 * 10**9




def pushed(w: World, version: int, key: ed25519.Ed25519PrivateKey | None = None, valid_h: float = 24) -> bytes:
    """Write the hot list `alpr-hq push` would keep, signed with HQ's key (or `key`)."""
    body = build_body([], version=version, now_ns=time.time_ns(), key=secrets.token_bytes(32),
                      valid_for_ns=int(valid_h * HOUR))
    message = signed.sign("hotlist", body, key or w.ingest.sign_key)
    path = w.tmp / PUSHED_HOTLIST
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(message)
    return message


def heartbeat(w: World, version: int, node: str = "node-a") -> None:
    """A heartbeat from `node` saying which hot list it holds, then a tick that records it."""
    w.mid += 1
    body = json.dumps({"hotlist": {"version": version, "rejected": 0}}).encode()
    w.ingest._message(w.client, Message(topics.node_topic(node, "health"), body, w.mid))
    w.ingest._states_recorded = 0.0  # due for recording now
    w.ingest._tick(w.client)


def resent(w: World) -> list[bytes]:
    return [m for t, m in w.client.published if t == topics.node_topic("node-a", "hotlist")]


def test_a_node_behind_gets_the_pushed_list_again_at_most_every_five_minutes(world, monkeypatch) -> None:
    message = pushed(world, 3)
    heartbeat(world, 3)
    assert resent(world) == []                  # up to date
    heartbeat(world, 2)
    assert resent(world) == [message]           # behind: sent again, retained
    assert world.ingest.stats.hotlist_repushes == 1
    heartbeat(world, 2)
    assert resent(world) == [message]           # not again at every heartbeat ...
    later = time.monotonic() + ingest_mod.HOTLIST_REPUSH_S + 1
    monkeypatch.setattr(ingest_mod.time, "monotonic", lambda: later)
    heartbeat(world, 2)
    assert resent(world) == [message, message]  # ... but again after five minutes


def test_a_newer_push_is_picked_up_without_a_restart(world) -> None:
    pushed(world, 1)
    heartbeat(world, 1)
    newer = pushed(world, 2)
    heartbeat(world, 1)
    assert resent(world) == [newer]


def test_nothing_is_sent_for_a_list_not_signed_by_hq_or_run_out_or_a_revoked_node(world, caplog) -> None:
    with caplog.at_level(logging.ERROR, logger="hq.ingest"):
        pushed(world, 5, key=ed25519.Ed25519PrivateKey.generate())
        heartbeat(world, 1)
        heartbeat(world, 1)
    assert resent(world) == []
    assert sum("not a hot list signed with this HQ's key" in r.getMessage() for r in caplog.records) == 1
    pushed(world, 5, valid_h=-1)  # its validity is over: the node would not use it anyway
    heartbeat(world, 1)
    assert resent(world) == []
    pushed(world, 6)
    registry = Registry(world.tmp / "registry.db")
    registry.revoke("node-a", actor="admin", reason="stolen")
    registry.close()
    world.ingest._registry = None  # opened again at the next tick, with the revocation
    heartbeat(world, 1)
    assert resent(world) == []


def test_no_pushed_list_and_heartbeats_without_a_version_send_nothing(world) -> None:
    heartbeat(world, 0)
    pushed(world, 2)
    world.mid += 1
    world.ingest._message(world.client, Message(topics.node_topic("node-a", "health"), b'{"uptime_s": 1}', world.mid))
    world.ingest._states_recorded = 0.0
    world.ingest._tick(world.client)
    assert resent(world) == []


def test_a_node_that_refuses_the_list_sent_again_is_not_sent_it_again(world, monkeypatch, caplog) -> None:
    """A node that cannot verify the pushed list (it trusts another HQ key, say) counts it under
    hotlist.rejected: sending it every five minutes until the list runs out would change nothing."""
    message = pushed(world, 3)
    world.heartbeat({"hotlist": {"version": 2, "rejected": 0}})
    assert resent(world) == [message]
    later = [time.monotonic() + ingest_mod.HOTLIST_REPUSH_S + 1]
    monkeypatch.setattr(ingest_mod.time, "monotonic", lambda: later[0])
    with caplog.at_level(logging.ERROR, logger="hq.ingest"):
        world.heartbeat({"hotlist": {"version": 2, "rejected": 1}})  # it got it, and refused it
        later[0] += 10 * ingest_mod.HOTLIST_REPUSH_S
        world.heartbeat({"hotlist": {"version": 2, "rejected": 1}})
    assert resent(world) == [message]
    assert sum("refused hot list version 3" in r.getMessage() for r in caplog.records) == 1
    newer = pushed(world, 4)  # a new push is tried again
    world.heartbeat({"hotlist": {"version": 2, "rejected": 1}})
    assert resent(world) == [message, newer]


def test_a_node_that_restarted_after_refusing_is_tried_again(world, monkeypatch) -> None:
    """Its count of refused lists began again (restarted, now trusting HQ's key, say), and it still
    lacks the pushed version: it is sent it again."""
    message = pushed(world, 3)
    world.heartbeat({"hotlist": {"version": 2, "rejected": 0}})
    later = [time.monotonic() + ingest_mod.HOTLIST_REPUSH_S + 1]
    monkeypatch.setattr(ingest_mod.time, "monotonic", lambda: later[0])
    world.heartbeat({"hotlist": {"version": 2, "rejected": 1}})  # refused
    later[0] += 10 * ingest_mod.HOTLIST_REPUSH_S
    world.heartbeat({"hotlist": {"version": 2, "rejected": 0}})  # restarted
    assert resent(world) == [message, message]


def test_alpr_hq_nodes_flags_a_node_behind_the_pushed_list_and_reads_held_back(world) -> None:
    from hq.cli import _pushed_hotlist_version, describe_state
    from hq.store import NodeState

    assert _pushed_hotlist_version(world.tmp) is None  # nothing pushed yet
    pushed(world, 3)
    assert _pushed_hotlist_version(world.tmp) == 3
    health = json.dumps({"hotlist": {"version": 2, "rejected": 0},
                         "outbox": {"depth": 7, "oldest_age_s": 12.0, "ignored_by_hq": 4}})
    line = describe_state(NodeState("node-a", health, 10**12, "online", 10**12), 10**12, 3)
    assert "hot list v2 BEHIND (v3 pushed)" in line and "4 held back by HQ" in line
    line = describe_state(NodeState("node-a", health.replace('"version": 2', '"version": 3'), 10**12, None, None),
                          10**12, 3)
    assert "hot list v3" in line and "BEHIND" not in line
