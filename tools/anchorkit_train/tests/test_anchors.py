"""Anchor generation and DeltaXYWH coder against values computed by running mmdet 2.28.2's
`AnchorGenerator` and `delta2bbox` under torch."""

from __future__ import annotations

import numpy as np
import torch

from tools.anchorkit_train.anchors import (
    base_anchors,
    bbox2delta,
    delta2bbox,
    grid_anchors,
)

STDS = (0.1, 0.1, 0.2, 0.2)


def test_freeanchor_base_anchors_stride8() -> None:
    b = base_anchors(8, 4, 3, [0.5, 1.0, 2.0])
    assert b.shape == (9, 4)
    assert b[0, 2].numpy().view(np.uint32) == 0x41B504F3
    assert b[0, 3].numpy().view(np.uint32) == 0x413504F3
    assert b[1, 2].numpy().view(np.uint32) == 0x41E411F0
    assert b[2, 2].numpy().view(np.uint32) == 0x420FACD6
    assert b[3].tolist() == [-16, -16, 16, 16]


def test_grid_order() -> None:
    a = grid_anchors(base_anchors(8, 4, 3, [0.5, 1.0, 2.0]), 8, 2, 3)
    assert torch.allclose(
        a[9], torch.tensor([-14.627417, -11.313708, 30.627417, 11.313708])
    )


def test_decode_vectors() -> None:
    anchors = torch.tensor(
        [[-14.627417, -11.313708, 30.627417, 11.313708]] * 2
        + [[1176, 776, 1240, 840], [100, 100, 132, 132]]
    )
    deltas = torch.tensor(
        [[0.5, -0.3, 0.2, -0.1], [0, 0, 30, -30], [1, 1, 1, 1], [0, 0, 0, 0]]
    )
    want = torch.tensor(
        [
            [0, 0, 33.813602, 10.410859],
            [0, 0, 1199, 0.181019],
            [1175.315186, 775.315125, 1199, 800],
            [100, 100, 132, 132],
        ]
    )
    got = delta2bbox(anchors, deltas, STDS, max_shape=(800, 1199))
    assert torch.allclose(got, want, atol=2e-4)
    # encode is the inverse of decode (no clamping involved)
    boxes = delta2bbox(anchors[[0, 3]], deltas[[0, 3]], STDS)
    assert torch.allclose(
        bbox2delta(anchors[[0, 3]], boxes, STDS), deltas[[0, 3]], atol=1e-5
    )
