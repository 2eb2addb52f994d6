"""`alpr-node run` as root on the service user's data directory is refused, naming the user."""
from __future__ import annotations

import os

import pytest

from node.commands.run import _refuse_root_on_anothers_data
from node.errors import BadConfig

pytestmark = pytest.mark.unit


@pytest.mark.skipif(os.geteuid() != 0, reason="root-only: the check applies to root (chown needs root too)")
def test_root_on_a_data_directory_of_another_user_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _refuse_root_on_anothers_data(data)  # root's own folder: fine
    os.chown(data, 65534, 65534)
    with pytest.raises(BadConfig, match=r"belongs to .*this is root.*sudo -u"):
        _refuse_root_on_anothers_data(data)
    _refuse_root_on_anothers_data(tmp_path / "missing")  # made by the node itself: fine


def test_the_node_marks_itself_not_dumpable():
    """A core dump (a watchdog kill is a SIGABRT) would hold keys and plates in clear."""
    import subprocess
    import sys

    code = ("import ctypes; from node.commands.run import not_dumpable; assert not_dumpable(); "
            "print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))")  # 3: PR_GET_DUMPABLE
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"
