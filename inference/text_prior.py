"""A prior over plate layouts (which places hold letters, which digits) that re-weights OCR candidates.

Letters and digits that look alike (O/0, I/1, B/8) are where plate OCR goes wrong, and the
image alone often cannot settle them. The plate's layout usually can: a US plate reading
`824B0J` has a layout (`DDDLDL`) that almost no plate has, while `824BOJ` (`DDDLLL`) is the
commonest there is. The prior is counted from the labels a model was trained on and ships in
its manifest under `output.text_prior`, so a model without one reads exactly as before.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from inference.errors import ModelError

KIND = "layout"
LETTER, DIGIT = "L", "D"
LENGTH_SMOOTHING = 1.0
LAYOUT_SMOOTHING = 0.5


def layout_of(text: str) -> str:
    """`824BOJ` -> `DDDLLL`: D for a digit, L for anything else."""
    return "".join(DIGIT if ch.isdigit() else LETTER for ch in text)


@dataclass(frozen=True)
class LayoutPrior:
    """P(layout) = P(length) * P(layout | length), both smoothed counts of training labels.

    P(length) is add-one over lengths 1..max_len and P(layout | length) add-0.5 over the
    2**length layouts of that length, so a layout never seen still gets a small share.
    """

    counts: Mapping[str, int]
    max_len: int
    _lengths: Mapping[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lengths: Counter[int] = Counter()
        for layout, count in self.counts.items():
            lengths[len(layout)] += count
        object.__setattr__(self, "_lengths", dict(lengths))

    @classmethod
    def from_labels(cls, texts: Iterable[str], max_len: int) -> LayoutPrior:
        """Count the layouts of `texts` (labels longer than `max_len` are left out)."""
        counts = Counter(layout_of(t) for t in texts if 0 < len(t) <= max_len)
        return cls(dict(sorted(counts.items())), max_len)

    @classmethod
    def from_dict(cls, data: Any, source: str) -> LayoutPrior:
        """Validate a manifest's `output.text_prior`; errors name `source` and the key."""
        where = "output.text_prior"
        if not isinstance(data, dict):
            raise ModelError(f"{source}: manifest key '{where}' must be an object")
        if data.get("kind") != KIND:
            raise ModelError(f"{source}: manifest key '{where}.kind' must be {KIND!r}, got {data.get('kind')!r}")
        max_len = data.get("max_len")
        if not isinstance(max_len, int) or isinstance(max_len, bool) or not 1 <= max_len <= 32:
            raise ModelError(f"{source}: manifest key '{where}.max_len' must be an integer from 1 to 32, got {max_len!r}")
        counts = data.get("counts")
        if not isinstance(counts, dict):
            raise ModelError(f"{source}: manifest key '{where}.counts' must be an object of layout: count")
        for layout, count in counts.items():
            if not layout or len(layout) > max_len or set(layout) - {LETTER, DIGIT}:
                raise ModelError(f"{source}: manifest key '{where}.counts' has a bad layout {layout!r} "
                                 f"(letters {LETTER}/{DIGIT}, 1 to {max_len} long)")
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ModelError(f"{source}: manifest key '{where}.counts.{layout}' must be a count >= 0, got {count!r}")
        return cls(dict(counts), max_len)

    def to_dict(self) -> dict[str, Any]:
        """The manifest form."""
        return {"kind": KIND, "max_len": self.max_len, "counts": dict(self.counts)}

    def log_prob(self, text: str) -> float:
        """log P(layout of `text`); -inf for an empty text or one longer than max_len."""
        n = len(text)
        if not 0 < n <= self.max_len:
            return -math.inf
        total = sum(self._lengths.values())
        p_len = (self._lengths.get(n, 0) + LENGTH_SMOOTHING) / (total + LENGTH_SMOOTHING * self.max_len)
        p_layout = (self.counts.get(layout_of(text), 0) + LAYOUT_SMOOTHING) / (
            self._lengths.get(n, 0) + LAYOUT_SMOOTHING * 2 ** n)
        return math.log(p_len) + math.log(p_layout)

    def reweight(self, candidates: list[tuple[str, float]]) -> list[tuple[str, float]]:
        """Candidates re-weighted by the prior, best first, their total probability kept.

        p'(t) = p(t) P(layout t) / sum_j p(j) P(layout j) * sum_j p(j): the order follows
        image and layout together, and a confidence stays a share of what the OCR gave the
        candidates, so thresholds on it keep their meaning.
        """
        mass = sum(p for _, p in candidates)
        if not candidates or mass <= 0.0:
            return list(candidates)
        weighted = [(t, p * math.exp(self.log_prob(t))) for t, p in candidates]
        norm = sum(w for _, w in weighted)
        if norm <= 0.0:
            return list(candidates)
        return sorted(((t, w / norm * mass) for t, w in weighted), key=lambda tw: -tw[1])
