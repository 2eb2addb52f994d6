"""Reads behind messages HQ sets aside leave at once, over a real broker, node and ingest.

A node whose clock ran 30 h ahead for a while has those reads at the front of its outbox. HQ
verifies them, sets them aside (reason `time`) and answers "later"; the node keeps them, backs
them off, and its window is free for the reads behind them. Before, HQ said nothing: with a
window of 1 the reads behind them never left.
"""
from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.broker.test_data_path import outbox_depth, start, stored_seqs, synthetic
from tests.conftest import wait_for
from tests.support.vectors import sample_read
from transport import envelope
from transport.keys import load_private_key
from transport.outbox import Outbox

pytestmark = pytest.mark.broker
AHEAD_NS = 30 * 3600 * 10**9


def test_reads_behind_set_aside_ones_are_stored_at_once_with_a_window_of_one(lab):
    poison = 10
    # (a heartbeat a second: HQ answers "later" alone only to a node whose heartbeat says it reads it)
    node = lab.add_node("node-a", body=synthetic(poison + 5, rate=2, extra="window = 1\n") + "[health]\ninterval_s = 1\n")
    sign_key = load_private_key(node.data_dir / "keys/node-sign.key", ed25519.Ed25519PrivateKey)
    ahead = time.time_ns() + AHEAD_NS
    box = Outbox(node.data_dir / "outbox.db")  # committed while the node's clock ran ahead
    for _ in range(poison):
        def sealed(seq: int) -> bytes:
            wire = dict(sample_read().to_wire(), node="node-a", seq=seq, t_ns=ahead)
            return envelope.seal(wire, kind="read", node_id="node-a", seq=seq, time_ns=ahead,
                                 signing_key=sign_key, recipient=lab.hq_hpke.public_key())
        box.commit("read", sealed)
    box.close()
    start(lab, lab.start_ingest())
    started = time.monotonic()
    start(lab, lab.start_node(node))
    wait_for(lambda: stored_seqs(lab, "node-a") == list(range(poison + 1, poison + 6)), 60,
             "the 5 reads behind the set-aside ones stored at HQ")
    took = time.monotonic() - started
    # 5 reads at 2 a second, each behind 10 set-aside copies answered within milliseconds: seconds.
    # Before, the first of them waited for ever (a resend interval doubling to 10 min each time).
    assert took < 45, f"{took:.0f} s"
    # Kept on the node, and kept aside at HQ (verifiable copies), not stored.
    wait_for(lambda: outbox_depth(node) == poison, 30, "all but the set-aside messages acknowledged")
    assert len(list((lab.hq_dir / "rejected").glob("node-a-*.msg"))) == poison
    assert "HQ set aside 1 message(s)" in (lab.root / "node-a.log").read_text()
