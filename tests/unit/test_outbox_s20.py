"""Outbox crash safety (review s20): a failed ack keeps its publish records, a damaged or stale
sequence reservation never stops the node nor reuses a seq, salvage survives a kill and a rerun,
a full card still takes alerts and acks, and due() does not walk the published backlog."""
from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from transport import outbox as outbox_mod
from transport.errors import OutboxError, OutboxFull
from transport.outbox import SEQ_BLOCK, Outbox, reservation_path, salvage

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def msg(size: int = 100):
    return lambda seq: seq.to_bytes(8, "big") + b"x" * (size - 8)


def run_py(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (so that it can really be killed) from the repo root."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 12 MB filesystem (tmpfs) that fills up: needs root; unmounted afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a real full filesystem needs root (tmpfs mount)")
    mnt = tmp_path / "card"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt)], capture_output=True, check=False).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the filesystem of `folder` with a file until ENOSPC (then give `leave` bytes back)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    try:
        while True:
            os.write(fd, b"\0" * 512)
    except OSError:
        pass
    if leave:
        os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
    os.close(fd)
    return filler


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 4096] = b"\xde\xad" * 2048  # smash a page in the middle
    path.write_bytes(bytes(data))


# -- A: a failed ack ----------------------------------------------------------------------
def test_an_ack_that_fails_on_a_full_card_keeps_the_messages_publish_records(small_fs: Path) -> None:
    box = Outbox(small_fs / "outbox.db", reserve_bytes=0)  # no reserve: the ack's COMMIT really fails
    for _ in range(20):
        box.commit("read", msg(20_000))
    sent = [p.seq for p in box.due(100, 30 * 10**9, now_ns=1_000)]
    box.mark_sent(sent, now_ns=1_000)
    fill(small_fs)
    with pytest.raises(sqlite3.Error):
        box.ack(sent)
    assert box.in_flight() == 20
    assert box.due(100, 30 * 10**9, now_ns=1_001) == [], "a failed ack made its messages look never sent"
    (small_fs / "filler").unlink()
    assert box.ack(sent) == 20 and box.stats().depth == 0
    box.close()


