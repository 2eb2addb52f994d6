"""HQ sees each node's latest heartbeat and status (`alpr-hq nodes`), through a real broker."""
from __future__ import annotations

import json

import pytest

from hq.cli import describe_state
from hq.store import NodeState, ReadStore
from tests.conftest import wait_for

pytestmark = pytest.mark.broker


def _states(lab) -> dict[str, NodeState]:
    path = lab.hq_dir / "hq.db"
    if not path.exists():
        return {}
    store = ReadStore(path)
    try:
        return store.node_states()
    finally:
        store.close()


def test_ingest_records_each_nodes_latest_heartbeat_and_status(lab):
    node = lab.add_node("node-a", body=('[source]\nkind = "synthetic"\n[source.synthetic]\nrate_hz = 5\n'
                                        'total = 1000\ncrop_bytes = 2000\n[health]\ninterval_s = 1\n'))
    lab.track(lab.start_ingest())
    log = lab.root / f"{lab.hq_workers[0]}.log"
    # subscribed before the node starts: a shared subscription gets no retained status
    wait_for(lambda: log.exists() and "connected" in log.read_text(), 30, "ingest connected")
    lab.track(lab.start_node(node))
    wait_for(lambda: "node-a" in _states(lab) and _states(lab)["node-a"].health_ns is not None, 60,
             "node-a's heartbeat recorded at HQ")
    first = _states(lab)["node-a"]
    health = json.loads(first.health)
    assert health["node"] == "node-a" and "outbox" in health
    wait_for(lambda: _states(lab)["node-a"].health_ns > first.health_ns, 30, "a newer heartbeat replacing it")
    state = _states(lab)["node-a"]
    assert state.status == "online"
    line = describe_state(state, state.health_ns)
    assert line.startswith("heartbeat 0 s ago") and "status online" in line and "outbox" in line


def test_a_late_heartbeat_does_not_replace_a_newer_one(tmp_path):
    store = ReadStore(tmp_path / "hq.db")
    store.note_node_states([("n1", "health", '{"t": 2}', 2_000), ("n1", "status", "online", 1_000)])
    store.note_node_states([("n1", "health", '{"t": 1}', 1_000)])  # delivered late
    state = store.node_states()["n1"]
    assert (state.health, state.health_ns, state.status) == ('{"t": 2}', 2_000, "online")
    assert "STALE" in describe_state(state, 2_000 + 10**12) and "no heartbeat" in describe_state(None, 0)
    with pytest.raises(ValueError, match="leaf"):
        store.note_node_states([("n1", "read", "x", 3_000)])
    store.close()
