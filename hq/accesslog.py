"""The access log: every access to ALPR information, append-only and tamper-evident.

Each entry records who (user, role), when, what (action, query as canonical JSON), why
(purpose, case number) and the outcome. Entries form a hash chain:

    hash_n = SHA-256( canonical JSON [id, t_ns, user, role, action, outcome, purpose, case,
                                      query, detail, hash_{n-1}] )      with hash_0 = 64 × "0"

and `access_log_head` holds the last id and hash, written in the same transaction. The
database also refuses UPDATE and DELETE on the table (triggers). `verify()` recomputes the
chain and names every entry that was edited, and every gap where entries were deleted; it
also fails when the triggers are gone or the log is missing the rows that created the users.
Limits (docs/records.md): someone who can write the database file directly can drop the
triggers, cut the end of the log (or rewrite all of it) and fix the head row to match. Only
a head noted outside HQ catches that: `audit verify` prints the head as ID:HASH, auditors
keep it off-site (ticket, e-mail, paper), and `verify(expect_head=(ID, HASH))` fails unless
entry ID is still there with that hash.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hq.db import Database

GENESIS = "0" * 64


@dataclass(frozen=True)
class Entry:
    """One access-log entry."""

    id: int
    t_ns: int
    user: str
    role: str
    action: str
    outcome: str
    purpose: str
    case_no: str
    query: str
    detail: str
    prev_hash: str
    hash: str

    def computed_hash(self) -> str:
        """The hash this entry should carry, given its fields and its recorded predecessor."""
        return entry_hash(self.id, self.t_ns, self.user, self.role, self.action, self.outcome, self.purpose,
                          self.case_no, self.query, self.detail, self.prev_hash)


def entry_hash(*fields: Any) -> str:
    """SHA-256 of the canonical JSON of the fields (see the module docstring)."""
    text = json.dumps(list(fields), ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def canonical_query(query: Mapping[str, Any]) -> str:
    """The query as stored: JSON with sorted keys, so equal queries are equal text."""
    return json.dumps(dict(query), sort_keys=True, ensure_ascii=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class VerifyResult:
    """What `verify` found: problems (empty when the chain is intact), entries checked, head."""

    entries: int
    head_id: int
    head_hash: str
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


class AccessLog:
    """Append to and read the access log of one store."""

    COLUMNS = "id, t_ns, user_name, role, action, outcome, purpose, case_no, query, detail, prev_hash, hash"

    def __init__(self, db: Database, clock: Callable[[], int] = time.time_ns) -> None:
        self.db = db
        self.clock = clock

    def append(self, *, user: str, role: str, action: str, purpose: str, case_no: str = "",
               query: Mapping[str, Any] | None = None, detail: str = "", outcome: str = "ok") -> Entry:
        """Add one entry at the end of the chain (serialised with other writers)."""
        with self.db.transaction(lock="access_log"):
            head = self.db.one("SELECT last_id, last_hash FROM access_log_head WHERE k=1")
            prev_id, prev_hash = head if head else (0, GENESIS)
            entry_id = int(prev_id) + 1
            t_ns = self.clock()
            q = canonical_query(query or {})
            digest = entry_hash(entry_id, t_ns, user, role, action, outcome, purpose, case_no or "", q, detail,
                                prev_hash)
            self.db.execute(f"INSERT INTO access_log ({self.COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                            (entry_id, t_ns, user, role, action, outcome, purpose, case_no or "", q, detail,
                             prev_hash, digest))
            if head:
                self.db.execute("UPDATE access_log_head SET last_id=?, last_hash=? WHERE k=1", (entry_id, digest))
            else:
                self.db.execute("INSERT INTO access_log_head (k, last_id, last_hash) VALUES (1,?,?)",
                                (entry_id, digest))
        return Entry(entry_id, t_ns, user, role, action, outcome, purpose, case_no or "", q, detail, prev_hash,
                     digest)

    def entries(self, since_ns: int = 0, until_ns: int | None = None, case_no: str | None = None) -> list[Entry]:
        """Entries in order, optionally within [since, until) and for one case."""
        sql = f"SELECT {self.COLUMNS} FROM access_log WHERE t_ns >= ?"
        params: list[Any] = [since_ns]
        if until_ns is not None:
            sql += " AND t_ns < ?"
            params.append(until_ns)
        if case_no is not None:
            sql += " AND case_no = ?"
            params.append(case_no)
        return [Entry(*r) for r in self.db.rows(sql + " ORDER BY id", params)]

    def guard_problems(self) -> list[str]:
        """The append-only triggers that are missing, disabled or not the ones HQ made (each named).

        PostgreSQL: a trigger fires in normal sessions only when enabled 'O' (origin) or 'A'
        (always): 'D' (disabled) and 'R' (replica only) let UPDATE and DELETE through, as does a
        function that no longer raises. SQLite: each trigger's SQL must be the one HQ created
        (a trigger with `WHEN 0` still reads RAISE(ABORT) but never fires)."""
        from hq.migrations import append_only_sql  # the definitions HQ created the triggers from

        if self.db.postgres:
            found = {name: enabled for name, enabled in self.db.rows(
                "SELECT t.tgname, t.tgenabled FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "WHERE c.relname = 'access_log' AND NOT t.tgisinternal")}
            problems = [f"trigger {name} on access_log is missing (the log is no longer append-only)"
                        for name in ("access_log_append_only", "access_log_no_truncate") if name not in found]
            problems += [f"trigger {name} on access_log is disabled (enabled state {enabled!r}; the log is no "
                         "longer append-only)" for name, enabled in sorted(found.items()) if enabled not in ("O", "A")]
            body = self.db.value("SELECT prosrc FROM pg_proc WHERE proname = 'access_log_append_only'")
            if body is None or "RAISE EXCEPTION" not in " ".join(str(body).upper().split()):
                problems.append("function access_log_append_only no longer refuses changes (the log is no longer "
                                "append-only)")
            return problems
        found = {name: _normal_sql(sql or "") for name, sql in self.db.rows(
            "SELECT name, sql FROM sqlite_master WHERE type='trigger' AND tbl_name='access_log'")}
        expected = append_only_sql()
        return [f"trigger {name} on access_log is {'missing' if name not in found else 'not the one HQ made'} "
                "(the log is no longer append-only)"
                for name in ("access_log_no_update", "access_log_no_delete")
                if found.get(name) != _normal_sql(expected[name])]

    def verify(self, expect_head: tuple[int, str] | None = None) -> VerifyResult:
        """Recompute the chain; every edited entry and every deletion is named in `problems`.

        `expect_head` is a head (id, hash) noted earlier outside HQ: the check fails unless that
        entry is still in the log with that hash (a cut end or a rewritten log shows here even
        when the head row was fixed to match). Missing append-only triggers, and users whose
        creation is not in the log (an emptied log), are problems too.
        """
        problems = self.guard_problems()
        guards = len(problems)
        seen: dict[int, str] = {}
        prev_id, prev_hash = 0, GENESIS
        count = 0
        # The head first, then the entries up to it: entries written while the check runs (a
        # search, a login) are after the head read, and must not look like a cut end.
        head = self.db.one("SELECT last_id, last_hash FROM access_log_head WHERE k=1")
        sql, params = f"SELECT {self.COLUMNS} FROM access_log", ()
        if head is not None:
            sql, params = sql + " WHERE id <= ?", (int(head[0]),)
        for row in self.db.execute(sql + " ORDER BY id", params):
            e = Entry(*row)
            count += 1
            if e.id != prev_id + 1:
                problems.append(f"entries {prev_id + 1}..{e.id - 1} are missing (deleted)")
            elif e.prev_hash != prev_hash:
                problems.append(f"entry {e.id}: does not follow entry {prev_id} (an entry was deleted or replaced)")
            if e.computed_hash() != e.hash:
                problems.append(f"entry {e.id}: content was edited (hash mismatch)")
            if expect_head is not None and e.id == expect_head[0]:
                seen[e.id] = e.hash
            prev_id, prev_hash = e.id, e.hash
        if head is None:
            if count:
                problems.append("access_log_head is missing")
        elif int(head[0]) != prev_id:
            problems.append(f"entries {prev_id + 1}..{head[0]} at the end are missing (deleted)"
                            if int(head[0]) > prev_id else f"head records entry {head[0]} but the log ends at {prev_id}")
        elif head[1] != prev_hash:
            problems.append(f"entry {prev_id}: differs from the recorded head hash")
        if expect_head is not None:
            want_id, want_hash = expect_head
            if want_id not in seen:
                problems.append(f"entry {want_id} (the head noted earlier) is missing: the log was cut or rewritten "
                                f"(it now ends at entry {prev_id})")
            elif seen[want_id] != want_hash:
                problems.append(f"entry {want_id}: hash {seen[want_id]} is not the {want_hash} noted earlier: "
                                "the log was rewritten")
        # Every user's creation was logged in the transaction that created it: fewer such rows
        # than users means rows were removed, e.g. the log emptied and the head row deleted,
        # which the chain alone cannot see (checked only then: otherwise the chain said it).
        users = int(self.db.value("SELECT COUNT(*) FROM users") or 0)
        created = int(self.db.value("SELECT COUNT(*) FROM access_log WHERE action='user-add' AND outcome='ok'") or 0)
        if len(problems) == guards and users > created:
            problems.append(f"{users} users exist but the log records only {created} user-add entries: "
                            "entries were deleted (the log was emptied or rewritten)")
        return VerifyResult(count, prev_id, prev_hash, tuple(problems))


def _normal_sql(sql: str) -> str:
    """SQL with its whitespace normalised, to compare a stored trigger with its definition."""
    return " ".join(sql.split())
