"""Label assignment: ATSS, max-IoU (RetinaNet), FCOS centre sampling and Pseudo-IoU (points).

Exactly as the upstream files do:
mmdet `mmdet/core/bbox/assigners/atss_assigner.py`, `.../max_iou_assigner.py`,
mmdet `mmdet/models/dense_heads/fcos_head.py` (`FCOSHead._get_target_single`), and
SHI-Labs Pseudo-IoU `mmdet/models/dense_heads/piou_head.py`.
All functions work on one image; `-1` / `0` conventions are documented per function.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .anchors import box_iou

INF = 1e8


def atss_assign(
    anchors: Tensor, num_per_level: list[int], gts: Tensor, topk: int = 9
) -> tuple[Tensor, Tensor]:
    """ATSS assignment (Zhang et al. 2020; mmdet `ATSSAssigner.assign`).

    Args:
        anchors: `[N, 4]` all levels concatenated. num_per_level: anchors per level.
        gts: `[G, 4]` ground-truth boxes. topk: k candidates per level by centre distance.
    Returns:
        `(assigned, max_iou)`: `assigned[j]` is the gt index (0-based) of anchor j or -1 for
        background; `max_iou[j]` its IoU with that gt (or -inf for background).

    Per gt: k nearest anchor centres per level (Euclidean), thr = mean + std (unbiased) of
    their IoUs, positive if IoU >= thr and the anchor centre is inside the gt with margin
    `min(l, t, r, b) > 0.01`; an anchor positive for several gts takes the argmax IoU
    (first index on ties).
    """
    n, g = anchors.shape[0], gts.shape[0]
    if g == 0 or n == 0:
        return anchors.new_full((n,), -1, dtype=torch.long), anchors.new_full(
            (n,), -float("inf")
        )
    overlaps = box_iou(anchors, gts)  # [N, G]
    gcx = (gts[:, 0] + gts[:, 2]) / 2.0
    gcy = (gts[:, 1] + gts[:, 3]) / 2.0
    acx = (anchors[:, 0] + anchors[:, 2]) / 2.0
    acy = (anchors[:, 1] + anchors[:, 3]) / 2.0
    dist = (
        (acx[:, None] - gcx[None, :]) ** 2 + (acy[:, None] - gcy[None, :]) ** 2
    ).sqrt()
    cand = []
    start = 0
    for cnt in num_per_level:
        k = min(topk, cnt)
        _, idx = dist[start : start + cnt].topk(k, dim=0, largest=False)
        cand.append(idx + start)
        start += cnt
    cand_idx = torch.cat(cand, dim=0)  # [L*k, G]
    cols = torch.arange(g, device=anchors.device)
    cand_ov = overlaps[cand_idx, cols[None, :]]
    thr = cand_ov.mean(0) + cand_ov.std(0)  # torch.std is unbiased (n - 1)
    is_pos = cand_ov >= thr[None, :]
    cx = acx[cand_idx]
    cy = acy[cand_idx]
    l_ = cx - gts[:, 0][None, :]
    t_ = cy - gts[:, 1][None, :]
    r_ = gts[:, 2][None, :] - cx
    b_ = gts[:, 3][None, :] - cy
    inside = torch.stack([l_, t_, r_, b_], dim=0).min(dim=0).values > 0.01
    is_pos = is_pos & inside
    ov_inf = torch.full((g, n), -float("inf"), device=anchors.device)
    flat = (cand_idx + cols[None, :] * n).reshape(-1)[is_pos.reshape(-1)]
    ov_inf.view(-1)[flat] = overlaps.t().contiguous().view(-1)[flat]
    max_ov, argmax = ov_inf.t().max(dim=1)
    assigned = torch.where(max_ov != -float("inf"), argmax, torch.full_like(argmax, -1))
    return assigned, max_ov


def max_iou_assign(
    anchors: Tensor, gts: Tensor, pos_iou_thr: float = 0.5, neg_iou_thr: float = 0.4
) -> Tensor:
    """RetinaNet max-IoU assignment (mmdet `MaxIoUAssigner`, min_pos_iou=0,
    gt_max_assign_all=True, match_low_quality=True; mmdet `retinanet_r50_fpn.py`).

    Returns `[N]` long: gt index >= 0 for positives, -1 background, -2 ignored
    (neg_iou_thr <= IoU < pos_iou_thr). Each gt also takes every anchor whose IoU equals
    that gt's maximum IoU.
    """
    n, g = anchors.shape[0], gts.shape[0]
    out = anchors.new_full((n,), -2, dtype=torch.long)
    if g == 0:
        out.fill_(-1)
        return out
    ov = box_iou(gts, anchors)  # [G, N]
    max_ov, argmax = ov.max(dim=0)
    out[(max_ov >= 0) & (max_ov < neg_iou_thr)] = -1
    pos = max_ov >= pos_iou_thr
    out[pos] = argmax[pos]
    gt_max, _ = ov.max(dim=1)
    for i in range(g):
        if gt_max[i] >= 0.0:
            out[ov[i] == gt_max[i]] = i
    return out


def pseudo_iou(ltrb: Tensor) -> Tensor:
    """Pseudo-IoU of point targets `ltrb` `[..., 4]` (l, t, r, b distances to the gt sides).

    IoU between the gt and a same-size box centred at the point (Li et al. 2021, `piou_head.py`):
    `inter = (min(l, w/2) + min(r, w/2)) * (min(t, h/2) + min(b, h/2))`,
    `PIoU = inter / (2*w*h - inter)` with `w = l + r`, `h = t + b`.
    """
    l_, t_, r_, b_ = ltrb.unbind(-1)
    w = l_ + r_
    h = t_ + b_
    inter = (torch.minimum(l_, w / 2) + torch.minimum(r_, w / 2)) * (
        torch.minimum(t_, h / 2) + torch.minimum(b_, h / 2)
    )
    return inter / (2 * w * h - inter)


def _point_gt_ltrb(points: Tensor, gts: Tensor) -> Tensor:
    """Distances `[N, G, 4]` (left, top, right, bottom) from each point `[N, 2]` to the sides
    of each gt `[G, 4]` (mmdet `FCOSHead._get_target_single`, `bbox_targets`)."""
    x = points[:, 0][:, None]
    y = points[:, 1][:, None]
    return torch.stack(
        [x - gts[:, 0], y - gts[:, 1], gts[:, 2] - x, gts[:, 3] - y], dim=-1
    )


def _in_regress_range(
    ltrb: Tensor,
    points: Tensor,
    level_of_point: Tensor,
    regress_ranges: list[tuple[float, float]],
) -> Tensor:
    """`[N, G]` bool: `lo <= max(l, t, r, b) <= hi` with `(lo, hi)` the regress range of the
    point's level (mmdet `FCOSHead._get_target_single`, `inside_regress_range`)."""
    max_side = ltrb.max(dim=-1).values
    rr = points.new_tensor(regress_ranges)[level_of_point]  # [N, 2]
    return (max_side >= rr[:, 0:1]) & (max_side <= rr[:, 1:2])


