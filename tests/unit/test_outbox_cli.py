"""`alpr-node outbox`: refuses a directory with no outbox, and leaves what it makes to the node's user."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from transport.outbox import Outbox

pytestmark = pytest.mark.unit


def cli(*args):
    return subprocess.run([sys.executable, "-m", "node.cli", "outbox", *args], capture_output=True, text=True)


def test_a_mistyped_data_dir_is_refused_and_left_alone(tmp_path):
    for action in ("status", "salvage"):
        res = cli(action, "--data-dir", str(tmp_path / "typo"))
        assert res.returncode != 0
        assert "typo/outbox.db: no outbox here" in res.stderr
    assert not (tmp_path / "typo").exists()


def test_salvage_leaves_the_outbox_to_the_data_dirs_owner(tmp_path):
    # As root the command works as the data dir's owner: that user must be able to reach it
    # (pytest's own folders are root's, 0700), as /var/lib/alpr-node is reachable on a node.
    import shutil
    import tempfile
    base = Path(tempfile.mkdtemp(prefix="alpr-outbox-cli-", dir="/tmp"))
    base.chmod(0o711)
    try:
        _salvage_as_owner(base)
    finally:
        shutil.rmtree(base)


def _salvage_as_owner(base):
    data = base / "data"
    data.mkdir()
    box = Outbox(data / "outbox.db")
    for _ in range(3):
        box.commit("read", lambda seq: b"x" * 10)
    box.close()
    # As root (sudo), the node's data dir belongs to its service user: stand in with nobody.
    uid, gid = (65534, 65534) if os.geteuid() == 0 else (os.geteuid(), os.getegid())
    for item in [data, *data.iterdir()]:
        os.chown(item, uid, gid)
    res = cli("salvage", "--data-dir", str(data))
    assert res.returncode == 0, res.stderr
    assert "recovered 3 messages" in res.stdout
    made = [p for p in data.iterdir() if p.name.startswith(("outbox.db", "sequence.reserved"))]
    assert made and all(p.stat().st_uid == uid and p.stat().st_gid == gid for p in made)
    if os.geteuid() == 0:
        assert "working as the data directory's owner" in res.stderr


def test_handing_back_as_root_never_follows_a_planted_link(tmp_path, monkeypatch):
    # The service user owns the data dir and can plant links named like outbox files; root
    # running `sudo alpr-node outbox status` must not chown their targets (say /etc/shadow).
    from node.commands import outbox as outbox_cmd

    data = tmp_path / "data"
    data.mkdir()
    Outbox(data / "outbox.db").close()
    secret = tmp_path / "shadow"
    secret.write_text("root's\n")
    (data / "outbox.db-planted").symlink_to(secret)
    hard = data / "outbox.db-hard"
    os.link(secret, hard)
    chowned = []
    monkeypatch.setattr(outbox_cmd.os, "geteuid", lambda: 0)
    # as if the data dir belonged to the service user and everything in it to root
    real_stat = type(data).stat
    monkeypatch.setattr(type(data), "stat", lambda self, **kw: os.stat_result((0o40700, 0, 0, 2, 65534, 65534, 0, 0, 0, 0))
                        if self == data else real_stat(self, **kw))
    monkeypatch.setattr(outbox_cmd.os, "chown", lambda path, uid, gid, **kw: chowned.append((str(path), kw)))
    outbox_cmd._give_back(data)
    names = {os.path.basename(p) for p, _ in chowned}
    assert "outbox.db" in names
    assert "outbox.db-planted" not in names and "outbox.db-hard" not in names
    assert all(kw.get("follow_symlinks") is False for _, kw in chowned)


def test_salvage_as_root_repairs_outbox_files_a_root_run_left_behind(tmp_path):
    """An older release let `alpr-node run` run as root, leaving root-owned outbox files in the
    service user's folder: `sudo alpr-node outbox salvage` must still work (it works as the
    folder's owner, so those files go to the owner first)."""
    if os.geteuid() != 0:
        pytest.skip("root-only: the case is files root left behind")
    import shutil
    import tempfile
    base = Path(tempfile.mkdtemp(prefix="alpr-outbox-cli-", dir="/tmp"))
    base.chmod(0o711)
    try:
        data = base / "data"
        data.mkdir()
        box = Outbox(data / "outbox.db")
        box.commit("read", lambda seq: b"x" * 10)
        box.close()
        os.chown(data, 65534, 65534)  # the folder is the service user's; its files still root's
        res = cli("salvage", "--data-dir", str(data))
        assert res.returncode == 0, res.stderr
        assert all(p.stat().st_uid == 65534 for p in data.iterdir() if p.name.startswith("outbox.db"))
    finally:
        shutil.rmtree(base)
