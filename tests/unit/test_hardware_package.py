"""Package rules for hardware/: leaf package, Pi-only modules imported lazily, Frame checks."""
import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hardware.frame import Frame

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
OURS = {"node", "inference", "transport", "provisioning", "hil", "hq"}
PI_ONLY = {"picamera2", "RPi", "libcamera"}


def module_level_imports(path: Path) -> list[str]:
    names = []
    for node in ast.parse(path.read_text()).body:  # top-level statements only
        if isinstance(node, ast.Import):
            names += [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module.split(".")[0])
    return names


def all_imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "hardware").glob("*.py")), ids=lambda p: p.name)
def test_leaf_package_and_lazy_pi_imports(path: Path) -> None:
    assert not OURS & set(all_imports(path)), f"{path.name} imports another package of ours"
    assert not PI_ONLY & set(module_level_imports(path)), f"{path.name} imports a Pi-only module at import time"


def test_everything_imports_without_pi_modules() -> None:
    code = ("import sys; sys.modules.update({'picamera2': None, 'RPi': None, 'RPi.GPIO': None, 'libcamera': None});"
            "import hardware.camera, hardware.picamera2_backend, hardware.gpio, hardware.clip_camera, "
            "hardware.clip_pins, hardware.standin_gpio, hardware.standin_picamera2, hardware.frame_queue")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def test_frame_refuses_wrong_arrays() -> None:
    good = np.zeros((4, 6, 3), np.uint8)
    frame = Frame(good, good[:2, :3], 1, 2, 0)
    assert frame.size == (6, 4) and frame.lores_size == (3, 2)
    with pytest.raises(ValueError, match=r"Frame\.main: must be an HxWx3"):
        Frame(np.zeros((4, 6), np.uint8), good, 1, 2, 0)
    with pytest.raises(ValueError, match=r"Frame\.lores: must be uint8"):
        Frame(good, good.astype(np.float32), 1, 2, 0)
