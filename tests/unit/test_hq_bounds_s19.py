"""HQ input bounds found by review: times past what a signed 64-bit nanosecond holds, alert
listing limits, wildcard length, and month routing at the last instant of a month."""
from __future__ import annotations

import datetime as dt

import pytest

from hq import partitions
from hq.errors import PolicyError
from hq.plates import PlateQueryError, check_pattern
from hq.records_cli import parse_time
from hq.search import SearchQuery

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("text, end", [("2300-01-01", False), ("9999-12-31", True), ("2262-04-12T00:00Z", False),
                                       ("1969-12-31", False)])
def test_times_hq_cannot_store_are_refused_naming_the_option(text, end):
    with pytest.raises(PolicyError, match="--to .*(outside the times HQ can store|out of range|year)"):
        parse_time(text, end=end, option="--to")


def test_a_search_range_past_2262_is_refused_before_the_query():
    with pytest.raises(PolicyError, match="--to is outside the times HQ stores"):
        SearchQuery("7ABC123", until_ns=2**63).checked()


def test_a_very_long_pattern_is_refused():
    assert check_pattern("7AB*") == "7AB*"
    with pytest.raises(PlateQueryError, match="at most 32 characters"):
        check_pattern("A*" * 50_000)


def test_the_last_nanoseconds_of_a_month_belong_to_it():
    feb = int(dt.datetime(2026, 2, 1, tzinfo=dt.UTC).timestamp()) * 10**9
    for before in (1, 50, 120, 200, 999):
        month = partitions.Month.of_ns(feb - before)
        assert (month.year, month.month) == (2026, 1), before
    assert (partitions.Month.of_ns(feb).year, partitions.Month.of_ns(feb).month) == (2026, 2)
