"""Technician walkthrough fixes: sudo and the registry, the hq-push certificate, broker restart
hints, and what `node install --extra` drops.

1. Without sudo, `alpr-provision` said `sqlite3.OperationalError: attempt to write a readonly
   database` (a traceback) even for `node list` and `audit`; now a clear error with a `sudo`
   hint, and the read-only commands open the registry read-only.
2. `alpr-hq push hotlist` needs an hq-push client certificate that nothing issued.
3. The broker restart hint named only Debian's service, not `mosquitto -c`.
5. `node install --extra FILE` replaced the local sections of node.toml without a word.
"""
from __future__ import annotations

import getpass
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from provisioning import cli, enroll, hqsetup, local, nodeside
from provisioning import state as hq_state
from provisioning.errors import StateError
from tests.broker.test_provisioning_broker import Client
from tests.conftest import wait_for
from tests.unit.test_provisioning_root_writes import _never_write_etc, hq  # noqa: F401  (fixtures)
from transport import topics
from transport.registry import Registry

pytestmark = pytest.mark.unit
ME = getpass.getuser()
ROOT = Path(__file__).resolve().parents[2]
LOCAL = '[pipeline]\nmode = "continuous"\n'
SUDO = "run alpr-provision with sudo (HQ's keys and registry are root's)"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="running a command as another user needs root")


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# -- 1. without sudo ------------------------------------------------------------------------
def test_a_registry_this_user_cannot_write_is_a_clear_error_before_anything_changes(
        hq: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    made = nodeside.keygen(tmp_path / "n1", "gate-1", actor="bob")
    registry = hq.resolve() / "registry.db"
    real_access = os.access
    # what os.access says to a technician without sudo about root's registry.db and HQ folder
    monkeypatch.setattr(hq_state.os, "access",
                        lambda p, mode, **kw: False if Path(p) in (registry, registry.parent) else real_access(p, mode))
    rc, _, err = _run(capsys, "node", "enroll", str(made.request), "--dir", str(hq), "--site", "north",
                      "--actor", "alice")
    assert rc == 2 and "Traceback" not in err
    assert f"{registry}: not writable by this user; {SUDO}" in err
    assert not (hq / "nodes" / "gate-1").exists()  # stopped before signing anything
    with pytest.raises(StateError, match=re.escape(f"{registry}: not writable by this user; {SUDO}")):
        enroll.make_bundle(hq, "gate-1", actor="alice")


def test_node_list_and_audit_open_the_registry_read_only(hq: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    local.provision_node(hq, tmp_path / "n1", "gate-1", actor="bob", extra_toml=LOCAL)
    writer = Registry(hq / "registry.db")  # HQ ingest keeps it open (its -shm file exists)
    try:
        os.chmod(hq / "registry.db", 0o444)  # a read-only open must not need to write
        rc, out, err = _run(capsys, "node", "list", "--dir", str(hq))
        assert rc == 0, err
        assert "gate-1" in out
        rc, out, err = _run(capsys, "audit", "--dir", str(hq), "--node", "gate-1")
        assert rc == 0 and " enroll " in out and " bundle " in out, err
    finally:
        writer.close()
        os.chmod(hq / "registry.db", 0o644)
    with hq_state.registry(hq_state.load(hq), read_only=True) as reg, \
            pytest.raises(sqlite3.OperationalError, match="readonly"):
        reg.record("alice", "x")  # read-only means read-only


def _world_readable_hq() -> Path:
    """An HQ folder made by root that another user can reach (pytest's tmp_path is root's 0700)."""
    base = Path(tempfile.mkdtemp(prefix="alpr-s19-"))
    base.chmod(0o755)
    return base


def _as_nobody(*argv: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), "HOME": "/nonexistent"}
    return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable,
                           "-m", "provisioning.cli", *argv], check=False, capture_output=True, text=True, env=env,
                          timeout=60, cwd="/")


