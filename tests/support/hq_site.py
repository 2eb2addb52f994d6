"""An HQ site for command-line tests: a data folder with HQ's signing key, node-a enrolled, some
reads stored, an hq.toml, and a runner for `alpr-hq` in-process."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from hq import cli
from hq.store import ReadStore
from hq.synthetic import SyntheticNode
from transport.keys import write_private_key
from transport.registry import Registry


def hq_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            reads: Callable[[SyntheticNode, int], list[Any]]) -> tuple[Callable[..., int], Path, ed25519.Ed25519PrivateKey]:
    """Make the site under `tmp_path`; `reads(node, now_ns)` gives the reads to store.

    Returns (run, data folder, HQ's signing key). `run(*argv, password=, new_password=)` runs the
    CLI with the site's config, passing passwords as a person would (option, environment)."""
    data = tmp_path / "data"
    (data / "keys").mkdir(parents=True)
    key = ed25519.Ed25519PrivateKey.generate()
    write_private_key(data / "keys" / "hq-sign.key", key)
    node = SyntheticNode.create("node-a", "main-st")
    registry = Registry(data / "registry.db")
    registry.enroll("node-a", "main-st", node.key.public_key(), actor="installer")
    registry.close()
    store = ReadStore(data / "hq.db")
    store.store(reads(node, time.time_ns()))
    store.close()
    config = tmp_path / "hq.toml"
    config.write_text(f'[hq]\ndata_dir = "{data}"\n[records]\nsession_hours = 1\n')
    monkeypatch.setenv("ALPR_HQ_SESSION", str(tmp_path / "session"))
    monkeypatch.delenv("ALPR_HQ_PASSWORD", raising=False)

    def run(*argv: str, password: str | None = None, new_password: str | None = None) -> int:
        if new_password:
            monkeypatch.setenv("ALPR_HQ_NEW_PASSWORD", new_password)
        else:
            monkeypatch.delenv("ALPR_HQ_NEW_PASSWORD", raising=False)
        extra = ["--password", password] if password else []
        return cli.main(["--config", str(config), *argv, *extra])
    return run, data, key
