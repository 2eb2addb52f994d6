"""Crash-safe file writes: a power cut leaves the old file or the new one, never half of one.

Shared by the node's keys, provisioning and HQ: the data go to a temp file in the same folder,
which is fsynced, given its mode, renamed over the target, and the folder fsynced so the rename
itself survives.
"""
from __future__ import annotations

import os
from pathlib import Path


def write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` atomically and durably, with file mode `mode`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:  # os.write may write less than asked (signals, quotas)
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    # os.open's mode is filtered by the umask; the caller's mode is what the file must have
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_text(path: Path, text: str, mode: int = 0o644) -> None:
    """`write_bytes` for UTF-8 text."""
    write_bytes(path, text.encode(), mode)
