"""Technician walkthrough, round 20: what the docs told the reviewer to do, done literally.

2. `ca retire-hpke` was refused for ever once a node was revoked (it can never send a message
   sealed for the new key); now a revoked node past its grace period is skipped, and named.
3. `check-config --toml-only` refused the docs' site.toml (no [node]); `node install --extra`
   wrote a node.toml with a typo that check-config then refused.
4. A failing `--broker-reload` command hid that the revocation was done; the command could not
   be changed; mosquitto.conf had no pid_file to signal the broker by.
5. `--out` onto a stick that is not mounted made the folder on the SD card and said "carry it".
6. install's `next:` said `alpr-node run` without `sudo -u <service user>`.
"""
from __future__ import annotations

import getpass
import json
import re
import sys
import time
from pathlib import Path

import pytest

from provisioning import broker, cli, enroll, hqsetup, local, nodeside
from provisioning import state as hq_state
from provisioning.errors import ProvisioningError, ReloadFailed, StateError
from tests.unit.test_provisioning_root_writes import _never_write_etc, hq  # noqa: F401  (fixtures)
from transport.key_usage import KeyUsage
from transport.registry import Registry

pytestmark = pytest.mark.unit
ME = getpass.getuser()
ROOT = Path(__file__).resolve().parents[2]
LOCAL = '[pipeline]\nmode = "continuous"\n'
HOUR_NS = 3600 * 10**9


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _doc_site_toml() -> str:
    text = (ROOT / "docs/provisioning.md").read_text()
    return re.search(r"```toml\n(# site.toml.*?)```", text, re.DOTALL).group(1)


# -- 2. retire-hpke and revoked nodes --------------------------------------------------------
def _revoked_sealing_for_old_key(hq: Path, tmp_path: Path, revoked_hours_ago: float) -> str:
    """gate-1 revoked `revoked_hours_ago`, its last message sealed for the old key; gate-2 moved on."""
    local.provision_node(hq, tmp_path / "n1", "gate-1", actor="bob", extra_toml=LOCAL)
    n2 = local.provision_node(hq, tmp_path / "n2", "gate-2", actor="bob", extra_toml=LOCAL)
    old = hq_state.load(hq).hpke_current
    new, _ = hqsetup.rotate_hpke(hq, actor="alice")
    nodeside.install(enroll.make_bundle(hq, "gate-2", actor="alice"), n2.data_dir, actor="bob")
    usage = KeyUsage(hq / "keys" / "hpke-used-hq-ingest-1.json")
    usage.saw("gate-1", old)
    usage.saw("gate-2", new)
    usage.flush(force=True)
    registry = Registry(hq / "registry.db")
    try:
        registry.revoke("gate-1", actor="alice", reason="stolen",
                        at_ns=time.time_ns() - int(revoked_hours_ago * HOUR_NS))
    finally:
        registry.close()
    return old


