"""The outbox: durable order, acks, resends, quota policy, corruption, sequence safety."""
import os
import sqlite3
from pathlib import Path

import pytest

from transport import outbox as outbox_mod
from transport.errors import OutboxError
from transport.outbox import Outbox

pytestmark = pytest.mark.unit


def msg(size=100):
    return lambda seq: seq.to_bytes(8, "big") + b"x" * (size - 8)


def test_commit_assigns_increasing_seqs_and_survives_reopen(tmp_path):
    box = Outbox(tmp_path / "o.db")
    assert [box.commit("read", msg()) for _ in range(3)] == [1, 2, 3]
    box.close()
    box = Outbox(tmp_path / "o.db")
    assert box.commit("read", msg()) == 4
    assert [p.seq for p in box.due(10, 0)] == [1, 2, 3, 4]
    box.close()


def test_ack_deletes_only_acked_and_counts(tmp_path):
    box = Outbox(tmp_path / "o.db")
    for _ in range(5):
        box.commit("read", msg())
    assert box.ack([2, 4, 99]) == 2
    assert [p.seq for p in box.due(10, 0)] == [1, 3, 5]
    stats = box.stats()
    assert (stats.depth, stats.committed, stats.acked) == (3, 5, 2)


def test_sent_messages_wait_for_the_resend_timeout_and_reset_on_reconnect(tmp_path):
    box = Outbox(tmp_path / "o.db")
    for _ in range(3):
        box.commit("read", msg())
    box.mark_sent([1, 2], now_ns=1_000)
    assert [p.seq for p in box.due(10, resend_after_ns=500, now_ns=1_200)] == [3]
    assert [p.seq for p in box.due(10, resend_after_ns=500, now_ns=1_600)] == [1, 2, 3]
    box.reset_sent()
    assert box.in_flight() == 0


def test_alerts_go_first(tmp_path):
    box = Outbox(tmp_path / "o.db")
    box.commit("read", msg())
    box.commit("overview", msg())
    box.commit("alert", msg())
    assert [p.kind for p in box.due(10, 0)] == ["alert", "read", "overview"]


def test_quota_drops_overviews_first_then_oldest_reads_and_counts_every_loss(tmp_path):
    box = Outbox(tmp_path / "o.db", quota_bytes=1000)
    box.commit("read", msg(300))      # 1
    box.commit("overview", msg(300))  # 2
    box.commit("alert", msg(300))     # 3
    box.commit("read", msg(300))      # 4: overview 2 goes
    assert [p.seq for p in box.due(10, 0)] == [3, 1, 4]
    box.commit("read", msg(300))      # 5: oldest read 1 goes, the alert stays
    assert sorted(p.seq for p in box.due(10, 0)) == [3, 4, 5]
    stats = box.stats()
    assert stats.dropped == {"overview": 1, "read": 1}
    assert sorted(box.losses()) == [(1, "read"), (2, "overview")]
    assert stats.bytes <= 1000


def test_entry_quota(tmp_path):
    box = Outbox(tmp_path / "o.db", max_entries=2)
    for _ in range(4):
        box.commit("read", msg())
    assert [p.seq for p in box.due(10, 0)] == [3, 4]
    assert box.stats().dropped == {"read": 2}


def test_failed_build_commits_nothing_and_reuses_no_seq(tmp_path):
    box = Outbox(tmp_path / "o.db")

    def boom(seq):
        raise RuntimeError("sealing failed")
    with pytest.raises(RuntimeError):
        box.commit("read", boom)
    assert box.commit("read", msg()) in (1, 2)
    assert box.stats().depth == 1


def test_corrupt_database_is_refused_with_recovery_hint_and_salvaged(tmp_path):
    path = tmp_path / "outbox.db"
    box = Outbox(path)
    for _ in range(50):
        box.commit("read", msg(2000))
    box.close()
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 4096] = b"\xde\xad" * 2048  # smash a page in the middle
    path.write_bytes(bytes(data))
    with pytest.raises(OutboxError) as info:
        Outbox(path)
    assert str(path) in str(info.value) and "salvage" in str(info.value)
    # the steps in order, and where the docs explain them (a section that exists)
    assert "Stop the service" in str(info.value) and "'Recovery'" in str(info.value)
    ops = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    assert "### Recovery" in ops and "**Corrupt or truncated outbox**" in ops
    assert path.exists()  # nothing deleted
    aside, recovered = outbox_mod.salvage(path)
    assert aside.exists() and 0 < recovered < 50
    box = Outbox(path)
    assert box.commit("read", msg()) > 50  # sequence numbers never reused
    box.close()


