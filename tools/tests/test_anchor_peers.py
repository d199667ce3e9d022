"""Tests of the peer reimplementations and objectives used by tools/anchor_peers."""

from __future__ import annotations

import numpy as np

from tools.anchor_peers import peers


def _clusters(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.array([[10.0, 30.0], [45.0, 40.0], [120.0, 60.0]])
    wh = np.concatenate([t * rng.uniform(0.97, 1.03, (300, 2)) for t in truth])
    return wh, truth


def test_centred_iou_hand_values() -> None:
    wh = np.array([[10.0, 10.0], [20.0, 5.0]])
    a = np.array([[10.0, 10.0], [5.0, 20.0]])
    iou = peers.centred_iou(wh, a)
    assert iou[0, 0] == 1.0
    assert abs(iou[1, 1] - 25.0 / 175.0) < 1e-12
    assert abs(iou[0, 1] - 50.0 / 150.0) < 1e-12


def test_yolo_scores_and_focal() -> None:
    wh = np.array([[10.0, 10.0], [100.0, 10.0]])
    a = np.array([[10.0, 10.0]])
    s = peers.yolo_scores(wh, a)
    assert s["bpr"] == 0.5 and s["fitness"] == 0.5 and s["aat"] == 0.5
    assert peers.zlocha_focal(wh[:1], a) == 0.0


def test_darknet_and_mmdet_kmeans_find_clusters() -> None:
    wh, _ = _clusters(0)
    c, _ = peers.darknet_kmeans(wh, 3, seed=1)
    assert peers.mean_iou(wh, c) > 0.95
    c2, _ = peers.mmdet_kmeans(wh, 3, 100, seed=3)
    assert c2.shape == (3, 2) and peers.mean_iou(wh, c2) > 0.5


def test_retinanet_anchor_order_is_ratio_major() -> None:
    a = peers.retinanet_anchors(np.array([0.5, 2.0]), np.array([1.0, 2.0]), [32])
    assert a.shape == (4, 2)
    assert np.allclose(a[0], [32 / np.sqrt(0.5), 32 * np.sqrt(0.5)])
    assert np.allclose(a[3], [64 / np.sqrt(2.0), 64 * np.sqrt(2.0)])
