"""Retention: reads are kept at least `min_days`, then purged a whole month at a time; evidence
holds (case number, by whom, why) exempt reads from purging until the hold is released.

Purge unit. A read captured in month M is purged once all of M is older than `min_days`
(hq.partitions.retention_cutoff_ns), so each read is kept between min_days and min_days + 31.
- PostgreSQL: each expired month is a partition; it is dropped whole (DROP TABLE), unless it
  holds reads under an active hold, in which case only its unheld rows are deleted. The dedup
  keys (read_keys) of the purged reads are then deleted in batches, so ingest keeps storing.
- SQLite: reads live in one table with an index on capture time; expired rows are deleted in
  batches (short transactions, so ingest keeps writing), overwritten on disk (secure_delete),
  and the freed pages are returned to the file system (incremental vacuum).
Each run is recorded in `purges` and in the access log.

Replays. A purge deletes the record that dedups a read's (node, seq), so in the same
transaction (each batch's) it raises the node's purge watermark
(hq.store.raise_purge_watermarks): the same bytes sent again later are acknowledged as
`purged` and not stored (hq.store.ReadStore.store). Held reads stay in the store and dedup as
before.

Events (`events`: a node's `no_read` with its best frame and the plate it had already sent
as `duplicate_of`, `overview` with the image of a read) are purged by the same cutoff, by
their capture time, in batches on both backends (`_purge_events`); an `overview` of a read
under an active hold (its `read_seq` names the read) is kept with the read. Their seqs raise
the node's purge watermark like those of purged reads: what retention removed is not counted
as missing (hq.store.ReadStore.sequence_gaps).

Ingest's set-aside messages (DATA_DIR/rejected/, hq.ingest) are removed by the same cutoff,
by when they were received (purge_set_aside).
"""
from __future__ import annotations

import collections
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hq import partitions
from hq.access import Access, Actor
from hq.db import Database
from hq.errors import HQError, NotFound, PolicyError
from hq.files import SET_ASIDE_FILE, SET_ASIDE_SUFFIXES
from hq.store import PURGE_LOCK, ReadStore, raise_purge_watermarks
from transport import cbor
from transport.errors import EncodingError

log = logging.getLogger(__name__)
ACTIVE_HELD = ("SELECT hr.read_id FROM hold_reads hr JOIN holds h ON h.id = hr.hold_id "
               "WHERE h.released_ns IS NULL")
BATCH = 5000  # SQLite: reads deleted per transaction
# PostgreSQL: dedup keys deleted per transaction (under PURGE_LOCK, so this bounds how long a
# store can wait on a purge: tens of milliseconds rather than the whole purge).
PG_KEY_BATCH = 10000


@dataclass(frozen=True)
class PurgeResult:
    """What one retention run did."""

    cutoff_ns: int
    reads_deleted: int
    partitions_dropped: int
    held_kept: int
    seconds: float
    set_aside_removed: int = 0  # messages ingest set aside (DATA_DIR/rejected/) removed
    events_deleted: int = 0  # events (no_read frames, overview images) purged by the same cutoff
    events_held: int = 0  # overview events past the cutoff kept because their read is held


@dataclass(frozen=True)
class Hold:
    """An evidence hold on some reads."""

    id: int
    case_no: str
    reason: str
    created_by: str
    created_ns: int
    released_ns: int | None
    read_ids: tuple[int, ...]


def place_hold(store: ReadStore, access: Access, actor: Actor, *, case_no: str, reason: str,
               read_ids: list[int]) -> Hold:
    """Hold reads for a case: they are not purged while the hold is active. The gate comes
    first; no reason (--why), no reads, or reads not in the store are logged refusals."""
    rows: dict[int, int] = {}

    def problem() -> HQError | None:
        if not read_ids:
            return PolicyError("a hold needs at least one read (--read)")
        rows.update({r[0]: r[1] for r in store.db.rows(
            f"SELECT id, capture_ns FROM reads WHERE id IN ({','.join('?' * len(read_ids))})", read_ids)})
        missing = sorted(set(read_ids) - set(rows))
        if missing:
            return NotFound(f"reads {missing}: not in the store (purged or never stored)")
        return None

    # The reason is the hold's purpose: the gate refuses a blank one, naming --why.
    grant = access.authorize(actor, "hold", purpose=reason, case_no=case_no, query={"reads": sorted(read_ids)},
                             check=problem, purpose_option="--why")
    # Under the lock the purge takes for each month (PostgreSQL; SQLite's writers are serial
    # anyway), with the reads looked up again inside: a purge that ran between the check above
    # and this transaction has removed them, and a hold on nothing would let the investigator
    # believe the evidence is kept. Either the hold commits first and the purge sees it, or the
    # purge does and the hold is refused here.
    with store.db.transaction(lock="reads_partitions"):
        present = {r[0] for r in store.db.rows(
            f"SELECT id FROM reads WHERE id IN ({','.join('?' * len(read_ids))})", read_ids)}
        gone = sorted(set(read_ids) - present)
        if gone:
            raise NotFound(f"reads {gone}: purged by retention while the hold was being placed; nothing held")
        # The case as the access log has it (trimmed): exports look holds up by it.
        hold_id = store.db.insert("INSERT INTO holds (case_no, reason, created_by, created_ns) VALUES (?,?,?,?)",
                                  (grant.case_no, reason, actor.name, access.clock()))
        for read_id in sorted(set(read_ids)):
            store.db.execute("INSERT INTO hold_reads (hold_id, read_id, capture_ns) VALUES (?,?,?)",
                             (hold_id, read_id, rows[read_id]))
    return get_hold(store, hold_id)


