"""The node's durable outbox: sealed envelopes in SQLite (WAL), deleted only on HQ's ack.

Every message is committed here, with its sequence number, before any publish attempt, and
leaves only when HQ acknowledges that it stored it. The database holds ciphertext only.

Quota policy (docs/wire-format.md, "Outbox"): when a new message would take the outbox over
its byte or entry quota, the oldest overview images go first, then the oldest ordinary
events and reads; alerts go last. Every dropped message is counted by kind, and its
sequence number is kept in `losses` so health reports and HQ can account for the gap.

Sequence numbers never repeat, even if the database is lost or salvaged: a ceiling is
reserved in a small side file (`sequence.reserved`) before numbers below it are used.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from transport import atomic
from transport.errors import OutboxError, OutboxFull, OutboxTooLarge

log = logging.getLogger(__name__)

PRIORITY = {"alert": 0, "read": 1, "event": 1, "overview": 2}
SEQ_BLOCK = 10_000
# The longest a message HQ keeps leaving unacknowledged waits between copies (see Outbox.due).
MAX_BACKOFF_NS = 3600 * 10**9
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    priority INTEGER NOT NULL,
    created_ns INTEGER NOT NULL,
    size INTEGER NOT NULL,
    message BLOB NOT NULL  -- last: scans of the small columns never touch the blob's overflow pages
);
CREATE INDEX IF NOT EXISTS outbox_send ON outbox (priority, seq, kind);
CREATE TABLE IF NOT EXISTS losses (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, dropped_ns INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Pending:
    """An outbox entry due for (re)publication."""

    seq: int
    kind: str
    message: bytes


@dataclass(frozen=True)
class OutboxStats:
    """What health reports about the outbox."""

    depth: int
    bytes: int
    oldest_age_s: float
    committed: int
    acked: int
    dropped: dict[str, int]
    # messages HQ left unacknowledged while it acknowledged others (set aside or rejected there:
    # its ingest log says why); they back off, up to an hour between copies (Outbox.due)
    ignored_by_hq: int = 0
    # new messages not kept because only more valuable ones were left to drop (no seq taken)
    refused: dict[str, int] = field(default_factory=dict)


class Outbox:
    """A bounded, crash-safe queue of sealed messages. Thread-safe (one connection, one lock)."""

    def __init__(self, path: Path, *, quota_bytes: int = 512 * 1024 * 1024, max_entries: int = 1_000_000,
                 max_losses_kept: int = 100_000) -> None:
        self.path = Path(path)
        self.quota_bytes = quota_bytes
        self.max_entries = max_entries
        self.max_losses_kept = max_losses_kept
        self._lock = threading.Lock()
        # Publish attempts live in memory on purpose: after a restart everything unacked is
        # sent again anyway, and updating a row would rewrite its blob. Their times are on the
        # monotonic clock: a wall clock stepped back (NTP correcting a Pi that booted with a
        # wrong time) must not make them look recent, holding the window and their resends.
        self._sent: dict[int, int] = {}
        # Per message still here: when it was last published (kept across reconnects, unlike
        # _sent) and how many times it was published again although HQ acknowledged something
        # else since its previous copy ("strikes"). A message HQ keeps not acknowledging while it
        # acknowledges others (set aside, rejected) waits twice as long after each strike, so it
        # cannot hold the window from the reads behind it (see due()).
        self._tried: dict[int, int] = {}
        self._strikes: dict[int, int] = {}
        self._last_ack_ns = 0  # monotonic time of the last ack that removed something
        self._seq_file = reservation_path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._open()
        self._next_seq, self._ceiling = self._load_sequence()
        self._bytes, self._depth = self._db.execute("SELECT COALESCE(SUM(size),0), COUNT(*) FROM outbox").fetchone()

    # -- opening and recovery -------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            result = db.execute("PRAGMA quick_check").fetchone()[0]
            if result != "ok":
                raise sqlite3.DatabaseError(result)
            db.executescript(SCHEMA)
            return db
        except sqlite3.DatabaseError as exc:
            raise OutboxError(
                f"{self.path}: outbox database is corrupt ({exc}). Nothing has been deleted. "
                f"Stop the service (`sudo systemctl stop alpr-node`), then run `sudo alpr-node outbox salvage "
                f"--data-dir {self.path.parent}` to move it aside and copy every readable message into a new "
                f"outbox (docs/operations.md, 'Recovery': 'Corrupt or truncated outbox')."
            ) from exc

    def _load_sequence(self) -> tuple[int, int]:
        row = self._db.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()
        max_seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()[0]
        reserved = _read_int(self._seq_file)
        # If the database was lost or salvaged, numbers up to the reserved ceiling may have
        # been used already: start above it so HQ never sees one sequence number twice.
        start = max(row[0] if row else 1, max_seq + 1, reserved if row is None else 1)
        return start, max(reserved, start)

    # -- producer side --------------------------------------------------------------------
    def commit(self, kind: str, build: Callable[[int], bytes], now_ns: int | None = None) -> int:
        """Assign the next sequence number, build the sealed message for it, commit durably.

        `build(seq)` must return the sealed envelope bytes for that sequence number. The
        message is on disk (fsync'd) when this returns.
        """
        if kind not in PRIORITY:
            raise ValueError(f"unknown outbox kind {kind!r}")
        now_ns = time.time_ns() if now_ns is None else now_ns
        with self._lock:
            seq = self._next_seq
            if seq >= self._ceiling:
                ceiling = seq + SEQ_BLOCK
                _write_int(self._seq_file, ceiling)  # durable before any number below it is used
                self._ceiling = ceiling
            message = build(seq)
            size = len(message)
            if size > self.quota_bytes:
                raise OutboxTooLarge(f"{self.path}: a {kind} of {size} bytes is larger than the whole outbox quota "
                                  f"({self.quota_bytes} bytes); raise outbox.quota_mb")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                freed, dropped, dropped_seqs = self._make_room(size, PRIORITY[kind], now_ns)
                self._db.execute(
                    "INSERT INTO outbox (seq, kind, priority, created_ns, size, message) VALUES (?,?,?,?,?,?)",
                    (seq, kind, PRIORITY[kind], now_ns, size, message),
                )
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('next_seq', ?)", (seq + 1,))
                self._db.execute(
                    "INSERT INTO meta VALUES ('committed', 1) ON CONFLICT(key) DO UPDATE SET value = value + 1")
                self._db.execute("COMMIT")
            except OutboxFull:
                self._rollback()
                self._count_refused(kind, size)
                raise
            except BaseException:
                self._rollback()
                raise
            # In-memory accounting changes only once the transaction is durable.
            self._next_seq = seq + 1
            self._bytes += size - freed
            self._depth += 1 - dropped
            for gone in dropped_seqs:
                self._forget(gone)
            return seq

    def _make_room(self, size: int, priority: int, now_ns: int) -> tuple[int, int, list[int]]:
        """Drop the least valuable messages, oldest first, until `size` more bytes fit (inside the
        caller's transaction); only messages no more valuable than the new one (`priority`, lower
        is more valuable): an overview image never pushes out a read, nor a read an alert.

        Returns (bytes freed, messages dropped, their seqs) for the caller to apply after COMMIT.
        OutboxFull when only more valuable messages are left to drop (the caller rolls back).
        """
        freed, dropped, seqs = 0, 0, []
        while self._depth - dropped > 0 and (self._bytes - freed + size > self.quota_bytes
                                             or self._depth - dropped + 1 > self.max_entries):
            # The least valuable priority present, then its oldest: two index lookups, where
            # ORDER BY priority DESC, seq ASC sorted the whole table for every message dropped.
            victim = self._db.execute(
                "SELECT seq, kind, size FROM outbox WHERE priority = (SELECT MAX(priority) FROM outbox) "
                "AND priority >= ? ORDER BY seq LIMIT 1", (priority,)).fetchone()
            if victim is None:
                raise OutboxFull(f"{self.path}: at its quota with more valuable messages only: the new message "
                                 f"is not kept")
            seq, kind, victim_size = victim
            self._db.execute("DELETE FROM outbox WHERE seq=?", (seq,))
            self._db.execute("INSERT OR REPLACE INTO losses VALUES (?,?,?)", (seq, kind, now_ns))
            self._db.execute(
                "INSERT INTO meta VALUES (?, 1) ON CONFLICT(key) DO UPDATE SET value = value + 1",
                (f"dropped_{kind}",))
            freed += victim_size
            dropped += 1
            seqs.append(seq)
            log.warning("outbox %s: quota reached, dropping %s seq %d (%d bytes)", self.path, kind, seq, victim_size)
        if dropped:
            # Keep the newest `max_losses_kept` entries; uses the primary key, runs only when something was dropped.
            self._db.execute("DELETE FROM losses WHERE seq < (SELECT seq FROM losses ORDER BY seq DESC "
                             "LIMIT 1 OFFSET ?)", (self.max_losses_kept - 1,))
        return freed, dropped, seqs

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.OperationalError:
            pass  # no transaction was open

    def _count_refused(self, kind: str, size: int) -> None:
        """Count a message refused by _make_room (OutboxFull) under refused_<kind>. Not among the
        drops: it took no seq, so it is no gap at HQ, and committed = acked + dropped + depth holds."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT INTO meta VALUES (?, 1) ON CONFLICT(key) DO UPDATE SET value = value + 1",
                             (f"refused_{kind}",))
            self._db.execute("COMMIT")
        except sqlite3.Error:
            self._rollback()
            log.exception("outbox %s: could not count a refused %s", self.path, kind)
        log.warning("outbox %s: quota reached and only more valuable messages are left: a new %s (%d bytes) is "
                    "not kept", self.path, kind, size)

    # -- uplink side ----------------------------------------------------------------------
    def due(self, limit: int, resend_after_ns: int, now_ns: int | None = None,
            max_resends: int | None = None) -> list[Pending]:
        """Messages never sent since start/reconnect, or sent longer ago than `resend_after_ns`
        doubled for each of their strikes (up to MAX_BACKOFF_NS), in send order (`now_ns` on
        the clock of mark_sent: monotonic by default). `max_resends` caps how many of them may
        be messages published before, so that messages HQ never acknowledges, at the front of
        the queue, leave room for the ones behind them."""
        now_ns = time.monotonic_ns() if now_ns is None else now_ns
        with self._lock:
            # Only the first `limit + tried` keys can qualify: read keys from the covering
            # index, then fetch just the chosen blobs.
            keys = self._db.execute("SELECT seq, kind FROM outbox ORDER BY priority, seq LIMIT ?",
                                    (limit + len(self._tried),)).fetchall()
            chosen, held_back, resends = [], [], 0
            for seq, kind in keys:
                sent = self._sent.get(seq)
                if sent is not None:
                    backoff = resend_after_ns << min(self._strikes.get(seq, 0), 30)
                    wait = min(backoff, max(MAX_BACKOFF_NS, resend_after_ns))
                    if sent >= now_ns - wait:
                        continue
                if seq in self._tried:
                    if max_resends is not None and resends >= max_resends:
                        held_back.append((seq, kind))
                        continue
                    resends += 1
                chosen.append((seq, kind))
                if len(chosen) >= limit:
                    break
            # room the messages never sent did not take goes to the copies held back
            chosen += held_back[:limit - len(chosen)]
            if not chosen:
                return []
            blobs = dict(self._db.execute(
                f"SELECT seq, message FROM outbox WHERE seq IN ({','.join('?' * len(chosen))})",
                [seq for seq, _ in chosen]).fetchall())
        return [Pending(seq, kind, bytes(blobs[seq])) for seq, kind in chosen if seq in blobs]

    def mark_sent(self, seqs: Iterable[int], now_ns: int | None = None) -> None:
        """Record a publish attempt (in memory: after a restart, all is resent), for the messages
        still in the outbox (`now_ns` monotonic by default)."""
        now_ns = time.monotonic_ns() if now_ns is None else now_ns
        seqs = list(seqs)
        if not seqs:
            return
        with self._lock:
            # A message the producer dropped under quota after due() chose it is gone: recorded
            # anyway, it would stay here (counted in flight) until the next reconnect, one more
            # with each such race while the outbox is full.
            present = {row[0] for row in self._db.execute(
                f"SELECT seq FROM outbox WHERE seq IN ({','.join('?' * len(seqs))})", seqs)}
            for seq in seqs:
                if seq in present:
                    previous = self._tried.get(seq)
                    if previous is not None and previous < self._last_ack_ns:
                        self._strikes[seq] = self._strikes.get(seq, 0) + 1
                    self._sent[seq] = now_ns
                    self._tried[seq] = now_ns

    def reset_sent(self, since_ns: int | None = None) -> None:
        """Forget publish attempts (after a reconnect), so those unacked messages go again: all
        of them, or those sent at or after `since_ns` (mark_sent's clock); the others keep their
        schedule. A message's strikes stay (see due())."""
        with self._lock:
            if since_ns is None:
                self._sent.clear()
            else:
                self._sent = {seq: t for seq, t in self._sent.items() if t < since_ns}

    def _forget(self, seq: int) -> None:
        """Drop a message's publish records once it has left the outbox (acked or dropped)."""
        self._sent.pop(seq, None)
        self._tried.pop(seq, None)
        self._strikes.pop(seq, None)

    def in_flight(self, resend_after_ns: int | None = None, now_ns: int | None = None) -> int:
        """Messages published and not yet acknowledged (only those sent within `resend_after_ns`, if
        given; `now_ns` monotonic by default, as mark_sent's)."""
        with self._lock:
            if resend_after_ns is None:
                return len(self._sent)
            cutoff = (time.monotonic_ns() if now_ns is None else now_ns) - resend_after_ns
            return sum(1 for sent in self._sent.values() if sent >= cutoff)

    def ack(self, seqs: Iterable[int], now_ns: int | None = None) -> int:
        """Delete messages HQ confirmed it stored; returns how many were still here (`now_ns`
        on mark_sent's clock, monotonic by default: when HQ last showed it acknowledges)."""
        seqs = list(seqs)
        if not seqs:
            return 0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                placeholders = ",".join("?" * len(seqs))
                freed, count = self._db.execute(
                    f"SELECT COALESCE(SUM(size),0), COUNT(*) FROM outbox WHERE seq IN ({placeholders})", seqs
                ).fetchone()
                self._db.execute(f"DELETE FROM outbox WHERE seq IN ({placeholders})", seqs)
                for seq in seqs:
                    self._forget(seq)
                if count:
                    self._last_ack_ns = time.monotonic_ns() if now_ns is None else now_ns
                self._db.execute(
                    "INSERT INTO meta VALUES ('acked', ?) ON CONFLICT(key) DO UPDATE SET value = value + ?",
                    (count, count))
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            self._bytes -= freed
            self._depth -= count
            return count

    # -- reporting ------------------------------------------------------------------------
    def stats(self, now_ns: int | None = None) -> OutboxStats:
        """Depth, bytes, age of the oldest message and counters, for health reports."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        with self._lock:
            if self._db is None:
                raise OutboxError(f"{self.path}: outbox is closed")
            # the lowest seq is the oldest commit (seqs only grow): found by the primary key, where
            # MIN(created_ns) read every row (seconds on a full outbox, every health interval)
            row = self._db.execute("SELECT created_ns FROM outbox ORDER BY seq LIMIT 1").fetchone()
            oldest = row[0] if row else None
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            ignored = len(self._strikes)
        dropped = {k[len("dropped_"):]: v for k, v in meta.items() if k.startswith("dropped_")}
        refused = {k[len("refused_"):]: v for k, v in meta.items() if k.startswith("refused_")}
        return OutboxStats(
            depth=self._depth, bytes=self._bytes,
            oldest_age_s=(now_ns - oldest) / 1e9 if oldest else 0.0,
            committed=meta.get("committed", 0), acked=meta.get("acked", 0), dropped=dropped, ignored_by_hq=ignored,
            refused=refused,
        )

    def losses(self, limit: int = 1000) -> list[tuple[int, str]]:
        """Sequence numbers dropped under quota, newest first."""
        with self._lock:
            return self._db.execute("SELECT seq, kind FROM losses ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()

    def close(self) -> None:
        """Close the database; safe to call twice."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None  # type: ignore[assignment]


