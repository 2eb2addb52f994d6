"""Crash-safe file writes: a power cut leaves the old file or the new one, never half of one.

Shared by the node's keys, provisioning and HQ: the data go to a new temp file in the same
folder, which is given its mode before the data are written, fsynced, renamed over the target,
and the folder fsynced so the rename itself survives. The temp file is always created afresh
(O_EXCL, no symlink followed): a stale or planted one is removed, never written through.
"""
from __future__ import annotations

import os
from pathlib import Path


def write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` atomically and durably, with file mode `mode`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # A temp file left by a crash, or planted by someone else who can write in this folder
    # (provisioning writes keys as root into a folder owned by the node's service user), is
    # removed, never written through: unlink removes a symlink itself, not what it points to.
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    # O_EXCL (with O_NOFOLLOW): a file we create, never one put back in between, so that no
    # symlink can redirect the write and no older mode can outlive it.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        # before any byte is written: os.open's mode passed through the umask, and a secret
        # must never sit in a file more open than the caller asked for
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:  # os.write may write less than asked (signals, quotas)
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp)  # no half-written copy left beside the target
        except OSError:
            pass
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)  # the target is untouched; no copy left beside it either
        except OSError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_text(path: Path, text: str, mode: int = 0o644) -> None:
    """`write_bytes` for UTF-8 text."""
    write_bytes(path, text.encode(), mode)
