"""HQ ingest: verify, decrypt, store exactly once, then acknowledge end to end.

Order per message: cleartext header checked → node enrolled and not revoked → decrypt →
signature → header binding → store (one transaction per batch) → MQTT PUBACK to the broker
(manual ack, so the broker redelivers anything HQ did not store) → signed ack to the node.
A message that fails any check is counted under its reason, logged once with the node and
sequence it claims, and never crashes ingest.
"""
from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from hq.store import ReadStore
from transport import signed, topics
from transport.envelope import MAX_MESSAGE_BYTES, Opened, open_envelope, read_header
from transport.errors import EnvelopeError
from transport.mqtt import BrokerSettings, MqttLink
from transport.payload import ReadPayload
from transport.registry import Registry

log = logging.getLogger(__name__)


@dataclass
class IngestStats:
    """Counters: stored, duplicates, conflicts and rejections by reason."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    conflicts: int = 0
    acks_sent: int = 0
    store_errors: int = 0
    rejected: collections.Counter = field(default_factory=collections.Counter)


class Ingest:
    """One HQ ingest worker. Several may run at once: they share the load through `$share`."""

    def __init__(self, settings: BrokerSettings, *, store_path: Path | str, registry_path: Path,
                 decryption_keys: dict[str, x25519.X25519PrivateKey], sign_key: ed25519.Ed25519PrivateKey,
                 max_message_bytes: int = MAX_MESSAGE_BYTES, max_batch: int = 500, shared: bool = True,
                 revocation_grace_s: float = 24 * 3600.0) -> None:
        self.store_path = store_path  # a SQLite path or a postgresql:// URL
        self.registry_path = Path(registry_path)
        self.decryption_keys = decryption_keys
        self.sign_key = sign_key
        self.max_message_bytes = max_message_bytes
        self.max_batch = max_batch
        self.shared = shared
        self.revocation_grace_s = revocation_grace_s
        self.stats = IngestStats()
        self._pending: collections.deque = collections.deque()
        self._retry_at = 0.0
        self._store: ReadStore | None = None
        self._registry: Registry | None = None
        self.link = MqttLink(settings, name=f"ingest-{settings.client_id}", on_connect=self._connected,
                             on_message=self._message, on_tick=self._tick, manual_ack=True)

    def start(self) -> None:
        """Start the worker's thread."""
        self.link.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop within `timeout`; messages not yet stored were not PUBACKed and will come again."""
        self.link.stop(timeout)

    # -- link thread ----------------------------------------------------------------------
    def _connected(self, client: paho.Client, session_present: bool) -> None:
        client.subscribe([(t, 1) for t in topics.ingest_subscriptions(self.shared)])

    def _message(self, client: paho.Client, message: paho.MQTTMessage) -> None:
        self._pending.append((message.topic, message.payload, message.mid, message.qos))

    def _tick(self, client: paho.Client) -> None:
        if not self._pending:
            return
        if self._store is None:
            # sqlite3 connections belong to the thread that made them: open them here.
            self._store = ReadStore(self.store_path)
            self._registry = Registry(self.registry_path)
            self._signer_for = self._registry.signer_lookup(cache_s=60.0, grace_s=self.revocation_grace_s)
        if time.monotonic() < self._retry_at:
            return
        batch: list[tuple[Opened, int, int]] = []
        while self._pending and len(batch) < self.max_batch:
            item = self._pending.popleft()
            if isinstance(item[0], Opened):  # verified before, put back after a failed store
                batch.append(item)
                continue
            topic, payload, mid, qos = item
            self.stats.received += 1
            opened = self._verify(topic, payload)
            if opened is None:
                client.ack(mid, qos)  # rejected for good: do not let the broker redeliver it
            else:
                batch.append((opened, mid, qos))
        if not batch:
            return
        try:
            results = self._store.store(o for o, _, _ in batch)
        except Exception:
            # Not stored, so not acknowledged: put the batch back and try again next tick (the
            # broker would redeliver anyway after a reconnect; the node resends after its timeout).
            self.stats.store_errors += 1
            log.exception("ingest: storing a batch of %d failed; will retry", len(batch))
            for opened, mid, qos in reversed(batch):
                self._pending.appendleft((opened, mid, qos))
            self._retry_at = time.monotonic() + min(30.0, 0.5 * 2 ** min(self.stats.store_errors, 6))
            return
        self.stats.store_errors = 0
        acks: dict[str, list[int]] = collections.defaultdict(list)
        for (opened, mid, qos), result in zip(batch, results):
            client.ack(mid, qos)
            if result.outcome == "stored":
                self.stats.stored += 1
            elif result.outcome == "duplicate":
                self.stats.duplicates += 1
            else:
                self.stats.conflicts += 1
                log.error("ingest: node %s seq %d arrived again with different content; kept in seq_conflicts",
                          result.node_id, result.seq)
            acks[result.node_id].append(result.seq)
        for node_id, seqs in acks.items():
            body = {"v": 1, "node": node_id, "seqs": seqs, "t_ns": time.time_ns()}
            client.publish(topics.node_topic(node_id, "ack"), signed.sign("ack", body, self.sign_key), qos=1)
            self.stats.acks_sent += 1

    def _verify(self, topic: str, payload: bytes) -> Opened | None:
        parsed = topics.parse(topic)
        try:
            if parsed is None or parsed[1] not in topics.SEALED:
                raise EnvelopeError("topic", f"unexpected topic {topic!r}")
            # The topic says who sent it (the broker's ACL allows a node only its own topics):
            # a header that claims anything else is refused before any crypto is spent on it.
            header, _, _ = read_header(payload, self.max_message_bytes)
            if header.node_id != parsed[0] or header.kind != parsed[1]:
                raise EnvelopeError("binding", f"{header.kind} message from node {header.node_id} on {topic}")
            opened = open_envelope(payload, signer_for=self._signer_for,
                                   decryption_keys=self.decryption_keys, max_bytes=self.max_message_bytes)
            if opened.header.kind in ("read", "alert"):
                ReadPayload.from_wire(opened.payload)  # full schema check before storing
            else:
                check_event(opened.payload)
            return opened
        except EnvelopeError as exc:
            self.stats.rejected[exc.reason] += 1
            log.warning("ingest: rejected message on %s (%d bytes): %s", topic, len(payload), exc)
            return None
        except Exception as exc:  # a message must never stop ingest, whatever is wrong with it
            self.stats.rejected["invalid"] += 1
            log.warning("ingest: rejected message on %s (%d bytes): invalid: %r", topic, len(payload), exc)
            return None


def check_event(payload: dict) -> None:
    """The fields every event must have, with their types (the rest is event-specific)."""
    if not isinstance(payload.get("event"), str):
        raise EnvelopeError("payload", "event field event: expected text")
    t_ns = payload.get("t_ns")
    if not isinstance(t_ns, int) or isinstance(t_ns, bool) or not 0 <= t_ns < 2**63:
        raise EnvelopeError("payload", "event field t_ns: expected an unsigned 63-bit integer")
