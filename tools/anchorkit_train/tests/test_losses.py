"""Losses against direct per-formula implementations (mmdet `free_anchor_retina_head.py`,
`atss_head.py`)."""

from __future__ import annotations

import math

import torch

from tools.anchorkit_train.anchors import bbox2delta, box_iou, delta2bbox
from tools.anchorkit_train.losses import (
    centerness_target,
    freeanchor_loss,
    giou_loss,
    sigmoid_focal_loss,
)

STDS = (0.1, 0.1, 0.2, 0.2)


def naive_freeanchor(
    logits: torch.Tensor,
    reg: torch.Tensor,
    anchors: torch.Tensor,
    gts: list[torch.Tensor],
    labels: list[torch.Tensor],
    topk: int,
) -> tuple[float, float]:
    """`FreeAnchorRetinaHead.loss` written out element by element with Python floats."""
    alpha, gamma, t1 = 0.5, 2.0, 0.6
    b_, n, c = logits.shape
    total_gt = sum(int(g.shape[0]) for g in gts)
    pos_sum: float = 0.0
    neg_sum: float = 0.0
    for b in range(b_):
        gt, lab = gts[b], labels[b]
        prob = [
            [1 / (1 + math.exp(-float(logits[b, j, k]))) for k in range(c)]
            for j in range(n)
        ]
        pred = delta2bbox(anchors, reg[b], STDS)
        box_prob = [[0.0] * c for _ in range(n)]
        for i in range(gt.shape[0]):
            ious = [float(box_iou(gt[i : i + 1], pred[j : j + 1])) for j in range(n)]
            t2 = max(max(ious), t1 + 1e-12)
            for j in range(n):
                p = min(1.0, max(0.0, (ious[j] - t1) / (t2 - t1)))
                k = int(lab[i])
                box_prob[j][k] = max(box_prob[j][k], p)
        for i in range(gt.shape[0]):
            iou_a = [
                float(box_iou(gt[i : i + 1], anchors[j : j + 1])) for j in range(n)
            ]
            bag = sorted(range(n), key=lambda j: -iou_a[j])[:topk]
            ps = []
            for j in bag:
                target = bbox2delta(anchors[j : j + 1], gt[i : i + 1], STDS)[0]
                l_reg = 0.0
                for comp in range(4):
                    d = abs(float(reg[b, j, comp]) - float(target[comp]))
                    l_reg += 0.5 * d * d / 0.11 if d < 0.11 else d - 0.5 * 0.11
                ps.append(prob[j][int(lab[i])] * math.exp(-0.75 * l_reg))
            ws = [1 / max(1 - p, 1e-12) for p in ps]
            bag_prob = sum(w * p for w, p in zip(ws, ps, strict=True)) / sum(ws)
            pos_sum += -alpha * max(math.log(bag_prob), -100)
        for j in range(n):
            for k in range(c):
                q = min(max(prob[j][k] * (1 - box_prob[j][k]), 1e-12), 1 - 1e-12)
                neg_sum += (1 - alpha) * q**gamma * -max(math.log(1 - q), -100)
    return pos_sum / max(1, total_gt), neg_sum / max(1, total_gt * topk)


def test_freeanchor_loss_matches_per_formula() -> None:
    g = torch.Generator().manual_seed(3)
    anchors = torch.tensor(
        [
            [0, 0, 16, 16],
            [8, 0, 24, 16],
            [0, 8, 16, 24],
            [8, 8, 24, 24],
            [4, 4, 12, 12],
            [2, 2, 30, 30],
        ],
        dtype=torch.float32,
    )
    logits = torch.randn(2, 6, 3, generator=g)
    reg = torch.randn(2, 6, 4, generator=g) * 0.5
    gts = [
        torch.tensor([[1.0, 1.0, 15.0, 17.0], [6.0, 7.0, 25.0, 22.0]]),
        torch.tensor([[3.0, 2.0, 20.0, 26.0]]),
    ]
    labels = [torch.tensor([0, 2]), torch.tensor([1])]
    # The prediction near gt 0 gets IoU > 0.6 so the saturated-linear box_prob is non-trivial.
    reg[0, 0] = bbox2delta(anchors[0:1], gts[0][0:1], STDS)[0] + 0.05
    out = freeanchor_loss(logits, reg, anchors, gts, labels, topk=3)
    pos, neg = naive_freeanchor(logits, reg, anchors, gts, labels, topk=3)
    assert abs(out["positive_bag_loss"].item() - pos) < 1e-5 * max(1.0, pos)
    assert abs(out["negative_bag_loss"].item() - neg) < 1e-5 * max(1.0, neg)


def test_freeanchor_without_gt_keeps_graph() -> None:
    logits = torch.zeros(1, 2, 1, requires_grad=True)
    reg = torch.zeros(1, 2, 4, requires_grad=True)
    anchors = torch.tensor([[0.0, 0, 8, 8], [8.0, 8, 16, 16]])
    out = freeanchor_loss(
        logits, reg, anchors, [torch.zeros((0, 4))], [torch.zeros(0, dtype=torch.long)]
    )
    assert out["positive_bag_loss"].item() == 0.0
    # q = 0.5, (1-a) * q^2 * -ln(0.5) summed over 2 anchors, divided by max(1, 0) = 1.
    assert abs(out["negative_bag_loss"].item() - 2 * 0.5 * 0.25 * math.log(2)) < 1e-6
    (out["positive_bag_loss"] + out["negative_bag_loss"]).backward()
    assert reg.grad is not None


def test_centerness_giou_focal_known_values() -> None:
    c = centerness_target(
        torch.tensor([[5.0, 5.0], [2.0, 5.0]]),
        torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 10]]),
    )
    assert torch.allclose(c, torch.tensor([1.0, math.sqrt(2 / 8)]))
    # Two 10x10 boxes offset by 5 in x: IoU 1/3, enclosure 150, union 150 -> GIoU = 1/3.
    gl = giou_loss(torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[5.0, 0, 15, 10]]))
    assert abs(gl.item() - (1 - 1 / 3)) < 1e-6
    # Disjoint: IoU 0, enclosure 300, union 200 -> GIoU = -1/3.
    gl2 = giou_loss(torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[20.0, 0, 30, 10]]))
    assert abs(gl2.item() - (1 + 1 / 3)) < 1e-6
    # Focal at logit 0, target 1: 0.25 * 0.5^2 * ln 2.
    f = sigmoid_focal_loss(torch.zeros(1), torch.ones(1))
    assert abs(f.item() - 0.25 * 0.25 * math.log(2)) < 1e-7
