"""A link the broker refuses at TLS says why in the log, at a bounded rate, and in its stats.

The broker is a small TLS server here that requires a client certificate from a CA the
client's certificate does not come from: under TLS 1.3 the client's handshake completes and
the refusal (alert `unknown ca`) arrives on the first read after connect(), the path on which
a revoked node used to log nothing at all (tests/broker/test_provisioning_s20_broker.py runs
the same against mosquitto with a revoked certificate).
"""
from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioning import pki
from transport import mqtt
from transport.mqtt import BrokerSettings, MqttLink

pytestmark = pytest.mark.unit


class RefusingBroker:
    """Accepts TCP, completes TLS as a server, and refuses every client certificate it is shown."""

    def __init__(self, folder: Path) -> None:
        ours = pki.create_ca(folder / "ca-ours")
        other = pki.create_ca(folder / "ca-other")
        server = pki.issue(ours, "broker", folder, server_names=["127.0.0.1"], stem="server")
        self.client = pki.issue(ours, "gate-1", folder, stem="client")
        self.ca = ours.cert
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_3
        self.context.load_cert_chain(str(server.cert), str(server.key))
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.context.load_verify_locations(str(other.cert))  # not the CA that issued the client's
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.handshakes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(2)
            try:
                with self.context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                self.handshakes += 1  # refused, as mosquitto refuses a revoked certificate
                self._linger(conn)
            finally:
                conn.close()

    @staticmethod
    def _linger(conn: socket.socket) -> None:
        """Half-close and read what the client sent: a close with unread data (its CONNECT) would
        be a reset, which can overtake the alert; the alert is what this test is about."""
        try:
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(4096):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(5)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RefusingBroker]:
    b = RefusingBroker(tmp_path)
    yield b
    b.close()


def _link(broker: RefusingBroker) -> MqttLink:
    settings = BrokerSettings("127.0.0.1", broker.port, broker.ca, broker.client.cert, broker.client.key, "gate-1",
                              backoff_min_s=0.01, backoff_max_s=0.05, connect_timeout_s=2.0)
    return MqttLink(settings, name="gate-1", on_connect=lambda c, s: None, on_message=lambda c, m: None)


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _names_the_refusal(text: str) -> bool:
    """The TLS alert, or (when the close overtakes it, as with mosquitto under TLS 1.2) the EOF in
    the handshake, with what it means for the client's certificate."""
    lower = text.lower()
    return ("unknown ca" in lower and "does not trust the ca" in lower) or (
        "eof occurred in violation of protocol" in lower and "refused this client's certificate" in lower)


def _failure_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "transport.mqtt" and r.levelno == logging.WARNING and "cannot connect" in r.getMessage()]


def test_a_refused_certificate_is_logged_once_with_the_tls_reason(broker: RefusingBroker,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="transport.mqtt")
    link = _link(broker)
    link.start()
    try:
        _wait(lambda: link.stats.failures >= 5, 20, "five refused attempts")
    finally:
        link.stop(5)
    stats = link.stats
    assert not stats.connected and stats.failures_in_a_row == stats.failures >= 5
    # what TLS said, not a bare "no CONNACK"
    assert "failed to receive on socket" in stats.last_error, stats.last_error
    assert stats.last_error_ns > 0
    lines = _failure_lines(caplog)
    # the first failure at once, then nothing more within CONNECT_FAILURE_LOG_S
    assert len(lines) == 1, lines
    assert f"127.0.0.1:{broker.port} as gate-1" in lines[0]
    assert _names_the_refusal(lines[0]), lines[0]  # and what it means, for the journal's reader


def test_later_failures_are_reported_with_a_count(broker: RefusingBroker, caplog: pytest.LogCaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="transport.mqtt")
    monkeypatch.setattr(mqtt, "CONNECT_FAILURE_LOG_S", 0.3)
    link = _link(broker)
    link.start()
    try:
        _wait(lambda: len(_failure_lines(caplog)) >= 2, 20, "a second report")
    finally:
        link.stop(5)
    first, second = _failure_lines(caplog)[:2]
    assert "more failed attempts since the last report" not in first
    assert "more failed attempts since the last report" in second and "in a row" in second
    assert _names_the_refusal(second), second
