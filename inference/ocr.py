"""Plate reading on crops: `PlateReader(model_path, threads).read(crop_rgb) -> PlateText`."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inference.errors import ModelError
from inference.models_dir import OCR_MODEL, shipped_model
from inference.ocr_decode import ctc_beam_search, ctc_greedy, fixed_slot
from inference.plate_formats import MIN_STATE_CONFIDENCE
from inference.runtime import TFLiteModel

log = logging.getLogger(__name__)

OCR_KINDS = ("ctc", "fixed_slot")


@dataclass(frozen=True)
class PlateText:
    """What a plate crop reads: best text, confidences, up to 10 candidates, region guess."""

    text: str
    confidence: float
    char_confidences: list[float] = field(default_factory=list)
    candidates: list[tuple[str, float]] = field(default_factory=list)
    region: str | None = None
    region_confidence: float = 0.0
    region_probs: tuple[float, ...] = ()  # the state head's whole distribution, to fuse views by


def as_probabilities(values: np.ndarray) -> np.ndarray:
    """Rows of `values` as probabilities: kept if they already are, else softmaxed (logit outputs)."""
    rows = np.asarray(values, dtype=np.float64)
    sums = rows.sum(axis=-1)
    if rows.min() >= 0.0 and rows.max() <= 1.0 + 1e-6 and np.all(np.abs(sums - 1.0) < 0.1):
        return rows / np.maximum(sums[..., None], 1e-9)
    shifted = np.exp(rows - rows.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class PlateReader:
    """Runs a CTC or fixed-slot OCR model on plate crops.

    With `output.plate_formats` in the manifest, a reading's O / 0 are settled by the predicted
    state's formats when the state head gives that state at least `min_state_confidence`.
    """

    def __init__(self, model_path: Path | None = None, threads: int = 1, beam_width: int = 16, top_k: int = 10,
                 min_state_confidence: float = MIN_STATE_CONFIDENCE) -> None:
        self.model = TFLiteModel(Path(model_path) if model_path else shipped_model(OCR_MODEL), threads)
        manifest = self.model.manifest
        if manifest.output_kind not in OCR_KINDS:
            raise ModelError(f"{self.model.path}: output kind {manifest.output_kind!r} is not an OCR kind {OCR_KINDS}")
        self.beam_width = beam_width
        self.top_k = top_k
        self.min_state_confidence = min_state_confidence

    def read_views(self, crop_rgb: np.ndarray, views: int = 3) -> PlateText:
        """Read a crop as given and with a little more and a little less margin, and fuse the
        candidates (mean probability): a still image gets no second frame to vote with, so it
        gets a second and third framing instead. `views` 1 is `read`.

        The state is voted like the text (the views' state probabilities averaged)."""
        if views <= 1:
            return self.read(crop_rgb)
        # each view settled by its own state (Z2g as shipped), then fused with the state voted (V)
        readings = [self.read(v) for v in margin_views(crop_rgb)[:views]]
        return fuse_readings(readings, self.model.manifest.region_classes, self.top_k)

    def read(self, crop_rgb: np.ndarray, settle: bool = True) -> PlateText:
        """Read one plate crop (uint8 RGB HxWx3 or grey HxW); `settle` False skips the state's
        O / 0 formats (for a caller that fuses readings first).

        A model with several sequence outputs is an ensemble in one file: each member is
        decoded on its own and their candidates fused like views, because CTC members need not
        put a character's spike on the same time step, so averaging their frames could blur it."""
        outputs, _ = self.model.run(crop_rgb)
        manifest = self.model.manifest
        region_out = next((o for o in outputs if o.ndim == 2), None)
        region, region_conf, region_probs = None, 0.0, ()
        if region_out is not None and manifest.region_classes:
            probs = as_probabilities(region_out[0])
            best = int(np.argmax(probs))
            region, region_conf, region_probs = manifest.region_classes[best], float(probs[best]), tuple(float(v) for v in probs)
        members = [self._decode(as_probabilities(o[0])) for o in outputs if o.ndim == 3]
        if not members:
            raise ModelError(f"{self.model.path}: no [1, T, classes] sequence output to decode")
        fused = fuse_readings(members, (), self.top_k)
        reading = PlateText(fused.text, fused.confidence, fused.char_confidences, fused.candidates,
                            region, region_conf, region_probs)
        return self._settled(reading) if settle else reading

    def _decode(self, sequence: np.ndarray) -> PlateText:
        """One character output's text, character confidences and candidates (no state)."""
        manifest = self.model.manifest
        if manifest.output_kind == "ctc":
            greedy = ctc_greedy(sequence, manifest.alphabet, manifest.blank_index)
            candidates = ctc_beam_search(sequence, manifest.alphabet, manifest.blank_index, self.beam_width, self.top_k)
            text, confidence = candidates[0] if candidates else (greedy.text, greedy.confidence)
            if greedy.text == text:
                chars = list(greedy.char_confidences)
            else:
                # the beam's winner has no single path: spread its probability over its characters
                chars = [confidence ** (1.0 / len(text))] * len(text) if text else []
        else:
            reading, candidates = fixed_slot(sequence, manifest.alphabet, manifest.pad_char, self.top_k)
            text, confidence, chars = reading.text, reading.confidence, list(reading.char_confidences)
            if candidates and candidates[0][0] == text:
                confidence = candidates[0][1]
        return PlateText(text, float(confidence), [float(c) for c in chars],
                         [(t, float(p)) for t, p in candidates[: self.top_k]])

    def _settled(self, reading: PlateText) -> PlateText:
        """`reading` with O / 0 settled by its state's formats, when the manifest has formats
        and the state is sure enough; otherwise as it is."""
        formats = self.model.manifest.plate_formats
        if formats is None or not reading.candidates or reading.region_confidence < self.min_state_confidence:
            return reading
        settled = formats.settle_candidates(reading.candidates, reading.region)
        text, confidence = settled[0]
        chars = reading.char_confidences
        if formats.settle(reading.text, reading.region) != text:
            # the winner has no single path: spread its probability over its characters
            chars = [confidence ** (1.0 / len(text))] * len(text) if text else []
        return PlateText(text, float(confidence), [float(c) for c in chars], settled[: self.top_k],
                         reading.region, reading.region_confidence, reading.region_probs)


def fuse_readings(readings: list[PlateText], region_classes: tuple[str, ...] | list[str] = (), top_k: int = 10) -> PlateText:
    """One reading from several of the same plate (views, ensemble members).

    Each candidate scores its mean probability over the readings; the winner keeps the
    character confidences of the most confident reading that chose it. The state is the one
    with the highest mean probability when every reading has the whole distribution over
    `region_classes`, else the first reading's."""
    if len(readings) == 1:
        return readings[0]
    scores: dict[str, float] = {}
    for reading in readings:
        for text, conf in reading.candidates or [(reading.text, reading.confidence)]:
            scores[text] = scores.get(text, 0.0) + conf / len(readings)
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])[:top_k]
    best_text, best_conf = ranked[0]
    source = max((r for r in readings if r.text == best_text), key=lambda r: r.confidence, default=readings[0])
    chars = source.char_confidences if source.text == best_text else [best_conf] * len(best_text)
    first = readings[0]
    region, region_conf, region_probs = first.region, first.region_confidence, first.region_probs
    if region_classes and all(len(r.region_probs) == len(region_classes) for r in readings):
        region_probs = tuple(float(v) for v in np.mean([r.region_probs for r in readings], axis=0))
        best = int(np.argmax(region_probs))
        region, region_conf = region_classes[best], region_probs[best]
    return PlateText(best_text, float(best_conf), list(chars), ranked, region, region_conf, region_probs)


def margin_views(crop: np.ndarray) -> list[np.ndarray]:
    """The crop, then with ~4 % / 6 % more margin (edge pixels repeated), then ~3 % / 5 % less."""
    h, w = crop.shape[:2]
    views = [crop]
    px, py = max(1, int(0.04 * w)), max(1, int(0.06 * h))
    pad = [(py, py), (px, px)] + ([(0, 0)] if crop.ndim == 3 else [])
    views.append(np.pad(crop, pad, mode="edge"))
    cx, cy = int(0.03 * w), int(0.05 * h)
    if w - 2 * cx >= 8 and h - 2 * cy >= 4:
        views.append(np.ascontiguousarray(crop[cy:h - cy, cx:w - cx]))
    return views
