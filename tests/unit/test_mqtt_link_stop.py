"""A link stopped while paho's blocking connect runs reports it, and stays alive until it ends."""
from __future__ import annotations

import datetime
import socket
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from transport.mqtt import BrokerSettings, MqttLink

pytestmark = pytest.mark.unit


def _self_signed(folder: Path, key_mode: int = 0o600) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "n1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "c.pem", folder / "k.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(key_mode)  # MqttLink refuses a TLS key that others can read
    return cert_path, key_path


def _silent_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A listener that accepts TCP and never answers the TLS ClientHello: paho's connect blocks.
    Returns it and the list its accepted connection goes into (close both after)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(server.accept()[0]), daemon=True).start()
    return server, held


def test_stop_during_a_stalled_tls_handshake(tmp_path):
    server, held = _silent_listener()
    cert, key = _self_signed(tmp_path)
    settings = BrokerSettings("127.0.0.1", server.getsockname()[1], cert, cert, key, "n1", connect_timeout_s=1.5)
    link = MqttLink(settings, name="stall", on_connect=lambda c, s: None, on_message=lambda c, m: None)
    link.start()
    time.sleep(0.3)
    try:
        assert link.stop(0.2) is False  # still inside connect(): said so, not hidden
        assert link.alive()
        link.start()  # must not add a second thread on the same client
        assert sum(t.name == "mqtt-stall" for t in threading.enumerate()) == 1
        assert link.stop(settings.connect_timeout_s + 2.0) is True  # the connect timeout bounds it
        assert not link.alive()
    finally:
        link.stop(5.0)
        server.close()
        for conn in held:
            conn.close()


def test_a_connect_blocked_in_name_lookup_or_handshake_is_not_a_hang(tmp_path):
    """connect() blocks (DNS that drops queries takes 20 s and more; here a TLS handshake that
    never answers): the watchdog must not call the link hung, or anyone who can disturb DNS
    could have systemd kill the node, camera and all. A planned, bounded wait."""
    server, held = _silent_listener()
    cert, key = _self_signed(tmp_path)
    settings = BrokerSettings("127.0.0.1", server.getsockname()[1], cert, cert, key, "n1", connect_timeout_s=3.0)
    link = MqttLink(settings, name="slow", on_connect=lambda c, s: None, on_message=lambda c, m: None)
    link.start()
    try:
        time.sleep(1.5)  # inside connect() the whole time
        assert link.stalled_s() == 0.0
    finally:
        link.stop(settings.connect_timeout_s + 2.0)
        server.close()
        for conn in held:
            conn.close()
