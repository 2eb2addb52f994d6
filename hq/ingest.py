"""HQ ingest: verify, decrypt, store exactly once, then acknowledge end to end.

Order per message: cleartext header checked → node enrolled and not revoked → decrypt →
signature → header binding → store (one transaction per batch) → MQTT PUBACK to the broker
(manual ack, so the broker redelivers anything HQ did not store) → signed ack to the node.
A message that fails any check is counted under its reason, logged once with the node and
sequence it claims, and never crashes ingest.

A batch the store refuses is stored again one message at a time, so one message the store
cannot hold (reason `store`) does not hold back everyone else's: it is set aside in
`rejects_dir` (the exact bytes received, and why) and PUBACKed, and the others are stored and
acknowledged. A store that is unavailable rejects nothing: the batch waits, with backoff, on
a fresh connection.

A message whose capture time HQ will not store (reason `time`: more than `max_future_skew_s`
ahead of HQ's clock, or before 2000) is set aside the same way: on PostgreSQL every month up to
a far-future date would get a partition that retention never drops. A read resent after
retention purged it is acknowledged and counted (`purged`), not stored again (hq.store).

A message set aside and later stored (its resend, once its time is in range or the store was
fixed) has its set-aside files removed once the store has committed it: `.signed` is its
decrypted payload, which must not outlive it outside the store. Retention removes what is left
in `rejects_dir` after the retention period (hq.retention.purge_set_aside).

`rejects_dir` is bounded (`max_set_aside_bytes`, hq.toml `[ingest] max_set_aside_mb`): a node
whose signing key an attacker holds could otherwise fill HQ's disk with far-future reads. When
it is full a message that would be set aside is PUBACKed but not kept and not acknowledged to
its node (reason `set_aside_full`, logged at most once a minute): the node keeps its copy and
sends it again, as it does for every message HQ has not acknowledged.

Every verified message set aside (kept, or not for want of room) is answered `later` in its
node's next signed ack: the node keeps it but stops letting its copies hold the publish window,
so the reads behind a run of set-aside ones are not held back (docs/wire-format.md).
"""
from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from hq.db import MAX_INT64
from hq.errors import StoreError
from hq.files import PUSHED_HOTLIST, SET_ASIDE_SUFFIXES, set_aside_stem
from hq.store import ReadStore, StoreResult
from transport import atomic, cbor, signed, topics
from transport.envelope import MAX_MESSAGE_BYTES, Opened, open_envelope, read_header
from transport.errors import EnvelopeError
from transport.key_usage import KeyUsage
from transport.mqtt import BrokerSettings, MqttLink
from transport.payload import ReadPayload
from transport.registry import Registry, RegistryError

log = logging.getLogger(__name__)

try:  # PostgreSQL is optional: without psycopg there are no psycopg errors to classify
    import psycopg
except ImportError:  # pragma: no cover - the postgres extra is installed in CI
    psycopg = None  # type: ignore[assignment]

# What opening or closing a store raises when the database is not there (any backend).
_DRIVER_ERRORS: tuple[type[Exception], ...] = (StoreError, sqlite3.Error, OSError) + (
    (psycopg.Error,) if psycopg is not None else ())

# A message the store refused is remembered this long (by the digest of its bytes), so the
# node's resends of it (every outbox.resend_after_s, until acknowledged) are set aside again
# without failing a batch each time; after that it is tried again, in case the cause was fixed.
STORE_REJECT_MEMORY_S = 3600.0
STORE_REJECT_MEMORY_MAX = 4096

# Messages waiting for the store, beyond which a QoS 0 copy is refused (reason `overload`). QoS 1
# messages are bounded by the broker, which sends no more unacknowledged ones than its in-flight
# limit (max_inflight_messages in the provisioned mosquitto.conf), and ingest PUBACKs only what it
# stored or set aside; QoS 0 ones need no PUBACK, so while the store is down a client publishing
# them (nodes publish at QoS 1) would fill this worker's memory without end.
# Node heartbeats and statuses (figures only): at most this big, this many kept between ticks,
# written to the store at most this often.
MAX_NODE_STATE_BYTES = 16 * 1024
MAX_NODE_STATES = 20_000
NODE_STATE_EVERY_S = 5.0
# A node whose heartbeat reports an older hot list than the one `alpr-hq push` last sent (its
# copy, hq.files.PUSHED_HOTLIST) gets it again, at most this often: the retained copy can be lost
# (a broker killed before its autosave, a broker restored from an old store) and nothing else
# would repeat a push until the next one, while the node's list runs out (valid_until_ns).
HOTLIST_REPUSH_S = 300.0
# A worker's generation not relayed back by the broker within this long: its ACL is stale.
GENERATION_ECHO_S = 10.0
# How long what a worker learnt of a node's features (its heartbeat) stands before it looks again.
KNOWS_LATER_TTL_S = 30.0
MAX_HOTLIST_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_PENDING = 2000
# ... and the bytes they may hold together: 2000 messages of up to max_message_kb (4 MiB) each
# would be 7.8 GiB of unauthenticated bytes kept before any check. The same rule: a QoS 0 copy
# past it is refused, a QoS 1 one is kept (counted, so QoS 0 copies give way first); what bounds
# QoS 1 bytes is the broker's max_inflight_messages (and max_inflight_bytes where it is set).
DEFAULT_MAX_PENDING_BYTES = 256 * 1024 * 1024

# Capture times HQ stores: not before 2000 (no ALPR read of ours is older; a node whose clock
# never got set reports 1970), and not more than the configured skew ahead of HQ's clock.
MIN_CAPTURE_NS = int(dt.datetime(2000, 1, 1, tzinfo=dt.UTC).timestamp()) * 10**9
DEFAULT_FUTURE_SKEW_S = 24 * 3600.0

