"""Training losses per method (mmdet heads named per function).

Model outputs are per-level lists of raw NCHW tensors; `flatten_levels` turns them into
`[B, N, K]` rows in mmdet's `(y*W + x)*A + a` order (`single_level_grid_priors`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .anchors import bbox2delta, box_iou, delta2bbox
from .assigners import atss_assign, fcos_assign, max_iou_assign, piou_assign
from .priors import (
    AnchorPriors,
    ExplicitAnchorPriors,
    LearnedAnchorPriors,
    PointPriors,
)

EPS = 1e-12
ATSS_STDS = (0.1, 0.1, 0.2, 0.2)
FREEANCHOR_STDS = (0.1, 0.1, 0.2, 0.2)
RETINA_STDS = (1.0, 1.0, 1.0, 1.0)


def flatten_levels(maps: list[Tensor], k: int) -> Tensor:
    """`[B, A*K, H, W]` per level -> `[B, sum(H*W*A), K]` (mmdet permute(0,2,3,1))."""
    return torch.cat(
        [m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, k) for m in maps], dim=1
    )


def anchor_delta_targets(
    anchors: Tensor, gts: Tensor, stds: tuple[float, ...]
) -> Tensor:
    """DeltaXYWH regression targets `[N, 4]` of aligned `anchors` and `gts` `[N, 4]` (mmdet
    `DeltaXYWHBBoxCoder.encode`, means 0) in which only `dw = ln(gw / aw) / std`,
    `dh = ln(gh / ah) / std` carry gradient to learned anchor shapes.

    Zhong et al. (WACV 2020, Sec. 3) learn the anchor shape through the width/height terms of
    the localisation loss (in their YOLOv2 form the centre offsets do not involve the anchor
    size at all). With the RetinaNet coder `dx = (gx - ax) / aw` also depends on `aw`: its L1
    gradient `-sign(dx' - dx) * dx` is negative whenever the network under-predicts an offset
    (the usual shrinkage), so every positive pushes its anchor to grow regardless of how well
    the shape fits; the anchor size is therefore detached in dx, dy. Same values as
    `bbox2delta(anchors, gts, stds)`; for fixed anchors the two are identical."""
    xy = bbox2delta(anchors.detach(), gts, stds)[:, :2]
    wh = bbox2delta(anchors, gts, stds)[:, 2:]
    return torch.cat([xy, wh], dim=1)


def sigmoid_focal_loss(
    logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> Tensor:
    """Elementwise sigmoid focal loss (Lin et al. 2017; mmdet `py_sigmoid_focal_loss`)."""
    p = logits.sigmoid()
    pt = (1 - p) * targets + p * (1 - targets)
    w = (alpha * targets + (1 - alpha) * (1 - targets)) * pt.pow(gamma)
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * w


def giou_loss(pred: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    """Elementwise `1 - GIoU` of aligned boxes `[N, 4]` (mmdet `giou_loss`, Rezatofighi 2019)."""
    area_p = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area_t = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    lt = torch.max(pred[:, :2], target[:, :2])
    rb = torch.min(pred[:, 2:], target[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    union = (area_p + area_t - inter).clamp(min=eps)
    iou = inter / union
    elt = torch.min(pred[:, :2], target[:, :2])
    erb = torch.max(pred[:, 2:], target[:, 2:])
    ewh = (erb - elt).clamp(min=0)
    enclose = (ewh[:, 0] * ewh[:, 1]).clamp(min=eps)
    return 1 - (iou - (enclose - union) / enclose)


def smooth_l1(diff: Tensor, beta: float) -> Tensor:
    """Elementwise SmoothL1: `0.5*d^2/beta` if `|d| < beta` else `|d| - 0.5*beta`."""
    d = diff.abs()
    return torch.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)


def centerness_target(centers: Tensor, gts: Tensor) -> Tensor:
    """`sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b))` of centres `[N, 2]` vs boxes `[N, 4]`
    (mmdet `ATSSHead.centerness_target`)."""
    l_ = centers[:, 0] - gts[:, 0]
    t_ = centers[:, 1] - gts[:, 1]
    r_ = gts[:, 2] - centers[:, 0]
    b_ = gts[:, 3] - centers[:, 1]
    lr = torch.stack([l_, r_], 1)
    tb = torch.stack([t_, b_], 1)
    c = (lr.min(1).values / lr.max(1).values) * (tb.min(1).values / tb.max(1).values)
    return torch.sqrt(c.clamp(min=0))


def positive_bag_loss(matched_prob: Tensor, alpha: float = 0.5) -> Tensor:
    """FreeAnchor mean-max bag loss per object (`FreeAnchorRetinaHead.positive_bag_loss`):
    `[G, K]` -> `[G]`.

    `w = 1/clamp(1-p, 1e-12)`, normalised over the bag, `bag = sum(w*p)`,
    `alpha * BCE(bag, 1)` (torch BCE clamps log at -100).
    """
    weight = 1 / torch.clamp(1 - matched_prob, min=EPS)
    weight = weight / weight.sum(dim=1, keepdim=True)
    bag_prob = (weight * matched_prob).sum(dim=1)
    return alpha * F.binary_cross_entropy(
        bag_prob, torch.ones_like(bag_prob), reduction="none"
    )


def negative_bag_loss(
    cls_prob: Tensor, box_prob: Tensor, alpha: float = 0.5, gamma: float = 2.0
) -> Tensor:
    """FreeAnchor negative term (`FreeAnchorRetinaHead.negative_bag_loss`), summed:
    `q = clamp(cls*(1-box), 1e-12, 1-1e-12)`, `(1-alpha) * q^gamma * BCE(q, 0)`."""
    q = (cls_prob * (1 - box_prob)).clamp(min=EPS, max=1 - EPS)
    return (1 - alpha) * (
        q.pow(gamma) * F.binary_cross_entropy(q, torch.zeros_like(q), reduction="none")
    ).sum()


def freeanchor_loss(
    cls_logits: Tensor,
    reg: Tensor,
    anchors: Tensor,
    gts: list[Tensor],
    labels: list[Tensor],
    topk: int = 50,
    bbox_thr: float = 0.6,
    alpha: float = 0.5,
    gamma: float = 2.0,
    stds: tuple[float, ...] = FREEANCHOR_STDS,
) -> dict[str, Tensor]:
    """FreeAnchor loss (Zhang et al. 2019; mmdet `FreeAnchorRetinaHead.loss`).

    Args: `cls_logits` `[B, N, C]`, `reg` `[B, N, 4]` raw deltas, `anchors` `[N, 4]` (may
    carry gradient for learned anchors), per-image gts `[G, 4]` and labels `[G]`.
    Returns `{"positive_bag_loss", "negative_bag_loss"}`.
    """
    cls_prob = cls_logits.sigmoid()
    num_classes = cls_logits.shape[-1]
    box_probs = []
    pos_losses = []
    num_pos = 0
    for b in range(cls_logits.shape[0]):
        gt, lab = gts[b], labels[b]
        with torch.no_grad():
            if gt.shape[0] == 0:
                box_prob = torch.zeros_like(cls_prob[b])
            else:
                pred_boxes = delta2bbox(anchors.detach(), reg[b].detach(), stds)
                iou_loc = box_iou(gt, pred_boxes)  # [G, N]
                t2 = iou_loc.max(dim=1, keepdim=True).values.clamp(min=bbox_thr + 1e-12)
                obj_prob = ((iou_loc - bbox_thr) / (t2 - bbox_thr)).clamp(0, 1)
                onehot = F.one_hot(lab, num_classes).to(obj_prob.dtype)  # [G, C]
                box_prob = (obj_prob[:, :, None] * onehot[:, None, :]).max(dim=0).values
            box_probs.append(box_prob)
        if gt.shape[0] == 0:
            continue
        num_pos += gt.shape[0]
        with torch.no_grad():
            iou_anchor = box_iou(gt, anchors.detach())
            k = min(topk, anchors.shape[0])
            _, matched = iou_anchor.topk(k, dim=1, sorted=False)  # [G, K]
        matched_cls = cls_prob[b][matched, lab[:, None]]
        m_anchors = anchors[matched.reshape(-1)]
        targets = anchor_delta_targets(
            m_anchors, gt[:, None, :].expand(-1, k, -1).reshape(-1, 4), stds
        )
        preds = reg[b][matched.reshape(-1)]
        l_reg = 0.75 * smooth_l1(preds - targets, beta=0.11).sum(-1).reshape(-1, k)
        matched_box = torch.exp(-l_reg)
        pos_losses.append(positive_bag_loss(matched_cls * matched_box, alpha))
    if pos_losses:
        positive = torch.cat(pos_losses).sum() / max(1, num_pos)
    else:
        positive = reg.sum() * 0
    box_prob_all = torch.stack(box_probs)
    negative = negative_bag_loss(cls_prob, box_prob_all, alpha, gamma) / max(
        1, num_pos * topk
    )
    return {"positive_bag_loss": positive, "negative_bag_loss": negative}


def _positives(
    cls_t: Tensor, assigned: list[Tensor], gts: list[Tensor], labels: list[Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """Positives of a batch from per-image assignments (`assigned[b]` `[N]` long: gt index,
    negative for background/ignored): sets their one-hot class targets to 1 in `cls_t`
    `[B, N, C]` (in place) and returns `(image index [P], prior index [P], assigned gt boxes
    [P, 4])`, image by image, priors in ascending order."""
    bi, pi, gt = [], [], []
    for b, a in enumerate(assigned):
        pos = torch.nonzero(a >= 0).squeeze(1)
        if pos.numel() == 0:
            continue
        cls_t[b, pos, labels[b][a[pos]]] = 1.0
        bi.append(torch.full_like(pos, b))
        pi.append(pos)
        gt.append(gts[b][a[pos]])
    if not pi:
        none = torch.zeros(0, dtype=torch.long)
        return none, none, torch.zeros((0, 4))
    return torch.cat(bi), torch.cat(pi), torch.cat(gt)


def _losses_without_positives(
    loss_cls: Tensor, reg: Tensor, ctr: Tensor
) -> dict[str, Tensor]:
    """Losses of a batch without positives: box and centerness losses are 0, kept in the
    graph of `reg` and `ctr` (mmdet `ATSSHead.loss`, `FCOSHead.loss`)."""
    zero = reg.sum() * 0 + ctr.sum() * 0
    return {"loss_cls": loss_cls, "loss_bbox": zero, "loss_centerness": zero}


def _centerness_weighted_losses(
    loss_cls: Tensor,
    decoded: Tensor,
    gt: Tensor,
    ctr_logits: Tensor,
    ctr_t: Tensor,
    num_pos: float,
    bbox_weight: float,
) -> dict[str, Tensor]:
    """Box and centerness losses over the positives (mmdet `ATSSHead.loss`,
    `FCOSHead.loss`): `bbox_weight` * GIoU of `decoded` vs `gt` `[P, 4]` weighted by the
    centerness targets `ctr_t` `[P]` / their sum, and centerness BCE of `ctr_logits` `[P]`
    / `num_pos`; `loss_cls` is passed through."""
    loss_bbox = (
        bbox_weight
        * (giou_loss(decoded, gt) * ctr_t).sum()
        / max(1.0, float(ctr_t.sum()))
    )
    loss_ctr = (
        F.binary_cross_entropy_with_logits(ctr_logits, ctr_t, reduction="sum") / num_pos
    )
    return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "loss_centerness": loss_ctr}


def atss_loss(
    cls_logits: Tensor,
    reg: Tensor,
    ctr: Tensor,
    anchors: Tensor,
    num_per_level: list[int],
    gts: list[Tensor],
    labels: list[Tensor],
    stds: tuple[float, ...] = ATSS_STDS,
) -> dict[str, Tensor]:
    """ATSS losses (mmdet `ATSSHead.loss`): focal (alpha .25, gamma 2) / num_pos,
    GIoU (weight 2.0) on decoded boxes weighted by the centerness target / sum(targets),
    centerness BCE / num_pos. `cls_logits` `[B, N, C]`, `reg` `[B, N, 4]`, `ctr` `[B, N]`."""
    cls_t = torch.zeros_like(cls_logits)
    assigned = [atss_assign(anchors.detach(), num_per_level, g)[0] for g in gts]
    bi, pi, p_gt = _positives(cls_t, assigned, gts, labels)
    num_pos = max(1.0, float(pi.numel()))
    loss_cls = sigmoid_focal_loss(cls_logits, cls_t).sum() / num_pos
    if pi.numel() == 0:
        return _losses_without_positives(loss_cls, reg, ctr)
    p_reg = reg[bi, pi]
    p_anc = anchors[pi]
    p_ctr = ctr[bi, pi]
    centers = torch.stack(
        [(p_anc[:, 0] + p_anc[:, 2]) / 2, (p_anc[:, 1] + p_anc[:, 3]) / 2], 1
    )
    ctr_t = centerness_target(centers.detach(), p_gt)
    decoded = delta2bbox(p_anc, p_reg, stds)
    return _centerness_weighted_losses(
        loss_cls, decoded, p_gt, p_ctr, ctr_t, num_pos, bbox_weight=2.0
    )


def retina_loss(
    cls_logits: Tensor,
    reg: Tensor,
    anchors: Tensor,
    gts: list[Tensor],
    labels: list[Tensor],
    stds: tuple[float, ...] = RETINA_STDS,
) -> dict[str, Tensor]:
    """RetinaNet (mmdet `retinanet_r50_fpn.py`): max-IoU 0.5/0.4 assignment, focal loss over
    non-ignored anchors / num_pos, L1 on encoded deltas / num_pos. Differentiable in
    `anchors` (learned anchors receive gradient through the delta targets)."""
    cls_t = torch.zeros_like(cls_logits)
    assigned = [max_iou_assign(anchors.detach(), g) for g in gts]
    valid = torch.stack([a != -2 for a in assigned])
    bi, pi, p_gt = _positives(cls_t, assigned, gts, labels)
    num_pos = max(1.0, float(pi.numel()))
    loss_cls = (
        sigmoid_focal_loss(cls_logits, cls_t) * valid[..., None]
    ).sum() / num_pos
    if pi.numel() == 0:
        return {"loss_cls": loss_cls, "loss_bbox": reg.sum() * 0 + anchors.sum() * 0}
    targets = anchor_delta_targets(anchors[pi], p_gt, stds)
    loss_bbox = (reg[bi, pi] - targets).abs().sum() / num_pos
    return {"loss_cls": loss_cls, "loss_bbox": loss_bbox}


def piou_loss(
    cls_logits: Tensor,
    reg: Tensor,
    ctr: Tensor,
    points: Tensor,
    level_of_point: Tensor,
    strides: tuple[int, ...],
    gts: list[Tensor],
    labels: list[Tensor],
    regress_ranges: list[tuple[float, float]],
    assigner: str = "piou",
) -> dict[str, Tensor]:
    """FCOS-style point-head losses (mmdet `FCOSHead.loss`; SHI-Labs `PIOUHead.loss`):
    focal / num_pos, GIoU (weight 1.0) on decoded boxes weighted by the centerness targets /
    their sum, centerness BCE / num_pos. `reg` holds distances in
    stride units (ReLU applied in the head, `norm_on_bbox`). `assigner`: `"piou"`
    (`piou_assign`: points inside the gt, Pseudo-IoU > 0.4) or `"fcos"` (`fcos_assign`:
    centre sampling, radius 1.5)."""
    if assigner not in ("piou", "fcos"):
        raise ValueError(f"unknown point assigner {assigner!r}")
    cls_t = torch.zeros_like(cls_logits)
    stride_of = torch.tensor(strides, dtype=torch.float32)[level_of_point]
    if assigner == "piou":
        assigned = [
            piou_assign(points, level_of_point, g, regress_ranges)[0] for g in gts
        ]
    else:
        assigned = [
            fcos_assign(points, level_of_point, strides, g, regress_ranges)[0]
            for g in gts
        ]
    bi, pi, gt = _positives(cls_t, assigned, gts, labels)
    num_pos = max(1.0, float(pi.numel()))
    loss_cls = sigmoid_focal_loss(cls_logits, cls_t).sum() / num_pos
    if pi.numel() == 0:
        return _losses_without_positives(loss_cls, reg, ctr)
    d = reg[bi, pi] * stride_of[pi][:, None]
    pts = points[pi]
    decoded = torch.stack(
        [
            pts[:, 0] - d[:, 0],
            pts[:, 1] - d[:, 1],
            pts[:, 0] + d[:, 2],
            pts[:, 1] + d[:, 3],
        ],
        1,
    )
    ctr_t = centerness_target(pts, gt)
    return _centerness_weighted_losses(
        loss_cls, decoded, gt, ctr[bi, pi], ctr_t, num_pos, bbox_weight=1.0
    )


def all_priors(
    priors: AnchorPriors | ExplicitAnchorPriors | LearnedAnchorPriors | PointPriors,
    shapes: list[tuple[int, int]],
) -> tuple[Tensor, list[int], Tensor]:
    """Concatenate per-level priors for feature-map `shapes` `[(H, W)]`: returns
    `(priors [N, 4 or 2], num_per_level, level_of_prior [N])`."""
    per = [priors.level(i, h, w) for i, (h, w) in enumerate(shapes)]
    counts = [p.shape[0] for p in per]
    lvl = torch.cat(
        [torch.full((c,), i, dtype=torch.long) for i, c in enumerate(counts)]
    )
    return torch.cat(per), counts, lvl


def compute_loss(
    method: str,
    priors: Any,
    outputs: tuple[list[Tensor], list[Tensor], list[Tensor]],
    gts: list[Tensor],
    labels: list[Tensor],
    num_classes: int,
    regress_ranges: list[tuple[float, float]] | None = None,
) -> dict[str, Tensor]:
    """Dispatch to the loss of `method` in {"atss", "freeanchor", "retina", "piou", "fcos"}."""
    cls, reg, ctr = outputs
    shapes = [(int(c.shape[2]), int(c.shape[3])) for c in cls]
    pri, counts, lvl = all_priors(priors, shapes)
    cls_f = flatten_levels(cls, num_classes)
    if method in ("piou", "fcos"):
        reg_f = flatten_levels(reg, 4)
        ctr_f = flatten_levels(ctr, 1).squeeze(-1)
        assert regress_ranges is not None
        return piou_loss(
            cls_f,
            reg_f,
            ctr_f,
            pri,
            lvl,
            priors.strides,
            gts,
            labels,
            regress_ranges,
            assigner=method,
        )
    reg_f = flatten_levels(reg, 4)
    if method == "atss":
        ctr_f = flatten_levels(ctr, 1).squeeze(-1)
        return atss_loss(cls_f, reg_f, ctr_f, pri, counts, gts, labels)
    if method == "freeanchor":
        return freeanchor_loss(cls_f, reg_f, pri, gts, labels)
    if method == "retina":
        return retina_loss(cls_f, reg_f, pri, gts, labels)
    raise ValueError(f"unknown method {method!r}")
