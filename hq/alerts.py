"""Hot-list alerts at HQ: reads a node sent with kind "alert". Every alert is *unverified*
until an operator records the outcome of the CLETS check: a hot-list hit alone is never
grounds for enforcement.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from hq.access import Access, Actor
from hq.errors import HQError, NotFound, PolicyError
from hq.store import READ_COLUMNS, ReadRow, ReadStore, row_from_db
from transport import cbor

MAX_ALERTS = 10_000  # one listing, as search's MAX_LIMIT

OUTCOMES = ("confirmed", "not-confirmed")


@dataclass(frozen=True)
class Alert:
    """An alert read, the node's match details and its verification state."""

    row: ReadRow
    hotlist: dict[str, str]
    status: str  # "unverified" | "confirmed" | "not-confirmed"
    verified_by: str | None
    note: str | None


def _alert(store: ReadStore, r: tuple) -> Alert:
    row = row_from_db(r[:12])
    payload = cbor.loads(bytes(r[12]))
    outcome = store.db.one("SELECT outcome, by_user, note FROM alert_outcomes WHERE read_id=? ORDER BY id DESC LIMIT 1",
                           (row.id,))
    hotlist = {str(k): str(v) for k, v in (payload.get("hotlist") or {}).items()}
    if outcome is None:
        return Alert(row, hotlist, "unverified", None, None)
    return Alert(row, hotlist, outcome[0], outcome[1], outcome[2])


def list_alerts(store: ReadStore, access: Access, actor: Actor, *, purpose: str, case_no: str = "",
                unverified_only: bool = True, limit: int = 200) -> list[Alert]:
    """Alerts, newest first (by default only those not yet verified); `limit` 1..MAX_ALERTS."""

    def check() -> HQError | None:
        # SQLite reads LIMIT -1 as no limit at all (every alert and its crop into memory)
        if not 0 < limit <= MAX_ALERTS:
            return PolicyError(f"limit {limit}: must be 1..{MAX_ALERTS} (--limit)")
        return None

    access.authorize(actor, "alerts", purpose=purpose, case_no=case_no,
                     query={"unverified_only": unverified_only, "limit": limit}, check=check)
    sql = f"SELECT {READ_COLUMNS}, payload FROM reads WHERE kind='alert'"
    if unverified_only:
        sql += " AND id NOT IN (SELECT read_id FROM alert_outcomes)"
    rows = store.db.rows(sql + " ORDER BY capture_ns DESC LIMIT ?", (limit,))
    return [_alert(store, r) for r in rows]


def verify_alert(store: ReadStore, access: Access, actor: Actor, read_id: int, *, outcome: str, note: str,
                 case_no: str = "") -> Alert:
    """Record the CLETS outcome of an alert (kept with who and when; a later record supersedes).

    The gate comes first: only a user allowed to verify alerts learns whether an id is one,
    and a refusal for any reason (bad outcome, no note, not an alert) is logged.
    """
    def problem() -> HQError | None:
        if outcome not in OUTCOMES:
            return PolicyError(f"outcome {outcome!r}: must be one of {', '.join(OUTCOMES)}")
        if not note.strip():
            return PolicyError("record what was checked (--note), e.g. the CLETS response reference")
        if store.db.one("SELECT 1 FROM reads WHERE id=? AND kind='alert'", (read_id,)) is None:
            return NotFound(f"alert {read_id}: no alert read with this id")
        return None

    access.authorize(actor, "alert-verify", purpose="verify hot-list alert", case_no=case_no,
                     query={"alert": read_id, "outcome": outcome, "note": note}, check=problem)
    r = store.db.one(f"SELECT {READ_COLUMNS}, payload FROM reads WHERE id=? AND kind='alert'", (read_id,))
    if r is None:  # purged between the check and now
        raise NotFound(f"alert {read_id}: no alert read with this id")
    store.db.execute("INSERT INTO alert_outcomes (read_id, capture_ns, outcome, note, by_user, t_ns) "
                     "VALUES (?,?,?,?,?,?)", (read_id, r[7], outcome, note, actor.name, access.clock()))
    return _alert(store, r)


def describe(alert: Alert) -> str:
    """One line for the CLI."""
    return json.dumps(alert.hotlist, sort_keys=True)
