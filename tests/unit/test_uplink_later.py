"""HQ answers "later" for messages it verified but set aside (a capture time too far ahead, a
store refusal), and the node stops letting them hold its window.

Before, HQ PUBACKed such a message and said nothing to the node. A window's worth of them at the
front of the outbox (a node whose clock ran 30 h ahead for a while) held back every read behind
them while HQ acknowledged nothing else: the first new read took 320 s behind 500 of them, 6,297 s
behind 3,000, and never with a window of 1.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

import hq.ingest as ingest_mod
from tests.unit.test_bounded_uplink import PubackedClient, bare_uplink
from tests.unit.test_hq_ingest_hardening import World, world  # noqa: F401  (fixture)
from transport import signed
from transport.outbox import Outbox

pytestmark = pytest.mark.unit
S = 10**9
DAY = 86400 * S


# -- Outbox.defer ---------------------------------------------------------------------------------------
def test_a_deferred_copy_leaves_the_window_and_waits_twice_as_long(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    seqs = [box.commit("read", lambda seq: b"sealed") for _ in range(3)]
    t0 = 10**12
    box.mark_sent(seqs, t0)
    assert box.in_flight(30 * S, t0 + S) == 3
    assert box.defer([seqs[0], 999]) == 1  # 999: never published here, ignored
    assert box.defer([seqs[0]]) == 0       # a second answer for the same copy changes nothing
    assert box.in_flight(30 * S, t0 + S) == 2
    assert box.stats().ignored_by_hq == 1
    # one strike: due after 60 s, not 30 (the other two are due at 30 s)
    assert [p.seq for p in box.due(10, 30 * S, t0 + 31 * S)] == seqs[1:]
    assert [p.seq for p in box.due(10, 30 * S, t0 + 61 * S)] == seqs
    # the copy sent after the answer is in the window again, and its answer is a second strike
    box.mark_sent([seqs[0]], t0 + 61 * S)
    assert box.in_flight(30 * S, t0 + 62 * S) == 1  # the two others were sent 62 s ago
    assert box.defer([seqs[0]]) == 1
    assert [p.seq for p in box.due(10, 30 * S, t0 + 61 * S + 119 * S)] == seqs[1:]
    assert seqs[0] in [p.seq for p in box.due(10, 30 * S, t0 + 61 * S + 121 * S)]
    # an ack still removes it, and its records go with it
    assert box.ack([seqs[0]]) == 1
    assert box.stats().ignored_by_hq == 0 and seqs[0] not in box._answered
    box.close()


def test_a_deferred_copy_forgotten_by_a_reconnect_goes_again_with_the_rest(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    seq = box.commit("read", lambda seq: b"sealed")
    box.mark_sent([seq], 10**12)
    box.reset_sent()  # the broker lost the session
    assert box.defer([seq]) == 1
    assert [p.seq for p in box.due(10, 30 * S, 10**12 + S)] == [seq]
    box.close()


# -- the uplink: reads behind a window of set-aside messages ---------------------------------------------
def _set_aside_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, window: int, set_aside: int):
    """An outbox whose first `set_aside` messages HQ will set aside, under a bare uplink that trusts
    a fresh HQ key; `published` collects the seqs the uplink publishes."""
    box = Outbox(tmp_path / "o.db")
    poison = {box.commit("read", lambda seq: b"set aside at HQ") for _ in range(set_aside)}
    wall, mono = [1_700_000_000 * S], [10**12]
    up = bare_uplink(box, window=window, resend_after_s=30, monkeypatch=monkeypatch, wall=wall, mono=mono)
    key = ed25519.Ed25519PrivateKey.generate()
    up.hq_sign_keys = [key.public_key()]
    published: list[int] = []
    real_mark = box.mark_sent
    monkeypatch.setattr(box, "mark_sent", lambda seqs, now_ns=None: (published.extend(seqs), real_mark(seqs, now_ns)))
    return box, poison, up, key, published, wall, mono


def _first_good_read_leaves_after(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, window: int,
                                  set_aside: int) -> tuple[float, int, Outbox]:
    """`set_aside` messages HQ sets aside at the front of the outbox (committed while the node's
    clock ran ahead, never published yet), then a read every 10 s; HQ answers every copy within the
    second it is published: acknowledged if good, "later" if set aside. Returns the seconds until
    the first good read was acknowledged, the copies of set-aside messages published in the hour,
    and the outbox."""
    box, poison, up, hq_key, published, wall, mono = _set_aside_first(tmp_path, monkeypatch, window, set_aside)
    client = PubackedClient()
    good: list[int] = []
    first_ack_s: float | None = None
    poison_copies = 0
    for second in range(3600):
        wall[0] += S
        mono[0] += S
        if second % 10 == 0:
            good.append(box.commit("read", lambda seq: b"sealed"))
        up._tick(client)
        stored = [s for s in published if s not in poison]
        later = [s for s in published if s in poison]
        poison_copies += len(later)
        published.clear()
        if stored or later:
            body = {"v": 1, "node": "n1", "seqs": stored, "t_ns": wall[0]}
            if later:
                body["later"] = later
            up._apply_ack(signed.sign("ack", body, hq_key))
        if stored and first_ack_s is None:
            first_ack_s = float(second)
    assert first_ack_s is not None, "no read behind the set-aside messages ever left"
    return first_ack_s, poison_copies, box


@pytest.mark.parametrize("window, set_aside", [(500, 500), (500, 3000), (1, 20)])
def test_reads_behind_a_window_of_set_aside_messages_leave_within_seconds(tmp_path, monkeypatch, window,
                                                                           set_aside) -> None:
    first_s, copies, box = _first_good_read_leaves_after(tmp_path, monkeypatch, window=window, set_aside=set_aside)
    assert first_s <= 30, f"the first read behind {set_aside} set-aside messages left after {first_s} s"
    # every read committed in the hour left; the set-aside ones stay, kept for later
    assert box.stats().depth == set_aside
    assert box.stats().ignored_by_hq == set_aside
    # ...and they back off (1 h at most between copies): not one copy every 30 s each (120 an hour)
    assert copies <= 8 * set_aside, f"{copies} copies of {set_aside} set-aside messages in an hour"
    box.close()


def test_an_ack_whose_later_is_not_a_list_of_integers_is_refused(tmp_path, monkeypatch) -> None:
    box = Outbox(tmp_path / "o.db")
    seq = box.commit("read", lambda s: b"sealed")
    wall, mono = [1_700_000_000 * S], [10**12]
    up = bare_uplink(box, window=10, resend_after_s=30, monkeypatch=monkeypatch, wall=wall, mono=mono)
    hq_key = ed25519.Ed25519PrivateKey.generate()
    up.hq_sign_keys = [hq_key.public_key()]
    up._tick(PubackedClient())
    up._apply_ack(signed.sign("ack", {"v": 1, "node": "n1", "seqs": [], "later": [True], "t_ns": 1}, hq_key))
    assert up.stats.bad_acks == 1 and up.stats.deferred == 0
    up._apply_ack(signed.sign("ack", {"v": 1, "node": "n1", "seqs": [], "later": [seq], "t_ns": 1}, hq_key))
    assert up.stats.deferred == 1 and box.stats().depth == 1  # kept: "later" never deletes
    box.close()


# -- HQ's side: ingest answers "later" for what it set aside ---------------------------------------------


def test_ingest_answers_later_for_a_read_it_sets_aside_and_acks_the_rest_in_the_same_message(world) -> None:
    world.current_node()
    now = time.time_ns()
    world.deliver(world.message(1, now), world.message(2, now + 2 * DAY), world.message(3, now))
    assert world.ingest.stats.rejected["time"] == 1
    acks = [signed.verify("ack", m, [world.ingest.sign_key.public_key()], "node-a") for _, m in world.client.published]
    assert [(a["seqs"], a.get("later")) for a in acks] == [([1, 3], [2])]
    # a resend of the same bytes within the hour is refused without the store: answered again
    world.client.published.clear()
    world.deliver(world.message(2, now + 2 * DAY))
    assert world.client.acked_seqs() == [] and world.client.later_seqs() == [2]


def test_ingest_answers_nothing_for_a_message_that_fails_verification(world) -> None:
    forged = World.__new__(World)
    forged.__dict__.update(world.__dict__)
    forged.node_key = ed25519.Ed25519PrivateKey.generate()  # not node-a's enrolled key
    world.deliver(forged.message(5, time.time_ns() + 2 * DAY))
    assert world.ingest.stats.rejected["wrong-key"] == 1
    assert world.client.published == []  # nothing is said about a seq nobody proved is node-a's


# -- resets leave copies HQ answered "later" alone ---------------------------------------------------------
def _an_hour_of_set_aside_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, generation_every_s: int = 0,
                                 reconnect_every_s: int = 0) -> int:
    """3,000 messages HQ sets aside (answered "later" within the second) for an hour, with a new
    ingest generation or a reconnect without the session every so often: copies published."""
    from transport import topics

    class Live:
        topic, retain = topics.HQ_INGEST, False

        def __init__(self, payload: bytes) -> None:
            self.payload = payload

    box, poison, up, key, published, wall, mono = _set_aside_first(tmp_path, monkeypatch, 500, 3000)
    client = PubackedClient()
    up._connected(client, False)
    copies = 0
    for second in range(3600):
        wall[0] += S
        mono[0] += S
        if generation_every_s and second % generation_every_s == 0:
            body = {"v": 1, "node": "*", "t_ns": 1, "generation": f"g{second}"}
            up._message(client, Live(signed.sign("ingest", body, key)))
        if reconnect_every_s and second % reconnect_every_s == reconnect_every_s - 1:
            up._connected(client, False)
        up._tick(client)
        later = [s for s in published if s in poison]
        copies += len(later)
        published.clear()
        if later:
            up._apply_ack(signed.sign("ack", {"v": 1, "node": "n1", "seqs": [], "later": later, "t_ns": 1}, key))
    box.close()
    return copies


@pytest.mark.parametrize("generation_every_s, reconnect_every_s", [(31, 0), (0, 5)])
def test_set_aside_copies_keep_their_backoff_across_generations_and_lost_sessions(
        tmp_path, monkeypatch, generation_every_s, reconnect_every_s) -> None:
    """A full reset (a new ingest generation, a broker that kept no session) used to publish
    every set-aside copy again: 350,500 and 360,500 copies of 3,000 in an hour (review)."""
    copies = _an_hour_of_set_aside_copies(tmp_path, monkeypatch, generation_every_s=generation_every_s,
                                          reconnect_every_s=reconnect_every_s)
    assert copies <= 8 * 3000, f"{copies} copies of 3000 set-aside messages in an hour"


def test_an_older_node_gets_later_only_beside_stored_seqs(world) -> None:
    """A node of an earlier release takes any verified ack as HQ's progress: an ack saying only
    "later" would stop its backoff (its whole window again every resend interval). It is sent
    "later" only beside seqs HQ stored, which it acts on as before."""
    world.heartbeat({"uplink": {"acks": 3}})  # a heartbeat without uplink_features
    now = time.time_ns()
    world.deliver(world.message(2, now + 2 * DAY))
    assert world.client.published == []
    world.deliver(world.message(3, now), world.message(4, now + 2 * DAY))
    assert world.client.acked_seqs() == [3] and world.client.later_seqs() == [4]
    world.client.published.clear()
    world.current_node()  # upgraded: later-only answers from now on
    world.deliver(world.message(5, now + 2 * DAY))
    assert world.client.acked_seqs() == [] and world.client.later_seqs() == [5]


def test_a_worker_that_did_not_see_the_nodes_heartbeat_learns_it_from_the_store(world) -> None:
    """Heartbeats are shared among the workers like reads: each reaches one worker. Another
    worker that sets aside that node's read looks the node's features up in the store."""
    world.current_node()  # node-a's heartbeat went to this worker, which recorded it
    second = World.__new__(World)
    second.__dict__.update(world.__dict__)
    second.ingest = ingest_mod.Ingest(world.ingest.link.settings, store_path=world.tmp / "hq.db",
                                      registry_path=world.tmp / "registry.db",
                                      decryption_keys=world.ingest.decryption_keys, sign_key=world.ingest.sign_key)
    second.client = type(world.client)()
    try:
        second.deliver(world.message(2, time.time_ns() + 2 * DAY))
        assert second.client.later_seqs() == [2]
    finally:
        if second.ingest._store is not None:
            second.ingest._store.close()


@pytest.mark.parametrize("url, bounded", [
    ("postgresql://alpr:no_connect_timeout_here@db.example/alpr", True),  # the word in a password
    ("postgresql://alpr@db.example/connect_timeout_db", True),
    ("postgresql://alpr@db.example/alpr?application_name=connect_timeout", True),
    ("postgresql://alpr@db.example/alpr?connect_timeout=3", False),        # the URL's own wins
])
def test_the_postgresql_connect_is_bounded_unless_the_url_sets_a_bound(url, bounded, monkeypatch) -> None:
    import psycopg

    from hq import db

    seen: dict = {}

    def refuse(conninfo: str, **kwargs) -> None:
        seen.update(kwargs)
        raise psycopg.OperationalError("not connecting in a unit test")
    monkeypatch.setattr(psycopg, "connect", refuse)
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    with pytest.raises(db.StoreError):
        db.open_postgres(url)
    assert (seen.get("connect_timeout") == db.CONNECT_TIMEOUT_S) is bounded
    seen.clear()
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "5")  # libpq's own setting wins too
    with pytest.raises(db.StoreError):
        db.open_postgres(url)
    assert "connect_timeout" not in seen