def _smallest_area_candidate(gts: Tensor, candidate: Tensor) -> tuple[Tensor, Tensor]:
    """Among each point's candidate gts (`candidate` `[N, G]` bool) the smallest-area one
    (first index on ties, torch `min`; mmdet `FCOSHead._get_target_single`).

    Returns `(assigned [N] long gt index or -1, idx [N] argmin index, also for -1 rows)`."""
    n, g = candidate.shape
    areas = (
        ((gts[:, 2] - gts[:, 0]) * (gts[:, 3] - gts[:, 1]))[None, :]
        .expand(n, g)
        .clone()
    )
    areas[~candidate] = INF
    min_area, idx = areas.min(dim=1)
    assigned = torch.where(min_area == INF, torch.full_like(idx, -1), idx)
    return assigned, idx


def piou_assign(
    points: Tensor,
    level_of_point: Tensor,
    gts: Tensor,
    regress_ranges: list[tuple[float, float]],
    piou_thr: float = 0.4,
) -> tuple[Tensor, Tensor]:
    """FCOS candidates filtered by Pseudo-IoU (PIOUHead `_get_target_single`).

    Args:
        points: `[N, 2]`; level_of_point: `[N]` level index; gts: `[G, 4]`;
        regress_ranges: per level `(lo, hi)`: candidate if `lo <= max(l,t,r,b) <= hi`.
    Returns:
        `(assigned [N] long gt index or -1, ltrb [N, 4] distances to the assigned gt)`.
        Candidates: point strictly inside the gt and max side distance in the level range;
        the smallest-area gt wins; then PIoU <= piou_thr turns a positive into background.
    """
    n, g = points.shape[0], gts.shape[0]
    if g == 0:
        return points.new_full((n,), -1, dtype=torch.long), points.new_zeros((n, 4))
    ltrb = _point_gt_ltrb(points, gts)
    inside = ltrb.min(dim=-1).values > 0
    in_range = _in_regress_range(ltrb, points, level_of_point, regress_ranges)
    assigned, idx = _smallest_area_candidate(gts, inside & in_range)
    sel = ltrb[torch.arange(n), idx]
    piou = pseudo_iou(sel)
    assigned = torch.where(
        (assigned >= 0) & (piou <= piou_thr), torch.full_like(idx, -1), assigned
    )
    return assigned, sel


