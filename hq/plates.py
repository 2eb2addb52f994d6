"""Plate text as HQ indexes and searches it: normal form, OCR-confusable skeleton, wildcard patterns.

A plate's *normal form* is upper case with spaces and dashes removed. Its *skeleton* maps
each group of characters OCR confuses to one representative, so two plates that differ
only by confusions have the same skeleton:

    0 O D Q -> 0    1 I 7 -> 1    8 B -> 8    5 S -> 5    2 Z -> 2

Patterns use `?` for exactly one character and `*` for any run (possibly empty).
"""
from __future__ import annotations

import re

from hq.errors import HQError

CONFUSABLE_GROUPS = ("0ODQ", "1I7", "8B", "5S", "2Z")
_SKELETON = {ch: group[0] for group in CONFUSABLE_GROUPS for ch in group}
_PLATE_CHARS = re.compile(r"^[A-Z0-9]+$")
_PATTERN_CHARS = re.compile(r"^[A-Z0-9?*]+$")
MAX_PLATE = 10


class PlateQueryError(HQError, ValueError):
    """A plate or pattern that HQ cannot search for (the message says which character)."""


def normalize(plate: str) -> str:
    """Upper case, no spaces or dashes: the form stored in reads.plate_norm."""
    return "".join(ch for ch in plate.upper() if ch not in " -\t")


def skeleton(text: str) -> str:
    """Map every confusable character to its group's representative (wildcards pass through)."""
    return "".join(_SKELETON.get(ch, ch) for ch in normalize(text))


def check_plate(plate: str) -> str:
    """The normal form of an exact plate; PlateQueryError if it has other characters."""
    norm = normalize(plate)
    if not norm or not _PLATE_CHARS.match(norm) or len(norm) > MAX_PLATE:
        raise PlateQueryError(f"plate {plate!r}: use 1-{MAX_PLATE} letters and digits")
    return norm


MAX_PATTERN = 32


def check_pattern(pattern: str) -> str:
    """The normal form of a pattern with `?` / `*`; PlateQueryError if it cannot be searched."""
    norm = normalize(pattern)
    if not norm or not _PATTERN_CHARS.match(norm):
        raise PlateQueryError(f"pattern {pattern!r}: use letters, digits, ? (one character) and * (any run)")
    if not norm.strip("*?"):
        raise PlateQueryError(f"pattern {pattern!r}: give at least one letter or digit")
    if len(norm) > MAX_PATTERN:
        # a plate is at most 10 characters; SQLite refuses very long LIKE patterns ("too complex")
        raise PlateQueryError(f"pattern {pattern[:20]!r}...: at most {MAX_PATTERN} characters")
    return norm


def is_pattern(text: str) -> bool:
    """True when the text has a wildcard."""
    return "?" in text or "*" in text


def to_like(pattern: str) -> str:
    """A checked pattern as SQL LIKE (our patterns never contain % or _)."""
    return pattern.replace("?", "_").replace("*", "%")


def to_regex(pattern: str) -> re.Pattern[str]:
    """A checked pattern as an anchored regular expression (for matching in Python)."""
    parts = {"?": ".", "*": ".*"}
    return re.compile("^" + "".join(parts.get(ch, re.escape(ch)) for ch in pattern) + "$")


def literal_prefix(pattern: str) -> str:
    """The characters before the first wildcard (what an index range can use)."""
    return re.split(r"[?*]", pattern, maxsplit=1)[0]


def safe_name(plate: str) -> str:
    """The plate reduced to A-Z and 0-9, for file names (a node's text never becomes a path)."""
    return "".join(ch for ch in normalize(plate) if ch in "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")[:16] or "plate"
