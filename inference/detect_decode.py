"""Decoders for detector outputs: dense YOLO-style grids and SSD's TFLite_Detection_PostProcess.

Every decoder returns boxes in model-input pixels as (x1, y1, x2, y2); the caller maps them
back to the image with the preprocessing geometry.
"""
from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

# What each of TFLite_Detection_PostProcess's 4 outputs holds, in the op's own output order.
SSD_ROLES = ("boxes", "classes", "scores", "count")
# The op's output tensors are named after it: "TFLite_Detection_PostProcess" (boxes), then ":1"
# (classes), ":2" (scores), ":3" (count); a converter may put a scope in front.
_SSD_NAME = re.compile(r"(?:^|/)TFLite_Detection_PostProcess(?::(\d+))?$")


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


def suppress_across_classes(boxes: list[RawBox], iou_threshold: float = 0.45) -> list[RawBox]:
    """Class-agnostic NMS over `boxes` when they hold more than one class, best first: two
    classes kept as plates (say front and rear plates) boxed on one plate are one plate. Boxes of
    a single class are returned as they are, in score order (their decoder or the model's
    post-process op has suppressed them already)."""
    if len({b.class_id for b in boxes}) <= 1:
        return sorted(boxes, key=lambda b: -b.score)
    coords = np.array([[b.x1, b.y1, b.x2, b.y2] for b in boxes], dtype=np.float64)
    scores = np.array([b.score for b in boxes], dtype=np.float64)
    return [boxes[i] for i in nms(coords, scores, iou_threshold, max_out=len(boxes))]


def yolo_row_lengths(kind: str, classes: int) -> tuple[int, ...]:
    """The lengths a row of a `kind` ("yolo" or "yolov8") output with `classes` named classes may
    have: 4 box values, objectness (yolo), one score per class; a single-class yolo model may
    leave its class column out."""
    objectness = 1 if kind == "yolo" else 0
    return (4 + classes + objectness,) + ((4 + objectness,) if kind == "yolo" and classes == 1 else ())


def yolo_layout(dims: tuple[int, int], channels: Sequence[int] = ()) -> str:
    """"nxc" when the rows lie along the last of the two `dims`, else "cxn": the dimension whose
    size is one of `channels` (the row lengths the model may have) holds a row's values, else the
    smaller of the two (a few values per row, thousands of rows)."""
    if dims[1] in channels:
        return "nxc"
    if dims[0] in channels:
        return "cxn"
    return "cxn" if dims[0] < dims[1] else "nxc"


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
    keep_classes: Collection[int] | None = None,
    class_agnostic: bool = True,
) -> list[RawBox]:
    """Decode a dense YOLO output.

    `output` is [1, N, 4+1+C] (v5 style, `objectness=True`) or [1, 4+C, N] (v8 style,
    `objectness=False`); boxes are centre x, centre y, width, height, either in input pixels
    or normalised to 0..1 (detected: all coordinates <= 1.5). `layout` is "nxc", "cxn" or
    "auto" (`yolo_layout`: the dimension whose size is in `channels` holds a row's values, else
    the smaller of the two).

    Each row is its best class; only rows whose class is in `keep_classes` (None: all) are kept,
    and NMS runs over them all at once (`class_agnostic`, the default: two classes kept as
    plates boxed on one plate are one plate) or class by class.
    """
    data = np.asarray(output, dtype=np.float32)
    while data.ndim > 2:
        data = data[0]
    if layout == "auto":
        layout = yolo_layout((int(data.shape[0]), int(data.shape[1])), channels)
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
    if keep_classes is not None:
        mask &= np.isin(class_ids, np.fromiter(keep_classes, dtype=np.int64, count=len(keep_classes)))
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
    groups = [np.arange(len(class_ids))] if class_agnostic else [np.nonzero(class_ids == c)[0] for c in np.unique(class_ids)]
    for idx in groups:
        for k in nms(xyxy[idx], scores[idx], iou_threshold, max_detections):
            i = idx[k]
            result.append(RawBox(*(float(v) for v in xyxy[i]), score=float(scores[i]), class_id=int(class_ids[i])))
    result.sort(key=lambda b: -b.score)
    return result[:max_detections]


def ssd_order_from_names(names: Sequence[str]) -> tuple[str, ...] | None:
    """What each output holds (`SSD_ROLES` names, in model order) when all four output tensors
    carry TFLite_Detection_PostProcess's own names (boxes, ":1" classes, ":2" scores, ":3"
    count), whatever order the model lists them in; None when they do not (a TF2 export's
    "StatefulPartitionedCall:N" names say nothing about which output is which)."""
    if len(names) != len(SSD_ROLES):
        return None
    roles = []
    for name in names:
        match = _SSD_NAME.search(str(name))
        if match is None:
            return None
        index = int(match.group(1) or 0)
        if index >= len(SSD_ROLES):
            return None
        roles.append(SSD_ROLES[index])
    return tuple(roles) if len(set(roles)) == len(SSD_ROLES) else None


