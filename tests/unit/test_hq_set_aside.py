"""Messages ingest set aside in DATA_DIR/rejected/ do not outlive the reads they hold: a copy
goes once the store has committed the message (a later resend of the same bytes), and the
retention job removes what is older than the retention period, logging what it removed."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sqlite3
import time
from pathlib import Path

import pytest

import hq.ingest as ingest_mod
from hq import retention
from hq.access import SYSTEM, Access
from hq.store import ReadStore
from hq.synthetic import FakeClock, SyntheticNode
from tests.support.hq_site import hq_site
from tests.unit.test_hq_ingest_hardening import FakeLink, World

pytestmark = pytest.mark.unit

DAY = 86400 * 10**9
HOUR = 3600 * 10**9


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ingest_mod, "MqttLink", FakeLink)
    w = World(tmp_path)
    yield w
    if w.ingest._store is not None:
        w.ingest._store.close()


def _set_aside_files(w: World) -> list[str]:
    folder = w.tmp / "rejected"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _clock_caught_up(w: World) -> None:
    """As if HQ's clock had caught up with the node's and the hour ingest remembers a refusal
    for had passed: the next resend of the same bytes is checked, and stored, again."""
    w.ingest.max_future_skew_ns = 3 * 24 * HOUR
    for digest, (_, reason) in list(w.ingest._store_rejected.items()):
        w.ingest._store_rejected[digest] = (time.monotonic() - ingest_mod.STORE_REJECT_MEMORY_S - 1, reason)


# -- ingest: a stored message's set-aside copy goes, after the store committed it -------------------------
def test_a_read_set_aside_for_time_loses_its_copy_once_a_resend_is_stored(world, caplog):
    ahead = world.message(2, time.time_ns() + 2 * DAY)  # the node's clock ahead of HQ's
    world.deliver(ahead)
    assert world.ingest.stats.rejected["time"] == 1
    assert [n.split(".", 1)[1] for n in _set_aside_files(world)] == ["json", "msg", "signed"]
    _clock_caught_up(world)
    with caplog.at_level(logging.INFO, logger="hq.ingest"):
        world.deliver(ahead)
    assert (world.ingest.stats.stored, world.client.acked_seqs()) == (1, [2])
    # The decrypted copy (.signed: plate, crop) does not outlive the message's arrival in the store.
    assert _set_aside_files(world) == []
    assert "node node-a seq 2 set aside before, now stored: removed" in caplog.text
    store = world.store()
    assert store.seqs("node-a") == [2]
    store.close()


def test_the_copy_goes_when_another_worker_stores_it_or_it_arrives_as_a_duplicate(world, tmp_path, monkeypatch):
    ahead = world.message(2, time.time_ns() + 2 * DAY)
    world.deliver(ahead)
    kept = _set_aside_files(world)
    assert len(kept) == 3
    # A second worker (no memory of the refusal; its clock in range) stores the same bytes.
    other = World.__new__(World)
    other.__dict__.update(world.__dict__)
    other.ingest = ingest_mod.Ingest(world.ingest.link.settings, store_path=tmp_path / "hq.db",
                                     registry_path=tmp_path / "registry.db",
                                     decryption_keys=world.ingest.decryption_keys, sign_key=world.ingest.sign_key,
                                     max_future_skew_s=3 * 86400.0)
    other.deliver(ahead)
    assert other.ingest.stats.stored == 1 and _set_aside_files(world) == []
    # Copies left by a crash between the commit and the removal go with the next resend (a duplicate).
    for name in kept:
        (tmp_path / "rejected" / name).write_bytes(b"left by a crash")
    other.deliver(ahead)
    assert other.ingest.stats.duplicates == 1 and _set_aside_files(world) == []
    other.ingest._store.close()


def test_the_copy_is_removed_only_after_the_store_committed(world, monkeypatch):
    ahead = world.message(2, time.time_ns() + 2 * DAY)
    world.deliver(ahead)
    kept = _set_aside_files(world)
    _clock_caught_up(world)
    # The store is down: nothing is stored, so the copy stays (it may be the only one).
    original = ReadStore.store

    def down(self: ReadStore, batch: object) -> list:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(ReadStore, "store", down)
    world.deliver(ahead)
    assert world.ingest.stats.stored == 0 and _set_aside_files(world) == kept
    # Back up: the copy is still there while the store runs, and gone once it has committed.
    seen: list[list[str]] = []

    def watched(self: ReadStore, batch: object) -> list:
        seen.append(_set_aside_files(world))
        return original(self, batch)

    monkeypatch.setattr(ReadStore, "store", watched)
    world.ingest._retry_at = 0.0
    world.ingest._tick(world.client)
    assert seen == [kept] and world.ingest.stats.stored == 1 and _set_aside_files(world) == []


def test_a_conflict_keeps_its_copy_and_other_files_are_not_touched(world):
    ahead = world.message(2, time.time_ns() + 2 * DAY)
    world.deliver(ahead)
    (world.tmp / "rejected" / "notes.txt").write_text("operator's notes")
    world.deliver(world.message(2, time.time_ns() - DAY, plate="OTHER12"))  # seq 2 stored with other content
    _clock_caught_up(world)
    world.deliver(ahead)
    assert (world.ingest.stats.stored, world.ingest.stats.conflicts) == (1, 1)
    # The store keeps the other content for seq 2: this message's only plaintext copy stays.
    assert len(_set_aside_files(world)) == 4 and "notes.txt" in _set_aside_files(world)


# -- retention: rejected/ is purged by the same cutoff as the reads ------------------------------------------
NOW = int(dt.datetime(2026, 9, 15, 12, tzinfo=dt.UTC).timestamp()) * 10**9
OLD = NOW - 500 * DAY  # past retention (365 days: reads captured before 2025-09 go)
RECENT = NOW - 100 * DAY


def _put(folder: Path, stem: str, *, recorded_ns: int | None, mtime_ns: int,
         suffixes: tuple[str, ...] = (".msg", ".signed", ".json")) -> None:
    folder.mkdir(mode=0o700, exist_ok=True)
    for suffix in suffixes:
        path = folder / f"{stem}{suffix}"
        if suffix == ".json" and recorded_ns is not None:
            path.write_text(json.dumps({"reason": "time", "node": "node-a", "seq": 7, "rejected_ns": recorded_ns}))
        else:
            path.write_bytes(b"plate and crop")
        os.utime(path, ns=(mtime_ns, mtime_ns))


def test_retention_removes_set_aside_messages_older_than_the_period(tmp_path, caplog):
    rejected = tmp_path / "rejected"
    old_rec, new_rec = "node-a-7-00000000000000aa", "node-a-8-00000000000000bb"
    orphan_old, orphan_new = "node-a-9-00000000000000cc", "node-b-1-00000000000000dd"
    crash_tmp = "node-a-10-00000000000000ee"
    _put(rejected, old_rec, recorded_ns=OLD, mtime_ns=RECENT)        # its record says when: old
    _put(rejected, new_rec, recorded_ns=RECENT, mtime_ns=OLD)        # its record says when: recent
    _put(rejected, orphan_old, recorded_ns=None, mtime_ns=OLD, suffixes=(".signed", ".msg"))  # no record: mtime
    _put(rejected, orphan_new, recorded_ns=None, mtime_ns=RECENT, suffixes=(".signed",))
    _put(rejected, crash_tmp, recorded_ns=None, mtime_ns=OLD, suffixes=(".signed.tmp",))  # a write cut short
    (rejected / "notes.txt").write_text("operator's notes")
    os.utime(rejected / "notes.txt", ns=(OLD, OLD))
    store = ReadStore(tmp_path / "hq.db")
    node = SyntheticNode.create("node-a")
    store.store([node.read(1, "OLD0001", OLD), node.read(2, "NEW0002", RECENT)])
    access = Access(store.db, clock=FakeClock(NOW))
    with caplog.at_level(logging.INFO, logger="hq.retention"):
        result = retention.purge(store, access, SYSTEM, min_days=365, rejects_dir=rejected)
    assert (result.reads_deleted, result.set_aside_removed) == (1, 3)
    assert sorted(p.name for p in rejected.iterdir()) == sorted(
        [f"{new_rec}.msg", f"{new_rec}.signed", f"{new_rec}.json", f"{orphan_new}.signed", "notes.txt"])
    # Each removal is logged by name (node, seq, digest prefix: no plate), and the count goes
    # into the purge's access-log entry.
    for stem in (old_rec, orphan_old, crash_tmp):
        assert f"removed set-aside message {stem}" in caplog.text
    assert "node node-a seq 7" in caplog.text
    assert "1 entries not named as ingest names" in caplog.text
    assert access.log.entries()[-1].detail.endswith("removed 3 set-aside messages")
    assert access.log.verify().ok
    # Without a folder there is nothing to do.
    assert retention.purge(store, access, SYSTEM, min_days=365, rejects_dir=tmp_path / "none").set_aside_removed == 0
    store.close()


def test_alpr_hq_retention_run_purges_data_dir_rejected(tmp_path, monkeypatch, capsys):
    run, data, _ = hq_site(tmp_path, monkeypatch, lambda node, now: [node.read(1, "7ABC123", now - DAY)])
    now = time.time_ns()
    _put(data / "rejected", "node-a-5-00000000000000aa", recorded_ns=now - 800 * DAY, mtime_ns=now - 800 * DAY)
    _put(data / "rejected", "node-a-6-00000000000000bb", recorded_ns=now - HOUR, mtime_ns=now - HOUR)
    assert run("retention", "run", "--system") == 0
    assert "removed 1 set-aside message(s)" in capsys.readouterr().out
    assert sorted(p.name.split(".")[0] for p in (data / "rejected").iterdir()) == ["node-a-6-00000000000000bb"] * 3
