"""HQ ingest announces a new generation each time a worker subscribes; nodes publish what HQ has not
acknowledged again on a new one.

Two gaps this closes (review of session 20): mosquitto restores a worker's session but not its
`$share` subscription after a broker restart, so reads published before the worker subscribed
again went nowhere and waited a resend interval (117 s measured); and a dead worker's 7-day
session kept its turn of the shared subscription, the broker queueing every other message for it.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

import hq.ingest as ingest_mod
from provisioning.broker import acl_text
from tests.unit.test_bounded_uplink import PubackedClient, bare_uplink
from tests.unit.test_hq_ingest_hardening import FakeLink, World
from tests.unit.test_provisioning_root_writes import hq  # noqa: F401  (fixture)
from tests.unit.test_provisioning_s19 import _run as run_cli
from transport import signed, topics
from transport.outbox import Outbox

pytestmark = pytest.mark.unit
S = 10**9


class Message:
    def __init__(self, topic: str, payload: bytes, retain: bool) -> None:
        self.topic, self.payload, self.retain, self.qos, self.mid = topic, payload, retain, 1, 0


def generation(key: ed25519.Ed25519PrivateKey, value: str, node: str = "*") -> bytes:
    return signed.sign("ingest", {"v": 1, "node": node, "t_ns": 1, "generation": value}, key)


# -- HQ: each (re)connect announces a new generation, and keeps no session ---------------------------------
def test_each_connect_publishes_a_new_signed_retained_generation_for_every_node(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(ingest_mod, "MqttLink", FakeLink)
    w = World(tmp_path)
    assert w.ingest.link.settings.session_expiry_s == 0
    w.ingest._connected(w.client, False)
    w.ingest._connected(w.client, True)
    sent = [(t, m) for t, m in w.client.published if t == topics.HQ_INGEST]
    assert len(sent) == 2 and w.ingest.stats.generations == 2
    bodies = [signed.verify("ingest", m, [w.ingest.sign_key.public_key()], "node-a") for _, m in sent]
    assert bodies[0]["generation"] != bodies[1]["generation"]
    assert bodies[0]["node"] == "*"
    # subscribed before it is announced: the resends it calls for must find the subscription
    assert w.client.subscribed


def test_the_acl_lets_ingest_write_the_generation_and_every_node_read_it() -> None:
    text = acl_text(["hq-ingest-1", "hq-push"])
    ingest_part = text.split("user hq-ingest-1", 1)[1].split("user hq-push", 1)[0]
    push_part = text.split("user hq-push", 1)[1].split("# every other client", 1)[0]
    assert f"topic write {topics.HQ_INGEST}" in ingest_part
    assert topics.HQ_INGEST not in push_part
    assert f"pattern read {topics.HQ_INGEST}" in text
    assert f"pattern write {topics.HQ_INGEST}" not in text


# -- the node -------------------------------------------------------------------------------------------------
def connected_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reads: int, window: int):
    """An outbox of `reads` reads under a bare uplink, connected (no session), HQ's key trusted."""
    box = Outbox(tmp_path / "o.db")
    for _ in range(reads):
        box.commit("read", lambda seq: b"sealed")
    wall, mono = [1_700_000_000 * S], [10**12]
    up = bare_uplink(box, window=window, resend_after_s=30, monkeypatch=monkeypatch, wall=wall, mono=mono)
    key = ed25519.Ed25519PrivateKey.generate()
    up.hq_sign_keys = [key.public_key()]
    client = PubackedClient()
    up._connected(client, False)
    return up, box, key, client, mono


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    up, box, key, client, mono = connected_node(tmp_path, monkeypatch, reads=5, window=10)
    yield up, box, key, client, mono
    box.close()


def _reads(client: PubackedClient) -> int:
    return sum(1 for t in client.published if t.endswith("/read"))


def _run(up, client, mono, seconds: int) -> None:
    for _ in range(seconds):
        mono[0] += S
        up._tick(client)