def salvage(path: Path) -> tuple[Path, int]:
    """Move a corrupt outbox aside and copy every readable message into a fresh one.

    Returns (where the corrupt file went, how many messages were recovered). Messages that
    cannot be read are logged; their sequence numbers are unknown, so HQ sees them as a gap.
    """
    path = Path(path)
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            os.replace(src, Path(str(aside) + suffix))
    recovered: list[tuple] = []
    next_seq = 1
    try:
        old = sqlite3.connect(f"file:{aside}?mode=ro", uri=True)
        try:
            row = old.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()
            next_seq = row[0] if row else 1
        except sqlite3.DatabaseError as exc:
            log.error("salvage %s: meta table unreadable (%s)", aside, exc)
        try:
            seqs = [r[0] for r in old.execute("SELECT seq FROM outbox ORDER BY seq")]
        except sqlite3.DatabaseError as exc:
            # The table scan crosses a damaged page: probe each possible key on its own, so
            # every message on an intact page is still found.
            upper = max(next_seq, _read_int(reservation_path(path)), 1)
            log.error("salvage %s: scan failed (%s); probing seq 1..%d one by one", aside, exc, upper)
            seqs = range(1, upper + 1)
        for seq in seqs:
            try:
                row = old.execute(
                    "SELECT seq, kind, priority, created_ns, size, message FROM outbox WHERE seq=?", (seq,)).fetchone()
            except sqlite3.DatabaseError as exc:
                log.error("salvage %s: message seq %d unreadable (%s)", aside, seq, exc)
                continue
            if row is not None:
                recovered.append(row)
        old.close()
    except sqlite3.DatabaseError as exc:
        log.error("salvage %s: database unreadable (%s); starting an empty outbox", aside, exc)
    box = Outbox(path)
    with box._lock:
        box._db.execute("BEGIN IMMEDIATE")
        box._db.executemany(
            "INSERT OR IGNORE INTO outbox (seq, kind, priority, created_ns, size, message) VALUES (?,?,?,?,?,?)",
            [r for r in recovered if r])
        top = max([next_seq, box._next_seq] + [r[0] + 1 for r in recovered if r])
        box._db.execute("INSERT OR REPLACE INTO meta VALUES ('next_seq', ?)", (top,))
        box._db.execute("COMMIT")
    box.close()
    return aside, len(recovered)


def reservation_path(db_path: Path) -> Path:
    """The sequence reservation file beside an outbox. Deliberately not `outbox.db*`, so that
    removing a broken database by glob cannot take the reservation with it."""
    return Path(db_path).with_name("sequence.reserved")


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except FileNotFoundError:
        return 0
    except (OSError, ValueError) as exc:
        raise OutboxError(f"{path}: unreadable sequence reservation ({exc})") from exc


def _write_int(path: Path, value: int) -> None:
    """Store the sequence ceiling crash-safely: a power cut leaves the old ceiling or the new one."""
    atomic.write_text(path, f"{value}\n", 0o600)
