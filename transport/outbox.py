"""The node's durable outbox: sealed envelopes in SQLite (WAL), deleted only on HQ's ack.

Every message is committed here, with its sequence number, before any publish attempt, and
leaves only when HQ acknowledges that it stored it. The database holds ciphertext only.

Quota policy (docs/wire-format.md, "Outbox"): when a new message would take the outbox over
its byte or entry quota, the oldest overview images go first, then the oldest ordinary
events and reads; alerts go last. Every dropped message is counted by kind, and its
sequence number is kept in `losses` so health reports and HQ can account for the gap.

Sequence numbers do not repeat when the database is lost or salvaged, nor when it comes back
older than it was by more than a block: a ceiling SEQ_BLOCK above the next number is reserved
in a small side file (`sequence.reserved`) before numbers below it are used (so, when written,
the ceiling is exactly next_seq + SEQ_BLOCK; `sequence.reserved.mark` repeats the ceiling with
the block, so that a reservation written by code without this rule -- an older release, a
downgrade -- is never judged), and a clean close lowers it to exactly what was handed out. An open that finds the database lost, or its next_seq below the ceiling's block
(proof that it went back past a reservation), continues at the ceiling, recording the numbers
it skips in `skipped` (ranges) so that HQ's gap is accounted for. An ordinary unclean stop
(a power cut, a kill) leaves the database's next_seq inside the block: committed messages are
fsync'd (WAL, synchronous=FULL), so it is right, and nothing is skipped -- HQ sees no gap. What
cannot be told from that is storage that lied about a sync and lost less than a block of
commits: those numbers may be used again, and HQ keeps each such second message beside the
first as a conflict (docs/wire-format.md, step 7), nothing deleted.

Disk space: the quota is capped by what the filesystem has free, a database or disk full error
on a commit makes room by the same quota policy and tries once more, and a small preallocated
file (`<outbox>.reserve`) is given up on such an error so that drops and HQ's acks can still
commit; it is made again once there is room.
"""
from __future__ import annotations

import collections
import errno
import fcntl
import heapq
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
# Numbers reserved at a time: one small fsync'd write per block; a database that comes back
# older by more than this is detected (see the module docstring).
SEQ_BLOCK = 1_000
# Given up when the disk is full so that drops and acks can still commit; also the free space
# the outbox leaves on the card for everything else (logs, the hot list).
RESERVE_BYTES = 4 * 1024 * 1024
# Rows of the queue one due() call reads at most looking for messages never published: they are
# read once each, in order, so this bounds only a call after mark_sent() of many never offered.
MAX_SCAN_ROWS = 5_000
FREE_SPACE_CHECK_NS = 10**9  # statvfs at most once a second: a syscall, but commits can be many
MAX_SKIPPED_KEPT = 1000  # ranges; one per unclean stop at most
# The longest a message HQ keeps leaving unacknowledged waits between copies (see Outbox.due).
MAX_BACKOFF_NS = 3600 * 10**9
# Commit times kept for the oldest message's age (Outbox._mark_commit): one a second at most,
# thinned to half when more are kept.
COMMIT_MARK_EVERY_NS = 10**9
MAX_COMMIT_MARKS = 4096
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
-- seqs first..last never given to a message: passed over because the database came back below
-- the reservation (a WAL lost, an unclean stop), so that none of them can be used twice
CREATE TABLE IF NOT EXISTS skipped (first INTEGER PRIMARY KEY, last INTEGER NOT NULL, skipped_ns INTEGER NOT NULL);
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
    # seqs passed over, never used, after the database came back below its reservation
    # (ranges in Outbox.skipped_ranges): part of HQ's gap, like the drops
    skipped: int = 0


