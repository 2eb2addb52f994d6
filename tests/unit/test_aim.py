"""`alpr-node aim`: the checks judge focus, exposure, size and blur the way an installer would."""
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from node.commands.aim import assess, draw_regions, region_check, sharpness
from node.config import TriggerSection

pytestmark = pytest.mark.unit


def plate_scene(blur: float = 0.0, level: int = 128) -> np.ndarray:
    image = Image.new("RGB", (640, 360), (level, level, level))
    draw = ImageDraw.Draw(image)
    draw.rectangle([250, 200, 400, 275], fill=(240, 240, 240))
    for i in range(7):
        draw.rectangle([258 + 20 * i, 215, 270 + 20 * i, 260], fill=(10, 10, 10))
    if blur:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    return np.asarray(image)


def verdicts(checks):
    return {c.name: c.verdict for c in checks}


def test_sharp_well_exposed_large_plate_passes():
    v = verdicts(assess(plate_scene(), (250, 200, 150, 75), exposure_us=250, speed_kmh=50, plate_width_m=0.305))
    assert v == {"plate width": "pass", "sharpness": "pass", "exposure": "pass", "motion blur": "pass"}


def test_out_of_focus_is_caught():
    assert sharpness(plate_scene(blur=4).mean(axis=2)) < sharpness(plate_scene().mean(axis=2)) / 5
    v = verdicts(assess(plate_scene(blur=4), (250, 200, 150, 75), 500, 50, 0.305))
    assert v["sharpness"] in ("warn", "fail")


def test_small_plate_long_exposure_and_no_plate():
    v = verdicts(assess(plate_scene(), (250, 200, 50, 25), exposure_us=8000, speed_kmh=50, plate_width_m=0.305))
    assert v["plate width"] == "fail" and v["motion blur"] == "fail"
    v = verdicts(assess(plate_scene(level=10), None, 500, 50, 0.305))
    assert v["plate found"] == "fail"


def test_cli_reports_checks_even_when_the_snapshot_cannot_be_written(tmp_path):
    """`sudo -u alpr alpr-node aim` from a directory alpr cannot write still gives its report."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    clip = Path(__file__).resolve().parents[2] / "hil" / "clips" / "day-3-vehicles"
    cfg = tmp_path / "node.toml"
    cfg.write_text(f'[node]\nid = "n1"\nsite = "s1"\ndata_dir = "data"\n'
                   f'[source]\nkind = "clip"\nclip = "{clip}"\nspeed = 0\n')
    run = [sys.executable, "-m", "node.cli", "aim", "-c", str(cfg), "--json"]
    bad = subprocess.run(run + ["--snapshot", str(tmp_path / "missing" / "x.jpg")], capture_output=True, text=True)
    report = json.loads(bad.stdout.strip().splitlines()[-1])
    assert report["checks"] and report["snapshot"] is None
    assert "--snapshot" in bad.stderr and "missing/x.jpg" in bad.stderr
    good = subprocess.run(run, capture_output=True, text=True)
    assert json.loads(good.stdout.strip().splitlines()[-1])["snapshot"] == str(tmp_path / "data" / "aim-snapshot.jpg")
    snap = tmp_path / "data" / "aim-snapshot.jpg"
    assert snap.stat().st_size > 0
    # a vehicle and its plate in clear: for the technician's eyes only, and gone once the node runs
    assert snap.stat().st_mode & 0o777 == 0o600


def test_the_node_removes_the_aim_snapshot_when_it_starts(tmp_path):
    from node.config import AIM_SNAPSHOT_NAME
    from node.runtime import _remove_aim_snapshot

    snap = tmp_path / AIM_SNAPSHOT_NAME
    snap.write_bytes(b"jpeg")
    _remove_aim_snapshot(snap)
    assert not snap.exists()
    _remove_aim_snapshot(snap)  # none left: nothing to do, no error


def test_region_check_names_the_lanes_holding_the_plate_and_warns_when_none_does():
    lanes = [TriggerSection(name="loop1", pin=17, region=(0, 0, 0.5, 1)),
             TriggerSection(name="loop2", pin=27, lane="2", region=(0.5, 0, 1, 1))]
    # plate centre at (325, 237) of a 640 x 360 frame: (0.51, 0.66), lane 2's side
    check = region_check((250, 200, 150, 75), (640, 360), lanes)
    assert check.verdict == "pass" and check.advice == "centre (0.51, 0.66) is in loop2 (lane 2)"
    tight = [TriggerSection(name="loop1", pin=17, region=(0, 0, 0.5, 0.5)), TriggerSection(name="radar", pin=5)]
    check = region_check((250, 200, 150, 75), (640, 360), tight)
    assert check.verdict == "warn" and "in no trigger's region: its reads would go only to radar" in check.advice
    assert region_check(None, (640, 360), lanes) is None
    assert region_check((250, 200, 150, 75), (640, 360), [TriggerSection(name="loop1", pin=17)]) is None


def test_regions_are_drawn_on_the_snapshot():
    image = Image.new("RGB", (640, 360))
    draw_regions(ImageDraw.Draw(image), (640, 360), [TriggerSection(name="loop1", pin=17, region=(0.5, 0, 1, 1))])
    pixels = np.asarray(image)
    assert pixels[180, 319:322].any(axis=1).tolist() == [False, True, True]  # the left edge at x = 0.5


def test_live_camera_aim_watches_the_configured_triggers(tmp_path, monkeypatch, capsys):
    """On the pole (source.kind = "camera") `aim` reports at the moment the loop fires, so it
    must watch the configured [[triggers]], not only a clip's recorded pins. Stand-ins for the
    picamera2 and RPi.GPIO modules keep the real call signatures."""
    import json
    import sys
    import threading
    import types

    import numpy as np

    from hardware.standin_gpio import StandinGPIO
    from hardware.standin_picamera2 import StandinPicamera2Module
    from node.cli import main

    gpio = StandinGPIO()
    rpi = types.ModuleType("RPi")
    rpi.GPIO = gpio  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "RPi", rpi)
    monkeypatch.setitem(sys.modules, "RPi.GPIO", gpio)
    monkeypatch.setitem(sys.modules, "picamera2",
                        StandinPicamera2Module(lambda i: np.full((360, 640, 3), 90 + i % 50, np.uint8)))
    cfg = tmp_path / "node.toml"
    cfg.write_text('[node]\nid = "n1"\nsite = "s1"\ndata_dir = "data"\n'
                   '[camera]\nmain_size = [640, 360]\nlores_size = [320, 180]\n'
                   '[[triggers]]\nname = "loop1"\npin = 17\n')
    loop = threading.Timer(0.6, gpio.drive_low, args=(17,))  # a vehicle over the loop
    loop.start()
    try:
        main(["aim", "-c", str(cfg), "--seconds", "1.5", "--json"])
    finally:
        loop.cancel()
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["triggers_seen"] == 1
    assert report["frame"] == "no plate detected"  # plain frames: the check says so, at the trigger
