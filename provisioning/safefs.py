"""Files root writes, reads and gives away inside a folder that another account owns.

`node keygen`, `node rotate-key` and `node install` run as root (sudo) in the node's data
folder, which belongs to the service user (`alpr`); `ca init` and friends, as root, give HQ's
broker folder to the broker's user. That user can rename, delete and create entries there at
any moment, so a path name is no promise of what it reaches: `keys/node-sign.key` may become a
symlink to /etc/passwd between the write and the chown, `tls` may become a symlink to /etc, a
file may be a hard link to /etc/shadow. Whatever root then does by name (chown, append,
write, read) lands on the file the symlink or link names.

So every operation here starts from a descriptor of the base folder (whose own parents belong
to root) and walks down with O_NOFOLLOW, one component at a time (`dir_fd`), acts on what it
opened (fchown, write, fstat), and refuses, naming the path, a symlink, anything that is not a
plain file or folder, and a plain file with more than one link. No path is looked up twice.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath

from provisioning.errors import ProvisioningError

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
# O_NONBLOCK: opening a FIFO planted in place of a file must not hang the technician's command
_FILE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC


class UnsafePath(ProvisioningError):
    """A path in a folder another account owns is a symlink, a hard link or not a plain file/folder."""


def _parts(rel: str | PurePosixPath) -> tuple[str, ...]:
    """The components of a path relative to the base; '..', '.' and absolute paths are refused."""
    parts = PurePosixPath(rel).parts
    if PurePosixPath(rel).is_absolute() or any(p in ("..", ".") for p in parts):
        raise ValueError(f"{rel}: must be a plain path inside the folder")
    return parts


def _refusal(path: Path, what: str) -> UnsafePath:
    return UnsafePath(f"{path}: {what}; refusing to follow it as root (another account can write in "
                      f"{path.parent}): remove it and run the command again")


def _open_child(dir_fd: int, name: str, flags: int, path: Path, mode: int = 0o600) -> int:
    """Open `name` in `dir_fd` without following a symlink; UnsafePath names `path` if it is one."""
    try:
        return os.open(name, flags, mode, dir_fd=dir_fd)
    except OSError as exc:
        # ELOOP is O_NOFOLLOW meeting a symlink; with O_DIRECTORY some kernels say ENOTDIR instead
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                raise exc from None
            if stat.S_ISLNK(st.st_mode):
                raise _refusal(path, "is a symbolic link") from exc
            if exc.errno == errno.ENOTDIR:
                raise _refusal(path, "is not a folder") from exc
        raise


def open_dir(base: Path, rel: str | PurePosixPath = "", *, create: bool = False) -> int:
    """A descriptor of folder `base/rel`, reached without following any symlink below `base`.

    `create` makes missing folders (mode 0755 before the umask). The caller closes the descriptor.
    """
    base = Path(base)
    if create:
        base.mkdir(parents=True, exist_ok=True)  # base and its parents belong to root: safe by name
    try:
        fd = os.open(base, _DIR_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refusal(base, "is a symbolic link") from exc
        raise
    path = base
    try:
        for part in _parts(rel):
            path = path / part
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
            child = _open_child(fd, part, _DIR_FLAGS, path)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _split(rel: str | PurePosixPath) -> tuple[PurePosixPath, str]:
    parts = _parts(rel)
    if not parts:
        raise ValueError("a file name is needed")
    return PurePosixPath(*parts[:-1]), parts[-1]


def _check_plain(fd: int, path: Path, *, allow_dir: bool = False) -> os.stat_result:
    """fstat of an opened entry; UnsafePath unless it is a plain file with one link (or a folder)."""
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode) and allow_dir:
        return st
    if not stat.S_ISREG(st.st_mode):
        raise _refusal(path, "is not a plain file")
    # a hard link to a file elsewhere (e.g. /etc/shadow) looks like a plain file: its link count gives it away
    if st.st_nlink != 1:
        raise _refusal(path, f"is a hard link ({st.st_nlink} names)")
    return st


def write_bytes(base: Path, rel: str | PurePosixPath, data: bytes, mode: int = 0o644,
                owner: tuple[int, int] | None = None) -> Path:
    """Write `base/rel` atomically and durably (as transport.atomic), never through a symlink.

    The temp file is created afresh (O_EXCL|O_NOFOLLOW) in the folder reached by open_dir,
    given `mode` and, if `owner`, its (uid, gid) through its descriptor before the data are
    written, and renamed over the target within that folder: no name is looked up twice, so
    nothing swapped in between can redirect the write or the chown.
    """
    base = Path(base)
    folder, name = _split(rel)
    path = base / folder / name
    tmp = name + ".tmp"
    dir_fd = open_dir(base, folder, create=True)
    try:
        try:
            os.unlink(tmp, dir_fd=dir_fd)  # a stale or planted temp file (or symlink) is removed, not written through
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC, 0o600, dir_fd=dir_fd)
        try:
            os.fchmod(fd, mode)  # before any byte: os.open's mode passed through the umask
            if owner is not None:
                os.fchown(fd, *owner)
            view = memoryview(data)
            while view:  # os.write may write less than asked
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except OSError:
                pass
            raise
        os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def append_text(base: Path, rel: str | PurePosixPath, text: str, mode: int = 0o644) -> Path:
    """Append `text` to `base/rel` (created if missing), refusing a symlink or a hard link there.

    O_APPEND|O_NOFOLLOW on a descriptor of the folder: an audit log swapped for a symlink to
    /etc/passwd is refused, not appended to.
    """
    base = Path(base)
    folder, name = _split(rel)
    path = base / folder / name
    dir_fd = open_dir(base, folder, create=True)
    try:
        fd = _open_child(dir_fd, name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _FILE_FLAGS, path, mode)
    finally:
        os.close(dir_fd)
    try:
        _check_plain(fd, path)
        data = memoryview(text.encode())
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)
    return path


def _open_entry(base: Path, rel: str | PurePosixPath) -> tuple[int, Path]:
    """(read-only descriptor, path) of the entry `base/rel`, reached without following a link."""
    folder, name = _split(rel)
    path = base / folder / name
    dir_fd = open_dir(base, folder)
    try:
        return _open_child(dir_fd, name, os.O_RDONLY | _FILE_FLAGS, path), path
    finally:
        os.close(dir_fd)


def _read_open(fd: int, path: Path) -> tuple[bytes, os.stat_result]:
    """(contents, fstat) of the opened entry `path`; UnsafePath unless it is a plain file with one link."""
    st = _check_plain(fd, path)
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks), st


def read_stat(base: Path, rel: str | PurePosixPath) -> tuple[bytes, os.stat_result]:
    """(contents, fstat) of the plain file `base/rel`, read without following a symlink.

    As read_bytes, with the whole fstat of what was read: its owner, for a caller that
    trusts the file only if the expected account wrote it.
    """
    fd, path = _open_entry(Path(base), rel)
    try:
        return _read_open(fd, path)
    finally:
        os.close(fd)


def read_in(dir_fd: int, name: str, path: Path) -> tuple[bytes, os.stat_result]:
    """(contents, fstat) of the plain file `name` in the folder open as `dir_fd` (`path` in errors).

    For a caller that has checked the folder itself (its owner, its mode) and must read from
    that very folder, not from whatever its name leads to a moment later. O_NOFOLLOW and
    O_NONBLOCK as everywhere here: a symlink is refused, a FIFO neither opened for long nor read.
    FileNotFoundError if it is missing.
    """
    fd = _open_child(dir_fd, name, os.O_RDONLY | _FILE_FLAGS, path)
    try:
        return _read_open(fd, path)
    finally:
        os.close(fd)


def read_bytes(base: Path, rel: str | PurePosixPath) -> tuple[bytes, int]:
    """(contents, st_mode) of the plain file `base/rel`, read without following a symlink.

    FileNotFoundError if it is missing. For files root reads in a folder another account owns:
    a symlink there must not make root copy, parse or use a file that account cannot read,
    and a FIFO must not hang it (opened O_NONBLOCK, then refused as not a plain file).
    """
    data, st = read_stat(base, rel)
    return data, st.st_mode


def chown(base: Path, rel: str | PurePosixPath, owner: tuple[int, int]) -> Path:
    """Give `base/rel` (a plain file or a folder; '' is `base` itself) to (uid, gid) with fchown.

    Never os.chown by name, which follows a symlink: the owner of the folder could swap the
    entry for a symlink to /etc/passwd just before and be handed that file.
    """
    base = Path(base)
    if not _parts(rel):
        fd, path = open_dir(base), base
    else:
        fd, path = _open_entry(base, rel)
    try:
        _check_plain(fd, path, allow_dir=True)
        os.fchown(fd, *owner)
    finally:
        os.close(fd)
    return path


def replace(base: Path, src: str | PurePosixPath, dst: str | PurePosixPath) -> None:
    """Rename `base/src` over `base/dst`, both reached without following a symlink, and fsync."""
    base = Path(base)
    src_folder, src_name = _split(src)
    dst_folder, dst_name = _split(dst)
    src_fd = open_dir(base, src_folder)
    try:
        dst_fd = open_dir(base, dst_folder, create=True)
        try:
            # rename never follows a symlink at either end; the folders were reached without one
            os.replace(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            os.fsync(dst_fd)
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)
