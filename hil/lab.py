"""A complete local installation in one folder: CA, broker, HQ and provisioned nodes.

Used by the demo, the HIL bench and the tests, so all three exercise the same files a real
installation has. Processes are started as a user would start them (`alpr-node run`,
`alpr-hq ingest`), as child processes with their own logs.
"""
from __future__ import annotations

import getpass
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from provisioning import hqsetup, local, pki
from provisioning.localbroker import LocalBroker, free_port
from transport.keys import load_private_key


@dataclass(frozen=True)
class NodeHandle:
    """A provisioned node's folder and config file."""

    node_id: str
    data_dir: Path
    config: Path


class Lab:
    """CA + broker + HQ + nodes under `root`, made with the real provisioning flow.

    HQ is set up as `alpr-provision ca init` does it, and each node goes through keygen (keys
    made in the node's own folder) → enroll → signed bundle → install, as a technician would.
    """

    def __init__(self, root: Path, *, hq_workers: int = 1, broker_port: int | None = None,
                 actor: str = "lab-technician") -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.actor = actor
        self.hq_dir = self.root / "hq"
        port = broker_port or free_port()
        setup = hqsetup.init_hq(self.hq_dir, actor=actor, ca_dir=self.root / "ca",
                                broker_names=["localhost", "127.0.0.1"], broker_host="127.0.0.1",
                                broker_port=port, broker_bind="127.0.0.1", broker_user=getpass.getuser(),
                                workers=hq_workers)
        self.hq_workers = list(setup.state.workers)
        self.broker = LocalBroker.existing(setup.broker_files, port)
        self.ca = pki.CertPair(self.root / "ca" / "ca.pem", self.root / "ca" / "ca.key")
        keys = self.hq_dir / "keys"
        self.hq_hpke = load_private_key(keys / f"hq-hpke-{setup.hpke_key_id}.key", x25519.X25519PrivateKey)
        self.hq_sign = load_private_key(keys / "hq-sign.key", ed25519.Ed25519PrivateKey)
        self.hq_config = setup.hq_config
        # A bench wants HQ back within seconds of a broker outage, not the production 10 s.
        self.hq_config.write_text(self.hq_config.read_text().replace(
            "[broker]\n", "[broker]\nbackoff_max_s = 2\n", 1))
        self.registry_path = self.hq_dir / "registry.db"
        self.nodes: dict[str, NodeHandle] = {}

    def add_node(self, node_id: str, *, site: str = "site-1", body: str = "", actor: str | None = None) -> NodeHandle:
        """Provision a node (keygen → enroll → bundle → install); `body` adds TOML sections."""
        data = self.root / "nodes" / node_id
        done = local.provision_node(self.hq_dir, data, node_id, site=site, actor=actor or self.actor,
                                    extra_toml="[broker]\nbackoff_max_s = 2\n\n" + body)
        handle = NodeHandle(node_id, done.data_dir, done.config)
        self.nodes[node_id] = handle
        return handle

    # -- processes ------------------------------------------------------------------------
    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.root / f"{log_name}.log", "ab") as log:  # the child keeps its own descriptor
            return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

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
