"""One MQTT v5 connection over mutual TLS, owned by one thread, that keeps itself connected.

paho-mqtt's own `loop_start()` reconnects without jitter and without a way to stop within a
bound; this runs `client.loop()` in a named thread with a stop event, reconnects with
exponential backoff and full jitter, and calls the owner's hooks from that one thread, so
the owner needs no locks around the client.
"""
from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from transport.keys import check_private_mode

log = logging.getLogger(__name__)

# A tick hook failing on every turn (about a hundred a second) is logged at most this often.
TICK_FAILURE_LOG_S = 10.0
# A broker that refuses us on every attempt (a revoked certificate, another CA, an expired CRL
# at the broker) fails each backoff turn, for days: the first failure is logged at once, then
# at most one line this often, with how many attempts failed since.
CONNECT_FAILURE_LOG_S = 60.0
# How long to wait for CONNACK once TCP and TLS are up.
CONNACK_TIMEOUT_S = 10.0
# The longest a blocking connect() (name lookup, TCP, TLS handshake) counts as planned before
# stalled_s calls it a hang: above resolv.conf's worst case (3 nameservers x 2 attempts x 5 s)
# plus TCP and TLS timeouts.
CONNECT_ALLOWANCE_S = 90.0

# What a TLS failure means for the person reading the journal, by the text OpenSSL gives.
# The alerts come from the broker (it refused our certificate); "certificate verify failed"
# on our side means we refused the broker's.
_TLS_HINTS = (
    ("certificate revoked", ("the broker refuses this client's certificate as revoked (the CA's CRL lists it): "
                             "ask HQ (`alpr-provision node list`); a revoked node needs a new id (keygen, "
                             "enrol), an HQ worker a new certificate (`alpr-provision ca issue-hq --replace`)")),
    ("unknown ca", ("the broker does not trust the CA that issued this client's certificate: install a bundle "
                    "from this broker's HQ")),
    ("certificate expired", ("a certificate has expired: this client's, or the CRL the broker checks against "
                             "(at HQ: `alpr-provision ca crl`, then reload the broker)")),
    ("certificate verify failed", ("the broker's certificate is not signed by the CA file (broker ca) or not "
                                   "issued for the broker host name")),
    ("bad certificate", "the broker refused this client's certificate"),
    # mosquitto under TLS 1.2 closes without an alert when it refuses a client certificate
    ("eof occurred in violation of protocol", ("the broker closed the connection during the TLS handshake: it "
                                               "most likely refused this client's certificate (revoked, issued by "
                                               "another CA, or the broker's CRL has expired); the broker's log "
                                               "says which")),
)


@dataclass(frozen=True)
class BrokerSettings:
    """Where the broker is and how to prove who we are to it."""

    host: str
    port: int
    ca_file: Path
    cert_file: Path
    key_file: Path
    client_id: str
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 24 * 3600
    backoff_min_s: float = 0.5
    backoff_max_s: float = 60.0
    # paho's connect() (TCP + TLS handshake) blocks and cannot be interrupted; this bounds it,
    # and with it how long a stop can wait on a link that is half-way through connecting.
    connect_timeout_s: float = 4.0


@dataclass
class LinkStats:
    """Connection counters for health reports."""

    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    failures: int = 0
    failures_in_a_row: int = 0   # connection attempts failed since the last CONNACK
    last_error: str = ""         # why the last attempt (or the last connection) failed
    last_error_ns: int = 0       # when, wall clock (0: never)
    since_ns: int = field(default_factory=time.time_ns)


