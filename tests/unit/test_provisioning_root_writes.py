"""Provisioning as root in folders another account owns: no symlink or hard link is followed.

`node keygen / rotate-key / install` run as root in the node's data dir, which the service
user owns; `ca init` and friends give HQ's broker folder to the broker's user. That user can
swap any entry there for a symlink (or a hard link) at any moment, e.g. between the write of
a key and its chown, so that root chowns, appends to or writes /etc/passwd instead. These tests
plant such links and check that the target is untouched and the error names the path.

Some need real root (to give files to another user); they are skipped otherwise. The others
call the same code with the current user's own uid, which needs no privilege and follows a
link exactly as root would.
"""
from __future__ import annotations

import getpass
import logging
import os
import pwd
import re
import stat
import tomllib
from pathlib import Path

import pytest

from provisioning import cli, enroll, hqsetup, local, nodeside, safefs
from provisioning import state as hq_state
from provisioning.errors import StateError
from transport import topics

pytestmark = pytest.mark.unit
ME = getpass.getuser()
SELF = (os.getuid(), os.getgid())
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another user needs root")


@pytest.fixture(autouse=True)
def _never_write_etc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`node install` defaults to /etc/alpr-node/node.toml: never the real one from a test."""
    monkeypatch.setattr(nodeside, "DEFAULT_CONFIG", tmp_path / "etc" / "alpr-node" / "node.toml")


@pytest.fixture
def hq(tmp_path: Path) -> Path:
    hq_dir = tmp_path / "hq"
    hqsetup.init_hq(hq_dir, actor="alice", broker_names=["127.0.0.1"], broker_port=18883, broker_user=ME)
    return hq_dir


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """Stands for /etc/passwd: a root-owned file the service user must never be handed."""
    path = tmp_path / "passwd"
    path.write_text("root:x:0:0:root:/root:/bin/bash\n")
    path.chmod(0o644)
    return path


def _untouched(victim: Path, before: os.stat_result) -> None:
    after = victim.stat()
    assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == \
        (before.st_uid, before.st_gid, stat.S_IMODE(before.st_mode))
    assert victim.read_text() == "root:x:0:0:root:/root:/bin/bash\n"


# -- chown after the write -----------------------------------------------------------------
def test_chown_after_the_rename_refuses_a_symlink_swapped_in(tmp_path: Path, victim: Path) -> None:
    data = tmp_path / "node"
    nodeside.keygen(data, "gate-1", actor="bob")
    before = victim.stat()
    key = data / nodeside.SIGN_KEY
    key.unlink()
    key.symlink_to(victim)  # what the service user does between root's rename and root's chown
    with pytest.raises(safefs.UnsafePath, match=re.escape(f"{key}: is a symbolic link")):
        nodeside._chown(data.resolve(), SELF, [key])
    _untouched(victim, before)


def test_chown_refuses_a_hard_link_to_a_file_elsewhere(tmp_path: Path, victim: Path) -> None:
    data = tmp_path / "node"
    nodeside.keygen(data, "gate-1", actor="bob")
    before = victim.stat()
    key = data / nodeside.SIGN_KEY
    key.unlink()
    os.link(victim, key)  # possible where fs.protected_hardlinks is off
    with pytest.raises(safefs.UnsafePath, match=re.escape(f"{key}: is a hard link")):
        nodeside._chown(data.resolve(), SELF, [key])
    _untouched(victim, before)


@root_only
def test_keygen_as_root_never_gives_the_service_user_a_file_it_swapped_in(
        tmp_path: Path, victim: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real race: keys written as root, then the key swapped for a symlink before the chown."""
    data = tmp_path / "node"
    before = victim.stat()
    real = nodeside.request.make_enroll

    def swap_then_continue(*args: object, **kwargs: object) -> object:
        key = data / nodeside.SIGN_KEY
        key.unlink()
        key.symlink_to(victim)
        return real(*args, **kwargs)
    monkeypatch.setattr(nodeside.request, "make_enroll", swap_then_continue)
    with pytest.raises(safefs.UnsafePath, match=re.escape(f"{data / nodeside.SIGN_KEY}: is a symbolic link")):
        nodeside.keygen(data, "gate-1", actor="bob", user="nobody")
    _untouched(victim, before)
    # what keygen did give away it gave through descriptors: the TLS key is nobody's, and 0600
    nobody = pwd.getpwnam("nobody").pw_uid
    tls = (data / nodeside.TLS_KEY).stat()
    assert tls.st_uid == nobody and stat.S_IMODE(tls.st_mode) == 0o600


@root_only
def test_keygen_as_root_still_gives_everything_to_the_service_user(tmp_path: Path) -> None:
    nodeside.keygen(tmp_path / "n1", "gate-1", actor="bob", user="nobody")
    nobody = pwd.getpwnam("nobody").pw_uid
    for rel in (nodeside.SIGN_KEY, nodeside.TLS_KEY, nodeside.TLS_CSR, nodeside.REQUEST, nodeside.META,
                "keys", "tls", "provisioning", "."):
        assert (tmp_path / "n1" / rel).stat().st_uid == nobody, rel
    # the audit log stays root's: the service user must not rewrite who did what
    assert (tmp_path / "n1" / nodeside.AUDIT).stat().st_uid == 0


