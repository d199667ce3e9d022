"""Anchor generation and DeltaXYWH coder against reference sections 2.1 and 3 (values taken
from real mmdet output there)."""

from __future__ import annotations

import numpy as np
import torch

from anchorkit_train.anchors import base_anchors, bbox2delta, delta2bbox, grid_anchors
from anchorkit_train.postprocess import _decode_delta, nms

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


def test_decode_vectors_torch_and_numpy() -> None:
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
    got_np = _decode_delta(anchors.numpy(), deltas.numpy(), list(STDS), (800, 1199))
    assert np.allclose(got_np, want.numpy(), atol=2e-4)
    # encode is the inverse of decode (no clamping involved)
    boxes = delta2bbox(anchors[[0, 3]], deltas[[0, 3]], STDS)
    assert torch.allclose(
        bbox2delta(anchors[[0, 3]], boxes, STDS), deltas[[0, 3]], atol=1e-5
    )


def test_nms_strict_threshold() -> None:
    boxes = np.array(
        [[0, 0, 10, 10], [0, 0, 10, 15], [0, 0, 10, 10.1], [50, 50, 60, 60]], np.float32
    )
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    # IoU(0,1) = 100/150 = 0.667: kept at thr 0.7, suppressed at 0.6; IoU(0,2) = 0.990.
    assert nms(boxes, scores, 0.7).tolist() == [0, 1, 3]
    assert nms(boxes, scores, 0.6).tolist() == [0, 3]
