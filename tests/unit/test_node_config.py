"""Node configuration errors name the file, the key and what is wrong."""
import subprocess
import sys

import pytest

from node import config as node_config
from node.errors import BadConfig

pytestmark = pytest.mark.unit


def write(tmp_path, text):
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


GOOD = '[node]\nid = "n1"\nsite = "s1"\ndata_dir = "data"\n[pipeline]\nmode = "continuous"\n'


def test_good_config_and_relative_data_dir(tmp_path):
    cfg = node_config.load(write(tmp_path, GOOD))
    assert cfg.node.data_dir == (tmp_path / "data").resolve()
    assert cfg.path(None, "tls/ca.pem") == cfg.node.data_dir / "tls/ca.pem"


@pytest.mark.parametrize("text, expected", [
    (GOOD + "[outbox]\nquota_mb = -1\n", "outbox.quota_mb: Input should be greater than 0"),
    (GOOD + "[outbox]\nqouta_mb = 5\n", "outbox.qouta_mb: unknown key (typo?)"),
    ('[node]\nsite = "s1"\n', "node.id: Field required"),
    ('[node]\nid = "bad id/with slash"\nsite = "s"\n', "node.id: Value error, use 1-63 letters"),
    ('[node]\nid = "n1"\nsite = "s"\n', "triggers: pipeline.mode = 'triggered' needs at least one"),
    (GOOD + '[[triggers]]\nname = "a"\npin = 17\n[[triggers]]\nname = "b"\npin = 17\n', "a BCM pin is used twice"),
    (GOOD + '[[triggers]]\nname = "a"\npin = 40\n', "triggers.0.pin: Input should be less than or equal to 27"),
    (GOOD + '[source]\nkind = "clip"\n', "source.clip: required when source.kind = 'clip'"),
    (GOOD + '[source]\nkind = "webcam"\n', "source.kind: Input should be 'camera', 'clip' or 'synthetic'"),
    ("[node\nid=", "not valid TOML"),
    # settings the camera cannot honour are refused before the node runs, not retried forever
    (GOOD + "[camera]\nexposure_us = 50000\n", "camera.exposure_us: 50000 us is longer than a frame at camera.fps 30"),
    (GOOD + "[camera]\nlores_size = [2000, 352]\n", "camera.lores_size: 2000 x 352 is larger than camera.main_size"),
    (GOOD + "[camera]\nmain_size = [0, 1080]\n", "camera.main_size: 0 x 1080 is too small"),
    (GOOD + "[source]\nloop = true\n", "source.loop: unknown key"),
    ("shutdown_timeout_s = 60\n" + GOOD, "shutdown_timeout_s: Input should be less than or equal to 15"),
])
def test_errors_name_the_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(BadConfig) as info:
        node_config.load(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(BadConfig, match="config file not found"):
        node_config.load(tmp_path / "nope.toml")


def test_check_config_cli_reports_missing_keys_files(tmp_path):
    path = write(tmp_path, GOOD)
    out = subprocess.run([sys.executable, "-m", "node.cli", "check-config", "--config", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.startswith("alpr-node: error: keys:") and "node-sign.key" in out.stderr
    assert "alpr-provision node install" in out.stderr

