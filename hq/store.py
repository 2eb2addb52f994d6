"""HQ's read store (SQLite by default): verified reads and events, exactly once per (node, seq).

Each read keeps the exact bytes the node signed (header, payload, signature), so evidence
exports can prove, offline, that a read is what the node saw; the searchable fields are
copied into columns beside them.
"""
from __future__ import annotations

import hashlib
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from transport.envelope import Opened

SCHEMA = """
CREATE TABLE IF NOT EXISTS reads (
    id INTEGER PRIMARY KEY,
    node_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    plate TEXT NOT NULL,
    confidence INTEGER NOT NULL,
    region TEXT,
    capture_ns INTEGER NOT NULL,
    stored_ns INTEGER NOT NULL,
    site_id TEXT NOT NULL,
    camera_id TEXT NOT NULL,
    direction TEXT,
    trigger_source TEXT,
    lane TEXT,
    payload_sha256 BLOB NOT NULL,
    header BLOB NOT NULL,
    payload BLOB NOT NULL,
    signature BLOB NOT NULL,
    UNIQUE (node_id, seq)
);
CREATE INDEX IF NOT EXISTS reads_plate_time ON reads (plate, capture_ns);
CREATE INDEX IF NOT EXISTS reads_time ON reads (capture_ns);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    node_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    capture_ns INTEGER NOT NULL,
    stored_ns INTEGER NOT NULL,
    payload_sha256 BLOB NOT NULL,
    header BLOB NOT NULL,
    payload BLOB NOT NULL,
    signature BLOB NOT NULL,
    UNIQUE (node_id, seq)
);
CREATE TABLE IF NOT EXISTS seq_conflicts (
    id INTEGER PRIMARY KEY,
    node_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    stored_ns INTEGER NOT NULL,
    header BLOB NOT NULL,
    payload BLOB NOT NULL,
    signature BLOB NOT NULL
);
"""


@dataclass(frozen=True)
class StoreResult:
    """What happened to one message: stored new, duplicate of one stored, or a conflict kept aside."""

    node_id: str
    seq: int
    outcome: str  # "stored" | "duplicate" | "conflict"


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


class ReadStore:
    """SQLite read store. One instance per thread."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        """Close; safe to call twice."""
        if self._db is not None:
            self._db.close()
            self._db = None  # type: ignore[assignment]

    def store(self, batch: Iterable[Opened]) -> list[StoreResult]:
        """Store verified messages in one transaction; a (node, seq) already stored is not stored again.

        A message whose (node, seq) is stored with *different* content is not a resend: it
        is kept in seq_conflicts so it is never silently lost, and reported.
        """
        results = []
        now = time.time_ns()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for opened in batch:
                results.append(self._store_one(opened, now))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return results

    def _store_one(self, opened: Opened, now: int) -> StoreResult:
        h, p = opened.header, opened.payload
        digest = hashlib.sha256(opened.payload_bytes).digest()
        table = "events" if h.kind == "event" else "reads"
        existing = self._db.execute(f"SELECT payload_sha256 FROM {table} WHERE node_id=? AND seq=?",
                                    (h.node_id, h.seq)).fetchone()
        if existing is not None:
            if existing[0] == digest:
                return StoreResult(h.node_id, h.seq, "duplicate")
            self._db.execute("INSERT INTO seq_conflicts (node_id, seq, stored_ns, header, payload, signature) "
                             "VALUES (?,?,?,?,?,?)", (h.node_id, h.seq, now, opened.header_bytes,
                                                      opened.payload_bytes, opened.signature))
            return StoreResult(h.node_id, h.seq, "conflict")
        if table == "events":
            self._db.execute(
                "INSERT INTO events (node_id, seq, event, capture_ns, stored_ns, payload_sha256, header, payload, "
                "signature) VALUES (?,?,?,?,?,?,?,?,?)",
                (h.node_id, h.seq, str(p.get("event", "")), int(p.get("t_ns", h.time_ns)), now, digest,
                 opened.header_bytes, opened.payload_bytes, opened.signature))
        else:
            self._db.execute(
                "INSERT INTO reads (node_id, seq, kind, plate, confidence, region, capture_ns, stored_ns, site_id, "
                "camera_id, direction, trigger_source, lane, payload_sha256, header, payload, signature) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (h.node_id, h.seq, h.kind, p["plate"], p["conf"], p.get("region"), p["t_ns"], now, p["site"],
                 p["camera"], p.get("dir"), p.get("trigger"), p.get("lane"), digest, opened.header_bytes,
                 opened.payload_bytes, opened.signature))
        return StoreResult(h.node_id, h.seq, "stored")

    def reads_after(self, last_id: int, limit: int = 1000) -> list[ReadRow]:
        """Reads stored after row id `last_id`, oldest first (for `reads tail`)."""
        rows = self._db.execute(
            "SELECT id, node_id, seq, kind, plate, confidence, region, capture_ns, stored_ns, site_id, camera_id, "
            "direction FROM reads WHERE id > ? ORDER BY id LIMIT ?", (last_id, limit)).fetchall()
        return [ReadRow(*r[:5], r[5] / 10000, *r[6:]) for r in rows]

    def count(self, node_id: str | None = None) -> int:
        """How many reads are stored (for one node, or all)."""
        if node_id is None:
            return self._db.execute("SELECT COUNT(*) FROM reads").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM reads WHERE node_id=?", (node_id,)).fetchone()[0]

    def seqs(self, node_id: str, table: str = "reads") -> list[int]:
        """Every stored sequence number of a node, ascending (for exactly-once checks and gap reports)."""
        if table not in ("reads", "events"):
            raise ValueError(table)
        return [r[0] for r in self._db.execute(f"SELECT seq FROM {table} WHERE node_id=? ORDER BY seq", (node_id,))]

    def duplicate_count(self) -> int:
        """(node, seq) pairs stored more than once: always 0 thanks to the UNIQUE constraint; checked by tests."""
        return self._db.execute(
            "SELECT COUNT(*) FROM (SELECT node_id, seq FROM reads GROUP BY node_id, seq HAVING COUNT(*) > 1)"
        ).fetchone()[0]

    def conflicts(self) -> int:
        """Messages kept aside because their (node, seq) was stored with other content."""
        return self._db.execute("SELECT COUNT(*) FROM seq_conflicts").fetchone()[0]
