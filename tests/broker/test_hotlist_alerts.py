"""Hot list end to end: HQ signs and pushes a list, the node matches locally and sends alerts first."""
from __future__ import annotations

import secrets
import stat
import subprocess
import sys
import time

import pytest

from hq.files import PUSHED_HOTLIST
from hq.hotlist import HotlistEntry, build_body
from hq.push import push
from hq.store import ReadStore
from tests.conftest import wait_for
from transport import signed
from transport.mqtt import BrokerSettings

pytestmark = pytest.mark.broker


def test_node_raises_alerts_for_listed_plates_and_plain_reads_for_others(lab):
    now = time.time_ns()
    entry = HotlistEntry(1, "7ABC123", False, "stolen-vehicle", "NCIC", now + 10**13, "admin", now, "")
    body = build_body([entry], version=1, now_ns=now, key=secrets.token_bytes(32), valid_for_ns=10**13)
    message = signed.sign("hotlist", body, lab.hq_sign)
    node = lab.add_node("node-a", body=(
        '[source]\nkind = "synthetic"\n[source.synthetic]\nrate_hz = 2\ntotal = 6\n'
        'plates = ["QRS4567", "7ABC123"]\n'))
    tls = lab.hq_dir / "tls"
    settings = BrokerSettings("127.0.0.1", lab.broker.port, tls / "ca.pem", tls / "hq-ingest-2.pem",
                              tls / "hq-ingest-2.key", "hq-ingest-2")
    assert push(settings, lab.registry_path, "hotlist", message) == ["node-a"]  # retained: node not up yet
    lab.track(lab.start_ingest("hq-ingest-1"))
    lab.track(lab.start_node(node))
    path = lab.hq_dir / "hq.db"
    wait_for(lambda: path.exists() and ReadStore(path).count() >= 6, 60, "six reads at HQ")
    store = ReadStore(path)
    rows = store.reads_after(0)
    kinds = {r.plate: {x.kind for x in rows if x.plate == r.plate} for r in rows}
    # The first read may be made before the retained list arrives; after that, every 7ABC123 is an alert.
    assert kinds["QRS4567"] == {"read"}
    assert "alert" in kinds["7ABC123"]
    assert (node.data_dir / "hotlist.msg").exists()


def test_a_push_the_broker_lost_before_saving_it_reaches_the_node_through_its_heartbeat(lab, tmp_path):
    """`alpr-hq push` is confirmed by the broker's PUBACK, before its autosave: the broker killed
    right after lost the retained list, and the node, offline during the push, never got it.
    Ingest now sends the list `push` kept again to a node whose heartbeat reports an older one."""
    now = time.time_ns()
    entry = HotlistEntry(1, "7ABC123", False, "stolen-vehicle", "NCIC", now + 10**13, "admin", now, "")
    body = build_body([entry], version=4, now_ns=now, key=secrets.token_bytes(32), valid_for_ns=10**13)
    listed = tmp_path / "hotlist-v4.msg"
    listed.write_bytes(signed.sign("hotlist", body, lab.hq_sign))
    node = lab.add_node("node-a", body=('[source]\nkind = "synthetic"\n[source.synthetic]\nrate_hz = 1\ntotal = 3\n'
                                        '[health]\ninterval_s = 1\n'))
    pushed = subprocess.run([sys.executable, "-m", "hq.cli", "--config", str(lab.hq_config), "push", "hotlist",
                             str(listed)], capture_output=True, text=True, timeout=60)
    assert pushed.returncode == 0, pushed.stderr
    lab.broker.kill()  # before its autosave (a second): the retained copy is gone ...
    lab.broker.start()
    # ... and for certain (had the autosave come first): an empty retained message clears it
    tls = lab.hq_dir / "tls"
    settings = BrokerSettings("127.0.0.1", lab.broker.port, tls / "ca.pem", tls / "hq-ingest-2.pem",
                              tls / "hq-ingest-2.key", "hq-ingest-2")
    assert push(settings, lab.registry_path, "hotlist", b"") == ["node-a"]
    kept = lab.hq_dir / PUSHED_HOTLIST
    assert kept.read_bytes() == listed.read_bytes() and stat.S_IMODE(kept.stat().st_mode) == 0o600
    lab.track(lab.start_ingest("hq-ingest-1"))
    lab.track(lab.start_node(node))
    wait_for(lambda: (node.data_dir / "hotlist.msg").exists()
             and (node.data_dir / "hotlist.msg").read_bytes() == listed.read_bytes(), 40,
             "the node to hold hot list version 4")
    assert "reports hot list version 0 but version 4 was pushed: sent it again" in \
        (lab.root / "hq-ingest-1.log").read_text()
