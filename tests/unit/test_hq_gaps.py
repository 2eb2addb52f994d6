"""`alpr-hq nodes --gaps`: missing sequence numbers are reported as runs."""
import pytest

from hq.cli import gaps

pytestmark = pytest.mark.unit


def test_hq_gap_report():
    assert gaps([]) == []
    assert gaps([1, 2, 3]) == []
    assert gaps([2, 3, 6, 7, 9]) == [(1, 1), (4, 5), (8, 8)]
