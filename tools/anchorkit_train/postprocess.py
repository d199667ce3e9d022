"""Spec-driven post-processing of raw head outputs, mmdet >= 2.18 rule
(`reference/mmdet-inference.md` section 4.1, NMS as mmcv `batched_nms` section 4.2).

Plain numpy float32, one image at a time. Used for evaluation and as the oracle the Rust
`anchorkit detect` output is compared with.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .anchors import MAX_RATIO, base_anchors


def _base_anchors_np(prior: dict[str, Any], level: int, stride: int) -> np.ndarray:
    if prior["type"] == "anchors":
        return base_anchors(
            stride,
            prior["octave_base_scale"],
            prior["scales_per_octave"],
            prior["ratios"],
        ).numpy()
    wh = np.asarray(prior["per_level"][level], np.float32)
    return np.stack(
        [-0.5 * wh[:, 0], -0.5 * wh[:, 1], 0.5 * wh[:, 0], 0.5 * wh[:, 1]], 1
    ).astype(np.float32)


def _grid(base: np.ndarray, stride: int, h: int, w: int) -> np.ndarray:
    sx = np.arange(w, dtype=np.float32) * np.float32(stride)
    sy = np.arange(h, dtype=np.float32) * np.float32(stride)
    yy, xx = np.meshgrid(sy, sx, indexing="ij")
    shifts = np.stack([xx.ravel(), yy.ravel(), xx.ravel(), yy.ravel()], 1)
    return (base[None] + shifts[:, None]).reshape(-1, 4)


def _decode_delta(
    anchors: np.ndarray, d: np.ndarray, stds: list[float], max_shape: tuple[int, int]
) -> np.ndarray:
    d = d * np.asarray(stds, np.float32)
    px = (anchors[:, 0] + anchors[:, 2]) * np.float32(0.5)
    py = (anchors[:, 1] + anchors[:, 3]) * np.float32(0.5)
    pw = anchors[:, 2] - anchors[:, 0]
    ph = anchors[:, 3] - anchors[:, 1]
    mr = np.float32(MAX_RATIO)
    dw = np.clip(d[:, 2], -mr, mr)
    dh = np.clip(d[:, 3], -mr, mr)
    gx = px + pw * d[:, 0]
    gy = py + ph * d[:, 1]
    gw = pw * np.exp(dw)
    gh = ph * np.exp(dh)
    h, w = max_shape
    x1 = np.clip(gx - gw * np.float32(0.5), 0, w)
    y1 = np.clip(gy - gh * np.float32(0.5), 0, h)
    x2 = np.clip(gx + gw * np.float32(0.5), 0, w)
    y2 = np.clip(gy + gh * np.float32(0.5), 0, h)
    return np.stack([x1, y1, x2, y2], 1).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float) -> np.ndarray:
    """Greedy NMS as mmcv CPU `nms` (offset 0): suppress when IoU > iou_thr (strict).
    Returns kept indices in descending-score order (stable sort on ties)."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(len(boxes), bool)
    keep = []
    for ii, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[ii + 1 :]
        rest = rest[~suppressed[rest]]
        if rest.size == 0:
            continue
        w = np.maximum(
            np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
        )
        h = np.maximum(
            np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
        )
        inter = w * h
        ovr = inter / (area[i] + area[rest] - inter)
        suppressed[rest[ovr > iou_thr]] = True
    return np.asarray(keep, dtype=np.int64)


