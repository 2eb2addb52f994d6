"""The secure data path under faults, against a real Mosquitto broker.

Every test ends with the same assertion: every read the node committed is stored at HQ
exactly once (seq 1..N, no gaps, no duplicates) and the node's outbox is empty.
"""
from __future__ import annotations

import random
import signal
import sqlite3
import time

import pytest

from hq.store import ReadStore
from tests.conftest import wait_for

pytestmark = pytest.mark.broker


def synthetic(total: int, rate: float = 100.0, extra: str = "") -> str:
    return (f'[source]\nkind = "synthetic"\n[source.synthetic]\nrate_hz = {rate}\ntotal = {total}\n'
            f'crop_bytes = 2000\n[outbox]\nresend_after_s = 2\n{extra}')


def stored_seqs(lab, node_id: str) -> list[int]:
    path = lab.hq_dir / "hq.db"
    if not path.exists():
        return []
    store = ReadStore(path)
    try:
        return store.seqs(node_id)
    finally:
        store.close()


def _query(node, sql: str, args=()) -> int:
    """Read the node's outbox without creating it (read-only), 0 while it does not exist yet."""
    path = node.data_dir / "outbox.db"
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        row = db.execute(sql, args).fetchone()
        return row[0] if row else 0
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0
        raise
    finally:
        db.close()


def outbox_depth(node) -> int:
    return _query(node, "SELECT COUNT(*) FROM outbox")


def assert_exactly_once(lab, node, total: int, timeout: float = 60) -> None:
    wait_for(lambda: len(stored_seqs(lab, node.node_id)) >= total, timeout, f"{total} reads stored at HQ")
    seqs = stored_seqs(lab, node.node_id)
    assert seqs == list(range(1, total + 1)), f"missing {sorted(set(range(1, total + 1)) - set(seqs))[:20]}"
    store = ReadStore(lab.hq_dir / "hq.db")
    assert store.duplicate_count() == 0 and store.conflicts() == 0
    store.close()
    wait_for(lambda: outbox_depth(node) == 0, 30, "the node's outbox to drain on HQ's acks")


def start(lab, proc):
    lab.track(proc)
    return proc


def test_reads_flow_end_to_end_and_acks_empty_the_outbox(lab):
    node = lab.add_node("node-a", body=synthetic(200, rate=400))
    start(lab, lab.start_ingest())
    proc = start(lab, lab.start_node(node, "--exit-when-done"))
    assert proc.wait(60) == 0
    assert_exactly_once(lab, node, 200)


def test_two_ingest_workers_share_the_load_and_store_once(lab):
    node = lab.add_node("node-a", body=synthetic(300, rate=600))
    start(lab, lab.start_ingest("hq-ingest-1"))
    start(lab, lab.start_ingest("hq-ingest-2"))
    time.sleep(1.0)  # both subscribed before the stream starts, so both get a share
    start(lab, lab.start_node(node))
    assert_exactly_once(lab, node, 300)
    logs = [(lab.root / f"hq-ingest-{i}.log").read_text() for i in (1, 2)]
    assert all("connected" in text for text in logs)


def test_broker_down_for_a_while_then_restarted(lab):
    node = lab.add_node("node-a", body=synthetic(150, rate=30))
    start(lab, lab.start_ingest())
    start(lab, lab.start_node(node))
    wait_for(lambda: len(stored_seqs(lab, "node-a")) >= 20, 30, "first reads")
    lab.broker.kill()          # outage: the node keeps reading into its outbox
    time.sleep(3)
    assert outbox_depth(node) > 0
    lab.broker.start()
    assert_exactly_once(lab, node, 150, timeout=90)


def test_hq_ingest_down_while_the_node_keeps_producing(lab):
    node = lab.add_node("node-a", body=synthetic(120, rate=60))
    start(lab, lab.start_node(node))
    wait_for(lambda: outbox_depth(node) >= 60, 30, "reads queued while HQ is down")
    ingest = start(lab, lab.start_ingest())
    wait_for(lambda: len(stored_seqs(lab, "node-a")) >= 80, 60, "HQ to catch up")
    ingest.send_signal(signal.SIGKILL)  # HQ crashes mid-stream: unacked reads come again
    ingest.wait(10)
    start(lab, lab.start_ingest())
    assert_exactly_once(lab, node, 120, timeout=90)


@pytest.mark.parametrize("kills", [pytest.param(4, id="4-kills"),
                                   pytest.param(100, id="100-kills", marks=pytest.mark.long)])
def test_node_killed_with_sigkill_at_random_points(lab, kills):
    total = 60 + kills * 8
    node = lab.add_node("node-a", body=synthetic(total, rate=80))
    start(lab, lab.start_ingest())
    rng = random.Random(1234)
    for _ in range(kills):
        proc = start(lab, lab.start_node(node))
        time.sleep(rng.uniform(0.3, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    final = start(lab, lab.start_node(node, "--exit-when-done"))
    assert final.wait(120) == 0
    assert_exactly_once(lab, node, total)


def test_outbox_quota_reached_while_offline_counts_every_drop(lab):
    node = lab.add_node("node-a", body=synthetic(400, rate=400).replace(
        "[outbox]\n", "[outbox]\nquota_mb = 0.25\n"))
    lab.broker.stop()  # offline: nothing leaves the node
    proc = start(lab, lab.start_node(node, "--exit-when-done"))
    wait_for(lambda: _meta(node, "committed") >= 400, 60, "400 reads committed")
    dropped = _meta(node, "dropped_read")
    depth = outbox_depth(node)
    assert dropped > 0 and dropped + depth == 400
    lab.broker.start()
    start(lab, lab.start_ingest())
    assert proc.wait(60) == 0
    seqs = stored_seqs(lab, "node-a")
    # What survived the quota is stored once; what was dropped is exactly the oldest reads.
    assert seqs == list(range(dropped + 1, 401))


def _meta(node, key: str) -> int:
    return _query(node, "SELECT value FROM meta WHERE key=?", (key,))


def test_corrupt_outbox_on_start_is_a_clear_error_then_salvaged(lab):
    import subprocess
    import sys

    node = lab.add_node("node-a", body=synthetic(30, rate=100))
    (node.data_dir / "outbox.db").write_bytes(b"\x00garbage" * 1000)
    out = subprocess.run([sys.executable, "-m", "node.cli", "run", "--config", str(node.config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "outbox.db" in out.stderr and "corrupt" in out.stderr and "alpr-node outbox salvage" in out.stderr
    assert (node.data_dir / "outbox.db").exists()
    out = subprocess.run([sys.executable, "-m", "node.cli", "outbox", "salvage", "--data-dir", str(node.data_dir)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    start(lab, lab.start_ingest())
    assert start(lab, lab.start_node(node, "--exit-when-done")).wait(60) == 0
    assert len(stored_seqs(lab, "node-a")) == 30


def test_sigterm_stops_within_the_bound_and_loses_nothing(lab):
    node = lab.add_node("node-a", body=synthetic(400, rate=50))
    proc = start(lab, lab.start_node(node))
    wait_for(lambda: _meta(node, "committed") >= 50, 30, "reads being made")  # broker up, HQ down: backlog
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert time.monotonic() - started < 11  # shutdown_timeout_s is 10 s
    log = (lab.root / "node-a.log").read_text()
    assert "signal 15: stopping" in log and "stopped" in log
    start(lab, lab.start_ingest())
    assert start(lab, lab.start_node(node, "--exit-when-done")).wait(90) == 0
    assert_exactly_once(lab, node, 400)
