"""Which of HQ's HPKE keys each node still seals for, as HQ's ingest workers saw it.

A node seals every message for the HPKE key of the last bundle installed on it, and its outbox
holds what it sealed before. HQ learns that a node has moved to a new key only from the
messages themselves (the header's recipient key id), so each ingest worker notes, per node and
key id, when it last opened a message sealed for that key, in `KEYS_DIR/hpke-used-WORKER.json`
(one file per worker: no two processes write one file). `alpr-provision ca retire-hpke` reads
them all before it deletes a key: a bundle made is not a bundle installed, and a key deleted
while a node still seals for it, or still holds reads sealed for it, makes those reads
unreadable for ever.

File: `{"nodes": {"NODE": {"KID": LAST_OPENED_NS, ...}, ...}}`, written atomically.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from transport import atomic

log = logging.getLogger(__name__)

FILE_PREFIX = "hpke-used-"
# At most this often a worker writes its file: what it saw since is only a few seconds old.
FLUSH_S = 60.0

Usage = dict[str, dict[str, int]]  # node id -> HPKE key id -> last opened (ns since the epoch)


class KeyUsage:
    """One ingest worker's record of the HPKE keys nodes seal for (see the module docstring)."""

    def __init__(self, path: Path, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.path = Path(path)
        self._clock = clock_ns
        self._usage: Usage = load(self.path)
        self._dirty = False
        self._flushed = 0.0

    def saw(self, node_id: str, key_id: str) -> None:
        """A message from `node_id` sealed for HPKE key `key_id` was opened now."""
        self._usage.setdefault(node_id, {})[key_id] = self._clock()
        self._dirty = True

    def flush(self, force: bool = False) -> None:
        """Write the file when something changed, at most every FLUSH_S unless `force`.

        A failed write is logged and tried again later: it must not stop ingest."""
        now = time.monotonic()
        if not self._dirty or (not force and now - self._flushed < FLUSH_S):
            return
        try:
            atomic.write_text(self.path, json.dumps({"nodes": self._usage}, sort_keys=True), mode=0o600)
        except OSError as exc:
            log.warning("ingest: could not record which HPKE keys nodes seal for in %s: %s", self.path, exc)
            return
        self._dirty = False
        self._flushed = now


def load(path: Path) -> Usage:
    """One worker's file; empty when missing, and (with a warning) when unreadable."""
    try:
        doc = json.loads(Path(path).read_text())
        nodes = doc["nodes"]
        return {str(node): {str(kid): int(t) for kid, t in kids.items()} for node, kids in nodes.items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("%s: unreadable record of HPKE key use (%s); starting a new one", path, exc)
        return {}


def merged(keys_dir: Path) -> Usage:
    """Every worker's record in `keys_dir`, the latest time of each (node, key)."""
    usage: Usage = {}
    for path in sorted(Path(keys_dir).glob(f"{FILE_PREFIX}*.json")):
        for node, kids in load(path).items():
            mine = usage.setdefault(node, {})
            for kid, t in kids.items():
                mine[kid] = max(t, mine.get(kid, 0))
    return usage


def still_sealing(usage: Usage, key_id: str) -> dict[str, int]:
    """Nodes whose latest message seen was sealed for `key_id` (node -> when): they have not been
    seen to move to another key, so they seal for it still, or hold reads sealed for it."""
    return {node: kids[key_id] for node, kids in usage.items()
            if key_id in kids and kids[key_id] >= max(kids.values())}
