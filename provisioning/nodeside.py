"""Node-side provisioning, run on the Pi: make keys, make requests, install HQ's bundle.

Private keys are made here and never leave the node. Files, under the node's data_dir:

    keys/node-sign.key        Ed25519 signing key (0600)
    keys/node-sign.next.key   a rotated key waiting for HQ's bundle (0600)
    tls/node.key, node.csr    TLS key (0600) and its certificate request
    tls/node.pem, tls/ca.pem  from the bundle
    hq/hq-hpke.pub, hq/hq-sign.pub   from the bundle
    provisioning/node.json    node id, service user and HQ key pin chosen at keygen
    provisioning/request.json, rotate-request.json   what the technician carries to HQ
    provisioning/installed.json  the last bundle installed (refuses older ones)
    provisioning/audit.log    what was done here, by whom (JSON lines)

and, outside it, /etc/alpr-node/node.toml (`install --config`), where alpr-node reads it, and
beside it root's own record (provisioning/anchor.py): /etc/alpr-node/provisioning/node.json,
hq-sign.pub and installed.json, written at keygen and at each install. The data dir is the
service user's: its copies of the HQ key, pin, user and installed version are for alpr-node
at run time, and root never decides from them.

Trust in the bundle (see docs/provisioning.md): the node checks the bundle's signature
against, in this order, the HQ signing key already installed (root's hq-sign.pub), else the
fingerprint typed with --hq-key-id at install, else the one pinned at keygen (root's
node.json). With none of these it refuses: there is no silent trust on first use. A node set
up before root kept a record has none: its first install needs --hq-key-id.
"""
from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import os
import pwd
import re
import socket
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519

from provisioning import anchor, pki, request, safefs, tomlout
from provisioning import bundle as bundle_format
from provisioning.errors import (
    BadBundle,
    BadRequest,
    PKIError,
    ProvisioningError,
    StateError,
)
from provisioning.names import node_id_problem
from transport import atomic
from transport.errors import KeyFileError
from transport.keys import key_id, parse_private_key, raw_public

log = logging.getLogger(__name__)

SIGN_KEY = "keys/node-sign.key"
NEXT_SIGN_KEY = "keys/node-sign.next.key"
TLS_KEY = "tls/node.key"
TLS_CSR = "tls/node.csr"
TLS_CERT = "tls/node.pem"
CA_CERT = "tls/ca.pem"
HQ_HPKE = "hq/hq-hpke.pub"
HQ_SIGN = "hq/hq-sign.pub"
META = "provisioning/node.json"
REQUEST = "provisioning/request.json"
ROTATE_REQUEST = "provisioning/rotate-request.json"
INSTALLED = "provisioning/installed.json"
AUDIT = "provisioning/audit.log"
# Where `alpr-node` and node/systemd/alpr-node.service read the node's config. Duplicated from
# node.config.DEFAULT_PATH (provisioning must not import node/); a unit test keeps them equal.
DEFAULT_CONFIG = Path("/etc/alpr-node/node.toml")
# where installs before DEFAULT_CONFIG wrote node.toml; its local sections are carried over
LEGACY_CONFIG = "node.toml"
# what the bundle decides in node.toml; everything else is the technician's
_BUNDLE_SECTIONS = ("node", "broker", "keys")
_BUNDLE_BROKER_KEYS = ("host", "port", "ca", "cert", "key")


@dataclass(frozen=True)
class KeygenResult:
    """What `keygen` made."""

    node_id: str
    request: Path
    fingerprint: str
    sign_key_id: str


@dataclass(frozen=True)
class InstallResult:
    """What `install` wrote."""

    node_id: str
    config: Path
    written: list[Path]
    rotated_to: str | None
    hq_key_id: str
    cert_not_after: dt.datetime
    # --extra replaces every local section: those of the existing node.toml it does not hold
    # ("[camera]", "[[triggers]]", "[broker] backoff_max_s", ...), in file order
    dropped: tuple[str, ...] = ()
    dropped_kept_in: Path | None = None  # where the dropped sections can still be copied from
    # the service user chosen at keygen (provisioning/node.json), "" if none: who must run alpr-node
    user: str = ""
    # without --extra: why the node.toml written (local sections kept as they were) does not
    # pass `alpr-node check-config --toml-only` yet, or "" if it does
    config_problem: str = ""
    # root's record of the trusted HQ key, installed version and service user (anchor.py)
    record: Path | None = None
    # for a node set up before root kept that record: what this first install took from where
    first_record: str = ""


