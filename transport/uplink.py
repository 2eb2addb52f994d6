"""The node's uplink: publishes the outbox to the broker and deletes what HQ acknowledges.

Nothing is published that is not already committed in the outbox, and nothing is deleted
from it on the broker's PUBACK: only HQ's signed end-to-end ack on the node's own topic
removes a message. Unacked messages are published again after every reconnect and after
`resend_after_s`.
"""
from __future__ import annotations

import collections
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric import ed25519

from transport import signed, topics
from transport.errors import EnvelopeError
from transport.mqtt import BrokerSettings, MqttLink
from transport.outbox import Outbox

log = logging.getLogger(__name__)

# What this uplink understands beyond release 1's protocol, announced in the heartbeat
# (`uplink_features`): HQ sends an ack that only says "later" to a node that lists "later" (an
# older node takes any verified ack as HQ's progress, and would stop backing off).
FEATURES = ("later", "ingest-generation")
# Generation resends allowed at once (HQ having answered since the last) within one base resend
# interval: a node's start and a worker's restart just after it both go at once.
GENERATION_AT_ONCE = 2


@dataclass
class UplinkStats:
    """Counters for health reports."""

    published: int = 0
    acks: int = 0
    acked: int = 0
    bad_acks: int = 0
    last_ack_ns: int = 0
    # copies HQ answered "later": received and verified, set aside there, not stored (they stay
    # in the outbox and back off; HQ's ingest log says why)
    deferred: int = 0
    # new ingest generations seen (a worker subscribed again): unacknowledged messages went again
    ingest_generations: int = 0
    bad_generations: int = 0  # generation messages that failed verification (ignored)