@root_only
def test_without_sudo_as_a_real_other_user(tmp_path: Path) -> None:
    # setpriv is util-linux's, on every Debian and Raspberry Pi OS: missing, the test fails, not skips
    assert shutil.which("setpriv"), "setpriv (util-linux) is needed to run a command as another user"
    base = _world_readable_hq()
    try:
        hq_dir = base / "hq"
        hqsetup.init_hq(hq_dir, actor="alice", ca_dir=base / "ca", broker_names=["127.0.0.1"], broker_port=18883,
                        broker_user=ME)
        hq_dir.chmod(0o755)
        made = nodeside.keygen(base / "pi", "gate-1", actor="bob")
        enroll.enroll(hq_dir, made.request, site="north", actor="alice")
        registry = hq_dir.resolve() / "registry.db"
        for argv in (["node", "list"], ["audit"]):
            done = _as_nobody(*argv, "--dir", str(hq_dir))
            # no ingest has the registry open: SQLite cannot read it without write access
            assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
            assert f"{registry}: cannot be read by this user" in done.stderr and SUDO in done.stderr
        done = _as_nobody("node", "bundle", "gate-1", "--actor", "alice", "--dir", str(hq_dir))
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert f"{registry}: not writable by this user; {SUDO}" in done.stderr
        done = _as_nobody("node", "revoke", "gate-1", "--reason", "x", "--actor", "alice", "--no-reload",
                          "--dir", str(hq_dir))
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        # with HQ ingest running (the registry open, its -shm readable), listing works without sudo
        writer = Registry(registry)
        try:
            done = _as_nobody("node", "list", "--dir", str(hq_dir))
            assert done.returncode == 0 and "gate-1" in done.stdout, done.stderr
            done = _as_nobody("audit", "--dir", str(hq_dir))
            assert done.returncode == 0 and "ca-init" in done.stdout, done.stderr
        finally:
            writer.close()
        assert Registry(registry).node("gate-1").status == "active"
    finally:
        shutil.rmtree(base)


def test_next_hints_for_hq_commands_say_sudo(hq: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(capsys, "node", "keygen", "--data-dir", str(tmp_path / "n1"), "--node-id", "gate-1",
                      "--actor", "bob")
    assert rc == 0 and "to HQ: sudo alpr-provision node enroll " in out
    # a technician who typed `sudo alpr-provision node enroll ...` at HQ (root owns HQ's folder)
    monkeypatch.setenv("SUDO_UID", str(os.stat(hq).st_uid + 1000))
    rc, out, err = _run(capsys, "node", "enroll", str(tmp_path / "n1" / "provisioning" / "request.json"),
                        "--dir", str(hq), "--site", "north", "--actor", "alice")
    assert rc == 0, err
    hint = shlex.split(out.split("next: ", 1)[1])
    assert hint[:4] == ["sudo", "alpr-provision", "node", "bundle"]
    assert cli.build_parser().parse_args(hint[2:]).node_id == "gate-1"
    rc, out, _ = _run(capsys, "ca", "issue-hq", "--worker", "hq-ingest-2", "--dir", str(hq), "--actor", "alice")
    assert rc == 0
    assert "next: sudo alpr-provision ca reload-broker " in out and "then run: sudo alpr-hq --config " in out
    # someone who owns the HQ folder (a lab, a root shell) is not told to use sudo
    monkeypatch.delenv("SUDO_UID")
    rc, out, _ = _run(capsys, "node", "bundle", "gate-1", "--dir", str(hq), "--actor", "alice")
    assert rc == 0
    rc, out, _ = _run(capsys, "ca", "issue-hq", "--worker", "hq-ingest-3", "--dir", str(hq), "--actor", "alice")
    assert "next: alpr-provision ca reload-broker " in out


def test_provisioning_doc_hq_commands_use_sudo() -> None:
    text = (ROOT / "docs/provisioning.md").read_text()
    for command in ("alpr-provision node enroll gate-12.json", "alpr-provision node bundle gate-12 --actor",
                    "alpr-provision node revoke gate-12", "alpr-provision node list", "alpr-provision audit"):
        lines = [line for line in text.splitlines() if command in line and line.lstrip().startswith(
            ("alpr-provision", "sudo alpr-provision"))]
        assert lines and all(line.lstrip().startswith("sudo ") for line in lines), (command, lines)


# -- 2. the hot-list sender -----------------------------------------------------------------
def test_ca_init_issues_hq_push_with_a_hotlist_only_acl(hq: Path) -> None:
    from hq import cli as hq_cli
    from hq import config as hq_config

    cfg = hq_config.load(hq / "hq.toml")
    settings = hq_cli._broker_settings(cfg, "hq-push")  # what `alpr-hq push hotlist FILE` uses
    assert settings.cert_file.exists() and settings.key_file.exists() and settings.client_id == "hq-push"
    assert (settings.key_file.stat().st_mode & 0o777) == 0o600
    st = hq_state.load(hq)
    assert st.workers == ("hq-ingest-1",) and st.push_clients == ("hq-push",)
    acl = (hq / "broker" / "acl").read_text()
    block = acl.split("user hq-push\n", 1)[1].split("\n\n", 1)[0]
    assert block.splitlines() == [f"topic write {topics.ROOT}/+/hotlist"]
    ingest = acl.split("user hq-ingest-1\n", 1)[1].split("\n\n", 1)[0]
    assert f"topic read {topics.ROOT}/+/read" in ingest  # ingest workers keep what they had
    details = [d for _, _, action, _, d in enroll.audit(hq) if action == "ca-init"]
    assert "push=hq-push" in details[0]


def test_issue_hq_for_a_push_client_keeps_it_push_only_and_hints_the_push(
        hq: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # an HQ set up before ca init issued hq-push: its certificate is issued by hand
    hqsetup.revoke_worker(hq, "hq-push", actor="alice", reason="test: as if never issued")
    for name in ("hq-push.pem", "hq-push.key"):
        (hq / "tls" / name).unlink()
    assert "user hq-push" not in (hq / "broker" / "acl").read_text()
    rc, out, err = _run(capsys, "ca", "issue-hq", "--worker", "hq-push", "--dir", str(hq), "--actor", "alice")
    assert rc == 0, err
    assert "ingest --worker" not in out and "read every node" not in out
    then = out.split("then run: ", 1)[1].strip()
    argv = shlex.split(then)
    assert argv[argv.index("push"):] == ["push", "hotlist", "FILE"]
    assert hq_state.load(hq).push_clients == ("hq-push",) and hq_state.load(hq).workers == ("hq-ingest-1",)
    acl = (hq / "broker" / "acl").read_text()
    assert acl.split("user hq-push\n", 1)[1].split("\n\n", 1)[0].splitlines() == \
        [f"topic write {topics.ROOT}/+/hotlist"]
    # another sender names its --worker in the hint; an ingest worker still gets the ingest hint
    rc, out, _ = _run(capsys, "ca", "issue-hq", "--worker", "hq-push-2", "--dir", str(hq), "--actor", "alice")
    assert "push hotlist FILE --worker hq-push-2" in out
    rc, out, _ = _run(capsys, "ca", "issue-hq", "--worker", "hq-ingest-2", "--dir", str(hq), "--actor", "alice")
    assert "ingest --worker hq-ingest-2" in out and "push hotlist" not in out
    hqsetup.revoke_worker(hq, "hq-push-2", actor="alice", reason="done")
    assert "user hq-push-2" not in (hq / "broker" / "acl").read_text()
    assert hq_state.load(hq).push_clients == ("hq-push",)


def test_docs_name_the_push_certificate_and_the_real_push_path() -> None:
    records = (ROOT / "docs/records.md").read_text()
    assert "the node-side matcher are the integrator's" not in records
    assert "alpr-hq push hotlist" in records and "node/hotlist.py" in records
    readme = (ROOT / "README.md").read_text()
    push_line = next(line for line in readme.splitlines() if "alpr-hq push hotlist FILE" in line)
    assert "hq-push" in push_line
    assert "hq-push" in (ROOT / "docs/provisioning.md").read_text()


class _Client(Client):
    """tests/broker's client, recording also whether each message came retained."""

    def __init__(self, port: int, ca: Path, cert: Path, key: Path, client_id: str) -> None:
        super().__init__(port, ca, cert, key, client_id)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload, m.retain))


