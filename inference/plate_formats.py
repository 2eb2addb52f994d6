"""Each state's plate formats, used to settle the one look-alike pair that images cannot: O and 0.

On most US plates the letter O and the digit zero share one glyph, so the image cannot say
which a character is. The labels the OCR learns from settle it by convention: the letter O is
written only where the state's standard serial format has a letter (Iowa `778AOS`, Arkansas
`355OCT`), and 0 where it has a digit. The OCR alone follows that poorly, since it is a fact
about formats, not about pixels; this module applies it to readings that fit one of the
predicted state's formats when the state head is sure enough of the state, and leaves every other
reading (vanity words, foreign plates) as read. The formats are the letter/digit masks (`778AOS`
-> `DDDLLL`) of each state's training labels that hold both a letter and a digit (an all-letter
mask is a vanity word, not a serial), and ship in the OCR manifest under `output.plate_formats`,
so a model without them reads exactly as before.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from inference.errors import ModelError

LETTER, DIGIT, ROUND = "L", "D", "?"
ROUND_CHARS = "O0"
# The formats are applied only when the state head is this sure of the state. A European or
# Brazilian plate has no US state, yet its reading can fit a format of the state the head guesses
# (NO450AM read N0450AM). On val, every EU plate and two thirds of the BR plates were under 0.3,
# and 97 % of US crops at or above it (inference/models/NOTES.md, Z2 and Z2g).
MIN_STATE_CONFIDENCE = 0.30


def mask_of(text: str) -> str:
    """`778AOS` -> `DDDLLL`: D for a digit, L for anything else."""
    return "".join(DIGIT if ch.isdigit() else LETTER for ch in text)


def is_format(mask: str) -> bool:
    """A mask can be a serial format when it holds at least one letter and one digit."""
    return LETTER in mask and DIGIT in mask


@dataclass(frozen=True)
class PlateFormats:
    """state -> the letter/digit masks its serials take (from training labels)."""

    by_state: Mapping[str, frozenset[str]]

    @classmethod
    def from_labels(cls, labels: Iterable[tuple[str | None, str]]) -> PlateFormats:
        """Formats from (state, plate text) labels; labels without a state are skipped."""
        by_state: dict[str, set[str]] = {}
        for state, text in labels:
            mask = mask_of(text)
            if state and text and is_format(mask):
                by_state.setdefault(state.lower(), set()).add(mask)
        return cls({state: frozenset(masks) for state, masks in by_state.items()})

    @classmethod
    def from_dict(cls, data: Any, source: str) -> PlateFormats:
        """Validate the manifest form `{"ca": ["DLLLDDD", ...], ...}`; errors name `source`."""
        where = f"{source}: manifest key 'output.plate_formats'"
        if not isinstance(data, dict):
            raise ModelError(f"{where} must be an object of state -> list of masks")
        by_state: dict[str, frozenset[str]] = {}
        for state, masks in data.items():
            if not isinstance(masks, list) or not all(isinstance(m, str) and m and set(m) <= {LETTER, DIGIT} for m in masks):
                raise ModelError(f"{where}.{state} must be a list of masks made of {LETTER} and {DIGIT}")
            by_state[str(state).lower()] = frozenset(masks)
        return cls(by_state)

    def to_dict(self) -> dict[str, list[str]]:
        """The manifest form, sorted so that files diff cleanly."""
        return {state: sorted(masks) for state, masks in sorted(self.by_state.items())}

    def settle(self, text: str, state: str | None) -> str:
        """`text` with each O/0 written as the labels would for a plate of `state`.

        A position becomes O when every format of the state that fits the rest of the text
        has a letter there, else 0. A text that no format fits, or a state without formats,
        is left as read."""
        formats = self.by_state.get((state or "").lower())
        if not formats or not any(ch in ROUND_CHARS for ch in text):
            return text
        pattern = "".join(ROUND if ch in ROUND_CHARS else kind for ch, kind in zip(text, mask_of(text)))
        fits = [f for f in formats if len(f) == len(pattern) and all(p in (ROUND, c) for p, c in zip(pattern, f))]
        if not fits:
            # Not a serial of this state (a vanity word, a foreign plate the state head cannot
            # place): the formats say nothing, so the network's reading stands.
            return text
        return "".join(("O" if all(f[i] == LETTER for f in fits) else "0") if ch in ROUND_CHARS else ch
                       for i, ch in enumerate(text))

    def settle_candidates(self, candidates: list[tuple[str, float]], state: str | None) -> list[tuple[str, float]]:
        """Settle every candidate; candidates that become equal are merged (probabilities summed)."""
        merged: dict[str, float] = {}
        for text, p in candidates:
            settled = self.settle(text, state)
            merged[settled] = merged.get(settled, 0.0) + p
        return sorted(merged.items(), key=lambda kv: -kv[1])