def test_a_live_new_generation_publishes_everything_unacknowledged_again_at_once(node) -> None:
    up, box, key, client, mono = node
    up._message(client, Message(topics.HQ_INGEST, generation(key, "g0"), retain=True))  # the kept copy
    _run(up, client, mono, 200)  # HQ silent: copies at 0, 30, 90 s; the interval has grown to 120 s
    before = _reads(client)
    assert before == 15
    # the same generation again (this node reconnected): nothing
    up._message(client, Message(topics.HQ_INGEST, generation(key, "g0"), retain=True))
    _run(up, client, mono, 1)
    assert _reads(client) == before
    # a worker subscribed again: every unacknowledged read goes now, not at 210 s
    up._message(client, Message(topics.HQ_INGEST, generation(key, "g1"), retain=False))
    _run(up, client, mono, 1)
    assert _reads(client) == before + 5 and up.stats.ingest_generations == 1
    # HQ has still acknowledged nothing: the next copies follow the grown interval (not 30 s)
    _run(up, client, mono, 110)
    assert _reads(client) == before + 5
    _run(up, client, mono, 200)
    assert _reads(client) == before + 10


def test_the_first_kept_copy_is_only_remembered_but_a_first_live_one_resends(node) -> None:
    up, box, key, client, mono = node
    _run(up, client, mono, 1)
    assert _reads(client) == 5
    up._message(client, Message(topics.HQ_INGEST, generation(key, "g0"), retain=True))
    _run(up, client, mono, 1)
    assert _reads(client) == 5  # older than this connection: what a start publishes went anyway
    up._generation = None
    up._message(client, Message(topics.HQ_INGEST, generation(key, "g1"), retain=False))
    _run(up, client, mono, 1)
    assert _reads(client) == 10  # no generation ever seen, and a worker just subscribed


def test_a_generation_not_signed_by_hq_is_ignored(node) -> None:
    up, box, key, client, mono = node
    up._message(client, Message(topics.HQ_INGEST, generation(key, "g0"), retain=True))
    _run(up, client, mono, 1)
    forged = ed25519.Ed25519PrivateKey.generate()
    up._message(client, Message(topics.HQ_INGEST, generation(forged, "g1"), retain=False))
    up._message(client, Message(topics.HQ_INGEST, generation(key, ""), retain=False))
    up._message(client, Message(topics.HQ_INGEST, b"\x00garbage", retain=False))
    _run(up, client, mono, 1)
    assert _reads(client) == 5
    assert up.stats.bad_generations == 3 and up._generation == "g0"


def test_a_flapping_worker_that_stores_nothing_makes_no_storm(node) -> None:
    """A worker reconnecting every second for an hour (its database away, say) while HQ
    acknowledges nothing: the resends follow the resend interval, which keeps growing, as for
    a link that keeps dropping (tests/unit/test_bounded_uplink.py: 12 windows an hour at most).
    With the reset limited only by the base interval it was 120 rounds an hour."""
    up, box, key, client, mono = node
    up._message(client, Message(topics.HQ_INGEST, generation(key, "g0"), retain=True))
    for second in range(3600):
        up._message(client, Message(topics.HQ_INGEST, generation(key, f"g{second + 1}"), retain=False))
        _run(up, client, mono, 1)
    assert _reads(client) <= 12 * 5, _reads(client)
    assert up.stats.ingest_generations == 3600


def test_copies_hq_answered_later_keep_their_backoff_across_a_new_generation(node) -> None:
    up, box, key, client, mono = node
    up._message(client, Message(topics.HQ_INGEST, generation(key, "g0"), retain=True))
    _run(up, client, mono, 1)
    up._apply_ack(signed.sign("ack", {"v": 1, "node": "n1", "seqs": [1], "later": [2, 3], "t_ns": 1}, key))
    up._message(client, Message(topics.HQ_INGEST, generation(key, "g1"), retain=False))
    _run(up, client, mono, 1)
    assert _reads(client) == 5 + 2  # seqs 4 and 5 again; 2 and 3 reached HQ and wait their turn


