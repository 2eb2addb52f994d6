"""Release requests: another agency (or a prosecutor) asks for ALPR information for a case.

Civil Code 1798.90.55(b): a public agency shall not sell, share or transfer ALPR information
except to another public agency, and only as permitted by law. So: a request names the
agency, the person requesting and the purpose; an administrator other than the one who
entered it approves or denies it; nothing is exported before approval; the approved request
stays on file and the export's manifest hash is written into it.

Approval fixes what may leave: the reads held for the case at that moment are written into
the request (`read_ids`), and the export writes exactly those, or nothing (hq.evidence).

One approval allows one export, also when two exports of it overlap: an export first claims
the request (`claim_export`: approved -> exporting, one conditional UPDATE whose row count is
checked, so only one export can win it), writes the package, and only then marks the request
exported, again conditionally on its own claim (`mark_exported`). An export that fails gives
the claim back (`release_export_claim`: exporting -> approved, retry at once). A claim whose
export crashed (nothing left to give it back) is taken over by a later export once it is
EXPORT_CLAIM_STALE_NS old; the crashed export, if it was merely slow, then fails at
`mark_exported` and removes its package. While exporting, `exported_ns` holds the claim's
time (its owner's token: a take-over always writes a later time); `export_manifest_sha256`
stays empty until the request is exported.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from hq import retention
from hq.access import Access, Actor
from hq.errors import HQError, NotFound, PolicyError
from hq.store import ReadStore

STATUSES = ("pending", "approved", "denied", "exporting", "exported")
# How long an export may hold its claim on a request before another export may take it over
# (the first one crashed, or is so slow that it is treated as if it had): exports write a few
# files per read to local or removable media, normally in seconds.
EXPORT_CLAIM_STALE_NS = 3600 * 10**9


@dataclass(frozen=True)
class ReleaseRequest:
    """A request, its review and (once exported) the export it is tied to."""

    id: int
    case_no: str
    agency: str
    requester: str
    purpose: str
    requested_by: str
    requested_ns: int
    status: str
    reviewed_by: str | None
    reviewed_ns: int | None
    review_note: str | None
    export_manifest_sha256: str | None
    exported_ns: int | None  # when exported; while status is "exporting": when the export claimed it
    read_ids: tuple[int, ...] | None  # what approval released (None: not approved, or approved before HQ kept it)


_COLUMNS = ("id, case_no, agency, requester, purpose, requested_by, requested_ns, status, reviewed_by, reviewed_ns, "
            "review_note, export_manifest_sha256, exported_ns, read_ids")


def _request(row: tuple) -> ReleaseRequest:
    ids = None if row[-1] is None else tuple(int(i) for i in json.loads(row[-1]))
    return ReleaseRequest(*row[:-1], ids)


def find(store: ReadStore, request_id: int) -> ReleaseRequest | None:
    """The request, or None if there is no such request."""
    row = store.db.one(f"SELECT {_COLUMNS} FROM release_requests WHERE id=?", (request_id,))
    return None if row is None else _request(row)


def get(store: ReadStore, request_id: int) -> ReleaseRequest:
    """The request; NotFound if there is none."""
    req = find(store, request_id)
    if req is None:
        raise NotFound(f"release request {request_id}: no such request")
    return req


def all_requests(store: ReadStore, since_ns: int = 0, until_ns: int | None = None) -> list[ReleaseRequest]:
    """Requests filed in [since, until), oldest first."""
    sql, params = f"SELECT {_COLUMNS} FROM release_requests WHERE requested_ns >= ?", [since_ns]
    if until_ns is not None:
        sql += " AND requested_ns < ?"
        params.append(until_ns)
    return [_request(r) for r in store.db.rows(sql + " ORDER BY id", params)]


def requests_in_period(store: ReadStore, since_ns: int, until_ns: int) -> list[ReleaseRequest]:
    """Requests filed, reviewed or exported (or claimed by an export) in [since, until), oldest
    first: what an audit of the period must see, also for a request filed before it."""
    during = "({0} >= ? AND {0} < ?)"
    sql = (f"SELECT {_COLUMNS} FROM release_requests WHERE "
           + " OR ".join(during.format(col) for col in ("requested_ns", "reviewed_ns", "exported_ns"))
           + " ORDER BY id")
    return [_request(r) for r in store.db.rows(sql, [since_ns, until_ns] * 3)]


def request(store: ReadStore, access: Access, actor: Actor, *, case_no: str, agency: str, requester: str,
            purpose: str) -> ReleaseRequest:
    """File a request (pending until an administrator reviews it). The gate comes first (it
    also refuses a blank --purpose); a blank agency or requester is then a logged refusal."""
    def problem() -> PolicyError | None:
        for name, value in (("agency", agency), ("requester", requester)):
            if not value.strip():
                return PolicyError(f"a release request needs --{name}")
        return None

    grant = access.authorize(actor, "release-request", purpose=purpose, case_no=case_no,
                             query={"agency": agency, "requester": requester}, check=problem)
    # The case as the access log has it (trimmed): export and holds look requests up by it.
    request_id = store.db.insert(
        "INSERT INTO release_requests (case_no, agency, requester, purpose, requested_by, requested_ns, status) "
        "VALUES (?,?,?,?,?,?,'pending')", (grant.case_no, agency, requester, purpose, actor.name, access.clock()))
    return get(store, request_id)


def review(store: ReadStore, access: Access, actor: Actor, request_id: int, *, approve: bool,
           note: str) -> ReleaseRequest:
    """Approve or deny a pending request; the reviewer may not be the one who filed it.

    Approval records the reads held for the case at this moment: the export may write those
    and no others. Every refusal (not pending, own request, no note, nothing held) is logged.
    """
    held: list[int] = []

    def problem() -> HQError | None:
        nonlocal held
        req = find(store, request_id)
        if req is None:
            return NotFound(f"release request {request_id}: no such request")
        if req.status != "pending":
            return PolicyError(f"release request {request_id} is {req.status}, not pending")
        if req.requested_by == actor.name:
            return PolicyError(f"release request {request_id}: filed by {actor.name}; another administrator must "
                               "review it")
        if not note.strip():
            return PolicyError("record the basis for the decision (--note)")
        if approve:
            held = retention.held_read_ids(store, req.case_no)
            if not held:
                return PolicyError(f"release request {request_id}: case {req.case_no} has no reads under an active "
                                   "hold; place the holds first (evidence hold): approval releases exactly the reads "
                                   "held now")
        return None

    # The case goes into the log row (a package's access-log.json is the case's rows); it is
    # only recorded, not shown, so reading it before the gate tells a refused user nothing.
    filed = find(store, request_id)
    grant = access.authorize(actor, "release-review", purpose=f"review release request {request_id}",
                             case_no=filed.case_no if filed else "",
                             query={"request": request_id, "approve": approve, "note": note}, check=problem)
    req = get(store, request_id)
    with store.db.transaction():
        # Conditional on still being pending, and the row count checked: two administrators
        # reviewing at once both pass the check above, but only one decision may be recorded
        # (and logged as the decision); the other is told, and its attempt logged as refused.
        decided = store.db.execute(
            "UPDATE release_requests SET status=?, reviewed_by=?, reviewed_ns=?, review_note=?, "
            "read_ids=? WHERE id=? AND status='pending'",
            ("approved" if approve else "denied", actor.name, access.clock(), note,
             json.dumps(held) if approve else None, request_id)).rowcount
        if decided == 1:
            access.record(grant, "release-approved" if approve else "release-denied",
                          query={"request": request_id, "case": req.case_no, "reads": held})
    if decided != 1:
        now = find(store, request_id)
        by = f" by {now.reviewed_by}" if now is not None and now.reviewed_by else ""
        status = now.status if now is not None else "gone"
        access.withdraw(grant, PolicyError(
            f"release request {request_id} was reviewed{by} while this review was being made (it is {status} "
            f"now): this decision is not recorded"), query={"request": request_id, "approve": approve})
    return get(store, request_id)


def _fmt(t_ns: int) -> str:
    return dt.datetime.fromtimestamp(t_ns / 1e9, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _claim_is_stale(req: ReleaseRequest, now_ns: int) -> bool:
    return (req.status == "exporting" and req.exported_ns is not None
            and req.exported_ns < now_ns - EXPORT_CLAIM_STALE_NS)


def _exporting_problem(req: ReleaseRequest) -> PolicyError:
    since = "at an unknown time" if req.exported_ns is None else f"since {_fmt(req.exported_ns)}"
    retry = "" if req.exported_ns is None else (
        f"; if that export was interrupted, the request can be exported again after "
        f"{_fmt(req.exported_ns + EXPORT_CLAIM_STALE_NS)}")
    return PolicyError(f"release request {req.id} is being exported by another export ({since}): one approval "
                       f"allows one export, nothing exported{retry}")


def approval_problem(store: ReadStore, request_id: int, case_no: str, now_ns: int | None = None) -> HQError | None:
    """Why the request does not allow an export for this case now (missing, other case, not
    approved or already used, being exported, approved without a list of reads), or None.

    With `now_ns`, a request whose export claim is stale (EXPORT_CLAIM_STALE_NS) counts as
    approved: that export is taken to have crashed, and `claim_export` may take it over."""
    req = find(store, request_id)
    if req is None:
        return NotFound(f"release request {request_id}: no such request")
    if req.case_no != case_no.strip():
        return PolicyError(f"release request {request_id} is for case {req.case_no}, not {case_no.strip()}")
    if req.status == "exporting" and not (now_ns is not None and _claim_is_stale(req, now_ns)):
        return _exporting_problem(req)
    if req.status == "exported":
        when = "" if req.exported_ns is None else f" on {_fmt(req.exported_ns)}"
        return PolicyError(f"release request {request_id} was already exported{when}: one approval allows one "
                           "export; file a new request for another copy")
    if req.status not in ("approved", "exporting"):
        return PolicyError(f"release request {request_id} is {req.status}: nothing is released before approval")
    if req.read_ids is None:
        return PolicyError(f"release request {request_id} was approved before approvals recorded which reads they "
                           "release; file a new request and have it reviewed")
    return None


def require_approved(store: ReadStore, request_id: int, case_no: str) -> ReleaseRequest:
    """The request, if it is approved for this case and not yet used; PolicyError otherwise."""
    problem = approval_problem(store, request_id, case_no)
    if problem is not None:
        raise problem
    return get(store, request_id)


def claim_export(store: ReadStore, request_id: int, now_ns: int) -> bool:
    """Claim an approved request for one export (approved -> exporting, the claim's time in
    exported_ns); also takes over a claim older than EXPORT_CLAIM_STALE_NS. True if this call
    got it. One conditional UPDATE: of exports racing for a request, exactly one wins (SQLite
    serialises writers; PostgreSQL re-checks the WHERE against the row another transaction
    just changed). The claim's time is the winner's token for `mark_exported`."""
    with store.db.transaction():
        claimed = store.db.execute(
            "UPDATE release_requests SET status='exporting', exported_ns=? WHERE id=? AND read_ids IS NOT NULL "
            "AND (status='approved' OR (status='exporting' AND exported_ns < ?))",
            (now_ns, request_id, now_ns - EXPORT_CLAIM_STALE_NS)).rowcount
    return claimed == 1


def claim_problem(store: ReadStore, request_id: int) -> HQError:
    """Why `claim_export` did not get the request (another export has it, or has used it)."""
    req = find(store, request_id)
    if req is None:
        return NotFound(f"release request {request_id}: no such request")
    if req.status == "exporting":
        return _exporting_problem(req)
    return PolicyError(f"release request {request_id} is {req.status}: another export used this approval first "
                       "(one approval allows one export), nothing exported")


def release_export_claim(store: ReadStore, request_id: int, claimed_ns: int) -> bool:
    """Give back a claim after a failed export (exporting -> approved, to be retried); False if
    the claim was no longer this export's (taken over, see `claim_export`)."""
    with store.db.transaction():
        released = store.db.execute(
            "UPDATE release_requests SET status='approved', exported_ns=NULL "
            "WHERE id=? AND status='exporting' AND exported_ns=?", (request_id, claimed_ns)).rowcount
    return released == 1


def mark_exported(store: ReadStore, request_id: int, manifest_sha256: str, now_ns: int, *, claimed_ns: int) -> bool:
    """Tie the request to the export it authorised, if that export still holds its claim
    (`claim_export` at `claimed_ns`); False, changing nothing, if not (the claim was taken
    over: the caller must discard its package). Run it in the caller's transaction together
    with the log row that records the export."""
    marked = store.db.execute(
        "UPDATE release_requests SET status='exported', export_manifest_sha256=?, exported_ns=? "
        "WHERE id=? AND status='exporting' AND exported_ns=?",
        (manifest_sha256, now_ns, request_id, claimed_ns)).rowcount
    return marked == 1