def _audit(data_dir: Path, actor: str, action: str, detail: str) -> None:
    """Append one JSON line to the node's audit log.

    Through safefs (O_APPEND|O_NOFOLLOW from a descriptor of the data dir): the log lies in a
    folder the service user owns, and root must not append to whatever it swapped in there.
    """
    entry = {"t": dt.datetime.now(dt.UTC).isoformat(), "actor": actor, "action": action, "detail": detail}
    safefs.append_text(data_dir, AUDIT, json.dumps(entry) + "\n")


def _owner(user: str | None) -> tuple[int, int] | None:
    """(uid, gid) to chown files to, or None. Only root can give files away."""
    if not user or user == getpass.getuser():
        return None
    if os.geteuid() != 0:
        raise ProvisioningError(f"--user {user}: only root can make files for another user; run with sudo")
    try:
        entry = pwd.getpwnam(user)
    except KeyError as exc:
        raise ProvisioningError(f"--user {user}: no such user (create the service user first)") from exc
    return entry.pw_uid, entry.pw_gid


def _rel(data_dir: Path, path: Path) -> str | None:
    """`path` relative to the data dir, or None if it lies outside it (e.g. /etc/alpr-node/node.toml).

    Lexical (no symlink resolved): a symlink planted inside the data dir must be met, and
    refused, by safefs rather than followed out of it here.
    """
    absolute = Path(os.path.abspath(path))
    return str(absolute.relative_to(data_dir)) if absolute.is_relative_to(data_dir) and absolute != data_dir else None


def _put(data_dir: Path, path: Path, data: bytes, mode: int = 0o644, owner: tuple[int, int] | None = None) -> Path:
    """Replace a file atomically; inside the data dir without following symlinks, owned by `owner`.

    The file is given to `owner` through the temp file's descriptor before the rename, so there
    is no chown by name afterwards that a swapped-in symlink could redirect.
    """
    rel = _rel(data_dir, path)
    if rel is None:
        atomic.write_bytes(path, data, mode)  # outside the data dir: a folder only root writes (/etc/alpr-node)
        return path
    return safefs.write_bytes(data_dir, rel, data, mode, owner)


def _read_text(data_dir: Path, path: Path) -> str:
    """A text file's contents; inside the data dir without following symlinks (FileNotFoundError if missing)."""
    rel = _rel(data_dir, path)
    if rel is None:
        return path.read_text()
    return safefs.read_bytes(data_dir, rel)[0].decode()


def _chown(data_dir: Path, owner: tuple[int, int] | None, paths: list[Path]) -> None:
    """Give the data dir, the folders holding `paths` and `paths` themselves to `owner`.

    Never os.chown by name, which follows a symlink: the service user owns the data dir and
    could swap a file just written for a symlink to /etc/passwd and have root give it that
    file. safefs opens each entry from the data dir with O_NOFOLLOW, refuses a symlink or a
    hard link (naming it), and fchowns what it opened. Files written by `_put` are owned by
    `owner` already; doing them again here costs nothing and covers any that were not.
    """
    if owner is None:
        return
    rels = [rel for rel in (_rel(data_dir, p) for p in paths) if rel is not None]
    folders = {str(PurePosixPath(rel).parent) for rel in rels} | {"."}
    for rel in sorted(folders) + rels:
        safefs.chown(data_dir, "" if rel == "." else rel, owner)