@pytest.mark.broker
def test_hq_push_pushes_hot_lists_through_the_real_broker_and_nothing_else(tmp_path: Path) -> None:
    from hq import cli as hq_cli
    from hq import config as hq_config
    from hq.push import push
    from provisioning.localbroker import LocalBroker, free_port

    port = free_port()
    hq_dir = tmp_path / "hq"
    setup = hqsetup.init_hq(hq_dir, actor="alice", broker_names=["127.0.0.1"], broker_port=port,
                            broker_bind="127.0.0.1", broker_user=ME)
    node = local.provision_node(hq_dir, tmp_path / "gate-1", "gate-1", site="north", actor="bob", extra_toml=LOCAL)
    broker = LocalBroker.existing(setup.broker_files, port)
    broker.start()
    clients: list[_Client] = []
    try:
        cfg = hq_config.load(hq_dir / "hq.toml")
        settings = hq_cli._broker_settings(cfg, "hq-push")
        assert push(settings, hq_dir / "registry.db", "hotlist", b"signed list v1", timeout=15) == ["gate-1"]
        d = node.data_dir
        gate = _Client(port, d / "tls/ca.pem", d / "tls/node.pem", d / "tls/node.key", "gate-1")
        clients.append(gate)
        gate.client.subscribe(topics.node_topic("gate-1", "hotlist"), qos=1)
        wait_for(lambda: gate.messages, 10, "the retained hot list")
        assert gate.messages[0][:2] == (topics.node_topic("gate-1", "hotlist"), b"signed list v1")
        assert gate.messages[0][2]  # retained
        # hq-push may do nothing else: no acks or config, no node's uplink
        tls = hq_dir / "tls"
        pusher = _Client(port, tls / "ca.pem", tls / "hq-push.pem", tls / "hq-push.key", "hq-push")
        clients.append(pusher)
        pusher.client.subscribe(f"{topics.ROOT}/+/+", qos=1)
        time.sleep(0.3)
        ack = pusher.client.publish(topics.node_topic("gate-1", "ack"), b"forged", qos=1).mid
        cfg_mid = pusher.client.publish(topics.node_topic("gate-1", "config"), b"forged", qos=1).mid
        wait_for(lambda: len(pusher.pubacks) == 2, 5, "two PUBACKs")
        assert pusher.pubacks[ack] == "Not authorized" and pusher.pubacks[cfg_mid] == "Not authorized"
        gate.client.publish(topics.node_topic("gate-1", "read"), b"sealed read", qos=1)
        time.sleep(0.5)
        assert not [m for m in pusher.messages if m[0].endswith("/read")]
    finally:
        for c in clients:
            c.close()
        broker.stop()