def fcos_assign(
    points: Tensor,
    level_of_point: Tensor,
    strides: tuple[int, ...],
    gts: Tensor,
    regress_ranges: list[tuple[float, float]],
    radius: float = 1.5,
) -> tuple[Tensor, Tensor]:
    """FCOS assignment with centre sampling (Tian et al. 2019; mmdet
    `FCOSHead._get_target_single` with `center_sampling=True`, `center_sample_radius=1.5`).

    Args:
        points: `[N, 2]` (x, y) in input pixels; level_of_point: `[N]` level index into
        `strides`; gts: `[G, 4]`; regress_ranges: per level `(lo, hi)` in input pixels.
    Returns:
        `(assigned [N] long gt index or -1, ltrb [N, 4] distances to the assigned gt)`.

    A point is a candidate for a gt if it lies strictly inside the centre region: the box
    `centre +- radius * stride` (stride of the point's level) clipped to the gt box, and
    `lo <= max(l, t, r, b) <= hi` with the distances to the full gt box; among several
    candidates' gts the smallest area wins (first index on ties, torch `min`).
    """
    n, g = points.shape[0], gts.shape[0]
    if g == 0:
        return points.new_full((n,), -1, dtype=torch.long), points.new_zeros((n, 4))
    ltrb = _point_gt_ltrb(points, gts)
    cx = (gts[:, 0] + gts[:, 2]) / 2
    cy = (gts[:, 1] + gts[:, 3]) / 2
    r = (points.new_tensor(strides)[level_of_point] * radius)[:, None]  # [N, 1]
    x = points[:, 0][:, None]
    y = points[:, 1][:, None]
    x0 = torch.maximum(cx[None, :] - r, gts[:, 0][None, :])
    y0 = torch.maximum(cy[None, :] - r, gts[:, 1][None, :])
    x1 = torch.minimum(cx[None, :] + r, gts[:, 2][None, :])
    y1 = torch.minimum(cy[None, :] + r, gts[:, 3][None, :])
    in_centre = (
        torch.stack([x - x0, y - y0, x1 - x, y1 - y], dim=-1).min(dim=-1).values > 0
    )
    in_range = _in_regress_range(ltrb, points, level_of_point, regress_ranges)
    assigned, idx = _smallest_area_candidate(gts, in_centre & in_range)
    return assigned, ltrb[torch.arange(n), idx]