def test_retire_hpke_skips_a_revoked_node_whose_grace_is_over(hq: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    old = _revoked_sealing_for_old_key(hq, tmp_path, revoked_hours_ago=25)  # default grace: 24 h
    rc, out, err = _run(capsys, "ca", "retire-hpke", old, "--dir", str(hq), "--actor", "alice")
    assert rc == 0, err
    assert f"deleted {hq.resolve() / 'keys' / f'hq-hpke-{old}.key'}" in out
    assert "skipped revoked nodes whose revocation grace period is over" in out and "gate-1 (grace ended " in out
    assert not (hq / "keys" / f"hq-hpke-{old}.key").exists()
    details = [d for _, _, action, _, d in enroll.audit(hq) if action == "retire-hpke"]
    assert details == [f"key={old} skipped revoked nodes past their grace: gate-1"]


def test_retire_hpke_still_waits_for_a_revoked_node_within_its_grace(hq: Path, tmp_path: Path) -> None:
    old = _revoked_sealing_for_old_key(hq, tmp_path, revoked_hours_ago=2)
    with pytest.raises(StateError, match=r"sealed for key .*: gate-1 \(last .*; revoked: HQ accepts the reads it "
                                         r"queued before until .*, then it is left out\)"):
        hqsetup.retire_hpke(hq, old, actor="alice")
    assert (hq / "keys" / f"hq-hpke-{old}.key").exists()
    # hq.toml's own grace decides: one hour is over after two
    hq_toml = hq / "hq.toml"
    hq_toml.write_text(hq_toml.read_text().replace("[ingest]\n", "[ingest]\nrevocation_grace_h = 1\n"))
    done = hqsetup.retire_hpke(hq, old, actor="alice")
    assert set(done.skipped) == {"gate-1"} and done.forced_for == ()


def test_retire_hpke_reads_the_grace_hq_ingest_uses(hq: Path) -> None:
    from hq.config import IngestSection
    assert hqsetup.DEFAULT_REVOCATION_GRACE_H == IngestSection.model_fields["revocation_grace_h"].default
    state = hq_state.load(hq)
    assert hqsetup.revocation_grace_s(state) == hqsetup.DEFAULT_REVOCATION_GRACE_H * 3600
    (hq / "hq.toml").write_text((hq / "hq.toml").read_text().replace("[ingest]\n",
                                                                       '[ingest]\nrevocation_grace_h = "x"\n'))
    with pytest.raises(StateError, match=r"hq.toml: \[ingest\] revocation_grace_h: expected a number"):
        hqsetup.revocation_grace_s(state)


# -- 3. site.toml checks ---------------------------------------------------------------------
def test_check_config_toml_only_accepts_the_docs_site_toml(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from node import cli as node_cli
    site = tmp_path / "site.toml"
    site.write_text(_doc_site_toml())
    assert node_cli.main(["check-config", "--toml-only", "--config", str(site)]) == 0
    out = capsys.readouterr().out
    assert "settings ok" in out and "placeholder [node]" in out
    # still a real check: a typo in a site.toml is refused
    site.write_text(_doc_site_toml().replace("window_after_s", "window_afer_s"))
    assert node_cli.main(["check-config", "--toml-only", "--config", str(site)]) != 0
    assert "pipeline.window_afer_s: unknown key (typo?)" in capsys.readouterr().err
    # without --toml-only a file without [node] says what it may be
    site.write_text(_doc_site_toml())
    assert node_cli.main(["check-config", "--config", str(site)]) != 0
    assert "a site.toml? Check it with --toml-only" in capsys.readouterr().err


def test_install_extra_with_a_typo_changes_nothing(hq: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "n1"
    node = local.provision_node(hq, data, "gate-1", actor="bob", extra_toml=_doc_site_toml())
    assert node.config == data.resolve() / "node.toml"
    rc, _, err = _run(capsys, "node", "install", str(node.bundle), "--data-dir", str(data), "--actor", "bob",
                      "--config", str(node.config), "--extra", str(_typo(tmp_path)))
    before = node.config.read_text()
    assert rc == 2
    assert "pipeline.window_afer_s: unknown key (typo?)" in err and f"--extra {tmp_path / 'typo.toml'}" in err
    assert f"{node.config} is unchanged" in err
    assert node.config.read_text() == before and "window_after_s" in before


def _typo(tmp_path: Path) -> Path:
    path = tmp_path / "typo.toml"
    path.write_text(_doc_site_toml().replace("window_after_s", "window_afer_s"))
    return path


def test_install_extra_refusal_comes_before_any_file_is_written(hq: Path, tmp_path: Path) -> None:
    data = tmp_path / "n1"
    made = nodeside.keygen(data, "gate-1", actor="bob", hq_key_id=local.hq_key_id(hq))
    enroll.enroll(hq, made.request, site="north", actor="alice")
    bundle = enroll.make_bundle(hq, "gate-1", actor="alice")
    with pytest.raises(ProvisioningError, match=r"window_afer_s: unknown key"):
        nodeside.install(bundle, data, actor="bob", extra_toml=_typo(tmp_path).read_text(), check_config=True)
    for rel in (nodeside.TLS_CERT, nodeside.HQ_SIGN, nodeside.INSTALLED, nodeside.LEGACY_CONFIG):
        assert not (data / rel).exists(), rel


def test_install_without_extra_warns_about_a_node_toml_that_will_not_run(hq: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "n1"
    made = nodeside.keygen(data, "gate-1", actor="bob", hq_key_id=local.hq_key_id(hq))
    enroll.enroll(hq, made.request, site="north", actor="alice")
    bundle = enroll.make_bundle(hq, "gate-1", actor="alice")
    config = tmp_path / "node.toml"
    rc, _, err = _run(capsys, "node", "install", str(bundle), "--data-dir", str(data), "--actor", "bob",
                        "--config", str(config))
    assert rc == 0 and config.exists()  # the certificate is installed: the site sections come next
    assert "does not pass `alpr-node check-config --toml-only` yet" in err and "[[triggers]]" in err


# -- 4. broker reload ------------------------------------------------------------------------
def _failing_reload(hq: Path) -> None:
    hq_state.load(hq).with_(broker_reload=f'{sys.executable} -c "raise SystemExit(3)"').save()


def test_a_failed_reload_says_the_revocation_is_done(hq: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    local.provision_node(hq, tmp_path / "n1", "gate-1", actor="bob", extra_toml=LOCAL)
    _failing_reload(hq)
    rc, out, err = _run(capsys, "node", "revoke", "gate-1", "--reason", "stolen", "--dir", str(hq),
                        "--actor", "alice")
    assert rc == 1
    assert "revoked node gate-1" in out and "CRL written to" in out  # printed before the reload ran
    assert "revoked; broker not reloaded:" in err and "exited 3" in err
    assert "fix the command, then run `alpr-provision ca reload-broker" in err
    assert Registry(hq / "registry.db").node("gate-1").status == "revoked"
    actions = [a for _, _, a, n, _ in enroll.audit(hq, node_id="gate-1")]
    assert "revoke" in actions and "crl" in actions and "broker-reload-failed" in actions
    # the library says the same
    local.provision_node(hq, tmp_path / "n2", "gate-2", actor="bob", extra_toml=LOCAL)
    with pytest.raises(ReloadFailed, match="node gate-2 revoked .*broker not reloaded") as caught:
        enroll.revoke(hq, "gate-2", actor="alice", reason="stolen")
    assert caught.value.done.record.status == "revoked"


def test_ca_crl_reports_the_crl_before_a_failing_reload(hq: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _failing_reload(hq)
    rc, out, err = _run(capsys, "ca", "crl", "--dir", str(hq), "--actor", "alice")
    assert rc == 1 and "wrote a fresh CRL" in out and "fresh CRL written; broker not reloaded" in err


def test_the_reload_command_can_be_changed(hq: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _failing_reload(hq)
    marker = tmp_path / "reloaded"
    command = f"{sys.executable} -c \"open('{marker}', 'w').write('ok')\""
    rc, out, err = _run(capsys, "ca", "reload-broker", "--set-command", command, "--dir", str(hq), "--actor", "alice")
    assert rc == 0, err
    assert "reload command saved" in out and "without a shell" in out and marker.read_text() == "ok"
    assert hq_state.load(hq).broker_reload == command
    assert any(a == "set-reload" for _, _, a, _, _ in enroll.audit(hq))
    rc, out, _ = _run(capsys, "ca", "reload-broker", "--set-command", "", "--dir", str(hq), "--actor", "alice")
    assert rc == 0 and "reload command removed" in out and "mosquitto -c" in out
    assert hq_state.load(hq).broker_reload == ""


@pytest.mark.parametrize("command", ["kill -HUP $(cat /var/lib/alpr-hq/broker/mosquitto.pid)",
                                     "systemctl reload mosquitto && echo ok", "kill -HUP $PID", "echo 'x",
                                     "systemctl restart mosquitto; echo done", "systemctl reload mosquitto >/dev/null"])
def test_a_reload_command_that_needs_a_shell_is_refused_when_saved(hq: Path, tmp_path: Path, command: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(capsys, "ca", "reload-broker", "--set-command", command, "--dir", str(hq), "--actor", "alice")
    assert rc == 2 and "--set-command" in err
    assert hq_state.load(hq).broker_reload == ""
    with pytest.raises(ProvisioningError, match="--broker-reload"):
        hqsetup.init_hq(tmp_path / "hq2", actor="alice", broker_reload=command, broker_user=ME)
    # a shell asked for by name is the technician's choice
    assert hqsetup.check_reload_command("sh -c 'kill -HUP \"$(cat /run/m.pid)\"'")[0] == "sh"


def test_mosquitto_conf_names_a_pid_file_and_the_conf_d_fragment_does_not(hq: Path) -> None:
    folder = hq.resolve() / "broker"
    conf = (folder / "mosquitto.conf").read_text()
    assert f"pid_file {folder / broker.PID_FILE}\n" in conf
    assert "pid_file" not in (folder / broker.INCLUDE_NAME).read_text().replace(
        ", ".join(broker.PROCESS_OPTIONS), "")
    assert hqsetup.pid_file(hq_state.load(hq)) == folder / "mosquitto.pid"


# -- 5. --out onto a stick that is not there ---------------------------------------------------
def test_out_into_a_missing_folder_is_refused_before_anything_is_made(hq: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    data, usb = tmp_path / "n1", tmp_path / "media" / "usb"
    rc, _, err = _run(capsys, "node", "keygen", "--data-dir", str(data), "--node-id", "gate-1", "--actor", "bob",
                      "--out", str(usb / "gate-1.json"))
    assert rc == 2 and f"folder {usb} does not exist (is the stick mounted?)" in err
    assert not usb.exists() and not data.exists()
    made = nodeside.keygen(data, "gate-1", actor="bob", hq_key_id=local.hq_key_id(hq))
    enroll.enroll(hq, made.request, site="north", actor="alice")
    rc, _, err = _run(capsys, "node", "bundle", "gate-1", "--dir", str(hq), "--actor", "alice",
                      "--out", str(usb / "gate-1.alprbundle"))
    assert rc == 2 and "is the stick mounted?" in err and not usb.exists()
    assert not any(a == "bundle" for _, _, a, _, _ in enroll.audit(hq))
    rc, _, err = _run(capsys, "node", "rotate-key", "--data-dir", str(data), "--actor", "bob",
                      "--out", str(usb / "rotate.json"))
    assert rc == 2 and "is the stick mounted?" in err and not (data / nodeside.NEXT_SIGN_KEY).exists()
    # a folder given as --out is named as one
    rc, _, err = _run(capsys, "node", "bundle", "gate-1", "--dir", str(hq), "--actor", "alice", "--out", str(tmp_path))
    assert rc == 2 and "is a folder; give the file's name in it" in err


def test_out_onto_an_empty_mount_point_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    media = tmp_path / "media"
    (media / "usb").mkdir(parents=True)  # the mount point is there; nothing is mounted on it
    monkeypatch.setattr(cli, "REMOVABLE_ROOTS", (media,))
    rc, _, err = _run(capsys, "node", "keygen", "--data-dir", str(tmp_path / "n1"), "--node-id", "gate-1",
                      "--actor", "bob", "--out", str(media / "usb" / "gate-1.json"))
    assert rc == 2 and "on this machine's own disk, not on a mounted stick" in err
    assert not (tmp_path / "n1").exists()


def test_keygen_out_says_where_the_request_is_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "n1"
    rc, out, err = _run(capsys, "node", "keygen", "--data-dir", str(data), "--node-id", "gate-1", "--actor", "bob",
                        "--out", str(tmp_path / "gate-1.json"))
    assert rc == 0, err
    kept = data.resolve() / nodeside.REQUEST
    assert f"also kept as {kept}" in out and kept.read_bytes() == (tmp_path / "gate-1.json").read_bytes()


# -- 6. install's next step runs alpr-node as the service user -------------------------------------
def test_install_next_runs_alpr_node_as_the_service_user(hq: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "n1"
    made = nodeside.keygen(data, "gate-1", actor="bob", hq_key_id=local.hq_key_id(hq))
    # as keygen --user alpr leaves it (chown needs root: only node.json's record matters here)
    meta = data / nodeside.META
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "user": "alpr"}))
    enroll.enroll(hq, made.request, site="north", actor="alice")
    bundle = enroll.make_bundle(hq, "gate-1", actor="alice")
    site = tmp_path / "site.toml"
    site.write_text(LOCAL)
    config = tmp_path / "node.toml"
    rc, out, err = _run(capsys, "node", "install", str(bundle), "--data-dir", str(data), "--actor", "bob",
                        "--config", str(config), "--extra", str(site))
    assert rc == 0, err
    assert (f"next: sudo -u alpr alpr-node check-config --config {config}; "
            f"then sudo -u alpr alpr-node run --config {config}") in out
    # the default config: the systemd unit's user
    rc, out, err = _run(capsys, "node", "install", str(bundle), "--data-dir", str(data), "--actor", "bob",
                        "--extra", str(site))
    assert rc == 0, err
    assert f"next: sudo -u alpr alpr-node check-config --config {nodeside.DEFAULT_CONFIG}" in out


def test_install_next_without_a_service_user_is_the_plain_command(hq: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    node = local.provision_node(hq, tmp_path / "n1", "gate-1", actor="bob", extra_toml=LOCAL)
    rc, out, err = _run(capsys, "node", "install", str(node.bundle), "--data-dir", str(node.data_dir),
                        "--actor", "bob", "--config", str(node.config))
    assert rc == 0, err
    assert f"next: alpr-node check-config --config {node.config}; then alpr-node run --config {node.config}" in out


# -- 7. the docs say where things are ------------------------------------------------------------
def test_provisioning_doc_names_where_requests_and_bundles_are_kept() -> None:
    text = (ROOT / "docs/provisioning.md").read_text()
    assert "/var/lib/alpr-node/provisioning/rotate-request.json" in text and "rotate-key" in text
    assert re.search(r"node rotate-key [^\n]*--out ", text)
    assert "sudo cp /var/lib/alpr-node/provisioning/request.json" in text
    assert "or, with `--out FILE`, only `FILE`" in text
    assert "run **without a shell**" in text and "ca reload-broker --set-command" in text
    assert "mosquitto.pid" in text and "pkill -HUP -F" in text