# Bytes rejects_dir may hold (see the module docstring). Its size is measured by listing it,
# then kept up to date as ingest writes; other workers and the retention job change it too,
# so it is measured again when a message is to be set aside this long after the last time
# (several workers together may overshoot by what each set aside in between).
DEFAULT_SET_ASIDE_MAX_BYTES = 1 << 30
SET_ASIDE_RESCAN_S = 60.0
SET_ASIDE_FULL_LOG_S = 60.0


@dataclass(frozen=True)
class _Verified:
    """A message that passed every check and waits to be stored (kept with its bytes for rejects)."""

    opened: Opened
    mid: int
    qos: int
    topic: str
    raw: bytes


class _Pending:
    """Messages waiting for the store, oldest first, with the bytes received for them.

    Either (topic, payload, mid, qos) as the broker delivered it, or a _Verified put back after a
    failed store; both count the bytes received (a verified one also holds its decrypted payload:
    the bound is on what clients sent, which is what an unauthenticated flood controls).
    """

    def __init__(self) -> None:
        self._items: collections.deque = collections.deque()
        self.bytes = 0

    @staticmethod
    def size(item: tuple | _Verified) -> int:
        """The bytes received for one waiting message."""
        return len(item.raw) if isinstance(item, _Verified) else len(item[1])

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator:
        return iter(self._items)

    def append(self, item: tuple | _Verified) -> None:
        """Add at the back (a new message)."""
        self._items.append(item)
        self.bytes += self.size(item)

    def appendleft(self, item: tuple | _Verified) -> None:
        """Add at the front (put back, to be tried first)."""
        self._items.appendleft(item)
        self.bytes += self.size(item)

    def extend(self, items: list) -> None:
        """Add at the back, in order."""
        for item in items:
            self.append(item)

    def forget_deliveries(self) -> None:
        """After a connect without a session: the broker's message ids of the last connection
        name nothing (or another message) now, so none is PUBACKed (paho sends none for QoS 0).
        The messages are still stored and acknowledged to their nodes end to end."""
        self._items = collections.deque(
            dataclasses.replace(item, qos=0) if isinstance(item, _Verified) else (*item[:3], 0)
            for item in self._items)

    def popleft(self) -> tuple | _Verified:
        """Take the oldest."""
        item = self._items.popleft()
        self.bytes -= self.size(item)
        return item


