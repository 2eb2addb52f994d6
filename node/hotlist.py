"""The node's hot list: HQ-signed, swapped atomically, matched against every read locally.

Body format and matching rules: docs/records.md, "Hot-list message". Exact plates arrive
only as keyed hashes (HMAC-SHA-256/128 with the list's key) of the normal form and of the
OCR-confusable skeleton; partial patterns arrive in clear. A list is used only after its
signature verifies and only if its version is above the one in use; the verified message is
kept in the data directory so a restart resumes with it.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from transport import atomic, signed
from transport.errors import EnvelopeError
from transport.payload import ReadPayload

log = logging.getLogger(__name__)
HASH_LEN = 16
BODY_VERSION = 1  # the body format this matcher implements (docs/records.md, "Hot-list message")


@dataclass(frozen=True)
class _Compiled:
    version: int
    valid_until_ns: int
    key: bytes
    skeleton: dict[str, str]
    # A hash may stand for several entries (one plate listed twice with different expiries, or
    # plates sharing a skeleton), in body order: matching takes the first one not yet expired.
    exact: dict[bytes, list[dict[str, Any]]]
    confusable: dict[bytes, list[dict[str, Any]]]
    patterns: tuple[tuple[re.Pattern[str], dict[str, Any]], ...]


def normalize(plate: str) -> str:
    return "".join(ch for ch in plate.upper() if ch not in " -\t")


def _pattern(p: str) -> re.Pattern[str]:
    return re.compile("^" + "".join({"?": ".", "*": ".*"}.get(ch, re.escape(ch)) for ch in p) + "$")


def _digest(key: bytes, prefix: str, text: str) -> bytes:
    return hmac.new(key, f"{prefix}:{text}".encode(), hashlib.sha256).digest()[:HASH_LEN]


def _by_hash(entries: list[dict[str, Any]], field: str) -> dict[bytes, list[dict[str, Any]]]:
    """Entries grouped by one of their hashes, each group in body order."""
    out: dict[bytes, list[dict[str, Any]]] = {}
    for entry in entries:
        out.setdefault(bytes(entry[field]), []).append(entry)
    return out


def _live(entries: list[dict[str, Any]] | None, now: int) -> dict[str, Any] | None:
    """The first entry not expired at `now`, or None."""
    return next((e for e in entries or () if e["exp"] > now), None)


def _field(where: str, item: Any, name: str, kind: type, size: int | None = None) -> Any:
    """item[name], checked to be a `kind` (a non-negative int where `kind` is int, `size` bytes
    long where given); ValueError naming where the field is otherwise."""
    if not isinstance(item, dict) or name not in item:
        raise ValueError(f"hot list {where}: field {name!r} missing")
    value = item[name]
    # bool is an int subclass, and CBOR true is not a number
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"hot list {where}: field {name!r} is {type(value).__name__}, not {kind.__name__}")
    if kind is int and value < 0:
        raise ValueError(f"hot list {where}: field {name!r} is negative")
    if size is not None and len(value) != size:
        raise ValueError(f"hot list {where}: field {name!r} is {len(value)} bytes, not {size}")
    return value


_PATTERN_TEXT = re.compile(r"[A-Z0-9?*]{1,32}")


def _check_body(body: dict[str, Any]) -> None:
    """Refuse, naming the field, a signed body this matcher could not use.

    The signature says HQ sent it, not that HQ's compiler was right: a list installed with a
    text `exp` would make every later match raise inside the pipeline, so the whole list is
    checked before it replaces the one in use.
    """
    _field("body", body, "list_version", int)
    _field("body", body, "valid_until_ns", int)
    _field("body 'hash'", _field("body", body, "hash", dict), "key", bytes)
    groups = _field("body", body, "confusable", list)
    for i, group in enumerate(groups):
        if not isinstance(group, list) or not group or not all(isinstance(ch, str) and len(ch) == 1 for ch in group):
            raise ValueError(f"hot list confusable[{i}]: not a non-empty list of single characters")
    for i, entry in enumerate(_field("body", body, "exact", list)):
        where = f"exact[{i}]"
        _field(where, entry, "x", bytes, HASH_LEN)
        _field(where, entry, "s", bytes, HASH_LEN)
        _field(where, entry, "id", int)
        _field(where, entry, "r", str)
        _field(where, entry, "exp", int)
    for i, entry in enumerate(_field("body", body, "patterns", list)):
        where = f"patterns[{i}]"
        pattern = _field(where, entry, "p", str)
        if not _PATTERN_TEXT.fullmatch(pattern):
            raise ValueError(f"hot list {where}: pattern {pattern!r} is not 1-32 of A-Z, 0-9, ? and *")
        _field(where, entry, "id", int)
        _field(where, entry, "r", str)
        _field(where, entry, "exp", int)


class HotList:
    """The list in use. `update(message)` from the uplink thread, `match(read)` from the pipeline."""

    def __init__(self, path: Path, hq_keys: list[ed25519.Ed25519PublicKey], node_id: str,
                 match_candidates: bool = True) -> None:
        self.path = Path(path)
        self.hq_keys = hq_keys
        self.node_id = node_id
        self.match_candidates = match_candidates
        self._lock = threading.Lock()
        self._list: _Compiled | None = None
        self.rejected = 0
        if self.path.exists():
            try:
                self._install(self.path.read_bytes(), persist=False)
            # As update() refuses: a copy kept by an older node (before the 'v' check) must not
            # stop the node starting; it waits for HQ's next list instead.
            except (EnvelopeError, KeyError, TypeError, ValueError, OSError) as exc:
                log.error("hot list %s: kept copy refused (%s); waiting for HQ to send one", self.path, exc)

    @property
    def version(self) -> int:
        current = self._list
        return current.version if current else 0

    def update(self, message: bytes) -> bool:
        """Verify and switch to a newer list; False (and logged) if refused."""
        try:
            return self._install(message, persist=True)
        except (EnvelopeError, KeyError, TypeError, ValueError, OSError) as exc:
            self.rejected += 1
            log.warning("hot list refused: %s", exc)
            return False

    def _install(self, message: bytes, persist: bool) -> bool:
        body = signed.verify("hotlist", message, self.hq_keys, self.node_id)
        # Checked here too, not only by the generic control-message check: this matcher knows
        # format 1 alone, and CBOR true would pass a plain `== 1` (bool is an int).
        v = body.get("v")
        if type(v) is not int or v != BODY_VERSION:
            raise ValueError(f"hot list body field 'v' is {v!r}; this node reads only version {BODY_VERSION}")
        _check_body(body)
        version = body["list_version"]
        if version <= self.version:
            log.info("hot list version %d ignored: version %d is in use", version, self.version)
            return False
        skeleton = {ch: group[0] for group in body["confusable"] for ch in group}
        compiled = _Compiled(
            version=version, valid_until_ns=body["valid_until_ns"], key=bytes(body["hash"]["key"]),
            skeleton=skeleton,
            exact=_by_hash(body["exact"], "x"),
            confusable=_by_hash(body["exact"], "s"),
            patterns=tuple((_pattern(p["p"]), p) for p in body["patterns"]),
        )
        with self._lock:
            self._list = compiled  # one reference swap: a read sees the old list or the new, never a mix
        if persist:
            # 0600: the list's hash key is in it, and plates are a small space to search.
            # transport.atomic, not an O_TRUNC temp file: a temp file left by a crash or planted
            # (a symlink) is removed rather than written through, and an old temp file's wider
            # mode cannot outlive the write; a power cut still leaves the old list or the new.
            # A list that cannot be kept (disk full, read-only) is still used: it is verified,
            # and the old one would keep missing new stolen vehicles until it expires; only a
            # restart before the next push goes back to the copy on disk.
            try:
                atomic.write_bytes(self.path, message, 0o600)
            except OSError as exc:
                log.error("hot list version %d in use but not saved to %s: %s (after a restart the node uses "
                          "the previous copy until HQ pushes again)", version, self.path, exc)
        log.info("hot list version %d in use: %d exact, %d patterns", version, len(body["exact"]),
                 len(compiled.patterns))
        return True

    def match(self, read: ReadPayload) -> dict[str, str] | None:
        """The hot-list hit for a read (its plate, then its candidates), or None."""
        current = self._list
        now = time.time_ns()
        if current is None or now >= current.valid_until_ns:
            return None
        texts = [read.plate] + ([c.plate for c in read.candidates] if self.match_candidates else [])
        for rank, text in enumerate(dict.fromkeys(texts)):
            hit = self._match_one(current, normalize(text), now)
            if hit is not None:
                hit["matched_text"] = text
                hit["via"] = "plate" if rank == 0 else "candidate"
                return hit
        return None

    def _match_one(self, current: _Compiled, norm: str, now: int) -> dict[str, str] | None:
        skel = "".join(current.skeleton.get(ch, ch) for ch in norm)
        found = None
        entry = _live(current.exact.get(_digest(current.key, "x", norm)), now)
        if entry is not None:
            found = (entry, "exact")
        else:
            entry = _live(current.confusable.get(_digest(current.key, "s", skel)), now)
            if entry is not None:
                found = (entry, "confusable")
        if found is None:
            for regex, item in current.patterns:
                if item["exp"] > now and regex.match(norm):
                    found = (item, "pattern")
                    break
        if found is None:
            return None
        item, how = found
        return {"list_version": str(current.version), "entry": str(item["id"]), "reason": str(item["r"]),
                "match": how}
