"""Scoring helpers shared by training reports and `alpr-node eval`."""
from __future__ import annotations

from dataclasses import dataclass, field


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two strings."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """IoU of two (x, y, w, h) boxes."""
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def match_boxes(
    truths: list[tuple[float, float, float, float]], preds: list[tuple[float, float, float, float]], threshold: float = 0.5
) -> list[tuple[int, int]]:
    """Greedy one-to-one matches (truth index, prediction index) with IoU >= threshold; preds best first."""
    used: set[int] = set()
    pairs = []
    for pi, pred in enumerate(preds):
        best, best_iou = -1, threshold
        for ti, truth in enumerate(truths):
            if ti in used:
                continue
            value = box_iou(truth, pred)
            if value >= best_iou:
                best, best_iou = ti, value
        if best >= 0:
            used.add(best)
            pairs.append((best, pi))
    return pairs


@dataclass
class OcrScore:
    """Running plate-reading figures."""

    plates: int = 0
    exact: int = 0
    top_k: int = 0
    chars: int = 0
    char_errors: int = 0
    region_total: int = 0
    region_correct: int = 0

    def add(self, truth: str, reading: str, candidates: list[str] | None = None,
            region_truth: str | None = None, region: str | None = None) -> None:
        """Score one plate; `region_truth` None (unlabelled, or an OCR that reads no region)
        leaves it out of the region figure."""
        self.plates += 1
        self.exact += int(reading == truth)
        self.top_k += int(truth in (candidates or [reading]))
        self.chars += len(truth)
        self.char_errors += min(len(truth), edit_distance(truth, reading))
        if region_truth:
            self.region_total += 1
            self.region_correct += int(region == region_truth)

    def as_dict(self) -> dict[str, float | int | None]:
        """The figures in percent; `region_top1_pct` is None when no plate was scored for its
        region (no region labels, or an OCR without a region output): 0.0 would say every
        region was read wrong."""
        def pct(n: int, d: int) -> float:
            return round(100.0 * n / d, 2) if d else 0.0

        return {
            "plates": self.plates,
            "exact_pct": pct(self.exact, self.plates),
            "char_accuracy_pct": pct(self.chars - self.char_errors, self.chars),
            "top10_pct": pct(self.top_k, self.plates),
            "region_top1_pct": pct(self.region_correct, self.region_total) if self.region_total else None,
        }


@dataclass
class DetectionScore:
    """Running detection figures at one IoU threshold."""

    truths: int = 0
    predictions: int = 0
    matched: int = 0
    ious: list[float] = field(default_factory=list)

    def add(self, truths: list[tuple[float, float, float, float]], preds: list[tuple[float, float, float, float]], threshold: float = 0.5) -> list[tuple[int, int]]:
        pairs = match_boxes(truths, preds, threshold)
        self.truths += len(truths)
        self.predictions += len(preds)
        self.matched += len(pairs)
        self.ious.extend(box_iou(truths[t], preds[p]) for t, p in pairs)
        return pairs

    def as_dict(self) -> dict[str, float | int]:
        return {
            "truths": self.truths,
            "predictions": self.predictions,
            "recall_pct": round(100.0 * self.matched / self.truths, 2) if self.truths else 0.0,
            "precision_pct": round(100.0 * self.matched / self.predictions, 2) if self.predictions else 0.0,
            "mean_iou": round(sum(self.ious) / len(self.ious), 3) if self.ious else 0.0,
        }
