"""Assigners on hand-built boxes with known answers (mmdet `atss_assigner.py`,
`max_iou_assigner.py`, `FCOSHead._get_target_single`, PIOUHead)."""

from __future__ import annotations

import math

import torch

from tools.anchorkit_train.anchors import box_iou
from tools.anchorkit_train.assigners import (
    atss_assign,
    fcos_assign,
    max_iou_assign,
    piou_assign,
    pseudo_iou,
)


def t(x: list[list[float]]) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


def test_atss_threshold_is_mean_plus_unbiased_std() -> None:
    # gt 10x10 at origin; one level, k = all anchors of the level.
    gt = t([[0, 0, 10, 10]])
    anchors = t(
        [
            [0, 0, 10, 10],  # IoU 1.0
            [0, 0, 10, 12.5],  # IoU 100/125 = 0.8
            [0, 0, 10, 20],  # IoU 0.5
            [0, 0, 10, 25],  # IoU 0.4
        ]
    )
    # thr = 0.675 + 0.2754 = 0.9504: only the first anchor.
    assigned, max_iou = atss_assign(anchors, [4], gt, topk=4)
    assert assigned.tolist() == [0, -1, -1, -1]
    assert max_iou[0].item() == 1.0
    # IoUs [1, 0.85, 0.1, 0, 0]: mean 0.39, unbiased std 0.4930 -> thr 0.8830 rejects 0.85,
    # whereas a biased std (0.4409 -> 0.8309) would accept it.
    anchors2 = t(
        [
            [0, 0, 10, 10],
            [0, 0, 10, 10.0 / 0.85],
            [0, 0, 10, 100],
            [50, 0, 60, 10],
            [0, 60, 10, 70],
        ]
    )
    ious2 = box_iou(anchors2, gt)[:, 0].tolist()
    m2 = sum(ious2) / 5
    su = math.sqrt(sum((v - m2) ** 2 for v in ious2) / 4)
    sb = math.sqrt(sum((v - m2) ** 2 for v in ious2) / 5)
    assert m2 + sb < ious2[1] < m2 + su
    assigned2, _ = atss_assign(anchors2, [5], gt, topk=5)
    assert assigned2.tolist() == [0, -1, -1, -1, -1]


def test_atss_topk_is_per_level_by_centre_distance() -> None:
    gt = t([[0, 0, 40, 40]])  # centre (20, 20)
    anchors = t(
        [
            # level 0 (10x10): the two nearest centres are candidates, the third is not
            [15, 15, 25, 25],  # d 0, IoU 0.0625
            [15, 5, 25, 15],  # d 10, IoU 0.0625
            [0, 0, 10, 10],  # d 21.2, not a candidate
            # level 1 (40x40)
            [0, 0, 40, 40],  # d 0, IoU 1
            [20, 0, 60, 40],  # d 20, IoU 1/3
            [100, 100, 140, 140],  # far, not a candidate
        ]
    )
    # candidates IoUs [0.0625, 0.0625, 1, 1/3]: thr = 0.3646 + 0.4423 = 0.8069
    assigned, _ = atss_assign(anchors, [3, 3], gt, topk=2)
    assert assigned.tolist() == [-1, -1, -1, 0, -1, -1]


def test_atss_centre_must_be_inside_gt_with_margin() -> None:
    gt = t([[0, 0, 10, 10]])
    anchors = t(
        [
            [-0.995, 0, 1.005, 10],  # centre x = 0.005 -> l = 0.005 <= 0.01: rejected
            [-0.98, 0, 1.02, 10],  # centre x = 0.02 -> inside: positive
        ]
        + [[20 + 15 * i, 0, 22 + 15 * i, 10] for i in range(7)]  # IoU 0 fillers
    )
    ious = box_iou(anchors, gt)[:, 0].tolist()
    m = sum(ious) / 9
    s = math.sqrt(sum((v - m) ** 2 for v in ious) / 8)
    assert ious[0] >= m + s and ious[1] >= m + s  # both pass the IoU test
    assigned, _ = atss_assign(anchors, [9], gt, topk=9)
    assert assigned.tolist() == [-1, 0] + [-1] * 7


def test_atss_tie_goes_to_first_gt() -> None:
    # Anchor 0 overlaps both gts with exactly IoU 100/120; both gts select it.
    gts = t([[0, 0, 10, 12], [0, -2, 10, 10]])
    anchors = t([[0, 0, 10, 10], [100, 100, 110, 110], [-100, -100, -90, -90]])
    assigned, max_iou = atss_assign(anchors, [3], gts, topk=3)
    assert assigned.tolist() == [0, -1, -1]
    assert abs(max_iou[0].item() - 100 / 120) < 1e-6
    # Swap the gt order: still the first index wins.
    assigned_sw, _ = atss_assign(anchors, [3], gts.flip(0), topk=3)
    assert assigned_sw.tolist() == [0, -1, -1]
    # A higher IoU for the second gt wins over order.
    gts2 = t([[0, 0, 10, 12], [0, -1, 10, 10]])
    assigned2, _ = atss_assign(anchors, [3], gts2, topk=3)
    assert assigned2.tolist() == [1, -1, -1]