def release_hold(store: ReadStore, access: Access, actor: Actor, hold_id: int, *, note: str) -> Hold:
    """End a hold (its reads become purgeable again under normal retention). The gate comes
    first: a refused user does not learn whether the hold exists; every refusal is logged."""
    def problem() -> HQError | None:
        row = store.db.one("SELECT released_ns FROM holds WHERE id=?", (hold_id,))
        if row is None:
            return NotFound(f"hold {hold_id}: no such hold")
        if row[0] is not None:
            return PolicyError(f"hold {hold_id} was already released")
        return None

    # The case goes into the log row only (not shown), so reading it first tells nobody anything.
    case_no = store.db.value("SELECT case_no FROM holds WHERE id=?", (hold_id,)) or "(unknown hold)"
    # The note is the release's purpose: the gate refuses a blank one ("" and " " alike), naming --note.
    grant = access.authorize(actor, "hold", purpose=note, case_no=case_no, query={"release_hold": hold_id},
                             check=problem, purpose_option="--note")
    # Conditional on the hold still being active: two releases that both passed the check
    # above must not both be recorded (the second would overwrite who released it and why).
    with store.db.transaction():
        released = store.db.execute(
            "UPDATE holds SET released_ns=?, released_by=?, release_note=? WHERE id=? AND released_ns IS NULL",
            (access.clock(), actor.name, note, hold_id)).rowcount
    if released != 1:
        access.withdraw(grant, PolicyError(f"hold {hold_id} was already released (by another release meanwhile); "
                                           "nothing changed"), query={"release_hold": hold_id})
    return get_hold(store, hold_id)


def get_hold(store: ReadStore, hold_id: int) -> Hold:
    row = store.db.one("SELECT id, case_no, reason, created_by, created_ns, released_ns FROM holds WHERE id=?",
                       (hold_id,))
    if row is None:
        raise NotFound(f"hold {hold_id}: no such hold")
    ids = tuple(r[0] for r in store.db.rows("SELECT read_id FROM hold_reads WHERE hold_id=? ORDER BY read_id",
                                            (hold_id,)))
    return Hold(*row, ids)


def holds(store: ReadStore, case_no: str | None = None, active_only: bool = False) -> list[Hold]:
    """Holds, optionally for one case / only active ones."""
    sql, params = "SELECT id FROM holds WHERE 1=1", []
    if case_no is not None:
        sql += " AND case_no=?"
        params.append(case_no.strip())
    if active_only:
        sql += " AND released_ns IS NULL"
    return [get_hold(store, r[0]) for r in store.db.rows(sql + " ORDER BY id", params)]


def held_read_ids(store: ReadStore, case_no: str) -> list[int]:
    """Reads under an active hold for a case (case number trimmed, as stored)."""
    return [r[0] for r in store.db.rows(
        "SELECT DISTINCT hr.read_id FROM hold_reads hr JOIN holds h ON h.id = hr.hold_id "
        "WHERE h.released_ns IS NULL AND h.case_no=? ORDER BY hr.read_id", (case_no.strip(),))]


