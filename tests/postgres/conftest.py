"""A real PostgreSQL server for the postgres tier, started by the tests on a free port.

initdb and pg_ctl refuse to run as root, and CI runs as root: then the server runs as the
`postgres` system user (runuser) in a temporary directory it owns, with its unix socket in
that directory. Missing binaries FAIL the tests (they are never skipped): install them with
`apt-get install postgresql`.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest


def _pg_bin() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent  # pg_ctl sits next to the real initdb
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not candidates:
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql", pytrace=False)
    return Path(candidates[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pg_server():
    """(socket dir, port) of a PostgreSQL server that lives for the test session."""
    bin_dir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="alpr-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root and there is no `postgres` user to run the server: "
                        "apt-get install postgresql (it creates the user)", pytrace=False)
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    os.chmod(root, 0o755)
    data, port = root / "data", _free_port()
    subprocess.run(as_user + [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                              "--no-sync", "-E", "UTF8", "--locale=C"], check=True, capture_output=True)
    opts = f"-p {port} -k {root} -c listen_addresses='' -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
    start = subprocess.run(as_user + [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-o", opts,
                                      "-w", "-t", "60", "start"], capture_output=True, text=True, check=False)
    if start.returncode != 0:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        pytest.fail(f"PostgreSQL did not start: {start.stderr}\n{log}", pytrace=False)
    try:
        yield root, port
    finally:
        subprocess.run(as_user + [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server):
    """A fresh, empty database on the session's server, as a postgresql:// URL."""
    import psycopg

    root, port = pg_server
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(f"host={root} port={port} user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"postgresql://postgres@/{name}?host={root}&port={port}"
    with psycopg.connect(f"host={root} port={port} user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
