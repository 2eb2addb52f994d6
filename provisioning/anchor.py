"""Root's own record of what it decides for a node, kept beside node.toml where only root writes.

`node keygen`, `node rotate-key` and `node install` run as root but work in the node's data
dir, which the service user (`alpr`) owns. The copies there (`hq/hq-sign.pub`,
`provisioning/node.json`, `provisioning/installed.json`) are for alpr-node at run time, and a
compromised service account can rewrite, replace or swap them at will. So what root decides
from — which HQ key a bundle must be signed by, the HQ key pin typed at keygen, which user
gets the files, which bundle is the newest installed — is read here instead, from files
only root writes:

    CONFIG_DIR/provisioning/node.json       node id, service user, HQ key pin, data dir (keygen)
    CONFIG_DIR/provisioning/hq-sign.pub     the HQ signing key this node trusts (each install)
    CONFIG_DIR/provisioning/installed.json  the last bundle installed (each install, last)

CONFIG_DIR is the folder of node.toml (`--config`, /etc/alpr-node by default). A node.toml
in the data dir itself (the lab and tests: DATA_DIR/node.toml) has no such folder, since the
data dir is the service user's: root's record is then kept beside the data dir, in
`DATA_DIR.provisioning/` (e.g. /var/lib/alpr-node.provisioning).

The folder is 0755 and its files 0644 (nothing here is secret), owned by the account that
runs the command (root on a Pi). Every read checks that: the folder and its files must
belong to root or to this account and be writable by no one else, and the folder's parent
must not let another account swap the folder; files are opened without following a symlink
or blocking on a FIFO (safefs).
"""
from __future__ import annotations

import errno
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from provisioning import safefs
from provisioning.errors import StateError

FOLDER = "provisioning"
NODE = "node.json"
HQ_SIGN = "hq-sign.pub"
INSTALLED = "installed.json"
# suffix of the folder beside the data dir, for a node.toml kept inside the data dir
BESIDE_SUFFIX = ".provisioning"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class Record:
    """What root decided for a node, as read from its own copies (or, `folder` None, none yet)."""

    folder: Path | None
    node_id: str
    user: str  # the service user files are given to; "" for none
    hq_pin: str  # the HQ key pin typed at keygen ("" if none)
    data_dir: str
    hq_sign: bytes | None = None  # raw Ed25519 public key of the HQ key trusted, once installed
    installed: dict | None = None  # {"id", "t_ns", "issued_by", "hq_key"} of the last bundle installed

    @property
    def source(self) -> Path | None:
        """The file that holds the keygen facts (node id, user, pin), for error messages."""
        return self.folder / NODE if self.folder else None


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def beside_data_dir(data_dir: Path) -> Path:
    """Root's folder for a node whose node.toml lies in its own data dir: DATA_DIR.provisioning."""
    data_dir = Path(data_dir).resolve()
    return data_dir.with_name(data_dir.name + BESIDE_SUFFIX)


def folder_for(data_dir: Path, config_path: Path) -> Path:
    """Where root keeps its record for the node in `data_dir` whose node.toml is `config_path`.

    CONFIG_DIR/provisioning, unless that lies in the data dir (or holds it): the service user
    could then replace it, so it goes beside the data dir instead. The folders are compared
    with their links resolved: a --config reached through a link into the data dir is in it.
    """
    data_dir = Path(data_dir).resolve()
    folder = Path(config_path).absolute().parent.resolve() / FOLDER
    if _inside(folder, data_dir) or _inside(data_dir, folder):
        return beside_data_dir(data_dir)
    return folder


def _refusal(path: Path, what: str, fix: str) -> StateError:
    return StateError(f"{path}: {what}; it holds root's record of which HQ key this node trusts, so only "
                      f"root may write it: {fix}")


def _check_parent(folder: Path) -> None:
    """The folder holding root's folder must not let another account rename or replace it."""
    parent = folder.parent
    try:
        st = os.stat(parent)
    except OSError as exc:
        raise StateError(f"{parent}: cannot check it ({exc.strerror or exc})") from exc
    if st.st_uid not in (0, os.geteuid()):
        raise _refusal(folder, f"its folder {parent} belongs to uid {st.st_uid}, who could swap it",
                       "keep node.toml in a folder only root can write (--config; default "
                       "/etc/alpr-node/node.toml)")
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        raise _refusal(folder, f"its folder {parent} is writable by everyone",
                       f"chmod o-w {parent}, or keep node.toml elsewhere (--config)")


def _check_folder(fd: int, folder: Path) -> None:
    st = os.fstat(fd)
    if st.st_uid not in (0, os.geteuid()):
        raise _refusal(folder, f"belongs to uid {st.st_uid}, not root",
                       f"remove it (sudo rm -r {folder}) and install again with --hq-key-id")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise _refusal(folder, f"is writable by others (mode {stat.S_IMODE(st.st_mode):o})", f"chmod 755 {folder}")


