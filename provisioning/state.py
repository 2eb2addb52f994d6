"""HQ's provisioning settings: where the CA is, the broker's address, HQ workers, the current HPKE key.

Written by `ca init` to HQ_DATA_DIR/provisioning.toml and read by every later HQ-side
command, so the technician does not repeat options.
"""
from __future__ import annotations

import os
import sqlite3
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from provisioning import tomlout
from provisioning.errors import StateError
from transport import atomic
from transport.registry import Registry

FILE_NAME = "provisioning.toml"
SUDO_HINT = "run alpr-provision with sudo (HQ's keys and registry are root's)"


@dataclass(frozen=True)
class HQState:
    """What `ca init` decided, and what changed since."""

    hq_dir: Path
    ca_dir: Path
    broker_host: str
    broker_port: int
    broker_names: tuple[str, ...]
    broker_bind: str = ""
    broker_reload: str = ""
    broker_user: str = "mosquitto"
    workers: tuple[str, ...] = ("hq-ingest-1",)
    # HQ clients that only publish retained hot lists (`alpr-hq push`): hq-push; the ACL
    # lets them write alpr/v1/node/+/hotlist and nothing else (provisioning.broker.acl_text)
    push_clients: tuple[str, ...] = ()
    hpke_current: str = ""
    bundle_valid_hours: int = 168
    extra: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.hq_dir / FILE_NAME

    @property
    def broker_dir(self) -> Path:
        """The broker's files: config, ACL, server certificate, CA copy, CRL copy."""
        return self.hq_dir / "broker"

    @property
    def registry_path(self) -> Path:
        return self.hq_dir / "registry.db"

    @property
    def keys_dir(self) -> Path:
        return self.hq_dir / "keys"

    def node_dir(self, node_id: str) -> Path:
        """HQ's copy of what it knows about one node (request, certificate, bundles)."""
        return self.hq_dir / "nodes" / node_id

    def with_(self, **changes) -> HQState:
        return replace(self, **changes)

    def save(self) -> None:
        """Write provisioning.toml (atomically)."""
        text = tomlout.document({
            "ca": {"dir": str(self.ca_dir)},
            "broker": {"host": self.broker_host, "port": self.broker_port, "names": list(self.broker_names),
                       "bind": self.broker_bind, "reload": self.broker_reload,
                       "user": self.broker_user},
            "hq": {"workers": list(self.workers), "push_clients": list(self.push_clients),
                   "hpke_current": self.hpke_current},
            "bundle": {"valid_hours": self.bundle_valid_hours},
        }, header="Written by alpr-provision; `ca init` made it, later commands update it.")
        # atomic: a temp file created afresh (O_EXCL|O_NOFOLLOW) and fsynced, not one written
        # through whatever sits at provisioning.toml.tmp, and a power cut leaves old or new
        atomic.write_text(self.path, text)


def load(hq_dir: Path) -> HQState:
    """Read HQ_DATA_DIR/provisioning.toml; StateError names the file or key that is wrong."""
    hq_dir = Path(hq_dir).resolve()
    path = hq_dir / FILE_NAME
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise StateError(f"{path}: not found; run alpr-provision ca init --dir {hq_dir} first") from exc
    except PermissionError as exc:
        raise StateError(f"{path}: not readable by this user; {SUDO_HINT}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise StateError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return HQState(
            hq_dir=hq_dir, ca_dir=Path(raw["ca"]["dir"]), broker_host=str(raw["broker"]["host"]),
            broker_port=int(raw["broker"]["port"]), broker_names=tuple(raw["broker"]["names"]),
            broker_bind=str(raw["broker"].get("bind", "")), broker_reload=str(raw["broker"].get("reload", "")),
            broker_user=str(raw["broker"].get("user", "mosquitto")),
            workers=tuple(raw["hq"]["workers"]), push_clients=tuple(raw["hq"].get("push_clients", ())),
            hpke_current=str(raw["hq"]["hpke_current"]),
            bundle_valid_hours=int(raw.get("bundle", {}).get("valid_hours", 168)))
    except KeyError as exc:
        raise StateError(f"{path}: missing key {exc.args[0]}") from exc
    except (TypeError, ValueError) as exc:
        raise StateError(f"{path}: bad value ({exc})") from exc


def _writable(path: Path) -> bool:
    """Whether this user may write the registry: the file, and its folder (SQLite's -wal, -shm)."""
    folder = path.parent
    try:
        if not folder.exists():
            return True  # Registry() makes it; a failure there names the folder
        if not os.access(folder, os.W_OK | os.X_OK):
            return False
        return not path.exists() or os.access(path, os.R_OK | os.W_OK)
    except OSError:  # a folder on the way this user may not search
        return False


def registry_error(path: Path, exc: BaseException, *, read_only: bool = False) -> StateError:
    """The StateError for a registry SQLite refused: a clear `sudo` hint when it is a matter of rights."""
    text = str(exc)
    rights = (isinstance(exc, PermissionError) or "readonly" in text or "unable to open" in text
              or (not read_only and not _writable(path)))
    if rights and read_only:
        return StateError(f"{path}: cannot be read by this user ({text}; without write access SQLite reads it "
                          f"only while HQ ingest has it open); {SUDO_HINT}")
    if rights:
        return StateError(f"{path}: not writable by this user ({text}); {SUDO_HINT}")
    return StateError(f"{path}: the node registry cannot be {'read' if read_only else 'used'}: {text}")


def open_registry(state: HQState, *, read_only: bool = False) -> Registry:
    """HQ's node registry; StateError (not a SQLite traceback) when this user may not use it.

    `read_only` opens it without writing anything (for `node list`, `audit`). Otherwise the
    file and its folder must be writable: checked first, so a command run without sudo stops
    before it changes anything.
    """
    path = state.registry_path
    if read_only and not path.exists() and _writable(path):
        read_only = False  # as before: an HQ whose registry is gone gets an empty one
    if not read_only and not _writable(path):
        raise StateError(f"{path}: not writable by this user; {SUDO_HINT}")
    try:
        return Registry(path, read_only=read_only)
    except (sqlite3.Error, PermissionError) as exc:
        raise registry_error(path, exc, read_only=read_only) from exc


@contextmanager
def registry(state: HQState, *, read_only: bool = False) -> Iterator[Registry]:
    """open_registry, closed afterwards; a SQLite error inside becomes registry_error's StateError."""
    reg = open_registry(state, read_only=read_only)
    try:
        yield reg
    except sqlite3.Error as exc:
        raise registry_error(state.registry_path, exc, read_only=read_only) from exc
    finally:
        reg.close()
