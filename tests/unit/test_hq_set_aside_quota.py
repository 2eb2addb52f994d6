"""DATA_DIR/rejected/ is bounded: once it holds `[ingest] max_set_aside_mb`, a message that
would be set aside is settled with the broker but neither kept nor acknowledged to its node,
which keeps its copy and sends it again; the folder's size is measured by listing it, so files
already there count, and room made by retention (another process) is seen again."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

import hq.ingest as ingest_mod
from hq import config as hq_config
from hq.errors import BadConfig
from tests.unit.test_hq_ingest_hardening import FakeLink, World

pytestmark = pytest.mark.unit

DAY = 86400 * 10**9


def _folder(w: World) -> Path:
    return w.tmp / "rejected"


def _held(w: World) -> int:
    folder = _folder(w)
    return sum(p.stat().st_size for p in folder.iterdir()) if folder.exists() else 0


@pytest.fixture
def make_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ingest_mod, "MqttLink", FakeLink)
    made: list[World] = []

    def make(folder: Path | None = None, **options: Any) -> World:
        w = World(folder or tmp_path, **options)
        made.append(w)
        return w

    yield make
    for w in made:
        if w.ingest._store is not None:
            w.ingest._store.close()


def _one_set_aside_size(tmp_path: Path, make_world) -> int:
    """Bytes one far-future read takes in rejected/ (measured by a world of its own)."""
    folder = tmp_path / "probe"
    folder.mkdir()
    probe = make_world(folder)
    probe.deliver(probe.message(1, time.time_ns() + 2 * DAY))
    return _held(probe)


def test_a_full_folder_keeps_nothing_more_and_the_node_keeps_its_copy(tmp_path, make_world, caplog):
    one = _one_set_aside_size(tmp_path, make_world)
    w = make_world(max_set_aside_bytes=one + one // 2)  # room for one message, not two
    w.current_node()
    (first,) = w.deliver(w.message(2, time.time_ns() + 2 * DAY))
    kept = sorted(p.name for p in _folder(w).iterdir())
    assert len(kept) == 3 and w.ingest.stats.rejected["time"] == 1
    with caplog.at_level(logging.ERROR, logger="hq.ingest"):
        second, third = w.deliver(w.message(3, time.time_ns() + 2 * DAY), w.message(4, time.time_ns() + 2 * DAY))
    # Settled with the broker (it would otherwise hold them in flight for ever) ...
    assert {first, second, third} <= set(w.client.pubacks)
    # ... but nothing written and nothing acknowledged to the node: it keeps them, answered
    # "later" (it backs off and sends them again).
    assert sorted(p.name for p in _folder(w).iterdir()) == kept
    assert w.client.acked_seqs() == [] and w.ingest.stats.stored == 0
    assert w.client.later_seqs() == [2, 3, 4]
    assert dict(w.ingest.stats.rejected) == {"time": 1, "set_aside_full": 2}
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # once a minute, not once a message
    assert "is full" in errors[0].getMessage() and "max_set_aside_mb" in errors[0].getMessage()
    assert "node node-a seq 3" in errors[0].getMessage()
    # Not remembered as refused: a resend is judged again (kept if there is room by then).
    assert w.ingest.stats.rejected["time"] == 1
    assert _held(w) <= w.ingest.max_set_aside_bytes


def test_files_already_in_the_folder_count(tmp_path, make_world):
    folder = tmp_path / "rejected"
    folder.mkdir(mode=0o700)
    (folder / "left-from-last-year.msg").write_bytes(b"\0" * 10_000)
    w = make_world(max_set_aside_bytes=10_500)
    w.current_node()
    (mid,) = w.deliver(w.message(2, time.time_ns() + 2 * DAY))
    assert mid in w.client.pubacks and w.client.acked_seqs() == [] and w.client.later_seqs() == [2]
    assert sorted(p.name for p in folder.iterdir()) == ["left-from-last-year.msg"]
    assert dict(w.ingest.stats.rejected) == {"set_aside_full": 1}


def test_room_made_by_retention_is_seen_again(tmp_path, make_world, monkeypatch):
    one = _one_set_aside_size(tmp_path, make_world)
    folder = tmp_path / "rejected"
    folder.mkdir(mode=0o700)
    old = folder / "old-1-0123456789abcdef.msg"
    old.write_bytes(b"\0" * (one // 2))
    w = make_world(max_set_aside_bytes=one + one // 4)  # one fits only once the old file is gone
    w.deliver(w.message(2, time.time_ns() + 2 * DAY))
    assert w.ingest.stats.rejected["set_aside_full"] == 1
    old.unlink()  # the retention job (another process) removed it
    # Measured again only once a while has passed since the last time.
    w.deliver(w.message(3, time.time_ns() + 2 * DAY))
    assert w.ingest.stats.rejected["set_aside_full"] == 2 and not any(folder.iterdir())
    monkeypatch.setattr(ingest_mod, "SET_ASIDE_RESCAN_S", 0.0)
    w.deliver(w.message(4, time.time_ns() + 2 * DAY))
    assert w.ingest.stats.rejected["time"] == 1 and len(list(folder.iterdir())) == 3


def test_a_store_refusal_respects_the_quota_too(tmp_path, make_world, monkeypatch):
    w = make_world(max_set_aside_bytes=100)  # too small for any message
    original = ingest_mod.ReadStore.store

    def refuses_seq_2(self, batch):  # the store cannot hold that one message; the others store
        batch = list(batch)
        if any(o.header.seq == 2 for o in batch):
            raise ValueError("value too long for the column")
        return original(self, batch)

    monkeypatch.setattr(ingest_mod.ReadStore, "store", refuses_seq_2)
    refused, stored = w.deliver(w.message(2, time.time_ns()), w.message(3, time.time_ns()))
    assert w.ingest.stats.stored == 1 and w.client.acked_seqs() == [3]
    assert refused in w.client.pubacks  # the node keeps it: it was not acknowledged to it
    assert w.ingest.stats.rejected["set_aside_full"] == 1 and not (tmp_path / "rejected").exists()


def test_ingest_refuses_a_quota_that_is_not_positive(tmp_path, make_world):
    with pytest.raises(ValueError, match="max_set_aside_bytes"):
        make_world(max_set_aside_bytes=0)


@pytest.mark.parametrize("value", [0, -5, 2**21])
def test_config_refuses_a_bad_quota_naming_the_key(tmp_path, value):
    path = tmp_path / "hq.toml"
    path.write_text(f"[ingest]\nmax_set_aside_mb = {value}\n")
    with pytest.raises(BadConfig, match="ingest.max_set_aside_mb"):
        hq_config.load(path)


def test_the_quota_defaults_to_a_gibibyte(tmp_path):
    """`alpr-hq ingest` passes it in bytes (test_hq_ingest_hardening checks a configured one)."""
    path = tmp_path / "hq.toml"
    path.write_text("[ingest]\n")
    assert hq_config.load(path).ingest.max_set_aside_mb * 1024 * 1024 == ingest_mod.DEFAULT_SET_ASIDE_MAX_BYTES
