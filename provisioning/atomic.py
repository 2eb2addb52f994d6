"""Crash-safe file writes: a power cut leaves the old file or the new one, never half of one."""
from __future__ import annotations

import os
from pathlib import Path


def write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` via a temp file in the same folder, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    # os.open's mode is filtered by the umask; the caller's mode is what the file must have
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def write_text(path: Path, text: str, mode: int = 0o644) -> None:
    """`write_bytes` for UTF-8 text."""
    write_bytes(path, text.encode(), mode)