def test_atss_no_gt() -> None:
    assigned, _ = atss_assign(t([[0, 0, 1, 1]]), [1], torch.zeros((0, 4)))
    assert assigned.tolist() == [-1]


def test_max_iou_thresholds_and_low_quality_match() -> None:
    gts = t([[0, 0, 10, 10], [100, 100, 110, 130]])
    anchors = t(
        [
            [0, 0, 10, 10],  # IoU 1 -> gt 0
            [0, 0, 10, 22],  # IoU 0.4545 -> ignored (-2)
            [0, 0, 10, 30],  # IoU 0.333 -> background
            [
                100,
                100,
                110,
                110,
            ],  # IoU 1/3 with gt 1: its best anchor -> positive via low-quality
            [300, 300, 310, 310],  # background
        ]
    )
    assert max_iou_assign(anchors, gts).tolist() == [0, -2, -1, 1, -1]


def test_pseudo_iou_matches_closed_form_and_shifted_box_iou() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        w, h = (torch.rand(2, generator=g) * 90 + 10).tolist()
        px, py = (torch.rand(2, generator=g) * torch.tensor([w, h])).tolist()
        ltrb = torch.tensor([px, py, w - px, h - py])
        dx, dy = abs(px - w / 2), abs(py - h / 2)
        inter = (w - dx) * (h - dy)
        closed = inter / (2 * w * h - inter)
        got = pseudo_iou(ltrb).item()
        assert abs(got - closed) < 1e-5
        shifted = t([[px - w / 2, py - h / 2, px + w / 2, py + h / 2]])
        assert abs(got - box_iou(shifted, t([[0, 0, w, h]])).item()) < 1e-5


def test_piou_assign_relabels_low_piou_as_background() -> None:
    gt = t([[0, 0, 40, 40]])
    # Points: the centre (PIoU 1), a point 14 px off in x and y (PIoU = 26*26/(3200-676) =
    # 0.268 <= 0.4 -> background), one outside.
    pts = t([[20, 20], [6, 6], [50, 50]])
    lvl = torch.zeros(3, dtype=torch.long)
    assigned, ltrb = piou_assign(pts, lvl, gt, [(-1, 64)], piou_thr=0.4)
    assert assigned.tolist() == [0, -1, -1]
    assert ltrb[0].tolist() == [20, 20, 20, 20]
    # Out of the regress range -> background even at the centre.
    assigned2, _ = piou_assign(pts[:1], lvl[:1], gt, [(64, 128)])
    assert assigned2.tolist() == [-1]


def grid(stride: int, n: int) -> torch.Tensor:
    """Points `((x + 0.5) * stride, (y + 0.5) * stride)` of an n x n map, row-major."""
    c = (torch.arange(n, dtype=torch.float32) + 0.5) * stride
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)


def test_fcos_centre_sampling_radius_1p5() -> None:
    # gt 0..100 at stride 8: centre region 50 +- 12 = (38, 62) strictly; points at 4 + 8k
    # inside it: 44, 52, 60 -> 3 x 3 positives; max side distance <= 60 is in P3's range.
    pts = grid(8, 16)
    lvl = torch.zeros(pts.shape[0], dtype=torch.long)
    gt = t([[0, 0, 100, 100]])
    assigned, ltrb = fcos_assign(pts, lvl, (8,), gt, [(-1.0, 64.0)])
    pos = pts[assigned >= 0]
    assert sorted({float(v) for v in pos[:, 0]}) == [44.0, 52.0, 60.0]
    assert sorted({float(v) for v in pos[:, 1]}) == [44.0, 52.0, 60.0]
    i = int(((pts[:, 0] == 44) & (pts[:, 1] == 60)).nonzero())
    assert ltrb[i].tolist() == [44.0, 60.0, 56.0, 40.0]
    # the same gt with Pseudo-IoU takes every point inside the box with PIoU > 0.4: more
    p_assigned, _ = piou_assign(pts, lvl, gt, [(-1.0, 64.0)])
    assert int((p_assigned >= 0).sum()) > 9
    # a larger radius region is clipped to the gt box: a 10 px gt keeps one point
    small = t([[100, 100, 110, 110]])
    a2, _ = fcos_assign(grid(8, 16), lvl, (8,), small, [(-1.0, 64.0)])
    assert (grid(8, 16)[a2 >= 0]).tolist() == [[108.0, 108.0]]


def test_fcos_regress_range_and_smallest_area() -> None:
    pts = t([[52, 52], [52, 52]])
    lvl = torch.tensor([0, 1])
    gts = t(
        [[0, 0, 100, 100], [30, 30, 80, 80]]
    )  # both contain (52, 52) near the centre
    # P3 (stride 8): max side 52 for gt 0 (range ok) and 28 for gt 1 -> smaller area wins;
    # P4 (stride 16): neither max side is >= 64 -> background.
    assigned, _ = fcos_assign(
        pts, lvl, (8, 16), gts, [(-1.0, 64.0), (64.0, 128.0)], radius=1.5
    )
    assert assigned.tolist() == [1, -1]
    none, _ = fcos_assign(pts, lvl, (8, 16), t([]).reshape(0, 4), [(-1.0, 64.0)] * 2)
    assert none.tolist() == [-1, -1]
