"""Provisioned nodes against the real broker, run with the exact config `ca init` wrote.

ACLs (a node publishes and reads only its own topics), client ids pinned to the certificate,
and the whole path: provision → sealed read accepted by HQ ingest → revoke → ingest rejects
what the node makes afterwards and, after the broker rereads its CRL, the TLS handshake fails.
"""
from __future__ import annotations

import getpass
import socket
import ssl
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from provisioning import enroll, hqsetup, local
from provisioning import state as hq_state
from provisioning.broker import BrokerFiles
from provisioning.localbroker import LocalBroker, free_port
from transport import topics

pytestmark = pytest.mark.broker
LOCAL = '[pipeline]\nmode = "continuous"\n'


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def handshake_error(port: int, data_dir: Path) -> str | None:
    """Try a TLS handshake with a node's certificate: None if accepted, else the error."""
    context = ssl.create_default_context(cafile=str(data_dir / "tls/ca.pem"))
    context.load_cert_chain(str(data_dir / "tls/node.pem"), str(data_dir / "tls/node.key"))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.settimeout(0.5)
            # (under TLS 1.3 a refused client certificate shows only on the first read)
            try:
                if tls.recv(1) == b"":
                    return "closed by the broker"
            except TimeoutError:
                return None
    except (ssl.SSLError, OSError) as exc:
        return str(exc)
    return None


