"""HQ's provisioning settings: where the CA is, the broker's address, HQ workers, the current HPKE key.

Written by `ca init` to HQ_DATA_DIR/provisioning.toml and read by every later HQ-side
command, so the technician does not repeat options.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from provisioning import tomlout
from provisioning.errors import StateError
from transport import atomic

FILE_NAME = "provisioning.toml"


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
            "hq": {"workers": list(self.workers), "hpke_current": self.hpke_current},
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
    except tomllib.TOMLDecodeError as exc:
        raise StateError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return HQState(
            hq_dir=hq_dir, ca_dir=Path(raw["ca"]["dir"]), broker_host=str(raw["broker"]["host"]),
            broker_port=int(raw["broker"]["port"]), broker_names=tuple(raw["broker"]["names"]),
            broker_bind=str(raw["broker"].get("bind", "")), broker_reload=str(raw["broker"].get("reload", "")),
            broker_user=str(raw["broker"].get("user", "mosquitto")),
            workers=tuple(raw["hq"]["workers"]), hpke_current=str(raw["hq"]["hpke_current"]),
            bundle_valid_hours=int(raw.get("bundle", {}).get("valid_hours", 168)))
    except KeyError as exc:
        raise StateError(f"{path}: missing key {exc.args[0]}") from exc
    except (TypeError, ValueError) as exc:
        raise StateError(f"{path}: bad value ({exc})") from exc
