"""Decoders for detector outputs: dense YOLO-style grids and SSD's TFLite_Detection_PostProcess.

Every decoder returns boxes in model-input pixels as (x1, y1, x2, y2); the caller maps them
back to the image with the preprocessing geometry.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RawBox:
    """One detection in model-input pixels."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    class_id: int = 0


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box `a` against boxes `b` [N, 4]."""
    x1 = np.maximum(a[0], b[:, 0])
    y1 = np.maximum(a[1], b[:, 1])
    x2 = np.minimum(a[2], b[:, 2])
    y2 = np.minimum(a[3], b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = max(0.0, float(a[2] - a[0])) * max(0.0, float(a[3] - a[1]))
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.45, max_out: int = 100) -> list[int]:
    """Greedy non-maximum suppression; indices of kept boxes, best first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_out:
        best = int(order[0])
        keep.append(best)
        if order.size == 1:
            break
        rest = order[1:]
        order = rest[iou(boxes[best], boxes[rest]) <= iou_threshold]
    return keep


def decode_yolo(
    output: np.ndarray,
    input_size: tuple[int, int],
    *,
    objectness: bool = True,
    score_threshold: float = 0.25,
    iou_threshold: float = 0.45,
    max_detections: int = 100,
    layout: str = "auto",
    channels: tuple[int, ...] = (),
) -> list[RawBox]:
    """Decode a dense YOLO output.

    `output` is [1, N, 4+1+C] (v5 style, `objectness=True`) or [1, 4+C, N] (v8 style,
    `objectness=False`); boxes are centre x, centre y, width, height, either in input pixels
    or normalised to 0..1 (detected: all coordinates <= 1.5). `layout` is "nxc", "cxn" or
    "auto": the dimension whose size is in `channels` (the row lengths the model may have)
    holds the values of a row, else the smaller of the two.
    """
    data = np.asarray(output, dtype=np.float32)
    while data.ndim > 2:
        data = data[0]
    if layout == "auto":
        if data.shape[1] in channels:
            layout = "nxc"
        elif data.shape[0] in channels:
            layout = "cxn"
        else:
            layout = "cxn" if data.shape[0] < data.shape[1] else "nxc"
    if layout == "cxn":
        data = data.T
    elif layout != "nxc":
        raise ValueError(f"layout must be 'auto', 'nxc' or 'cxn', got {layout!r}")
    first_class = 5 if objectness else 4
    if data.shape[1] <= first_class - 1:
        raise ValueError(f"YOLO output rows have {data.shape[1]} values, need at least {first_class}")
    if data.shape[1] == first_class:
        class_scores = np.ones((data.shape[0], 1), dtype=np.float32)
    else:
        class_scores = data[:, first_class:]
    class_ids = np.argmax(class_scores, axis=1)
    scores = class_scores[np.arange(len(class_ids)), class_ids]
    if objectness:
        scores = scores * data[:, 4]
    mask = scores >= score_threshold
    if not np.any(mask):
        return []
    boxes_c = data[mask, :4].astype(np.float64)
    scores = scores[mask]
    class_ids = class_ids[mask]
    width, height = input_size
    if float(np.max(boxes_c)) <= 1.5:
        boxes_c = boxes_c * np.array([width, height, width, height], dtype=np.float64)
    xyxy = np.stack(
        [
            boxes_c[:, 0] - boxes_c[:, 2] / 2,
            boxes_c[:, 1] - boxes_c[:, 3] / 2,
            boxes_c[:, 0] + boxes_c[:, 2] / 2,
            boxes_c[:, 1] + boxes_c[:, 3] / 2,
        ],
        axis=1,
    )
    result: list[RawBox] = []
    for cls in np.unique(class_ids):
        idx = np.nonzero(class_ids == cls)[0]
        for k in nms(xyxy[idx], scores[idx], iou_threshold, max_detections):
            i = idx[k]
            result.append(RawBox(*(float(v) for v in xyxy[i]), score=float(scores[i]), class_id=int(cls)))
    result.sort(key=lambda b: -b.score)
    return result[:max_detections]


def decode_ssd(
    outputs: list[np.ndarray],
    input_size: tuple[int, int],
    *,
    score_threshold: float = 0.25,
) -> list[RawBox]:
    """Decode the 4 outputs of TFLite_Detection_PostProcess.

    They are boxes [1, N, 4] as normalised (ymin, xmin, ymax, xmax), classes [1, N],
    scores [1, N] and count [1]. Models order them differently, so they are told apart by
    shape: boxes has 4 in its last dimension, count is the 1-D tensor of one value, and of
    the two [1, N] tensors the one with only whole numbers is classes (on a tie, the
    interpreter's documented order: classes before scores).
    """
    if len(outputs) != 4:
        raise ValueError(f"SSD post-process has 4 outputs, got {len(outputs)}")
    arrays = [np.asarray(o, dtype=np.float32) for o in outputs]
    boxes = next((a for a in arrays if a.ndim == 3 and a.shape[-1] == 4), None)
    # With N = 1 classes and scores are [1, 1] and hold one value too: the count is the one
    # of at most one dimension, and any size-1 tensor only for a model that shapes it otherwise.
    single = [a for a in arrays if a is not boxes and a.size == 1]
    count_arr = next((a for a in single if a.ndim <= 1), single[0] if single else None)
    rest = [a for a in arrays if a is not boxes and a is not count_arr]
    if boxes is None or count_arr is None or len(rest) != 2:
        raise ValueError("SSD outputs must be boxes [1,N,4], classes [1,N], scores [1,N] and count [1]")
    whole = [bool(np.all(np.equal(np.mod(a, 1), 0))) for a in rest]
    if whole[0] and not whole[1]:
        classes, scores = rest
    elif whole[1] and not whole[0]:
        scores, classes = rest
    else:
        classes, scores = rest  # the interpreter's documented order: boxes, classes, scores, count
    count = int(count_arr.reshape(-1)[0])
    width, height = input_size
    result = []
    for i in range(min(count, boxes.shape[1])):
        score = float(scores.reshape(-1)[i])
        if score < score_threshold:
            continue
        ymin, xmin, ymax, xmax = (float(v) for v in boxes[0, i])
        result.append(RawBox(xmin * width, ymin * height, xmax * width, ymax * height, score, int(classes.reshape(-1)[i])))
    result.sort(key=lambda b: -b.score)
    return result
