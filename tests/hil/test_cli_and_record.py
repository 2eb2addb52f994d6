"""`alpr-hil` command line (synth, list, errors), scenario validation and recording with stand-ins."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from hardware.picamera2_backend import Picamera2Camera, Picamera2Config
from hardware.standin_gpio import StandinGPIO
from hardware.standin_picamera2 import StandinPicamera2Module
from hil import cli
from hil import scenario as scenarios
from hil.errors import BadScenario
from hil.record import RecordSettings, parse_pin, record

pytestmark = pytest.mark.hil


def test_synth_one_clip_into_a_folder(tmp_path: Path, capsys):
    assert cli.main(["synth", "false-trigger", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "false-trigger" / "clip.json").is_file()
    assert "49 frames" in capsys.readouterr().out


def test_unknown_names_are_usage_errors(capsys):
    assert cli.main(["synth", "no-such-clip"]) == 2
    assert cli.main(["run", "no-such-scenario"]) == 2
    err = capsys.readouterr().err
    assert "alpr-hil: error: unknown clip name(s) no-such-clip" in err
    assert "no-such-scenario: no such scenario file" in err and "day-3-vehicles" in err


def test_list_names_every_scenario(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "soak" in out and "(long)" in out and "power-cut" in out


@pytest.mark.parametrize("body, key", [
    ('[scenario]\nclip = "day-3-vehicles"\nspeeed = 1\n', "scenario.speeed: unknown key"),
    ('[scenario]\nclip = "nope"\n', "scenario.clip"),
    ('[scenario]\nclip = "day-3-vehicles"\n[[faults]]\nkind = "meteor"\nat_s = 1\n', "faults[0].kind"),
    ('[scenario]\nclip = "day-3-vehicles"\n[[faults]]\nkind = "power_cut"\nat_s = 1\n', "faults[0].duration_s"),
    ('[scenario]\nclip = "day-3-vehicles"\n[node]\nbroker = { port = 1 }\n', "node.broker"),
])
def test_bad_scenarios_name_file_and_key(tmp_path: Path, body: str, key: str):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(BadScenario) as info:
        scenarios.load(path)
    assert str(path) in str(info.value) and key in str(info.value)


def test_record_camera_and_loop_edges_with_stand_ins(tmp_path: Path):
    frames = StandinPicamera2Module(lambda i: np.full((360, 640, 3), (i * 7) % 255, np.uint8))
    gpio = StandinGPIO()
    config = Picamera2Config(main_size=(640, 360), lores_size=(320, 176), fps=20.0)
    stop = threading.Event()

    def drive() -> None:
        time.sleep(0.3)
        gpio.drive_low(17)   # vehicle arrives: active-low loop
        time.sleep(0.2)
        gpio.drive_high(17)
        time.sleep(0.2)
        stop.set()
    threading.Thread(target=drive, daemon=True).start()
    settings = RecordSettings(seconds=5.0, main_size=(640, 360), lores_size=(320, 176), fps=20.0,
                              pins=[parse_pin("17:loop1")])
    clip = record(tmp_path / "rec", settings, gpio_module=gpio,
                  camera_factory=lambda: Picamera2Camera(config, picamera2_module=frames), stop=stop)
    assert len(clip) >= 3
    edges = [(t.pin, t.edge, t.name) for t in clip.triggers]
    assert edges == [(17, "falling", "loop1"), (17, "rising", "loop1")]
    assert 0.1e9 < clip.triggers[1].t_ns - clip.triggers[0].t_ns < 0.6e9


def test_parse_pin():
    assert parse_pin("27:loop2") == (27, "loop2") and parse_pin("22") == (22, "gpio22")
    with pytest.raises(ValueError):
        parse_pin("40:x")


def test_drive_replays_loop_edges_on_mapped_outputs(tmp_path: Path):
    from hardware.clip import Clip
    from hil.drive import drive, parse_map
    from hil.scenario import CLIP_DIR

    clip = Clip.load(CLIP_DIR / "close-following")
    gpio = StandinGPIO()
    report = drive(clip, dict([parse_map("17=22"), parse_map("27=23")]), gpio_module=gpio, speed=8.0)
    assert [(pin, level) for _, pin, level in report.edges] == [
        (22 if t.pin == 17 else 23, 0 if t.edge == "falling" else 1) for t in clip.triggers]
    levels = [(c.pin, c.value) for c in gpio.output_history() if c.pin == 22]
    assert levels[0] == (22, 1) and (22, 0) in levels, "idle high (no vehicle), low while a vehicle is on the loop"
    assert report.worst_late_ms < 200
    with pytest.raises(ValueError, match="trigger pins \\[27\\]"):
        drive(clip, {17: 22}, gpio_module=StandinGPIO())


def test_repeating_faults_expand_until_the_clip_ends(tmp_path: Path):
    path = tmp_path / "soakish.toml"
    path.write_text('[scenario]\nclip = "false-trigger"\nrepeat = 10\n'
                    '[[faults]]\nkind = "broker_outage"\nat_s = 5\nduration_s = 2\nevery_s = 20\n')
    s = scenarios.load(path)
    # the clip is 6.125 s long, x10 = 61.25 s: outages at 5, 25, 45
    assert [(f.at_s, f.duration_s) for f in s.faults] == [(5.0, 2.0), (25.0, 2.0), (45.0, 2.0)]
    path.write_text('[scenario]\nclip = "false-trigger"\n[[faults]]\nkind = "broker_outage"\nat_s = 5\n'
                    'duration_s = 2\nevery_s = 1\n')
    with pytest.raises(BadScenario, match="faults\\[0\\].every_s"):
        scenarios.load(path)
