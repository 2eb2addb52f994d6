"""HQ ingest without a broker (the MQTT link is a stand-in): replays after a purge, capture
times out of range, oversize messages refused in the callback, and the share group name."""
from __future__ import annotations

import json
import logging
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

import hq.ingest as ingest_mod
from hq import cli, retention
from hq import config as hq_config
from hq.access import SYSTEM, Access
from hq.errors import BadConfig
from hq.ingest import Ingest
from hq.store import ReadStore
from hq.synthetic import FakeClock
from tests.support.vectors import sample_read
from transport import cbor, envelope, topics
from transport.keys import key_id
from transport.mqtt import BrokerSettings
from transport.registry import Registry
from transport.uplink import FEATURES

pytestmark = pytest.mark.unit

DAY = 86400 * 10**9
SECRET_GROUP = "hq-ingest-" + "0123456789abcdef" * 2


class FakeLink:
    """Stands in for transport.mqtt.MqttLink: keeps the hooks, connects nowhere."""

    def __init__(self, settings: BrokerSettings, **hooks: Any) -> None:
        self.settings = settings
        self.hooks = hooks
        self.started = False

    def start(self) -> None:
        self.started = True

    def stop(self, timeout: float = 5.0) -> None:
        self.started = False


class FakeClient:
    """Records what ingest does to the broker: PUBACKs, publishes, subscriptions."""

    def __init__(self) -> None:
        self.pubacks: list[int] = []
        self.published: list[tuple[str, bytes]] = []
        self.subscribed: list[tuple[str, int]] = []

    def ack(self, mid: int, qos: int) -> None:
        if qos:  # paho's Client.ack sends nothing for QoS 0
            self.pubacks.append(mid)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.published.append((topic, payload))

    def subscribe(self, subs: list[tuple[str, int]]) -> None:
        self.subscribed.extend(subs)

    def acked_seqs(self) -> list[int]:
        return sorted(s for t, m in self.published if t.endswith("/ack") for s in cbor.loads(cbor.loads(m)[0])["seqs"])

    def later_seqs(self) -> list[int]:
        """The seqs answered "later" (set aside at HQ, not stored) in the acks sent."""
        return sorted(s for t, m in self.published if t.endswith("/ack")
                      for s in cbor.loads(cbor.loads(m)[0]).get("later", []))


class Message:
    """What paho hands the message callback."""

    def __init__(self, topic: str, payload: bytes, mid: int) -> None:
        self.topic, self.payload, self.mid, self.qos = topic, payload, mid, 1


class World:
    def __init__(self, tmp_path: Path, **options: Any) -> None:
        self.tmp = tmp_path
        self.node_key = ed25519.Ed25519PrivateKey.generate()
        self.hq_key = x25519.X25519PrivateKey.generate()
        registry = Registry(tmp_path / "registry.db")
        registry.enroll("node-a", "main-st", self.node_key.public_key(), actor="installer")
        registry.close()
        self.ingest = Ingest(BrokerSettings("127.0.0.1", 1, tmp_path / "ca.pem", tmp_path / "c.pem",
                                            tmp_path / "c.key", "hq-ingest-1"),
                             store_path=tmp_path / "hq.db", registry_path=tmp_path / "registry.db",
                             decryption_keys={key_id(self.hq_key.public_key()): self.hq_key},
                             sign_key=ed25519.Ed25519PrivateKey.generate(), **options)
        self.client = FakeClient()
        self.mid = 0

    def message(self, seq: int, t_ns: int, **fields: Any) -> bytes:
        wire = dict(sample_read().to_wire(), node="node-a", seq=seq, t_ns=t_ns, **fields)
        return envelope.seal(wire, kind="read", node_id="node-a", seq=seq, time_ns=t_ns,
                             signing_key=self.node_key, recipient=self.hq_key.public_key())

    def deliver(self, *payloads: bytes) -> list[int]:
        """Hand messages to the callback, then run one tick; returns their message ids."""
        mids = []
        for payload in payloads:
            self.mid += 1
            mids.append(self.mid)
            self.ingest._message(self.client, Message(topics.node_topic("node-a", "read"), payload, self.mid))
        self.ingest._tick(self.client)
        return mids

    def store(self) -> ReadStore:
        return ReadStore(self.tmp / "hq.db")

    def heartbeat(self, body: dict[str, Any]) -> None:
        """A heartbeat from node-a, then a tick that records it."""
        self.mid += 1
        self.ingest._message(self.client, Message(topics.node_topic("node-a", "health"), json.dumps(body).encode(),
                                                  self.mid))
        self.ingest._states_recorded = 0.0  # due for recording now
        self.ingest._tick(self.client)

    def current_node(self) -> None:
        """node-a's heartbeat says it reads "later" (a node of this release)."""
        self.heartbeat({"uplink_features": list(FEATURES)})