@dataclass
class IngestStats:
    """Counters: stored, duplicates, conflicts and rejections by reason."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    purged: int = 0  # reads sent again after retention purged them: acknowledged, not stored
    conflicts: int = 0
    acks_sent: int = 0
    hotlist_repushes: int = 0  # pushed hot lists sent again to a node that reported an older one
    generations: int = 0  # new generations announced to the nodes (one per (re)connect)
    store_errors: int = 0  # consecutive failed store attempts blamed on the store (drives backoff)
    rejected: collections.Counter = field(default_factory=collections.Counter)


class Ingest:
    """One HQ ingest worker. Several may run at once: they share the load through `$share`."""

    def __init__(self, settings: BrokerSettings, *, store_path: Path | str, registry_path: Path,
                 decryption_keys: dict[str, x25519.X25519PrivateKey], sign_key: ed25519.Ed25519PrivateKey,
                 max_message_bytes: int = MAX_MESSAGE_BYTES, max_batch: int = 500, shared: bool = True,
                 revocation_grace_s: float = 24 * 3600.0, rejects_dir: Path | None = None,
                 share_group: str = topics.INGEST_GROUP,
                 max_future_skew_s: float = DEFAULT_FUTURE_SKEW_S,
                 max_pending: int = DEFAULT_MAX_PENDING,
                 max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
                 max_set_aside_bytes: int = DEFAULT_SET_ASIDE_MAX_BYTES,
                 session_expiry_s: int = 0,
                 key_usage: KeyUsage | None = None) -> None:
        self.store_path = store_path  # a SQLite path or a postgresql:// URL
        # which HPKE key each node seals for, for `ca retire-hpke` (transport.key_usage)
        self.key_usage = key_usage
        self.registry_path = Path(registry_path)
        # The registry lives in HQ's data_dir, so by default the set-aside messages do too
        # (not beside store_path, which may be a PostgreSQL URL).
        self.rejects_dir = Path(rejects_dir) if rejects_dir is not None else self.registry_path.parent / "rejected"
        self.decryption_keys = decryption_keys
        self.sign_key = sign_key
        self.max_message_bytes = max_message_bytes
        self.max_batch = max_batch
        self.max_pending = max_pending
        if max_pending_bytes <= 0:
            raise ValueError(f"max_pending_bytes {max_pending_bytes}: must be positive")
        self.max_pending_bytes = max_pending_bytes
        self.shared = shared
        # Refused here rather than at the first CONNACK: a bad name should stop the worker at start.
        topics.ingest_subscriptions(shared, group=share_group)
        self.share_group = share_group
        self.revocation_grace_s = revocation_grace_s
        if not max_future_skew_s > 0:
            raise ValueError(f"max_future_skew_s {max_future_skew_s}: must be positive")
        self.max_future_skew_ns = int(max_future_skew_s * 1e9)
        if max_set_aside_bytes <= 0:
            raise ValueError(f"max_set_aside_bytes {max_set_aside_bytes}: must be positive")
        self.max_set_aside_bytes = max_set_aside_bytes
        self._set_aside_used: int | None = None  # bytes in rejects_dir, as last measured plus written since
        self._set_aside_measured = 0.0
        self._set_aside_full_logged: float | None = None
        self._set_aside_full_since_log = 0
        self.stats = IngestStats()
        self._pending = _Pending()
        # (node, "health" | "status") -> (text, received_ns): the latest of each since the last tick
        self._states: dict[tuple[str, str], tuple[str, int]] = {}
        self._states_recorded = 0.0
        self._retry_at = 0.0
        # Digest of the bytes of a message set aside → (when, reason), for its resends.
        self._store_rejected: collections.OrderedDict[bytes, tuple[float, str]] = collections.OrderedDict()
        # node -> seqs of verified messages set aside this tick: answered "later" in the node's
        # next ack, so that they stop holding its window (transport.outbox.Outbox.defer)
        self._later: dict[str, list[int]] = collections.defaultdict(list)
        # node -> (when learnt, monotonic; whether its heartbeat lists "later" in uplink_features):
        # only such nodes are sent an ack that says nothing but "later" (transport.uplink.FEATURES).
        # Heartbeats are shared among the workers, so what this worker did not see itself it
        # looks up in the store, where every worker records them (KNOWS_LATER_TTL_S).
        self._knows_later: dict[str, tuple[float, bool]] = {}
        # This worker's generation on the current connection: when sent (monotonic), and whether
        # the broker relayed it back (a broker ACL older than the generation refuses it silently).
        self._generation = ""
        self._generation_sent = 0.0
        self._generation_checked = True
        # The hot list `alpr-hq push` last sent (hq.push), as (file's stat, version, valid until,
        # message), and when each node was last sent it again (monotonic).
        self.pushed_hotlist = self.registry_path.parent / PUSHED_HOTLIST
        self._pushed: tuple[tuple[int, int], int, int, bytes] | None = None
        self._pushed_problem: tuple[int, int] | None = None
        self._repushed: dict[str, tuple[float, int, int | None]] = {}  # node -> (when, version, its rejected then)
        self._push_refused: dict[str, tuple[int, int]] = {}  # node -> (version it refused when sent again, its rejected then)
        self._store: ReadStore | None = None
        self._registry: Registry | None = None
        # No session kept for a worker (expiry 0, the default): a stopped or dead worker's session
        # used to keep its turn of the shared subscription for 7 days, the broker queueing every
        # other message for it, and mosquitto does not restore a `$share` subscription with a
        # session anyway. What the broker held for a worker that went is not lost: the nodes still
        # have it, and publish it again when a worker announces a new generation (_connected).
        # Nodes of a release before the generation do not hear it: while they remain, hq.toml
        # `[ingest] session_expiry_s` keeps a session, so the broker queues what they send.
        if session_expiry_s < 0:
            raise ValueError(f"session_expiry_s {session_expiry_s}: must be 0 or more")
        self.link = MqttLink(dataclasses.replace(settings, session_expiry_s=session_expiry_s),
                             name=f"ingest-{settings.client_id}",
                             on_connect=self._connected, on_message=self._message, on_tick=self._tick,
                             manual_ack=True)

    def start(self) -> None:
        """Start the worker's thread (warning when the shared subscription's name is the well-known default)."""
        if self.shared and self.share_group == topics.INGEST_GROUP:
            # Mosquitto's ACL file does not check SUBSCRIBE: a node that knows the name can join
            # the group and make the broker drop its turn of every node's messages.
            log.warning("ingest: [ingest] share_group is the well-known default %r: any client of the broker can "
                        "join the group and have messages meant for HQ dropped; set a secret one in hq.toml "
                        "(e.g. share_group = \"hq-ingest-<32 random hex digits>\", the same for every worker)",
                        self.share_group)
        self.link.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop within `timeout`; messages not yet stored were not PUBACKed and will come again."""
        self.link.stop(timeout)
        if self.key_usage is not None:
            self.key_usage.flush(force=True)

    # -- link thread ----------------------------------------------------------------------
    def _connected(self, client: paho.Client, session_present: bool) -> None:
        if not session_present:
            self._pending.forget_deliveries()
        client.subscribe([(t, 1) for t in topics.ingest_subscriptions(self.shared, group=self.share_group)]
                         + topics.node_state_subscriptions(self.shared, group=self.share_group)
                         + [(topics.HQ_INGEST, 0)])  # QoS 0: a check, nothing to PUBACK
        # Then a new generation, retained, for every node: what they published while no worker
        # was subscribed went nowhere (the broker drops a message no subscription takes), so
        # they publish what HQ has not acknowledged again now rather than after a resend
        # interval that grew while HQ was silent (up to 10 min). The broker handles this
        # client's SUBSCRIBE before its PUBLISH, so the resends find the subscription in place.
        self._generation = secrets.token_hex(8)
        body = {"v": 1, "node": "*", "t_ns": time.time_ns(), "generation": self._generation,
                "worker": self.link.settings.client_id}
        client.publish(topics.HQ_INGEST, signed.sign("ingest", body, self.sign_key), qos=1, retain=True)
        self.stats.generations += 1
        self._generation_sent, self._generation_checked = time.monotonic(), False

    def _generation_echo(self, client: paho.Client, message: paho.MQTTMessage) -> None:
        """The broker relayed a generation: this worker's own proves the ACL lets it through."""
        if message.qos:  # subscribed at QoS 0; a broker that upgrades it still gets its PUBACK
            client.ack(message.mid, message.qos)
        try:
            body = signed.verify("ingest", message.payload, [self.sign_key.public_key()], "*")
        except EnvelopeError:
            return  # another HQ key's (a rotation), or not ours to judge
        if body.get("generation") == self._generation:
            self._generation_checked = True

    def _check_generation(self) -> None:
        """Say so, once a connection, when the broker did not relay this worker's generation."""
        if self._generation_checked or time.monotonic() - self._generation_sent < GENERATION_ECHO_S:
            return
        self._generation_checked = True
        log.error("ingest: the broker did not relay this worker's generation on %s within %g s: its ACL is "
                  "probably older than this release, so nodes are not told when ingest is back and reads "
                  "sent meanwhile wait a resend interval; run `alpr-provision ca reload-broker` (it rewrites "
                  "the ACL from HQ's state)", topics.HQ_INGEST, GENERATION_ECHO_S)

    def _note_state(self, client: paho.Client, message: paho.MQTTMessage, node_id: str, leaf: str) -> None:
        """Keep a node's latest heartbeat or status for the next tick to record (`alpr-hq nodes`).

        Plain JSON / text that the broker's ACL lets only that node publish: no envelope to
        verify, and nothing is trusted from it but figures to show. Checked for size and form,
        and recorded only for enrolled nodes (at the tick, which has the registry)."""
        client.ack(message.mid, message.qos)  # a figure to show, not a read: nothing to redeliver
        payload = message.payload
        problem = None
        if len(payload) > MAX_NODE_STATE_BYTES:
            problem = f"{len(payload)} bytes, over {MAX_NODE_STATE_BYTES}"
        else:
            try:
                text = payload.decode("utf-8")
                doc = json.loads(text)
                if not isinstance(doc, dict):
                    problem = "not a JSON object"
                elif leaf == "status":
                    # {"state": "online" | "offline", "t_ns": ...}: the state is what is shown
                    text = doc.get("state") if doc.get("state") in ("online", "offline") else ""
                    if not text:
                        problem = "state is not 'online' or 'offline'"
            except (UnicodeDecodeError, ValueError) as exc:
                problem = f"unreadable ({exc.__class__.__name__})"
        if problem is not None:
            self.stats.rejected[f"{leaf}-malformed"] += 1
            log.warning("ingest: ignored %s of node %s: %s", leaf, node_id, problem)
            return
        if (node_id, leaf) not in self._states and len(self._states) >= MAX_NODE_STATES:
            self.stats.rejected[f"{leaf}-overload"] += 1
            return
        self._states[(node_id, leaf)] = (text, time.time_ns())

    def _record_states(self, client: paho.Client) -> None:
        """Write the heartbeats and statuses kept since the last tick (enrolled nodes only)."""
        if not self._states or self._store is None or self._registry is None:
            return
        states, self._states = self._states, {}
        known = []
        for (node_id, leaf), (text, received_ns) in states.items():
            try:
                record = self._registry.node(node_id)
            except RegistryError:
                self.stats.rejected[f"{leaf}-unknown-node"] += 1
                continue
            known.append((node_id, leaf, text, received_ns))
            if leaf == "health":
                doc = json.loads(text)  # checked to be a JSON object when it arrived (_note_state)
                self._knows_later[node_id] = (time.monotonic(), _features_list_later(doc))
                if record.status == "active":
                    self._converge_hotlist(client, node_id, doc)
        try:
            self._store.note_node_states(known)
        except _DRIVER_ERRORS as exc:
            # Figures only: the next heartbeat replaces them; reads are what must not be lost.
            log.warning("ingest: could not record %d node heartbeats/statuses (%r)", len(known), exc)

    def _converge_hotlist(self, client: paho.Client, node_id: str, health: dict[str, Any]) -> None:
        """Send the pushed hot list again to a node whose heartbeat reports an older version."""
        pushed = self._current_pushed()
        if pushed is None:
            return
        _, version, valid_until_ns, message = pushed
        state = health.get("hotlist")
        held = state.get("version") if isinstance(state, dict) else None
        rejected = state.get("rejected") if isinstance(state, dict) else None
        if type(held) is not int or held >= version or time.time_ns() >= valid_until_ns:
            return  # up to date, a node that does not say, or a list that has run out anyway
        refused = self._push_refused.get(node_id)
        if refused is not None:
            if refused[0] == version and not (type(rejected) is int and rejected < refused[1]):
                return
            del self._push_refused[node_id]  # a newer push, or the node restarted (its count began again)
        now = time.monotonic()
        when, sent_version, rejected_then = self._repushed.get(node_id, (float("-inf"), -1, None))
        if (sent_version == version and type(rejected) is int and type(rejected_then) is int
                and rejected > rejected_then):
            # It got the list and refused it (a signature it cannot check: an HQ key it does not
            # trust?): sending it again every few minutes until it runs out would change nothing.
            self._push_refused[node_id] = (version, rejected)
            log.error("ingest: node %s refused hot list version %d that ingest sent it again (its hotlist.rejected "
                      "went from %d to %d): not sending it again; see the node's log", node_id, version,
                      rejected_then, rejected)
            return
        if now - when < HOTLIST_REPUSH_S:
            return
        self._repushed[node_id] = (now, version, rejected if type(rejected) is int else None)
        client.publish(topics.node_topic(node_id, "hotlist"), message, qos=1, retain=True)
        self.stats.hotlist_repushes += 1
        log.warning("ingest: node %s reports hot list version %d but version %d was pushed: sent it again "
                    "(retained)", node_id, held, version)

    def _current_pushed(self) -> tuple[tuple[int, int], int, int, bytes] | None:
        """The hot list last pushed (read again when its file changes), or None."""
        try:
            st = self.pushed_hotlist.stat()
        except FileNotFoundError:
            self._pushed = None
            return None
        except OSError as exc:
            log.error("ingest: cannot read the pushed hot list %s: %s", self.pushed_hotlist, exc)
            return self._pushed
        key = (st.st_mtime_ns, st.st_size)
        if self._pushed is not None and self._pushed[0] == key:
            return self._pushed
        if self._pushed_problem == key:
            return None
        try:
            if st.st_size > MAX_HOTLIST_BYTES:
                raise EnvelopeError("oversize", f"{st.st_size} bytes")
            message = self.pushed_hotlist.read_bytes()
            body = signed.verify("hotlist", message, [self.sign_key.public_key()], "*")
            version, valid_until_ns = body["list_version"], body["valid_until_ns"]
            if type(version) is not int or type(valid_until_ns) is not int:
                raise EnvelopeError("malformed", "list_version / valid_until_ns are not integers")
        except (OSError, EnvelopeError, KeyError) as exc:
            self._pushed_problem = key
            log.error("ingest: %s is not a hot list signed with this HQ's key (%s): nodes that missed a push "
                      "are not sent it again", self.pushed_hotlist, exc)
            return None
        self._pushed = (key, version, valid_until_ns, message)
        return self._pushed

    def _message(self, client: paho.Client, message: paho.MQTTMessage) -> None:
        if message.topic == topics.HQ_INGEST:
            self._generation_echo(client, message)
            return
        where = topics.parse(message.topic)
        if where is not None and where[1] in ("health", "status"):
            self._note_state(client, message, *where)
            return
        size = len(message.payload)
        if size > self.max_message_bytes:
            # Refused now, as the size check of _verify would refuse it at the next tick: the
            # broker may allow bigger packets than ingest does, and queued they would all be
            # held in memory until then.
            self.stats.received += 1
            self.stats.rejected["oversize"] += 1
            log.warning("ingest: rejected message on %s (%d bytes): oversize: exceeds the %d byte limit",
                        message.topic, size, self.max_message_bytes)
            client.ack(message.mid, message.qos)  # rejected for good: do not let the broker redeliver it
            return
        if message.qos == 0 and (len(self._pending) >= self.max_pending
                                 or (len(self._pending) > 0 and self._pending.bytes + size > self.max_pending_bytes)):
            # Dropped, as QoS 0 allows: a QoS 1 one is never dropped unacknowledged here (the
            # broker would hold it in flight for this session), and the broker bounds those.
            # An empty queue takes any message the size check let through, so a bound set
            # below max_message_kb cannot refuse one message for good.
            self.stats.received += 1
            self.stats.rejected["overload"] += 1
            bound = (f"max_pending {self.max_pending} messages" if len(self._pending) >= self.max_pending
                     else f"max_pending_bytes {self.max_pending_bytes}")
            log.warning("ingest: rejected message on %s (%d bytes): overload: QoS 0 and %d messages (%d bytes) "
                        "already wait for the store (%s)", message.topic, size, len(self._pending),
                        self._pending.bytes, bound)
            return
        self._pending.append((message.topic, message.payload, message.mid, message.qos))

    def _opened(self) -> bool:
        """Open the registry and the store on this (the link's) thread, if not yet; False if the
        store cannot be opened now (it is down: wait for it, reject nothing)."""
        if time.monotonic() < self._retry_at:
            return False
        if self._registry is None:
            # sqlite3 connections belong to the thread that made them: open them here.
            self._registry = Registry(self.registry_path)
            self._signer_for = self._registry.signer_lookup(cache_s=60.0, grace_s=self.revocation_grace_s)
        if self._store is None:
            try:
                self._store = ReadStore(self.store_path)
            except _DRIVER_ERRORS as exc:
                log.error("ingest: cannot open the store (%r); %d messages (%d bytes) wait; will retry", exc,
                          len(self._pending), self._pending.bytes)
                self._store_unavailable("opening the store failed")
                return False
        return True

    def _tick(self, client: paho.Client) -> None:
        if self.key_usage is not None:
            self.key_usage.flush()
        self._check_generation()
        if self._states and time.monotonic() - self._states_recorded >= NODE_STATE_EVERY_S and self._opened():
            self._states_recorded = time.monotonic()
            self._record_states(client)
        try:
            self._store_pending(client)
        finally:
            self._send_acks(client, {})  # the "later" answers no stored message carried

    def _store_pending(self, client: paho.Client) -> None:
        """Verify, check and store up to a batch of what waits; acknowledge what was stored."""
        if not self._pending or not self._opened():
            return
        batch: list[_Verified] = []
        unkept: list[_Verified] = []  # out of range but not set aside (disk): not PUBACKed, kept here
        while self._pending and len(batch) < self.max_batch:
            item = self._pending.popleft()
            if not isinstance(item, _Verified):  # else verified before, put back after a failed store
                topic, payload, mid, qos = item
                self.stats.received += 1
                opened = self._verify(topic, payload)
                if opened is None:
                    client.ack(mid, qos)  # rejected for good: do not let the broker redeliver it
                    continue
                if self.key_usage is not None:
                    self.key_usage.saw(opened.header.node_id, opened.header.recipient_key_id)
                if self._refused_before(opened, payload):
                    client.ack(mid, qos)
                    continue
                item = _Verified(opened, mid, qos, topic, payload)
            why = self._time_problem(item.opened)
            if why is None:
                batch.append(item)
            elif self._set_aside(item, "time", why):
                client.ack(item.mid, item.qos)  # kept in rejects_dir (or left to its node): not redelivered
            else:
                unkept.append(item)
        if unkept:
            self._requeue(unkept)
            self._retry_at = time.monotonic() + 1.0
        if not batch:
            return
        try:
            results = self._store.store(v.opened for v in batch)
        except Exception as exc:  # classified below: a store fault waits, a message's own fault is isolated
            if not _message_may_be_at_fault(exc):
                log.error("ingest: storing a batch of %d failed (%r); will retry", len(batch), exc)
                self._requeue(batch)
                self._store_unavailable("store unavailable")
                return
            if len(batch) > 1:
                log.warning("ingest: storing a batch of %d failed (%r); storing its messages one at a time",
                            len(batch), exc)
            done = self._store_one_by_one(client, self._store, batch, exc)
            if done is None:
                return
        else:
            done = list(zip(batch, results))
        self.stats.store_errors = 0
        self._acknowledge(client, done)

    def _store_one_by_one(self, client: paho.Client, store: ReadStore, batch: list[_Verified],
                          batch_error: Exception) -> list[tuple[_Verified, StoreResult]] | None:
        """Store each message of a failed batch on its own; set aside those the store refuses.

        Returns what was stored (to acknowledge), or None when the store itself is at fault:
        then nothing is set aside and the whole batch waits for the next try.
        """
        done: list[tuple[_Verified, StoreResult]] = []
        refused: list[tuple[_Verified, Exception]] = []
        if len(batch) == 1:  # the batch was this message alone: its error is already known
            refused.append((batch[0], batch_error))
        else:
            for i, item in enumerate(batch):
                try:
                    done.append((item, store.store([item.opened])[0]))
                except Exception as exc:  # classified: see _message_may_be_at_fault
                    if not _message_may_be_at_fault(exc):
                        log.error("ingest: the store failed while storing one at a time (%r); will retry", exc)
                        self._acknowledge(client, done)
                        self._requeue([r for r, _ in refused] + batch[i:])
                        self._store_unavailable("store unavailable")
                        return None
                    refused.append((item, exc))
        if not done:
            # Not one message stored: that says more about the store (a schema or code fault)
            # than about the messages, so none is blamed. A message truly at fault is set aside
            # on a later try, once it shares a batch with one the store takes. So the batch goes
            # behind whatever else waits (the store dedups by node and seq, order is free): put
            # back in front, a full batch of bad messages would be the next batch forever and
            # block every other node.
            log.error("ingest: none of the %d messages of the batch could be stored, even alone (first error %r): "
                      "blamed on the store, nothing rejected; will retry", len(batch), refused[0][1])
            if self._pending:
                self._pending.extend(batch)
            else:
                self._requeue(batch)
            self._store_unavailable("every message failed")
            return None
        for item, exc in refused:
            if self._set_aside(item, "store", repr(exc)):
                client.ack(item.mid, item.qos)  # kept in rejects_dir (or left to its node): not redelivered
            else:
                self._requeue([item])  # not kept anywhere yet: it must not be PUBACKed
                self._retry_at = time.monotonic() + 1.0
        return done

    def _acknowledge(self, client: paho.Client, done: list[tuple[_Verified, StoreResult]]) -> None:
        """PUBACK stored messages to the broker and send each node one signed ack for its seqs."""
        self._drop_set_aside(done)
        acks: dict[str, list[int]] = collections.defaultdict(list)
        for item, result in done:
            client.ack(item.mid, item.qos)
            if result.outcome == "stored":
                self.stats.stored += 1
            elif result.outcome == "duplicate":
                self.stats.duplicates += 1
            elif result.outcome == "purged":
                # Acknowledged like a duplicate so that a node that missed its ack stops resending;
                # a burst of these is also what a replay of captured messages looks like.
                self.stats.purged += 1
                log.warning("ingest: node %s seq %d arrived again after retention purged it: acknowledged, "
                            "not stored again", result.node_id, result.seq)
            elif result.new:
                self.stats.conflicts += 1
                log.error("ingest: node %s seq %d arrived again with different content; kept in seq_conflicts",
                          result.node_id, result.seq)
            else:
                # Kept once already: a resend of it, or a replay of a captured copy.
                self.stats.conflicts += 1
                log.warning("ingest: node %s seq %d arrived again with the different content already kept in "
                            "seq_conflicts: acknowledged, not kept again", result.node_id, result.seq)
            acks[result.node_id].append(result.seq)
        self._send_acks(client, acks)

    def _send_acks(self, client: paho.Client, acks: dict[str, list[int]]) -> None:
        """Send each node one signed ack: the seqs stored (`seqs`) and those set aside (`later`)."""
        later, self._later = self._later, collections.defaultdict(list)
        # An ack with nothing but "later" goes only to a node known to read it: an older node
        # would take it as HQ's progress and send its whole window again every resend interval.
        # Beside stored seqs it is harmless to any node.
        for node_id in list(acks) + [n for n in later if n not in acks and self._reads_later(n)]:
            body: dict = {"v": 1, "node": node_id, "seqs": acks.get(node_id, []), "t_ns": time.time_ns()}
            if later.get(node_id):
                body["later"] = sorted(set(later[node_id]))
            client.publish(topics.node_topic(node_id, "ack"), signed.sign("ack", body, self.sign_key), qos=1)
            self.stats.acks_sent += 1

    def _drop_set_aside(self, done: list[tuple[_Verified, StoreResult]]) -> None:
        """Remove the set-aside copies (rejects_dir) of messages the store has now settled.

        Called only after the store committed `done`: a crash before this leaves the copy,
        and the next resend (a duplicate then) or the retention job removes it; removing it
        first could lose the only copy. A message set aside earlier (reason `time` while HQ's
        clock lagged the node's, `store` before a fix; by this worker or another) and now
        stored, a duplicate of what is stored, or purged, needs no copy, and `.signed` is the
        decrypted payload (plate, crop) outside the store, its retention and its access log.
        Conflicts keep theirs: the store holds other content for that seq.
        """
        # One listing per batch rather than a look per message: the folder is usually missing
        # or nearly empty, and then nothing else is done.
        try:
            present = set(os.listdir(self.rejects_dir))
        except FileNotFoundError:
            return
        except OSError as exc:  # ingest must not stop over a copy it cannot check: retention removes it
            log.error("ingest: cannot list %s to remove set-aside copies of stored messages: %s",
                      self.rejects_dir, exc)
            return
        if not present:
            return
        for item, result in done:
            if result.outcome == "conflict":
                continue
            stem = _set_aside_stem(item)
            removed = []
            # The signed parts (plaintext) first, the description last: what a crash between
            # them leaves is found again by its name, and by retention through its time.
            for suffix in SET_ASIDE_SUFFIXES:
                for name in (stem + suffix + ".tmp", stem + suffix):  # .tmp: a write a crash cut short
                    if name not in present:
                        continue
                    try:
                        (self.rejects_dir / name).unlink()
                    except FileNotFoundError:  # another worker removed it first
                        continue
                    except OSError as exc:  # the store has it: a copy left behind is retention's to remove
                        log.error("ingest: node %s seq %d is %s but its set-aside copy %s could not be "
                                  "removed: %s", result.node_id, result.seq, result.outcome,
                                  self.rejects_dir / name, exc)
                        continue
                    removed.append(name)
            if removed:
                log.info("ingest: node %s seq %d set aside before, now %s: removed %s from %s",
                         result.node_id, result.seq, result.outcome, " ".join(removed), self.rejects_dir)

    def _requeue(self, items: list[_Verified]) -> None:
        """Put messages back at the front, in their order: not stored, so not acknowledged."""
        for item in reversed(items):
            self._pending.appendleft(item)

    def _store_unavailable(self, why: str) -> None:
        """Back off and drop the connection: a broken one (server restarted) never recovers by itself."""
        self.stats.store_errors += 1
        self._retry_at = time.monotonic() + min(30.0, 0.5 * 2 ** min(self.stats.store_errors, 6))
        store, self._store = self._store, None
        if store is not None:
            try:
                store.close()
            except _DRIVER_ERRORS as exc:  # closing a broken connection may fail too; it is dropped anyway
                log.debug("ingest: closing the store after %s: %r", why, exc)

    def _reads_later(self, node_id: str) -> bool:
        """Whether the node's latest heartbeat (this worker's, or the store's) lists "later"."""
        now = time.monotonic()
        known = self._knows_later.get(node_id)
        if known is not None and now - known[0] < KNOWS_LATER_TTL_S:
            return known[1]
        if self._store is None:
            return known is not None and known[1]
        try:
            value = _lists_later(self._store.node_health(node_id))
        except _DRIVER_ERRORS as exc:  # a figure to decide by, not a read: keep what was known
            log.warning("ingest: could not look up node %s's heartbeat (%r)", node_id, exc)
            return known is not None and known[1]
        self._knows_later[node_id] = (now, value)
        return value

    def _set_aside(self, item: _Verified, reason: str, error: str) -> bool:
        """Count under `reason`, log and keep a message HQ will not store.

        True when the broker may forget the message: kept, or refused because rejects_dir is
        full (the node keeps its copy, never acknowledged); False if it could not be written
        (ingest keeps it and tries again).
        """
        h = item.opened.header
        digest = hashlib.sha256(item.raw).hexdigest()
        stem = _set_aside_stem(item)
        meta = {"reason": reason, "error": error[:2000], "topic": item.topic, "node": h.node_id,
                "seq": h.seq, "kind": h.kind, "t_ns": h.time_ns, "sha256": digest, "bytes": len(item.raw),
                "rejected_ns": time.time_ns()}
        signed_copy = cbor.dumps([item.opened.header_bytes, item.opened.payload_bytes, item.opened.signature])
        record = (json.dumps(meta, indent=1) + "\n").encode()
        size = len(item.raw) + len(signed_copy) + len(record)
        if not self._set_aside_room(size):
            self.stats.rejected["set_aside_full"] += 1
            self._set_aside_full_since_log += 1
            now = time.monotonic()
            if self._set_aside_full_logged is None or now - self._set_aside_full_logged >= SET_ASIDE_FULL_LOG_S:
                log.error("ingest: %s is full (%d of %d bytes, [ingest] max_set_aside_mb): %d message(s) not kept "
                          "since the last report, the latest node %s seq %d (%s: %s); their nodes keep them and "
                          "send them again; fix the cause or let retention empty it", self.rejects_dir,
                          self._set_aside_used or 0, self.max_set_aside_bytes, self._set_aside_full_since_log,
                          h.node_id, h.seq, reason, error)
                self._set_aside_full_logged = now
                self._set_aside_full_since_log = 0
            self._later[h.node_id].append(h.seq)
            return True
        try:
            self.rejects_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic.write_bytes(self.rejects_dir / f"{stem}.msg", item.raw, 0o600)
            # What a stored read keeps (header, payload, signature): readable and verifiable
            # with the node's public key, without HQ's private key.
            atomic.write_bytes(self.rejects_dir / f"{stem}.signed", signed_copy, 0o600)
            atomic.write_bytes(self.rejects_dir / f"{stem}.json", record, 0o600)
            self._set_aside_used = (self._set_aside_used or 0) + size
        except OSError as exc2:
            log.error("ingest: node %s seq %d: refused (%s: %s) and it cannot be set aside in %s (%s); "
                      "will retry", h.node_id, h.seq, reason, error, self.rejects_dir, exc2)
            return False
        self.stats.rejected[reason] += 1
        self._remember_refused(bytes.fromhex(digest), reason)
        self._later[h.node_id].append(h.seq)
        log.warning("ingest: rejected message on %s (%d bytes): %s: node %s seq %d: %s; kept as %s",
                    item.topic, len(item.raw), reason, h.node_id, h.seq, error, self.rejects_dir / f"{stem}.msg")
        return True

    def _set_aside_room(self, size: int) -> bool:
        """Whether rejects_dir can take `size` more bytes (measured again when it looks full)."""
        now = time.monotonic()
        if self._set_aside_used is None or now - self._set_aside_measured >= SET_ASIDE_RESCAN_S:
            self._set_aside_used = _folder_bytes(self.rejects_dir)
            self._set_aside_measured = now
        return self._set_aside_used + size <= self.max_set_aside_bytes

    def _time_problem(self, opened: Opened) -> str | None:
        """Why the message's capture time (payload t_ns, equal to the header's) is not stored, or None."""
        t_ns = int(opened.payload["t_ns"])  # required by both schemas, checked in _verify
        if t_ns < MIN_CAPTURE_NS:
            return f"t_ns {t_ns} ({_utc(t_ns)}) is before 2000-01-01: the node's clock was not set"
        now = time.time_ns()
        if t_ns > now + self.max_future_skew_ns:
            return (f"t_ns {t_ns} ({_utc(t_ns)}) is more than {self.max_future_skew_ns / 3.6e12:g} h ahead of HQ's "
                    f"clock ({_utc(now)}): ingest.max_future_skew_h")
        return None

    def _remember_refused(self, digest: bytes, reason: str) -> None:
        self._store_rejected[digest] = (time.monotonic(), reason)
        self._store_rejected.move_to_end(digest)
        while len(self._store_rejected) > STORE_REJECT_MEMORY_MAX:
            self._store_rejected.popitem(last=False)

    def _refused_before(self, opened: Opened, raw: bytes) -> bool:
        """True (counted and logged) for the exact bytes of a message recently set aside."""
        if not self._store_rejected:
            return False
        digest = hashlib.sha256(raw).digest()
        remembered = self._store_rejected.get(digest)
        if remembered is None:
            return False
        when, reason = remembered
        if time.monotonic() - when > STORE_REJECT_MEMORY_S:
            # Tried again: the store may have been fixed, or a time ahead of the clock came within range.
            del self._store_rejected[digest]
            return False
        self.stats.rejected[reason] += 1
        self._later[opened.header.node_id].append(opened.header.seq)
        log.warning("ingest: rejected message from node %s seq %d (%d bytes): %s: refused before, "
                    "already kept in %s", opened.header.node_id, opened.header.seq, len(raw), reason,
                    self.rejects_dir)
        return True

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


