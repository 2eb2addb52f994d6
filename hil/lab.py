"""A complete local installation in one folder: CA, broker, HQ and provisioned nodes.

Used by the demo, the HIL bench and the tests, so all three exercise the same files a real
installation has. Processes are started as a user would start them (`alpr-node run`,
`alpr-hq ingest`), as child processes with their own logs.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from provisioning import pki
from provisioning.localbroker import LocalBroker
from transport.keys import key_id, write_private_key, write_public_key
from transport.registry import Registry


@dataclass(frozen=True)
class NodeHandle:
    """A provisioned node's folder and config file."""

    node_id: str
    data_dir: Path
    config: Path


class Lab:
    """CA + broker + HQ + nodes under `root`."""

    def __init__(self, root: Path, *, hq_workers: int = 1, broker_port: int | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.hq_dir = self.root / "hq"
        self.hq_workers = [f"hq-ingest-{i + 1}" for i in range(hq_workers)]
        self.ca = pki.create_ca(self.root / "ca")
        server = pki.issue(self.ca, "broker", self.root / "broker-tls", server_names=["localhost", "127.0.0.1"])
        self.broker = LocalBroker(self.root / "broker", ca_file=self.ca.cert, cert_file=server.cert,
                                  key_file=server.key, hq_users=self.hq_workers, port=broker_port)
        keys = self.hq_dir / "keys"
        self.hq_hpke = x25519.X25519PrivateKey.generate()
        self.hq_sign = ed25519.Ed25519PrivateKey.generate()
        write_private_key(keys / f"hq-hpke-{key_id(self.hq_hpke.public_key())}.key", self.hq_hpke)
        write_private_key(keys / "hq-sign.key", self.hq_sign)
        tls = self.hq_dir / "tls"
        for worker in self.hq_workers:
            pki.issue(self.ca, worker, tls)
        (tls / "ca.pem").write_bytes(self.ca.cert.read_bytes())
        self.hq_config = self.hq_dir / "hq.toml"
        self.hq_config.write_text(
            f'[hq]\ndata_dir = "{self.hq_dir}"\n\n[broker]\nhost = "127.0.0.1"\nport = {self.broker.port}\n'
            f'client_id = "{self.hq_workers[0]}"\n')
        self.registry_path = self.hq_dir / "registry.db"
        Registry(self.registry_path).close()
        self.nodes: dict[str, NodeHandle] = {}

    def add_node(self, node_id: str, *, site: str = "site-1", body: str = "", actor: str = "lab") -> NodeHandle:
        """Provision a node: keys made in its folder, certificate issued, enrolled at HQ."""
        data = self.root / "nodes" / node_id
        sign = ed25519.Ed25519PrivateKey.generate()
        write_private_key(data / "keys" / "node-sign.key", sign)
        pair = pki.issue(self.ca, node_id, data / "tls", stem="node")
        (data / "tls" / "ca.pem").write_bytes(self.ca.cert.read_bytes())
        write_public_key(data / "hq" / "hq-hpke.pub", self.hq_hpke.public_key())
        write_public_key(data / "hq" / "hq-sign.pub", self.hq_sign.public_key())
        registry = Registry(self.registry_path)
        try:
            serial = format(pki.load_cert(pair.cert).serial_number, "x")
            registry.enroll(node_id, site, sign.public_key(), actor=actor, cert_serial=serial)
        finally:
            registry.close()
        config = data / "node.toml"
        config.write_text(
            f'[node]\nid = "{node_id}"\nsite = "{site}"\ndata_dir = "{data}"\n\n'
            f'[broker]\nhost = "127.0.0.1"\nport = {self.broker.port}\nbackoff_max_s = 2\n\n{body}')
        handle = NodeHandle(node_id, data, config)
        self.nodes[node_id] = handle
        return handle

    # -- processes ------------------------------------------------------------------------
    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen:
        log = open(self.root / f"{log_name}.log", "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        try:
            return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        finally:
            log.close()

    def start_node(self, node: NodeHandle, *extra: str) -> subprocess.Popen:
        """`alpr-node run` for a node, as a child process (log in root/<node>.log)."""
        return self._spawn([sys.executable, "-m", "node.cli", "run", "--config", str(node.config), *extra],
                           node.node_id)

    def start_ingest(self, worker: str | None = None) -> subprocess.Popen:
        """`alpr-hq ingest` for one worker, as a child process."""
        worker = worker or self.hq_workers[0]
        return self._spawn([sys.executable, "-m", "hq.cli", "--config", str(self.hq_config), "ingest",
                            "--worker", worker], worker)

    def close(self) -> None:
        self.broker.stop()