@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_mod, "MqttLink", FakeLink)
    w = World(tmp_path)
    yield w
    if w.ingest._store is not None:
        w.ingest._store.close()


# -- A. a replay after a retention purge -----------------------------------------------------------------
def test_a_message_replayed_after_its_purge_is_acknowledged_and_not_stored(world):
    old = time.time_ns() - 400 * DAY
    message = world.message(7, old)
    world.deliver(message)
    assert (world.ingest.stats.stored, world.client.acked_seqs()) == (1, [7])
    store = world.store()
    retention.purge(store, Access(store.db, clock=FakeClock(time.time_ns())), SYSTEM, min_days=365)
    assert store.count("node-a") == 0
    mids = world.deliver(message)
    assert world.client.acked_seqs() == [7, 7]           # the node may stop resending it
    assert set(mids) <= set(world.client.pubacks)
    assert (world.ingest.stats.stored, world.ingest.stats.purged) == (1, 1)
    assert store.count("node-a") == 0                      # ...and it is not back
    store.close()


# -- B. capture times out of range ------------------------------------------------------------------------
@pytest.mark.parametrize("t_ns, why", [
    (2**63 - 1, "ahead of HQ's clock"),           # year 2262: a partition per month up to it
    (lambda: time.time_ns() + 2 * DAY, "ahead of HQ's clock"),
    (946_684_799 * 10**9, "before 2000-01-01"),   # 1999-12-31T23:59:59Z
    (1, "before 2000-01-01"),
])
def test_a_read_dated_out_of_range_is_set_aside_not_stored(world, t_ns, why):
    t_ns = t_ns() if callable(t_ns) else t_ns
    bad, good = world.message(2, t_ns), world.message(3, time.time_ns() - DAY)
    mids = world.deliver(bad, good)
    stats = world.ingest.stats
    assert (dict(stats.rejected), stats.stored, world.client.acked_seqs()) == ({"time": 1}, 1, [3])
    assert sorted(world.client.pubacks) == sorted(mids)  # kept in rejected/, so PUBACKed like a store reject
    store = world.store()
    assert store.seqs("node-a") == [3]
    store.close()
    # Nothing lost: the exact bytes and why are kept for an operator, as for `store`.
    (msg,) = (world.tmp / "rejected").glob("node-a-2-*.msg")
    assert msg.read_bytes() == bad and msg.stat().st_mode & 0o777 == 0o600
    meta = json.loads(msg.with_suffix(".json").read_text())
    assert (meta["reason"], meta["seq"], meta["t_ns"]) == ("time", 2, t_ns)
    assert why in meta["error"]
    # A resend is counted again without being written again.
    written = msg.with_suffix(".json").read_bytes()
    world.deliver(bad)
    assert world.ingest.stats.rejected["time"] == 2 and msg.with_suffix(".json").read_bytes() == written


def test_the_future_skew_is_configurable(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_mod, "MqttLink", FakeLink)
    w = World(tmp_path, max_future_skew_s=3 * 86400.0)
    w.deliver(w.message(1, time.time_ns() + 2 * DAY), w.message(2, time.time_ns() + 4 * DAY))
    assert (w.ingest.stats.stored, dict(w.ingest.stats.rejected)) == (1, {"time": 1})
    w.ingest._store.close()


def test_a_read_that_cannot_be_set_aside_waits_unacknowledged(world):
    world.ingest.rejects_dir = world.tmp / "not-a-folder"
    world.ingest.rejects_dir.write_text("")  # mkdir fails: nowhere to keep it
    (mid,) = world.deliver(world.message(2, 2**63 - 1))
    assert mid not in world.client.pubacks and world.client.published == []
    assert len(world.ingest._pending) == 1  # kept in memory, the broker would redeliver it anyway


@pytest.mark.parametrize("value", [0, -1, 24 * 366])
def test_config_refuses_a_bad_future_skew(tmp_path, value):
    path = tmp_path / "hq.toml"
    path.write_text(f"[ingest]\nmax_future_skew_h = {value}\n")
    with pytest.raises(BadConfig, match="ingest.max_future_skew_h") as refused:
        hq_config.load(path)
    assert "unknown key" not in str(refused.value)  # a known key with a value out of range


# -- C. oversize messages are refused in the callback ----------------------------------------------------------
def test_an_oversize_message_is_refused_in_the_callback_not_queued(world):
    world.ingest.max_message_bytes = 64 * 1024
    big = Message(topics.node_topic("node-a", "read"), b"\x00" * (64 * 1024 + 1), 41)
    world.ingest._message(world.client, big)
    assert len(world.ingest._pending) == 0            # never held until the next tick
    assert world.client.pubacks == [41]                # settled with the broker, as the later check would
    assert (world.ingest.stats.received, dict(world.ingest.stats.rejected)) == (1, {"oversize": 1})
    at_limit = Message(topics.node_topic("node-a", "read"), b"\x00" * (64 * 1024), 42)
    world.ingest._message(world.client, at_limit)
    assert len(world.ingest._pending) == 1             # at the limit: checked as usual on the tick