def purge(store: ReadStore, access: Access, actor: Actor, *, min_days: int = 365,
          retention_days: int | None = None, now_ns: int | None = None,
          clock: Callable[[], float] = time.monotonic, rejects_dir: Path | None = None) -> PurgeResult:
    """Purge reads past retention (see the module docstring); logged and recorded in `purges`.

    `retention_days` is the configured minimum (records.retention_days): a `min_days` below it
    is refused, since policy (and law) says reads are kept at least that long. `rejects_dir`
    (ingest's DATA_DIR/rejected/) is purged by the same cutoff (purge_set_aside).
    """
    def problem() -> PolicyError | None:
        if min_days < 1:
            return PolicyError(f"retention.min_days {min_days}: must be at least 1")
        if min_days > partitions.MAX_RETENTION_DAYS:
            # Far past what a date can go back (OverflowError), and past any policy.
            return PolicyError(f"--min-days {min_days}: at most {partitions.MAX_RETENTION_DAYS} days "
                               "(the largest records.retention_days allows)")
        if retention_days is not None and min_days < retention_days:
            return PolicyError(f"retention.min_days {min_days}: below records.retention_days ({retention_days}); "
                               "reads are kept at least the configured period")
        return None

    # The gate first: only someone who may purge learns (and is refused, logged) for the period.
    access.require_role(actor, "retention", query={"min_days": min_days}, check=problem)
    now_ns = access.clock() if now_ns is None else now_ns
    cutoff = partitions.retention_cutoff_ns(now_ns, min_days)
    started = clock()
    if store.db.postgres:
        deleted, dropped = _purge_postgres(store, cutoff)
    else:
        deleted, dropped = _purge_sqlite(store, cutoff)
    events, events_held = _purge_events(store.db, cutoff)
    if not store.db.postgres:
        store.db.execute("PRAGMA incremental_vacuum")  # after the events too: their frames take much of the space
    held = int(store.db.value(f"SELECT COUNT(*) FROM reads WHERE capture_ns < ? AND id IN ({ACTIVE_HELD})",
                              (cutoff,)))
    set_aside = 0 if rejects_dir is None else purge_set_aside(rejects_dir, cutoff)
    seconds = clock() - started
    detail = (f"deleted {deleted} reads, dropped {dropped} partitions, kept {held} held, "
              f"deleted {events} events, kept {events_held} held events")
    if rejects_dir is not None:
        detail += f", removed {set_aside} set-aside messages"
    with store.db.transaction():
        store.db.execute("INSERT INTO purges (t_ns, by_user, cutoff_ns, reads_deleted, partitions_dropped, held_kept, "
                         "seconds) VALUES (?,?,?,?,?,?,?)", (access.clock(), actor.name, cutoff, deleted, dropped,
                                                             held, seconds))
        access.log.append(user=actor.name, role=actor.role, action="purge", purpose="retention policy",
                          query={"min_days": min_days, "cutoff_ns": cutoff}, detail=detail)
    log.info("retention: cutoff %d: %s, %.2f s", cutoff, detail, seconds)
    return PurgeResult(cutoff, deleted, dropped, held, seconds, set_aside, events, events_held)