def test_an_acknowledged_read_is_not_published_again_on_a_new_generation(node) -> None:
    up, box, key, client, mono = node
    up._message(client, Message(topics.HQ_INGEST, generation(key, "g0"), retain=True))
    _run(up, client, mono, 1)
    box.ack([1, 2, 3])
    up._message(client, Message(topics.HQ_INGEST, generation(key, "g1"), retain=False))
    _run(up, client, mono, 1)
    assert _reads(client) == 5 + 2


# -- an upgraded HQ: `ca reload-broker` rewrites the ACL from HQ's state -----------------------------------
def test_reload_broker_brings_an_old_acl_up_to_date(hq: Path, capsys: pytest.CaptureFixture[str]) -> None:
    acl = hq / "broker" / "acl"
    old = "\n".join(line for line in acl.read_text().splitlines() if topics.HQ_INGEST not in line) + "\n"
    acl.write_text(old)  # as a release before the ingest generation wrote it
    rc, out, err = run_cli(capsys, "ca", "reload-broker", "--dir", str(hq), "--actor", "alice")
    assert rc == 0, err
    assert f"pattern read {topics.HQ_INGEST}" in acl.read_text()
    assert f"topic write {topics.HQ_INGEST}" in acl.read_text()
    # what it replaced is kept (in HQ's folder, not the broker's) and named; an unchanged file gets no copy
    (kept,) = (hq / "broker-previous").iterdir()
    assert kept.name.startswith("acl.") and kept.read_text() == old and f"kept as {kept}" in out
    assert oct(kept.stat().st_mode & 0o777) == "0o600"
    rc, out, err = run_cli(capsys, "ca", "reload-broker", "--dir", str(hq), "--actor", "alice")
    assert rc == 0 and "kept as" not in out  # nothing changed this time


@pytest.mark.skipif(os.geteuid() != 0, reason="root only: the broker's user owning its folder needs a chown")
def test_reload_broker_copies_nothing_through_a_link_the_broker_user_planted(tmp_path, capsys) -> None:
    """The broker's user owns the broker folder: a link it puts in place of `acl` must not make
    root copy the link's target (say /etc/shadow) anywhere."""
    from provisioning import hqsetup

    hq_dir = tmp_path / "hq"
    hqsetup.init_hq(hq_dir, actor="alice", broker_names=["127.0.0.1"], broker_port=18883, broker_user="nobody")
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$SECRETHASH:19000:0:99999:7:::\n")
    secret.chmod(0o600)
    acl = hq_dir / "broker" / "acl"
    acl.unlink()
    acl.symlink_to(secret)
    rc, out, err = run_cli(capsys, "ca", "reload-broker", "--dir", str(hq_dir), "--actor", "alice")
    assert rc == 0, err
    assert "no copy of it kept" in err
    copies = [p for p in hq_dir.rglob("*") if p.is_file() and "SECRETHASH" in p.read_text(errors="replace")]
    assert copies == []
    assert not acl.is_symlink() and topics.HQ_INGEST in acl.read_text()  # the ACL itself is written afresh


def test_messages_pending_across_a_reconnect_are_stored_and_acked_to_the_node_but_not_pubacked(tmp_path,
                                                                                              monkeypatch) -> None:
    """A worker keeps no session: message ids of the last connection name nothing, or another
    message, on the next one. What was pending is still stored and acknowledged end to end."""
    monkeypatch.setattr(ingest_mod, "MqttLink", FakeLink)
    w = World(tmp_path)
    w.ingest._retry_at = float("inf")  # the store waits: the message stays pending
    mids = w.deliver(w.message(1, time.time_ns()))
    assert w.client.pubacks == [] and len(w.ingest._pending) == 1
    w.ingest._connected(w.client, False)  # the link dropped and came back, without a session
    w.ingest._retry_at = 0.0
    w.ingest._tick(w.client)
    assert w.client.acked_seqs() == [1]
    assert mids[0] not in w.client.pubacks


