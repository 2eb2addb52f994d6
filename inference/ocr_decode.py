"""Decoders for plate OCR outputs: CTC (greedy and prefix beam search) and fixed-slot."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Reading:
    """A decoded plate string with its confidence and per-character confidences."""

    text: str
    confidence: float
    char_confidences: tuple[float, ...]


def _check_probs(probs: np.ndarray, classes: int) -> np.ndarray:
    data = np.asarray(probs, dtype=np.float64)
    while data.ndim > 2:
        data = data[0]
    if data.ndim != 2 or data.shape[1] != classes:
        raise ValueError(f"expected [T, {classes}] probabilities, got shape {tuple(np.shape(probs))}")
    return data


def ctc_greedy(probs: np.ndarray, alphabet: str, blank_index: int = 0) -> Reading:
    """Best path: argmax per step, collapse repeats, drop blanks.

    `probs` is [T, len(alphabet)+1] softmax output; the blank sits at `blank_index` and the
    other indices map to `alphabet` in order. A character's confidence is the highest
    probability over the steps that emitted it; the plate's is their product.
    """
    data = _check_probs(probs, len(alphabet) + 1)
    symbols = _symbols(alphabet, blank_index)
    best = np.argmax(data, axis=1)
    text: list[str] = []
    confs: list[float] = []
    previous = -1
    for t, k in enumerate(best):
        k = int(k)
        if k != blank_index:
            if k != previous:
                text.append(symbols[k])
                confs.append(float(data[t, k]))
            else:
                confs[-1] = max(confs[-1], float(data[t, k]))
        previous = k
    return Reading("".join(text), float(np.prod(confs)) if confs else 0.0, tuple(confs))


def _symbols(alphabet: str, blank_index: int) -> list[str]:
    symbols = list(alphabet)
    symbols.insert(blank_index, "")
    return symbols


def ctc_beam_search(
    probs: np.ndarray,
    alphabet: str,
    blank_index: int = 0,
    beam_width: int = 16,
    top_k: int = 10,
    prune: float = 1e-4,
    per_step: int = 6,
) -> list[tuple[str, float]]:
    """CTC prefix beam search: up to `top_k` (text, probability) best first.

    The probability of a text sums every alignment that collapses to it, so it is a real
    sequence probability (the greedy path's product is a lower bound). Steps are pruned to
    characters above `prune` to keep it fast.
    """
    data = _check_probs(probs, len(alphabet) + 1)
    symbols = _symbols(alphabet, blank_index)
    # prefix (tuple of class ids) -> (p ending in blank, p ending in non-blank)
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (1.0, 0.0)}
    # Steps where no character reaches `prune` only extend every beam by a blank: that scales
    # all beams alike (same ranking), so they are done in one pass without the search.
    blank_only = np.delete(data, blank_index, axis=1).max(axis=1) < prune
    for t in range(data.shape[0]):
        row = data[t]
        if blank_only[t]:
            p_blank = float(row[blank_index])
            beams = {prefix: ((pb + pnb) * p_blank, 0.0) for prefix, (pb, pnb) in beams.items()}
            continue
        # the few likeliest characters of this step (at most `per_step`), above `prune`
        top = np.argsort(-row)[:per_step]
        candidates = [int(k) for k in top if row[k] >= prune]
        if blank_index not in candidates:
            candidates.append(blank_index)
        nxt: dict[tuple[int, ...], list[float]] = {}
        add = _accumulator(nxt)
        for prefix, (pb, pnb) in beams.items():
            total = pb + pnb
            for k in candidates:
                p = float(row[k])
                if k == blank_index:
                    add(prefix, total * p, 0.0)
                    continue
                last = prefix[-1] if prefix else None
                extended = prefix + (k,)
                if k == last:
                    add(extended, 0.0, pb * p)  # a repeat needs a blank between
                    add(prefix, 0.0, pnb * p)  # or collapses into the same character
                else:
                    add(extended, 0.0, total * p)
        ranked = sorted(nxt.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))[:beam_width]
        beams = {prefix: (v[0], v[1]) for prefix, v in ranked}
    ranked_final = sorted(beams.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))
    return [("".join(symbols[k] for k in prefix), pb + pnb) for prefix, (pb, pnb) in ranked_final[:top_k]]


def _accumulator(store: dict[tuple[int, ...], list[float]]) -> Callable[[tuple[int, ...], float, float], None]:
    """add(prefix, p_blank, p_non_blank): sums into `store` (one dict per time step)."""

    def add(prefix: tuple[int, ...], pb: float, pnb: float) -> None:
        entry = store.setdefault(prefix, [0.0, 0.0])
        entry[0] += pb
        entry[1] += pnb

    return add


def fixed_slot(
    probs: np.ndarray, alphabet: str, pad_char: str, top_k: int = 10, per_slot: int = 3
) -> tuple[Reading, list[tuple[str, float]]]:
    """Decode a fixed-slot output [S, len(alphabet)]: one character per slot, `pad_char` = empty.

    Returns the best reading and up to `top_k` (text, probability) candidates, where texts
    that differ only in padding are merged (their probabilities add).
    """
    data = _check_probs(probs, len(alphabet))
    if len(pad_char) != 1 or pad_char not in alphabet:
        raise ValueError(f"pad_char {pad_char!r} must be one character of the alphabet")
    best = np.argmax(data, axis=1)
    chars: list[str] = []
    confs: list[float] = []
    for s, k in enumerate(best):
        if alphabet[int(k)] != pad_char:
            chars.append(alphabet[int(k)])
            confs.append(float(data[s, k]))
    whole = float(np.prod(data[np.arange(len(best)), best]))
    reading = Reading("".join(chars), whole, tuple(confs))
    # k-best over slots: a beam of partial strings, each slot's few best characters.
    beams: list[tuple[float, str]] = [(0.0, "")]
    width = max(top_k * 4, 8)
    for s in range(data.shape[0]):
        order = np.argsort(-data[s])[:per_slot]
        grown = []
        for logp, text in beams:
            for k in order:
                p = float(data[s, k])
                if p <= 0:
                    continue
                ch = alphabet[int(k)]
                grown.append((logp + math.log(p), text + ("" if ch == pad_char else ch)))
        grown.sort(key=lambda x: -x[0])
        beams = grown[:width]
    merged: dict[str, float] = {}
    for logp, text in beams:
        merged[text] = merged.get(text, 0.0) + math.exp(logp)
    candidates = sorted(merged.items(), key=lambda kv: -kv[1])[:top_k]
    return reading, candidates
