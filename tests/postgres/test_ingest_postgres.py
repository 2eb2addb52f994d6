"""HQ ingest into PostgreSQL: a node's reads through the real broker, stored exactly once; a read
PostgreSQL cannot hold is set aside without holding back the others; an outage rejects nothing."""
from __future__ import annotations

import random
import string

import pytest

from hq.store import ReadStore
from tests.broker.test_ingest_rejects import acked_seqs, good_message, send, start_world, stop_world
from tests.conftest import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.broker]


def test_reads_flow_into_postgresql_exactly_once(lab, pg_url):
    lab.hq_config.write_text(lab.hq_config.read_text() + f'\n[store]\nurl = "{pg_url}"\n')
    node = lab.add_node("node-a", body=('[source]\nkind = "synthetic"\n[source.synthetic]\nrate_hz = 200\n'
                                        'total = 150\ncrop_bytes = 2000\n'))
    lab.track(lab.start_ingest())
    proc = lab.start_node(node, "--exit-when-done")
    lab.track(proc)
    assert proc.wait(90) == 0, (lab.root / "hq-ingest-1.log").read_text()[-2000:]
    store = ReadStore(pg_url)
    try:
        wait_for(lambda: store.count() >= 150, 30, "150 reads in PostgreSQL")
        assert store.seqs("node-a") == list(range(1, 151))
        assert store.duplicate_count() == 0
    finally:
        store.close()
    assert not (lab.hq_dir / "hq.db").exists()  # nothing went to SQLite


def _poison_plate() -> str:
    # Too long for a btree index row (2704 bytes) and incompressible: PostgreSQL refuses it
    # with SQLSTATE 54000, an error about this one read, not about the server.
    rng = random.Random(7)
    return "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(8000))


def test_reads_postgresql_cannot_hold_are_set_aside_and_the_rest_are_stored(lab, pg_url):
    ingest, client, sign_key, acks = start_world(lab, pg_url)
    try:
        messages = [
            good_message(lab, sign_key, seq=1),
            good_message(lab, sign_key, seq=2, conf=2**31),         # INTEGER column: now refused when opened
            good_message(lab, sign_key, seq=3, plate=_poison_plate()),  # index row too large (54000)
            good_message(lab, sign_key, seq=4, t_ns=2**63 - 1),      # year 2262: refused before the store (time)
            good_message(lab, sign_key, seq=5),
        ]
        for payload in messages:
            send(client, payload)
        wait_for(lambda: ingest.stats.stored == 2 and sum(ingest.stats.rejected.values()) == 3, 30,
                 "two reads stored and three rejected")
        wait_for(lambda: acked_seqs(acks) == [1, 5], 10, "the stored reads acknowledged")
        wait_for(lambda: len(ingest.pubacks) == 5, 10, "every message PUBACKed")
        assert dict(ingest.stats.rejected) == {"payload": 1, "store": 1, "time": 1}
        kept = sorted(p.name.split("-")[2] for p in (lab.hq_dir / "rejected").glob("*.msg"))
        assert kept == ["3", "4"]
        for seq in (3, 4):
            (msg,) = (lab.hq_dir / "rejected").glob(f"node-a-{seq}-*.msg")
            assert msg.read_bytes() == messages[seq - 1]
    finally:
        stop_world(ingest, client)
    store = ReadStore(pg_url)
    try:
        assert store.seqs("node-a") == [1, 5]
        # The read dated 2262 made no partitions (one per month up to it, never purged).
        assert store.db.value("SELECT COUNT(*) FROM pg_class WHERE relname LIKE 'reads_p22%'") == 0
    finally:
        store.close()


def test_postgresql_outage_rejects_nothing_and_ingest_reconnects(lab, pg_url):
    import psycopg

    root, port = pg_url.split("host=")[1].split("&port=")
    name = pg_url.split("/")[3].split("?")[0]
    admin = psycopg.connect(f"host={root} port={port} user=postgres dbname=postgres", autocommit=True)
    ingest, client, sign_key, acks = start_world(lab, pg_url)
    try:
        send(client, good_message(lab, sign_key, seq=1))
        wait_for(lambda: acked_seqs(acks) == [1], 20, "the first read stored")
        # The server goes away under ingest's open connection, and refuses new ones.
        admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        for seq in (2, 3, 4):
            send(client, good_message(lab, sign_key, seq=seq))
        wait_for(lambda: ingest.stats.store_errors >= 3, 30, "three failed attempts to store or reconnect")
        assert (dict(ingest.stats.rejected), ingest.stats.stored, len(ingest.pubacks)) == ({}, 1, 1)
        assert not (lab.hq_dir / "rejected").exists()
        admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        wait_for(lambda: acked_seqs(acks) == [1, 2, 3, 4], 40, "the waiting reads stored after reconnecting")
        assert dict(ingest.stats.rejected) == {} and len(ingest.pubacks) == 4
    finally:
        admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        admin.close()
        stop_world(ingest, client)
    store = ReadStore(pg_url)
    try:
        assert store.seqs("node-a") == [1, 2, 3, 4]
    finally:
        store.close()
