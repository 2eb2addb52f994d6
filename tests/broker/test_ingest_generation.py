"""Reads are not left waiting a resend interval when an ingest worker dies or comes back, over a
real broker, node and ingest processes.

The node resends every 60 s here (twice the default), doubling while HQ is silent, so a read
that reaches HQ within seconds got there through the mechanisms under test: a worker keeps no
session (a dead one holds no turn of the shared subscription), and a worker that subscribes
announces a new generation, on which nodes publish what HQ has not acknowledged again.
"""
from __future__ import annotations

import signal
import sqlite3
import time

import pytest

from tests.broker.test_data_path import outbox_depth, start, stored_seqs
from tests.conftest import wait_for
from transport import topics

pytestmark = pytest.mark.broker


def slow_resends(total: int, rate: float) -> str:
    return (f'[source]\nkind = "synthetic"\n[source.synthetic]\nrate_hz = {rate}\ntotal = {total}\n'
            f'crop_bytes = 2000\n[outbox]\nresend_after_s = 60\n')


def _committed(node) -> int:
    """Reads the node has committed so far (its outbox's counter)."""
    path = node.data_dir / "outbox.db"
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        row = db.execute("SELECT value FROM meta WHERE key='committed'").fetchone()
        return row[0] if row else 0
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def test_a_dead_worker_holds_no_turn_of_the_shared_subscription(lab):
    node = lab.add_node("node-a", body=slow_resends(60, rate=4))
    first = start(lab, lab.start_ingest(lab.hq_workers[0]))
    start(lab, lab.start_ingest(lab.hq_workers[1]))
    start(lab, lab.start_node(node))
    wait_for(lambda: len(stored_seqs(lab, "node-a")) >= 8, 30, "the first reads stored by the two workers")
    first.send_signal(signal.SIGKILL)  # never restarted
    first.wait(10)
    killed_at = _committed(node)
    wait_for(lambda: _committed(node) >= 60, 40, "the node to commit its 60 reads")
    # Every read committed after the kill is stored by the live worker well within a resend. With the
    # dead worker's 7-day session, the broker queued every other read for it, and each waited
    # for the node's resend (60 s here, then 120, 240 ... while HQ acknowledged the others).
    deadline = time.monotonic() + 25
    while len(stored_seqs(lab, "node-a")) < 60 and time.monotonic() < deadline:
        time.sleep(0.1)
    missing = sorted(set(range(killed_at + 3, 61)) - set(stored_seqs(lab, "node-a")))
    assert not missing, f"reads committed after the kill still missing 25 s later: {missing}"


def test_reads_published_while_no_worker_was_subscribed_go_again_when_one_subscribes(lab):
    node = lab.add_node("node-a", body=slow_resends(40, rate=2))
    ingest = start(lab, lab.start_ingest())
    start(lab, lab.start_node(node))
    wait_for(lambda: len(stored_seqs(lab, "node-a")) >= 5, 30, "the first reads stored")
    # The worker goes, the broker restarts (its persistence on), the node reconnects and goes on
    # publishing reads that no subscription takes.
    ingest.send_signal(signal.SIGKILL)
    ingest.wait(10)
    lab.broker.kill()
    lab.broker.start()
    before = _committed(node)
    wait_for(lambda: _committed(node) >= before + 10, 30, "reads published while no worker is subscribed")
    time.sleep(1)
    assert outbox_depth(node) >= 10
    void = set(range(1, _committed(node) + 1))  # every read so far, those sent into the void among them
    start(lab, lab.start_ingest())
    came_back = time.monotonic()
    wait_for(lambda: void <= set(stored_seqs(lab, "node-a")), 50,
             "the reads published while no worker was subscribed, stored once one subscribed")
    took = time.monotonic() - came_back
    # A resend interval (60 s, grown while HQ was silent) is what they used to wait; a worker's
    # start on a loaded machine takes a few seconds of this.
    assert took < 40, f"{took:.1f} s"
    assert "HQ ingest subscribed again" in (lab.root / "node-a.log").read_text()


def test_a_broker_acl_older_than_the_generation_is_reported_by_ingest(lab):
    """HQ upgraded, the broker's ACL not yet rewritten: the broker refuses the generation without
    a word to the nodes; ingest says so and names the fix."""
    from provisioning import broker as broker_config
    from provisioning import state as hq_state

    state = hq_state.load(lab.hq_dir)
    acl = "".join(line for line in broker_config.acl_text([*state.workers, *state.push_clients]).splitlines(True)
                  if topics.HQ_INGEST not in line)
    (lab.hq_dir / "broker" / "acl").write_text(acl)  # as the previous release wrote it
    lab.broker.stop()
    lab.broker.start()
    start(lab, lab.start_ingest())
    log = lab.root / f"{lab.hq_workers[0]}.log"
    wait_for(lambda: log.exists() and "ca reload-broker" in log.read_text(), 30,
             "ingest to report the generation the broker did not relay")
