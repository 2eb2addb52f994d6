"""`alpr-node outbox`: refuses a directory with no outbox, and leaves what it makes to the node's user."""
import os
import subprocess
import sys

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
    data = tmp_path / "data"
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
