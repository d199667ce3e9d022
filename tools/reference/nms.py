"""NMS as mmcv and onnxruntime do it.

- `batched_nms_mmcv`: `mmcv/ops/nms.py` `batched_nms` (class-aware via the offset trick in
  float32) + the CPU kernel `mmcv/ops/csrc/pytorch/cpu/nms.cpp` (areas on the offset boxes,
  suppress when `inter / (area_i + area_j - inter) > thr`, strict).
- `nms_onnxruntime`: onnxruntime `NonMaxSuppression` for one class
  (`non_max_suppression_helper.h` `SuppressByIOU`): `score > score_threshold`, corners
  min/max-normalised, never suppress on an empty intersection or a non-positive area.

Ties in score are broken by ascending input index (a stable sort; torch's sort and onnxruntime's
heap do not specify an order).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F32 = np.float32
Arr = npt.NDArray[np.float32]
IntArr = npt.NDArray[np.int64]


def stable_desc_order(scores: Arr) -> IntArr:
    """Indices sorting `scores` descending, ties by ascending index."""
    return np.argsort(-scores, kind="stable").astype(np.int64)


def nms_mmcv(boxes: Arr, scores: Arr, iou_thr: float) -> IntArr:
    """mmcv CPU `nms` (offset 0) on `[N, 4]` f32 boxes; returns kept indices in score order."""
    n = boxes.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2 = (boxes[:, k].astype(F32) for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    order = stable_desc_order(scores.astype(F32))
    thr = F32(iou_thr)
    suppressed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    for pos in range(n):
        i = int(order[pos])
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[pos + 1 :]
        rest = rest[~suppressed[rest]]
        if rest.size == 0:
            continue
        w = np.maximum(
            F32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
        )
        h = np.maximum(
            F32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
        )
        inter = w * h
        with np.errstate(divide="ignore", invalid="ignore"):
            ovr = inter / (
                areas[i] + areas[rest] - inter
            )  # 0/0 = NaN never suppresses, as in C++
        suppressed[rest[ovr > thr]] = True
    return np.asarray(keep, dtype=np.int64)


def batched_nms_mmcv(
    boxes: Arr,
    scores: Arr,
    labels: IntArr,
    iou_thr: float,
    class_agnostic: bool = False,
) -> IntArr:
    """mmcv `batched_nms`: offsets `label * (max(boxes) + 1)` in f32 added to the boxes, one NMS.

    Returns kept indices into the inputs, sorted by score descending (ties by index).
    """
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    b = boxes.astype(F32)
    if not class_agnostic:
        max_coord = b.max()
        offsets = labels.astype(F32) * (max_coord + F32(1))
        b = b + offsets[:, None]
    return nms_mmcv(b, scores, iou_thr)


def _ort_suppress(box_i: Arr, boxes: Arr, thr: np.float32) -> npt.NDArray[np.bool_]:
    ax1, ax2 = min(box_i[0], box_i[2]), max(box_i[0], box_i[2])
    ay1, ay2 = min(box_i[1], box_i[3]), max(box_i[1], box_i[3])
    bx1, bx2 = (
        np.minimum(boxes[:, 0], boxes[:, 2]),
        np.maximum(boxes[:, 0], boxes[:, 2]),
    )
    by1, by2 = (
        np.minimum(boxes[:, 1], boxes[:, 3]),
        np.maximum(boxes[:, 1], boxes[:, 3]),
    )
    iw = np.maximum(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), F32(0))
    ih = np.maximum(np.minimum(ay2, by2) - np.maximum(ay1, by1), F32(0))
    inter = iw * ih
    area_a = (ax2 - ax1) * (ay2 - ay1)
    area_b = (bx2 - bx1) * (by2 - by1)
    union = area_a + area_b - inter
    ok = (inter > 0) & (area_a > 0) & (area_b > 0) & (union > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(ok, inter / np.where(union > 0, union, F32(1)), F32(0))
    return ok & (iou > thr)


def nms_onnxruntime(
    boxes: Arr, scores: Arr, iou_thr: float, score_thr: float, max_per_class: int
) -> IntArr:
    """onnxruntime `NonMaxSuppression` for one class: kept indices in selection order."""
    b = boxes.astype(F32)
    s = scores.astype(F32)
    cand = np.nonzero(s > F32(score_thr))[0]
    cand = cand[stable_desc_order(s[cand])]
    thr = F32(iou_thr)
    keep: list[int] = []
    alive = np.ones(cand.size, dtype=bool)
    for pos in range(cand.size):
        if not alive[pos]:
            continue
        i = int(cand[pos])
        keep.append(i)
        if len(keep) >= max_per_class:
            break
        later = np.arange(pos + 1, cand.size)
        later = later[alive[later]]
        if later.size:
            alive[later[_ort_suppress(b[i], b[cand[later]], thr)]] = False
    return np.asarray(keep, dtype=np.int64)
