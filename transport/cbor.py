"""Deterministic CBOR (RFC 8949 §4.2.1 core deterministic encoding), the subset we use.

Types: unsigned and negative integers, byte strings, text strings, arrays, maps (text or
integer keys), true, false and null. Floats are refused on purpose: confidences travel as
integers in 1/10000, so that every implementation produces the same bytes without having
to agree on float shortening.

The decoder is strict: it accepts only what the encoder would produce (shortest integer
heads, definite lengths, map keys in bytewise order and unique, no trailing bytes), so a
message has exactly one valid encoding and a signature over it cannot be malleated.
"""
from __future__ import annotations

import struct
from typing import Any

from transport.errors import EncodingError

MAX_DEPTH = 16


def _head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes([major << 5 | value])
    if value < 0x100:
        return bytes([major << 5 | 24, value])
    if value < 0x10000:
        return bytes([major << 5 | 25]) + struct.pack(">H", value)
    if value < 0x100000000:
        return bytes([major << 5 | 26]) + struct.pack(">I", value)
    if value < 0x10000000000000000:
        return bytes([major << 5 | 27]) + struct.pack(">Q", value)
    raise EncodingError(f"integer {value} does not fit in 64 bits")


def dumps(value: Any) -> bytes:
    """Encode `value` as deterministic CBOR."""
    out = bytearray()
    _encode(value, out, 0)
    return bytes(out)


def _encode(value: Any, out: bytearray, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise EncodingError("value nested too deeply")
    if value is None:
        out.append(0xF6)
    elif value is True:
        out.append(0xF5)
    elif value is False:
        out.append(0xF4)
    elif isinstance(value, int):
        out += _head(0, value) if value >= 0 else _head(1, -1 - value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        out += _head(2, len(data))
        out += data
    elif isinstance(value, str):
        data = value.encode("utf-8")
        out += _head(3, len(data))
        out += data
    elif isinstance(value, (list, tuple)):
        out += _head(4, len(value))
        for item in value:
            _encode(item, out, depth + 1)
    elif isinstance(value, dict):
        items = []
        for key, item in value.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise EncodingError(f"map key {key!r}: only text and integer keys are allowed")
            items.append((dumps(key), item))
        items.sort(key=lambda pair: pair[0])
        out += _head(5, len(items))
        for encoded_key, item in items:
            out += encoded_key
            _encode(item, out, depth + 1)
    elif isinstance(value, float):
        raise EncodingError("floats are not allowed; send integers (e.g. confidence in 1/10000)")
    else:
        raise EncodingError(f"cannot encode {type(value).__name__}")


def loads(data: bytes, max_items: int | None = None) -> Any:
    """Decode one deterministic CBOR item that spans all of `data`.

    `max_items` bounds the array elements and map entries (keys and values) of the whole item.
    Decoding costs about a microsecond per item: without a bound, 4 MiB of one-byte items
    take over a second of CPU, some hundred times what a JPEG of that size costs. A container
    declares its length up front, so one over budget is refused at its head, unread.
    """
    view = memoryview(data)
    value, end = _decode(view, 0, 0, None if max_items is None else [max_items])
    if end != len(view):
        raise EncodingError(f"{len(view) - end} trailing bytes after the CBOR item")
    return value


def loads_bstr_array(data: bytes, count: int) -> list[bytes]:
    """Decode a definite array of exactly `count` byte strings spanning all of `data`.

    Same strictness as `loads`, but the shape is checked from the heads as it is read: bytes
    of any other shape (say one array of four million integers) are refused after a few heads,
    where `loads` would first build the whole structure. Our messages' outer framing is read
    before anything is authenticated, so that cost must not depend on what an attacker sends.
    """
    view = memoryview(data)
    major, length, pos = _read_head(view, 0)
    if major != 4 or length != count:
        raise EncodingError(f"expected an array of {count} byte strings")
    items = []
    for _ in range(count):
        major, length, pos = _read_head(view, pos)
        if major != 2:
            raise EncodingError(f"expected an array of {count} byte strings")
        end = pos + length
        if end > len(view):
            raise EncodingError("truncated string")
        items.append(bytes(view[pos:end]))
        pos = end
    if pos != len(view):
        raise EncodingError(f"{len(view) - pos} trailing bytes after the CBOR item")
    return items


def _read_head(view: memoryview, pos: int) -> tuple[int, int, int]:
    if pos >= len(view):
        raise EncodingError("truncated: expected a CBOR item")
    initial = view[pos]
    major, info = initial >> 5, initial & 0x1F
    pos += 1
    if info < 24:
        return major, info, pos
    if major == 7:
        raise EncodingError("floats and other simple values are not used in this format")
    sizes = {24: 1, 25: 2, 26: 4, 27: 8}
    if info not in sizes:
        raise EncodingError(f"indefinite or reserved length (initial byte 0x{initial:02x})")
    size = sizes[info]
    if pos + size > len(view):
        raise EncodingError("truncated integer head")
    value = int.from_bytes(view[pos:pos + size], "big")
    minimum = {1: 24, 2: 0x100, 4: 0x10000, 8: 0x100000000}[size]
    if value < minimum:
        raise EncodingError("integer head not in its shortest form")
    return major, value, pos + size


def _spend(budget: list[int] | None, items: int) -> None:
    """Take `items` from a `loads(max_items=...)` budget; EncodingError once it is spent."""
    if budget is not None:
        budget[0] -= items
        if budget[0] < 0:
            raise EncodingError("more CBOR items than this message may hold")


def _decode(view: memoryview, pos: int, depth: int, budget: list[int] | None = None) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise EncodingError("CBOR nested too deeply")
    major, arg, pos = _read_head(view, pos)
    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    if major in (2, 3):
        end = pos + arg
        if end > len(view):
            raise EncodingError("truncated string")
        raw = bytes(view[pos:end])
        if major == 2:
            return raw, end
        try:
            return raw.decode("utf-8"), end
        except UnicodeDecodeError as exc:
            raise EncodingError("text string is not valid UTF-8") from exc
    if major == 4:
        if arg > len(view) - pos:
            raise EncodingError("array longer than the message")
        _spend(budget, arg)
        items = []
        for _ in range(arg):
            item, pos = _decode(view, pos, depth + 1, budget)
            items.append(item)
        return items, pos
    if major == 5:
        if arg > len(view) - pos:
            raise EncodingError("map longer than the message")
        _spend(budget, 2 * arg)
        result: dict[Any, Any] = {}
        previous = b""
        for index in range(arg):
            key_start = pos
            key, pos = _decode(view, pos, depth + 1, budget)
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise EncodingError("map key must be text or an integer")
            encoded_key = bytes(view[key_start:pos])
            if index and encoded_key <= previous:
                raise EncodingError("map keys not in deterministic order or repeated")
            previous = encoded_key
            result[key], pos = _decode(view, pos, depth + 1, budget)
        return result, pos
    if major == 6:
        raise EncodingError("CBOR tags are not used in this format")
    simple = {20: False, 21: True, 22: None}
    if arg in simple:
        return simple[arg], pos
    raise EncodingError("floats and other simple values are not used in this format")
