"""Clip format: writer round trip, and every malformed field refused naming file and field."""
import json
from pathlib import Path

import numpy as np
import pytest

from hardware.clip import CameraSettings, Clip, ClipWriter
from hardware.errors import ClipError, HardwareError

pytestmark = pytest.mark.unit

SETTINGS = CameraSettings(resolution=(64, 48), lores_size=(32, 24), fps=10.0, exposure_us=800,
                          analogue_gain=2.0, model="imx708")


def gradient(i: int) -> np.ndarray:
    img = np.zeros((48, 64, 3), dtype=np.uint8)
    img[..., 0] = np.linspace(0, 255, 64, dtype=np.uint8)[None, :]
    img[..., 1] = 40 * (i % 6)
    img[..., 2] = 200
    return img


def write_clip(path: Path, n: int = 4) -> Clip:
    with ClipWriter(path, SETTINGS, start_wall_ns=1_700_000_000_000_000_000, description="test") as w:
        for i in range(n):
            w.add_frame(gradient(i), t_ns=i * 100_000_000, metadata={"Lux": 400.0 + i})
        w.add_trigger(17, "falling", 50_000_000, name="loop1")
        w.add_trigger(17, "rising", 250_000_000, name="loop1")
        w.add_vehicle("AB12CDE", 0, 300_000_000, boxes=[(1, [10, 10, 40, 20])])
    return Clip.load(path)


def test_round_trip(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "c")
    assert len(clip) == 4
    assert clip.camera == SETTINGS
    assert [f.t_ns for f in clip.frames] == [0, 100_000_000, 200_000_000, 300_000_000]
    assert clip.frames[0].file == "frames/000001.jpg"
    assert clip.frames[2].metadata == {"Lux": 402.0}
    assert [(t.pin, t.edge, t.t_ns, t.name) for t in clip.triggers] == [
        (17, "falling", 50_000_000, "loop1"), (17, "rising", 250_000_000, "loop1")]
    assert clip.vehicles[0].plate == "AB12CDE"
    assert clip.vehicles[0].boxes[0].box == (10, 10, 40, 20)
    assert clip.start_wall_ns == 1_700_000_000_000_000_000
    main = clip.read_main(1)
    assert main.shape == (48, 64, 3) and main.dtype == np.uint8
    # JPEG is lossy, but colours must survive (RGB order kept): red ramp, constant blue.
    assert abs(int(main[:, -1, 0].mean()) - 255) < 12 and abs(int(main[..., 2].mean()) - 200) < 12
    lores = clip.make_lores(main)
    assert lores.shape == (24, 32, 3)


def test_writer_refuses_existing_clip_and_wrong_sizes(tmp_path: Path) -> None:
    write_clip(tmp_path / "c")
    with pytest.raises(ClipError, match="already exists"):
        ClipWriter(tmp_path / "c", SETTINGS)
    w = ClipWriter(tmp_path / "d", SETTINGS)
    with pytest.raises(ValueError, match="resolution"):
        w.add_frame(np.zeros((10, 10, 3), np.uint8), 0)
    w.add_frame(gradient(0), 5)
    with pytest.raises(ValueError, match="greater than the previous"):
        w.add_frame(gradient(1), 5)


def test_a_writer_with_no_frames_writes_no_clip_json(tmp_path: Path) -> None:
    # docs/clips.md: a writer can never leave a clip the reader refuses
    w = ClipWriter(tmp_path / "empty", SETTINGS)
    with pytest.raises(ClipError, match="frames"):
        w.close()
    assert not (tmp_path / "empty" / "clip.json").exists()


def mutate(tmp_path: Path, change) -> Path:
    path = tmp_path / "c"
    write_clip(path)
    doc = json.loads((path / "clip.json").read_text())
    change(doc)
    (path / "clip.json").write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    ("change", "field", "what"),
    [
        (lambda d: d["frames"][2].__setitem__("t_ns", 100_000_000), "frames[2].t_ns", "increasing"),
        (lambda d: d["frames"][1].__setitem__("t_ns", 1.5e8), "frames[1].t_ns", "must be an int"),
        (lambda d: d["frames"][3].__setitem__("file", "frames/999999.jpg"), "frames[3].file", "does not exist"),
        (lambda d: d["frames"][0].__setitem__("file", "../etc/passwd"), "frames[0].file", "must look like"),
        (lambda d: d["frames"][0].pop("t_ns"), "frames[0].t_ns", "is required"),
        (lambda d: d["frames"].clear(), "frames", "non-empty list"),
        (lambda d: d.__setitem__("version", 7), "version", "unsupported version"),
        (lambda d: d.__setitem__("format", "mp4"), "format", "alpr-clip"),
        (lambda d: d.__setitem__("colour", "red"), "colour", "not a known field"),
        (lambda d: d["camera"].__setitem__("fps", 0), "camera.fps", "> 0"),
        (lambda d: d["camera"].__setitem__("resolution", [64]), "camera.resolution", "[width, height]"),
        (lambda d: d["camera"].__setitem__("lores_size", [128, 96]), "camera.lores_size", "must not exceed"),
        (lambda d: d["camera"].__setitem__("exposure_us", "fast"), "camera.exposure_us", "must be an int"),
        (lambda d: d["triggers"][0].__setitem__("edge", "both"), "triggers[0].edge", "rising, falling"),
        (lambda d: d["triggers"][1].__setitem__("pin", 40), "triggers[1].pin", "not a BCM GPIO"),
        (lambda d: d["triggers"][1].__setitem__("t_ns", -1), "triggers[1].t_ns", ">= 0"),
        (lambda d: d["ground_truth"]["vehicles"][0].__setitem__("t_start_ns", 400_000_000),
         "ground_truth.vehicles[0].t_end_ns", ">= t_start_ns"),
        (lambda d: d["ground_truth"]["vehicles"][0].__setitem__("plate", ""),
         "ground_truth.vehicles[0].plate", "non-empty string"),
        (lambda d: d["ground_truth"]["vehicles"][0]["boxes"][0].__setitem__("frame", 9),
         "ground_truth.vehicles[0].boxes[0].frame", "past the last frame"),
        (lambda d: d["ground_truth"]["vehicles"][0]["boxes"][0].__setitem__("box", [10, 10, 5, 20]),
         "ground_truth.vehicles[0].boxes[0].box", "x0 < x1"),
    ],
)
def test_malformed_clip_names_file_and_field(tmp_path: Path, change, field: str, what: str) -> None:
    path = mutate(tmp_path, change)
    with pytest.raises(ClipError) as info:
        Clip.load(path)
    message = str(info.value)
    assert message.startswith(f"{path / 'clip.json'}: {field}: "), message
    assert what in message
    assert isinstance(info.value, HardwareError) and isinstance(info.value, ValueError)


def test_missing_and_invalid_json(tmp_path: Path) -> None:
    with pytest.raises(ClipError, match=r"clip\.json: not found"):
        Clip.load(tmp_path)
    (tmp_path / "clip.json").write_text("{\n  \"format\": ")
    with pytest.raises(ClipError, match=r"clip\.json: invalid JSON at line 2"):
        Clip.load(tmp_path)


def test_frame_with_wrong_size_or_bad_jpeg_named_on_read(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "c")
    (tmp_path / "c" / "frames" / "000002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ClipError, match=r"000002\.jpg: cannot decode"):
        clip.read_main(1)
    import cv2

    cv2.imwrite(str(tmp_path / "c" / "frames" / "000003.jpg"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ClipError, match=r"000003\.jpg: frames\[2\] is 10x10"):
        clip.read_main(2)
