"""The uplink's in-memory state stays bounded against a broker that never PUBACKs, a wall clock
stepped back, and a full outbox dropping what the uplink is about to publish."""
from __future__ import annotations

import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from transport.outbox import Outbox
from transport.uplink import Uplink, UplinkStats

pytestmark = pytest.mark.unit
S = 10**9


class NeverAckedClient:
    """paho's publish contract with a broker that takes every PUBLISH and PUBACKs none: paho keeps
    each QoS 1 copy in its own queue until its PUBACK (and resends it itself after a reconnect),
    so `queue` is what paho would hold in memory."""

    class Info:
        rc = 0

        def is_published(self) -> bool:
            return False

    def __init__(self) -> None:
        self.queue: list[tuple[str, int]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> NeverAckedClient.Info:
        if qos:
            self.queue.append((topic, qos))
        return self.Info()

    def subscribe(self, subs: list[tuple[str, int]]) -> None:
        pass


class PubackedClient:
    """A broker that PUBACKs at once (HQ's end-to-end ack is what the test withholds)."""

    class Info:
        rc = 0

        def is_published(self) -> bool:
            return True

    def __init__(self) -> None:
        self.published: list[str] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> PubackedClient.Info:
        self.published.append(topic)
        return self.Info()

    def subscribe(self, subs: list[tuple[str, int]]) -> None:
        pass


def bare_uplink(box: Outbox, window: int, resend_after_s: int, monkeypatch: pytest.MonkeyPatch,
                wall: list[int], mono: list[int]) -> Uplink:
    """An Uplink with no broker link, ticked by the test on clocks it moves (`wall`, `mono`)."""
    monkeypatch.setattr(time, "time_ns", lambda: wall[0])
    monkeypatch.setattr(time, "monotonic_ns", lambda: mono[0])
    up = Uplink.__new__(Uplink)
    up.outbox, up.node_id, up.window = box, "n1", window
    up.resend_after_ns, up.max_resend_after_ns = resend_after_s * S, 600 * S
    up._health, up.stats, up._queued, up._status_info = None, UplinkStats(), {}, None
    up._queued_bytes, up.max_queued_bytes = {}, 32 * 1024 * 1024
    up._progress_ns = mono[0]
    up._full_reset_ns = -(1 << 62)
    up._generation, up._generation_reset, up._generation_reset_ns = None, False, -(1 << 62)
    up._generation_resets, up._generation_progress_ns = 0, up._progress_ns
    up._generation_immediate = __import__("collections").deque(maxlen=2)
    return up


def filled_uplink(tmp_path: Path, messages: int, window: int, monkeypatch: pytest.MonkeyPatch
                  ) -> tuple[Outbox, Uplink, list[int], list[int]]:
    """An outbox holding `messages` reads and a bare_uplink over it, with its two clocks."""
    box = Outbox(tmp_path / "o.db")
    for _ in range(messages):
        box.commit("read", lambda seq: b"sealed")
    wall, mono = [1_700_000_000 * S], [10**12]
    return box, bare_uplink(box, window=window, resend_after_s=30, monkeypatch=monkeypatch, wall=wall, mono=mono), \
        wall, mono


def _an_hour_of_reconnects(up: Uplink, wall: list[int], mono: list[int], every_s: int, session_present: bool) -> int:
    """An hour of HQ silence on a broker that PUBACKs at once, the link reconnecting every
    `every_s` seconds (reporting `session_present`): the copies of reads published."""
    client = PubackedClient()
    up._connected(client, False)
    for second in range(3600):
        wall[0] += S
        mono[0] += S
        if second % every_s == every_s - 1:
            up._connected(client, session_present)
        up._tick(client)
    return sum(1 for topic in client.published if topic.endswith("/read"))


def test_a_broker_that_never_pubacks_gets_at_most_a_window_of_copies(tmp_path: Path, monkeypatch) -> None:
    """Two hours connected to a broker that takes everything and PUBACKs nothing, reconnecting
    every minute: paho's queue (which nothing but a PUBACK empties) must stay within the window.
    The uplink used to forget a copy 600 s after handing it over and publish another, and to
    queue a new 'online' status at every reconnect."""
    box, up, wall, mono = filled_uplink(tmp_path, 2000, 50, monkeypatch)
    client = NeverAckedClient()
    up._connected(client, False)
    for second in range(2 * 3600):
        wall[0] += S
        mono[0] += S
        if second % 60 == 59:
            up._connected(client, True)  # the link dropped and came back
        up._tick(client)
    data = [t for t, _ in client.queue if t.endswith("/read")]
    status = [t for t, _ in client.queue if t.endswith("/status")]
    assert len(data) <= up.window, f"{len(data)} copies queued in paho for a window of {up.window}"
    assert len(status) == 1
    assert len(up._queued) <= up.window
    box.close()


def test_a_wall_clock_stepped_back_does_not_stall_resends(tmp_path: Path, monkeypatch) -> None:
    """NTP steps the clock back a day (a Pi that booted with a wrong time). Messages published
    before the step and never acknowledged must still be resent after resend_after_s of real
    time, not a day later; they used to hold the whole window meanwhile."""
    box, up, wall, mono = filled_uplink(tmp_path, 5, 5, monkeypatch)
    client = PubackedClient()
    up._tick(client)
    assert len(client.published) == 5
    wall[0] -= 86400 * S  # the step back
    for _ in range(31):
        wall[0] += S
        mono[0] += S
        up._tick(client)
    assert len(client.published) == 10, "unacknowledged messages were not resent after the clock step"
    box.close()


def test_a_message_dropped_under_quota_while_being_published_is_not_kept_as_in_flight(tmp_path: Path) -> None:
    """The producer drops the oldest message to make room between the uplink's due() and its
    mark_sent(): the dropped seq must not stay in the in-flight map (it did until a reconnect,
    one more with every such race while the outbox is full)."""
    box = Outbox(tmp_path / "o.db", max_entries=3)
    for _ in range(3):
        box.commit("read", lambda seq: b"sealed")
    chosen = [p.seq for p in box.due(10, 0)]
    assert chosen == [1, 2, 3]
    box.commit("read", lambda seq: b"sealed")  # full: seq 1 is dropped
    box.mark_sent(chosen)
    assert box.in_flight() == 2
    box.ack([2, 3])
    assert box.in_flight() == 0
    box.close()


def test_the_uplink_records_only_what_it_published(tmp_path: Path, monkeypatch) -> None:
    """End to end through _tick: sent seqs are recorded; a seq dropped meanwhile is not."""
    box, up, wall, mono = filled_uplink(tmp_path, 3, 10, monkeypatch)
    up._tick(PubackedClient())
    assert box.in_flight(30 * S) == 3
    assert up.stats.published == 3
    box.close()


def test_a_status_paho_refused_is_published_again_at_the_next_connect(tmp_path: Path, monkeypatch) -> None:
    """Only a status copy waiting in paho's queue stops another: one paho refused (its queue full)
    is not waiting for anything, and must not keep the node from announcing itself for good."""
    class RefusingClient(NeverAckedClient):
        def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> paho.MQTTMessageInfo:
            self.queue.append((topic, qos))
            info = paho.MQTTMessageInfo(1)
            info.rc = paho.MQTT_ERR_QUEUE_SIZE
            return info

    box, up, wall, mono = filled_uplink(tmp_path, 0, 5, monkeypatch)
    client = RefusingClient()
    up._connected(client, False)
    up._connected(client, True)
    assert [t for t, _ in client.queue if t.endswith("/status")] == ["alpr/v1/node/n1/status"] * 2
    box.close()


def test_messages_hq_never_acknowledges_do_not_hold_back_the_reads_behind_them(tmp_path: Path, monkeypatch) -> None:
    """HQ PUBACKs but never acknowledges a message it sets aside or rejects (a capture time far
    ahead, a store refusal). With a window's worth of them at the front of the outbox they used
    to be published again at every resend, taking every place in the window, and no read behind
    them ever left. Now they get at most half the room, and wait twice as long after each copy
    HQ ignored while it acknowledged others."""
    from transport import outbox as outbox_mod

    box = Outbox(tmp_path / "o.db")
    poison = [box.commit("read", lambda seq: b"set aside at HQ") for _ in range(600)]
    good = [box.commit("read", lambda seq: b"sealed") for _ in range(100)]
    wall, mono = [1_700_000_000 * S], [10**12]
    up = bare_uplink(box, window=500, resend_after_s=30, monkeypatch=monkeypatch, wall=wall, mono=mono)
    client = PubackedClient()
    published: list[int] = []
    real_mark = box.mark_sent
    monkeypatch.setattr(box, "mark_sent", lambda seqs, now_ns=None: (published.extend(seqs), real_mark(seqs, now_ns)))

    def run(seconds: int) -> None:
        """Time passes; a vehicle is read every 10 s, and HQ acknowledges every good message
        within the second it gets it."""
        for second in range(seconds):
            wall[0] += S
            mono[0] += S
            if second % 10 == 0:
                good.append(box.commit("read", lambda seq: b"sealed"))
            up._tick(client)
            acked = [seq for seq in published if seq in set(good)]
            if acked:
                box.ack(acked)
            published.clear()

    run(3600)
    assert box.stats().depth == len(poison), "reads behind the messages HQ never acknowledges did not leave"
    # ...and the ignored ones are not sent again every 30 s for ever: they back off, to an hour
    assert box.stats().ignored_by_hq == len(poison)
    copies_before = len(client.published)
    run(1800)
    ignored_copies = len(client.published) - copies_before - 180  # less the reads of that half hour
    # every 30 s would be 60 copies each; backed off, one or two
    assert ignored_copies <= 2 * len(poison), f"{ignored_copies} copies of {len(poison)} ignored messages in 30 min"
    assert outbox_mod.MAX_BACKOFF_NS == 3600 * S
    box.close()


def test_copies_waiting_in_paho_are_bounded_in_bytes(tmp_path: Path, monkeypatch) -> None:
    """A stalled link (the broker takes nothing): paho keeps every copy it was handed. A window
    of 200 kB overview images used to be 100 MB there; now the copies stop at the byte bound."""
    box = Outbox(tmp_path / "o.db")
    for _ in range(100):
        box.commit("overview", lambda seq: b"j" * 200_000)
    wall, mono = [1_700_000_000 * S], [10**12]
    up = bare_uplink(box, window=500, resend_after_s=30, monkeypatch=monkeypatch, wall=wall, mono=mono)
    up.max_queued_bytes = 2_000_000
    client = NeverAckedClient()
    for _ in range(120):
        wall[0] += S
        mono[0] += S
        up._tick(client)
    assert len(client.queue) == 10  # 10 x 200 kB: the bound, however long it waits
    assert sum(up._queued_bytes.values()) <= up.max_queued_bytes
    box.close()


def test_a_link_that_keeps_dropping_while_hq_is_down_does_not_resend_the_window_each_time(tmp_path: Path,
                                                                                          monkeypatch) -> None:
    """HQ down for an hour, the link dropping every minute: each reconnect used to resend the
    whole window and restart the resend interval at its base, 60 windows into the broker's
    queue for HQ. Now the interval keeps doubling through reconnects and only copies sent in
    the last interval go again."""
    box, up, wall, mono = filled_uplink(tmp_path, 5000, 500, monkeypatch)
    copies = _an_hour_of_reconnects(up, wall, mono, every_s=60, session_present=True)
    assert copies <= 10 * up.window, f"{copies} copies in an hour of HQ silence"
    box.close()


def test_a_broker_back_without_the_session_gets_every_unacknowledged_message_again_at_once(
        tmp_path: Path, monkeypatch) -> None:
    """The broker restarted without persistence (session_present False): what it had queued for
    HQ is gone, so the unacknowledged messages go again at the reconnect, not after a resend
    interval that grew while HQ was silent (a 9 s outage left reads waiting 16 s and more)."""
    box, up, wall, mono = filled_uplink(tmp_path, 5, 10, monkeypatch)
    client = PubackedClient()

    def reads() -> int:
        return sum(1 for topic in client.published if topic.endswith("/read"))
    up._tick(client)
    assert reads() == 5
    for _ in range(125):  # HQ silent: copies at 0, 30 and 90 s, the interval now 120 s
        wall[0] += S
        mono[0] += S
        up._tick(client)
    before = reads()
    up._connected(client, True)  # a reconnect that kept the session: the copies keep their schedule
    up._tick(client)
    assert reads() == before
    up._connected(client, False)  # the broker lost the session, and what it queued for HQ
    up._tick(client)
    assert reads() == before + 5
    box.close()


def test_a_broker_that_never_keeps_the_session_and_a_link_that_keeps_dropping_make_no_storm(
        tmp_path: Path, monkeypatch) -> None:
    """session_present False at every reconnect, every 5 s, for an hour while HQ is silent: the
    full resend happens at most once per (grown) resend interval, not at every reconnect (an hour
    of that sent 360,500 copies of 5,000 reads)."""
    box, up, wall, mono = filled_uplink(tmp_path, 5000, 500, monkeypatch)
    copies = _an_hour_of_reconnects(up, wall, mono, every_s=5, session_present=False)
    assert copies <= 12 * up.window, f"{copies} copies in an hour"
    box.close()
