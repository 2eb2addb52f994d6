"""What a node says: the payloads carried inside envelopes, as dataclasses with strict codecs.

Confidences are integers in 1/10000 on the wire (see transport.cbor); the dataclasses use
floats in 0..1 for convenience and convert at the boundary.

`from_wire` is HQ's schema check before storing: anything it accepts must fit HQ's SQL
columns (confidences 0..10000 for an INTEGER column, other integers below 2^63 for BIGINT,
no U+0000 in text, which PostgreSQL text cannot hold), because a value the store refuses is
found only at store time, in the middle of a batch of other nodes' reads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transport.errors import EnvelopeError

KINDS = ("read", "alert", "event")
CLOCK_STATES = ("synced", "unsynced", "unknown")
DIRECTIONS = ("approaching", "receding", "unknown")
SCALE = 10000


def to_units(value: float) -> int:
    """A confidence in 0..1 as an integer in 1/10000."""
    return max(0, min(SCALE, int(round(float(value) * SCALE))))


def from_units(value: int) -> float:
    return value / SCALE


@dataclass(frozen=True)
class Candidate:
    """One alternative reading of a plate."""

    plate: str
    confidence: float


@dataclass(frozen=True)
class ReadPayload:
    """One plate read: one vehicle pass seen by one camera.

    `kind` is "read" for an ordinary read and "alert" when the node matched it against its
    hot list (then `hotlist` names the match). `seq` is filled by the outbox at commit.
    """

    plate: str
    confidence: float
    capture_time_ns: int
    node_id: str
    site_id: str
    camera_id: str
    crop_jpeg: bytes
    char_confidences: tuple[float, ...] = ()
    candidates: tuple[Candidate, ...] = ()
    region: str | None = None
    region_confidence: float = 0.0
    clock_sync: str = "unknown"
    direction: str = "unknown"
    trigger_source: str = "continuous"
    trigger_id: str | None = None
    lane: str | None = None
    box: tuple[int, int, int, int] | None = None
    models: dict[str, str] = field(default_factory=dict)
    seq: int = 0
    overview_jpeg: bytes | None = None
    kind: str = "read"
    hotlist: dict[str, str] | None = None

    def to_wire(self) -> dict[str, Any]:
        """The payload as the CBOR map documented in docs/wire-format.md."""
        wire: dict[str, Any] = {
            "kind": self.kind,
            "plate": self.plate,
            "conf": to_units(self.confidence),
            "char_conf": [to_units(c) for c in self.char_confidences],
            "alts": [[c.plate, to_units(c.confidence)] for c in self.candidates],
            "region": self.region,
            "region_conf": to_units(self.region_confidence),
            "t_ns": int(self.capture_time_ns),
            "clock": self.clock_sync,
            "node": self.node_id,
            "site": self.site_id,
            "camera": self.camera_id,
            "dir": self.direction,
            "trigger": self.trigger_source,
            "trigger_id": self.trigger_id,
            "lane": self.lane,
            "box": list(self.box) if self.box is not None else None,
            "models": dict(self.models),
            "seq": int(self.seq),
            "crop": bytes(self.crop_jpeg),
            "overview": bytes(self.overview_jpeg) if self.overview_jpeg is not None else None,
        }
        if self.hotlist is not None:
            wire["hotlist"] = dict(self.hotlist)
        return wire

    @classmethod
    def from_wire(cls, wire: Any) -> "ReadPayload":
        """Validate a decoded CBOR map and build the payload; errors name the field."""
        if not isinstance(wire, dict):
            raise EnvelopeError("payload", "payload is not a map")
        get = _FieldReader(wire)
        kind = get.choice("kind", ("read", "alert"))
        alts_raw = get.typed("alts", list)
        candidates = []
        for i, alt in enumerate(alts_raw):
            if not (isinstance(alt, list) and len(alt) == 2 and isinstance(alt[0], str) and _is_int(alt[1])):
                raise EnvelopeError("payload", f"field alts[{i}]: expected [text, int]")
            candidates.append(Candidate(_text(f"alts[{i}]", alt[0]), from_units(_units(f"alts[{i}]", alt[1]))))
        box = get.optional("box", list)
        if box is not None and not (len(box) == 4 and all(_is_int(v) for v in box)):
            raise EnvelopeError("payload", "field box: expected [x, y, w, h] integers")
        models = get.text_map("models")
        hotlist = get.optional_text_map("hotlist")
        char_conf = get.typed("char_conf", list)
        if not all(_is_int(c) for c in char_conf):
            raise EnvelopeError("payload", "field char_conf: expected integers")
        return cls(
            kind=kind,
            plate=get.text("plate"),
            confidence=from_units(get.units("conf")),
            char_confidences=tuple(from_units(_units(f"char_conf[{i}]", c)) for i, c in enumerate(char_conf)),
            candidates=tuple(candidates),
            region=get.optional_text("region"),
            region_confidence=from_units(get.units("region_conf")),
            capture_time_ns=get.int("t_ns"),
            clock_sync=get.choice("clock", CLOCK_STATES),
            node_id=get.text("node"),
            site_id=get.text("site"),
            camera_id=get.text("camera"),
            direction=get.choice("dir", DIRECTIONS),
            trigger_source=get.text("trigger"),
            trigger_id=get.optional_text("trigger_id"),
            lane=get.optional_text("lane"),
            box=tuple(box) if box is not None else None,
            models=models,
            seq=get.int("seq"),
            crop_jpeg=get.typed("crop", bytes),
            overview_jpeg=get.optional("overview", bytes),
            hotlist=hotlist,
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _units(name: str, value: int) -> int:
    """A confidence in 1/10000: HQ keeps it in a 32-bit INTEGER column, and the node never sends more."""
    if not 0 <= value <= SCALE:
        raise EnvelopeError("payload", f"field {name}: {value} is not a confidence from 0 to {SCALE} (1/{SCALE})")
    return value


def _text(name: str, value: str) -> str:
    """Text HQ can store: PostgreSQL text cannot hold U+0000, and one such read would fail its batch."""
    if "\x00" in value:
        raise EnvelopeError("payload", f"field {name}: text must not contain U+0000 (NUL)")
    return value


def _text_map(name: str, value: dict[Any, Any]) -> dict[str, str]:
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise EnvelopeError("payload", f"field {name}: expected a map of text to text")
    for key, item in value.items():
        _text(f"{name}[{key!r}]", key)
        _text(f"{name}[{key!r}]", item)
    return dict(value)


class _FieldReader:
    """Reads required/optional fields from a decoded map with errors that name the field."""

    def __init__(self, wire: dict[str, Any]) -> None:
        self.wire = wire

    def _get(self, name: str) -> Any:
        if name not in self.wire:
            raise EnvelopeError("payload", f"field {name}: missing")
        return self.wire[name]

    def typed(self, name: str, kind: type) -> Any:
        value = self._get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise EnvelopeError("payload", f"field {name}: expected {kind.__name__}")
        return value

    def int(self, name: str) -> int:
        value = self.typed(name, int)
        if not 0 <= value < 2**63:
            raise EnvelopeError("payload", f"field {name}: must be an unsigned integer below 2^63")
        return value

    def units(self, name: str) -> int:
        """A required confidence in 1/10000 (0..10000)."""
        return _units(name, self.typed(name, int))

    def text(self, name: str) -> str:
        """A required text field without NUL."""
        return _text(name, self.typed(name, str))

    def optional_text(self, name: str) -> str | None:
        """An optional (null) text field without NUL."""
        value = self.optional(name, str)
        return None if value is None else _text(name, value)

    def text_map(self, name: str) -> dict[str, str]:
        """A required map of text to text (a copy), without NUL in keys or values."""
        return _text_map(name, self.typed(name, dict))

    def optional_text_map(self, name: str) -> dict[str, str] | None:
        """An optional (null) map of text to text (a copy), without NUL in keys or values."""
        value = self.optional(name, dict)
        return None if value is None else _text_map(name, value)

    def optional(self, name: str, kind: type) -> Any:
        value = self.wire.get(name)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise EnvelopeError("payload", f"field {name}: expected {kind.__name__} or null")
        return value

    def choice(self, name: str, allowed: tuple[str, ...]) -> str:
        value = self.typed(name, str)
        if value not in allowed:
            raise EnvelopeError("payload", f"field {name}: {value!r} is not one of {', '.join(allowed)}")
        return value