def _private_pem(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    """A private key as transport.keys writes it: PKCS#8 PEM, unencrypted (the file is 0600)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _public_pem(key: ed25519.Ed25519PublicKey | x25519.X25519PublicKey) -> bytes:
    """A public key as transport.keys writes it: SubjectPublicKeyInfo PEM."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _load_private(data_dir: Path, rel: str, kind: type) -> object:
    """A private key from the data dir, read without following a symlink (checks as transport.keys).

    Root must not load (and then sign with) a key file the service user pointed elsewhere.
    KeyFileError with the same wording as transport.keys.load_private_key.
    """
    path = data_dir / rel
    try:
        data, mode = safefs.read_bytes(data_dir, rel)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file: {exc.strerror or exc}") from exc
    if stat.S_IMODE(mode) & 0o077:
        raise KeyFileError(f"{path}: private key is readable by others (mode {stat.S_IMODE(mode):o}); chmod 600 it")
    return parse_private_key(data, path, kind)


def _record(data_dir: Path, config_path: Path) -> anchor.Record:
    """Root's record of the node in `data_dir` whose node.toml is `config_path`.

    Looked for beside node.toml first, then beside the data dir (where keygen keeps it when
    it is given no --config outside the data dir, and where a lab node's record lives: an
    install with a new --config carries it over). Neither: a node set up before root kept a
    record, whose facts come from the data dir, checked (`_legacy_record`).
    """
    folder = anchor.folder_for(data_dir, config_path)
    for candidate in dict.fromkeys((folder, anchor.beside_data_dir(data_dir))):
        record = anchor.load(candidate)
        if record is None:
            continue
        if record.data_dir != str(data_dir):
            raise StateError(f"{record.source}: is root's record of the node in {record.data_dir}, not of "
                             f"{data_dir}; pass --data-dir {record.data_dir}, or a --config of this node's own")
        return record
    return _legacy_record(data_dir)


def _data_dir_owner(data_dir: Path) -> int:
    """The uid owning the data dir: the service user. It cannot give the folder to another account."""
    try:
        return os.stat(data_dir).st_uid
    except FileNotFoundError as exc:
        raise StateError(f"{data_dir / META}: missing; run alpr-provision node keygen --data-dir {data_dir} "
                         "first") from exc


def _legacy_record(data_dir: Path) -> anchor.Record:
    """The keygen facts of a node set up before root kept its own record, from the data dir.

    Read through safefs (no symlink, no FIFO, a plain file with one link) and trusted only
    so far as the service user cannot use them against root: the file must belong to root or
    to the data dir's owner, and the user it names, who gets the files, must be that owner
    (the one account the service user can always act as anyway). The HQ key pin and the
    installed HQ key there are not used at all: the first install of such a node needs
    --hq-key-id (`_trust_anchor`).
    """
    path = data_dir / META
    owner_uid = _data_dir_owner(data_dir)
    try:
        data, st = safefs.read_stat(data_dir, META)
    except FileNotFoundError as exc:
        raise StateError(f"{path}: missing; run alpr-provision node keygen --data-dir {data_dir} first") from exc
    if st.st_uid not in (os.geteuid(), owner_uid):
        raise StateError(f"{path}: belongs to uid {st.st_uid}, neither root nor {data_dir}'s owner; remove it and "
                         "run alpr-provision node keygen again")
    try:
        meta = json.loads(data)
    except ValueError as exc:
        raise StateError(f"{path}: corrupt ({exc})") from exc
    node_id, user = (meta.get("node_id"), meta.get("user") or "") if isinstance(meta, dict) else (None, None)
    if not isinstance(node_id, str) or not node_id or not isinstance(user, str):
        raise StateError(f"{path}: corrupt (node_id or user missing or not text); run alpr-provision node keygen "
                         "in an empty data dir")
    if user:
        try:
            uid = pwd.getpwnam(user).pw_uid
        except KeyError as exc:
            raise ProvisioningError(f"{path}: service user {user}: no such user (create it first)") from exc
        if uid != owner_uid:
            raise StateError(f"{path}: names service user {user!r}, but {data_dir} belongs to uid {owner_uid}; root "
                             f"gives the node's files only to the data dir's owner: sudo chown -R {user}: {data_dir} "
                             "if that is the service user, else start again with keygen")
    return anchor.Record(None, node_id, user, "", str(data_dir))


def _display_user(data_dir: Path) -> str:
    """The service user the data dir's node.json names, for install's `next: sudo -u USER` hint only.

    Never whom files are given to (root's record decides that); root is never named, so the
    hint cannot be turned into running alpr-node as root. "" when there is none or it cannot be read.
    """
    try:
        meta = json.loads(safefs.read_bytes(data_dir, META)[0])
        user = meta.get("user") if isinstance(meta, dict) else ""
        return user if isinstance(user, str) and user and pwd.getpwnam(user).pw_uid != 0 else ""
    except (OSError, ValueError, KeyError, ProvisioningError):
        return ""


def _sign_key(data_dir: Path, rel: str) -> ed25519.Ed25519PrivateKey:
    path = data_dir / rel
    if not path.exists():
        raise StateError(f"{path}: missing; run alpr-provision node keygen first")
    try:
        return _load_private(data_dir, rel, ed25519.Ed25519PrivateKey)
    except KeyFileError as exc:
        raise StateError(str(exc)) from exc


def _existing_key(data_dir: Path, rel: str, kind: type, step: str) -> object | None:
    """A private key left by an earlier, unfinished `step`, or None if there is none."""
    if not (data_dir / rel).exists():
        return None
    try:
        return _load_private(data_dir, rel, kind)
    except KeyFileError as exc:
        raise StateError(f"{exc}; an unfinished {step} left it: move it aside and run {step} again") from exc


def keygen(data_dir: Path, node_id: str, *, actor: str, user: str | None = None, hq_key_id: str | None = None,
           out: Path | None = None, config_path: Path | None = None) -> KeygenResult:
    """Make the node's keys and its enrolment request. Refuses to replace the keys of a finished keygen.

    `config_path`: the node.toml install will write (as install's; the `node keygen` command
    passes DEFAULT_CONFIG). Root's record of the node id, service user and HQ key pin goes
    beside it (anchor.py), where install reads them: the data dir's node.json is the
    service user's to change.
    Crash-safe: provisioning/node.json is written last and marks keygen finished. A keygen
    that stopped before it (power cut, a failing --out) is finished by running it again:
    keys it already wrote are kept and a fresh request is made for them.
    """
    data_dir = Path(data_dir).resolve()
    problem = node_id_problem(node_id)
    if problem:
        raise ProvisioningError(problem)
    finished = (data_dir / META).exists()
    for rel in (SIGN_KEY, TLS_KEY):
        if finished and (data_dir / rel).exists():
            raise StateError(f"{data_dir / rel}: keys exist already; use `node rotate-key` to replace the "
                             "signing key, or start from an empty data dir")
    pin = bundle_format.normalise_pin(hq_key_id) if hq_key_id else ""
    owner = _owner(user)
    # before any key: a record root cannot keep (no sudo for /etc/alpr-node) stops keygen here
    record_folder = anchor.prepare(anchor.folder_for(data_dir, Path(config_path) if config_path
                                                     else data_dir / LEGACY_CONFIG))
    # keys first, each atomically: every later step can be redone from them
    # Each file is written through safefs, already owned by the service user (`owner`): the data
    # dir is that user's, and root must neither write nor chown through a symlink it put there.
    sign = _existing_key(data_dir, SIGN_KEY, ed25519.Ed25519PrivateKey, "keygen")
    resumed = sign is not None
    if sign is None:
        sign = ed25519.Ed25519PrivateKey.generate()
        _put(data_dir, data_dir / SIGN_KEY, _private_pem(sign), 0o600, owner)
    tls = _existing_key(data_dir, TLS_KEY, ec.EllipticCurvePrivateKey, "keygen")
    resumed = resumed or tls is not None
    if tls is None:
        tls = pki.new_key()
        _put(data_dir, data_dir / TLS_KEY, _private_pem(tls), 0o600, owner)
    csr = pki.make_csr(node_id, tls)
    _put(data_dir, data_dir / TLS_CSR, csr.public_bytes(serialization.Encoding.PEM), 0o644, owner)
    req, fp = request.make_enroll(node_id, sign, csr, actor=actor, host=socket.gethostname())
    _put(data_dir, data_dir / REQUEST, request.dumps(req), 0o644, owner)
    if out:
        request.write(Path(out), req)
    _chown(data_dir, owner, [data_dir / p for p in (SIGN_KEY, TLS_KEY, TLS_CSR, REQUEST)])
    # root's record, then the data dir's node.json last: its presence means keygen finished. A
    # stop between the two is finished by running keygen again, which rewrites the record.
    anchor.write_keygen(record_folder, node_id=node_id, user=user or "", hq_pin=pin, data_dir=data_dir)
    _put(data_dir, data_dir / META, (json.dumps({"node_id": node_id, "user": user or "", "hq_pin": pin},
                                                indent=1) + "\n").encode(), 0o644, owner)
    _chown(data_dir, owner, [data_dir / META])
    _audit(data_dir, actor, "keygen", f"node={node_id} sign={key_id(sign.public_key())} request={fp}"
           + (" (finished an interrupted keygen, keys kept)" if resumed else ""))
    return KeygenResult(node_id, Path(out) if out else data_dir / REQUEST, fp, key_id(sign.public_key()))


def _pending_request_names(data_dir: Path, key: ed25519.Ed25519PrivateKey) -> bool:
    """Whether the data dir's rotation request is for `key` (False if missing or unreadable).

    Read through safefs: the file is in the service user's folder, and a symlink or FIFO put
    there must neither be followed nor hang root. Such a file counts as unreadable, so the
    request is made again (written over it, never through it).
    """
    try:
        data = safefs.read_bytes(data_dir, ROTATE_REQUEST)[0]
        return request.loads(data, data_dir / ROTATE_REQUEST, request.ROTATE).sign_key_id == key_id(key.public_key())
    except (FileNotFoundError, safefs.UnsafePath, BadRequest):
        return False


def rotate_key(data_dir: Path, *, actor: str, out: Path | None = None, replace: bool = False,
               config_path: Path | None = None) -> KeygenResult:
    """Make a new signing key (kept aside until HQ's bundle names it) and a rotation request.

    A key already waiting (keys/node-sign.next.key) is not replaced unless `replace`: HQ may
    have enrolled it already. If its request is missing (an interrupted rotate-key), a new
    request is made for that same key. The node id and the service user the files go to come
    from root's record (`config_path` as install's), not from the data dir.
    """
    data_dir = Path(data_dir).resolve()
    record = _record(data_dir, Path(config_path) if config_path else data_dir / LEGACY_CONFIG)
    owner = _owner(record.user)
    old = _sign_key(data_dir, SIGN_KEY)
    next_path = data_dir / NEXT_SIGN_KEY
    replaced = replace and next_path.exists()
    pending = None if replace else _existing_key(data_dir, NEXT_SIGN_KEY, ed25519.Ed25519PrivateKey, "rotate-key")
    if pending is not None and _pending_request_names(data_dir, pending):
        raise StateError(f"{next_path}: key {key_id(pending.public_key())} is already waiting for HQ's bundle "
                         f"(request {data_dir / ROTATE_REQUEST}); take that request to HQ (node add-key), or "
                         "pass --replace to discard it and make a new key")
    new = pending or ed25519.Ed25519PrivateKey.generate()
    if pending is None:
        _put(data_dir, next_path, _private_pem(new), 0o600, owner)
    req, fp = request.make_rotate(record.node_id, new, old, actor=actor, host=socket.gethostname())
    _put(data_dir, data_dir / ROTATE_REQUEST, request.dumps(req), 0o644, owner)
    if out:
        request.write(Path(out), req)
    _chown(data_dir, owner, [next_path, data_dir / ROTATE_REQUEST])
    _audit(data_dir, actor, "rotate-key", f"old={key_id(old.public_key())} new={key_id(new.public_key())} "
           f"request={fp}" + (" (request remade for the waiting key)" if pending else "")
           + (" (replaced the waiting key)" if replaced else ""))
    return KeygenResult(record.node_id, Path(out) if out else data_dir / ROTATE_REQUEST, fp,
                        key_id(new.public_key()))


def _trust_anchor(record: anchor.Record, typed: str | None, named: bytes, source: str) -> ed25519.Ed25519PublicKey:
    """The HQ key this node trusts (see the module docstring for the order), from root's record only.

    The data dir's hq/hq-sign.pub and node.json are never read for this: the service user
    could put its own key there, or a symlink or FIFO. A node without root's record yet (set
    up before it was kept) trusts nothing but a typed --hq-key-id.
    """
    typed_pin = bundle_format.normalise_pin(typed) if typed else ""
    if record.hq_sign is not None:
        installed = record.folder / anchor.HQ_SIGN
        if typed_pin and not bundle_format.fingerprint(record.hq_sign).startswith(typed_pin):
            raise BadBundle(f"--hq-key-id {typed}: does not match the HQ key already installed in {installed}")
        return ed25519.Ed25519PublicKey.from_public_bytes(record.hq_sign)
    if record.folder is None and not typed_pin:
        raise BadBundle(f"{source}: this node was set up before root kept its own record of the trusted HQ key, "
                        f"and the copies in {record.data_dir} belong to the service user, so they are not "
                        "trusted: pass --hq-key-id with HQ's signing key fingerprint (printed by `alpr-provision "
                        "ca init` and `node bundle`) for this first install; later ones need none")
    keygen_pin = record.hq_pin
    if typed_pin and keygen_pin and not (typed_pin.startswith(keygen_pin) or keygen_pin.startswith(typed_pin)):
        # two different anchors: one of them is wrong, and picking either silently could trust the wrong HQ
        raise BadBundle(f"--hq-key-id {typed_pin[:16]} is not the HQ key {keygen_pin[:16]} pinned at keygen "
                        f"({record.source}); check the work order, or leave --hq-key-id out to use the pin")
    pin = max(typed_pin, keygen_pin, key=len)  # when both agree, the longer one checks more digits
    if not pin:
        raise BadBundle(f"{source}: no trusted HQ key on this node yet: pass --hq-key-id with HQ's signing key "
                        "fingerprint (printed by `alpr-provision ca init` and `node bundle`), or pin it at keygen")
    if not bundle_format.fingerprint(named).startswith(pin):
        why = ("or a mistyped --hq-key-id" if pin == typed_pin and not keygen_pin
               else f"or the pin given at keygen ({record.source}) was wrong")
        raise BadBundle(f"{source}: signed by HQ key {bundle_format.fingerprint(named)[:16]}, not the pinned "
                        f"{pin[:16]}: refusing it (not from our HQ, {why})")
    return ed25519.Ed25519PublicKey.from_public_bytes(named)


def _previous_install(record: anchor.Record, data_dir: Path) -> dict | None:
    """The last bundle installed, for the rollback check: root's record, or for a node without one the data dir's.

    The data dir's installed.json only ever raises the bar for a bundle that must pass the
    typed --hq-key-id anyway; it is read through safefs, never through a link or a FIFO.
    """
    if record.folder is not None:
        return record.installed
    path = data_dir / INSTALLED
    try:
        previous = json.loads(safefs.read_bytes(data_dir, INSTALLED)[0])
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise StateError(f"{path}: corrupt ({exc}); remove it (it only stops an older bundle being installed) "
                         "and install again") from exc
    if not isinstance(previous, dict) or not isinstance(previous.get("t_ns", 0), int):
        raise StateError(f"{path}: corrupt (t_ns missing or not a number); remove it and install again")
    return previous


def install(bundle_path: Path, data_dir: Path, *, actor: str, hq_key_id: str | None = None,
            config_path: Path | None = None, extra_toml: str | None = None, now_ns: int | None = None,
            extra_source: str = "--extra", check_config: bool = False) -> InstallResult:
    """Verify a bundle and put its files in place; write node.toml for `alpr-node run --config`.

    `config_path`: the node.toml to write. The `node install` command passes DEFAULT_CONFIG
    (where alpr-node and its systemd unit look); None means DATA_DIR/node.toml, which keeps
    a lab or test node in one folder.
    `extra_toml`: local sections ([source], [pipeline], ...) and [broker] tuning keys to add
    to the bundle's; None keeps those of the existing node.toml (or, when there is none yet,
    of DATA_DIR/node.toml left by an older install). `extra_source` names it in errors.
    `check_config` (the `node install` command): the node.toml it would write is checked first
    with `alpr-node check-config --toml-only` (check_node_toml). With `extra_toml` a refusal
    stops the install before anything is written; without, the kept sections are the
    technician's as they were, so the install goes on (a certificate renewal must not wait on
    them) and InstallResult.config_problem says why. Off for the lab and tests
    (provisioning.local), which give nodes that never run alpr-node only the sections they use.
    Which HQ key to trust, the keygen pin, whom the files go to and the newest bundle installed
    come from root's record beside node.toml (anchor.py), never from the data dir, and the
    record is brought up to date last of all.
    Every file is replaced atomically, installed.json last: an install that stopped halfway
    is finished by running it again with the same bundle.
    """
    data_dir = Path(data_dir).resolve()
    bundle_path = Path(bundle_path)
    source = str(bundle_path)
    config_path = Path(config_path) if config_path else data_dir / LEGACY_CONFIG
    record = _record(data_dir, config_path)
    record_folder = anchor.folder_for(data_dir, config_path)
    node_id = record.node_id
    try:
        data = bundle_path.read_bytes()
    except FileNotFoundError as exc:
        raise BadBundle(f"{source}: bundle file not found") from exc
    except OSError as exc:
        raise BadBundle(f"{source}: cannot read bundle: {exc.strerror or exc}") from exc
    named, _ = bundle_format.candidate_key(data, source)
    trusted = _trust_anchor(record, hq_key_id, named, source)
    b = bundle_format.verify(data, source, node_id=node_id, trusted=trusted, now_ns=now_ns)

    # the bundle must name this node's own keys: made for another node's keys means refused
    current = _sign_key(data_dir, SIGN_KEY)
    next_path = data_dir / NEXT_SIGN_KEY
    rotated_to = None
    if b.node_sign_pub != raw_public(current.public_key()):
        nxt = _sign_key(data_dir, NEXT_SIGN_KEY) if next_path.exists() else None
        if nxt is None or b.node_sign_pub != raw_public(nxt.public_key()):
            raise BadBundle(f"{source}: field node_sign_pub: key {bundle_format.fingerprint(b.node_sign_pub)[:16]} "
                            f"is not this node's signing key ({data_dir / SIGN_KEY}); the bundle was made for "
                            "another node or another key")
        rotated_to = key_id(nxt.public_key())
    try:
        cert = x509.load_pem_x509_certificate(b.cert)
        ca = x509.load_pem_x509_certificate(b.ca)
    except ValueError as exc:
        raise BadBundle(f"{source}: field cert or ca: not a PEM certificate ({exc})") from exc
    tls_key_path = data_dir / TLS_KEY
    if not tls_key_path.exists():
        raise StateError(f"{tls_key_path}: missing; the TLS key made at keygen is needed")
    try:
        tls_key = _load_private(data_dir, TLS_KEY, ec.EllipticCurvePrivateKey)
    except KeyFileError as exc:
        raise PKIError(str(exc)) from exc
    if not pki.same_public_key(cert.public_key(), tls_key.public_key()):
        raise BadBundle(f"{source}: field cert: the certificate is not for this node's TLS key ({tls_key_path})")
    if pki.common_name(cert.subject) != node_id:
        raise BadBundle(f"{source}: field cert: CN {pki.common_name(cert.subject)!r} is not {node_id!r}")
    if not pki.issued_by(cert, ca):
        raise BadBundle(f"{source}: field cert: not issued by the CA in field ca")
    now = dt.datetime.fromtimestamp((time.time_ns() if now_ns is None else now_ns) / 1e9, dt.UTC)
    try:
        pki.check_validity(cert, f"{source}: field cert", now)
    except PKIError as exc:
        raise BadBundle(str(exc)) from exc
    installed_path = data_dir / INSTALLED
    previous = _previous_install(record, data_dir)
    if previous is not None and int(previous.get("t_ns", 0)) > b.t_ns:
        raise BadBundle(f"{source}: field t_ns: older than the bundle installed already "
                        f"({previous.get('id')}); refusing to roll back")
    _check_writable(config_path)
    anchor.prepare(record_folder)  # before anything is written: a folder root cannot keep stops the install here
    keep_from = config_path
    if not keep_from.exists() and (data_dir / LEGACY_CONFIG).exists():
        keep_from = data_dir / LEGACY_CONFIG
    dropped: tuple[str, ...] = ()
    if extra_toml is None:
        existing = _read_text(data_dir, keep_from) if keep_from.exists() else ""
        broker_local, extra = local_part(existing, str(keep_from), strict=False)
    else:
        broker_local, extra = local_part(extra_toml, extra_source, strict=True)
        dropped = _dropped_by_extra(data_dir, keep_from, broker_local, extra)

    node_section = {"id": node_id, "site": b.site, "camera": b.camera, "lane": b.lane or None,
                    "data_dir": str(data_dir)}
    text = tomlout.document({"node": node_section, "broker": {"host": b.broker_host, "port": b.broker_port, **broker_local}},
                            header=f"Written by alpr-provision node install from bundle {b.id}.\n"
                                   "[node] and [broker] host/port come from HQ; other [broker] keys and\n"
                                   "the sections after [broker] are local and kept by the next install.")
    if extra:
        text += "\n" + extra.strip() + "\n"
    else:
        text += ("\n# Add this site's sections below ([pipeline], [[triggers]], [camera], [source], ...),\n"
                 "# or pass them with `alpr-provision node install --extra FILE`.\n")
    problem = check_node_toml(text, f"{config_path} (as install would write it)") if check_config else None
    if problem and extra_toml is not None:
        raise ProvisioningError(f"{extra_source}: the node.toml it makes does not pass `alpr-node check-config "
                                f"--toml-only`:\n{problem}\nnothing was installed and {config_path} is unchanged: "
                                f"fix {extra_source} and run install again")

    owner = _owner(record.user)
    written = [
        _put(data_dir, data_dir / TLS_CERT, cert.public_bytes(serialization.Encoding.PEM), 0o644, owner),
        _put(data_dir, data_dir / CA_CERT, ca.public_bytes(serialization.Encoding.PEM), 0o644, owner),
        _put(data_dir, data_dir / HQ_HPKE, _public_pem(x25519.X25519PublicKey.from_public_bytes(b.hq_hpke_pub)),
             0o644, owner),
        _put(data_dir, data_dir / HQ_SIGN, _public_pem(trusted), 0o644, owner),
    ]
    if rotated_to:
        # the old private key is gone: its reads are already sealed
        safefs.replace(data_dir, NEXT_SIGN_KEY, SIGN_KEY)
        written.append(data_dir / SIGN_KEY)
    if config_path.exists():
        before = _read_text(data_dir, config_path)
        if before != text:
            _put(data_dir, config_path.with_name(config_path.name + ".bak"), before.encode(), 0o644, owner)
    written.append(_put(data_dir, config_path, text.encode(), 0o644, owner))
    done = {"id": b.id, "t_ns": b.t_ns, "issued_by": b.issued_by, "hq_key": bundle_format.fingerprint(b.hq_sign_pub)}
    written.append(_put(data_dir, installed_path, (json.dumps(done) + "\n").encode(), 0o644, owner))
    _chown(data_dir, owner, written)
    # root's record last: until it is written, a rerun with the same bundle meets the old one and passes
    first_record = ""
    if record.folder is None:
        first_record = (f"{record.data_dir} had no root-owned record yet (set up before one was kept): HQ key "
                        f"from --hq-key-id, service user {record.user or '(none)'} checked against the data "
                        f"dir's owner; later installs trust {record_folder} only")
    elif record.folder != record_folder:
        first_record = f"root's record carried over from {record.folder} to {record_folder}"
    anchor.write_install(record_folder, anchor.Record(record_folder, node_id, record.user,
                                                      record.hq_pin or (bundle_format.normalise_pin(hq_key_id)
                                                                        if hq_key_id else ""),
                                                      str(data_dir)),
                         hq_sign_pem=_public_pem(trusted), installed=done)
    _audit(data_dir, actor, "install", f"bundle={b.id} issued_by={b.issued_by} rotated_to={rotated_to}"
           + (f" extra replaced the local sections; dropped from {keep_from}: {', '.join(dropped)}"
              if dropped else "") + (f" ({first_record})" if first_record else ""))
    if dropped:
        log.warning("--extra replaces the local sections; dropped from %s: %s", keep_from, ", ".join(dropped))
    return InstallResult(node_id, config_path, written, rotated_to, bundle_format.fingerprint(b.hq_sign_pub)[:16],
                         cert.not_valid_after_utc, dropped,
                         (config_path.with_name(config_path.name + ".bak") if keep_from == config_path else keep_from)
                         if dropped else None, user=record.user or _display_user(data_dir),
                         config_problem=problem or "", record=record_folder, first_record=first_record)


# How long `alpr-node check-config --toml-only` may take (it reads a clip's clip.json at most).
CHECK_CONFIG_TIMEOUT_S = 120.0


def check_node_toml(text: str, shown_as: str) -> str | None:
    """Run `alpr-node check-config --toml-only` on node.toml `text`; None if it passes, else its errors.

    A process, not an import: provisioning may not use node/'s internals, and the node's own
    validation is the one that decides whether `alpr-node run` starts. It runs this
    interpreter with this process's import path (the same alpr-node code), from a fresh
    private folder holding only the file, so nothing in the folder install was started from
    (a USB stick) is on its import path. `shown_as` replaces the temporary file's name in the errors.
    """
    with tempfile.TemporaryDirectory(prefix="alpr-install-check-") as folder:
        path = Path(folder) / "node.toml"
        path.write_text(text)
        argv = [sys.executable, "-P", "-m", "node.cli", "check-config", "--toml-only", "--config", str(path)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            result = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, check=False,
                                    timeout=CHECK_CONFIG_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ProvisioningError(f"cannot check {shown_as}: `alpr-node check-config --toml-only` did not run "
                                    f"({exc})") from exc
    if result.returncode == 0:
        return None
    lines = (result.stderr.strip() or result.stdout.strip() or f"exit status {result.returncode}").splitlines()
    return "\n".join("    " + line.removeprefix("alpr-node: error: ").replace(str(path), shown_as) for line in lines)


def _dropped_by_extra(data_dir: Path, existing: Path, broker_local: dict, extra: str) -> tuple[str, ...]:
    """What --extra leaves out of the existing node.toml's local part: it replaces, never merges.

    Only to tell the technician: an existing file that cannot be read or parsed is replaced as
    it always was, and nothing is reported for it.
    """
    try:
        text = _read_text(data_dir, existing) if existing.exists() else ""
        kept_broker, kept = local_part(text, str(existing), strict=False)
    except (OSError, UnicodeDecodeError, ProvisioningError):
        return ()
    new = _headers(extra)
    return tuple(h for h in _headers(kept) if h not in new) + tuple(
        f"[broker] {k}" for k in kept_broker if k not in broker_local)


def _headers(text: str) -> list[str]:
    """The table headers of TOML text (`[camera]`, `[[triggers]]`, `[outputs.http]`), once each, in order."""
    seen: list[str] = []
    for line in text.splitlines():
        stripped = line.split("#", 1)[0].strip()
        # a key path only (no commas): a line of a multi-line array such as `[0.0, 0.3],` is not a header
        m = re.match(r"^(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*(\]\]?)$", stripped)
        if m:
            header = f"{m.group(1)}{m.group(2)}{m.group(3)}"
            if header not in seen:
                seen.append(header)
    return seen


def _check_writable(config_path: Path) -> None:
    """Fail before anything is installed if node.toml cannot be written (e.g. /etc without sudo)."""
    folder = config_path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProvisioningError(f"--config {config_path}: cannot create {folder} ({exc.strerror or exc}); "
                                "run with sudo or pass --config") from exc
    if not os.access(folder, os.W_OK):
        raise ProvisioningError(f"--config {config_path}: {folder} is not writable; run with sudo or pass --config")


def local_part(text: str, source: str, *, strict: bool) -> tuple[dict, str]:
    """Split node.toml text into what is local: ([broker] tuning keys, the other sections' text).

    The bundle decides [node], [keys] and the broker's address and TLS files; a technician
    may add any other section, and [broker] tuning such as backoff_max_s. `strict` (for
    --extra) refuses what would override the bundle instead of dropping it.
    """
    if not text.strip():
        return {}, ""
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProvisioningError(f"{source}: not valid TOML: {exc}") from exc
    broker = dict(parsed.get("broker", {}))
    if strict:
        clash = sorted(set(parsed) & {"node", "keys"}) + [f"broker.{k}" for k in _BUNDLE_BROKER_KEYS if k in broker]
        if clash:
            raise ProvisioningError(f"{source}: {', '.join(clash)} come from the bundle; remove them")
    for key in _BUNDLE_BROKER_KEYS:
        broker.pop(key, None)
    keep, out = False, []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            keep = stripped.strip("[]").split(".")[0].strip() not in _BUNDLE_SECTIONS
        if keep:
            out.append(line)
    return broker, "\n".join(out).strip()