# -- B: a damaged reservation -------------------------------------------------------------
def test_a_bad_byte_in_the_reservation_is_set_aside_and_rewritten_from_the_database(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(path)
    for _ in range(5):
        box.commit("read", msg())
    box.close()
    seq_file = reservation_path(path)
    seq_file.write_bytes(b"1\x8000\n")
    with caplog.at_level(logging.ERROR, logger="transport.outbox"):
        box = Outbox(path)
    assert str(seq_file) in caplog.text and "unreadable" in caplog.text
    kept = list(tmp_path.glob("sequence.reserved.unreadable-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == b"1\x8000\n"
    assert int(seq_file.read_text()) == 6 + SEQ_BLOCK
    assert box.commit("read", msg()) == 6
    box.close()
    seq_file.write_bytes(b"\xff")  # again, the same second: its own name, the first one kept
    Outbox(path).close()
    assert len(list(tmp_path.glob("sequence.reserved.unreadable-*"))) == 2


def test_salvage_works_over_a_bad_reservation_when_the_database_knows_next_seq(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(path)
    for _ in range(5):
        box.commit("read", msg())
    box.close()
    reservation_path(path).write_bytes(b"1\x8000\n")
    _, recovered = salvage(path)
    assert recovered == 5
    box = Outbox(path)
    assert box.stats().depth == 5 and box.commit("read", msg()) == 6
    box.close()


def test_a_bad_reservation_and_no_next_seq_is_refused_with_instructions(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(path)
    box.commit("read", msg())
    box.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    seq_file = reservation_path(path)
    seq_file.write_bytes(b"1\x8000\n")
    with pytest.raises(OutboxError) as info:
        Outbox(path)
    assert str(seq_file) in str(info.value) and "alpr-hq nodes --gaps" in str(info.value)
    assert seq_file.read_bytes() == b"1\x8000\n", "nothing changed"


# -- C: a database that comes back older ---------------------------------------------------
def test_a_database_rolled_back_past_a_reservation_reuses_no_seq_and_records_the_skip(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_mod, "SEQ_BLOCK", 10)  # blocks of 10, here and in the child below
    path = tmp_path / "outbox.db"
    box = Outbox(path)
    for _ in range(20):
        box.commit("read", msg())
    box.close()  # clean: checkpointed, reservation lowered to 21
    assert int(reservation_path(path).read_text()) == 21
    res = run_py(f"""
        import os, signal
        import transport.outbox
        from transport.outbox import Outbox
        transport.outbox.SEQ_BLOCK = 10
        b = Outbox({str(path)!r})
        print([b.commit('read', lambda s: b'b' * 100) for _ in range(20)][-1], flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert res.returncode == -signal.SIGKILL and res.stdout.strip() == "40", res.stderr
    ceiling = int(reservation_path(path).read_text())
    assert ceiling == 41  # written at 21 (31) and at 31 (41)
    Path(str(path) + "-wal").write_bytes(b"")  # the WAL lost: the database says next_seq 21 again, below 41 - 10
    box = Outbox(path)
    assert box.stats().depth == 20
    assert box.commit("read", msg()) == ceiling > 40
    assert box.skipped_ranges() == [(21, ceiling - 1)] and box.stats().skipped == ceiling - 21
    box.close()
    box = Outbox(path)  # a clean close in between: nothing more skipped
    assert box.commit("read", msg()) == ceiling + 1 and box.stats().skipped == ceiling - 21
    box.close()


def test_an_ordinary_kill_skips_nothing(tmp_path: Path) -> None:
    """A power cut or a kill leaves the fsync'd database right: HQ must see no gap for it."""
    path = tmp_path / "outbox.db"
    for round_ in range(3):
        res = run_py(f"""
            import os, signal
            from transport.outbox import Outbox
            b = Outbox({str(path)!r})
            print([b.commit('read', lambda s: b'b' * 100) for _ in range(7)][-1], flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """)
        assert res.returncode == -signal.SIGKILL and res.stdout.strip() == str(7 * (round_ + 1)), res.stderr
    box = Outbox(path)
    assert box.commit("read", msg()) == 22 and box.stats().skipped == 0 and box.skipped_ranges() == []
    box.close()


def test_a_second_opener_beside_the_owner_skips_nothing_and_leaves_the_reservation(tmp_path: Path) -> None:
    # `alpr-node outbox status` beside the running node: it must not judge the live database older
    path = tmp_path / "outbox.db"
    owner = Outbox(path)
    owner.commit("read", msg())
    reserved = reservation_path(path).read_text()
    status = Outbox(path)
    assert status.stats().skipped == 0
    status.close()
    assert reservation_path(path).read_text() == reserved
    assert owner.commit("read", msg()) == 2
    owner.close()


# -- D: salvage, killed and run again -------------------------------------------------------
def corrupt_outbox(data: Path, count: int = 50) -> Path:
    path = data / "outbox.db"
    box = Outbox(path)
    for _ in range(count):
        box.commit("read", msg(2000))
    box.close()
    corrupt(path)
    return path


@pytest.mark.parametrize("kill_at", ["os.link", "os.replace"])
def test_a_salvage_killed_midway_loses_nothing_and_a_rerun_recovers_everything(tmp_path: Path, kill_at: str) -> None:
    reference = corrupt_outbox(tmp_path / "ref")
    _, expected = salvage(reference)
    assert 0 < expected < 50
    path = corrupt_outbox(tmp_path / "data")
    res = run_py(f"""
        import os, signal
        from pathlib import Path
        from transport import outbox
        def power_cut(*a, **k):
            os.kill(os.getpid(), signal.SIGKILL)
        outbox.{kill_at} = power_cut
        outbox.salvage(Path({str(path)!r}))
    """)
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert path.exists(), "an outbox.db is always there"
    _, recovered = salvage(path)
    assert recovered == expected
    assert not list(path.parent.glob("outbox.db.salvage-*")), "the interrupted run's temp file is cleaned up"
    box = Outbox(path)
    assert box.stats().depth == expected and box.commit("read", msg()) > 50
    box.close()


def test_two_salvages_in_one_second_keep_the_original_corrupt_file(tmp_path: Path) -> None:
    path = corrupt_outbox(tmp_path)
    original = path.read_bytes()
    aside1, n1 = salvage(path)
    aside2, n2 = salvage(path)
    assert aside1 != aside2 and aside1.read_bytes() == original
    assert n1 == n2 > 0


def test_a_rerun_reads_an_earlier_aside_the_outbox_does_not_record_and_names_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = corrupt_outbox(tmp_path)
    # as an older salvage left it: moved aside, then killed before a new outbox held its messages
    stray = path.with_name("outbox.db.corrupt-20200101T000000")
    os.replace(path, stray)
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    Outbox(path).close()  # the node started on an empty outbox meanwhile
    with caplog.at_level(logging.WARNING, logger="transport.outbox"):
        _, recovered = salvage(path)
    assert recovered > 0 and stray.name in caplog.text
    with caplog.at_level(logging.WARNING, logger="transport.outbox"):
        caplog.clear()
        salvage(path)  # recorded as copied now: not read (nor resent) again
    assert "also reading" not in caplog.text


# -- E: a full card ------------------------------------------------------------------------
def test_on_a_card_smaller_than_the_quota_overviews_give_way_to_alerts_and_reads(small_fs: Path) -> None:
    box = Outbox(small_fs / "outbox.db", reserve_bytes=1024 * 1024)  # the default 512 MB quota
    for _ in range(400):  # 24 MB of overview images on a 12 MB card
        box.commit("overview", lambda s: os.urandom(60_000))
    assert box.stats().dropped.get("overview", 0) > 0
    assert box.commit("alert", msg(2000)) and box.commit("read", msg(2000))
    assert (small_fs / "outbox.db.reserve").stat().st_blocks * 512 >= 1024 * 1024
    box.close()


def test_a_disk_full_commit_drops_by_priority_retries_and_the_reserve_comes_back(small_fs: Path) -> None:
    box = Outbox(small_fs / "outbox.db", reserve_bytes=1024 * 1024)
    for _ in range(20):
        box.commit("overview", lambda s: os.urandom(60_000))
    filler = fill(small_fs)  # something else fills the card (within the free-space check's second)
    seq = box.commit("alert", lambda s: os.urandom(60_000))
    assert seq == 21 and box.stats().dropped["overview"] >= 1
    assert not (small_fs / "outbox.db.reserve").exists(), "given up to write the drops"
    sent = [p.seq for p in box.due(100, 0)]
    box.mark_sent(sent)
    assert box.ack(sent[:5]) == 5
    filler.unlink()
    box._next_disk_check = 0  # the next periodic check
    box.commit("read", msg())
    assert (small_fs / "outbox.db.reserve").exists(), "made again once there is room"
    box.close()


def test_an_ack_commits_on_a_full_card_with_the_reserve(small_fs: Path) -> None:
    box = Outbox(small_fs / "outbox.db", reserve_bytes=1024 * 1024)
    for _ in range(20):
        box.commit("read", msg(20_000))
    fill(small_fs)
    assert box.ack(range(1, 11)) == 10
    box.close()


def test_crossing_a_reservation_block_on_a_full_card_uses_the_reserve(small_fs: Path) -> None:
    path = small_fs / "outbox.db"
    box = Outbox(path, reserve_bytes=1024 * 1024)
    box.commit("read", msg())
    box._ceiling = box._next_seq  # the next commit must write a new ceiling
    fill(small_fs)
    assert box.commit("read", msg(10)) == 2
    assert int(reservation_path(path).read_text()) == 2 + SEQ_BLOCK
    box.close()


# -- F: due() and the published backlog ----------------------------------------------------
def make_backlog(path: Path, count: int) -> None:
    """`count` reads written straight into the file (fast: no fsync per message), then opened as usual."""
    Outbox(path).close()
    db = sqlite3.connect(path)
    db.executemany("INSERT INTO outbox VALUES (?,?,?,?,?,?)",
                   ((i, "read", 1, i, 100, b"x" * 100) for i in range(1, count + 1)))
    db.execute("INSERT OR REPLACE INTO meta VALUES ('next_seq', ?)", (count + 1,))
    db.commit()
    db.close()


def steps(box: Outbox, call) -> int:
    """SQLite VM steps (in 100s) a call takes: how many rows it reads, not how fast this machine is."""
    count = [0]

    def tick() -> int:
        count[0] += 1
        return 0
    box._db.set_progress_handler(tick, 100)
    try:
        call()
    finally:
        box._db.set_progress_handler(None, 0)
    return count[0]


def test_due_does_not_read_the_published_backlog_on_each_tick(tmp_path: Path) -> None:
    cost = {}
    for n in (2_000, 60_000):
        box = Outbox(tmp_path / f"o{n}.db")
        make_backlog(box.path, n)
        box.close()
        box = Outbox(tmp_path / f"o{n}.db")
        t = 0
        while True:  # the uplink publishing it all, HQ silent
            due = box.due(500, 10**12, now_ns=t, max_resends=250)
            if not due:
                break
            box.mark_sent([p.seq for p in due], now_ns=t)
            t += 1
        assert box.in_flight() == n
        box.commit("read", msg())
        cost[n] = steps(box, lambda box=box, t=t: box.due(500, 10**12, now_ns=t, max_resends=250))
        box.close()
    assert cost[60_000] <= cost[2_000] + 5, cost


def reference_due(box: Outbox, limit: int, resend_after_ns: int, now_ns: int, max_resends: int | None) -> list[int]:
    """The algorithm due() had before (walk limit + len(tried) rows), for comparison."""
    keys = box._db.execute("SELECT seq FROM outbox ORDER BY priority, seq LIMIT ?",
                           (limit + len(box._tried),)).fetchall()
    chosen, held_back, resends = [], [], 0
    for (seq,) in keys:
        sent = box._sent.get(seq)
        if sent is not None:
            wait = min(resend_after_ns << min(box._strikes.get(seq, 0), 30), max(outbox_mod.MAX_BACKOFF_NS,
                                                                                 resend_after_ns))
            if sent >= now_ns - wait:
                continue
        if seq in box._tried:
            if max_resends is not None and resends >= max_resends:
                held_back.append(seq)
                continue
            resends += 1
        chosen.append(seq)
        if len(chosen) >= limit:
            break
    return chosen + held_back[:limit - len(chosen)]


def test_due_chooses_what_it_chose_before(tmp_path: Path) -> None:
    rng = random.Random(20)
    box = Outbox(tmp_path / "o.db", quota_bytes=60_000, reserve_bytes=0)
    now = 0
    for _ in range(600):
        now += rng.choice([0, 1, 5, 50])
        op = rng.random()
        if op < 0.35:
            try:  # small quota: drops (and refusals) interleave with the sends
                box.commit(rng.choice(["alert", "read", "read", "event", "overview"]), msg(rng.choice([100, 3000])))
            except OutboxFull:
                pass
        elif op < 0.75:
            limit, resend = rng.randint(1, 12), rng.choice([10, 40])
            max_resends = rng.choice([None, 0, 1, 3])
            expected = reference_due(box, limit, resend, now, max_resends)
            got = [p.seq for p in box.due(limit, resend, now_ns=now, max_resends=max_resends)]
            assert got == expected, (now, limit, resend, max_resends)
            box.mark_sent([s for s in got if rng.random() < 0.8], now_ns=now)
        elif op < 0.9:
            present = [r[0] for r in box._db.execute("SELECT seq FROM outbox")]
            box.ack(rng.sample(present, min(len(present), rng.randint(0, 3))), now_ns=now)
        else:
            box.reset_sent(None if rng.random() < 0.5 else now - rng.randint(0, 60))
    box.close()


def test_salvage_refuses_while_the_node_has_the_outbox_open(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    node = Outbox(path)
    node.commit("read", msg())
    with pytest.raises(OutboxError, match="open by a running node; stop it first"):
        salvage(path)
    assert node.commit("read", msg()) == 2  # untouched: the node goes on
    node.close()
    assert salvage(path)[1] == 2  # stopped: salvage runs


# -- review of the reworked outbox (upgrades, salvage beside the node) ------------------------
def test_an_outbox_from_before_the_block_rule_skips_nothing_on_its_first_owner_open(tmp_path: Path) -> None:
    # The previous release reserved 10,000 ahead and never lowered it on a clean stop.
    path = tmp_path / "outbox.db"
    box = Outbox(path, owner=True)
    for _ in range(50):
        box.commit("read", msg())
    box.close()
    reservation_path(path).write_text("10001")  # as the previous release left it, with no mark
    box = Outbox(path, owner=True)
    assert box.commit("read", msg()) == 51 and box.stats().skipped == 0 and box.skipped_ranges() == []
    assert int(reservation_path(path).read_text()) <= 51 + SEQ_BLOCK  # the ceiling follows the rule from now on
    box.close()


def test_the_node_does_not_open_its_outbox_beside_a_salvage_or_after_one_was_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(path, owner=True)
    box.commit("read", msg())
    with pytest.raises(OutboxError, match="open by another process"):
        Outbox(path, owner=True)
    status = Outbox(path)  # `alpr-node outbox status` beside it still works
    status.close()
    box.close()
    (tmp_path / "outbox.db.salvage-4242").write_bytes(b"half a salvage")
    with pytest.raises(OutboxError, match="a salvage of this outbox was interrupted .* run `alpr-node outbox salvage"):
        Outbox(path, owner=True)


def test_a_lost_database_does_not_claim_its_numbers_were_never_used(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(path, owner=True)
    for _ in range(30):
        box.commit("read", msg())
    box.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    box = Outbox(path, owner=True)
    assert box.commit("read", msg()) == 31  # above the reservation: no number used twice
    assert box.stats().skipped == 0 and box.skipped_ranges() == []  # 1..30 were used (and are at HQ)
    box.close()


def test_salvage_records_the_jump_to_the_reservation_and_keeps_the_skipped_count(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(path, owner=True)
    for _ in range(5):
        box.commit("read", msg())
    box._lock_fd and os.close(box._lock_fd)  # as a kill leaves it: reservation 1 + SEQ_BLOCK, not lowered
    box._lock_fd = None
    box._db.close()
    _, count = salvage(path)
    box = Outbox(path, owner=True)
    assert count == 5 and box.commit("read", msg()) == 1 + SEQ_BLOCK
    assert box.skipped_ranges() == [(6, SEQ_BLOCK)] and box.stats().skipped == SEQ_BLOCK - 5
    box.close()


def test_a_reservation_written_after_a_downgrade_is_not_judged(tmp_path: Path) -> None:
    # New code, then the previous release (which reserves 10,000 ahead and writes no mark), then
    # new code again: only clean stops happened, so nothing may be skipped.
    path = tmp_path / "outbox.db"
    box = Outbox(path, owner=True)
    box.commit("read", msg())
    box.close()
    db = sqlite3.connect(path)
    for seq in range(2, 7):
        db.execute("INSERT INTO outbox (seq, kind, priority, created_ns, size, message) VALUES (?,?,?,?,?,?)",
                   (seq, "read", 1, 0, 1, b"x"))
    db.execute("INSERT OR REPLACE INTO meta VALUES ('next_seq', 7)")
    db.commit()
    db.close()
    reservation_path(path).write_text(str(6 + 10_000))
    box = Outbox(path, owner=True)
    assert box.commit("read", msg()) == 7 and box.stats().skipped == 0
    box.close()


def test_outbox_status_beside_the_node_leaves_a_bad_reservation_to_the_node(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    node = Outbox(path, owner=True)
    node.commit("read", msg())
    reservation_path(path).write_bytes(b"\xff\xfe")
    status = Outbox(path)
    status.close()
    assert reservation_path(path).read_bytes() == b"\xff\xfe"  # a second opener changes nothing on disk
    assert not list(tmp_path.glob("sequence.reserved.unreadable-*"))
    node.close()


def test_a_later_salvage_does_not_bring_back_what_an_earlier_one_copied(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(path, owner=True)
    pending = [box.commit("read", msg()) for _ in range(3)]
    box.close()
    salvage(path)  # first aside holds 1..3
    box = Outbox(path, owner=True)
    box.ack(pending)  # HQ stored them
    box.commit("read", msg())
    box.close()
    salvage(path)  # second aside; the first was copied before
    box = Outbox(path, owner=True)
    box.ack([4])
    box.close()
    salvage(path)  # third: neither earlier aside may be read again
    box = Outbox(path, owner=True)
    assert box.stats().depth == 0 and box.due(10, 10**9) == []
    box.close()
