"""Release requests: another agency (or a prosecutor) asks for ALPR information for a case.

Civil Code 1798.90.55(b): a public agency shall not sell, share or transfer ALPR information
except to another public agency, and only as permitted by law. So: a request names the
agency, the person requesting and the purpose; an administrator other than the one who
entered it approves or denies it; nothing is exported before approval; the approved request
stays on file and the export's manifest hash is written into it.
"""
from __future__ import annotations

from dataclasses import dataclass

from hq.access import Access, Actor
from hq.errors import NotFound, PolicyError
from hq.store import ReadStore

STATUSES = ("pending", "approved", "denied", "exported")


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
    exported_ns: int | None


_COLUMNS = ("id, case_no, agency, requester, purpose, requested_by, requested_ns, status, reviewed_by, reviewed_ns, "
            "review_note, export_manifest_sha256, exported_ns")


def get(store: ReadStore, request_id: int) -> ReleaseRequest:
    row = store.db.one(f"SELECT {_COLUMNS} FROM release_requests WHERE id=?", (request_id,))
    if row is None:
        raise NotFound(f"release request {request_id}: no such request")
    return ReleaseRequest(*row)


def all_requests(store: ReadStore, since_ns: int = 0, until_ns: int | None = None) -> list[ReleaseRequest]:
    sql, params = f"SELECT {_COLUMNS} FROM release_requests WHERE requested_ns >= ?", [since_ns]
    if until_ns is not None:
        sql += " AND requested_ns < ?"
        params.append(until_ns)
    return [ReleaseRequest(*r) for r in store.db.rows(sql + " ORDER BY id", params)]


def request(store: ReadStore, access: Access, actor: Actor, *, case_no: str, agency: str, requester: str,
            purpose: str) -> ReleaseRequest:
    """File a request (pending until an administrator reviews it)."""
    for name, value in (("agency", agency), ("requester", requester), ("purpose", purpose)):
        if not value.strip():
            raise PolicyError(f"a release request needs --{name}")
    access.authorize(actor, "release-request", purpose=purpose, case_no=case_no,
                     query={"agency": agency, "requester": requester})
    request_id = store.db.insert(
        "INSERT INTO release_requests (case_no, agency, requester, purpose, requested_by, requested_ns, status) "
        "VALUES (?,?,?,?,?,?,'pending')", (case_no, agency, requester, purpose, actor.name, access.clock()))
    return get(store, request_id)


def review(store: ReadStore, access: Access, actor: Actor, request_id: int, *, approve: bool,
           note: str) -> ReleaseRequest:
    """Approve or deny a pending request; the reviewer may not be the one who filed it."""
    req = get(store, request_id)
    if req.status != "pending":
        raise PolicyError(f"release request {request_id} is {req.status}, not pending")
    if req.requested_by == actor.name:
        raise PolicyError(f"release request {request_id}: filed by {actor.name}; another administrator must review it")
    if not note.strip():
        raise PolicyError("record the basis for the decision (--note)")
    access.authorize(actor, "release-review", purpose=f"review release request {request_id}", case_no=req.case_no,
                     query={"request": request_id, "approve": approve, "note": note})
    store.db.execute("UPDATE release_requests SET status=?, reviewed_by=?, reviewed_ns=?, review_note=? "
                     "WHERE id=? AND status='pending'",
                     ("approved" if approve else "denied", actor.name, access.clock(), note, request_id))
    return get(store, request_id)


def require_approved(store: ReadStore, request_id: int, case_no: str) -> ReleaseRequest:
    """The request, if it is approved for this case and not yet used; PolicyError otherwise."""
    req = get(store, request_id)
    if req.case_no != case_no:
        raise PolicyError(f"release request {request_id} is for case {req.case_no}, not {case_no}")
    if req.status != "approved":
        raise PolicyError(f"release request {request_id} is {req.status}: nothing is released before approval")
    return req


def mark_exported(store: ReadStore, request_id: int, manifest_sha256: str, now_ns: int) -> None:
    """Tie the approved request to the export it authorised."""
    store.db.execute("UPDATE release_requests SET status='exported', export_manifest_sha256=?, exported_ns=? "
                     "WHERE id=? AND status='approved'", (manifest_sha256, now_ns, request_id))