# -- the audit log -------------------------------------------------------------------------
@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_audit_log_is_never_appended_through_a_link(tmp_path: Path, victim: Path, link: str) -> None:
    data = tmp_path / "node"
    log = data / nodeside.AUDIT
    log.parent.mkdir(parents=True)
    if link == "symlink":
        log.symlink_to(victim)
    else:
        os.link(victim, log)
    before = victim.stat()
    with pytest.raises(safefs.UnsafePath, match=re.escape(f"{log}: is a {'symbolic' if link == 'symlink' else 'hard'} link")):
        nodeside.keygen(data, "gate-1", actor="bob")
    _untouched(victim, before)


def test_audit_log_appends_as_before(tmp_path: Path) -> None:
    data = tmp_path / "node"
    nodeside.keygen(data, "gate-1", actor="bob")
    nodeside.rotate_key(data, actor="bob")
    lines = (data / nodeside.AUDIT).read_text().splitlines()
    assert [line.split('"action": "')[1].split('"')[0] for line in lines] == ["keygen", "rotate-key"]


# -- writes and reads inside the data dir -------------------------------------------------
def test_a_folder_swapped_for_a_symlink_is_not_written_through(tmp_path: Path) -> None:
    data = tmp_path / "node"
    data.mkdir()
    elsewhere = tmp_path / "etc-ssl"  # stands for a root folder where node.key / ca.pem would do harm
    elsewhere.mkdir()
    (data / "tls").symlink_to(elsewhere)
    with pytest.raises(safefs.UnsafePath, match=re.escape(f"{data / 'tls'}: is a symbolic link")):
        nodeside.keygen(data, "gate-1", actor="bob")
    assert list(elsewhere.iterdir()) == []


def test_install_does_not_copy_a_file_the_legacy_config_links_to(hq: Path, tmp_path: Path) -> None:
    """A symlinked DATA_DIR/node.toml must not make root copy a file into the world-readable config."""
    data = tmp_path / "node"
    made = nodeside.keygen(data, "gate-1", actor="bob", hq_key_id=local.hq_key_id(hq))
    enroll.enroll(hq, made.request, site="north", actor="alice")
    secret = tmp_path / "root-only.toml"
    secret.write_text('[database]\npassword = "hunter2"\n')
    secret.chmod(0o600)
    (data / nodeside.LEGACY_CONFIG).symlink_to(secret)
    config = tmp_path / "etc" / "node.toml"
    with pytest.raises(safefs.UnsafePath, match=re.escape(f"{data / nodeside.LEGACY_CONFIG}: is a symbolic link")):
        nodeside.install(enroll.make_bundle(hq, "gate-1", actor="alice"), data, actor="bob", config_path=config)
    assert not config.exists() or "hunter2" not in config.read_text()


def test_install_refuses_the_hq_key_folder_swapped_for_a_symlink(hq: Path, tmp_path: Path) -> None:
    node = local.provision_node(hq, tmp_path / "node", "gate-1", extra_toml='[pipeline]\nmode = "continuous"\n')
    bundle = enroll.make_bundle(hq, "gate-1", actor="alice")
    elsewhere = tmp_path / "elsewhere"
    (node.data_dir / "hq").rename(elsewhere)
    (node.data_dir / "hq").symlink_to(elsewhere)
    before = {p.name: p.read_bytes() for p in elsewhere.iterdir()}
    with pytest.raises(safefs.UnsafePath, match=re.escape(f"{node.data_dir / 'hq'}: is a symbolic link")):
        nodeside.install(bundle, node.data_dir, actor="bob")
    assert {p.name: p.read_bytes() for p in elsewhere.iterdir()} == before


def test_provisioning_still_works_end_to_end(hq: Path, tmp_path: Path) -> None:
    node = local.provision_node(hq, tmp_path / "node", "gate-1", extra_toml='[pipeline]\nmode = "continuous"\n')
    new = local.rotate_node_key(hq, node.data_dir)
    assert not (node.data_dir / nodeside.NEXT_SIGN_KEY).exists()
    assert stat.S_IMODE((node.data_dir / nodeside.SIGN_KEY).stat().st_mode) == 0o600
    assert f"rotated_to={new}" in (node.data_dir / nodeside.AUDIT).read_text()


