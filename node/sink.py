"""Where finished reads go: sealed and committed to the outbox before anything else happens."""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Callable

from node.identity import Identity
from transport.errors import OutboxFull, OutboxTooLarge
from transport.outbox import Outbox
from transport.payload import ReadPayload

log = logging.getLogger(__name__)


class ReadSink:
    """Seals and commits reads and events; optionally checks each read against a hot list first."""

    def __init__(self, identity: Identity, outbox: Outbox,
                 hotlist_match: Callable[[ReadPayload], dict | None] | None = None) -> None:
        self.identity = identity
        self.outbox = outbox
        self.hotlist_match = hotlist_match
        self.reads = 0
        self.alerts = 0
        self.events = 0
        self.images_dropped = 0

    def check_hotlist(self, read: ReadPayload) -> dict | None:
        """The hot-list hit for a read, committing nothing (None without a hot list).

        For the pipeline's dedup: a read it will not send as a read must still raise its alert.
        """
        return self.hotlist_match(read) if self.hotlist_match is not None else None

    def submit_read(self, read: ReadPayload) -> int:
        """Commit one read (as an alert if it matches the hot list); returns its sequence number."""
        match = self.check_hotlist(read)
        if match is not None:
            read = replace(read, kind="alert", hotlist=match)
        kind = read.kind
        seq = self.outbox.commit(kind, self.identity.sealer(kind, read.to_wire(), read.capture_time_ns))
        # No plate text (nor its candidates, nor the entry's reason) in the log, at any level:
        # plates are personal data, to be seen only at HQ through a logged login, and the journal
        # is readable by other accounts on the Pi. The seq, entry id and trigger are enough to
        # find the read at HQ, where looking at it is on the access record.
        if kind == "alert":
            self.alerts += 1
            hit = match if match is not None else (read.hotlist or {})  # an alert made upstream carries its hit
            log.warning("hot-list match committed as seq %d: list %s entry %s (%s match on the %s), trigger %s",
                        seq, hit.get("list_version", "?"), hit.get("entry", "?"), hit.get("match", "?"),
                        hit.get("via", "plate"), read.trigger_id)
        else:
            self.reads += 1
        log.debug("%s committed as seq %d", kind, seq)
        return seq

    def submit_overview(self, read_seq: int, jpeg: bytes, time_ns: int) -> int | None:
        """Commit the overview image of a read as its own low-priority message (event 'overview').

        None if the image alone is larger than the outbox quota, or the outbox is full of reads
        and alerts, which it must not push out (counted in images_dropped).
        """
        payload = {"event": "overview", "t_ns": time_ns, "read_seq": read_seq, "image": jpeg}
        try:
            return self.outbox.commit("overview", self.identity.sealer("event", payload, time_ns))
        except OutboxTooLarge:
            self.images_dropped += 1
            log.warning("overview of read seq %d is larger than the outbox quota: not kept", read_seq)
            return None
        except OutboxFull:  # the outbox holds only reads and alerts: they stay, the picture goes
            self.images_dropped += 1
            return None

    def submit_event(self, event: str, time_ns: int, fields: dict) -> int:
        """Commit an event such as 'no_read' (vehicle passed, no read); returns its sequence number.

        If the event's image makes it larger than the whole outbox quota, the event is kept
        without the image (counted in images_dropped): the event itself matters more.
        """
        payload = dict(fields, event=event, t_ns=time_ns)
        try:
            seq = self.outbox.commit("event", self.identity.sealer("event", payload, time_ns))
        except OutboxTooLarge:
            self.images_dropped += 1
            log.warning("%s event image is larger than the outbox quota: sending the event without it", event)
            payload = {k: (None if isinstance(v, bytes) else v) for k, v in payload.items()}
            seq = self.outbox.commit("event", self.identity.sealer("event", payload, time_ns))
        self.events += 1
        return seq
