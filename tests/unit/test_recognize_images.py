"""`alpr-node recognize` on the image files a user may hand it: every common format and pixel
layout, phone orientation, truncated and odd files, paths as typed, and its output cut short."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from inference.training.plates import PlateGenerator
from node.cli import EXIT_BROKEN_PIPE, main
from node.commands.recognize import load_image
from node.errors import BadInput

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent.parent


def plate_rgb(text: str = "ABC1234", size: tuple[int, int] = (300, 150)) -> np.ndarray:
    """A rendered plate, resized to `size` (width, height), RGB."""
    return cv2.resize(PlateGenerator(0).clean_plate(text), size, interpolation=cv2.INTER_AREA)


def scene_rgb(text: str = "KLM4821") -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A 960x540 grey 'car' frame with the plate 220 px wide in its upper left quarter (so that
    the plate is in the first part of a JPEG's data), and the plate's box."""
    rng = np.random.default_rng(0)
    frame = np.clip(np.full((540, 960, 3), 90.0) + rng.normal(0, 4, (540, 960, 3)), 0, 255).astype(np.uint8)
    frame[60:330, 80:520] = (150, 30, 30)  # car body
    x, y, w, h = 170, 120, 220, 110
    frame[y:y + h, x:x + w] = plate_rgb(text, (w, h))
    return frame, (x, y, w, h)


def recognize_json(capsys: pytest.CaptureFixture[str], *paths: str) -> tuple[int, list[dict], str]:
    """Run `recognize --json` in-process: (exit status, one parsed object per line, stderr)."""
    code = main(["recognize", "--json", *paths])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


# -- what the user typed comes back --------------------------------------------------------


def test_each_line_names_the_file_exactly_as_given(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # a caller matches output lines to its inputs by "file": "./a.png" must not come back as "a.png"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    Image.fromarray(plate_rgb()).save(tmp_path / "sub" / "p.png")
    given = ["./sub/p.png", "sub//p.png", "./sub/../sub/p.png", "./missing.png"]
    code, lines, err = recognize_json(capsys, *given)
    assert code == 1
    assert [line["file"] for line in lines] == given
    assert [line["plates"][0]["plate"] for line in lines[:3]] == ["ABC1234"] * 3
    assert lines[3] == {"file": "./missing.png", "error": "no such file"}
    assert "alpr-node: error: ./missing.png: no such file" in err


def test_empty_file_and_directory_say_what_they_are(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    folder = tmp_path / "photos"
    folder.mkdir()
    code, lines, _ = recognize_json(capsys, str(empty), str(folder))
    assert code == 1
    assert lines == [{"file": str(empty), "error": "empty file"},
                     {"file": str(folder), "error": "is a directory, not an image file"}]


# -- output cut short --------------------------------------------------------------------


def test_a_closed_stdout_stops_quietly_with_the_sigpipe_status(tmp_path: Path) -> None:
    # `alpr-node recognize *.jpg | head -1`: the reader is gone before the first line is written
    # (the models take far longer to load than closing the pipe here)
    image = tmp_path / "p.png"
    Image.fromarray(plate_rgb()).save(image)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "node.cli", "recognize", "--json", str(image), str(image)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(120) == EXIT_BROKEN_PIPE
    assert "Broken pipe" not in err and "BrokenPipeError" not in err and "Traceback" not in err


# -- pixel layouts and formats -------------------------------------------------------------


def saved(image: Image.Image, suffix: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=suffix, **options)
    return buffer.getvalue()


def formats() -> dict[str, tuple[str, bytes, np.ndarray]]:
    """name -> (file suffix, file bytes, the RGB picture a viewer shows)."""
    rgb = plate_rgb()
    pil = Image.fromarray(rgb)
    grey = np.asarray(pil.convert("L"))
    grey_rgb = np.repeat(grey[..., None], 3, axis=2)
    palette = pil.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    ok16, png16 = cv2.imencode(".png", cv2.cvtColor(rgb.astype(np.uint16) * 257, cv2.COLOR_RGB2BGR))
    assert ok16
    cmyk = pil.convert("CMYK")
    return {
        "png": ("png", saved(pil, "PNG"), rgb),
        "grey png": ("png", saved(pil.convert("L"), "PNG"), grey_rgb),
        "grey jpeg": ("jpg", saved(pil.convert("L"), "JPEG", quality=95), grey_rgb),
        "16-bit grey png": ("png", saved(Image.fromarray(grey.astype(np.uint16) * 257), "PNG"), grey_rgb),
        "16-bit rgb png": ("png", png16.tobytes(), rgb),
        "palette png": ("png", saved(palette, "PNG"), np.asarray(palette.convert("RGB"))),
        "cmyk jpeg": ("jpg", saved(cmyk, "JPEG", quality=95), np.asarray(cmyk.convert("RGB"))),
        "progressive jpeg": ("jpg", saved(pil, "JPEG", quality=95, progressive=True), rgb),
        "bmp": ("bmp", saved(pil, "BMP"), rgb),
        "webp": ("webp", saved(pil, "WEBP", lossless=True), rgb),
        "tiff": ("tif", saved(pil, "TIFF"), rgb),
        "gif": ("gif", saved(palette, "GIF"), np.asarray(palette.convert("RGB"))),
    }


@pytest.mark.parametrize("name", list(formats()))
def test_every_common_format_loads_as_the_rgb_picture_it_shows(tmp_path: Path, name: str) -> None:
    suffix, data, expected = formats()[name]
    path = tmp_path / f"plate.{suffix}"
    path.write_bytes(data)
    image = load_image(path)
    assert image.dtype == np.uint8 and image.shape == expected.shape
    # lossy formats differ by their compression only
    assert np.abs(image.astype(int) - expected.astype(int)).mean() < 3.0


@pytest.mark.parametrize("orientation, stored_as", [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270),
                                                    (3, Image.Transpose.ROTATE_180)])
@pytest.mark.parametrize("suffix", ["JPEG", "PNG"])
def test_a_phone_photo_is_read_the_right_way_up_with_boxes_where_the_user_sees_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], orientation: int, stored_as: Image.Transpose,
        suffix: str) -> None:
    # a phone held sideways stores the pixels turned and says how to show them in EXIF
    frame, (x, y, w, h) = scene_rgb()
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"car.{suffix.lower()}"
    path.write_bytes(saved(Image.fromarray(frame).transpose(stored_as), suffix, exif=exif))
    assert load_image(path).shape == frame.shape
    code, lines, _ = recognize_json(capsys, str(path))
    assert code == 0
    best = lines[0]["plates"][0]
    assert best["plate"] == "KLM4821"
    bx, by, bw, bh = best["box"]
    ix = max(0, min(x + w, bx + bw) - max(x, bx))
    iy = max(0, min(y + h, by + bh) - max(y, by))
    assert ix * iy >= 0.5 * w * h  # in the upright picture's pixels