# -- HQ's broker folder, given to the broker's user ------------------------------------------
@root_only
def test_broker_folder_handover_skips_a_symlink_the_broker_user_planted(
        hq: Path, victim: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = hq_state.load(hq).with_(broker_user="nobody")
    planted = state.broker_dir / "mosquitto.db"
    planted.symlink_to(victim)
    before = victim.stat()
    with caplog.at_level(logging.WARNING, logger="provisioning.hqsetup"):
        hqsetup.give_broker_files(state)
    _untouched(victim, before)
    assert f"{planted}: is a symbolic link" in caplog.text
    nobody = pwd.getpwnam("nobody").pw_uid
    assert state.broker_dir.stat().st_uid == nobody and (state.broker_dir / "server.key").stat().st_uid == nobody


# -- the ingest share group in hq.toml --------------------------------------------------------
def _group(hq_dir: Path) -> str:
    return tomllib.loads((hq_dir / "hq.toml").read_text())["ingest"]["share_group"]


def test_ca_init_writes_a_random_secret_share_group(tmp_path: Path) -> None:
    groups = []
    for name in ("hq1", "hq2"):
        hqsetup.init_hq(tmp_path / name, actor="alice", ca_dir=tmp_path / f"{name}-ca", broker_user=ME)
        groups.append(_group(tmp_path / name))
    for group in groups:
        assert re.fullmatch(r"hq-ingest-[0-9a-f]{32}", group)
        assert topics.ingest_subscriptions(group=group)[0].startswith(f"$share/{group}/")  # passes the topic rule
    assert groups[0] != groups[1] and topics.INGEST_GROUP not in groups
    from hq import config as hq_config  # what alpr-hq ingest will subscribe with
    assert hq_config.load(tmp_path / "hq1" / "hq.toml").ingest.share_group == groups[0]
    # the secret is not readable by anyone else on the HQ machine
    assert all((tmp_path / name / "hq.toml").stat().st_mode & 0o777 == 0o600 for name in ("hq1", "hq2"))


def test_ca_init_run_again_does_not_change_the_group(hq: Path) -> None:
    group = _group(hq)
    with pytest.raises(StateError, match="already initialised"):
        hqsetup.init_hq(hq, actor="alice")
    assert _group(hq) == group


def test_ca_init_keeps_the_group_an_existing_hq_toml_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hq_dir = tmp_path / "hq"
    hq_dir.mkdir()
    kept = "hq-ingest-0123456789abcdef0123456789abcdef"
    (hq_dir / "hq.toml").write_text(f'[hq]\ndata_dir = "{hq_dir}"\n\n[ingest]\nshare_group = "{kept}"\n')
    assert cli.main(["ca", "init", "--dir", str(hq_dir), "--broker-user", ME, "--actor", "alice"]) == 0
    assert _group(hq_dir) == kept
    assert "kept from the hq.toml already there" in capsys.readouterr().out


def test_ca_init_keeps_the_sites_own_settings_in_an_existing_hq_toml(tmp_path: Path) -> None:
    # [store] url and [records] retention_days are the site's (a retention shorter than the law
    # asks for would purge reads it must keep): init writes only what it owns.
    hq_dir = tmp_path / "hq"
    hq_dir.mkdir()
    (hq_dir / "hq.toml").write_text('[store]\nurl = "postgresql://alpr@db.example/alpr"\n\n'
                                    '[records]\nretention_days = 730\n\n[ingest]\nmax_future_skew_h = 6.0\n\n'
                                    '[broker]\nhost = "old.example"\n')
    hqsetup.init_hq(hq_dir, actor="alice", ca_dir=tmp_path / "ca", broker_user=ME, broker_names=["mqtt.hq.example"])
    written = tomllib.loads((hq_dir / "hq.toml").read_text())
    assert written["store"] == {"url": "postgresql://alpr@db.example/alpr"}
    assert written["records"] == {"retention_days": 730}
    assert written["ingest"]["max_future_skew_h"] == 6.0 and re.fullmatch(r"hq-ingest-[0-9a-f]{32}",
                                                                           written["ingest"]["share_group"])
    assert written["broker"]["host"] == "mqtt.hq.example"  # init's own section: its new certificates


def test_ca_init_refuses_an_hq_toml_it_cannot_carry_over(tmp_path: Path) -> None:
    hq_dir = tmp_path / "hq"
    hq_dir.mkdir()
    text = '[store]\nurl = "x"\n[store.options]\nsslmode = "require"\n'
    (hq_dir / "hq.toml").write_text(text)
    with pytest.raises(StateError, match="cannot be carried over"):
        hqsetup.init_hq(hq_dir, actor="alice", broker_user=ME)
    assert (hq_dir / "hq.toml").read_text() == text and not (hq_dir / "keys").exists()


@pytest.mark.parametrize("text", ['[ingest]\nshare_group = "a/b"\n', "[ingest]\nshare_group = 7\n", "[ingest\n"])
def test_ca_init_refuses_an_hq_toml_whose_group_it_cannot_keep(tmp_path: Path, text: str) -> None:
    hq_dir = tmp_path / "hq"
    hq_dir.mkdir()
    (hq_dir / "hq.toml").write_text(text)
    with pytest.raises(StateError, match=re.escape(str(hq_dir / "hq.toml"))):
        hqsetup.init_hq(hq_dir, actor="alice", broker_user=ME)
    assert (hq_dir / "hq.toml").read_text() == text  # nothing made, nothing replaced
    assert not hqsetup.default_ca_dir(hq_dir).exists() and not (hq_dir / "keys").exists()
