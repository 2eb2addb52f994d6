"""Round 20 against the real mosquitto, run with the exact config `ca init` wrote.

- A revoked node's link (transport.mqtt) says in its log, and in its stats, that the broker
  refuses its certificate: it used to log nothing at all while retrying for ever.
- mosquitto.conf's pid_file is written by mosquitto 2.0 (not only as a daemon), and the
  documented reload command, run as `ca reload-broker --set-command` runs it (split into
  words, no shell), makes the broker reread its files.

Fails, never skips, without mosquitto (LocalBroker says how to install it).
"""
from __future__ import annotations

import getpass
import logging
import shutil
from pathlib import Path

import pytest

from provisioning import cli, enroll, hqsetup, local
from provisioning.broker import PID_FILE
from provisioning.localbroker import LocalBroker, free_port
from tests.broker.test_provisioning_broker import handshake_error
from tests.conftest import wait_for
from transport.mqtt import BrokerSettings, MqttLink

pytestmark = pytest.mark.broker
ME = getpass.getuser()
LOCAL = '[pipeline]\nmode = "continuous"\n'


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """HQ for a loopback broker, one provisioned node, the broker running ca init's config."""
    from provisioning import nodeside
    monkeypatch.setattr(nodeside, "DEFAULT_CONFIG", tmp_path / "etc" / "alpr-node" / "node.toml")
    port = free_port()
    hq_dir = tmp_path / "hq"
    setup = hqsetup.init_hq(hq_dir, actor="alice", broker_names=["127.0.0.1"], broker_port=port,
                            broker_bind="127.0.0.1", broker_user=ME)
    node = local.provision_node(hq_dir, tmp_path / "gate-1", "gate-1", site="north", actor="bob", extra_toml=LOCAL)
    broker = LocalBroker.existing(setup.broker_files, port)
    broker.start()
    yield hq_dir, node, broker
    broker.stop()


def _link(node, port: int) -> MqttLink:
    d = node.data_dir
    settings = BrokerSettings("127.0.0.1", port, d / "tls/ca.pem", d / "tls/node.pem", d / "tls/node.key", "gate-1",
                              backoff_min_s=0.05, backoff_max_s=0.2)
    return MqttLink(settings, name="gate-1", on_connect=lambda c, s: None, on_message=lambda c, m: None)


def test_a_revoked_node_logs_that_the_broker_refuses_its_certificate(site, caplog: pytest.LogCaptureFixture) -> None:
    hq_dir, node, broker = site
    caplog.set_level(logging.INFO, logger="transport.mqtt")
    link = _link(node, broker.port)
    link.start()
    try:
        assert link.wait_connected(10), link.stats.last_error  # accepted before the revocation
    finally:
        link.stop(5)
    enroll.revoke(hq_dir, "gate-1", actor="alice", reason="stolen", reload=False)
    broker.restart()  # rereads the CRL and drops open connections
    caplog.clear()
    link = _link(node, broker.port)
    link.start()
    try:
        wait_for(lambda: link.stats.failures >= 3, 20, "three refused attempts")
    finally:
        link.stop(5)
    assert not link.is_connected()
    stats = link.stats
    # what TLS said (mosquitto sends the alert, or closes first), never a bare "no CONNACK"
    assert "failed to receive on socket" in stats.last_error, stats.last_error
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and "cannot connect" in r.getMessage()]
    assert len(warnings) == 1, warnings  # then at most once a minute
    assert f"127.0.0.1:{broker.port} as gate-1" in warnings[0]
    assert "certificate revoked" in warnings[0].lower() or "refused this client's certificate" in warnings[0]


def test_pid_file_and_the_documented_reload_command(site, capsys: pytest.CaptureFixture[str]) -> None:
    hq_dir, node, broker = site
    pid_file = hq_dir.resolve() / "broker" / PID_FILE
    wait_for(pid_file.exists, 10, f"mosquitto to write {pid_file}")
    assert int(pid_file.read_text()) == broker.process.pid
    assert shutil.which("pkill"), "pkill (procps) is needed for the documented reload command"
    # revoked without a reload: the broker has not reread its CRL, so it still lets the node in
    enroll.revoke(hq_dir, "gate-1", actor="alice", reason="stolen", reload=False)
    assert handshake_error(broker.port, node.data_dir) is None
    command = f"pkill -HUP -F {pid_file} -u {ME} -x mosquitto"
    rc = cli.main(["ca", "reload-broker", "--set-command", command, "--dir", str(hq_dir), "--actor", "alice"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert f"ran {command!r}" in out
    wait_for(lambda: handshake_error(broker.port, node.data_dir) is not None, 10,
             "the broker to reread its CRL (SIGHUP) and refuse the revoked node")
    assert broker.running()  # a reload, not a stop
    # a pid that is not mosquitto's (by name here) is never signalled: no match, and the reload says so
    rc = cli.main(["ca", "reload-broker", "--set-command", f"pkill -HUP -F {pid_file} -u {ME} -x not-mosquitto",
                   "--dir", str(hq_dir), "--actor", "alice"])
    assert rc == 2 and "exited 1" in capsys.readouterr().err
    assert broker.running()
    broker.stop()
    wait_for(lambda: not pid_file.exists(), 10, "mosquitto to remove its pid file when it stops")
