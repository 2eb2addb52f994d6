"""The node starts (or refuses, saying why and deleting nothing) over every state file of its data
directory left empty or cut short, and a stop that outlasts its bound leaves the outbox open for
the thread still committing to it."""
from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from node.config import NodeConfig
from node.errors import BadConfig
from node.runtime import Runtime
from tests.unit.test_mqtt_link_stop import _self_signed
from transport.errors import OutboxError
from transport.keys import write_private_key, write_public_key

pytestmark = pytest.mark.unit


def make_node_dir(data: Path) -> None:
    """A provisioned node data directory: signing key, HQ's public keys, TLS files."""
    write_private_key(data / "keys" / "node-sign.key", ed25519.Ed25519PrivateKey.generate())
    write_public_key(data / "hq" / "hq-hpke.pub", x25519.X25519PrivateKey.generate().public_key())
    write_public_key(data / "hq" / "hq-sign.pub", ed25519.Ed25519PrivateKey.generate().public_key())
    (data / "tls").mkdir()
    cert, key = _self_signed(data / "tls")
    cert.rename(data / "tls" / "node.pem")
    key.rename(data / "tls" / "node.key")
    shutil.copy(data / "tls" / "node.pem", data / "tls" / "ca.pem")


def node_config(data: Path, shutdown_timeout_s: float = 10.0) -> NodeConfig:
    """A synthetic-source node on `data`, its broker unreachable (port 1)."""
    return NodeConfig.model_validate({
        "node": {"id": "n1", "site": "s1", "data_dir": str(data)}, "broker": {"port": 1},
        "source": {"kind": "synthetic", "synthetic": {"rate_hz": 100, "crop_bytes": 200}},
        "shutdown_timeout_s": shutdown_timeout_s})


@pytest.fixture(scope="module")
def used_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory a node has run in: outbox, sequence reservation, and a kept hot list file."""
    data = tmp_path_factory.mktemp("node") / "data"
    make_node_dir(data)
    runtime = Runtime(node_config(data))
    runtime.start()
    deadline = time.monotonic() + 10
    while runtime.outbox.stats().committed < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    runtime.stop()
    (data / "hotlist.msg").write_bytes(b"\x82\x41\x00\x41\x00")  # any bytes: cut short below
    return data


def _cut(name: str, keep: int | None = None) -> Callable[[Path], None]:
    """Truncate data/name to `keep` bytes (None: half of it)."""
    def cut(data: Path) -> None:
        path = data / name
        raw = path.read_bytes() if path.exists() else b""
        path.write_bytes(raw[:len(raw) // 2 if keep is None else keep])
    return cut


@pytest.mark.parametrize("name, damage", [
    ("empty outbox", _cut("outbox.db", 0)),
    ("empty WAL", _cut("outbox.db-wal", 0)),
    ("empty shared-memory index", _cut("outbox.db-shm", 0)),
    ("empty sequence reservation", _cut("sequence.reserved", 0)),
    ("cut sequence reservation", _cut("sequence.reserved", 2)),
    ("empty hot list", _cut("hotlist.msg", 0)),
    ("cut hot list", _cut("hotlist.msg")),
    ("temp files left by a crash", lambda d: [(d / f"{n}.tmp").write_bytes(b"") for n in ("hotlist.msg",
                                                                                        "sequence.reserved")]),
])
def test_starts_over_a_damaged_state_file(used_dir: Path, tmp_path: Path, name: str, damage) -> None:
    data = tmp_path / "data"
    shutil.copytree(used_dir, data)
    before = int((used_dir / "sequence.reserved").read_text())
    damage(data)
    runtime = Runtime(node_config(data))
    runtime.start()
    try:
        seq = runtime.sink.outbox.commit("event", lambda s: b"sealed")
        assert seq > 20, f"{name}: a sequence number was used again"
        if name == "empty outbox":
            assert seq >= before, "a lost outbox must continue above the reservation"
        assert runtime.hotlist.version == 0
    finally:
        runtime.stop()


@pytest.mark.parametrize("name, error", [
    ("outbox.db", OutboxError), ("keys/node-sign.key", BadConfig), ("hq/hq-sign.pub", BadConfig),
    ("hq/hq-hpke.pub", BadConfig),
])
def test_refuses_a_cut_file_it_cannot_do_without_and_deletes_nothing(used_dir: Path, tmp_path: Path, name: str,
                                                                      error: type[Exception]) -> None:
    data = tmp_path / "data"
    shutil.copytree(used_dir, data)
    _cut(name)(data)
    damaged = (data / name).read_bytes()
    with pytest.raises(error):
        Runtime(node_config(data))
    assert (data / name).read_bytes() == damaged


def test_a_source_still_committing_at_the_shutdown_bound_keeps_the_outbox_open(tmp_path: Path) -> None:
    """The synthetic source is inside a commit (a slow fsync) when the bound runs out: the runtime
    must leave the outbox open for it. SyntheticSource.stop used to drop its thread reference
    anyway, so alive() said False and the outbox was closed under the thread."""
    data = tmp_path / "data"
    make_node_dir(data)
    runtime = Runtime(node_config(data, shutdown_timeout_s=1.0))
    entered, release = threading.Event(), threading.Event()
    commit = runtime.sink.submit_read

    def slow_commit(read):
        entered.set()
        release.wait(10)
        return commit(read)
    runtime.sink.submit_read = slow_commit  # type: ignore[method-assign]
    runtime.start()
    try:
        assert entered.wait(10)
        runtime.stop()
        assert runtime.source.alive(), "the source thread is still running: alive() must say so"
        runtime.outbox.stats()  # still open (OutboxError once closed)
    finally:
        release.set()
        runtime.source.stop(5)
        assert not runtime.source.alive()
        runtime.outbox.close()
