"""Calendar months of capture time: the unit of read partitions (PostgreSQL) and of retention.

Months are UTC. A partition `reads_pYYYYMM` holds reads with capture_ns in
[first instant of the month, first instant of the next month).
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from hq.db import Database

_NAME = re.compile(r"^reads_p(\d{4})(\d{2})$")
_NS = 1_000_000_000
# The longest retention HQ computes a cutoff for: 100 years, the most records.retention_days
# allows (hq.config). Far more and the date arithmetic overflows (year 1 is the floor).
MAX_RETENTION_DAYS = 36500


@dataclass(frozen=True)
class Month:
    """One UTC calendar month."""

    year: int
    month: int

    @classmethod
    def of_ns(cls, t_ns: int) -> Month:
        # whole seconds (floor): t_ns / _NS rounds to about 240 ns near 2026, so a read in the
        # last instants of a month was routed to the next month's partition
        d = dt.datetime.fromtimestamp(t_ns // _NS, tz=dt.UTC)
        return cls(d.year, d.month)

    @classmethod
    def from_name(cls, name: str) -> Month | None:
        m = _NAME.match(name)
        return cls(int(m.group(1)), int(m.group(2))) if m else None

    @property
    def name(self) -> str:
        return f"reads_p{self.year:04d}{self.month:02d}"

    def next(self) -> Month:
        return Month(self.year + (self.month == 12), self.month % 12 + 1)

    @property
    def start_ns(self) -> int:
        return int(dt.datetime(self.year, self.month, 1, tzinfo=dt.UTC).timestamp()) * _NS

    @property
    def end_ns(self) -> int:
        return self.next().start_ns


def ensure_partitions(db: Database, months: set[Month], known: set[Month]) -> None:
    """Create the PostgreSQL partitions for `months` that do not exist yet (`known` caches them)."""
    for month in sorted(months - known, key=lambda m: (m.year, m.month)):
        with db.transaction(lock="reads_partitions"):
            exists = db.value("SELECT 1 FROM pg_class WHERE relname=? AND relkind='r'", (month.name,))
            if not exists:
                db.execute(f"CREATE TABLE {month.name} PARTITION OF reads "
                           f"FOR VALUES FROM ({month.start_ns}) TO ({month.end_ns})")
        known.add(month)


def existing_partitions(db: Database) -> list[Month]:
    """The month partitions of `reads` that exist, oldest first."""
    names = db.rows("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'reads'")
    months = [m for (name,) in names if (m := Month.from_name(name)) is not None]
    return sorted(months, key=lambda m: (m.year, m.month))


def _years_back(when: dt.datetime, years: int) -> dt.datetime:
    """The same date and time `years` calendar years earlier; 29 February becomes 28 February
    (the earlier date, so the span is never shorter than the years)."""
    if (when.month, when.day) == (2, 29):
        when = when.replace(day=28)
    return when.replace(year=when.year - years)


def retention_cutoff_ns(now_ns: int, min_days: int) -> int:
    """Reads captured before this instant may be purged: the start of the month that contains
    the earliest instant a read must still be kept from, so a whole month goes at once.

    That instant is `now - min_days` days; for `min_days` >= 365 it is also no later than
    `min_days // 365` calendar years back, then the remaining days: "365 days" stands for a
    year in the policy, and across 29 February a year is 366 days.

    ValueError naming min_days outside 1..MAX_RETENTION_DAYS (callers refuse it first, logged).
    """
    if not 1 <= min_days <= MAX_RETENTION_DAYS:
        raise ValueError(f"min_days {min_days}: must be 1 to {MAX_RETENTION_DAYS} days")
    now = dt.datetime.fromtimestamp(now_ns // _NS, tz=dt.UTC)
    keep_from = now - dt.timedelta(days=min_days)
    if min_days >= 365:
        years, rest = divmod(min_days, 365)
        keep_from = min(keep_from, _years_back(now, years) - dt.timedelta(days=rest))
    return Month(keep_from.year, keep_from.month).start_ns