def postprocess(
    spec: dict[str, Any],
    outputs: dict[str, np.ndarray],
    img_shape: tuple[int, int],
    scale_factor: tuple[float, float],
    exact: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detections of one image from raw outputs (`name -> [1, K, H, W]`).

    Returns `(boxes [n, 4] in original pixels, scores [n], labels [n])`, sorted by score.
    Rule (section 4.1): per level, sigmoid; keep (prior, class) pairs with score > score_thr;
    top `nms_pre` pairs; decode with the resized unpadded `img_shape` clamp; concatenate;
    divide by float32 scale factors; multiply centerness (ATSS/FCOS, after the threshold);
    class-aware NMS via the offset trick; first `max_per_img`. `exact=False` uses
    torchvision's C++ NMS (same IoU rule, tie order may differ) for fast training-time eval.
    """
    head, pp = spec["head"], spec["postprocess"]
    c = len(spec["classes"])
    prior = head["priors"]
    coder = head["coder"]
    all_b, all_s, all_l = [], [], []
    for li, lvl in enumerate(head["levels"]):
        stride = int(lvl["stride"])
        cls = outputs[lvl["cls"]][0]
        reg = outputs[lvl["reg"]][0]
        _, h, w = cls.shape
        a = cls.shape[0] // c
        scores = cls.reshape(a, c, h, w).transpose(2, 3, 0, 1).reshape(-1, c)
        if head["score"] == "sigmoid":
            scores = (1.0 / (1.0 + np.exp(-scores.astype(np.float32)))).astype(
                np.float32
            )
        deltas = reg.reshape(a, 4, h, w).transpose(2, 3, 0, 1).reshape(-1, 4)
        rows, cols = np.nonzero(scores > pp["score_thr"])
        sc = scores[rows, cols]
        order = np.argsort(-sc, kind="stable")[: pp["nms_pre"]]
        rows, cols, sc = rows[order], cols[order], sc[order]
        if coder["type"] == "delta_xywh":
            anchors = _grid(_base_anchors_np(prior, li, stride), stride, h, w)
            boxes = _decode_delta(anchors[rows], deltas[rows], coder["stds"], img_shape)
        else:
            off = float(prior["offset"])
            yy, xx = np.divmod(rows, w)
            px = ((xx + off) * stride).astype(np.float32)
            py = ((yy + off) * stride).astype(np.float32)
            d = deltas[rows] * (
                np.float32(stride)
                if coder.get("scale_by_stride", False)
                else np.float32(1)
            )
            hh, ww = img_shape
            boxes = np.stack(
                [
                    np.clip(px - d[:, 0], 0, ww),
                    np.clip(py - d[:, 1], 0, hh),
                    np.clip(px + d[:, 2], 0, ww),
                    np.clip(py + d[:, 3], 0, hh),
                ],
                1,
            ).astype(np.float32)
        if head.get("centerness", False):
            ctr = (
                outputs[lvl["centerness"]][0]
                .reshape(a, h, w)
                .transpose(1, 2, 0)
                .reshape(-1)
            )
            ctr = (1.0 / (1.0 + np.exp(-ctr.astype(np.float32)))).astype(np.float32)
            sc = sc * ctr[rows]
        all_b.append(boxes)
        all_s.append(sc.astype(np.float32))
        all_l.append(cols)
    boxes = np.concatenate(all_b) if all_b else np.zeros((0, 4), np.float32)
    scores = np.concatenate(all_s) if all_s else np.zeros(0, np.float32)
    labels = np.concatenate(all_l) if all_l else np.zeros(0, np.int64)
    sf = np.array(
        [scale_factor[0], scale_factor[1], scale_factor[0], scale_factor[1]], np.float32
    )
    boxes = boxes / sf
    if spec.get("postprocess", {}).get("min_bbox_size") is not None:
        m = float(pp["min_bbox_size"])
        ok = ((boxes[:, 2] - boxes[:, 0]) > m) & ((boxes[:, 3] - boxes[:, 1]) > m)
        boxes, scores, labels = boxes[ok], scores[ok], labels[ok]
    if boxes.shape[0] == 0:
        return boxes, scores, labels
    if pp.get("class_agnostic", False):
        nb = boxes
    else:
        nb = (
            boxes + (labels.astype(np.float32) * (boxes.max() + np.float32(1)))[:, None]
        )
    if exact:
        keep = nms(nb, scores, float(pp["iou_thr"]))
    else:
        import torch
        import torchvision

        keep = torchvision.ops.nms(
            torch.from_numpy(nb), torch.from_numpy(scores), float(pp["iou_thr"])
        ).numpy()
    keep = keep[: pp["max_per_img"]]
    return boxes[keep], scores[keep], labels[keep]
