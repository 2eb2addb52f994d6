"""HQ's read store (SQLite by default, PostgreSQL for larger departments): verified reads and
events, exactly once per (node, seq).

Each read keeps the exact bytes the node signed (header, payload, signature), so evidence
exports can prove, offline, that a read is what the node saw; the searchable fields are
copied into columns beside them (with the plate's normal form and OCR-confusable skeleton,
see hq.plates). The schema is versioned (hq.migrations) and brought up to date at open.
On PostgreSQL reads are partitioned by month of capture time (hq.partitions).
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hq import migrations, partitions, plates
from hq.db import Database, is_postgres_url, open_postgres, open_sqlite
from hq.errors import NotFound
from transport.envelope import Opened

# Retention purges take this lock (exclusive) while they delete dedup records and raise the
# purge watermarks; PostgreSQL stores take it shared, so a store never checks a watermark that a
# purge is about to raise and then claims a key that purge has just deleted (SQLite's BEGIN
# IMMEDIATE already serialises the two).
PURGE_LOCK = migrations.PURGE_WATERMARKS

READ_COLUMNS = ("id, node_id, seq, kind, plate, confidence, region, capture_ns, stored_ns, site_id, camera_id, "
                "direction")


@dataclass(frozen=True)
class StoreResult:
    """What happened to one message: stored new, duplicate of one stored, a conflict kept aside,
    or purged: a read at or below its node's purge watermark that is no longer in the store (it
    was stored and purged, or is older than retention anyway), acknowledged but not stored."""

    node_id: str
    seq: int
    outcome: str  # "stored" | "duplicate" | "conflict" | "purged"
    # For a conflict: False when this very content was kept in seq_conflicts before (a resend
    # or a replay of a captured copy): nothing was added, the message is acknowledged again.
    new: bool = True


@dataclass(frozen=True)
class ReadRow:
    """A stored read, as `reads tail` and search print it."""

    id: int
    node_id: str
    seq: int
    kind: str
    plate: str
    confidence: float
    region: str | None
    capture_ns: int
    stored_ns: int
    site_id: str
    camera_id: str
    direction: str | None


@dataclass(frozen=True)
class NodeState:
    """A node's latest heartbeat (JSON text, as it sent it) and status, with when HQ received each."""

    node_id: str
    health: str | None
    health_ns: int | None
    status: str | None
    status_ns: int | None


