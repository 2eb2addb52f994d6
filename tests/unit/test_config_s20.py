"""Node config values that cannot work are refused, naming the key, the entry and the value
(review s20, finding F6); a clip source's wiring is checked when the pipeline is built."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hardware.clip import CameraSettings, Clip, ClipWriter
from node import config as node_config
from node.errors import BadConfig

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
HEAD = '[node]\nid = "n1"\nsite = "s1"\ndata_dir = "data"\n'
LOOP = '[[triggers]]\nname = "loop1"\npin = 17\n'
CLOSE_FOLLOWING = ROOT / "hil" / "clips" / "close-following"


def load(tmp_path: Path, text: str) -> node_config.NodeConfig:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return node_config.load(path)


def refused(tmp_path: Path, text: str) -> str:
    """The one-line-per-problem error for `text`, with the file name taken off each line."""
    path = tmp_path / "node.toml"
    path.write_text(text)
    with pytest.raises(BadConfig) as info:
        node_config.load(path)
    return str(info.value).replace(f"{path}: ", "")


def make_clip(path: Path, fps: float = 10.0, pins: tuple[int, ...] = ()) -> Path:
    """A 1 s clip of blank frames with one loop pass on each of `pins`."""
    with ClipWriter(path, CameraSettings((64, 64), (64, 64), fps)) as w:
        for i in range(int(fps)):
            w.add_frame(np.zeros((64, 64, 3), np.uint8), int(i * 1e9 / fps))
        for pin in pins:
            w.add_trigger(pin, "falling", 100_000_000, name=f"loop{pin}")
            w.add_trigger(pin, "rising", 500_000_000, name=f"loop{pin}")
    return path


# -- floats are finite everywhere ----------------------------------------------------------

@pytest.mark.parametrize("text, key, value", [
    ("[health]\ninterval_s = inf\n", "health.interval_s", "inf"),
    ("[health]\ninterval_s = nan\n", "health.interval_s", "nan"),
    ("[source]\nspeed = inf\n", "source.speed", "inf"),
    ("[pipeline]\nwindow_before_s = nan\n", "pipeline.window_before_s", "nan"),
    ("[outbox]\nquota_mb = inf\n", "outbox.quota_mb", "inf"),
    ("[outbox]\nresend_after_s = inf\n", "outbox.resend_after_s", "inf"),
    ("[camera]\nanalogue_gain = nan\n", "camera.analogue_gain", "nan"),
    ("[source.synthetic]\nrate_hz = nan\n", "source.synthetic.rate_hz", "nan"),
    ('[[triggers]]\nname = "a"\npin = 17\nregion = [0, 0, inf, 1]\n', "triggers.0.region.2", "inf"),
])
def test_inf_and_nan_are_refused_naming_the_key_and_value(tmp_path: Path, text: str, key: str, value: str):
    message = refused(tmp_path, HEAD + ("" if "[[triggers]]" in text else LOOP) + text)
    assert f"{key}: Input should be a finite number, not {value}" in message


def test_the_heartbeat_comes_at_least_hourly(tmp_path: Path):
    assert "health.interval_s: Input should be less than or equal to 3600" in refused(
        tmp_path, HEAD + LOOP + "[health]\ninterval_s = 1e9\n")
    assert load(tmp_path, HEAD + LOOP + "[health]\ninterval_s = 3600\n").health.interval_s == 3600


# -- pass and track timing -----------------------------------------------------------------

def test_a_window_after_as_long_as_the_longest_pass_is_allowed(tmp_path: Path):
    # A pass whose input releases after max_window_s still gets window_after_s after the release
    # (node.pipeline), so configs that set max_window_s = 1 with the default 1 s still start.
    cfg = load(tmp_path, HEAD + LOOP + "[pipeline]\nwindow_after_s = 1\nmax_window_s = 1\n")
    assert (cfg.pipeline.window_after_s, cfg.pipeline.max_window_s) == (1, 1)


def test_track_timeout_must_outlive_a_frame_and_should_outlive_two(tmp_path: Path, caplog):
    message = refused(tmp_path, HEAD + LOOP + "[pipeline]\ntrack_timeout_s = 0.01\n")
    assert message.startswith("pipeline.track_timeout_s: 0.01 s is shorter than a frame period at 30 fps "
                              "(camera.fps), 0.0333 s: every frame would start a new track")
    assert message.endswith("use at least 0.034 s")
    # between one and two frame periods: it starts (configs that did so before still do), warned
    with caplog.at_level(logging.WARNING, logger="node.config"):
        assert load(tmp_path, HEAD + LOOP + "[pipeline]\ntrack_timeout_s = 0.05\n").pipeline.track_timeout_s == 0.05
    assert "shorter than 2 frame periods at 30 fps" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="node.config"):
        load(tmp_path, HEAD + LOOP + "[pipeline]\ntrack_timeout_s = 0.067\n")
    assert "frame period" not in caplog.text
    # a slower camera needs a longer timeout; a 3 fps camera with the default 0.6 s still starts
    assert "at 10 fps (camera.fps), 0.1 s" in refused(
        tmp_path, HEAD + LOOP + "[camera]\nfps = 10\nexposure_us = 1000\n[pipeline]\ntrack_timeout_s = 0.05\n")
    assert load(tmp_path, HEAD + LOOP + "[camera]\nfps = 3\n").camera.fps == 3
    # continuous mode at 1 Hz keeps a track open 2.5 s whatever track_timeout_s says
    load(tmp_path, HEAD + '[pipeline]\nmode = "continuous"\ndetect_rate_hz = 1\ntrack_timeout_s = 0.01\n')


def test_track_timeout_is_checked_against_the_clips_frame_rate(tmp_path: Path):
    clip = make_clip(tmp_path / "clip", fps=10.0, pins=(17,))
    text = HEAD + f'[source]\nkind = "clip"\nclip = "{clip}"\n[pipeline]\ntrack_timeout_s = 0.05\n'
    assert f"at 10 fps (camera.fps of the clip {clip}), 0.1 s" in refused(tmp_path, text)


def test_detect_rate_has_a_floor(tmp_path: Path):
    base = HEAD + '[pipeline]\nmode = "continuous"\n'
    message = refused(tmp_path, base + "detect_rate_hz = 1e-9\n")
    assert message.startswith("pipeline.detect_rate_hz: Value error, 1e-09 Hz: use 0 (detect on every frame) or at "
                              "least 0.01 Hz")
    assert load(tmp_path, base + "detect_rate_hz = 0\n").pipeline.detect_rate_hz == 0
    # 0.2 Hz (a car park watched every 5 s) was supported before and still is
    assert load(tmp_path, base + "detect_rate_hz = 0.2\n").pipeline.detect_rate_hz == 0.2


# -- triggers ------------------------------------------------------------------------------

def test_a_duplicate_trigger_name_is_named_with_its_entries(tmp_path: Path):
    message = refused(tmp_path, HEAD + LOOP + '[[triggers]]\nname = "loop1"\npin = 27\n')
    assert message == ("triggers.1.name: 'loop1' is also the name of triggers.0 ([[triggers]] entries 1 and 2): "
                       "trigger names must be unique")


def test_a_pin_used_twice_is_named_with_its_users(tmp_path: Path):
    message = refused(tmp_path, HEAD + LOOP + '[[triggers]]\nname = "loop2"\npin = 17\n')
    assert message == ("triggers.1.pin: BCM 17 is already used by triggers.0 ('loop1'): a BCM pin is used twice "
                       "(one pin is one input or one output)")
    message = refused(tmp_path, HEAD + LOOP + "[outputs]\nir_pin = 24\nled_pin = 24\n")
    assert message.startswith("outputs.led_pin: BCM 24 is already used by outputs.ir_pin: a BCM pin is used twice")
    message = refused(tmp_path, HEAD + LOOP + "[outputs]\nir_pin = 17\n")
    assert message.startswith("outputs.ir_pin: BCM 17 is already used by triggers.0 ('loop1')")


def test_a_triggered_clip_replay_needs_triggers_from_the_config_or_the_clip(tmp_path: Path):
    bare = make_clip(tmp_path / "bare")
    text = HEAD + f'[source]\nkind = "clip"\nclip = "{bare}"\n'
    message = refused(tmp_path, text)
    assert message.startswith("triggers: pipeline.mode = 'triggered' needs trigger inputs, and there is no "
                              f"[[triggers]] entry and the clip {bare} (source.clip) records no trigger edge")
    # the clip's own pins, or [[triggers]], or continuous mode will do
    wired = make_clip(tmp_path / "wired", pins=(17,))
    load(tmp_path, HEAD + f'[source]\nkind = "clip"\nclip = "{wired}"\n')
    load(tmp_path, text + LOOP)
    load(tmp_path, text + '[pipeline]\nmode = "continuous"\n')


def test_a_clip_that_cannot_be_read_yet_is_checked_when_the_pipeline_is_built(tmp_path: Path):
    from node.pipeline_factory import check_clip_wiring

    later = tmp_path / "later"
    cfg = load(tmp_path, HEAD + f'[source]\nkind = "clip"\nclip = "{later}"\n')   # not there yet
    make_clip(later)
    with pytest.raises(BadConfig) as info:
        check_clip_wiring(cfg, Clip.load(later))
    assert str(info.value).startswith("triggers: pipeline.mode = 'triggered' needs trigger inputs")
    fast = make_clip(tmp_path / "fast", fps=30.0, pins=(17,))
    cfg = load(tmp_path, HEAD + f'[source]\nkind = "clip"\nclip = "{tmp_path / "fast-later"}"\n'
                                '[pipeline]\ntrack_timeout_s = 0.02\n')
    with pytest.raises(BadConfig, match=r"pipeline.track_timeout_s: 0.02 s is shorter than a frame period at 30 fps"):
        check_clip_wiring(cfg, Clip.load(fast))


def test_make_pipeline_refuses_a_clip_with_nothing_to_trigger_on(tmp_path: Path):
    from node.pipeline_factory import make_pipeline

    later = tmp_path / "later"
    cfg = load(tmp_path, HEAD + f'[source]\nkind = "clip"\nclip = "{later}"\n')
    make_clip(later)
    with pytest.raises(BadConfig, match="records no trigger edge"):
        make_pipeline(cfg, sink=None)


def test_clip_pins_no_trigger_takes_are_named_once_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    from node.pipeline_factory import check_clip_wiring

    clip = Clip.load(CLOSE_FOLLOWING)     # loop1 on BCM 17, loop2 on BCM 27
    cfg = load(tmp_path, HEAD + f'[source]\nkind = "clip"\nclip = "{CLOSE_FOLLOWING}"\n' + LOOP)
    with caplog.at_level(logging.WARNING, logger="node.pipeline_factory"):
        check_clip_wiring(cfg, clip)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [(f"source.clip {CLOSE_FOLLOWING} records trigger edges on BCM 27 (loop2), which no "
                         "[[triggers]] entry takes: those edges are ignored; add a [[triggers]] entry (name, pin, "
                         "lane) for each")]
    caplog.clear()
    both = load(tmp_path, HEAD + f'[source]\nkind = "clip"\nclip = "{CLOSE_FOLLOWING}"\n' + LOOP
                + '[[triggers]]\nname = "loop2"\npin = 27\nlane = "2"\n')
    with caplog.at_level(logging.WARNING, logger="node.pipeline_factory"):
        check_clip_wiring(both, clip)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


# -- the examples and check-config ---------------------------------------------------------

@pytest.mark.parametrize("example", sorted((ROOT / "node" / "examples").glob("*.toml")), ids=lambda p: p.name)
def test_every_example_config_validates(example: Path):
    node_config.load(example)


def test_check_config_names_the_key_on_one_line(tmp_path: Path):
    path = tmp_path / "node.toml"
    path.write_text(HEAD + LOOP + '[[triggers]]\nname = "loop2"\npin = 17\n')
    out = subprocess.run([sys.executable, "-m", "node.cli", "check-config", "--toml-only", "--config", str(path)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    assert out.stderr == (f"alpr-node: error: {path}: triggers.1.pin: BCM 17 is already used by triggers.0 "
                          "('loop1'): a BCM pin is used twice (one pin is one input or one output)\n")


def test_the_config_knows_the_pipelines_track_rule():
    from node import pipeline

    assert node_config.TRACK_TIMEOUT_INTERVALS == pipeline.TRACK_TIMEOUT_INTERVALS


def test_camera_tuning_is_a_name_or_an_absolute_path():
    """picamera2 drops $LIBCAMERA_RPI_TUNING_FILE without a tuning argument: the config is the way."""
    from node.config import CameraSection

    assert CameraSection(tuning="imx708_noir.json").tuning == "imx708_noir.json"
    assert CameraSection(tuning="/usr/share/libcamera/ipa/rpi/pisp/imx708_noir.json").tuning.endswith("noir.json")
    with pytest.raises(ValueError, match="camera.tuning: 'tuning/imx708.json' is a relative path"):
        CameraSection(tuning="tuning/imx708.json")