def test_a_generation_the_broker_does_not_relay_is_reported_once(tmp_path, monkeypatch, caplog) -> None:
    """A broker whose ACL predates the generation refuses it without a word (mosquitto PUBACKs
    'not authorized'): ingest says so, naming the fix, once a connection."""
    import logging

    monkeypatch.setattr(ingest_mod, "MqttLink", FakeLink)
    w = World(tmp_path)
    clock = [1000.0]
    monkeypatch.setattr(ingest_mod.time, "monotonic", lambda: clock[0])
    w.ingest._connected(w.client, False)
    (sent,) = [m for t, m in w.client.published if t == topics.HQ_INGEST]
    with caplog.at_level(logging.ERROR, logger="hq.ingest"):
        clock[0] += 5
        w.ingest._tick(w.client)
        assert not caplog.records
        clock[0] += 6
        w.ingest._tick(w.client)
        w.ingest._tick(w.client)
    assert len(caplog.records) == 1 and "ca reload-broker" in caplog.records[0].getMessage()
    caplog.clear()
    # relayed back (the ACL rewritten, the worker reconnected): nothing to say
    w.ingest._connected(w.client, False)
    sent = [m for t, m in w.client.published if t == topics.HQ_INGEST][-1]

    class Relayed:
        topic, payload, qos, mid, retain = topics.HQ_INGEST, sent, 1, 77, False
    w.ingest._message(w.client, Relayed())
    assert 77 in w.client.pubacks
    with caplog.at_level(logging.ERROR, logger="hq.ingest"):
        clock[0] += 60
        w.ingest._tick(w.client)
    assert not caplog.records


def test_a_session_can_be_kept_while_older_nodes_remain(tmp_path, monkeypatch) -> None:
    """Nodes of a release before the generation never hear it: while they remain, hq.toml can
    keep a broker session for the workers, so the broker queues what they send meanwhile."""
    from hq import config as hq_config
    from hq.errors import BadConfig

    path = tmp_path / "hq.toml"
    path.write_text("[ingest]\n")
    assert hq_config.load(path).ingest.session_expiry_s == 0
    path.write_text("[ingest]\nsession_expiry_s = 604800\n")
    assert hq_config.load(path).ingest.session_expiry_s == 604800
    path.write_text("[ingest]\nsession_expiry_s = -1\n")
    with pytest.raises(BadConfig, match="ingest.session_expiry_s"):
        hq_config.load(path)
    monkeypatch.setattr(ingest_mod, "MqttLink", FakeLink)
    w = World(tmp_path, session_expiry_s=604800)
    assert w.ingest.link.settings.session_expiry_s == 604800


def test_a_worker_back_after_a_long_outage_is_not_kept_waiting_by_the_interval_it_grew(node) -> None:
    """HQ away 20 min (the resend interval grown to 8 min), then a worker comes up and stores
    nothing, and another subscribes half a minute later: the reads the node published while none
    was subscribed go on the second generation, not 8 minutes on (second-round review)."""
    up, box, key, client, mono = node
    up._message(client, Message(topics.HQ_INGEST, generation(key, "g0"), retain=True))
    _run(up, client, mono, 1200)
    up._message(client, Message(topics.HQ_INGEST, generation(key, "g1"), retain=False))
    _run(up, client, mono, 2)
    for _ in range(3):
        box.commit("read", lambda seq: b"sealed")  # published while no worker is subscribed
    _run(up, client, mono, 30)
    up._message(client, Message(topics.HQ_INGEST, generation(key, "g2"), retain=False))
    before = _reads(client)
    _run(up, client, mono, 2)
    assert _reads(client) - before == 8  # all 8 unacknowledged, the 3 sent into the void among them