def test_garbage_file_and_truncated_file(tmp_path):
    path = tmp_path / "outbox.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError, match="corrupt"):
        Outbox(path)
    aside, recovered = outbox_mod.salvage(path)
    assert recovered == 0
    Outbox(path).close()


def test_lost_database_does_not_reuse_sequence_numbers(tmp_path):
    path = tmp_path / "outbox.db"
    box = Outbox(path)
    last = [box.commit("read", msg()) for _ in range(5)][-1]
    box.close()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(str(path) + suffix):
            os.remove(str(path) + suffix)
    box = Outbox(path)
    assert box.commit("read", msg()) > last


def test_database_holds_ciphertext_only(tmp_path):
    """The outbox stores only what `build` returns (sealed envelopes): no plaintext columns."""
    box = Outbox(tmp_path / "o.db")
    box.commit("read", lambda seq: b"SEALED")
    box.close()
    db = sqlite3.connect(tmp_path / "o.db")
    columns = [r[1] for r in db.execute("PRAGMA table_info(outbox)")]
    assert columns == ["seq", "kind", "priority", "created_ns", "size", "message"]


def test_a_failed_commit_under_quota_pressure_leaves_counters_true(tmp_path):
    box = Outbox(tmp_path / "o.db", quota_bytes=300)
    for _ in range(3):
        box.commit("read", msg(100))
    with pytest.raises(sqlite3.Error):
        box.commit("read", lambda seq: [0] * 100)  # fails at INSERT, after room was made
    db = sqlite3.connect(tmp_path / "o.db")
    on_disk = db.execute("SELECT COUNT(*), SUM(size) FROM outbox").fetchone()
    assert (box.stats().depth, box.stats().bytes) == on_disk == (3, 300)
    assert box.stats().dropped == {}  # the drop was rolled back with the rest


def test_a_message_larger_than_the_quota_is_refused_and_evicts_nothing(tmp_path):
    box = Outbox(tmp_path / "o.db", quota_bytes=1000)
    box.commit("alert", msg(500))
    with pytest.raises(OutboxError, match="larger than the whole outbox quota"):
        box.commit("read", msg(2000))
    assert [p.kind for p in box.due(10, 0)] == ["alert"]


def test_an_event_too_large_for_the_quota_is_kept_without_its_image(tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

    from node.identity import Identity
    from node.sink import ReadSink

    hq = x25519.X25519PrivateKey.generate()
    box = Outbox(tmp_path / "o.db", quota_bytes=2000)
    sink = ReadSink(Identity("n1", ed25519.Ed25519PrivateKey.generate(), hq.public_key(), ()), box)
    sink.submit_event("no_read", 1, {"frame": b"\xff" * 5000, "lane": "1"})
    assert box.stats().depth == 1 and sink.images_dropped == 1
    assert len(box.due(1, 0)[0].message) < 2000


def test_a_full_outbox_never_drops_a_more_valuable_message_for_a_less_valuable_one(tmp_path):
    """Overviews go first and alerts last: a new overview image must not push out reads, nor a
    read an alert. It used to: one 900 kB overview dropped 50 reads and 40 alerts."""
    from transport.errors import OutboxFull

    box = Outbox(tmp_path / "outbox.db", quota_bytes=1_000_000)
    alerts = [box.commit("alert", msg(10_000)) for _ in range(50)]
    reads = [box.commit("read", msg(10_000)) for _ in range(49)]
    with pytest.raises(OutboxFull, match="more valuable messages only"):
        box.commit("overview", msg(200_000))
    # refused, not dropped: it took no seq (no gap at HQ), and committed = acked + dropped + depth
    assert box.stats().depth == 99 and box.stats().dropped == {} and box.stats().refused == {"overview": 1}
    assert box.stats().committed == 99
    box.commit("read", msg(30_000))  # a read pushes out the oldest reads, never an alert
    kept = [row[0] for row in box._db.execute("SELECT seq FROM outbox WHERE kind = 'alert'")]
    assert kept == alerts
    assert box.stats().dropped["read"] >= 2 and [seq for seq, kind in box.losses()] == sorted(
        [s for s in reads if s not in {r[0] for r in box._db.execute("SELECT seq FROM outbox")}], reverse=True)
    box.close()
    full = Outbox(tmp_path / "alerts.db", quota_bytes=100_000)
    for _ in range(10):
        full.commit("alert", msg(10_000))
    with pytest.raises(OutboxFull):
        full.commit("read", msg(10_000))  # nothing less valuable to drop: the read is the one refused
    full.commit("alert", msg(10_000))  # an alert replaces the oldest alert
    assert full.stats().depth == 10
    full.close()
