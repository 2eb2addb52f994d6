"""The uplink's resend interval doubles while HQ is silent, and resets when an ack arrives; a copy
still queued in the client is not queued again."""
import collections
import time

import pytest

from transport.outbox import Outbox
from transport.uplink import Uplink

pytestmark = pytest.mark.unit


class FakeClient:
    """Records publishes (the uplink only calls publish on the client in _tick)."""

    def __init__(self):
        self.published = []

    def publish(self, topic, payload, qos=0, retain=False):
        self.published.append(topic)

        class Info:
            rc = 0

            def is_published(self):  # the broker PUBACKs at once here
                return True
        return Info()


def bare_uplink(box, window, resend_after_s, monkeypatch):
    """An Uplink with no broker link, its tick driven directly, on a clock the test moves
    (returns the uplink and the one-item list holding the clock's time)."""
    up = Uplink.__new__(Uplink)
    up.outbox, up.node_id, up.window = box, "n1", window
    up.resend_after_ns, up.max_resend_after_ns = resend_after_s * 10**9, 600 * 10**9
    up._health, up.stats, up._queued = None, type("S", (), {"published": 0})(), {}
    up._queued_bytes, up.max_queued_bytes = {}, 32 * 1024 * 1024
    now = [10**18]
    # the uplink times its resends on the monotonic clock (a wall clock step must not stall them)
    monkeypatch.setattr(time, "monotonic_ns", lambda: now[0])
    monkeypatch.setattr(time, "time_ns", lambda: now[0])
    up._progress_ns = now[0]
    up._generation, up._generation_reset, up._generation_reset_ns = None, False, -(1 << 62)
    up._generation_resets, up._generation_progress_ns = 0, up._progress_ns
    up._generation_immediate = __import__("collections").deque(maxlen=2)
    return up, now


def test_resends_space_out_while_hq_is_silent(tmp_path, monkeypatch):
    box = Outbox(tmp_path / "o.db")
    box.commit("read", lambda seq: b"m")
    up, now = bare_uplink(box, 10, 10, monkeypatch)
    client = FakeClient()
    sends = []
    for second in range(0, 200):
        now[0] = 10**18 + second * 10**9
        before = len(client.published)
        up._tick(client)
        if len(client.published) > before:
            sends.append(second)
    # first send, then resends after 10 s, then 20 s apart, then 40 s apart ...
    # first send; resends 11, 21, 41, 81 s apart (10 s interval, doubling with each interval of silence)
    assert sends == [0, 11, 32, 73, 154]
    # an ack resets it: the next resend comes after the base 10 s again
    up._progress_ns = now[0]
    box.mark_sent([1], now_ns=now[0])
    before = len(client.published)
    now[0] += 11 * 10**9
    up._tick(client)
    assert client.published[before:] == ["alpr/v1/node/n1/read"]


class SlowLinkClient:
    """paho's publish contract on a link that carries `rate` messages a second: each publish
    returns an MQTTMessageInfo-like handle whose is_published() turns true at the PUBACK."""

    class Info:
        rc = 0

        def __init__(self):
            self.done = False

        def is_published(self):
            return self.done

    def __init__(self):
        self.queue = collections.deque()

    def publish(self, topic, payload, qos=0, retain=False):
        info = self.Info()
        self.queue.append((payload, info))
        return info


def test_a_slow_link_gets_no_duplicates_and_a_bounded_client_queue(tmp_path, monkeypatch):
    """Acks trickle in (so no backoff), but the link is slower than the resend interval: a
    copy still waiting in the client must not be queued a second time."""
    box = Outbox(tmp_path / "o.db")
    for _ in range(600):
        box.commit("read", lambda seq: str(seq).encode())
    up, now = bare_uplink(box, 100, 30, monkeypatch)
    client = SlowLinkClient()
    delivered = collections.Counter()
    peak = 0
    for second in range(300):
        now[0] = 10**18 + second * 10**9
        up._tick(client)
        peak = max(peak, len(client.queue))
        for _ in range(min(3, len(client.queue))):  # 3 messages a second; HQ stores and acks each at once
            payload, info = client.queue.popleft()
            info.done = True
            seq = int(payload)
            delivered[seq] += 1
            box.ack([seq])
            up._progress_ns = now[0]
    assert box.stats().depth == 0
    assert sorted(delivered) == list(range(1, 601))
    assert max(delivered.values()) == 1
    assert peak <= up.window
