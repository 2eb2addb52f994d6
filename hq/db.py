"""One database connection for HQ, SQLite or PostgreSQL, behind a small common interface.

SQL in hq/ is written once with `?` placeholders; for PostgreSQL they become `%s`. Each
connection belongs to one thread (sqlite3's rule; we keep it for psycopg too).
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hq.errors import StoreError

SQLITE = "sqlite"
POSTGRES = "postgres"
# The largest integer both backends keep (SQLite INTEGER, PostgreSQL BIGINT): times are
# nanoseconds in it, so nothing after 2262-04-11 can be stored.
MAX_INT64 = 2**63 - 1


def is_postgres_url(target: object) -> bool:
    """True for a postgresql:// (or postgres://) URL."""
    return isinstance(target, str) and target.split("://", 1)[0] in ("postgresql", "postgres")


class Database:
    """A connection with `?` placeholders on both backends and explicit, non-nesting transactions."""

    def __init__(self, conn: Any, dialect: str, where: str) -> None:
        self._conn = conn
        self.dialect = dialect
        self.where = where  # file path or URL without password, for messages
        self._depth = 0

    @property
    def postgres(self) -> bool:
        return self.dialect == POSTGRES

    def _sql(self, sql: str) -> str:
        if self.dialect == POSTGRES:
            return sql.replace("%", "%%").replace("?", "%s")
        return sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; returns the backend's cursor."""
        if self._conn is None:
            raise StoreError(f"{self.where}: database is closed")
        return self._conn.execute(self._sql(sql), tuple(params))

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """All rows of a query."""
        return [tuple(r) for r in self.execute(sql, params).fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        """The first row of a query, or None."""
        row = self.execute(sql, params).fetchone()
        return tuple(row) if row is not None else None

    def value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row (None when no row)."""
        row = self.one(sql, params)
        return None if row is None else row[0]

    def insert(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run an INSERT ... RETURNING id and return the id."""
        return int(self.execute(sql + " RETURNING id", params).fetchone()[0])

    @contextlib.contextmanager
    def transaction(self, lock: str | None = None) -> Iterator[Database]:
        """One write transaction; inner calls join the outer one.

        `lock` names a serialisation point (e.g. "access_log"): SQLite's BEGIN IMMEDIATE
        already serialises writers; PostgreSQL takes a transaction-scoped advisory lock.
        """
        if self._depth:
            if lock and self.postgres:
                self.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (lock,))
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        self.execute("BEGIN IMMEDIATE" if self.dialect == SQLITE else "BEGIN")
        self._depth = 1
        try:
            if lock and self.postgres:
                self.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (lock,))
            yield self
        except BaseException:
            self._depth = 0
            self.execute("ROLLBACK")
            raise
        self._depth = 0
        self.execute("COMMIT")

    def close(self) -> None:
        """Close; safe to call twice."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _create_private(path: Path) -> None:
    """Create the store's folder (0700) and an empty store file (0600) if they do not exist yet.

    The store holds plates, times and places: other local users must not read it. Creating the
    file ourselves sets its mode without touching the process umask (process-wide, and ingest
    runs threads); SQLite then gives the -wal and -shm files the mode of the database file.
    Existing folders and files keep the modes an operator gave them.
    """
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{path.parent}: cannot create the store folder: {exc}") from exc
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"{path}: cannot create SQLite store: {exc}") from exc
    os.close(fd)  # an empty file is a valid, empty SQLite database


def open_sqlite(path: Path) -> Database:
    """Open (creating, mode 0600 in a 0700 folder) a SQLite file in WAL mode; new files reclaim
    space incrementally after purges."""
    path = Path(path)
    _create_private(path)
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        # auto_vacuum only takes effect on a file with no tables yet: set it first.
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        # Purged reads are overwritten on disk, not just unlinked from the b-tree.
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute("PRAGMA foreign_keys=ON")
        # 64 MiB page cache (default 2 MiB): plate and time indexes of millions of reads.
        conn.execute("PRAGMA cache_size=-65536")
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open SQLite store: {exc}") from exc
    return Database(conn, SQLITE, str(path))


# Seconds a PostgreSQL connect may take (see open_postgres).
CONNECT_TIMEOUT_S = 10


def _connect_timeout(url: str) -> dict[str, int]:
    """connect_timeout=10 unless the URL (parsed, not searched) or PGCONNECT_TIMEOUT sets one."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
    try:
        given = "connect_timeout" in conninfo_to_dict(url)
    except psycopg.Error:  # a URL psycopg cannot parse: connect() refuses it, naming the problem
        given = False
    return {} if given or os.environ.get("PGCONNECT_TIMEOUT") else {"connect_timeout": CONNECT_TIMEOUT_S}


def open_postgres(url: str) -> Database:
    """Connect to PostgreSQL (psycopg 3, the `postgres` extra), autocommit outside `transaction()`."""
    try:
        import psycopg  # optional dependency: only HQs that use PostgreSQL need it
    except ImportError as exc:
        raise StoreError("store.url is PostgreSQL but psycopg is not installed: pip install 'psycopg[binary]'") from exc
    shown = url.split("@", 1)[-1] if "@" in url else url
    try:
        # Bounded: ingest opens the store on its MQTT link's thread, and a connect hanging on an
        # unreachable server longer than the keepalive had the broker drop the worker, which then
        # reconnected (a new generation, nodes resending) every couple of minutes. A
        # connect_timeout in the URL, or PGCONNECT_TIMEOUT, wins.
        conn = psycopg.connect(url, autocommit=True, **_connect_timeout(url))
    except psycopg.Error as exc:
        raise StoreError(f"store.url {shown}: cannot connect to PostgreSQL: {exc}") from exc
    return Database(conn, POSTGRES, shown)