class Client:
    """A paho MQTT v5 client with a certificate, recording messages and PUBACK/SUBACK reason codes."""

    def __init__(self, port: int, ca: Path, cert: Path, key: Path, client_id: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.pubacks: dict[int, str] = {}
        self.connected = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        context = ssl.create_default_context(cafile=str(ca))
        context.load_cert_chain(str(cert), str(key))
        self.client.tls_set_context(context)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.client.on_publish = lambda c, u, mid, rc, p: self.pubacks.__setitem__(mid, str(rc))
        self.client.on_connect = lambda c, u, f, rc, p: self.connected.set() if not rc.is_failure else None
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.connected.wait(10), f"{client_id} did not connect"

    def publish(self, topic: str, payload: bytes) -> int:
        return self.client.publish(topic, payload, qos=1).mid

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def site(tmp_path: Path):
    """HQ initialised for a loopback broker, two provisioned nodes, the broker running ca init's config."""
    port = free_port()
    hq_dir = tmp_path / "hq"
    setup = hqsetup.init_hq(hq_dir, actor="alice", broker_names=["127.0.0.1"], broker_port=port,
                            broker_bind="127.0.0.1", broker_user=getpass.getuser())
    nodes = {n: local.provision_node(hq_dir, tmp_path / n, n, site="north", actor="bob", extra_toml=LOCAL)
             for n in ("gate-1", "gate-2")}
    broker = LocalBroker.existing(setup.broker_files, port)
    broker.start()
    clients: list[Client] = []

    def connect(name: str, client_id: str | None = None) -> Client:
        if name.startswith("hq-"):
            tls = hq_dir / "tls"
            c = Client(port, tls / "ca.pem", tls / f"{name}.pem", tls / f"{name}.key", client_id or name)
        else:
            d = nodes[name].data_dir
            c = Client(port, d / "tls/ca.pem", d / "tls/node.pem", d / "tls/node.key", client_id or name)
        clients.append(c)
        return c

    yield hq_dir, nodes, broker, connect
    for c in clients:
        c.close()
    broker.stop()


def test_generated_config_is_what_runs(site) -> None:
    hq_dir, _, broker, _ = site
    assert broker.files == BrokerFiles(hq_dir.resolve() / "broker" / "mosquitto.conf",
                                       hq_dir.resolve() / "broker" / "acl", hq_dir.resolve() / "broker" / "alpr.conf")
    assert "crlfile" in broker.files.conf.read_text()


def test_a_node_cannot_publish_as_another_node(site) -> None:
    _, _, _, connect = site
    hq = connect("hq-ingest-1")
    hq.client.subscribe(f"{topics.ROOT}/+/+", qos=1)
    time.sleep(0.2)
    gate1 = connect("gate-1")
    own = gate1.publish(topics.node_topic("gate-1", "read"), b"own")
    forged = gate1.publish(topics.node_topic("gate-2", "read"), b"forged")
    forged_down = gate1.publish(topics.node_topic("gate-2", "hotlist"), b"forged")
    wait_for(lambda: len(gate1.pubacks) == 3, 5, "three PUBACKs")
    assert gate1.pubacks[own] == "Success"
    assert gate1.pubacks[forged] == "Not authorized" and gate1.pubacks[forged_down] == "Not authorized"
    wait_for(lambda: hq.messages, 5, "HQ to receive the node's own read")
    time.sleep(0.3)
    assert hq.messages == [(topics.node_topic("gate-1", "read"), b"own")]


def test_a_node_cannot_read_another_nodes_topics(site) -> None:
    _, _, _, connect = site
    gate1 = connect("gate-1")
    for topic in (topics.node_topic("gate-2", "ack"), topics.node_topic("gate-2", "hotlist"),
                  f"{topics.ROOT}/+/ack", topics.node_topic("gate-2", "read"), topics.node_topic("gate-1", "ack")):
        gate1.client.subscribe(topic, qos=1)
    gate2 = connect("gate-2")
    hq = connect("hq-ingest-1")
    time.sleep(0.3)
    hq.publish(topics.node_topic("gate-2", "ack"), b"for gate-2")
    hq.publish(topics.node_topic("gate-2", "hotlist"), b"gate-2 hot list")
    gate2.publish(topics.node_topic("gate-2", "read"), b"gate-2 read")
    hq.publish(topics.node_topic("gate-1", "ack"), b"for gate-1")
    wait_for(lambda: gate1.messages, 5, "gate-1 to receive its own ack")
    time.sleep(0.5)
    # its own ack arrives (once per matching subscription); nothing of gate-2's ever does
    assert {payload for _, payload in gate1.messages} == {b"for gate-1"}


def test_only_hq_ingest_may_announce_a_generation_and_every_node_hears_it(site) -> None:
    _, _, _, connect = site
    gate1 = connect("gate-1")
    gate1.client.subscribe(topics.HQ_INGEST, qos=1)
    push = connect("hq-push")
    hq = connect("hq-ingest-1")
    time.sleep(0.3)
    forged = gate1.publish(topics.HQ_INGEST, b"from a node")
    pushed = push.publish(topics.HQ_INGEST, b"from hq-push")
    real = hq.publish(topics.HQ_INGEST, b"from ingest")
    wait_for(lambda: len(gate1.pubacks) == 1 and len(push.pubacks) == 1 and len(hq.pubacks) == 1, 5, "PUBACKs")
    assert gate1.pubacks[forged] == "Not authorized" and push.pubacks[pushed] == "Not authorized"
    assert hq.pubacks[real] == "Success"
    wait_for(lambda: gate1.messages, 5, "the node to hear ingest's generation")
    time.sleep(0.3)
    assert gate1.messages == [(topics.HQ_INGEST, b"from ingest")]


def test_a_node_cannot_take_over_another_nodes_session(site) -> None:
    _, _, _, connect = site
    gate2 = connect("gate-2")
    connect("gate-1", client_id="gate-2")  # the broker replaces the client id with the certificate's CN
    time.sleep(0.5)
    assert gate2.connected.is_set() and gate2.client.is_connected()


def test_provisioned_node_is_accepted_then_revoked(site) -> None:
    from hq import config as hq_config
    from hq.ingest import Ingest
    from hq.keyring import load_hpke_keys, load_sign_key
    from node import config as node_config
    from node.identity import Identity
    from transport.mqtt import BrokerSettings
    from transport.payload import ReadPayload

    hq_dir, nodes, broker, connect = site
    cfg = hq_config.load(hq_dir / "hq.toml")
    b = cfg.broker
    settings = BrokerSettings(b.host, b.port, cfg.path(b.ca, "tls/ca.pem"), cfg.path(None, f"tls/{b.client_id}.pem"),
                              cfg.path(None, f"tls/{b.client_id}.key"), b.client_id)
    ingest = Ingest(settings, store_path=cfg.path(cfg.store.path, "hq.db"), registry_path=hq_dir / "registry.db",
                    decryption_keys=load_hpke_keys(hq_dir / "keys"), sign_key=load_sign_key(hq_dir / "keys"))
    ingest.start()
    try:
        assert ingest.link.wait_connected(10)
        node_cfg = node_config.load(nodes["gate-1"].config)
        identity = Identity.load(node_cfg)
        gate1 = connect("gate-1")

        def read(seq: int) -> bytes:
            now = time.time_ns()
            payload = ReadPayload(plate="AB12CDE", confidence=0.97, capture_time_ns=now, node_id="gate-1",
                                  site_id=node_cfg.node.site, camera_id=node_cfg.node.camera,
                                  crop_jpeg=b"\xff\xd8\xff\xd9").to_wire()
            return identity.sealer("read", payload, now)(seq)

        gate1.publish(topics.node_topic("gate-1", "read"), read(1))
        wait_for(lambda: ingest.stats.stored == 1, 10, "HQ to store the provisioned node's read")

        # revoke: registry and CRL first, the broker not yet told
        done = enroll.revoke(hq_dir, "gate-1", actor="carol", reason="stolen from the pole", reload=False)
        assert done.serials and done.record.status == "revoked"
        # what the node makes from now on is rejected by ingest, even over a connection still open
        gate1.publish(topics.node_topic("gate-1", "read"), read(2))
        wait_for(lambda: ingest.stats.rejected["revoked"] == 1, 10, "ingest to reject the revoked node's read")
        assert ingest.stats.stored == 1
        # the reload command is the broker's SIGHUP, as `systemctl reload mosquitto` would send
        st = hq_state.load(hq_dir)
        st.with_(broker_reload=f"{sys.executable} -c \"__import__('os').kill({broker.process.pid}, 1)\"").save()
        assert "ran" in enroll.reload_broker(hq_dir, actor="carol", node_id="gate-1")
        # a new connection with the revoked certificate fails the TLS handshake (CRL)
        wait_for(lambda: handshake_error(broker.port, nodes["gate-1"].data_dir) is not None, 5,
                 "the broker to refuse the revoked certificate")
        assert handshake_error(broker.port, nodes["gate-2"].data_dir) is None
        wait_for(lambda: "certificate verify failed" in (broker.directory / "mosquitto.log").read_text(), 5,
                 "the broker to log the refused certificate")
        # the other node and HQ are unaffected
        connect("gate-2")
        connect("hq-ingest-1", client_id="hq-check")
        # a restart cuts any connection the revoked node still has, and it cannot come back
        broker.restart()
        wait_for(lambda: not gate1.connected.is_set(), 5, "the restart to drop the revoked node")
        assert handshake_error(broker.port, nodes["gate-1"].data_dir) is not None
    finally:
        ingest.stop()
    actions = [(actor, action) for _, actor, action, _, _ in enroll.audit(hq_dir, node_id="gate-1")]
    assert ("bob", "enroll") in actions and ("carol", "revoke") in actions and ("carol", "broker-reload") in actions


def test_alpr_node_runs_from_the_installed_config(site, tmp_path: Path) -> None:
    """The real `alpr-node run`, started from the node.toml `node install` wrote, delivers to HQ."""
    import subprocess

    from hq.ingest import Ingest
    from hq.keyring import load_hpke_keys, load_sign_key
    from provisioning import nodeside
    from transport.mqtt import BrokerSettings

    hq_dir, nodes, broker, _ = site
    node = nodes["gate-2"]
    # the technician's local sections: a synthetic source instead of the camera
    nodeside.install(enroll.make_bundle(hq_dir, "gate-2", actor="alice"), node.data_dir, actor="bob",
                     extra_toml='[source]\nkind = "synthetic"\n\n[source.synthetic]\nrate_hz = 20\ntotal = 3\n'
                                'crop_bytes = 200\n')
    tls = hq_dir / "tls"
    ingest = Ingest(BrokerSettings("127.0.0.1", broker.port, tls / "ca.pem", tls / "hq-ingest-1.pem",
                                   tls / "hq-ingest-1.key", "hq-ingest-1"),
                    store_path=hq_dir / "hq.db", registry_path=hq_dir / "registry.db",
                    decryption_keys=load_hpke_keys(hq_dir / "keys"), sign_key=load_sign_key(hq_dir / "keys"))
    ingest.start()
    with open(tmp_path / "node.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "node.cli", "run", "--config", str(node.config)],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: ingest.stats.stored >= 3 or proc.poll() is not None, 30, "HQ to store 3 synthetic reads")
        assert ingest.stats.stored >= 3, (tmp_path / "node.log").read_text()[-3000:]
        assert not ingest.stats.rejected
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        ingest.stop()


# Debian's /etc/mosquitto/mosquitto.conf as the package ships it (mosquitto 2.0.11, bookworm):
# used when this machine has no such file, so the test runs the same everywhere.
DEBIAN_STOCK_CONF = """\
# Place your local configuration in /etc/mosquitto/conf.d/
#
# A full description of the configuration file is at
# /usr/share/doc/mosquitto/examples/mosquitto.conf.example

pid_file /run/mosquitto/mosquitto.pid

persistence true
persistence_location /var/lib/mosquitto/

log_dest file /var/log/mosquitto/mosquitto.log

include_dir /etc/mosquitto/conf.d
"""


def debian_like_conf(root: Path, fragment: Path) -> Path:
    """Debian's stock mosquitto.conf with its paths moved under `root`, `fragment` linked into its conf.d."""
    stock = Path("/etc/mosquitto/mosquitto.conf")
    text = stock.read_text() if stock.exists() else DEBIAN_STOCK_CONF
    moved = {"pid_file": root / "mosquitto.pid", "persistence_location": f"{root / 'persist'}/",
             "log_dest": f"file {root / 'mosquitto.log'}", "include_dir": root / "conf.d"}
    lines = []
    for line in text.splitlines():
        key = line.split(" ", 1)[0]
        lines.append(f"{key} {moved[key]}" if key in moved else line)
    # the packaged service runs as `mosquitto`; here it must read pytest's private tmp folder
    lines.insert(0, f"user {getpass.getuser()}")
    (root / "persist").mkdir(parents=True)
    (root / "conf.d").mkdir()
    (root / "conf.d" / "alpr.conf").symlink_to(fragment)
    conf = root / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def test_conf_d_fragment_runs_under_debians_mosquitto_conf(tmp_path: Path) -> None:
    """docs/provisioning.md: link HQ_DIR/broker/alpr.conf into /etc/mosquitto/conf.d. It must start and enforce TLS+ACL."""
    import subprocess

    port = free_port()
    hq_dir = tmp_path / "hq"
    setup = hqsetup.init_hq(hq_dir, actor="alice", broker_names=["127.0.0.1"], broker_port=port,
                            broker_bind="127.0.0.1", broker_user=getpass.getuser())
    fragment = setup.broker_files.include
    assert fragment == hq_dir.resolve() / "broker" / "alpr.conf"
    node = local.provision_node(hq_dir, tmp_path / "gate-1", "gate-1", site="north", actor="bob", extra_toml=LOCAL)

    # the standalone file in conf.d is what the reviewer saw fail: mosquitto refuses to start
    wrong = debian_like_conf(tmp_path / "wrong", setup.broker_files.conf)
    binary = LocalBroker.existing(setup.broker_files, port).binary
    try:
        refused = subprocess.run([binary, "-c", str(wrong), "-v"], capture_output=True, text=True, timeout=10,
                                 check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("mosquitto started with the standalone mosquitto.conf in conf.d; this test no longer shows "
                    "why the fragment exists")
    assert refused.returncode != 0 and "Duplicate" in refused.stderr + refused.stdout

    conf = debian_like_conf(tmp_path / "etc-mosquitto", fragment)
    broker = LocalBroker.existing(BrokerFiles(conf, setup.broker_files.acl), port)
    broker.start()  # fails (never skips) when mosquitto is missing or refuses the configuration
    clients: list[Client] = []
    try:
        tls = hq_dir / "tls"
        hq = Client(port, tls / "ca.pem", tls / "hq-ingest-1.pem", tls / "hq-ingest-1.key", "hq-ingest-1")
        clients.append(hq)
        hq.client.subscribe(f"{topics.ROOT}/+/+", qos=1)
        time.sleep(0.2)
        d = node.data_dir
        gate = Client(port, d / "tls/ca.pem", d / "tls/node.pem", d / "tls/node.key", "gate-1")
        clients.append(gate)
        own = gate.publish(topics.node_topic("gate-1", "read"), b"own")
        forged = gate.publish(topics.node_topic("gate-2", "read"), b"forged")
        wait_for(lambda: len(gate.pubacks) == 2, 5, "two PUBACKs")
        assert gate.pubacks[own] == "Success" and gate.pubacks[forged] == "Not authorized"
        wait_for(lambda: hq.messages, 5, "HQ to receive the node's read")
        assert hq.messages == [(topics.node_topic("gate-1", "read"), b"own")]
        # the stock file's own process settings are in force: its log and its persistence folder
        wait_for(lambda: "gate-1" in (tmp_path / "etc-mosquitto" / "mosquitto.log").read_text(), 5,
                 "the broker to log to the stock file's log_dest")
    finally:
        for c in clients:
            c.close()
        broker.stop()
    assert list((tmp_path / "etc-mosquitto" / "persist").iterdir()), "no persistence in the stock location"
