"""Run a Mosquitto broker as a child process: for the demo, the HIL bench and the tests.

It is the real Debian `mosquitto` binary with a generated configuration (mutual TLS,
per-node ACLs, persistence); this module only starts, stops and waits for it.
"""
from __future__ import annotations

import getpass
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from provisioning.broker import BrokerFiles, write_config
from provisioning.errors import ProvisioningError

log = logging.getLogger(__name__)
INSTALL_HINT = "install the broker: sudo apt-get install mosquitto"


def find_mosquitto() -> str:
    """Path of the mosquitto binary; ProvisioningError says how to install it if missing."""
    path = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
    if path is None:
        raise ProvisioningError(f"mosquitto not found; {INSTALL_HINT}")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalBroker:
    """A mosquitto child process on 127.0.0.1:`port`, restartable on the same port and store."""

    def __init__(self, directory: Path, *, ca_file: Path, cert_file: Path, key_file: Path, hq_users: list[str],
                 port: int | None = None, max_packet_bytes: int = 12 * 1024 * 1024,
                 crl_file: Path | None = None, clientid_from_cert: bool = False) -> None:
        self.directory = Path(directory)
        self.port = port or free_port()
        self.files = write_config(self.directory, port=self.port, ca_file=ca_file, cert_file=cert_file,
                                  key_file=key_file, hq_users=hq_users, max_packet_bytes=max_packet_bytes,
                                  run_as=getpass.getuser(), crl_file=crl_file,
                                  clientid_from_cert=clientid_from_cert)
        self.binary = find_mosquitto()
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start and wait until the port accepts connections."""
        if self.process is not None and self.process.poll() is None:
            return
        self.process = subprocess.Popen([self.binary, "-c", str(self.files.conf)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise ProvisioningError(f"mosquitto exited at start (code {self.process.returncode}): {err.strip()} "
                                        f"(log: {self.directory / 'mosquitto.log'})")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise ProvisioningError(f"mosquitto did not listen on port {self.port} within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop cleanly (SIGTERM: the broker saves its persistent sessions)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def kill(self) -> None:
        """Kill without warning, as a power cut would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.stop()

    @classmethod
    def existing(cls, files: BrokerFiles, port: int) -> LocalBroker:
        """Run a configuration already written (e.g. by `alpr-provision ca init`) as it is.

        `port` must be the one in that configuration; nothing is rewritten.
        """
        broker = cls.__new__(cls)
        broker.directory = Path(files.conf).parent
        broker.port = port
        broker.files = files
        broker.binary = find_mosquitto()
        broker.process = None
        return broker

    def reload(self) -> None:
        """SIGHUP: mosquitto rereads its configuration, ACL, certificates and CRL.

        Clients already connected stay connected; a revoked node is refused when it next
        connects (use `restart()` to cut its open connection at once).
        """
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGHUP)

    def restart(self) -> None:
        self.stop()
        self.start()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None