class MqttLink:
    """A self-reconnecting MQTT v5 client with mutual TLS, driven from one owned thread.

    Hooks, all called from the link's thread:
      on_connect(client, session_present)  after CONNACK: subscribe, reset in-flight state
      on_message(client, message)          each PUBLISH received
      on_tick(client)                      each loop turn while connected: publish what is due
    """

    def __init__(self, settings: BrokerSettings, *, name: str,
                 on_connect: Callable[[paho.Client, bool], None],
                 on_message: Callable[[paho.Client, paho.MQTTMessage], None],
                 on_tick: Callable[[paho.Client], None] | None = None,
                 will: tuple[str, bytes] | None = None,
                 manual_ack: bool = False,
                 max_inflight: int = 1000,
                 tick_interval_s: float = 0.01) -> None:
        self.settings = settings
        self.name = name
        self.stats = LinkStats()
        self._on_connect = on_connect
        self._on_message = on_message
        self._on_tick = on_tick
        # paho reads about one packet per loop() call: running the tick hook at a fixed pace
        # rather than per packet lets it batch (one store transaction for many messages).
        self._tick_interval = tick_interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._beat = time.monotonic()  # see stalled_s
        self._tick_ok = time.monotonic()  # last turn the tick hook completed (see stalled_s)
        self._tick_failures = 0           # turns in a row it raised
        self._tick_failure_logged = float("-inf")
        self._connect_failure_logged = float("-inf")
        self._failures_at_log = 0         # stats.failures_in_a_row when the last failure was logged
        self._paho_error = ""             # paho's last error log line (the socket or TLS error text)
        self._refused = ""                # a failure CONNACK's reason, for _connect_once
        self._connected = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=settings.client_id, protocol=paho.MQTTv5,
            reconnect_on_failure=False, manual_ack=manual_ack,
        )
        self._client.max_inflight_messages_set(max_inflight)
        self._client.max_queued_messages_set(0)
        self._client.connect_timeout = settings.connect_timeout_s
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(settings.ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # The TLS key identifies us to the broker (its CN is our ACL user name): held to the
        # same 0600 rule as the signing keys, which transport.keys refuses to load otherwise.
        check_private_mode(settings.key_file)
        context.load_cert_chain(str(settings.cert_file), str(settings.key_file))
        self._client.tls_set_context(context)
        if will is not None:
            self._client.will_set(will[0], will[1], qos=1, retain=True)
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_message = self._handle_message
        # paho turns a socket or TLS error into a bare rc ("The connection was lost.") and says
        # what it was only through its log: under TLS 1.3 a broker refusing our certificate
        # (revoked, unknown CA) shows up as an alert on the first read after connect(), and
        # without this line nothing would say so.
        self._client.on_log = self._handle_log
        self._has_will = will is not None

    @property
    def client(self) -> paho.Client:
        return self._client

    def is_connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected or `timeout` seconds pass (for start-up and tests)."""
        return self._connected.wait(timeout)

    def start(self) -> None:
        """Start the link's thread (it connects in the background); no-op while one runs."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._run, name=f"mqtt-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Disconnect and join the thread within `timeout`; safe to call twice.

        Returns False when the thread is still running (blocked in paho's connect, at most
        `connect_timeout_s`): `alive()` then stays true, so the owner does not close what the
        thread still uses and `start()` does not add a second thread on the same client."""
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("mqtt %s: thread did not stop within %.1fs (still in connect)", self.name, timeout)
            return False
        self._thread = None
        return True

    # -- the thread -----------------------------------------------------------------------
    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            self._beat = time.monotonic()
            if not self._connect_once():
                attempt += 1
                delay = max(0.05, random.uniform(0, min(self.settings.backoff_max_s,
                                                        self.settings.backoff_min_s * 2 ** attempt)))
                self._beat = time.monotonic() + delay  # a planned wait is not a hang
                self._stop.wait(delay)
                continue
            attempt = 0
            next_tick = 0.0
            while not self._stop.is_set():
                self._beat = time.monotonic()
                rc = self._client.loop(timeout=self._tick_interval)
                if rc != paho.MQTT_ERR_SUCCESS:
                    self._set_error(f"loop: {self._why(rc)}")
                    break
                now = time.monotonic()
                if now >= next_tick and self._connected.is_set() and self._on_tick is not None:
                    next_tick = now + self._tick_interval
                    try:
                        self._on_tick(self._client)
                        self._tick_ok = time.monotonic()
                        self._tick_failures = 0
                    except Exception:  # a hook bug must not kill the link; it is logged with context
                        # ...but a hook that fails on every turn (the outbox's disk failing) sends
                        # nothing ever again: stalled_s counts it, so the watchdog is not pinged
                        # for a link that only goes round. Logged once per TICK_FAILURE_LOG_S.
                        self._tick_failures += 1
                        if now - self._tick_failure_logged >= TICK_FAILURE_LOG_S:
                            self._tick_failure_logged = now
                            log.exception("mqtt %s: tick hook failed (%d times in a row)", self.name,
                                          self._tick_failures)
            self._mark_down()
        try:
            if self._client.is_connected():
                # A clean stop still tells HQ we are gone: ask the broker to publish the will.
                reason = ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message") if self._has_will else None
                self._client.disconnect(reasoncode=reason)
                deadline = time.monotonic() + 1.0
                while self._client.is_connected() and time.monotonic() < deadline:
                    self._client.loop(timeout=0.05)
        except (OSError, ValueError):
            pass  # closing a socket that is already gone
        self._mark_down()

    def _connect_once(self) -> bool:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.settings.session_expiry_s
        self._paho_error = ""
        self._refused = ""
        # connect() blocks in name lookup (no timeout of its own: nameservers that drop queries
        # take 20 s and more), TCP and TLS: a planned wait, bounded, not a hang -- or anyone who
        # can disturb DNS could make the watchdog kill the node, camera and all.
        self._beat = time.monotonic() + CONNECT_ALLOWANCE_S
        try:
            self._client.connect(self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s,
                                 clean_start=False, properties=properties)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._connect_failed(f"connect: {exc}")
            return False
        # Wait for CONNACK (or failure) without blocking shutdown.
        deadline = time.monotonic() + CONNACK_TIMEOUT_S
        reason = f"no CONNACK within {CONNACK_TIMEOUT_S:g} s"
        while not self._stop.is_set() and time.monotonic() < deadline:
            self._beat = time.monotonic()
            rc = self._client.loop(timeout=0.05)
            if self._connected.is_set():
                if self.stats.failures_in_a_row:
                    log.info("mqtt %s: connected after %d failed attempts (last: %s)", self.name,
                             self.stats.failures_in_a_row, self.stats.last_error)
                self.stats.failures_in_a_row = 0
                self._failures_at_log = 0
                self._paho_error = ""
                self._connect_failure_logged = float("-inf")
                return True
            if self._refused:
                reason = self._refused
                break
            if rc != paho.MQTT_ERR_SUCCESS:
                reason = f"connection closed before CONNACK: {self._why(rc)}"
                break
        if self._stop.is_set() and not self._refused:
            return False  # stopping, not failing: nothing to report
        self._connect_failed(reason)
        try:
            self._client.disconnect()
        except (OSError, ValueError):
            pass
        return False

    def _why(self, rc: int) -> str:
        """paho's error for `rc`, with the socket or TLS error it logged when there is one."""
        text = paho.error_string(rc)
        return f"{text} ({self._paho_error})" if self._paho_error else text

    def _set_error(self, reason: str) -> None:
        self.stats.last_error = reason
        self.stats.last_error_ns = time.time_ns()

    def _connect_failed(self, reason: str) -> None:
        """Count a failed attempt and log it: the first at once, then once per CONNECT_FAILURE_LOG_S."""
        self.stats.failures += 1
        self.stats.failures_in_a_row += 1
        self._set_error(reason)
        now = time.monotonic()
        if now - self._connect_failure_logged < CONNECT_FAILURE_LOG_S:
            return
        self._connect_failure_logged = now
        lower = reason.lower()
        hint = next((f"; {h}" for needle, h in _TLS_HINTS if needle in lower), "")
        count = self.stats.failures_in_a_row
        since = (f" ({count - self._failures_at_log} more failed attempts since the last report, {count} in a row; "
                 f"retrying with backoff up to {self.settings.backoff_max_s:g} s)"
                 if self._failures_at_log else f" (retrying with backoff up to {self.settings.backoff_max_s:g} s)")
        self._failures_at_log = count
        log.warning("mqtt %s: cannot connect to %s:%d as %s: %s%s%s", self.name, self.settings.host,
                    self.settings.port, self.settings.client_id, reason, hint, since)

    def _handle_log(self, client, userdata, level, buf) -> None:
        # Only errors are kept (for _why), and only the first since the attempt began: it is the
        # cause ("failed to receive on socket: ..."); what follows is paho noting it is not
        # connected any more. paho's debug lines are its per-packet chatter.
        if level in (paho.MQTT_LOG_ERR, paho.MQTT_LOG_WARNING) and not self._paho_error:
            self._paho_error = buf

    def _handle_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            # logged (rate-limited) by _connect_once, which sees this before its next turn
            self._refused = f"broker refused the connection: {reason_code}"
            return
        self.stats.connects += 1
        self.stats.connected = True
        self.stats.since_ns = time.time_ns()
        log.info("mqtt %s: connected to %s:%d (session present: %s)", self.name, self.settings.host,
                 self.settings.port, flags.session_present)
        self._connected.set()
        try:
            self._on_connect(client, bool(flags.session_present))
        except Exception:  # see _run
            log.exception("mqtt %s: connect hook failed", self.name)

    def _handle_message(self, client, userdata, message) -> None:
        # paho re-raises callback exceptions out of loop(): one bad message (or a full disk
        # while handling it) must not end the link thread.
        try:
            self._on_message(client, message)
        except Exception:
            self._set_error(f"message handler failed on {message.topic}")
            log.exception("mqtt %s: handler failed for a message on %s", self.name, message.topic)

    def alive(self) -> bool:
        """True while the link's thread runs (the watchdog checks it)."""
        return self._thread is not None and self._thread.is_alive()

    def stalled_s(self) -> float:
        """Seconds the link's thread is overdue on its loop: it comes round every tick, or
        within the connect timeout, and a backoff wait is planned, so a large figure is a hang.
        While connected, also how long the tick hook has failed on every turn (nothing is
        published then, though the loop goes round)."""
        now = time.monotonic()
        failing = now - self._tick_ok if self._tick_failures and self._connected.is_set() else 0.0
        return max(0.0, now - self._beat, failing)

    def _handle_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._connected.is_set():
            why = f"{reason_code} ({self._paho_error})" if self._paho_error else str(reason_code)
            self._set_error(f"disconnected: {why}")
            log.warning("mqtt %s: disconnected: %s", self.name, why)
        self._mark_down()

    def _mark_down(self) -> None:
        if self._connected.is_set():
            self.stats.disconnects += 1
        self._connected.clear()
        self.stats.connected = False
