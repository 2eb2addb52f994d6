"""Plate text as HQ indexes and searches it: normal form, OCR-confusable skeleton, wildcard patterns.

A plate's *normal form* is upper case with spaces and dashes removed. Its *skeleton* maps
each group of characters OCR confuses to one representative, so two plates that differ
only by confusions have the same skeleton:

    0 O D Q -> 0    1 I 7 -> 1    8 B -> 8    5 S -> 5    2 Z -> 2

Patterns use `?` for exactly one character and `*` for any run (possibly empty).

What is searched for or put on a hot list is checked whole (`fullmatch`, never `$`, which
also matches before a final newline): a plate or pattern ending in a newline or carrying any
other control character is refused, naming the character, not stored to never match.
"""
from __future__ import annotations

import re

from hq.errors import HQError

CONFUSABLE_GROUPS = ("0ODQ", "1I7", "8B", "5S", "2Z")
_SKELETON = {ch: group[0] for group in CONFUSABLE_GROUPS for ch in group}
_PLATE_CHARS = re.compile(r"[A-Z0-9]+")
_PATTERN_CHARS = re.compile(r"[A-Z0-9?*]+")
MAX_PLATE = 10
# A hot-list pattern needs at least this many letters or digits: '*0*' (one) matches a large
# share of all plates and would turn every node's traffic into alerts. Searches may be broader:
# each is logged with its purpose and shows its hits to the one who asked.
MIN_HOTLIST_LITERALS = 2


class PlateQueryError(HQError, ValueError):
    """A plate or pattern that HQ cannot search for (the message says which character)."""


def normalize(plate: str) -> str:
    """Upper case, no spaces or dashes: the form stored in reads.plate_norm."""
    return "".join(ch for ch in plate.upper() if ch not in " -\t")


def skeleton(text: str) -> str:
    """Map every confusable character to its group's representative (wildcards pass through)."""
    return "".join(_SKELETON.get(ch, ch) for ch in normalize(text))


def _character(norm: str, allowed: re.Pattern[str]) -> str:
    """', character X (U+XXXX) is not allowed' for the first character of `norm` outside
    `allowed`, or '' (for an error message: a newline or control character is invisible)."""
    bad = next((ch for ch in norm if not allowed.fullmatch(ch)), None)
    return "" if bad is None else f": character {bad!r} (U+{ord(bad):04X}) is not allowed"


def check_plate(plate: str) -> str:
    """The normal form of an exact plate; PlateQueryError naming the character if it has others."""
    norm = normalize(plate)
    if not norm or not _PLATE_CHARS.fullmatch(norm) or len(norm) > MAX_PLATE:
        raise PlateQueryError(f"plate {plate!r}{_character(norm, _PLATE_CHARS)}: use 1-{MAX_PLATE} letters and "
                              "digits (spaces, dashes and tabs are ignored)")
    return norm


MAX_PATTERN = 32


def check_pattern(pattern: str) -> str:
    """The normal form of a pattern with `?` / `*`; PlateQueryError if it cannot be searched
    (a character other than letters, digits, `?`, `*` named; no letter or digit; longer than
    MAX_PATTERN; more than MAX_PLATE characters besides `*`, which no plate can match)."""
    norm = normalize(pattern)
    if not norm or not _PATTERN_CHARS.fullmatch(norm):
        raise PlateQueryError(f"pattern {pattern[:40]!r}{_character(norm, _PATTERN_CHARS)}: use letters, digits, "
                              "? (one character) and * (any run)")
    if len(norm) > MAX_PATTERN:
        # a plate is at most 10 characters; SQLite refuses very long LIKE patterns ("too complex")
        raise PlateQueryError(f"pattern {pattern[:20]!r}...: at most {MAX_PATTERN} characters")
    if not norm.strip("*?"):
        raise PlateQueryError(f"pattern {pattern!r}: give at least one letter or digit")
    fixed = len(norm.replace("*", ""))
    if fixed > MAX_PLATE:
        raise PlateQueryError(f"pattern {pattern!r}: {fixed} characters besides '*', but a plate has at most "
                              f"{MAX_PLATE}: it could never match")
    return norm


def check_hotlist_pattern(pattern: str) -> str:
    """`check_pattern` for a hot-list entry, which every node matches against every read:
    also at least MIN_HOTLIST_LITERALS letters or digits (PlateQueryError otherwise)."""
    norm = check_pattern(pattern)
    literals = len(norm.replace("*", "").replace("?", ""))
    if literals < MIN_HOTLIST_LITERALS:
        raise PlateQueryError(f"hot-list pattern {pattern!r}: {literals} letter(s) or digit(s); a hot-list pattern "
                              f"needs at least {MIN_HOTLIST_LITERALS}, or it matches a large share of all plates")
    return norm


def is_pattern(text: str) -> bool:
    """True when the text has a wildcard."""
    return "?" in text or "*" in text


def to_like(pattern: str) -> str:
    """A checked pattern as SQL LIKE (our patterns never contain % or _)."""
    return pattern.replace("?", "_").replace("*", "%")


def to_regex(pattern: str) -> re.Pattern[str]:
    """A checked pattern as a regular expression anchored at both ends (for matching in Python).

    `\\A` and `\\Z`, not `^` and `$`: `$` also matches before a final newline. DOTALL, so `?` and
    `*` match any character as LIKE / GLOB do in the store."""
    parts = {"?": ".", "*": ".*"}
    return re.compile(r"\A" + "".join(parts.get(ch, re.escape(ch)) for ch in pattern) + r"\Z", re.DOTALL)


def literal_prefix(pattern: str) -> str:
    """The characters before the first wildcard (what an index range can use)."""
    return re.split(r"[?*]", pattern, maxsplit=1)[0]


def safe_name(plate: str) -> str:
    """The plate reduced to A-Z and 0-9, for file names (a node's text never becomes a path)."""
    return "".join(ch for ch in normalize(plate) if ch in "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")[:16] or "plate"
