"""HQ's configuration: one TOML file, validated at start; errors name the key."""
from __future__ import annotations

import tomllib
from pathlib import Path

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hq.errors import BadConfig
from transport import topics

DEFAULT_PATH = Path("/etc/alpr-hq/hq.toml")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HQSection(Section):
    data_dir: Path = Field(default=Path("/var/lib/alpr-hq"), description="store, registry, keys live here")


class BrokerSection(Section):
    host: str = Field(default="127.0.0.1")
    port: int = Field(default=8883, ge=1, le=65535)
    ca: Path | None = Field(default=None, description="default data_dir/tls/ca.pem")
    cert: Path | None = Field(default=None, description="default data_dir/tls/hq-ingest.pem")
    key: Path | None = Field(default=None, description="default data_dir/tls/hq-ingest.key")
    client_id: str = Field(default="hq-ingest", description="must equal the certificate CN (broker ACL user)")
    backoff_max_s: float = Field(default=10.0, ge=0.5, le=3600, description="longest wait between reconnects")


class IngestSection(Section):
    max_message_kb: int = Field(default=4096, gt=0, le=65536, description="larger messages are rejected")
    shared: bool = Field(default=True, description="use the $share group so several workers split the load")
    revocation_grace_h: float = Field(default=24.0, ge=0, le=24 * 30,
                                      description="how long reads dated before a revocation are still accepted")
    max_future_skew_h: float = Field(default=24.0, gt=0, le=24 * 30,
                                     description="messages dated further ahead of HQ's clock are set aside in "
                                                 "data_dir/rejected/, not stored")
    max_set_aside_mb: int = Field(default=1024, gt=0, le=1 << 20,
                                  description="most megabytes data_dir/rejected/ may hold; when full, messages "
                                              "that would be set aside stay on their nodes")
    # 0: a worker keeps no broker session (a dead one holds no turn of the shared subscription;
    # nodes resend on its generation). While nodes of a release before the generation remain,
    # a session (e.g. 604800, a week) has the broker queue what they send while no worker runs.
    session_expiry_s: int = Field(default=0, ge=0, le=30 * 24 * 3600,
                                  description="broker session kept for a worker after it disconnects (0: none; "
                                              "set one while nodes older than the ingest generation remain)")
    # The default is the old fixed name, so hq.toml files written before this key keep working;
    # ingest warns at start while it is used (`alpr-provision ca init` writes a random one).
    share_group: str = Field(default=topics.INGEST_GROUP,
                             description="MQTT shared subscription group of the ingest workers: keep it secret")

    @field_validator("share_group")
    @classmethod
    def _valid_share_group(cls, value: str) -> str:
        topics.ingest_subscriptions(group=value)  # the rule transport applies; its ValueError names the problem
        return value


class StoreSection(Section):
    path: Path | None = Field(default=None, description="SQLite store (default data_dir/hq.db)")
    url: str | None = Field(default=None, description="postgresql://... to use PostgreSQL instead")


class RecordsSection(Section):
    # Civil Code 1798.90.5 ff. as the agency's policy puts it: reads are kept at least one year,
    # so a shorter setting is refused here rather than purging reads the law says to keep
    retention_days: int = Field(default=365, ge=365, le=36500,
                                description="minimum days a read is kept (at least 365); whole months are purged after it")
    session_hours: float = Field(default=8.0, gt=0, le=24 * 7, description="a login session expires after this")
    hotlist_valid_hours: float = Field(default=24.0, gt=0, le=24 * 30,
                                       description="nodes stop matching a hot list this long after it was published")
    agency_name: Optional[str] = Field(default=None, min_length=1, max_length=200,
                                       description="the agency named in evidence packages (README.txt)")


class HQConfig(Section):
    hq: HQSection = Field(default_factory=HQSection)
    broker: BrokerSection = Field(default_factory=BrokerSection)
    ingest: IngestSection = Field(default_factory=IngestSection)
    store: StoreSection = Field(default_factory=StoreSection)
    records: RecordsSection = Field(default_factory=RecordsSection)

    def path(self, value: Path | None, default: str) -> Path:
        """A configured path, or its default under data_dir."""
        if value is None:
            return self.hq.data_dir / default
        return value if value.is_absolute() else self.hq.data_dir / value


def load(path: Path = DEFAULT_PATH) -> HQConfig:
    """Read and validate hq.toml; BadConfig names the file and each bad key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise BadConfig(f"{path}: config file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise BadConfig(f"{path}: not valid TOML: {exc}") from exc
    try:
        config = HQConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            lines.append(f"{path}: {key}: {'unknown key (typo?)' if err['type'] == 'extra_forbidden' else err['msg']}")
        raise BadConfig("\n".join(lines)) from exc
    if not config.hq.data_dir.is_absolute():
        config.hq.data_dir = (path.parent / config.hq.data_dir).resolve()
    return config
