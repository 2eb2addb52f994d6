"""`alpr-hil` command line (synth, list, errors), scenario validation, recording with stand-ins
(failures leave no clip.json behind), driving without GPIO."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from hardware.errors import CameraDisconnected, GpioError
from hardware.picamera2_backend import Picamera2Camera, Picamera2Config
from hardware.standin_gpio import StandinGPIO
from hardware.standin_picamera2 import StandinPicamera2Module
from hil import cli
from hil import scenario as scenarios
from hil.errors import BadArgument, BadScenario, RecordingFailed
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
    ('[scenario]\nclip = "day-3-vehicles"\n[expect]\nmax_false_reads = -1\n', "expect.max_false_reads"),
    ('[scenario]\nclip = "day-3-vehicles"\n[expect]\nmax_false_reads = 0.5\n', "expect.max_false_reads"),
    (('[scenario]\nclip = "day-3-vehicles"\nspeed = 0\n[[faults]]\nkind = "camera_stall"\nat_s = 3\n'
      'duration_s = 3\n'), "faults[0].kind: camera_stall needs scenario.speed > 0"),
    (('[scenario]\nclip = "day-3-vehicles"\n[node]\ncamera = { capture_timeout_s = 10.0 }\n[[faults]]\n'
      'kind = "camera_stall"\nat_s = 3\nduration_s = 3\n'), "faults[0].duration_s: 3 s at speed 1 is not longer"),
])
def test_bad_scenarios_name_file_and_key(tmp_path: Path, body: str, key: str):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(BadScenario) as info:
        scenarios.load(path)
    assert str(path) in str(info.value) and key in str(info.value)


def test_max_false_reads_defaults_to_zero_and_is_read_from_expect(tmp_path: Path):
    path = tmp_path / "fr.toml"
    path.write_text('[scenario]\nclip = "false-trigger"\n')
    assert scenarios.load(path).expect.max_false_reads == 0
    path.write_text('[scenario]\nclip = "false-trigger"\n[expect]\nmax_false_reads = 2\n')
    assert scenarios.load(path).expect.max_false_reads == 2


def _standin_camera(size: tuple[int, int] = (640, 360)) -> Callable[[], Picamera2Camera]:
    frames = StandinPicamera2Module(lambda i: np.full((size[1], size[0], 3), (i * 7) % 255, np.uint8))
    config = Picamera2Config(main_size=size, lores_size=(320, 176), fps=20.0)
    return lambda: Picamera2Camera(config, picamera2_module=frames)


_SMALL = RecordSettings(seconds=0.4, main_size=(640, 360), lores_size=(320, 176), fps=20.0, pins=[])


class _FailsAfter:
    """A stop event whose wait() fails mid-recording, as a full disk or a dying driver would."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def wait(self, timeout: float | None = None) -> bool:
        time.sleep(self.seconds)
        raise OSError(28, "No space left on device")


def test_a_recording_that_fails_writes_no_clip_json_and_raises_its_own_error(tmp_path: Path):
    out = tmp_path / "rec"
    with pytest.raises(OSError, match="No space left on device"):
        record(out, _SMALL, gpio_module=StandinGPIO(), camera_factory=_standin_camera(),
               stop=_FailsAfter(0.3))  # type: ignore[arg-type]
    assert not (out / "clip.json").exists()
    # nothing is left that blocks a second try
    clip = record(out, _SMALL, gpio_module=StandinGPIO(), camera_factory=_standin_camera())
    assert len(clip) >= 2 and (out / "clip.json").is_file()


def test_a_recording_without_any_frame_is_an_error_and_writes_no_clip_json(tmp_path: Path):
    def no_camera() -> Picamera2Camera:
        raise CameraDisconnected("camera 0 not found")
    out = tmp_path / "rec"
    with pytest.raises(RecordingFailed) as info:
        record(out, _SMALL, gpio_module=StandinGPIO(), camera_factory=no_camera)
    message = str(info.value)
    assert message.startswith(f"{out}: no frame was recorded in 0.4 s")
    assert "camera 0 not found" in message and "clip.json was not written" in message
    assert not (out / "clip.json").exists()


def test_an_existing_clip_is_replaced_only_with_overwrite(tmp_path: Path, capsys):
    out = tmp_path / "rec"
    record(out, _SMALL, gpio_module=StandinGPIO(), camera_factory=_standin_camera())
    with pytest.raises(BadArgument, match="pass --overwrite to replace it"):
        record(out, _SMALL, gpio_module=StandinGPIO(), camera_factory=_standin_camera())
    # the command line says the same, before touching any camera
    assert cli.main(["record", str(out), "--seconds", "1"]) == 2
    err = capsys.readouterr().err
    assert f"alpr-hil: error: {out / 'clip.json'}: a clip is already recorded there" in err and "--overwrite" in err
    assert cli.build_parser().parse_args(["record", str(out), "--overwrite"]).overwrite
    clip = record(out, _SMALL, gpio_module=StandinGPIO(), camera_factory=_standin_camera(), overwrite=True)
    assert len(clip) >= 2


def test_drive_without_usable_gpio_is_a_setup_error_not_a_traceback(monkeypatch, capsys):
    import hardware.gpio

    def no_gpio(module: object = None) -> object:
        raise GpioError("RPi.GPIO is not installed: on a Pi 4 or older `pip install RPi.GPIO`")
    monkeypatch.setattr(hardware.gpio, "load_gpio_module", no_gpio)
    from hil.scenario import CLIP_DIR

    assert cli.main(["drive", str(CLIP_DIR / "close-following"), "--map", "17=22", "--map", "27=23"]) == 2
    assert "alpr-hil: error: RPi.GPIO is not installed" in capsys.readouterr().err


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
    # timeout_s covers the 61 s replay (a shorter one is refused: see test_scenario_timing.py)
    path.write_text('[scenario]\nclip = "false-trigger"\nrepeat = 10\ntimeout_s = 100\n'
                    '[[faults]]\nkind = "broker_outage"\nat_s = 5\nduration_s = 2\nevery_s = 20\n')
    s = scenarios.load(path)
    # the clip is 6.125 s long, x10 = 61.25 s: outages at 5, 25, 45
    assert [(f.at_s, f.duration_s) for f in s.faults] == [(5.0, 2.0), (25.0, 2.0), (45.0, 2.0)]
    path.write_text('[scenario]\nclip = "false-trigger"\n[[faults]]\nkind = "broker_outage"\nat_s = 5\n'
                    'duration_s = 2\nevery_s = 1\n')
    with pytest.raises(BadScenario, match="faults\\[0\\].every_s"):
        scenarios.load(path)
