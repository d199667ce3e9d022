"""Box coders, float32, each step a separate elementwise op as in mmdet
(`mmdet/core/bbox/coder/delta_xywh_bbox_coder.py`, `mmdet/core/bbox/transforms.py`).

- `delta2bbox`: `mmdet/core/bbox/coder/delta_xywh_bbox_coder.py` (`delta2bbox`);
- `distance2bbox`: `mmdet/core/bbox/transforms.py` (`distance2bbox`);
- `distribution_to_distance`: the GFL `Integral` (`mmdet/models/dense_heads/gfl_head.py`):
  per side, softmax over `reg_max + 1` bins, expected bin index.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

F32 = np.float32
Arr = npt.NDArray[np.float32]


def clip_boxes(boxes: Arr, max_w: float, max_h: float) -> Arr:
    """Clamps x to `[0, max_w]` and y to `[0, max_h]` (elementwise; boxes may collapse)."""
    out = boxes.copy()
    out[:, 0::2] = np.clip(out[:, 0::2], F32(0), F32(max_w))
    out[:, 1::2] = np.clip(out[:, 1::2], F32(0), F32(max_h))
    return out


def delta2bbox(
    anchors: Arr,
    deltas: Arr,
    means: tuple[float, float, float, float],
    stds: tuple[float, float, float, float],
    max_wh: tuple[float, float] | None,
    wh_ratio_clip: float = 16.0 / 1000.0,
) -> Arr:
    """Decodes `[N, 4]` raw deltas against `[N, 4]` anchors (xyxy, no +1) into `[N, 4]` boxes.

    `d = raw * std + mean`; centre `p = (a1 + a2) * 0.5`, size `a2 - a1`; `dw, dh` clamped to
    `+-|ln(wh_ratio_clip)|` (as f32); `g = p + size * dxy`, `gwh = size * exp(dwh)`;
    corners `g -/+ gwh * 0.5`; clamped to `max_wh = (W, H)` of the resized image if given.
    """
    d = (
        deltas.astype(F32) * np.asarray(stds, dtype=F32)[None, :]
        + np.asarray(means, dtype=F32)[None, :]
    )
    pxy = (anchors[:, :2] + anchors[:, 2:]) * F32(0.5)
    pwh = anchors[:, 2:] - anchors[:, :2]
    dxy_wh = pwh * d[:, :2]
    max_ratio = F32(abs(math.log(wh_ratio_clip)))
    dwh = np.clip(d[:, 2:], -max_ratio, max_ratio)
    gxy = pxy + dxy_wh
    gwh = pwh * np.exp(dwh)
    boxes = np.concatenate([gxy - gwh * F32(0.5), gxy + gwh * F32(0.5)], axis=1).astype(
        F32
    )
    if max_wh is not None:
        boxes = clip_boxes(boxes, max_wh[0], max_wh[1])
    return boxes


def distance2bbox(
    points: Arr, distances: Arr, max_wh: tuple[float, float] | None
) -> Arr:
    """Boxes `(px - l, py - t, px + r, py + b)` from `[N, 2]` points and `[N, 4]` distances."""
    boxes = np.stack(
        [
            points[:, 0] - distances[:, 0],
            points[:, 1] - distances[:, 1],
            points[:, 0] + distances[:, 2],
            points[:, 1] + distances[:, 3],
        ],
        axis=1,
    ).astype(F32)
    if max_wh is not None:
        boxes = clip_boxes(boxes, max_wh[0], max_wh[1])
    return boxes


def distribution_to_distance(reg: Arr, reg_max: int) -> Arr:
    """GFL integral: `[N, 4*(reg_max+1)]` logits -> `[N, 4]` expected bin index per side.

    Softmax over each side's `reg_max + 1` bins (max-subtracted, f32), then the dot product
    with `0, 1, ..., reg_max`.
    """
    n = reg.shape[0]
    x = reg.astype(F32).reshape(n * 4, reg_max + 1)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    proj = np.arange(reg_max + 1, dtype=F32)
    return (p @ proj).astype(F32).reshape(n, 4)