# -- D. the shared subscription's group comes from the configuration ---------------------------------------------
def test_share_group_defaults_to_the_old_constant_and_is_validated(tmp_path):
    path = tmp_path / "hq.toml"
    path.write_text("[ingest]\n")
    assert hq_config.load(path).ingest.share_group == topics.INGEST_GROUP  # old hq.toml files keep working
    path.write_text(f'[ingest]\nshare_group = "{SECRET_GROUP}"\n')
    assert hq_config.load(path).ingest.share_group == SECRET_GROUP
    for bad in ("a/b", "+", "#", "", "x" * 101, "hq ingest"):
        path.write_text(f"[ingest]\nshare_group = {json.dumps(bad)}\n")
        with pytest.raises(BadConfig, match="ingest.share_group") as refused:
            hq_config.load(path)
        assert "unknown key" not in str(refused.value)


def test_ingest_subscribes_with_the_configured_group(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(ingest_mod, "MqttLink", FakeLink)
    w = World(tmp_path, share_group=SECRET_GROUP)
    w.ingest._connected(w.client, False)
    assert sorted(t for t, _ in w.client.subscribed) == sorted(
        topics.ingest_subscriptions(group=SECRET_GROUP) + [t for t, _ in topics.node_state_subscriptions(group=SECRET_GROUP)]
        + [topics.HQ_INGEST])  # not shared: each worker checks the broker relays its own generation
    with caplog.at_level(logging.WARNING, logger="hq.ingest"):
        w.ingest.start()
    assert "share_group" not in caplog.text


def test_the_default_group_is_warned_about_at_start(world, caplog):
    with caplog.at_level(logging.WARNING, logger="hq.ingest"):
        world.ingest.start()
    assert world.ingest.link.started
    assert "share_group" in caplog.text and "secret" in caplog.text


def test_an_invalid_group_is_refused_by_ingest(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_mod, "MqttLink", FakeLink)
    with pytest.raises(ValueError, match="share group"):
        World(tmp_path, share_group="hq/ingest")


def test_alpr_hq_ingest_uses_the_configured_group_and_skew(tmp_path, monkeypatch):
    made: dict[str, Any] = {}
    handlers: dict[int, Any] = {}

    class Recorder:
        def __init__(self, settings: BrokerSettings, **kwargs: Any) -> None:
            made.update(kwargs)
            self.stats = ingest_mod.IngestStats()

        def start(self) -> None:
            handlers[signal.SIGTERM]()  # as if stopped at once

        def stop(self) -> None:
            pass

    monkeypatch.setattr(ingest_mod, "Ingest", Recorder)
    monkeypatch.setattr("hq.keyring.load_hpke_keys", lambda d: {})
    monkeypatch.setattr("hq.keyring.load_sign_key", lambda d: None)
    monkeypatch.setattr(cli.signal, "signal", lambda sig, handler: handlers.__setitem__(sig, handler))
    config = tmp_path / "hq.toml"
    config.write_text(f'[hq]\ndata_dir = "{tmp_path}"\n[ingest]\nshare_group = "{SECRET_GROUP}"\n'
                      "max_future_skew_h = 2\nmax_set_aside_mb = 5\n")
    assert cli.main(["--config", str(config), "ingest"]) == 0
    assert made["share_group"] == SECRET_GROUP and made["max_future_skew_s"] == 7200
    assert made["max_set_aside_bytes"] == 5 * 1024 * 1024


# -- F. which HPKE key each node seals for (for `ca retire-hpke`) -------------------------------------------
def test_ingest_records_the_hpke_key_each_node_sealed_for(tmp_path, monkeypatch):
    from transport.key_usage import KeyUsage, load, still_sealing

    monkeypatch.setattr(ingest_mod, "MqttLink", FakeLink)
    path = tmp_path / "keys" / "hpke-used-hq-ingest-1.json"
    world = World(tmp_path, key_usage=KeyUsage(path))
    try:
        forged = envelope.seal(dict(sample_read().to_wire(), node="node-a", seq=2, t_ns=time.time_ns()), kind="read",
                               node_id="node-a", seq=2, time_ns=time.time_ns(),
                               signing_key=ed25519.Ed25519PrivateKey.generate(), recipient=world.hq_key.public_key())
        world.deliver(world.message(1, time.time_ns()), forged)
        world.ingest.stop()  # writes what it saw
    finally:
        if world.ingest._store is not None:
            world.ingest._store.close()
    kid = key_id(world.hq_key.public_key())
    usage = load(path)
    assert list(usage) == ["node-a"] and list(usage["node-a"]) == [kid]  # the forged message counts for nothing
    assert list(still_sealing(usage, kid)) == ["node-a"]
    assert path.stat().st_mode & 0o777 == 0o600
