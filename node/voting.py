"""Per-track voting: characters weighted by confidence across all of a track's readings."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from node.tracker import Observation


@dataclass(frozen=True)
class Vote:
    """The track's agreed reading."""

    text: str
    confidence: float
    char_confidences: list[float]
    candidates: list[tuple[str, float]]
    region: str | None
    region_confidence: float
    best: Observation


def vote(observations: list[Observation], max_candidates: int = 10) -> Vote:
    """Combine a track's readings into one.

    The plate length is chosen first (by summed confidence of the readings of each length);
    then each position takes the character with the largest summed per-character confidence
    among readings of that length. A character read once at 0.99 beats one read twice at 0.3.
    """
    if not observations:
        raise ValueError("vote: no observations")
    by_length: dict[int, list[Observation]] = defaultdict(list)
    for obs in observations:
        if obs.text:
            by_length[len(obs.text)].append(obs)
    best = max(observations, key=lambda o: o.confidence)
    if not by_length:
        return Vote("", 0.0, [], [], None, 0.0, best)
    length = max(by_length, key=lambda n: (sum(o.confidence for o in by_length[n]), len(by_length[n])))
    group = by_length[length]
    chars, confs = [], []
    for pos in range(length):
        weights: dict[str, float] = defaultdict(float)
        for obs in group:
            c = obs.char_confidences[pos] if pos < len(obs.char_confidences) else obs.confidence
            weights[obs.text[pos]] += c
        winner = max(weights, key=weights.get)
        chars.append(winner)
        confs.append(weights[winner] / len(group))
    text = "".join(chars)
    total = sum(o.confidence for o in observations if o.text)
    agreement = sum(o.confidence for o in group) / total if total > 0 else 0.0
    confidence = min(confs) * agreement if confs else 0.0
    scores: dict[str, float] = defaultdict(float)
    for obs in observations:
        for cand, c in obs.candidates or [(obs.text, obs.confidence)]:
            if cand:  # reading nothing is no alternative plate for HQ to search by
                scores[cand] += c / len(observations)
    scores[text] = max(scores.get(text, 0.0), confidence)
    candidates = sorted(scores.items(), key=lambda kv: -kv[1])[:max_candidates]
    regions: dict[str, float] = defaultdict(float)
    for obs in observations:
        if obs.region:
            regions[obs.region] += obs.region_confidence
    region = max(regions, key=regions.get) if regions else None
    region_conf = regions[region] / len(observations) if region else 0.0
    chosen = max(group, key=lambda o: o.confidence)
    return Vote(text, confidence, confs, candidates, region, region_conf, chosen)