# -- 3. broker restart hint -----------------------------------------------------------------
def test_restart_hint_covers_the_service_and_mosquitto_c(hq: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    conf = hq.resolve() / "broker" / "mosquitto.conf"
    told = hqsetup.reload_broker(hq_state.load(hq))
    assert "sudo systemctl restart mosquitto" in told and f"mosquitto -c {conf}" in told
    local.provision_node(hq, tmp_path / "n1", "gate-1", actor="bob", extra_toml=LOCAL)
    rc, out, err = _run(capsys, "node", "revoke", "gate-1", "--reason", "stolen", "--dir", str(hq),
                        "--actor", "alice")
    assert rc == 0, err
    assert "systemctl restart mosquitto" in out and f"mosquitto -c {conf}" in out
    rc, out, _ = _run(capsys, "ca", "reload-broker", "--dir", str(hq), "--actor", "alice")
    assert rc == 0 and f"mosquitto -c {conf}" in out


# -- 5. node install --extra ----------------------------------------------------------------
FULL_SITE = """[source]
kind = "camera"

[camera]
fps = 30

[[triggers]]
name = "loop1"
pin = 17

[[triggers]]
name = "loop2"
pin = 27

[pipeline]
mode = "triggered"
"""

OUTPUTS_ONLY = """[pipeline]
mode = "continuous"

[outbox]
quota_mb = 100
"""


def test_install_extra_names_the_local_sections_it_drops(hq: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "n1"
    done = local.provision_node(hq, data, "gate-1", actor="bob",
                                extra_toml="[broker]\nbackoff_max_s = 2\n\n" + FULL_SITE)
    bundle = enroll.make_bundle(hq, "gate-1", actor="alice")
    extra = tmp_path / "outputs.toml"
    extra.write_text(OUTPUTS_ONLY)
    rc, out, err = _run(capsys, "node", "install", str(bundle), "--data-dir", str(data), "--actor", "bob",
                        "--config", str(done.config), "--extra", str(extra))
    assert rc == 0, err
    assert ("--extra replaces the local sections; dropped from the existing node.toml: [source], [camera], "
            "[[triggers]], [broker] backoff_max_s") in out
    assert str(done.config) + ".bak" in out  # where they can still be copied from
    assert "[camera]" in Path(str(done.config) + ".bak").read_text()
    log = [json.loads(line) for line in (data / nodeside.AUDIT).read_text().splitlines()]
    assert "dropped from" in log[-1]["detail"] and "[[triggers]]" in log[-1]["detail"]
    # back to the full site: now [outbox] of the last --extra goes; the same again drops nothing
    result = nodeside.install(bundle, data, actor="bob", config_path=done.config, extra_toml=FULL_SITE)
    assert result.dropped == ("[outbox]",)
    result = nodeside.install(bundle, data, actor="bob", config_path=done.config, extra_toml=FULL_SITE)
    assert result.dropped == () and result.dropped_kept_in is None
    # without --extra the local sections are kept, as before
    result = nodeside.install(bundle, data, actor="bob", config_path=done.config)
    assert result.dropped == () and "[[triggers]]" in done.config.read_text()


def test_docs_say_extra_replaces_the_local_sections() -> None:
    text = " ".join((ROOT / "docs/provisioning.md").read_text().split())
    assert "--extra FILE` replaces all of them" in text or "replaces all the local sections" in text
