"""`alpr-hq nodes --gaps`: missing sequence numbers are reported as runs, above what retention purged."""
import pytest

from hq import retention
from hq.access import SYSTEM, Access
from hq.store import ReadStore
from hq.synthetic import FakeClock, SyntheticNode

pytestmark = pytest.mark.unit
DAY = 86_400 * 10**9
NOW = 1_790_000_000 * 10**9  # 2026-09


def test_gap_runs_counted_in_sql(tmp_path):
    store = ReadStore(tmp_path / "hq.db")
    node = SyntheticNode.create("node-a", "main-st")
    assert store.sequence_gaps("node-a") == (0, 0, [])
    store.store([node.read(seq, "7ABC123", NOW - DAY) for seq in (2, 3, 6, 7, 9)])
    assert store.sequence_gaps("node-a") == (9, 4, [(1, 1), (4, 5), (8, 8)])
    assert store.sequence_gaps("node-a", max_runs=1) == (9, 4, [(1, 1)])
    store.close()


def test_reads_retention_purged_are_not_missing(tmp_path):
    """After a purge the seqs below the node's watermark are gone on purpose, not lost."""
    store = ReadStore(tmp_path / "hq.db")
    node = SyntheticNode.create("node-a", "main-st")
    store.store([node.read(seq, "7ABC123", NOW - 500 * DAY) for seq in range(1, 122)]
                + [node.read(seq, "7ABC123", NOW - DAY) for seq in (122, 123, 125)])
    retention.purge(store, Access(store.db, clock=FakeClock(NOW)), SYSTEM, min_days=365)
    assert store.count("node-a") == 3
    assert store.sequence_gaps("node-a") == (125, 1, [(124, 124)])
    store.close()
