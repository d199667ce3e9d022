"""Data loading and augmentation: boxes follow the pixels through scale, flips and crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tools.anchorkit_train.data import (
    MEAN_RGB,
    STD_RGB,
    AugConfig,
    augment,
    keep_ratio_size,
    load_voc,
)


def test_bccd_splits(bccd: Path) -> None:
    tv = load_voc(bccd, "trainval")
    te = load_voc(bccd, "test")
    assert len(tv) == 292 and len(te) == 72
    assert not {r.path for r in tv} & {r.path for r in te}
    boxes = np.concatenate([r.boxes for r in tv + te])
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert (
        sum(len(r.boxes) for r in tv + te) >= 4800
    )  # 4888 boxes minus 2 degenerate ones


def test_keep_ratio_rule() -> None:
    assert keep_ratio_size(640, 480, (1333, 800))[:2] == (1067, 800)
    assert keep_ratio_size(1226, 652, (416, 312))[:2] == (416, 221)


def test_augment_keeps_boxes_on_their_pixels() -> None:
    img = np.full((480, 640, 3), 255, np.uint8)
    boxes = np.array([[100, 120, 180, 200], [400, 300, 520, 420]], np.float32)
    img[120:200, 100:180] = (0, 0, 255)  # red (BGR)
    img[300:420, 400:520] = (255, 0, 0)  # blue
    cfg = AugConfig(canvas=(256, 192), hue=0, sat=0, val=0, min_visible=0.99)
    mean = np.array(MEAN_RGB, np.float32)[:, None, None]
    std = np.array(STD_RGB, np.float32)[:, None, None]
    seen = 0
    for seed in range(40):
        out, b, lab = augment(
            img, boxes, np.array([0, 1]), np.random.default_rng(seed), cfg
        )
        rgb = out * std + mean
        for box, c in zip(b, lab, strict=True):
            ch = 0 if c == 0 else 2  # red -> R channel high, G low; blue -> B high
            mask = (rgb[ch] > 200) & (rgb[1] < 60)
            ys, xs = np.nonzero(mask)
            assert xs.size > 0
            got = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert np.abs(np.array(got) - box).max() <= 2.0, (seed, got, box)
            seen += 1
    assert seen >= 20
