"""Per-track voting (node.voting): the agreed text, and the candidates a read carries to HQ."""
from __future__ import annotations

import numpy as np
import pytest

from node.tracker import Observation
from node.voting import vote

pytestmark = pytest.mark.unit


def obs(text: str, confidence: float, candidates: list[tuple[str, float]], t: int = 0) -> Observation:
    return Observation(time_ns=t, wall_ns=t, box=(0, 0, 100, 50), text=text, confidence=confidence,
                       char_confidences=[confidence] * len(text), candidates=candidates, region="ca",
                       region_confidence=0.9, crop=np.zeros((2, 2, 3), np.uint8), detection_score=0.9)


def test_the_confident_reading_wins_and_reading_nothing_is_no_candidate() -> None:
    frames = [obs("7ABC123", 0.9, [("7ABC123", 0.9), ("7A8C123", 0.05)], 1),
              obs("7A8C123", 0.4, [("7A8C123", 0.4), ("7ABC123", 0.3)], 2),
              obs("", 0.5, [("", 0.5), ("7ABC12", 0.2)], 3)]  # a blurred frame that read nothing
    result = vote(frames)
    assert result.text == "7ABC123"
    assert result.candidates[0][0] == "7ABC123"
    assert all(text for text, _ in result.candidates)
    assert {"7A8C123", "7ABC12"} <= {text for text, _ in result.candidates}


def test_a_track_that_read_nothing_has_no_text() -> None:
    result = vote([obs("", 0.6, [("", 0.6)])])
    assert result.text == "" and result.candidates == []