class ReadStore:
    """The read store. One instance per thread (its connection belongs to the thread that opened it).

    `ReadStore(path)` opens a SQLite file; `ReadStore(database)` wraps an open Database
    (see `open_store` for the configuration-driven choice).
    """

    def __init__(self, target: Path | str | Database) -> None:
        if isinstance(target, Database):
            self.db = target
        elif is_postgres_url(target):
            self.db = open_postgres(str(target))
        else:
            self.path = Path(target)
            self.db = open_sqlite(self.path)
        self._months: set[partitions.Month] = set()
        try:
            migrations.migrate(self.db)
        except BaseException:
            self.db.close()
            raise

    @property
    def _db(self) -> Any:  # the raw connection, for callers and tests written against SQLite
        return self.db._conn

    def close(self) -> None:
        """Close; safe to call twice."""
        self.db.close()

    def store(self, batch: Iterable[Opened]) -> list[StoreResult]:
        """Store verified messages in one transaction; a (node, seq) already stored is not stored again.

        A message whose (node, seq) is stored with *different* content is not a resend: it
        is kept in seq_conflicts so it is never silently lost, and reported. A read that is not
        in the store but at or below its node's purge watermark is `purged`: not stored again.
        """
        batch = list(batch)
        reads = [o for o in batch if o.header.kind != "event"]
        if self.db.postgres:
            months = {partitions.Month.of_ns(int(o.payload["t_ns"])) for o in reads}
            partitions.ensure_partitions(self.db, months, self._months)
        now = time.time_ns()
        with self.db.transaction():
            if self.db.postgres:
                if batch:
                    # reads and events alike: both are purged, and a resend read against the
                    # watermark before a purge commits would be stored again after it
                    self.db.execute("SELECT pg_advisory_xact_lock_shared(hashtext(?))", (PURGE_LOCK,))
                return self._store_batch_postgres(batch, now)
            return [self._store_one(opened, now) for opened in batch]

    def _store_batch_postgres(self, batch: list[Opened], now: int) -> list[StoreResult]:
        """The same outcomes as `_store_one` per message, in three round trips for the reads:
        claim all keys at once, insert the new reads in a pipeline, fetch digests of the rest."""
        results: list[StoreResult | None] = [None] * len(batch)
        reads = []
        for i, opened in enumerate(batch):
            if opened.header.kind == "event":
                results[i] = self._store_one(opened, now)
            else:
                reads.append((i, opened, hashlib.sha256(opened.payload_bytes).digest()))
        if not reads:
            return results  # type: ignore[return-value]
        marks = {r[0]: (int(r[1]), int(r[2])) for r in self.db.rows(
            f"SELECT node_id, seq, cutoff_ns FROM {migrations.PURGE_WATERMARKS} WHERE node_id = ANY(?::text[])",
            (sorted({o.header.node_id for _, o, _ in reads}),))}
        # A key at or below its watermark is never claimed: if read_keys lacks it, it was purged.
        claimable = [r for r in reads if not _below_mark(marks, r[1])]
        claimed = {(r[0], r[1]) for r in self.db.rows(
            "INSERT INTO read_keys (node_id, seq, payload_sha256, capture_ns) "
            "SELECT * FROM unnest(?::text[], ?::bigint[], ?::bytea[], ?::bigint[]) ON CONFLICT DO NOTHING "
            "RETURNING node_id, seq",
            ([o.header.node_id for _, o, _ in claimable], [o.header.seq for _, o, _ in claimable],
             [d for _, _, d in claimable], [int(o.payload["t_ns"]) for _, o, _ in claimable]))} if claimable else set()
        owner: dict[tuple[str, int], int] = {}  # the first claimable read of each key stores it
        for i, opened, _ in claimable:
            owner.setdefault((opened.header.node_id, opened.header.seq), i)
        digests: dict[tuple[str, int], bytes] = {}  # what is stored for each key, once known
        rows = []
        for i, opened, digest in reads:
            h, p = opened.header, opened.payload
            key = (h.node_id, h.seq)
            if key in claimed and owner[key] >= i:
                if owner[key] > i:
                    # Below the watermark, ahead of the read that claims its key in this batch:
                    # the key was not there before, so, as on SQLite, it was purged.
                    results[i] = StoreResult(h.node_id, h.seq, "purged")
                    continue
                digests[key] = digest
                rows.append((h.node_id, h.seq, h.kind, p["plate"], plates.normalize(p["plate"]),
                             plates.skeleton(p["plate"]), p["conf"], p.get("region"), p["t_ns"], now, p["site"],
                             p["camera"], p.get("dir"), p.get("trigger"), p.get("lane"), digest,
                             opened.header_bytes, opened.payload_bytes, opened.signature))
                results[i] = StoreResult(h.node_id, h.seq, "stored")
                continue
            if key not in digests:
                known = self.db.value("SELECT payload_sha256 FROM read_keys WHERE node_id=? AND seq=?", key)
                if known is None:  # not claimed (below the watermark) and not there: purged
                    results[i] = StoreResult(h.node_id, h.seq, "purged")
                    continue
                digests[key] = bytes(known)
            if digests[key] == digest:
                results[i] = StoreResult(h.node_id, h.seq, "duplicate")
            else:
                # Conflicts are rare: one statement each tells which copies were new.
                results[i] = self._keep_conflict(opened, digest, now)
        if rows:
            self.db._conn.cursor().executemany(
                "INSERT INTO reads (node_id, seq, kind, plate, plate_norm, plate_skel, confidence, region, capture_ns, "
                "stored_ns, site_id, camera_id, direction, trigger_source, lane, payload_sha256, header, payload, "
                "signature) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", rows)
        return results  # type: ignore[return-value]

    def _store_one(self, opened: Opened, now: int) -> StoreResult:
        h, p = opened.header, opened.payload
        digest = hashlib.sha256(opened.payload_bytes).digest()
        db = self.db
        event_row = None
        if h.kind == "event":
            event_row = (h.node_id, h.seq, str(p.get("event", "")), int(p.get("t_ns", h.time_ns)), now, digest,
                         opened.header_bytes, opened.payload_bytes, opened.signature)
        if h.kind == "event" and self._below_watermark(opened) and db.value(
                "SELECT 1 FROM events WHERE node_id=? AND seq=?", (h.node_id, h.seq)) is None:
            # Events are purged with the reads' cutoff (hq.retention): a late resend of one is not
            # stored again, as a read's is not.
            return StoreResult(h.node_id, h.seq, "purged")
        if h.kind == "event" and db.postgres:
            # Two workers can get the same resend at once: let the unique key decide, not a SELECT.
            inserted = db.execute(
                "INSERT INTO events (node_id, seq, event, capture_ns, stored_ns, payload_sha256, header, payload, "
                "signature) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING", event_row).rowcount
            if inserted:
                return StoreResult(h.node_id, h.seq, "stored")
            existing = db.value("SELECT payload_sha256 FROM events WHERE node_id=? AND seq=?", (h.node_id, h.seq))
        elif h.kind == "event":
            existing = db.value("SELECT payload_sha256 FROM events WHERE node_id=? AND seq=?", (h.node_id, h.seq))
        elif db.postgres:
            if self._below_watermark(opened):  # never claim a purged key: look, do not insert
                existing = db.value("SELECT payload_sha256 FROM read_keys WHERE node_id=? AND seq=?",
                                    (h.node_id, h.seq))
                if existing is None:
                    return StoreResult(h.node_id, h.seq, "purged")
            else:
                inserted = db.execute("INSERT INTO read_keys (node_id, seq, payload_sha256, capture_ns) "
                                      "VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
                                      (h.node_id, h.seq, digest, p["t_ns"])).rowcount
                existing = None if inserted else db.value(
                    "SELECT payload_sha256 FROM read_keys WHERE node_id=? AND seq=?", (h.node_id, h.seq))
        else:
            existing = db.value("SELECT payload_sha256 FROM reads WHERE node_id=? AND seq=?", (h.node_id, h.seq))
            if existing is None and self._below_watermark(opened):
                return StoreResult(h.node_id, h.seq, "purged")
        if existing is not None:
            if bytes(existing) == digest:
                return StoreResult(h.node_id, h.seq, "duplicate")
            return self._keep_conflict(opened, digest, now)
        if h.kind == "event":
            db.execute(
                "INSERT INTO events (node_id, seq, event, capture_ns, stored_ns, payload_sha256, header, payload, "
                "signature) VALUES (?,?,?,?,?,?,?,?,?)", event_row)
        else:
            db.execute(
                "INSERT INTO reads (node_id, seq, kind, plate, plate_norm, plate_skel, confidence, region, capture_ns, "
                "stored_ns, site_id, camera_id, direction, trigger_source, lane, payload_sha256, header, payload, "
                "signature) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (h.node_id, h.seq, h.kind, p["plate"], plates.normalize(p["plate"]), plates.skeleton(p["plate"]),
                 p["conf"], p.get("region"), p["t_ns"], now, p["site"], p["camera"], p.get("dir"), p.get("trigger"),
                 p.get("lane"), digest, opened.header_bytes, opened.payload_bytes, opened.signature))
        return StoreResult(h.node_id, h.seq, "stored")

    def _keep_conflict(self, opened: Opened, digest: bytes, now: int) -> StoreResult:
        """Keep a message whose (node, seq) is stored with other content, once per content: the
        unique (node_id, seq, payload_sha256) turns every further copy into no row at all."""
        h = opened.header
        added = self.db.execute(
            "INSERT INTO seq_conflicts (node_id, seq, stored_ns, payload_sha256, header, payload, signature) "
            "VALUES (?,?,?,?,?,?,?) ON CONFLICT (node_id, seq, payload_sha256) DO NOTHING",
            (h.node_id, h.seq, now, digest, opened.header_bytes, opened.payload_bytes, opened.signature)).rowcount
        return StoreResult(h.node_id, h.seq, "conflict", new=bool(added))

    def _below_watermark(self, opened: Opened) -> bool:
        """True when a read's (seq, capture time) is at or below its node's purge watermark."""
        row = self.db.one(f"SELECT seq, cutoff_ns FROM {migrations.PURGE_WATERMARKS} WHERE node_id=?",
                          (opened.header.node_id,))
        return row is not None and _below_mark({opened.header.node_id: (int(row[0]), int(row[1]))}, opened)

    def reads_after(self, last_id: int, limit: int = 1000) -> list[ReadRow]:
        """Reads stored after row id `last_id`, oldest first (for `reads tail`)."""
        rows = self.db.rows(f"SELECT {READ_COLUMNS} FROM reads WHERE id > ? ORDER BY id LIMIT ?", (last_id, limit))
        return [row_from_db(r) for r in rows]

    def last_id(self) -> int:
        """The newest read's row id (0 when the store has no reads): one indexed lookup, no rows loaded."""
        return int(self.db.value("SELECT COALESCE(MAX(id), 0) FROM reads"))

    def count(self, node_id: str | None = None) -> int:
        """How many reads are stored (for one node, or all)."""
        if node_id is None:
            return int(self.db.value("SELECT COUNT(*) FROM reads"))
        return int(self.db.value("SELECT COUNT(*) FROM reads WHERE node_id=?", (node_id,)))

    def seqs(self, node_id: str, table: str = "reads") -> list[int]:
        """Every stored sequence number of a node, ascending (for exactly-once checks and gap reports)."""
        if table not in ("reads", "events"):
            raise ValueError(table)
        return [r[0] for r in self.db.rows(f"SELECT seq FROM {table} WHERE node_id=? ORDER BY seq", (node_id,))]

    def sequence_gaps(self, node_id: str, max_runs: int = 50) -> tuple[int, int, list[tuple[int, int]]]:
        """(last seq stored, how many seqs are missing, the first `max_runs` missing runs) of a
        node's reads and events, counted above its purge watermark: what retention removed is
        not missing. Worked out in SQL (a year of a busy node is millions of seqs)."""
        mark = self.db.value(f"SELECT seq FROM {migrations.PURGE_WATERMARKS} WHERE node_id=?", (node_id,))
        floor = int(mark or 0)
        seqs = ("SELECT seq FROM reads WHERE node_id=? AND seq > ? UNION "
                "SELECT seq FROM events WHERE node_id=? AND seq > ?")
        params = (node_id, floor, node_id, floor)
        last, count = self.db.one(f"SELECT COALESCE(MAX(seq), 0), COUNT(*) FROM ({seqs}) s", params)
        last, count = int(last), int(count)
        if not count:
            return max(last, floor), 0, []
        runs = [(int(a), int(b)) for a, b in self.db.rows(
            f"SELECT prev + 1, seq - 1 FROM (SELECT seq, COALESCE(LAG(seq) OVER (ORDER BY seq), ?) AS prev "
            f"FROM ({seqs}) s) g WHERE seq > prev + 1 ORDER BY seq LIMIT ?", (floor, *params, max_runs))]
        return last, last - floor - count, runs

    def duplicate_count(self) -> int:
        """(node, seq) pairs stored more than once: always 0 (UNIQUE / read_keys); checked by tests."""
        return int(self.db.value(
            "SELECT COUNT(*) FROM (SELECT node_id, seq FROM reads GROUP BY node_id, seq HAVING COUNT(*) > 1) d"))

    def conflicts(self) -> int:
        """Messages kept aside because their (node, seq) was stored with other content (each content once)."""
        return int(self.db.value("SELECT COUNT(*) FROM seq_conflicts"))

    def note_node_states(self, states: Iterable[tuple[str, str, str, int]]) -> None:
        """Record (node, leaf, text, received_ns) for leaf "health" or "status"; a later one
        replaces an earlier one, an older one (delivered late) does not replace a newer."""
        with self.db.transaction():
            for node_id, leaf, text, received_ns in states:
                if leaf not in ("health", "status"):
                    raise ValueError(f"node state leaf {leaf!r}: must be 'health' or 'status'")
                self.db.execute(
                    f"INSERT INTO {migrations.NODE_HEALTH} (node_id, {leaf}, {leaf}_ns) VALUES (?,?,?) "
                    f"ON CONFLICT (node_id) DO UPDATE SET {leaf} = excluded.{leaf}, {leaf}_ns = excluded.{leaf}_ns "
                    f"WHERE {migrations.NODE_HEALTH}.{leaf}_ns IS NULL OR {migrations.NODE_HEALTH}.{leaf}_ns <= excluded.{leaf}_ns",
                    (node_id, text, int(received_ns)))

    def node_health(self, node_id: str) -> str | None:
        """The latest heartbeat (JSON text) recorded for one node, by any worker; None if none."""
        row = self.db.one(f"SELECT health FROM {migrations.NODE_HEALTH} WHERE node_id=?", (node_id,))
        return None if row is None or row[0] is None else str(row[0])

    def node_states(self) -> dict[str, NodeState]:
        """Every node's latest heartbeat and status as HQ received them."""
        return {str(r[0]): NodeState(str(r[0]), r[1], None if r[2] is None else int(r[2]), r[3],
                                     None if r[4] is None else int(r[4]))
                for r in self.db.rows(f"SELECT node_id, health, health_ns, status, status_ns FROM {migrations.NODE_HEALTH}")}

    def read(self, read_id: int) -> StoredRead:
        """One read with the exact bytes its node signed; NotFound if absent (or purged)."""
        row = self.db.one(f"SELECT {READ_COLUMNS}, header, payload, signature, payload_sha256 FROM reads WHERE id=?",
                          (read_id,))
        if row is None:
            raise NotFound(f"read {read_id}: not in the store (never stored, or purged)")
        return StoredRead(row_from_db(row[:12]), bytes(row[12]), bytes(row[13]), bytes(row[14]), bytes(row[15]))


