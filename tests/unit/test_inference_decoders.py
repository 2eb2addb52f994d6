"""Detector and OCR decoders on constructed outputs with known answers."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from inference.detect_decode import decode_ssd, decode_yolo, nms
from inference.ocr import as_probabilities
from inference.ocr_decode import ctc_beam_search, ctc_greedy, fixed_slot

pytestmark = pytest.mark.unit

ALPHA = "ABC"


def one_hot_rows(indices: list[int], classes: int, p: float = 0.9) -> np.ndarray:
    rows = np.full((len(indices), classes), (1 - p) / (classes - 1))
    rows[np.arange(len(indices)), indices] = p
    return rows


# -- detector ---------------------------------------------------------------------------------
def test_nms_keeps_best_of_overlapping_and_separate_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], float)
    scores = np.array([0.8, 0.9, 0.7])
    assert nms(boxes, scores, 0.5) == [1, 2]
    assert nms(boxes, scores, 0.99) == [1, 0, 2]


def test_yolo_v5_rows_pixels_with_objectness_and_classes() -> None:
    # [1, N, 4+1+C], C = 2; boxes in input pixels
    rows = np.array([
        [50, 40, 20, 10, 0.9, 0.1, 0.95],   # class 1, score 0.855
        [51, 40, 20, 10, 0.8, 0.1, 0.9],    # duplicate of the first: suppressed
        [150, 100, 40, 20, 0.6, 0.9, 0.1],  # class 0, score 0.54
        [10, 10, 5, 5, 0.1, 0.9, 0.9],      # below threshold
    ], np.float32)[None]
    out = decode_yolo(rows, (320, 240), objectness=True, score_threshold=0.25, channels=(7,))
    assert len(out) == 2
    assert out[0].class_id == 1 and out[0].score == pytest.approx(0.855, abs=1e-5)
    assert (out[0].x1, out[0].y1, out[0].x2, out[0].y2) == pytest.approx((40, 35, 60, 45))
    assert out[1].class_id == 0 and (out[1].x1, out[1].y2) == pytest.approx((130, 110))


def test_yolo_normalised_boxes_are_scaled_to_input_size() -> None:
    rows = np.array([[[0.5, 0.5, 0.25, 0.1, 0.9]]], np.float32)  # no class columns: single class
    out = decode_yolo(rows, (512, 288), layout="nxc")
    assert len(out) == 1
    assert (out[0].x1, out[0].y1, out[0].x2, out[0].y2) == pytest.approx((192, 129.6, 320, 158.4), abs=1e-3)
    assert out[0].score == pytest.approx(0.9)


def test_yolo_v8_channels_first_without_objectness() -> None:
    n = 20
    data = np.zeros((1, 4 + 1, n), np.float32)  # [1, 4+C, N] with C = 1
    data[0, :, 7] = [100, 60, 30, 12, 0.8]
    data[0, :, 3] = [10, 10, 4, 4, 0.1]
    out = decode_yolo(data, (640, 640), objectness=False, score_threshold=0.3)
    assert len(out) == 1
    assert out[0].score == pytest.approx(0.8)
    assert (out[0].x1, out[0].y1, out[0].x2, out[0].y2) == pytest.approx((85, 54, 115, 66))


def test_ssd_postprocess_outputs_in_any_order() -> None:
    boxes = np.zeros((1, 10, 4), np.float32)
    boxes[0, 0] = [0.1, 0.2, 0.3, 0.6]  # ymin, xmin, ymax, xmax
    boxes[0, 1] = [0.5, 0.5, 0.6, 0.7]
    classes = np.zeros((1, 10), np.float32)
    classes[0, 1] = 2
    scores = np.zeros((1, 10), np.float32)
    scores[0, :2] = [0.9, 0.4]
    count = np.array([2], np.float32)
    for outputs in ([boxes, classes, scores, count], [boxes, scores, count, classes]):
        out = decode_ssd(outputs, (300, 200), score_threshold=0.3)
        assert [round(b.score, 2) for b in out] == [0.9, 0.4]
        assert (out[0].x1, out[0].y1, out[0].x2, out[0].y2) == pytest.approx((60, 20, 180, 60))
        assert out[1].class_id == 2
    assert len(decode_ssd([boxes, classes, scores, count], (300, 200), score_threshold=0.5)) == 1


@pytest.mark.parametrize("order", ["tf1", "tf2"])
def test_ssd_with_one_max_detection_finds_its_count(order: str) -> None:
    # N = 1: classes and scores are [1, 1], one value each like the count [1]
    boxes = np.array([[[0.1, 0.2, 0.3, 0.6]]], np.float32)
    classes = np.array([[0.0]], np.float32)
    scores = np.array([[0.8]], np.float32)
    count = np.array([1.0], np.float32)
    # TF1 Object Detection API: boxes, classes, scores, count; TF2 exports: boxes, scores, count, classes
    outputs = [boxes, classes, scores, count] if order == "tf1" else [boxes, scores, count, classes]
    out = decode_ssd(outputs, (300, 200), score_threshold=0.3)
    assert len(out) == 1
    assert out[0].score == pytest.approx(0.8) and out[0].class_id == 0
    assert (out[0].x1, out[0].y1, out[0].x2, out[0].y2) == pytest.approx((60, 20, 180, 60))
    empty = [a if a is not count else np.array([0.0], np.float32) for a in outputs]
    assert decode_ssd(empty, (300, 200), score_threshold=0.3) == []


def test_ssd_rejects_wrong_output_count() -> None:
    with pytest.raises(ValueError):
        decode_ssd([np.zeros((1, 4, 4))], (10, 10))


# -- OCR --------------------------------------------------------------------------------------
def test_ctc_greedy_collapses_repeats_and_drops_blanks() -> None:
    # blank = 0; A=1 B=2 C=3: path A A - A B B - C -> "AABC"
    probs = one_hot_rows([1, 1, 0, 1, 2, 2, 0, 3], 4)
    reading = ctc_greedy(probs, ALPHA, blank_index=0)
    assert reading.text == "AABC"
    assert reading.char_confidences == pytest.approx((0.9, 0.9, 0.9, 0.9))
    assert reading.confidence == pytest.approx(0.9**4)


def test_ctc_greedy_with_blank_last() -> None:
    probs = one_hot_rows([0, 3, 1, 1, 3, 2], 4)  # blank = 3: A - B B - C
    assert ctc_greedy(probs, ALPHA, blank_index=3).text == "ABC"


def test_ctc_beam_search_sums_alignments_and_beats_greedy() -> None:
    # Classic case: greedy says blank-blank (""), but "A" has more total probability.
    probs = np.array([[0.4, 0.35, 0.25], [0.4, 0.35, 0.25]])  # blank, A, B
    assert ctc_greedy(probs, "AB").text == ""
    beams = ctc_beam_search(probs, "AB", beam_width=8, top_k=10)
    # P("A") = .35*.35 + .35*.4 + .4*.35 = 0.4025 ; P("") = .16 ; P("B") = .25*.25 + 2*.25*.4 = .2625
    assert beams[0][0] == "A" and beams[0][1] == pytest.approx(0.4025)
    probabilities = dict(beams)
    assert probabilities[""] == pytest.approx(0.16)
    assert probabilities["B"] == pytest.approx(0.2625)
    assert probabilities["AB"] == pytest.approx(0.35 * 0.25)
    assert sum(probabilities.values()) == pytest.approx(1.0)


def test_ctc_beam_search_top_k_limit_and_order() -> None:
    rng = np.random.default_rng(0)
    probs = as_probabilities(rng.normal(size=(8, 4)))
    beams = ctc_beam_search(probs, ALPHA, beam_width=20, top_k=5)
    assert len(beams) == 5
    assert [p for _, p in beams] == sorted((p for _, p in beams), reverse=True)


def _exact_ctc(probs: np.ndarray, alphabet: str) -> dict[str, float]:
    """Every alignment enumerated: text -> total probability (blank = index 0)."""
    totals: dict[str, float] = {}
    for path in itertools.product(range(probs.shape[1]), repeat=probs.shape[0]):
        collapsed = [k for i, k in enumerate(path) if k != 0 and (i == 0 or path[i - 1] != k)]
        text = "".join(alphabet[k - 1] for k in collapsed)
        totals[text] = totals.get(text, 0.0) + float(np.prod(probs[np.arange(len(path)), path]))
    return totals


def test_ctc_beam_search_matches_enumeration_with_blank_only_steps() -> None:
    # A run of equal characters separated by steps where only the blank is possible (the
    # search's shortcut) must score exactly as the enumeration of every alignment does.
    rng = np.random.default_rng(3)
    probs = as_probabilities(rng.normal(size=(7, 3)) * 2)
    probs[[1, 4]] = [1.0, 0.0, 0.0]  # nothing but blank at steps 1 and 4
    exact = _exact_ctc(probs, "AB")
    beams = ctc_beam_search(probs, "AB", beam_width=1000, top_k=1000, prune=1e-6)
    beams = [(text, p) for text, p in beams if p > 0]  # repeats without room for a blank score 0
    assert {text for text, _ in beams} == {t for t, p in exact.items() if p > 0}
    for text, p in beams:
        assert p == pytest.approx(exact[text])
    assert beams[0][0] == max(exact, key=exact.get)


def test_fixed_slot_pads_and_candidates() -> None:
    alphabet = "AB_"  # '_' is the pad
    probs = np.array([[0.9, 0.05, 0.05], [0.1, 0.7, 0.2], [0.05, 0.05, 0.9]])
    reading, candidates = fixed_slot(probs, alphabet, "_", top_k=3)
    assert reading.text == "AB"
    assert reading.char_confidences == pytest.approx((0.9, 0.7))
    assert reading.confidence == pytest.approx(0.9 * 0.7 * 0.9)
    assert candidates[0][0] == "AB" and candidates[0][1] == pytest.approx(0.9 * 0.7 * 0.9 + 0.9 * 0.7 * 0.05 * 0 + 0.0, rel=0.2)
    texts = [t for t, _ in candidates]
    assert "A" in texts  # slot 2 padded: "A_" + ... merges
    assert len(candidates) == 3


def test_fixed_slot_merges_texts_that_differ_only_in_padding() -> None:
    probs = np.array([[0.5, 0.5], [0.5, 0.5]])  # alphabet "A_": "A_" and "_A" both read "A"
    _, candidates = fixed_slot(probs, "A_", "_", top_k=10)
    merged = dict(candidates)
    assert merged["A"] == pytest.approx(0.5)
    assert merged["AA"] == pytest.approx(0.25) and merged[""] == pytest.approx(0.25)


def test_as_probabilities_softmaxes_logits_only() -> None:
    probs = np.array([[0.2, 0.8]])
    assert as_probabilities(probs) == pytest.approx(probs)
    logits = np.array([[0.0, math.log(3.0)]])
    assert as_probabilities(logits) == pytest.approx(np.array([[0.25, 0.75]]))