def test_a_generation_soon_after_another_goes_at_once_when_hq_answered_in_between(node) -> None:
    """A worker restarted a few seconds after the node's last generation resend, HQ having
    acknowledged reads in between: nothing to back off from (a broker test waited 60 s)."""
    up, box, key, client, mono = node
    up._message(client, Message(topics.HQ_INGEST, generation(key, "g1"), retain=False))
    _run(up, client, mono, 1)
    assert _reads(client) == 5
    up._apply_ack(signed.sign("ack", {"v": 1, "node": "n1", "seqs": [1, 2], "t_ns": 1}, key))
    for _ in range(3):
        box.commit("read", lambda seq: b"sealed")
    _run(up, client, mono, 1)
    assert _reads(client) == 8
    _run(up, client, mono, 5)
    up._message(client, Message(topics.HQ_INGEST, generation(key, "g2"), retain=False))
    _run(up, client, mono, 1)
    assert _reads(client) == 8 + 6  # the 6 unacknowledged, at once


@pytest.mark.parametrize("later_only", [False, True])
def test_a_worker_restarting_every_2_s_while_hq_answers_makes_no_storm(tmp_path, monkeypatch, later_only) -> None:
    """Each answer from HQ re-arms an at-once resend, and the resent copies' acks would re-arm it
    again: a worker restarting every 2 s for 5 minutes, HQ answering one read between restarts,
    had the node resend its whole window at every restart (150 windows; third-round review).
    Now at most GENERATION_AT_ONCE at-once resends per resend interval."""
    from transport import uplink as uplink_mod

    up, box, key, client, mono = connected_node(tmp_path, monkeypatch, reads=500, window=50)
    up._message(client, Message(topics.HQ_INGEST, generation(key, "g0"), retain=True))
    _run(up, client, mono, 3)
    start = _reads(client)
    flaps = 150
    for flap in range(flaps):
        body = {"v": 1, "node": "n1", "seqs": [] if later_only else [flap + 1], "t_ns": 1}
        if later_only:
            body["later"] = [flap + 1]
        up._apply_ack(signed.sign("ack", body, key))
        up._message(client, Message(topics.HQ_INGEST, generation(key, f"g{flap + 1}"), retain=False))
        _run(up, client, mono, 2)
    windows = uplink_mod.GENERATION_AT_ONCE * (2 * flaps // 30 + 1)
    resent = _reads(client) - start
    assert resent <= windows * 50 + flaps, f"{resent} reads published in {2 * flaps} s"
    assert resent < 150 * 50 // 4  # against a window at every restart


def test_two_reloads_in_one_second_keep_both_previous_texts(tmp_path, monkeypatch) -> None:
    from provisioning import cli as provisioning_cli

    monkeypatch.setattr(provisioning_cli.time, "gmtime", lambda *a: time.struct_time((2026, 12, 2, 1, 0, 0, 2, 336, 0)))
    first = provisioning_cli._keep_previous(tmp_path / "prev", "acl", b"hand edit 1")
    second = provisioning_cli._keep_previous(tmp_path / "prev", "acl", b"hand edit 2")
    assert first != second and first.name == "acl.20261202T010000Z"
    assert (first.read_bytes(), second.read_bytes()) == (b"hand edit 1", b"hand edit 2")
    assert oct(second.stat().st_mode & 0o777) == "0o600"


def test_generations_that_find_nothing_unacknowledged_do_not_count_towards_the_backoff(node) -> None:
    """A rolling restart of two workers while the node had nothing unacknowledged counted as two
    unanswered resends: the next needed one then waited twice the base interval (final review)."""
    up, box, key, client, mono = node
    up._message(client, Message(topics.HQ_INGEST, generation(key, "g0"), retain=True))
    _run(up, client, mono, 1)
    up._apply_ack(signed.sign("ack", {"v": 1, "node": "n1", "seqs": [1, 2, 3, 4, 5], "t_ns": 1}, key))
    _run(up, client, mono, 5)
    for name in ("g1", "g2"):  # nothing unacknowledged: nothing to resend
        up._message(client, Message(topics.HQ_INGEST, generation(key, name), retain=False))
        _run(up, client, mono, 7)
    box.commit("read", lambda seq: b"sealed")  # published while a worker resubscribes: into the void
    _run(up, client, mono, 1)
    before = _reads(client)
    up._message(client, Message(topics.HQ_INGEST, generation(key, "g3"), retain=False))
    _run(up, client, mono, 1)
    assert _reads(client) == before + 1
