"""Anchor/point generation and the DeltaXYWH box coder, numerically as mmdetection.

Sources: mmdet `mmdet/core/anchor/anchor_generator.py` (v2) /
`mmdet/models/task_modules/prior_generators/anchor_generator.py` (v3) and
`mmdet/core/bbox/coder/delta_xywh_bbox_coder.py`.
All boxes are `(x1, y1, x2, y2)` in input pixels, float32.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

#: `|ln(16/1000)|`, the log-size clamp of `delta2bbox` (`delta2bbox`, `max_ratio`).
MAX_RATIO = abs(math.log(16.0 / 1000.0))


def base_anchors(
    stride: int, octave_base_scale: float, scales_per_octave: int, ratios: list[float]
) -> Tensor:
    """Base anchors of one level, `[A, 4]` float32, centred at (0, 0), A = len(ratios) * S.

    mmdet `AnchorGenerator.gen_single_level_base_anchors` with `scale_major=True`,
    `center_offset=0`: octave scales in float64, ratios as h/w, index `r * S + s`
    (`anchor_generator.py`).
    """
    octave = np.array([2 ** (i / scales_per_octave) for i in range(scales_per_octave)])
    scales = torch.tensor(octave * octave_base_scale, dtype=torch.float32)
    r = torch.tensor(ratios, dtype=torch.float32)
    h_ratios = torch.sqrt(r)
    w_ratios = 1 / h_ratios
    ws = (stride * w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (stride * h_ratios[:, None] * scales[None, :]).reshape(-1)
    return torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], dim=-1)


def explicit_base_anchors(wh: Tensor) -> Tensor:
    """Base anchors `[A, 4]` from explicit shapes `wh` `[A, 2]` (w, h in pixels), centre (0, 0).

    Differentiable in `wh` (used by learned anchors, spec `PriorSpec::ExplicitAnchors`).
    """
    w, h = wh[:, 0], wh[:, 1]
    return torch.stack([-0.5 * w, -0.5 * h, 0.5 * w, 0.5 * h], dim=-1)


def grid_anchors(base: Tensor, stride: int, height: int, width: int) -> Tensor:
    """All anchors of one level, `[H*W*A, 4]`, flat index `(y*W + x)*A + a`.

    Shifts are `(x*stride, y*stride)` (centre offset 0), as `single_level_grid_priors`.
    """
    sx = torch.arange(width, dtype=torch.float32, device=base.device) * stride
    sy = torch.arange(height, dtype=torch.float32, device=base.device) * stride
    yy, xx = torch.meshgrid(sy, sx, indexing="ij")
    xx, yy = xx.reshape(-1), yy.reshape(-1)
    shifts = torch.stack([xx, yy, xx, yy], dim=-1)
    return (base[None, :, :] + shifts[:, None, :]).reshape(-1, 4)


def grid_points(stride: int, height: int, width: int, offset: float = 0.5) -> Tensor:
    """Points `[H*W, 2]` at `((x + offset)*stride, (y + offset)*stride)`, index `y*W + x`.

    With offset 0.5 and an even stride this equals Pseudo-IoU's `x*s + s//2` (`piou_head.py`
    `_get_points_single`).
    """
    sx = (torch.arange(width, dtype=torch.float32) + offset) * stride
    sy = (torch.arange(height, dtype=torch.float32) + offset) * stride
    yy, xx = torch.meshgrid(sy, sx, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)


def bbox2delta(anchors: Tensor, gts: Tensor, stds: tuple[float, ...]) -> Tensor:
    """Encode `gts` `[N, 4]` against `anchors` `[N, 4]` to normalized deltas `[N, 4]`.

    mmdet `bbox2delta` with means 0: `dx = (gx-px)/pw/std0`, `dw = ln(gw/pw)/std2`
    (`delta_xywh_bbox_coder.py`). Differentiable in both arguments.
    """
    px = (anchors[:, 0] + anchors[:, 2]) * 0.5
    py = (anchors[:, 1] + anchors[:, 3]) * 0.5
    pw = anchors[:, 2] - anchors[:, 0]
    ph = anchors[:, 3] - anchors[:, 1]
    gx = (gts[:, 0] + gts[:, 2]) * 0.5
    gy = (gts[:, 1] + gts[:, 3]) * 0.5
    gw = gts[:, 2] - gts[:, 0]
    gh = gts[:, 3] - gts[:, 1]
    d = torch.stack(
        [(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], dim=-1
    )
    return d / d.new_tensor(stds)


def delta2bbox(
    anchors: Tensor,
    deltas: Tensor,
    stds: tuple[float, ...],
    max_shape: tuple[int, int] | None = None,
) -> Tensor:
    """Decode raw deltas `[N, 4]` on `anchors` `[N, 4]` to boxes `[N, 4]` (mmdet `delta2bbox`).

    Denormalize by `stds`, clamp dw/dh to `+-MAX_RATIO`, `gw = pw*exp(dw)`; if `max_shape`
    `(h, w)` is given clamp x to [0, w] and y to [0, h] (`delta2bbox`).
    """
    d = deltas * deltas.new_tensor(stds)
    px = (anchors[:, 0] + anchors[:, 2]) * 0.5
    py = (anchors[:, 1] + anchors[:, 3]) * 0.5
    pw = anchors[:, 2] - anchors[:, 0]
    ph = anchors[:, 3] - anchors[:, 1]
    dw = d[:, 2].clamp(-MAX_RATIO, MAX_RATIO)
    dh = d[:, 3].clamp(-MAX_RATIO, MAX_RATIO)
    gx = px + pw * d[:, 0]
    gy = py + ph * d[:, 1]
    gw = pw * torch.exp(dw)
    gh = ph * torch.exp(dh)
    out = torch.stack(
        [gx - gw * 0.5, gy - gh * 0.5, gx + gw * 0.5, gy + gh * 0.5], dim=-1
    )
    if max_shape is not None:
        h, w = max_shape
        out = torch.stack(
            [
                out[:, 0].clamp(0, w),
                out[:, 1].clamp(0, h),
                out[:, 2].clamp(0, w),
                out[:, 3].clamp(0, h),
            ],
            dim=-1,
        )
    return out


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Plain IoU matrix `[N, M]` of boxes `a` `[N, 4]` and `b` `[M, 4]` (no +1; mmdet
    `BboxOverlaps2D`), with union clamped at `eps = 1e-6` as mmdet `bbox_overlaps`."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-6)
    return inter / union
