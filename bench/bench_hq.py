"""Figures for the HQ records system (not a test): ingest rate, plate-search latency on a large
store, and the time to purge a month of reads, for SQLite and PostgreSQL.

    .venv/bin/python bench/bench_hq.py [--reads 1000000] [--ingest 50000] [--backend both]
                                       [--pg-url postgresql://...]

How it measures:
- ingest: `ReadStore.store(batch)` of 500 signed synthetic reads per call (what ingest does per
  MQTT burst), `--ingest` reads with `--crop-bytes` crops; reads/s over the whole run.
- the large store: filled to `--reads` reads with a bulk insert of the same columns (executemany
  / COPY; faster than store(), which is measured above), capture times spread over 13 months,
  plates drawn from a pool of reads/4 plates (so plates repeat), ~1 KB payload per read.
- search: `hq.search.run_search` (the query the CLI runs, without the access log), median of 5
  runs after one warm-up, for exact, prefix, inner-wildcard, leading-wildcard and confusable
  queries, over all time and over 30 days.
- purge: `retention.purge` with a minimum that makes exactly the oldest month expire.
If no --pg-url is given, a throwaway PostgreSQL server is started (as user postgres when root).
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import pwd
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hq import partitions, plates, retention
from hq.access import SYSTEM, Access
from hq.search import SearchQuery, run_search
from hq.store import ReadStore
from hq.synthetic import SyntheticNode, random_plate

DAY = 86400 * 10**9
QUERIES = [
    ("exact", {"plate": "7ABC123"}),
    ("prefix 7AB*", {"plate": "7AB*"}),
    ("inner 7AB?12*", {"plate": "7AB?12*"}),
    ("leading *12?4", {"plate": "*12?4"}),
    ("confusable exact", {"plate": "7ABC123", "confusable": True}),
    ("confusable 7AB?12*", {"plate": "7AB?12*", "confusable": True}),
]


def start_postgres() -> tuple[str, callable]:
    """A throwaway server; returns (url, stop)."""
    import glob

    import psycopg

    initdb = shutil.which("initdb") or max(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    bin_dir = Path(initdb).resolve().parent  # /usr/local/bin may hold symlinks to the real bin dir
    root = Path(tempfile.mkdtemp(prefix="alpr-bench-pg-"))
    as_user = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    os.chmod(root, 0o755)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"
    subprocess.run(as_user + [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E",
                              "UTF8", "--locale=C"], check=True, capture_output=True)
    # Durable settings (fsync on): ingest figures must mean something.
    opts = f"-p {port} -k {root} -c listen_addresses='' -c shared_buffers=1GB -c max_wal_size=4GB"
    subprocess.run(as_user + [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-o", opts, "-w",
                              "start"], check=True, capture_output=True)

    def stop() -> None:
        subprocess.run(as_user + [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)
    try:
        with psycopg.connect(f"host={root} port={port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
    except BaseException:
        stop()
        raise
    return f"postgresql://postgres@/bench?host={root}&port={port}", stop


def bench_ingest(store: ReadStore, n: int, crop_bytes: int, now_ns: int) -> float:
    node = SyntheticNode.create("bench-ingest", "site-0")
    rng = random.Random(1)
    crop = os.urandom(crop_bytes)
    opened = [node.read(i + 1, random_plate(rng), now_ns - rng.randrange(30 * DAY), crop=crop) for i in range(n)]
    start = time.perf_counter()
    for i in range(0, n, 500):
        store.store(opened[i:i + 500])
    return n / (time.perf_counter() - start)


def bulk_rows(n: int, now_ns: int, seed: int = 7):
    """Rows for the bulk fill (same columns as store())."""
    rng = random.Random(seed)
    pool = [random_plate(rng) for _ in range(max(1, n // 4))]
    pool[0] = "7ABC123"
    payload = os.urandom(1000)
    digest = hashlib.sha256(payload).digest()
    span = 395 * DAY
    for i in range(n):
        plate = pool[min(int(rng.paretovariate(1.2)) - 1, len(pool) - 1)] if i % 3 == 0 else rng.choice(pool)
        t = now_ns - rng.randrange(span)
        yield (f"bulk-node-{i % 50}", i, "read", plate, plates.normalize(plate), plates.skeleton(plate), 9000,
               None, t, t, f"site-{i % 20}", "cam-1", "approaching", "loop", None, digest, b"h" * 90, payload,
               b"s" * 64)


COLS = ("node_id, seq, kind, plate, plate_norm, plate_skel, confidence, region, capture_ns, stored_ns, site_id, "
        "camera_id, direction, trigger_source, lane, payload_sha256, header, payload, signature")


def fill(store: ReadStore, n: int, now_ns: int) -> float:
    start = time.perf_counter()
    db = store.db
    if db.postgres:
        months = {partitions.Month.of_ns(now_ns - d * DAY) for d in range(400)}
        partitions.ensure_partitions(db, months, store._months)
        conn = db._conn
        with conn.cursor() as cur, cur.copy(f"COPY reads ({COLS}) FROM STDIN") as copy:
            for row in bulk_rows(n, now_ns):
                copy.write_row(row)
        db.execute("VACUUM ANALYZE reads")  # what autovacuum does after a load: enables index-only scans
    else:
        sql = f"INSERT INTO reads ({COLS}) VALUES ({','.join('?' * 19)})"
        rows = bulk_rows(n, now_ns)
        while True:
            chunk = [r for _, r in zip(range(50_000), rows)]
            if not chunk:
                break
            with db.transaction():
                db._conn.executemany(sql, chunk)
        db.execute("ANALYZE")
    return time.perf_counter() - start


def bench_search(store: ReadStore, now_ns: int) -> list[tuple[str, str, float, int]]:
    from hq.search import build_sql

    out = []
    for label, kwargs in QUERIES:
        for span_label, since in (("all time", None), ("30 days", now_ns - 30 * DAY)):
            q = SearchQuery(since_ns=since, limit=500, **kwargs).checked()
            run_search(store, q)
            times, hits = [], 0
            for _ in range(5):
                t = time.perf_counter()
                hits = len(run_search(store, q))
                times.append(time.perf_counter() - t)
            out.append((label, span_label, statistics.median(times) * 1000, hits))
            if os.environ.get("BENCH_PLAN"):
                sql, params = build_sql(q, store.db.postgres)
                explain = "EXPLAIN " if store.db.postgres else "EXPLAIN QUERY PLAN "
                print("   ", [r[-1] for r in store.db.rows(explain + sql, params)][:12])
    return out


def bench_purge(store: ReadStore, now_ns: int) -> tuple[retention.PurgeResult, int]:
    oldest = store.db.value("SELECT MIN(capture_ns) FROM reads")
    month = partitions.Month.of_ns(oldest)
    in_month = store.db.value("SELECT COUNT(*) FROM reads WHERE capture_ns >= ? AND capture_ns < ?",
                              (month.start_ns, month.end_ns))
    # The smallest minimum that makes exactly the oldest month expire.
    days = (now_ns - month.next().start_ns) // DAY
    access = Access(store.db)
    result = retention.purge(store, access, SYSTEM, min_days=int(days), now_ns=now_ns)
    return result, in_month


def run(backend: str, target, args, now_ns: int) -> None:
    print(f"\n== {backend} ==", flush=True)
    store = ReadStore(target)
    rate = bench_ingest(store, args.ingest, args.crop_bytes, now_ns)
    print(f"ingest: {rate:,.0f} reads/s  (store() batches of 500, {args.ingest:,} reads, {args.crop_bytes} B crops)",
          flush=True)
    seconds = fill(store, args.reads, now_ns)
    total = store.count()
    print(f"bulk fill: {args.reads:,} reads in {seconds:.1f} s ({args.reads / seconds:,.0f}/s); store holds {total:,}",
          flush=True)
    for label, span, ms, hits in bench_search(store, now_ns):
        print(f"search {label:<20} {span:<9} {ms:8.1f} ms  ({hits} hits, limit 500)", flush=True)
    result, in_month = bench_purge(store, now_ns)
    print(f"purge oldest month: {result.reads_deleted:,} reads ({in_month:,} in the month) in {result.seconds:.2f} s, "
          f"{result.partitions_dropped} partition(s) dropped", flush=True)
    store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=1_000_000, help="size of the large store")
    parser.add_argument("--ingest", type=int, default=50_000, help="reads measured through store()")
    parser.add_argument("--crop-bytes", type=int, default=8000)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--pg-url")
    parser.add_argument("--dir", type=Path, help="where the SQLite file goes (default a temp dir)")
    args = parser.parse_args()
    now_ns = int(dt.datetime(2026, 11, 15, tzinfo=dt.UTC).timestamp()) * 10**9
    print(f"bench_hq: {os.cpu_count()} CPUs, reads={args.reads:,}, python {sys.version.split()[0]}")
    if args.backend in ("sqlite", "both"):
        work = args.dir or Path(tempfile.mkdtemp(prefix="alpr-bench-"))
        try:
            run("sqlite", work / "bench.db", args, now_ns)
            print(f"sqlite file: {sum(p.stat().st_size for p in work.glob('bench.db*')) / 1e9:.2f} GB")
        finally:
            if args.dir is None:
                shutil.rmtree(work, ignore_errors=True)
    if args.backend in ("postgres", "both"):
        url, stop = (args.pg_url, lambda: None) if args.pg_url else start_postgres()
        try:
            run("postgres", url, args, now_ns)
        finally:
            stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
