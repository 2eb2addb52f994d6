"""Hot lists: entries kept at HQ, compiled into an HQ-signed message (transport.signed kind
"hotlist") that nodes match reads against. Body format: docs/records.md, "Hot-list message".

Exact plates travel only as keyed hashes, so reading a node's copy does not directly show
who is wanted: HMAC-SHA-256 with a fresh random key per published version, truncated to
16 bytes, over "x:" + normal form (exact) and over "s:" + OCR skeleton (confusable). The key
travels in the same message, because the node must compute the same HMAC of what it reads:
so this stops casual reading, not a determined attacker who holds the node (plates are a
small space; they can hash every candidate with the key). Partial patterns cannot be hashed
and travel in clear. See docs/records.md for the honest limits.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from hq import plates
from hq.db import MAX_INT64
from hq.access import Access, Actor
from hq.errors import HQError, NotFound, PolicyError
from hq.store import ReadStore
from transport import signed

REASONS = ("stolen-vehicle", "stolen-plate", "missing-person", "warrant")
HASH_LEN = 16
BODY_VERSION = 1
MAX_ENTRIES = 200_000


@dataclass(frozen=True)
class HotlistEntry:
    """One entry: an exact plate or a partial pattern, why, from where, until when, by whom."""

    id: int
    plate: str
    is_pattern: bool
    reason: str
    source: str
    expires_ns: int
    entered_by: str
    entered_ns: int
    note: str
    removed_ns: int | None = None
    removed_by: str | None = None

    def state(self, now_ns: int) -> str:
        """"removed", "expired" or "active" at `now_ns`."""
        if self.removed_ns is not None:
            return "removed"
        return "expired" if self.expires_ns <= now_ns else "active"


@dataclass(frozen=True)
class Compiled:
    """A published hot-list version: the signed message and its body."""

    version: int
    message: bytes
    body: dict[str, Any]


def plate_hash(key: bytes, prefix: str, text: str) -> bytes:
    """The truncated HMAC a node computes for a read ("x" exact normal form, "s" skeleton)."""
    return hmac.new(key, f"{prefix}:{text}".encode(), hashlib.sha256).digest()[:HASH_LEN]


def add_entry(store: ReadStore, access: Access, actor: Actor, *, plate: str, reason: str, source: str,
              expires_ns: int, purpose: str, case_no: str = "", note: str = "") -> HotlistEntry:
    """Enter a plate or pattern; reason must be one of REASONS, expiry in the future.

    The gate comes first; a bad reason, source, plate or expiry is then a logged refusal.
    """
    pattern = plates.is_pattern(plate)
    text, problem = plate, None
    try:
        text = plates.check_hotlist_pattern(plate) if pattern else plates.check_plate(plate)
    except plates.PlateQueryError as exc:  # raised by the gate's check, after the access check
        problem = exc

    def check() -> HQError | None:
        if reason not in REASONS:
            return PolicyError(f"reason {reason!r}: must be one of {', '.join(REASONS)}")
        if not source.strip():
            return PolicyError("a hot-list entry needs its source (--source, e.g. NCIC, SVS, agency case)")
        if problem is not None:
            return problem
        if expires_ns <= access.clock():
            return PolicyError("expiry must be in the future (--expires)")
        if expires_ns > MAX_INT64:
            return PolicyError("expiry is past the times HQ stores (2262-04-11) (--expires)")
        return None

    access.authorize(actor, "hotlist-edit", purpose=purpose, case_no=case_no,
                     query={"add": text, "reason": reason, "source": source, "expires_ns": expires_ns}, check=check)
    entry_id = store.db.insert(
        "INSERT INTO hotlist_entries (plate, is_pattern, reason, source, expires_ns, entered_by, entered_ns, note) "
        "VALUES (?,?,?,?,?,?,?,?)", (text, int(pattern), reason, source, expires_ns, actor.name, access.clock(), note))
    return entry(store, entry_id)


def remove_entry(store: ReadStore, access: Access, actor: Actor, entry_id: int, *, purpose: str) -> None:
    """Take an entry off the list (kept on file, marked removed). The gate comes first; an
    unknown id is a logged refusal."""
    access.authorize(actor, "hotlist-edit", purpose=purpose, query={"remove": entry_id},
                     check=lambda: _missing(store, entry_id))
    store.db.execute("UPDATE hotlist_entries SET removed_ns=?, removed_by=? WHERE id=? AND removed_ns IS NULL",
                     (access.clock(), actor.name, entry_id))


def show_entry(store: ReadStore, access: Access, actor: Actor, entry_id: int, *, purpose: str,
               case_no: str = "") -> HotlistEntry:
    """One entry, whatever its state (active, expired, removed): what an alert's `entry` id
    refers to, even after the entry left the list. A `hotlist-view` access, logged."""
    access.authorize(actor, "hotlist-view", purpose=purpose, case_no=case_no, query={"show": entry_id},
                     check=lambda: _missing(store, entry_id))
    return entry(store, entry_id)


def _missing(store: ReadStore, entry_id: int) -> NotFound | None:
    if store.db.value("SELECT 1 FROM hotlist_entries WHERE id=?", (entry_id,)) is None:
        return NotFound(f"hot-list entry {entry_id}: no such entry")
    return None


def entry(store: ReadStore, entry_id: int) -> HotlistEntry:
    """The entry with this id (removed and expired ones too); NotFound if none."""
    row = store.db.one("SELECT id, plate, is_pattern, reason, source, expires_ns, entered_by, entered_ns, note, "
                       "removed_ns, removed_by FROM hotlist_entries WHERE id=?", (entry_id,))
    if row is None:
        raise NotFound(f"hot-list entry {entry_id}: no such entry")
    return HotlistEntry(row[0], row[1], bool(row[2]), *row[3:])


def active_entries(store: ReadStore, now_ns: int) -> list[HotlistEntry]:
    """Entries not removed and not expired at `now_ns`."""
    rows = store.db.rows("SELECT id FROM hotlist_entries WHERE removed_ns IS NULL AND expires_ns > ? ORDER BY id",
                         (now_ns,))
    return [entry(store, r[0]) for r in rows]


def build_body(entries: list[HotlistEntry], *, version: int, now_ns: int, key: bytes,
               valid_for_ns: int) -> dict[str, Any]:
    """The hot-list body (docs/records.md): hashed exact plates, clear patterns, version, expiry."""
    exact = []
    for e in entries:
        if not e.is_pattern:
            exact.append({"x": plate_hash(key, "x", e.plate), "s": plate_hash(key, "s", plates.skeleton(e.plate)),
                          "id": e.id, "r": e.reason, "exp": e.expires_ns})
    patterns = [{"p": e.plate, "id": e.id, "r": e.reason, "exp": e.expires_ns} for e in entries if e.is_pattern]
    # Sorted by hash so the order reveals nothing about when entries were made.
    exact.sort(key=lambda item: item["x"])
    return {"v": BODY_VERSION, "node": "*", "t_ns": now_ns, "list_version": version,
            "valid_until_ns": now_ns + valid_for_ns, "hash": {"alg": "hmac-sha256-128", "key": key},
            "confusable": [list(g) for g in plates.CONFUSABLE_GROUPS], "exact": exact, "patterns": patterns}


def publish(store: ReadStore, access: Access, actor: Actor, sign_key: ed25519.Ed25519PrivateKey, *,
            purpose: str, valid_hours: float = 24.0) -> Compiled:
    """Compile the active entries into the next signed version (administrators only). Too
    many active entries is a refusal, logged (not a publication logged and then abandoned)."""
    def too_many() -> PolicyError | None:
        count = int(store.db.value("SELECT COUNT(*) FROM hotlist_entries WHERE removed_ns IS NULL AND expires_ns > ?",
                                   (access.clock(),)))
        if count > MAX_ENTRIES:
            return PolicyError(f"{count} active entries exceeds the {MAX_ENTRIES} the message can carry")
        return None

    grant = access.authorize(actor, "hotlist-publish", purpose=purpose, check=too_many)
    now = access.clock()
    entries = active_entries(store, now)
    if len(entries) > MAX_ENTRIES:  # entries added since the check: still refused, but the grant row stands
        raise PolicyError(f"{len(entries)} active entries exceeds the {MAX_ENTRIES} the message can carry")
    with store.db.transaction(lock="hotlist_versions"):
        version = int(store.db.value("SELECT COALESCE(MAX(version), 0) FROM hotlist_versions")) + 1
        body = build_body(entries, version=version, now_ns=now, key=secrets.token_bytes(32),
                          valid_for_ns=int(valid_hours * 3600 * 10**9))
        message = signed.sign("hotlist", body, sign_key)
        store.db.execute("INSERT INTO hotlist_versions (version, t_ns, published_by, entries, body_sha256) "
                         "VALUES (?,?,?,?,?)", (version, now, actor.name, len(entries),
                                                hashlib.sha256(message).hexdigest()))
    access.record(grant, "hotlist-published", detail=f"version {version}, {len(entries)} entries")
    return Compiled(version, message, body)


def match(body: dict[str, Any], plate: str, now_ns: int) -> dict[str, str] | None:
    """Reference matcher for a verified body (what the node-side matcher must do; used in tests).

    Returns the `hotlist` field of the alert payload, or None. Exact beats confusable beats pattern.
    """
    if body.get("v") != BODY_VERSION or now_ns >= body["valid_until_ns"]:
        return None
    key = body["hash"]["key"]
    norm = plates.normalize(plate)
    x, s = plate_hash(key, "x", norm), plate_hash(key, "s", plates.skeleton(norm))
    found = None
    for item in body["exact"]:
        if item["exp"] <= now_ns:
            continue
        if item["x"] == x:
            found = (item, "exact")
            break
        if item["s"] == s and found is None:
            found = (item, "confusable")
    if found is None:
        for item in body["patterns"]:
            if item["exp"] > now_ns and plates.to_regex(item["p"]).match(norm):
                found = (item, "pattern")
                break
    if found is None:
        return None
    item, how = found
    return {"list_version": str(body["list_version"]), "entry": str(item["id"]), "reason": item["r"], "match": how}
