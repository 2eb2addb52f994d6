"""HQ ingest into PostgreSQL: a node's reads through the real broker, stored exactly once."""
from __future__ import annotations

import pytest

from hq.store import ReadStore
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