def ssd_shape_problem(shapes: Sequence[tuple[int, ...]], order: Sequence[str] | None = None) -> str:
    """Why `shapes` cannot be TFLite_Detection_PostProcess's outputs -- boxes [1, N, 4], classes
    [1, N], scores [1, N] and count [1], in any order, or in `order` when given -- or ''."""
    shapes = [tuple(int(v) for v in s) for s in shapes]
    expected = "boxes [1, N, 4], classes [1, N], scores [1, N] and count [1]"
    if len(shapes) != len(SSD_ROLES):
        return f"expected 4 outputs ({expected}), got {len(shapes)}"
    if order is not None:
        roles = dict(zip(order, shapes))
        boxes = roles.get("boxes", ())
        if len(boxes) != 3 or boxes[0] != 1 or boxes[2] != 4:
            return f"output.params.order puts the boxes at an output of shape {list(boxes)}, expected [1, N, 4]"
        for role in ("classes", "scores"):
            if roles.get(role) != (1, boxes[1]):
                return (f"output.params.order puts the {role} at an output of shape {list(roles.get(role, ()))}, "
                        f"expected [1, {boxes[1]}] (N from the boxes)")
        if roles.get("count") not in ((1,), ()):
            return f"output.params.order puts the count at an output of shape {list(roles.get('count', ()))}, expected [1]"
        return ""
    boxes = [s for s in shapes if len(s) == 3 and s[0] == 1 and s[2] == 4]
    if len(boxes) != 1:
        return f"expected one boxes output [1, N, 4] ({expected}), found {len(boxes)}"
    rest = list(shapes)
    rest.remove(boxes[0])
    count = [s for s in rest if s in ((1,), ())]
    if not count:
        return f"expected one count output [1] ({expected})"
    rest.remove(count[0])
    n = boxes[0][1]
    if rest != [(1, n), (1, n)]:
        return f"expected classes and scores outputs of shape [1, {n}] (N from the boxes), got {[list(s) for s in rest]}"
    return ""


def decode_ssd(
    outputs: list[np.ndarray],
    input_size: tuple[int, int],
    *,
    score_threshold: float = 0.25,
    order: Sequence[str] | None = None,
) -> list[RawBox]:
    """Decode the 4 outputs of TFLite_Detection_PostProcess.

    They are boxes [1, N, 4] as normalised (ymin, xmin, ymax, xmax), classes [1, N],
    scores [1, N] and count [1]. `order`, when known (the manifest's `output.params.order`, or
    `ssd_order_from_names` of the tensors' names), names what each output holds, in model order.
    Otherwise they are told apart by shape: boxes has 4 in its last dimension, count is the 1-D
    tensor of one value, and of the two [1, N] tensors the one with only whole numbers is
    classes. When both are whole (no detection, or detections scored exactly 1.0), the scores
    are the one reading 1.0 for each of the first `count` detections (a score is above 0 and at
    most 1); failing that, the interpreter's documented order: classes before scores.
    """
    if len(outputs) != 4:
        raise ValueError(f"SSD post-process has 4 outputs, got {len(outputs)}")
    arrays = [np.asarray(o, dtype=np.float32) for o in outputs]
    if order is not None:
        if sorted(order) != sorted(SSD_ROLES):
            raise ValueError(f"SSD output order must name each of {SSD_ROLES} once, got {list(order)}")
        roles = dict(zip(order, arrays))
        boxes, classes, scores, count_arr = (roles[r] for r in SSD_ROLES)
        if boxes.ndim != 3 or boxes.shape[-1] != 4:
            raise ValueError(f"SSD output order puts the boxes at an output of shape {list(boxes.shape)}")
    else:
        boxes, classes, scores, count_arr = _ssd_by_shape(arrays)
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


def _ssd_by_shape(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(boxes, classes, scores, count) of the post-process outputs in an unknown order."""
    boxes = next((a for a in arrays if a.ndim == 3 and a.shape[-1] == 4), None)
    # With N = 1 classes and scores are [1, 1] and hold one value too: the count is the one
    # of at most one dimension, and any size-1 tensor only for a model that shapes it otherwise.
    single = [a for a in arrays if a is not boxes and a.size == 1]
    count_arr = next((a for a in single if a.ndim <= 1), single[0] if single else None)
    rest = [a for a in arrays if a is not boxes and a is not count_arr]
    if boxes is None or count_arr is None or len(rest) != 2:
        raise ValueError("SSD outputs must be boxes [1,N,4], classes [1,N], scores [1,N] and count [1]")
    whole = [bool(np.all(np.equal(np.mod(a, 1), 0))) for a in rest]
    if whole[0] != whole[1]:
        classes, scores = rest if whole[0] else rest[::-1]
        return boxes, classes, scores, count_arr
    # Both whole: a detection's score is above 0 and at most 1, so here exactly 1.0; a class id
    # of 0 or above 1 among the detections gives the classes away. Where both read 1.0 for every
    # detection they hold the same values, and either way round decodes alike.
    count = max(0, min(int(count_arr.reshape(-1)[0]), rest[0].size))
    ones = [bool(np.all(a.reshape(-1)[:count] == 1.0)) for a in rest]
    if count and ones[0] != ones[1]:
        scores, classes = rest if ones[0] else rest[::-1]
        return boxes, classes, scores, count_arr
    classes, scores = rest  # the interpreter's documented order: boxes, classes, scores, count
    return boxes, classes, scores, count_arr