class Uplink:
    """Publishes outbox entries over an MqttLink and applies HQ's acks."""

    def __init__(self, outbox: Outbox, settings: BrokerSettings, node_id: str,
                 hq_sign_keys: list[ed25519.Ed25519PublicKey], *, window: int = 500,
                 resend_after_s: float = 30.0, max_queued_bytes: int = 32 * 1024 * 1024,
                 on_control: Callable[[str, bytes], None] | None = None) -> None:
        self.outbox = outbox
        self.node_id = node_id
        self.hq_sign_keys = hq_sign_keys
        self.window = window
        # paho holds every QoS 1 copy it was handed (and its encoded packet) until the broker
        # PUBACKs it: on a stalled link a window of 200 kB overview images would be 100 MB of
        # the service's 400 MB. Copies waiting in paho are bounded in bytes too (one at least).
        self.max_queued_bytes = max_queued_bytes
        self.resend_after_ns = int(resend_after_s * 1e9)
        self.max_resend_after_ns = int(600 * 1e9)
        # When HQ last acknowledged something, on the monotonic clock (as the outbox's send
        # times): a wall clock step must neither stall resends nor unleash them all at once.
        self._progress_ns = time.monotonic_ns()
        # When every unacknowledged message was last made due again for a broker that lost the
        # session (see _connected): at most once per resend interval.
        self._full_reset_ns = -(1 << 62)
        # HQ ingest's generation last seen (topics.HQ_INGEST), whether a new one still waits for
        # its full resend, and that resend's own backoff (_generation_due: a flapping worker must
        # not make every node resend its window at each flap).
        self._generation: str | None = None
        self._generation_reset = False
        self._generation_reset_ns = -(1 << 62)
        self._generation_resets = 0  # generation resends since HQ last answered (_generation_progress_ns)
        self._generation_immediate: collections.deque[int] = collections.deque(maxlen=GENERATION_AT_ONCE)
        self._generation_progress_ns = self._progress_ns
        self.stats = UplinkStats()
        self._on_control = on_control
        self._health: bytes | None = None
        # seq -> (paho's handle, when it was handed over) for copies the broker has not yet
        # PUBACKed: they are still in the client's queue, and paho itself resends them after a
        # reconnect, so a second copy would only wait behind the first.
        self._queued: dict[int, tuple[paho.MQTTMessageInfo, int]] = {}
        self._queued_bytes: dict[int, int] = {}  # seq -> size of its copy in paho's queue
        # The retained "online" status last handed to paho, until the broker PUBACKs it (see _connected).
        self._status_info: paho.MQTTMessageInfo | None = None
        status_topic = topics.node_topic(node_id, "status")
        self.link = MqttLink(
            settings, name=f"uplink-{node_id}", on_connect=self._connected, on_message=self._message,
            on_tick=self._tick, will=(status_topic, _status("offline")),
        )

    def start(self) -> None:
        """Start publishing in the background."""
        self.link.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop within `timeout`; unacked messages stay in the outbox for next time. False when
        the link's thread is still running (see `MqttLink.stop`)."""
        return self.link.stop(timeout)

    def publish_health(self, report: dict) -> None:
        """Queue a health heartbeat for the link thread (QoS 0: a missed one is replaced by the next).

        Only the link thread touches the socket: paho's TLS socket is not safe for two writers.
        """
        self._health = json.dumps(report).encode()

    # -- link hooks (link thread) ---------------------------------------------------------
    def _connected(self, client: paho.Client, session_present: bool) -> None:
        client.subscribe([(topics.node_topic(self.node_id, leaf), 1) for leaf in topics.DOWN]
                         + [(topics.HQ_INGEST, 1)])
        # paho keeps an unacknowledged QoS 1 copy and resends it itself on the new connection:
        # one more per reconnect to a broker that never PUBACKs would pile up in its queue.
        if not _awaiting_puback(self._status_info):
            self._status_info = client.publish(topics.node_topic(self.node_id, "status"), _status("online"),
                                               qos=1, retain=True)
        # With the session kept (session_present), the broker still holds what it PUBACKed for
        # HQ, and paho sends again by itself what it had not: nothing to do. A broker back
        # without it (restarted without persistence, its store lost) lost what it had queued
        # for HQ too: every unacknowledged message is made due again (a window at a time). At
        # most once per current resend interval, though, which grows while HQ is silent: a
        # broker that never keeps sessions (expiry capped at 0, a load-balanced cluster) and a
        # link that drops every few seconds made the whole window go again at every reconnect.
        now = time.monotonic_ns()
        if not session_present and now - self._full_reset_ns >= self._resend_after(now):
            self._full_reset_ns = now
            self.outbox.reset_sent(since_ns=None)

    def _generation_due(self, now: int) -> bool:
        """Whether a new generation's full resend may go now (see _tick): at once for the first
        since HQ last answered, but not more than GENERATION_AT_ONCE such in a base resend
        interval (each ack re-arms it, and the resent copies' acks would re-arm it again for a
        worker that restarts every few seconds); otherwise the base interval after the last,
        doubling with each one while HQ answers nothing."""
        if self._generation_resets == 0:
            recent = sum(1 for t in self._generation_immediate if now - t < self.resend_after_ns)
            return recent < GENERATION_AT_ONCE
        wait = min(self.resend_after_ns << min(self._generation_resets - 1, 20), self.max_resend_after_ns)
        return now - self._generation_reset_ns >= wait

    def _resend_after(self, now: int) -> int:
        """The resend interval now: it doubles with each interval of HQ's silence (capped)."""
        silent = now - self._progress_ns
        doublings = int(math.log2(silent / self.resend_after_ns)) if silent > self.resend_after_ns else 0
        return min(self.resend_after_ns << min(doublings, 20), self.max_resend_after_ns)

    def _tick(self, client: paho.Client) -> None:
        health, self._health = self._health, None
        if health is not None:
            client.publish(topics.node_topic(self.node_id, "health"), health, qos=0)
        # Messages past their resend time no longer hold a place in the window. While HQ
        # acknowledges nothing, the resend interval doubles with each interval of silence
        # (capped): a down HQ gets a trickle of resends, not a storm queued at the broker.
        now = time.monotonic_ns()
        if self._generation_progress_ns != self._progress_ns:
            self._generation_progress_ns, self._generation_resets = self._progress_ns, 0  # HQ answered since
        if self._generation_reset and self._generation_due(now):
            # An ingest worker subscribed again: what was published while none was subscribed
            # went nowhere (even just after a reconnect's own full resend). On a backoff of its
            # own: the first since HQ last answered at once, then the base interval, doubling
            # (to the 10 min cap), so a worker that reconnects again and again and stores nothing
            # (its database away) cannot have every node resend its window each time, while a
            # worker back after a long outage is not kept waiting by the interval that outage grew.
            self._generation_reset = False
            # One that found nothing unacknowledged (an idle node) is no resend HQ left
            # unanswered: it counts neither towards the backoff nor against the at-once allowance.
            if self.outbox.reset_sent(since_ns=None):
                if self._generation_resets == 0:
                    self._generation_immediate.append(now)
                self._generation_resets += 1
                self._generation_reset_ns = self._full_reset_ns = now
        resend_after = self._resend_after(now)
        # A copy leaves _queued only at its PUBACK, however old: paho holds every unacknowledged
        # QoS 1 copy until then (and resends it itself after a reconnect), so forgetting it by age
        # let a broker that never PUBACKs collect another window of copies every max_resend_after.
        self._queued = {seq: (info, t) for seq, (info, t) in self._queued.items() if not info.is_published()}
        self._queued_bytes = {seq: self._queued_bytes.get(seq, 0) for seq in self._queued}
        held = sum(self._queued_bytes.values())
        # A copy still queued past its resend time no longer counts in the outbox's window, but
        # it still takes a place in the client's queue: on a slow link (acks trickling in)
        # resending it would queue duplicates behind it without bound.
        stale = sum(1 for _, t in self._queued.values() if now - t >= resend_after)
        # ...and never more copies in the client's queue than the window: a reconnect forgets the
        # outbox's send times (reset_sent), not paho's queue.
        room = min(self.window - self.outbox.in_flight(resend_after, now) - stale, self.window - len(self._queued))
        if room <= 0:
            return
        # At most half the room for copies of messages sent before: a run of messages HQ never
        # acknowledges (set aside, rejected) at the front of the queue must not take every
        # place in the window, or the reads behind them would never leave (Outbox.due).
        due = [entry for entry in self.outbox.due(room + stale, resend_after, now, max_resends=max(1, room // 2))
               if entry.seq not in self._queued][:room]
        if not due:
            return
        sent = []
        for entry in due:
            if self._queued and held + len(entry.message) > self.max_queued_bytes:
                break  # the rest waits for PUBACKs to free paho's queue
            leaf = "event" if entry.kind == "overview" else entry.kind
            info = client.publish(topics.node_topic(self.node_id, leaf), entry.message, qos=1)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                log.warning("uplink: publish of seq %d failed: %s", entry.seq, paho.error_string(info.rc))
                break
            self._queued[entry.seq] = (info, now)
            self._queued_bytes[entry.seq] = len(entry.message)
            held += len(entry.message)
            sent.append(entry.seq)
        self.outbox.mark_sent(sent, now)
        self.stats.published += len(sent)

    def _message(self, client: paho.Client, message: paho.MQTTMessage) -> None:
        if message.topic == topics.HQ_INGEST:
            self._ingest_generation(message.payload, live=not message.retain)
            return
        parsed = topics.parse(message.topic)
        if parsed is None or parsed[0] != self.node_id:
            return
        leaf = parsed[1]
        if leaf == "ack":
            self._apply_ack(message.payload)
        elif self._on_control is not None:
            self._on_control(leaf, message.payload)

    def _apply_ack(self, payload: bytes) -> None:
        try:
            body = signed.verify("ack", payload, self.hq_sign_keys, self.node_id)
            seqs = body["seqs"]
            later = body.get("later", [])  # absent from HQs before it
            # type() is int: CBOR true would pass isinstance(s, int) and delete seq 1
            for field, value in (("seqs", seqs), ("later", later)):
                if not (isinstance(value, list) and all(type(s) is int for s in value)):
                    raise EnvelopeError("malformed", f"ack field {field}: expected a list of integers")
        except (EnvelopeError, KeyError, ValueError) as exc:
            self.stats.bad_acks += 1
            log.warning("uplink: ignored an ack that failed verification: %s", exc)
            return
        removed = self.outbox.ack(seqs)
        self.stats.acks += 1
        self.stats.acked += removed
        if later:
            deferred = self.outbox.defer(later)
            self.stats.deferred += deferred
            log.info("uplink: HQ set aside %d message(s) (seq %s%s), kept here and sent again later",
                     len(later), later[0], f"..{later[-1]}" if len(later) > 1 else "")
        self.stats.last_ack_ns = time.time_ns()  # for health reports: a UTC time
        # HQ answered: its silence is what grows the resend interval, and a "later" is an answer
        self._progress_ns = time.monotonic_ns()

    def _ingest_generation(self, payload: bytes, live: bool) -> None:
        """HQ ingest's retained generation: a new one means a worker subscribed again. `live`:
        published just now (the broker clears the retain flag of a live one), not the copy the
        broker keeps and hands to every new subscription."""
        try:
            generation = _generation_of(signed.verify("ingest", payload, self.hq_sign_keys, self.node_id))
        except (EnvelopeError, KeyError, ValueError) as exc:
            self.stats.bad_generations += 1
            log.warning("uplink: ignored an ingest generation that failed verification: %s", exc)
            return
        previous, self._generation = self._generation, generation
        # The kept copy first seen since start is only remembered: it is older than this
        # connection, and what a start publishes goes anyway. A live one is a worker that just
        # subscribed, maybe after this node published into the void.
        if generation != previous and (live or previous is not None):
            self.stats.ingest_generations += 1
            self._generation_reset = True
            log.info("uplink: HQ ingest subscribed again (generation %s): publishing what it has not "
                     "acknowledged again", generation)


def _generation_of(body: dict) -> str:
    generation = body.get("generation")
    if not (isinstance(generation, str) and 0 < len(generation) <= 64):
        raise EnvelopeError("malformed", "ingest field generation: expected a string of 1-64 characters")
    return generation


def _awaiting_puback(info: paho.MQTTMessageInfo | None) -> bool:
    """True while a publish handed to paho waits in its queue for the broker's PUBACK."""
    if info is None:
        return False
    try:
        return not info.is_published()
    except (ValueError, RuntimeError):  # paho refused it (queue full, no connection): not waiting
        return False


def _status(state: str) -> bytes:
    return json.dumps({"state": state, "t_ns": time.time_ns()}).encode()