def purge_set_aside(rejects_dir: Path, cutoff_ns: int) -> int:
    """Remove the messages ingest set aside in `rejects_dir` (hq.ingest) that it received before
    `cutoff_ns`; returns how many messages (each up to three files), each one logged.

    Their `.signed` holds the decrypted payload (plate, crop), so they are kept no longer than
    the reads themselves. The receive time is the one their `.json` records (`rejected_ns`), or,
    when that is missing or unreadable (a crash while writing it, or while removing them), the
    newest modification time of their files. Files not named as ingest names them are left
    alone (they are not ours to judge) but counted in a warning.
    """
    try:
        entries = list(os.scandir(rejects_dir))
    except FileNotFoundError:  # ingest never set anything aside
        return 0
    except OSError as exc:  # the reads' purge is done and must still be recorded: say so, loudly
        log.error("retention: %s: cannot list set-aside messages, none removed: %s", rejects_dir, exc)
        return 0
    messages: dict[str, list[os.DirEntry]] = collections.defaultdict(list)
    foreign = 0
    for entry in entries:
        match = SET_ASIDE_FILE.match(entry.name)
        if match is None or entry.is_dir(follow_symlinks=False):
            foreign += 1
            continue
        messages[match.group("stem")].append(entry)
    # The plaintext first and the record of why it was set aside last, so that a removal cut
    # short leaves files the next run finds (and dates) again.
    order = {suffix: i for i, suffix in enumerate(SET_ASIDE_SUFFIXES)}
    removed = 0
    for stem, files in sorted(messages.items()):
        received, meta = _set_aside_received(rejects_dir / f"{stem}.json", files)
        if received is None or received >= cutoff_ns:
            continue
        names = []
        for entry in sorted(files, key=lambda e: order.get(Path(e.name.removesuffix(".tmp")).suffix, 0)):
            try:
                os.unlink(entry.path)
            except FileNotFoundError:  # ingest stored it meanwhile and removed its copy itself
                continue
            except OSError as exc:
                log.error("retention: %s: cannot remove a set-aside message's file: %s", entry.path, exc)
                continue
            names.append(entry.name)
        if names:
            removed += 1
            log.info("retention: removed set-aside message %s (reason %s, node %s seq %s, received %s): %s",
                     stem, meta.get("reason", "?"), meta.get("node", "?"), meta.get("seq", "?"),
                     time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(received // 10**9)), " ".join(names))
    if foreign:
        log.warning("retention: %s: %d entries not named as ingest names set-aside messages were left alone; "
                    "remove them by hand if they hold reads", rejects_dir, foreign)
    return removed


def _set_aside_received(record: Path, files: list[os.DirEntry]) -> tuple[int | None, dict]:
    """When ingest received a set-aside message, from its record or its files' times, and the
    record (empty when unreadable); None when no file of it is left to date."""
    meta: dict = {}
    try:
        loaded = json.loads(record.read_bytes())
        if isinstance(loaded, dict):
            meta = loaded
    except (OSError, ValueError):  # missing or half-written: the files' times say when instead
        pass
    recorded = meta.get("rejected_ns")
    if isinstance(recorded, int) and not isinstance(recorded, bool):
        return recorded, meta
    times = []
    for entry in files:
        try:
            times.append(entry.stat(follow_symlinks=False).st_mtime_ns)
        except FileNotFoundError:
            continue
    return (max(times) if times else None), meta


def _purge_sqlite(store: ReadStore, cutoff: int) -> tuple[int, int]:
    db = store.db
    deleted = 0
    while True:
        with db.transaction():
            # The rows of this batch are read first so that the watermark covers exactly what
            # is deleted, in the same transaction (BEGIN IMMEDIATE: no store runs in between).
            doomed = db.rows(f"SELECT id, node_id, seq FROM reads WHERE capture_ns < ? "
                             f"AND id NOT IN ({ACTIVE_HELD}) LIMIT ?", (cutoff, BATCH))
            highest: dict[str, int] = {}
            for _, node_id, seq in doomed:
                highest[node_id] = max(seq, highest.get(node_id, seq))
            raise_purge_watermarks(db, highest, cutoff)
            for i in range(0, len(doomed), 500):  # SQLite allows 999 parameters in older versions
                chunk = [row[0] for row in doomed[i:i + 500]]
                db.execute(f"DELETE FROM reads WHERE id IN ({','.join('?' * len(chunk))})", chunk)
            db.execute(f"DELETE FROM alert_outcomes WHERE capture_ns < ? AND read_id NOT IN ({ACTIVE_HELD})",
                       (cutoff,))
        n = len(doomed)
        deleted += n
        if n < BATCH:
            break
    return deleted, 0  # the caller vacuums, once events are purged too


def _purge_postgres(store: ReadStore, cutoff: int) -> tuple[int, int]:
    db = store.db
    deleted = dropped = 0
    for month in partitions.existing_partitions(db):
        if month.end_ns > cutoff:
            continue
        with db.transaction(lock="reads_partitions"):
            held = db.value(f"SELECT COUNT(*) FROM {month.name} WHERE id IN ({ACTIVE_HELD})")
            if held:
                n = db.execute(f"DELETE FROM {month.name} WHERE id NOT IN ({ACTIVE_HELD})").rowcount
            else:
                n = int(db.value(f"SELECT COUNT(*) FROM {month.name}"))
                db.execute(f"DROP TABLE {month.name}")
                dropped += 1
            deleted += n
            store._months.discard(month)
    deleted_keys = _purge_read_keys(db, cutoff)
    log.debug("retention: deleted %d dedup keys captured before %d", deleted_keys, cutoff)
    with db.transaction():
        # Stores never touch alert_outcomes: no PURGE_LOCK needed, so ingest is not held up by it.
        db.execute(f"DELETE FROM alert_outcomes WHERE capture_ns < ? AND read_id NOT IN ({ACTIVE_HELD})", (cutoff,))
    return deleted, dropped


def _held_overviews(db: Database) -> dict[str, set[int]]:
    """The seqs of reads under an active hold, by node: an `overview` event naming one of
    them (`read_seq`) is kept with it."""
    held: dict[str, set[int]] = collections.defaultdict(set)
    for node_id, seq in db.rows(f"SELECT node_id, seq FROM reads WHERE id IN ({ACTIVE_HELD})"):
        held[node_id].add(int(seq))
    return held


def _purge_events(db: Database, cutoff: int) -> tuple[int, int]:
    """Delete the events captured before `cutoff`, BATCH at a time (both backends: `events` is
    one table on each); returns (deleted, kept because their read is held).

    Events hold what reads hold: a `no_read` carries the best frame of the vehicle and, as
    `duplicate_of`, the plate already sent; an `overview` carries an image of a read. So they
    go with the reads' cutoff, by capture time. An overview of a read under an active hold
    stays (read from its payload: the link is `read_seq`, not a column). Each batch raises the
    watermark of its seqs in its transaction, under PURGE_LOCK as for reads' dedup keys, so a
    purged event is not reported as a gap. Batches walk ids upwards from where the last one
    stopped, so the held overviews kept are not looked at again.
    """
    deleted = kept = 0
    after = 0
    while True:
        # "reads_partitions" first (the lock a hold is placed under), so a hold placed now is
        # either seen by this batch or placed after its overviews are gone, as for reads.
        with db.transaction(lock="reads_partitions"), db.transaction(lock=PURGE_LOCK):
            held = _held_overviews(db)
            rows = db.rows("SELECT id, node_id, seq, event FROM events WHERE capture_ns < ? AND id > ? "
                           "ORDER BY id LIMIT ?", (cutoff, after, BATCH))
            doomed: list[int] = []
            highest: dict[str, int] = {}
            for event_id, node_id, seq, event in rows:
                if event == "overview" and held.get(node_id):
                    try:
                        payload = cbor.loads(bytes(db.value("SELECT payload FROM events WHERE id=?", (event_id,))))
                    except EncodingError:  # ingest verified and decoded it before storing: not expected
                        payload = {}
                    read_seq = payload.get("read_seq") if isinstance(payload, dict) else None
                    if isinstance(read_seq, int) and read_seq in held[node_id]:
                        kept += 1
                        continue
                doomed.append(int(event_id))
                highest[node_id] = max(int(seq), highest.get(node_id, int(seq)))
            if highest:
                raise_purge_watermarks(db, highest, cutoff)
            for i in range(0, len(doomed), 500):  # SQLite allows 999 parameters in older versions
                chunk = doomed[i:i + 500]
                db.execute(f"DELETE FROM events WHERE id IN ({','.join('?' * len(chunk))})", chunk)
        deleted += len(doomed)
        if len(rows) < BATCH:
            return deleted, kept
        after = int(rows[-1][0])


def _purge_read_keys(db: Database, cutoff: int) -> int:
    """Delete the dedup keys (read_keys) of unheld reads captured before `cutoff`, PG_KEY_BATCH
    at a time; returns how many.

    Keys of purged reads go too (read_keys stays small); the watermark takes their place. Each
    batch is its own transaction under PURGE_LOCK, which stores take shared: the keys it deletes
    and the watermark raised from exactly those keys commit together, so no store can check the
    old watermark and then re-claim a key the batch just deleted, while stores waiting on the
    lock get their turn between batches instead of waiting for the whole purge (1.5 million
    year-old keys deleted in one statement held every store up for seconds). Keys are taken in
    capture-time order from where the last batch stopped (read_keys_time), so no batch re-walks
    the index entries of the keys that earlier batches deleted.
    """
    total, batch = 0, PG_KEY_BATCH
    since = -(2**63)  # capture time of the newest key deleted so far (BIGINT's minimum: none yet)
    while True:
        with db.transaction(lock=PURGE_LOCK):
            # ctid = ANY(ARRAY(...)) is a TID scan of just this batch's rows; the ctids stay
            # valid in the statement because stores, the only other writers of read_keys,
            # wait on the lock held here and nothing updates read_keys rows.
            rows = db.rows(
                f"WITH gone AS (DELETE FROM read_keys WHERE ctid = ANY(ARRAY("
                f"SELECT ctid FROM read_keys WHERE capture_ns < ? AND capture_ns >= ? AND (node_id, seq) NOT IN "
                f"(SELECT node_id, seq FROM reads WHERE id IN ({ACTIVE_HELD})) ORDER BY capture_ns LIMIT ?)) "
                f"RETURNING node_id, seq, capture_ns) "
                f"SELECT node_id, MAX(seq), COUNT(*), MAX(capture_ns) FROM gone GROUP BY node_id",
                (cutoff, since, batch))
            raise_purge_watermarks(db, {node_id: int(seq) for node_id, seq, _, _ in rows}, cutoff)
        n = sum(int(r[2]) for r in rows)
        total += n
        if n < batch:
            return total
        # ">=", not ">": keys of the same capture time as the last one deleted may remain.
        since = max(int(r[3]) for r in rows)