class Outbox:
    """A bounded, crash-safe queue of sealed messages. Thread-safe (one connection, one lock)."""

    def __init__(self, path: Path, *, quota_bytes: int = 512 * 1024 * 1024, max_entries: int = 1_000_000,
                 max_losses_kept: int = 100_000, reserve_bytes: int = RESERVE_BYTES, owner: bool = False) -> None:
        """Open (or create) the outbox at `path`. `owner=True` is the node itself: it refuses to
        open while another process has the outbox (a salvage, a second node on one data
        directory) or while a salvage was interrupted; `alpr-node outbox status` opens as a
        non-owner beside a live node and judges nothing."""
        self.path = Path(path)
        self.quota_bytes = quota_bytes
        self.max_entries = max_entries
        self.max_losses_kept = max_losses_kept
        self.reserve_bytes = reserve_bytes
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
        # Copies HQ answered "later" (received and verified, set aside, not stored): seq -> the
        # _tried time of the copy it answered. That copy no longer holds a place in the window
        # and has had its strike (see defer()).
        self._answered: dict[int, int] = {}
        self._last_ack_ns = 0  # monotonic time of the last ack that removed something
        # due()'s indexes, so that a tick never walks every message published and unacked (a
        # backlog of 200k while HQ is down took 1.4 s a call, holding the lock from the camera):
        # _prio: priority of each tried message; _waiting[strikes]: heap of (sent, seq) for those
        # sent with that many strikes (one wait each, so sent order is due order whatever
        # resend_after_ns due() is given), valid while _sent[seq] == sent; _ready: heap of
        # (priority, seq) of tried messages due again, valid while seq is in _ready_set;
        # _scanned[p]: every row of priority p up to that seq is tried or in _untried[p] (untried
        # rows due() has already read).
        self._prio: dict[int, int] = {}
        self._waiting: dict[int, list[tuple[int, int]]] = {}
        self._ready: list[tuple[int, int]] = []
        self._ready_set: set[int] = set()
        self._scanned: dict[int, int] = {}
        self._untried: dict[int, set[int]] = {}
        self._seq_file = reservation_path(self.path)
        self._mark_file = self._seq_file.with_name(self._seq_file.name + ".mark")
        self._reserve_file = self.path.with_name(self.path.name + ".reserve")
        self._disk_cap = quota_bytes
        self._next_disk_check = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self._take_owner_lock()
        if owner:
            self._check_owner()
        try:
            self._db = self._open()
            self._bytes, self._depth = self._db.execute(
                "SELECT COALESCE(SUM(size),0), COUNT(*) FROM outbox").fetchone()
            self._next_seq, self._ceiling = self._load_sequence()
            # For the oldest message's age: created_ns is the wall clock at commit, which NTP
            # may step (a Pi boots without a real-time clock); a heartbeat showed -107,974 s.
            # Messages committed in this run are aged on the monotonic clock (sampled commit
            # times, _commit_marks), older ones from the wall clock at open plus monotonic since.
            self._opened_wall, self._opened_mono = time.time_ns(), time.monotonic_ns()
            self._first_seq_this_run = self._next_seq
            self._commit_marks: collections.deque[tuple[int, int]] = collections.deque()
        except BaseException:
            self._release_owner_lock()
            raise
        self._make_reserve()
        self._refresh_disk_cap(force=True)

    # -- opening and recovery -------------------------------------------------------------
    def _take_owner_lock(self) -> int | None:
        """An exclusive flock on `<outbox>.lock` while this object has the outbox open: only the
        owner (the node) may judge from the reservation that the database came back older, or
        lower the reservation on close; `alpr-node outbox status` run beside a live node must do
        neither. A file of its own: closing any other descriptor of outbox.db would drop
        SQLite's own (POSIX) locks on it."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except OSError as exc:
            log.warning("outbox %s: cannot open %s (%s): opening as a second user (no reservation checks)",
                        self.path, lock_path, exc)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None  # another process (or object) has it open: it is the owner
        return fd

    def _check_owner(self) -> None:
        """OutboxError unless this process holds the owner lock and no salvage was cut short."""
        if self._lock_fd is None:
            raise OutboxError(f"{self.path}: the outbox is open by another process (an `alpr-node outbox salvage`, "
                              f"or a second node on this data directory); the node does not start beside it")
        interrupted = sorted(self.path.parent.glob(f"{self.path.name}.salvage-*"))
        if interrupted:
            self._release_owner_lock()
            # The messages are in the set-aside files that salvage has not finished copying:
            # starting on what is here now would strand them.
            raise OutboxError(f"{self.path}: a salvage of this outbox was interrupted ({interrupted[0].name} is "
                              f"still here); run `alpr-node outbox salvage --data-dir {self.path.parent}` again "
                              f"before starting the node (docs/operations.md, 'Recovery')")

    def _release_owner_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def _open(self) -> sqlite3.Connection:
        for attempt in (0, 1):
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
                if _disk_full(exc):
                    # Not corruption: salvage would not help. Opening may need a little room
                    # (the shared-memory index, the new tables): the reserve is for this.
                    if attempt == 0 and self._release_reserve(f"opening failed ({exc})"):
                        continue
                    raise OutboxError(f"{self.path}: cannot open the outbox: the disk is full ({exc}); free "
                                      f"space in {self.path.parent}'s filesystem. Nothing has been deleted.") from exc
                raise OutboxError(
                    f"{self.path}: outbox database is corrupt ({exc}). Nothing has been deleted. "
                    f"Stop the service (`sudo systemctl stop alpr-node`), then run `sudo alpr-node outbox salvage "
                    f"--data-dir {self.path.parent}` to move it aside and copy every readable message into a new "
                    f"outbox (docs/operations.md, 'Recovery': 'Corrupt or truncated outbox')."
                ) from exc
        raise AssertionError("unreachable")

    def _load_sequence(self) -> tuple[int, int]:
        """(next seq, reserved ceiling) at open; see the module docstring for the rules."""
        row = self._db.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()
        max_seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()[0]
        known = max(row[0] if row else 1, max_seq + 1)
        try:
            reserved = _read_int(self._seq_file)
        except OutboxError as exc:
            if row is None:
                raise OutboxError(
                    f"{self._seq_file}: the sequence reservation is unreadable ({exc.__cause__}) and {self.path} does "
                    f"not say how far it got (no next_seq), so sequence numbers could be used twice. Nothing has "
                    f"been changed. Find the highest seq HQ stored for this node (`alpr-hq nodes --gaps` shows "
                    f"last_seq), then move {self._seq_file.name} aside and write a number well above it into "
                    f"{self._seq_file} (e.g. that seq + {SEQ_BLOCK}) before starting the node again "
                    f"(docs/operations.md, 'Recovery')."
                ) from exc
            # The database knows how far it got: one bad byte in the side file must not stop the
            # node, nor may deleting the file by hand reuse numbers. Kept for whoever looks.
            if self._lock_fd is None:
                # A second opener (`outbox status` beside the node) changes nothing on disk.
                return known, known + SEQ_BLOCK
            aside = _set_aside(self._seq_file, "unreadable")
            ceiling = known + SEQ_BLOCK
            self._write_reservation(ceiling)
            log.error("outbox %s: %s unreadable (%s): moved to %s and rewritten as %d from the database's "
                      "next_seq %d", self.path, self._seq_file, exc.__cause__, aside, ceiling, known)
            return known, ceiling
        start = known
        owner = self._lock_fd is not None
        block = self._mark_block(reserved)
        if row is None and reserved > known:
            # The database was lost (or is new beside an old reservation): numbers below the
            # reservation were used, and most likely stored at HQ; which, nobody here knows, so
            # they are not counted as skipped. Continue above them.
            log.warning("outbox %s: no database state (lost or new) beside the reservation %s: continuing at seq %d; "
                        "lower numbers may have been used already", self.path, self._seq_file, reserved)
            start = reserved
        elif owner and block is not None and known < reserved - block:
            # The ceiling was written when next_seq reached ceiling - block: a database below
            # that went back past the write (a WAL lost or cut, a copy restored). Numbers below
            # the reservation may have been handed out: continue above them, and say which ones
            # were passed over, so that HQ's gap is accounted for. Not judged by a second opener
            # (`outbox status` beside the live node), which may read mid-block.
            start = reserved
            self._record_skip(known, reserved - 1)
        if owner and block != SEQ_BLOCK:
            # A reservation this rule did not write (the previous release's, up to 10,000 ahead
            # and never lowered; or one written by it after a downgrade), or one of another block
            # size: nothing can be judged from it this once; from now on the ceiling follows
            # the rule (and its mark says so).
            ceiling = min(reserved, start + SEQ_BLOCK) if reserved > start else start
            self._write_reservation(max(ceiling, start))
            reserved = max(ceiling, start)
        return start, max(reserved, start)

    def _mark_block(self, reserved: int) -> int | None:
        """The block size the reservation `reserved` was written with, from its mark file, or
        None when the mark does not vouch for it (missing, unreadable, or naming another ceiling:
        the reservation was written by code without the block rule, e.g. after a downgrade)."""
        try:
            ceiling, block = (int(x) for x in self._mark_file.read_text().split())
        except (OSError, ValueError):
            return None
        return block if ceiling == reserved and block > 0 else None

    def _record_skip(self, first: int, last: int) -> None:
        log.warning("outbox %s: the database's next_seq is below the reservation's block (it came back older: its "
                    "WAL lost or cut); continuing at seq %d above the reservation in %s: seqs %d..%d are never used "
                    "(recorded in the outbox's `skipped` table)", self.path, last + 1, self._seq_file, first, last)
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR REPLACE INTO skipped VALUES (?,?,?)", (first, last, time.time_ns()))
            self._db.execute("INSERT INTO meta VALUES ('skipped', ?) ON CONFLICT(key) DO UPDATE SET value = value + ?",
                             (last - first + 1, last - first + 1))
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('next_seq', ?)", (last + 1,))
            self._db.execute("DELETE FROM skipped WHERE first < (SELECT first FROM skipped ORDER BY first DESC "
                             "LIMIT 1 OFFSET ?)", (MAX_SKIPPED_KEPT - 1,))
            self._db.execute("COMMIT")
        except sqlite3.Error:
            # Still safe: the reservation keeps these numbers from being used; only the record is missing.
            self._rollback()
            log.exception("outbox %s: could not record skipped seqs %d..%d", self.path, first, last)

    def _write_reservation(self, value: int) -> None:
        """Store the ceiling durably, then its mark (the ceiling and the block it was reserved
        with: what lets an open judge a database older than the block, see _load_sequence); on a
        full disk, give up the reserve and try once more. A stop between the two leaves a mark
        that names another ceiling: the next open judges nothing, which is safe (nothing at or
        above the old next_seq was committed)."""
        for attempt in (0, 1):
            try:
                _write_int(self._seq_file, value)
                atomic.write_text(self._mark_file, f"{value} {SEQ_BLOCK}\n", mode=0o600)
                return
            except OSError as exc:
                if attempt or exc.errno != errno.ENOSPC or not self._release_reserve(
                        f"writing {self._seq_file} failed ({exc})"):
                    raise

    # -- disk space -----------------------------------------------------------------------
    def _make_reserve(self) -> None:
        """Preallocate the reserve file (real blocks, not a sparse file) if it is missing."""
        if self.reserve_bytes <= 0:
            return
        try:
            fd = os.open(self._reserve_file, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0),
                         0o600)
        except OSError as exc:
            log.warning("outbox %s: cannot keep a disk reserve in %s (%s)", self.path, self._reserve_file, exc)
            return
        try:
            os.posix_fallocate(fd, 0, self.reserve_bytes)
            os.fsync(fd)
        except OSError as exc:
            # No room yet: a half-allocated reserve would only take the space it is meant to keep.
            log.warning("outbox %s: cannot preallocate the %d-byte disk reserve %s (%s); trying again once "
                        "there is room", self.path, self.reserve_bytes, self._reserve_file, exc)
            try:
                os.unlink(self._reserve_file)
            except OSError:
                pass
        finally:
            os.close(fd)

    def _release_reserve(self, why: str) -> bool:
        """Give the reserve's blocks back to the filesystem; True if there was one to give."""
        try:
            os.unlink(self._reserve_file)
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.error("outbox %s: cannot release the disk reserve %s (%s)", self.path, self._reserve_file, exc)
            return False
        log.error("outbox %s: the disk is full: %s; released the %d-byte reserve %s so that drops and acks can "
                  "commit", self.path, why, self.reserve_bytes, self._reserve_file)
        return True

    def _refresh_disk_cap(self, force: bool = False) -> None:
        """Cap the quota by the room the filesystem has (at most once a second): the configured
        quota alone never engages on a card that fills first, and SQLite then fails every commit."""
        now = time.monotonic_ns()
        if not force and now < self._next_disk_check:
            return
        self._next_disk_check = now + FREE_SPACE_CHECK_NS
        try:
            st = os.statvfs(self.path.parent)
            page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
            free_pages = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        except (OSError, sqlite3.Error) as exc:
            log.warning("outbox %s: cannot read the free space (%s); keeping the quota at %d bytes",
                        self.path, exc, self._disk_cap)
            return
        free = st.f_bavail * st.f_frsize
        # Halved: new pages are written twice (the WAL, then the database at a checkpoint). The
        # database's own free pages (left by drops and acks) are reused without more disk.
        room = max(0, free - self.reserve_bytes) // 2 + free_pages * page_size
        self._disk_cap = self._bytes + room
        if self.reserve_bytes > 0 and free >= 2 * self.reserve_bytes and not self._reserve_file.exists():
            self._make_reserve()

    def _quota(self) -> int:
        return min(self.quota_bytes, self._disk_cap)

    # -- producer side --------------------------------------------------------------------
    def commit(self, kind: str, build: Callable[[int], bytes], now_ns: int | None = None) -> int:
        """Assign the next sequence number, build the sealed message for it, commit durably.

        `build(seq)` must return the sealed envelope bytes for that sequence number. The
        message is on disk (fsync'd) when this returns. On a full disk, room is made by the
        quota policy (OutboxFull if only more valuable messages are left) and the commit tried
        once more; the sqlite3 error if that fails too.
        """
        if kind not in PRIORITY:
            raise ValueError(f"unknown outbox kind {kind!r}")
        now_ns = time.time_ns() if now_ns is None else now_ns
        with self._lock:
            seq = self._next_seq
            if seq >= self._ceiling:
                ceiling = seq + SEQ_BLOCK
                self._write_reservation(ceiling)  # durable before any number below it is used
                self._ceiling = ceiling
            message = build(seq)
            size = len(message)
            if size > self.quota_bytes:
                raise OutboxTooLarge(f"{self.path}: a {kind} of {size} bytes is larger than the whole outbox quota "
                                  f"({self.quota_bytes} bytes); raise outbox.quota_mb")
            self._refresh_disk_cap()
            for attempt in (0, 1):
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
                    break
                except OutboxFull:
                    self._rollback()
                    self._count_refused(kind, size)
                    raise
                except sqlite3.Error as exc:
                    self._rollback()
                    if attempt or not _disk_full(exc):
                        raise
                    # The card filled before the quota did: make room as the quota would (the
                    # least valuable first), with the reserve's blocks to write the drops with.
                    self._release_reserve(f"committing a {kind} of {size} bytes failed ({exc})")
                    self._disk_cap = max(0, min(self._disk_cap, self._bytes) - size)
                    self._next_disk_check = time.monotonic_ns() + FREE_SPACE_CHECK_NS
                    log.error("outbox %s: disk full committing seq %d (%s): dropping by the quota policy down to "
                              "%d bytes and trying once more", self.path, seq, kind, self._disk_cap)
                except BaseException:
                    self._rollback()
                    raise
            # In-memory accounting changes only once the transaction is durable.
            self._next_seq = seq + 1
            self._mark_commit(seq)
            self._bytes += size - freed
            self._depth += 1 - dropped
            for gone in dropped_seqs:
                self._forget(gone)
            return seq

    def _mark_commit(self, seq: int) -> None:
        """Remember when (monotonic) this run committed `seq`, at most one sample a second: the
        oldest message's age is then at most a second too high. Thinned to every other sample
        when long (a backlog built over days), so it stays small however long HQ is away; the
        age may then be high by the gap between two samples left."""
        mono = time.monotonic_ns()
        marks = self._commit_marks
        if marks and mono - marks[-1][1] < COMMIT_MARK_EVERY_NS:
            return
        marks.append((seq, mono))
        if len(marks) > MAX_COMMIT_MARKS:
            self._commit_marks = collections.deque(list(marks)[::2] + ([marks[-1]] if len(marks) % 2 == 0 else []))

    def _oldest_age_ns(self, oldest_seq: int, created_ns: int) -> int:
        """Age of the oldest message, immune to wall clock steps during this run."""
        mono = time.monotonic_ns()
        marks = self._commit_marks
        while len(marks) >= 2 and marks[1][0] <= oldest_seq:
            marks.popleft()  # acked or dropped up to there
        if oldest_seq >= self._first_seq_this_run and marks and marks[0][0] <= oldest_seq:
            return mono - marks[0][1]
        # committed before this run: its wall-clock stamp against the wall clock at open
        return (mono - self._opened_mono) + max(0, self._opened_wall - created_ns)

    def _make_room(self, size: int, priority: int, now_ns: int) -> tuple[int, int, list[int]]:
        """Drop the least valuable messages, oldest first, until `size` more bytes fit (inside the
        caller's transaction); only messages no more valuable than the new one (`priority`, lower
        is more valuable): an overview image never pushes out a read, nor a read an alert.

        Returns (bytes freed, messages dropped, their seqs) for the caller to apply after COMMIT.
        OutboxFull when only more valuable messages are left to drop (the caller rolls back).
        """
        freed, dropped, seqs = 0, 0, []
        quota = self._quota()
        while self._depth - dropped > 0 and (self._bytes - freed + size > quota
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
    def _wait(self, strikes: int, resend_after_ns: int) -> int:
        return min(resend_after_ns << strikes, max(MAX_BACKOFF_NS, resend_after_ns))

    def _push_waiting(self, seq: int, sent: int) -> None:
        heapq.heappush(self._waiting.setdefault(min(self._strikes.get(seq, 0), 30), []), (sent, seq))

    def _push_ready(self, seq: int) -> None:
        if seq not in self._ready_set and seq in self._prio:
            self._ready_set.add(seq)
            heapq.heappush(self._ready, (self._prio[seq], seq))

    def _compact(self) -> None:
        """Rebuild the heaps when stale entries (lazy deletion) outnumber the live ones."""
        if sum(map(len, self._waiting.values())) > 2 * len(self._sent) + 1024:
            self._waiting = {}
            for seq, sent in self._sent.items():
                self._waiting.setdefault(min(self._strikes.get(seq, 0), 30), []).append((sent, seq))
            for heap in self._waiting.values():
                heapq.heapify(heap)
        if len(self._ready) > 2 * len(self._ready_set) + 1024:
            self._ready = [(self._prio[s], s) for s in self._ready_set]
            heapq.heapify(self._ready)

    def due(self, limit: int, resend_after_ns: int, now_ns: int | None = None,
            max_resends: int | None = None) -> list[Pending]:
        """Messages never sent since start/reconnect, or sent longer ago than `resend_after_ns`
        doubled for each of their strikes (up to MAX_BACKOFF_NS), in send order (`now_ns` on
        the clock of mark_sent: monotonic by default). `max_resends` caps how many of them may
        be messages published before, so that messages HQ never acknowledges, at the front of
        the queue, leave room for the ones behind them."""
        now_ns = time.monotonic_ns() if now_ns is None else now_ns
        with self._lock:
            for strikes, heap in self._waiting.items():
                cutoff = now_ns - self._wait(strikes, resend_after_ns)
                while heap and heap[0][0] < cutoff:
                    sent, seq = heapq.heappop(heap)
                    # stale unless this copy is still unanswered at this strike level (defer()
                    # moves a copy to the next level, leaving its old entry behind)
                    if self._sent.get(seq) == sent and min(self._strikes.get(seq, 0), 30) == strikes:
                        self._push_ready(seq)
            # The first `limit` tried messages that are due, in send order.
            again: list[tuple[int, int]] = []
            while self._ready and len(again) < limit:
                prio, seq = heapq.heappop(self._ready)
                if seq not in self._ready_set:
                    continue  # stale: sent again, acked or dropped since
                self._ready_set.discard(seq)
                sent = self._sent.get(seq)
                if sent is not None and sent >= now_ns - self._wait(min(self._strikes.get(seq, 0), 30),
                                                                    resend_after_ns):
                    self._push_waiting(seq, sent)  # not due at this `now` (a caller's clock went back)
                    continue
                again.append((prio, seq))
            for prio, seq in again:  # still due until mark_sent says they went
                self._ready_set.add(seq)
                heapq.heappush(self._ready, (prio, seq))
            candidates = self._first_untried(limit) + again
            candidates.sort()
            chosen, held_back, resends = [], [], 0
            for _, seq in candidates:
                if seq in self._tried:
                    if max_resends is not None and resends >= max_resends:
                        held_back.append(seq)
                        continue
                    resends += 1
                chosen.append(seq)
                if len(chosen) >= limit:
                    break
            # room the messages never sent did not take goes to the copies held back
            chosen += held_back[:limit - len(chosen)]
            self._compact()
            if not chosen:
                return []
            rows = {seq: (kind, blob) for seq, kind, blob in self._db.execute(
                f"SELECT seq, kind, message FROM outbox WHERE seq IN ({','.join('?' * len(chosen))})", chosen)}
        return [Pending(seq, rows[seq][0], bytes(rows[seq][1])) for seq in chosen if seq in rows]

    def _first_untried(self, limit: int) -> list[tuple[int, int]]:
        """The first `limit` messages never published, as (priority, seq), in send order: those
        read before and still untried, then rows beyond what was read, each row read once."""
        found: list[tuple[int, int]] = []
        budget = MAX_SCAN_ROWS
        for prio in sorted(set(PRIORITY.values())):
            untried = self._untried.setdefault(prio, set())
            found += [(prio, seq) for seq in sorted(untried)[:limit - len(found)]]
            while len(found) < limit:
                if budget <= 0:
                    return found  # a prefix of the send order: the rest is read by the next calls
                rows = self._db.execute("SELECT seq FROM outbox WHERE priority=? AND seq>? ORDER BY seq LIMIT ?",
                                        (prio, self._scanned.get(prio, 0),
                                         min(budget, max(limit - len(found), 256)))).fetchall()
                if not rows:
                    break
                budget -= len(rows)
                for (seq,) in rows:
                    self._scanned[prio] = seq
                    if seq not in self._tried:
                        untried.add(seq)
                        found.append((prio, seq))
                        if len(found) >= limit:
                            break
            if len(found) >= limit:
                break
        return found

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
            present = dict(self._db.execute(
                f"SELECT seq, priority FROM outbox WHERE seq IN ({','.join('?' * len(seqs))})", seqs).fetchall())
            for seq in seqs:
                if seq in present:
                    previous = self._tried.get(seq)
                    # a copy HQ answered "later" had its strike then (defer())
                    if (previous is not None and previous < self._last_ack_ns
                            and self._answered.get(seq) != previous):
                        self._strikes[seq] = self._strikes.get(seq, 0) + 1
                    self._sent[seq] = now_ns
                    self._tried[seq] = now_ns
                    self._prio[seq] = present[seq]
                    self._untried.get(present[seq], set()).discard(seq)
                    self._ready_set.discard(seq)
                    self._push_waiting(seq, now_ns)

    def reset_sent(self, since_ns: int | None = None) -> int:
        """Forget publish attempts (after a reconnect), so those unacked messages go again: all
        of them, or those sent at or after `since_ns` (mark_sent's clock); the others, and copies
        HQ answered "later" (defer()), keep their schedule. A message's strikes stay (see due()).
        Returns how many were made due again."""
        with self._lock:
            # A copy HQ answered "later" reached HQ, which verified it and set it aside: it keeps
            # its backoff. Sending every such copy again at each reset (a new ingest generation, a
            # broker without the session) made 3,000 of them 350,000 copies an hour.
            again = [seq for seq, t in self._sent.items()
                     if (since_ns is None or t >= since_ns) and self._answered.get(seq) != t]
            for seq in again:
                del self._sent[seq]  # their _waiting entries are stale now
            for seq in again:
                self._push_ready(seq)
            self._compact()
        return len(again)

    def defer(self, seqs: Iterable[int]) -> int:
        """HQ received these messages and verified them but will not store them now (set aside:
        a capture time too far ahead, a store refusal). Each published copy so answered takes a
        strike at once, so it waits twice as long before its next copy, and stops holding a place
        in the window: a window's worth of them at the front of the outbox used to hold back every
        read behind them while HQ acknowledged nothing else (with a window of 1, for ever).
        Returns how many copies it applied to (unknown, unpublished or repeated answers are
        ignored)."""
        applied = 0
        with self._lock:
            for seq in seqs:
                tried = self._tried.get(seq)
                if tried is None or self._answered.get(seq) == tried:
                    continue  # never published by this process, acked since, or answered already
                self._answered[seq] = tried
                self._strikes[seq] = self._strikes.get(seq, 0) + 1
                applied += 1
                self._ready_set.discard(seq)  # due again only after its longer wait
                sent = self._sent.get(seq)
                if sent is not None:
                    self._push_waiting(seq, sent)
                else:
                    self._push_ready(seq)  # forgotten by a reconnect's reset: due now, as the rest
            self._compact()
        return applied

    def _forget(self, seq: int) -> None:
        """Drop a message's publish records once it has left the outbox (acked or dropped)."""
        self._sent.pop(seq, None)
        self._tried.pop(seq, None)
        self._strikes.pop(seq, None)
        self._answered.pop(seq, None)
        self._ready_set.discard(seq)
        prio = self._prio.pop(seq, None)
        for untried in ([self._untried.get(prio, set())] if prio is not None else self._untried.values()):
            untried.discard(seq)

    def in_flight(self, resend_after_ns: int | None = None, now_ns: int | None = None) -> int:
        """Messages published and not yet acknowledged (only those sent within `resend_after_ns`, if
        given; `now_ns` monotonic by default, as mark_sent's)."""
        with self._lock:
            if resend_after_ns is None:
                return len(self._sent)
            cutoff = (time.monotonic_ns() if now_ns is None else now_ns) - resend_after_ns
            return sum(1 for seq, sent in self._sent.items()
                       if sent >= cutoff and self._answered.get(seq) != sent)

    def ack(self, seqs: Iterable[int], now_ns: int | None = None) -> int:
        """Delete messages HQ confirmed it stored; returns how many were still here (`now_ns`
        on mark_sent's clock, monotonic by default: when HQ last showed it acknowledges). On a
        full disk the reserve is given up and the ack tried once more."""
        seqs = list(seqs)
        if not seqs:
            return 0
        with self._lock:
            for attempt in (0, 1):
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    placeholders = ",".join("?" * len(seqs))
                    freed, count = self._db.execute(
                        f"SELECT COALESCE(SUM(size),0), COUNT(*) FROM outbox WHERE seq IN ({placeholders})", seqs
                    ).fetchone()
                    self._db.execute(f"DELETE FROM outbox WHERE seq IN ({placeholders})", seqs)
                    self._db.execute(
                        "INSERT INTO meta VALUES ('acked', ?) ON CONFLICT(key) DO UPDATE SET value = value + ?",
                        (count, count))
                    self._db.execute("COMMIT")
                    break
                except sqlite3.Error as exc:
                    self._rollback()
                    # An ack is what frees room: it must not fail for want of the WAL space to write it.
                    if attempt or not _disk_full(exc) or not self._release_reserve(f"an ack failed ({exc})"):
                        raise
                except BaseException:
                    self._rollback()
                    raise
            # Only once the DELETE is durable: an ack whose COMMIT failed (disk full, card remounted
            # read-only) leaves the messages here, and forgetting their publish times would make
            # them look never sent, so due() would hand them out again at the very next tick.
            for seq in seqs:
                self._forget(seq)
            if count:
                self._last_ack_ns = time.monotonic_ns() if now_ns is None else now_ns
            self._bytes -= freed
            self._depth -= count
            return count

    # -- reporting ------------------------------------------------------------------------
    def stats(self, now_ns: int | None = None) -> OutboxStats:
        """Depth, bytes, age of the oldest message and counters, for health reports (`now_ns`,
        a wall-clock time, ages the oldest message by its stamp instead: for tests)."""
        with self._lock:
            if self._db is None:
                raise OutboxError(f"{self.path}: outbox is closed")
            # the lowest seq is the oldest commit (seqs only grow): found by the primary key, where
            # MIN(created_ns) read every row (seconds on a full outbox, every health interval)
            row = self._db.execute("SELECT seq, created_ns FROM outbox ORDER BY seq LIMIT 1").fetchone()
            if row is None:
                age_ns = 0
            elif now_ns is not None:
                age_ns = now_ns - row[1]
            else:
                age_ns = self._oldest_age_ns(row[0], row[1])
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            ignored = len(self._strikes)
        dropped = {k[len("dropped_"):]: v for k, v in meta.items() if k.startswith("dropped_")}
        refused = {k[len("refused_"):]: v for k, v in meta.items() if k.startswith("refused_")}
        return OutboxStats(
            depth=self._depth, bytes=self._bytes,
            oldest_age_s=age_ns / 1e9,
            committed=meta.get("committed", 0), acked=meta.get("acked", 0), dropped=dropped, ignored_by_hq=ignored,
            refused=refused, skipped=meta.get("skipped", 0),
        )

    def losses(self, limit: int = 1000) -> list[tuple[int, str]]:
        """Sequence numbers dropped under quota, newest first."""
        with self._lock:
            return self._db.execute("SELECT seq, kind FROM losses ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()

    def skipped_ranges(self, limit: int = 100) -> list[tuple[int, int]]:
        """Ranges (first, last) of sequence numbers never used (see the `skipped` table), newest first."""
        with self._lock:
            return self._db.execute("SELECT first, last FROM skipped ORDER BY first DESC LIMIT ?",
                                    (limit,)).fetchall()

    def close(self) -> None:
        """Close the database; safe to call twice. The owner lowers the reservation to exactly the
        next seq, so that the next open can tell a clean stop from a database that came back older."""
        with self._lock:
            if self._db is None:
                return
            self._db.close()
            self._db = None  # type: ignore[assignment]
            if self._lock_fd is not None and self._ceiling > self._next_seq:
                try:
                    _write_int(self._seq_file, self._next_seq)
                    self._ceiling = self._next_seq
                except OSError as exc:
                    # Still safe: the next open skips to the old ceiling and records the skip.
                    log.warning("outbox %s: could not lower the reservation %s to %d (%s)", self.path,
                                self._seq_file, self._next_seq, exc)
            self._release_owner_lock()


SALVAGED = "salvaged:"  # meta key prefix: an aside file whose messages this outbox already holds


def salvage(path: Path) -> tuple[Path | None, int]:
    """Copy every readable message of a corrupt outbox into a new one, and move the old aside.

    Returns (where the corrupt file went, how many messages the new outbox holds). Safe to kill
    at any point and to run again: the new outbox is built under a temp name and fsynced first,
    the old files are kept under a new, unique `<outbox>.corrupt-<time>-<n>` name (never over an
    earlier one), and only then is the new one renamed into place. A run also reads earlier
    `*.corrupt-*` files that the current outbox does not record as copied (an interrupted
    salvage), naming them in the log. Messages that cannot be read are logged; their sequence
    numbers are unknown, so HQ sees them as a gap. Stop the node first.
    """
    path = Path(path)
    lock_path = path.with_name(path.name + ".lock")
    lock_fd = os.open(lock_path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            # The node (the lock's owner while it has the outbox open) would go on writing into
            # the file being moved aside, and those reads would be lost.
            raise OutboxError(f"{path}: the outbox is open by a running node; stop it first "
                              f"(`sudo systemctl stop alpr-node`), then salvage") from None
        return _salvage(path)
    finally:
        os.close(lock_fd)


def _salvage(path: Path) -> tuple[Path | None, int]:
    folder = path.parent
    for stale in folder.glob(f"{path.name}.salvage-*"):
        # A temp outbox of an interrupted run: everything in it came from files still here.
        log.warning("salvage %s: removing %s, left by an interrupted salvage", path, stale)
        stale.unlink()
    consumed = _salvaged_from(path) if path.exists() else set()
    earlier = sorted(p for p in folder.glob(f"{path.name}.corrupt-*")
                     if not p.name.endswith(("-wal", "-shm")) and p.name not in consumed)
    if earlier:
        log.warning("salvage %s: also reading %s, set aside by an earlier salvage that did not finish (or not "
                    "copied since)", path, ", ".join(str(p) for p in earlier))
    sources = ([path] if path.exists() else []) + earlier
    try:
        reserved: int | None = _read_int(reservation_path(path))
    except OutboxError as exc:
        log.error("salvage %s: %s", path, exc)
        reserved = None
    rows: dict[int, tuple] = {}
    losses: dict[int, tuple] = {}
    skipped: dict[int, tuple] = {}
    next_seqs: list[int] = []
    for source in sources:
        next_seq = _read_source(source, reserved or 0, rows, losses, skipped)
        if next_seq is not None:
            next_seqs.append(next_seq)
    if reserved is None and not next_seqs:
        raise OutboxError(
            f"{reservation_path(path)}: the sequence reservation is unreadable and no outbox file here says how far "
            f"the node got (no next_seq), so sequence numbers could be used twice. Nothing has been changed. Find "
            f"the highest seq HQ stored for this node (`alpr-hq nodes --gaps` shows last_seq), move the file aside, "
            f"write a number well above that seq into it, then run salvage again (docs/operations.md, 'Recovery').")
    top = max([reserved or 0, 1] + next_seqs + [seq + 1 for seq in rows])
    # How far the readable files say the node got; from there to the ceiling nothing was handed
    # out as far as anything here knows: recorded as skipped, like an open's jump.
    reached = max([1] + next_seqs + [seq + 1 for seq in rows])
    if next_seqs and top > reached:
        skipped[reached] = (reached, top - 1, time.time_ns())
    aside = _unique_aside(path) if sources and sources[0] == path else None
    tmp = path.with_name(f"{path.name}.salvage-{os.getpid()}")
    new = sqlite3.connect(tmp, isolation_level=None)
    try:
        # A rollback journal, not WAL: when COMMIT returns the whole outbox is in this one file,
        # which can then be renamed into place with nothing beside it.
        new.execute("PRAGMA journal_mode=DELETE")
        new.execute("PRAGMA synchronous=FULL")
        new.executescript(SCHEMA)
        new.execute("BEGIN IMMEDIATE")
        new.executemany("INSERT INTO outbox (seq, kind, priority, created_ns, size, message) VALUES (?,?,?,?,?,?)",
                        list(rows.values()))
        new.executemany("INSERT INTO losses VALUES (?,?,?)", list(losses.values()))
        new.executemany("INSERT INTO skipped VALUES (?,?,?)", list(skipped.values()))
        new.execute("INSERT INTO meta VALUES ('next_seq', ?)", (top,))
        new.execute("INSERT INTO meta VALUES ('committed', ?)", (len(rows),))
        new.execute("INSERT INTO meta VALUES ('skipped', ?)", (sum(last - first + 1 for first, last, _ in skipped.values()),))
        # Every aside ever copied, not only this run's: an earlier run's aside must not be read
        # again by the next salvage, or messages HQ acknowledged since would come back.
        for name in sorted(consumed | {source.name for source in ([aside] if aside else []) + earlier}):
            new.execute("INSERT OR REPLACE INTO meta VALUES (?, 1)", (SALVAGED + name,))
        new.execute("COMMIT")
    finally:
        new.close()
    _fsync(tmp)
    _fsync(folder)
    if aside is not None:
        # Links first: at every instant the old files exist under one name or the other.
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(path) + suffix)
            if src.exists():
                os.link(src, Path(str(aside) + suffix))  # FileExistsError, never an overwrite
        _fsync(folder)
        for suffix in ("-wal", "-shm"):
            # The old WAL must not meet the new database: SQLite would replay it into it.
            Path(str(path) + suffix).unlink(missing_ok=True)
    os.replace(tmp, path)
    _fsync(folder)
    log.warning("salvage %s: %d message(s) recovered, sequence continues at %d; old files kept as %s*",
                path, len(rows), top, aside)
    return aside, len(rows)


def _salvaged_from(path: Path) -> set[str]:
    """Names of aside files the outbox at `path` records as copied into it (none if unreadable)."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return {key[len(SALVAGED):] for (key,) in db.execute(
                "SELECT key FROM meta WHERE key LIKE ?", (SALVAGED + "%",))}
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return set()


def _read_source(source: Path, reserved: int, rows: dict[int, tuple], losses: dict[int, tuple],
                 skipped: dict[int, tuple]) -> int | None:
    """Add every readable message (and loss/skip record) of one outbox file; its next_seq, if readable."""
    next_seq = None
    try:
        old = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    except sqlite3.DatabaseError as exc:
        log.error("salvage %s: database unreadable (%s)", source, exc)
        return None
    try:
        try:
            old.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            # Not a database at all (or its first page gone): nothing to probe, key by key or otherwise.
            log.error("salvage %s: database unreadable (%s)", source, exc)
            return None
        try:
            row = old.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()
            next_seq = row[0] if row else None
        except sqlite3.DatabaseError as exc:
            log.error("salvage %s: meta table unreadable (%s)", source, exc)
        for table, into in (("losses", losses), ("skipped", skipped)):
            try:
                for rec in old.execute(f"SELECT * FROM {table}"):
                    into.setdefault(rec[0], rec)
            except sqlite3.DatabaseError as exc:
                log.error("salvage %s: %s table unreadable (%s)", source, table, exc)
        try:
            seqs: Iterable[int] = [r[0] for r in old.execute("SELECT seq FROM outbox ORDER BY seq")]
        except sqlite3.DatabaseError as exc:
            # The table scan crosses a damaged page: probe each possible key on its own, so
            # every message on an intact page is still found.
            upper = max(next_seq or 0, reserved, 1)
            log.error("salvage %s: scan failed (%s); probing seq 1..%d one by one", source, exc, upper)
            seqs = range(1, upper + 1)
        for seq in seqs:
            if seq in rows:
                continue
            try:
                row = old.execute(
                    "SELECT seq, kind, priority, created_ns, size, message FROM outbox WHERE seq=?", (seq,)).fetchone()
            except sqlite3.DatabaseError as exc:
                log.error("salvage %s: message seq %d unreadable (%s)", source, seq, exc)
                continue
            if row is not None:
                rows[seq] = row
    except sqlite3.DatabaseError as exc:
        log.error("salvage %s: database unreadable (%s)", source, exc)
    finally:
        old.close()
    return next_seq


def _unique_aside(path: Path) -> Path:
    """`<outbox>.corrupt-<time>-<n>` with none of its -wal/-shm names taken: two runs in one
    second (or a rerun) must never put their files over an earlier run's."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for n in range(1000):
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        if not any(Path(str(aside) + suffix).exists() for suffix in ("", "-wal", "-shm")):
            return aside
    raise OutboxError(f"{path}: 1000 salvage copies made this second; not making another")


def _set_aside(path: Path, why: str) -> Path:
    """Rename `path` to a new `<name>.<why>-<time>-<n>` (never over an existing file); returns it."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for n in range(1000):
        aside = path.with_name(f"{path.name}.{why}-{stamp}-{n}")
        try:
            os.link(path, aside)
        except FileExistsError:
            continue
        os.unlink(path)
        return aside
    raise OutboxError(f"{path}: cannot find a free name to move it aside")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _disk_full(exc: BaseException) -> bool:
    """SQLITE_FULL: 'database or disk is full' (ENOSPC on a write, or the WAL unable to grow)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return (code is not None and code & 0xFF == sqlite3.SQLITE_FULL) or "disk is full" in str(exc)


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
