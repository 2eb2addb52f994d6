"""Node configuration errors name the file, the key and what is wrong."""
import subprocess
import sys
from pathlib import Path

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
    # trigger regions: four fractions of the frame, a box with room inside
    (GOOD + '[[triggers]]\nname = "a"\npin = 17\nregion = [0, 0, 0.5]\n',
     "triggers.0.region: Value error, give four numbers [x0, y0, x1, y1] (got 3)"),
    (GOOD + '[[triggers]]\nname = "a"\npin = 17\nregion = [0, 0, 960, 1080]\n',
     "triggers.0.region: Value error, [x0, y0, x1, y1] are fractions of the frame, each from 0 to 1, not pixels"),
    (GOOD + '[[triggers]]\nname = "a"\npin = 17\nregion = [0.5, 0, 0.5, 1]\n',
     "triggers.0.region: Value error, [x0, y0, x1, y1] needs x0 < x1 and y0 < y1"),
    (GOOD + '[[triggers]]\nname = "a"\npin = 17\nregion = "left"\n', "triggers.0.region: Input should be a valid"),
    (GOOD + '[[triggers]]\nname = "a"\npin = 17\nregoin = [0, 0, 1, 1]\n', "triggers.0.regoin: unknown key"),
    ("shutdown_timeout_s = 60\n" + GOOD, "shutdown_timeout_s: Input should be less than or equal to 15"),
    # frames are what fills memory: more than the service's MemoryMax leaves them is refused
    (GOOD + "queue_size = 20\n", "pipeline.queue_size: 20 frames of 1920 x 1080 can hold 276 MB"),
    (GOOD + "[camera]\nmain_size = [4608, 2592]\n", "use at most 2, or a smaller camera.main_size"),
    (GOOD + '[[triggers]]\nname = ""\npin = 17\n', "triggers.0.name: String should have at least 1 character"),
])
def test_errors_name_the_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(BadConfig) as info:
        node_config.load(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_trigger_region_is_optional_and_reaches_the_pipeline(tmp_path):
    from node.pipeline_factory import make_pipeline

    clip = Path(__file__).resolve().parents[2] / "hil" / "clips" / "day-3-vehicles"
    cfg = node_config.load(write(tmp_path, GOOD + f'[source]\nkind = "clip"\nclip = "{clip}"\n'
                                 '[[triggers]]\nname = "loop1"\npin = 17\nregion = [0, 0.25, 0.5, 1]\n'
                                 '[[triggers]]\nname = "loop2"\npin = 27\nlane = "2"\n'))
    assert [t.region for t in cfg.triggers] == [(0.0, 0.25, 0.5, 1.0), None]
    cam = make_pipeline(cfg, sink=None)  # built, not started
    try:
        assert cam.pipeline.triggers["loop1"].region == (0.0, 0.25, 0.5, 1.0)
        assert cam.pipeline.triggers["loop2"].region is None and cam.pipeline.triggers["loop2"].lane == "2"
    finally:
        for pin in cam.inputs + cam.outputs:
            pin.close()


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



def test_queue_size_that_fits_is_accepted(tmp_path):
    cfg = node_config.load(write(tmp_path, GOOD + "queue_size = 14\n"))
    assert cfg.pipeline.queue_size == 14
    assert node_config.frame_buffer_bytes((1920, 1080), (640, 352), 14) <= node_config.FRAME_BUFFER_BUDGET_BYTES


def test_a_trigger_without_a_lane_is_in_the_nodes_lane(tmp_path):
    text = GOOD.replace('site = "s1"\n', 'site = "s1"\nlane = "2"\n') + (
        '[[triggers]]\nname = "a"\npin = 17\n[[triggers]]\nname = "b"\npin = 27\nlane = "3"\n')
    cfg = node_config.load(write(tmp_path, text))
    assert [t.lane for t in cfg.triggers] == ["2", "3"]
    cfg = node_config.load(write(tmp_path, GOOD + '[[triggers]]\nname = "a"\npin = 17\n'))
    assert cfg.triggers[0].lane == "1"


def test_the_example_config_follows_the_wiring_table():
    """docs/hardware.md wires the IR beam receiver to BCM 22, the illuminator to 23 and the LED
    to 24: the example must not drive an input's pin as an output."""
    example = Path(__file__).resolve().parents[2] / "node" / "examples" / "node.toml"
    import tomllib
    outputs = tomllib.loads(example.read_text())["outputs"]
    assert (outputs["ir_pin"], outputs["led_pin"]) == (23, 24)


def test_the_example_checks_with_toml_only():
    """A technician can check a site.toml, or the example, before the node is provisioned."""
    example = Path(__file__).resolve().parents[2] / "node" / "examples" / "node.toml"
    out = subprocess.run([sys.executable, "-m", "node.cli", "check-config", "--toml-only", "--config", str(example)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "settings ok (node node-0001" in out.stdout and "not checked (--toml-only)" in out.stdout
