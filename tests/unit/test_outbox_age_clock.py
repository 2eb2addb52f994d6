"""The heartbeat's ages follow the monotonic clock: NTP stepping a Pi's wall clock (it boots without
a real-time clock) made `outbox.oldest_age_s` -107,974 s in a review."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from transport import outbox as outbox_mod
from transport.outbox import Outbox

pytestmark = pytest.mark.unit
S = 10**9


@pytest.fixture
def clocks(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[int]]:
    wall, mono = [1_700_000_000 * S], [10**12]
    monkeypatch.setattr(time, "time_ns", lambda: wall[0])
    monkeypatch.setattr(time, "monotonic_ns", lambda: mono[0])
    return wall, mono


def _pass(wall: list[int], mono: list[int], seconds: int) -> None:
    wall[0] += seconds * S
    mono[0] += seconds * S


def test_a_wall_clock_step_does_not_change_the_oldest_age(tmp_path: Path, clocks) -> None:
    wall, mono = clocks
    box = Outbox(tmp_path / "o.db")
    box.commit("read", lambda seq: b"sealed")
    _pass(wall, mono, 100)
    assert box.stats().oldest_age_s == 100
    wall[0] -= 30 * 3600 * S  # NTP steps the clock back 30 h
    assert box.stats().oldest_age_s == 100
    wall[0] += 60 * 3600 * S  # ... and forward 30 h past where it was
    _pass(wall, mono, 5)
    assert box.stats().oldest_age_s == 105
    box.close()


def test_the_age_follows_the_oldest_message_left_as_acks_arrive(tmp_path: Path, clocks) -> None:
    wall, mono = clocks
    box = Outbox(tmp_path / "o.db")
    seqs = []
    for _ in range(5):
        seqs.append(box.commit("read", lambda seq: b"sealed"))
        _pass(wall, mono, 10)
    assert box.stats().oldest_age_s == 50
    box.ack(seqs[:3])
    assert box.stats().oldest_age_s == 20
    box.ack(seqs[3:])
    assert box.stats().oldest_age_s == 0
    box.close()


def test_messages_from_before_a_restart_are_aged_from_the_wall_clock_at_open(tmp_path: Path, clocks) -> None:
    wall, mono = clocks
    box = Outbox(tmp_path / "o.db")
    box.commit("read", lambda seq: b"sealed")
    box.close()
    _pass(wall, mono, 3600)  # an hour powered off
    box = Outbox(tmp_path / "o.db")
    _pass(wall, mono, 10)
    wall[0] += 24 * 3600 * S  # stepped after the open: does not count
    assert box.stats().oldest_age_s == 3610
    box.close()
    # a clock behind the stamp at open (booted with an old time): not a negative age
    wall[0] -= 48 * 3600 * S
    box = Outbox(tmp_path / "o.db")
    _pass(wall, mono, 7)
    assert box.stats().oldest_age_s == 7
    box.close()


def test_the_commit_times_kept_stay_bounded_over_a_long_outage(tmp_path: Path, clocks) -> None:
    wall, mono = clocks
    box = Outbox(tmp_path / "o.db")
    for _ in range(3 * outbox_mod.MAX_COMMIT_MARKS):
        box.commit("read", lambda seq: b"r")
        _pass(wall, mono, 2)
    assert len(box._commit_marks) <= outbox_mod.MAX_COMMIT_MARKS
    total = 3 * outbox_mod.MAX_COMMIT_MARKS * 2
    assert box.stats().oldest_age_s == total  # the first commit's sample is always kept
    box.close()