def _open_folder(folder: Path) -> int | None:
    """A checked descriptor of root's folder, or None if there is none."""
    try:
        fd = os.open(folder, _DIR_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            try:
                os.lstat(folder)
            except (FileNotFoundError, NotADirectoryError):
                return None  # a folder above it is a file: there is no record (install says why it cannot write)
            raise _refusal(folder, "is a symbolic link or not a folder",
                           "remove it and install again with --hq-key-id") from exc
        raise StateError(f"{folder}: cannot open it ({exc.strerror or exc}); run with sudo") from exc
    try:
        _check_parent(folder)
        _check_folder(fd, folder)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read(fd: int, folder: Path, name: str) -> bytes | None:
    """A file of root's folder, or None if missing; refused unless root's (or ours) and not writable by others."""
    path = folder / name
    try:
        data, st = safefs.read_in(fd, name, path)
    except FileNotFoundError:
        return None
    except safefs.UnsafePath as exc:
        raise _refusal(path, "is a symbolic link, a hard link or not a plain file",
                       f"remove it (sudo rm {path}) and install again with --hq-key-id") from exc
    if st.st_uid not in (0, os.geteuid()):
        raise _refusal(path, f"belongs to uid {st.st_uid}, not root",
                       f"remove it (sudo rm {path}) and install again with --hq-key-id")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise _refusal(path, f"is writable by others (mode {stat.S_IMODE(st.st_mode):o})", f"chmod 644 {path}")
    return data


def _json(data: bytes, path: Path) -> dict:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise StateError(f"{path}: corrupt ({exc}); restore it from a backup, or remove {path.parent} and "
                         "install again with --hq-key-id") from exc
    if not isinstance(value, dict):
        raise StateError(f"{path}: corrupt (not a JSON object); restore it from a backup, or remove "
                         f"{path.parent} and install again with --hq-key-id")
    return value


def load(folder: Path) -> Record | None:
    """Root's record in `folder`, or None if there is none (no folder, or no node.json in it)."""
    folder = Path(os.path.abspath(folder))
    fd = _open_folder(folder)
    if fd is None:
        return None
    try:
        node = _read(fd, folder, NODE)
        if node is None:
            return None
        meta = _json(node, folder / NODE)
        fields = {k: meta.get(k, "") for k in ("node_id", "user", "hq_pin", "data_dir")}
        bad = [k for k, v in fields.items() if not isinstance(v, str)] + ([] if fields["node_id"] else ["node_id"])
        if bad:
            raise StateError(f"{folder / NODE}: field(s) {', '.join(bad)} missing or not text; restore it, or "
                             f"remove {folder} and install again with --hq-key-id")
        pem = _read(fd, folder, HQ_SIGN)
        hq_sign = _raw_hq_key(pem, folder / HQ_SIGN) if pem is not None else None
        done = _read(fd, folder, INSTALLED)
        installed = _json(done, folder / INSTALLED) if done is not None else None
        if installed is not None and not isinstance(installed.get("t_ns"), int):
            raise StateError(f"{folder / INSTALLED}: field t_ns missing or not a number; restore it, or remove "
                             f"{folder} and install again with --hq-key-id")
    finally:
        os.close(fd)
    return Record(folder, fields["node_id"], fields["user"], fields["hq_pin"], fields["data_dir"], hq_sign, installed)


def _raw_hq_key(pem: bytes, path: Path) -> bytes:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise StateError(f"{path}: not a PEM public key ({exc}); remove it and install again with --hq-key-id") \
            from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise StateError(f"{path}: expected an Ed25519 public key, found {type(key).__name__}; remove it and "
                         "install again with --hq-key-id")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def prepare(folder: Path) -> Path:
    """Make root's folder (0755) if missing and check it, before anything is written for the node.

    Called first, so that a folder root cannot keep (no sudo, a --config in a folder another
    account owns) stops the command before it changes anything.
    """
    folder = Path(os.path.abspath(folder))
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(folder, 0o755)
        except FileExistsError:
            pass
    except OSError as exc:
        raise StateError(f"{folder}: cannot create it ({exc.strerror or exc}); root keeps its record of the "
                         "node's trusted HQ key there: run with sudo, or pass --config in a folder you can "
                         "write") from exc
    fd = _open_folder(folder)
    if fd is None:  # removed between the mkdir and the open: nothing sane to do but stop
        raise StateError(f"{folder}: vanished while it was being made; run the command again")
    try:
        st = os.fstat(fd)
        if stat.S_IMODE(st.st_mode) != 0o755 and st.st_uid == os.geteuid():
            os.fchmod(fd, 0o755)  # the umask may have taken bits off: readable by all, writable by root alone
    finally:
        os.close(fd)
    return folder


def _write(folder: Path, name: str, data: bytes) -> Path:
    return safefs.write_bytes(folder, name, data, 0o644)


def write_keygen(folder: Path, *, node_id: str, user: str, hq_pin: str, data_dir: Path) -> Path:
    """Start the node's record afresh: what keygen decided. An earlier install's key and version go.

    A keygen makes a new node identity; the HQ key pin typed now (or none) is what its first
    install must meet, not a key trusted for whatever node lived here before.
    """
    folder = prepare(folder)
    fd = safefs.open_dir(folder)
    try:
        for name in (HQ_SIGN, INSTALLED):
            try:
                os.unlink(name, dir_fd=fd)  # unlink never follows a link: a planted one goes, its target stays
            except FileNotFoundError:
                pass
    finally:
        os.close(fd)
    return _write(folder, NODE, _node_json(node_id, user, hq_pin, data_dir))


def _node_json(node_id: str, user: str, hq_pin: str, data_dir: Path | str) -> bytes:
    return (json.dumps({"node_id": node_id, "user": user, "hq_pin": hq_pin, "data_dir": str(data_dir)},
                       indent=1) + "\n").encode()


def write_install(folder: Path, record: Record, *, hq_sign_pem: bytes, installed: dict) -> list[Path]:
    """Record an install: node.json (as `record`), the trusted HQ key, then the bundle installed, last.

    node.json is rewritten too: the record may have come from another folder (the data dir's
    neighbour, or none at all for a node set up before root kept one), and this folder is
    the one the next install reads first.
    """
    folder = prepare(folder)
    return [
        _write(folder, NODE, _node_json(record.node_id, record.user, record.hq_pin, record.data_dir)),
        _write(folder, HQ_SIGN, hq_sign_pem),
        _write(folder, INSTALLED, (json.dumps(installed) + "\n").encode()),
    ]