# -- transparency ---------------------------------------------------------------------------


def transparent_plate() -> np.ndarray:
    """RGBA: the plate's dark lettering opaque, everything else fully transparent with black
    under it (how a drawing program saves a cut-out of the characters)."""
    grey = cv2.cvtColor(plate_rgb(), cv2.COLOR_RGB2GRAY)
    rgba = np.zeros((*grey.shape, 4), np.uint8)
    rgba[..., 3] = np.where(grey < 110, 255, 0)
    return rgba


@pytest.mark.parametrize("suffix", ["PNG", "WEBP", "TIFF"])
def test_transparent_pixels_are_shown_over_white_not_black(tmp_path: Path, suffix: str) -> None:
    rgba = transparent_plate()
    path = tmp_path / f"cutout.{suffix.lower()}"
    path.write_bytes(saved(Image.fromarray(rgba), suffix, **({"lossless": True} if suffix == "WEBP" else {})))
    image = load_image(path)
    assert image.shape == (*rgba.shape[:2], 3)
    clear = rgba[..., 3] == 0
    assert (image[clear] == 255).all()  # a viewer's white, not the black stored under them
    assert (image[~clear] == 0).all()


def test_a_transparent_cutout_of_a_plate_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cutout.png"
    Image.fromarray(transparent_plate()).save(path)
    code, lines, _ = recognize_json(capsys, str(path))
    assert code == 0 and lines[0]["plates"] and lines[0]["plates"][0]["plate"] == "ABC1234"


def test_a_16_bit_png_with_alpha_keeps_its_colours(tmp_path: Path) -> None:
    rgb = plate_rgb()
    bgra = np.dstack([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), np.full(rgb.shape[:2], 255, np.uint8)]).astype(np.uint16) * 257
    path = tmp_path / "p16a.png"
    assert cv2.imwrite(str(path), bgra)
    assert np.abs(load_image(path).astype(int) - rgb.astype(int)).max() <= 1


def test_a_phone_photo_with_transparency_is_still_turned_upright(tmp_path: Path) -> None:
    rgba = transparent_plate()
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "turned.png"
    Image.fromarray(rgba).transpose(Image.Transpose.ROTATE_90).save(path, exif=exif)
    image = load_image(path)
    assert image.shape == (*rgba.shape[:2], 3)
    assert (image[rgba[..., 3] == 0] == 255).all()


# -- damaged files ---------------------------------------------------------------------------


@pytest.mark.parametrize("kept", [1.0, 0.7])
def test_a_truncated_jpeg_is_read_as_far_as_it_goes(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    caplog: pytest.LogCaptureFixture, kept: float) -> None:
    # a photo cut short by a copy or an upload: its end-of-image marker missing (kept 1.0: only
    # those 2 bytes), or the bottom of the picture too; a viewer shows what is there
    frame, _ = scene_rgb()
    data = saved(Image.fromarray(frame), "JPEG", quality=92)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: int(len(data) * kept) - 2])
    image = load_image(path)
    assert image.shape == frame.shape
    assert np.abs(image[:300].astype(int) - frame[:300].astype(int)).mean() < 3.0  # the top is intact
    code, lines, _ = recognize_json(capsys, str(path))
    assert code == 0
    assert lines[0]["plates"][0]["plate"] == "KLM4821"
    assert f"{path}: the file is truncated or damaged" in caplog.text  # said, but not an error


@pytest.mark.parametrize("content", [b"hello, not an image", b"\xff\xd8\xff\xe0" + bytes(20), b"\x89PNG\r\n\x1a\n"])
def test_a_file_that_is_no_image_is_an_error_for_that_file_only(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 content: bytes) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(content)
    with pytest.raises(BadInput, match=r"bad\.jpg: not a readable image"):
        load_image(bad)
    good = tmp_path / "good.png"
    Image.fromarray(plate_rgb()).save(good)
    code, lines, _ = recognize_json(capsys, str(bad), str(good))
    assert code == 1
    assert lines[0] == {"file": str(bad), "error": "not a readable image"}
    assert lines[1]["plates"][0]["plate"] == "ABC1234"