def _below_mark(marks: dict[str, tuple[int, int]], opened: Opened) -> bool:
    """At or below the node's highest purged seq *and* captured before the latest cutoff of a
    purge of its reads: only then can it be a purged read (a purge deletes reads captured before
    its cutoff). A read of a lower seq captured later (a node clock that jumped) was never purged."""
    mark = marks.get(opened.header.node_id)
    return mark is not None and opened.header.seq <= mark[0] and int(opened.payload["t_ns"]) < mark[1]


def raise_purge_watermarks(db: Database, highest: dict[str, int], cutoff_ns: int) -> None:
    """Record that reads up to `highest[node]` captured before `cutoff_ns` were purged; marks only
    ever rise. Call it in the transaction that deletes those reads' dedup records, under PURGE_LOCK."""
    greatest = "GREATEST" if db.postgres else "MAX"
    now = time.time_ns()
    for node_id, seq in sorted(highest.items()):
        db.execute(f"INSERT INTO {migrations.PURGE_WATERMARKS} (node_id, seq, cutoff_ns, updated_ns) "
                   f"VALUES (?,?,?,?) ON CONFLICT (node_id) DO UPDATE SET "
                   f"seq = {greatest}({migrations.PURGE_WATERMARKS}.seq, excluded.seq), "
                   f"cutoff_ns = {greatest}({migrations.PURGE_WATERMARKS}.cutoff_ns, excluded.cutoff_ns), "
                   f"updated_ns = excluded.updated_ns", (node_id, int(seq), int(cutoff_ns), now))


@dataclass(frozen=True)
class StoredRead:
    """A read and the node's original signed bytes."""

    row: ReadRow
    header: bytes
    payload: bytes
    signature: bytes
    payload_sha256: bytes

    def crop_jpeg(self) -> bytes:
        """The plate crop the node sent (JPEG bytes; empty if none)."""
        from transport import cbor

        return bytes(cbor.loads(self.payload).get("crop") or b"")


def row_from_db(r: tuple) -> ReadRow:
    """A ReadRow from the READ_COLUMNS of a query."""
    return ReadRow(*r[:5], r[5] / 10000, *r[6:12])


def open_store(config_or_path: Any) -> ReadStore:
    """The store HQ is configured for: an HQConfig (store.url → PostgreSQL, else store.path or
    data_dir/hq.db), a postgresql:// URL, or a SQLite path."""
    from hq.config import HQConfig

    if isinstance(config_or_path, HQConfig):
        cfg = config_or_path
        if cfg.store.url:
            return ReadStore(open_postgres(cfg.store.url))
        return ReadStore(cfg.path(cfg.store.path, "hq.db"))
    return ReadStore(config_or_path)