def _lists_later(health: str | None) -> bool:
    """Whether a heartbeat (JSON text, as the store keeps it) lists "later" in uplink_features."""
    try:
        doc = json.loads(health) if health else None
    except ValueError:
        return False
    return _features_list_later(doc)


def _features_list_later(health: Any) -> bool:
    """Whether a parsed heartbeat's uplink_features lists "later" (transport.uplink.FEATURES)."""
    features = health.get("uplink_features") if isinstance(health, dict) else None
    return isinstance(features, list) and "later" in features


def _set_aside_stem(item: _Verified) -> str:
    """The name (less suffix) of a message's files in rejects_dir (hq.files.set_aside_stem)."""
    return set_aside_stem(item.opened.header.node_id, item.opened.header.seq, item.raw)


def _utc(t_ns: int) -> str:
    """A capture time for messages; datetime stops at year 9999, t_ns below 2^63 at 2262."""
    return dt.datetime.fromtimestamp(t_ns // 10**9, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _message_may_be_at_fault(exc: BaseException) -> bool:
    """False when `exc` says the store is unavailable (connection, disk, lock, server state):
    then no message may be blamed. True for anything else, e.g. a value the schema cannot
    hold; the caller blames a message only if others in its batch were stored."""
    if isinstance(exc, (StoreError, OSError, MemoryError, sqlite3.OperationalError, sqlite3.InternalError)):
        return False
    if psycopg is not None and isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError,
                                                 psycopg.InternalError)):
        # SQLSTATE class 54 (program limit exceeded, e.g. an index row too large for one
        # over-long text) is psycopg's OperationalError, but it is about the message.
        return (getattr(exc, "sqlstate", None) or "").startswith("54")
    return True


def _folder_bytes(folder: Path) -> int:
    """Bytes held by the regular files directly in `folder` (0 if it does not exist)."""
    total = 0
    try:
        entries = os.scandir(folder)
    except FileNotFoundError:
        return 0
    except OSError as exc:  # cannot be measured: assume nothing, as before the quota; writing will tell
        log.error("ingest: cannot measure %s: %s", folder, exc)
        return 0
    with entries:
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:  # removed meanwhile (retention, another worker)
                continue
    return total


def check_event(payload: dict) -> None:
    """The fields every event must have, with their types (the rest is event-specific)."""
    if not isinstance(payload.get("event"), str):
        raise EnvelopeError("payload", "event field event: expected text")
    if "\x00" in payload["event"]:
        # HQ stores it in a text column, and PostgreSQL text cannot hold U+0000.
        raise EnvelopeError("payload", "event field event: text must not contain U+0000 (NUL)")
    t_ns = payload.get("t_ns")
    if not isinstance(t_ns, int) or isinstance(t_ns, bool) or not 0 <= t_ns <= MAX_INT64:
        raise EnvelopeError("payload", "event field t_ns: expected an unsigned 63-bit integer")
