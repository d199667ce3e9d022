"""Unit tests of the Python reference against values computed with mmdet 2.28.2 / mmcv 1.7.2
(resize geometry, anchors, decode, post-processing) and brute-force versions of NMS."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from tools.reference.coders import delta2bbox, distance2bbox, distribution_to_distance
from tools.reference.nms import batched_nms_mmcv, nms_onnxruntime
from tools.reference.postprocess import LevelRows, postprocess
from tools.reference.preprocess import plan, preprocess
from tools.reference.priors import base_anchors, grid_anchors, grid_points
from tools.reference.spec import SpecError, parse_spec

F32 = np.float32


def bits(v: float) -> int:
    return int(np.array(v, dtype=F32).view(np.uint32))


def ulps(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> int:
    ia = np.asarray(a, F32).view(np.int32).astype(np.int64)
    ib = np.asarray(b, F32).view(np.int32).astype(np.int64)
    return int(np.abs(ia - ib).max())


# ---------------------------------------------------------------- anchors (AnchorGenerator)

# Stride-8 FreeAnchor base anchors (x2, y2), from the reference table (real mmdet 2.28 output).
STRIDE8_X2Y2 = [
    (22.627417, 11.313708),
    (28.508759, 14.254379),
    (35.918785, 17.959393),
    (16.0, 16.0),
    (20.158737, 20.158737),
    (25.398417, 25.398417),
    (11.313708, 22.627417),
    (14.254379, 28.508759),
    (17.959393, 35.918785),
]


def freeanchor_base(stride: int) -> npt.NDArray[np.float32]:
    return base_anchors(stride, 4.0, 3, (0.5, 1.0, 2.0), 0.0)


def test_stride8_table() -> None:
    base = freeanchor_base(8)
    assert base.dtype == F32 and base.shape == (9, 4)
    want = np.array([[-x, -y, x, y] for x, y in STRIDE8_X2Y2], dtype=np.float64)
    np.testing.assert_allclose(base, want, rtol=0, atol=1e-6)


def test_stride8_bit_patterns() -> None:
    base = freeanchor_base(8)
    assert bits(base[0, 2]) == 0x41B504F3
    assert bits(base[0, 3]) == 0x413504F3
    assert bits(base[1, 2]) == 0x41E411F0
    assert bits(base[2, 2]) == 0x420FACD6


def test_other_levels_are_exact_multiples() -> None:
    b8 = freeanchor_base(8)
    for s in (16, 32, 64, 128):
        assert np.array_equal(freeanchor_base(s), b8 * F32(s // 8))
    b128 = freeanchor_base(128)
    np.testing.assert_allclose(
        b128[2], [-574.700562, -287.350281, 574.700562, 287.350281], atol=1e-4
    )
    np.testing.assert_allclose(
        b128[8], [-287.350281, -574.700562, 287.350281, 574.700562], atol=1e-4
    )


def test_atss_base_anchors() -> None:
    for s in (8, 16, 32, 64, 128):
        assert np.array_equal(
            base_anchors(s, 8.0, 1, (1.0,)),
            np.array([[-4 * s, -4 * s, 4 * s, 4 * s]], F32),
        )


def test_grid_order_and_check_value() -> None:
    # featmap 2x3 at stride 8: row 9 is cell (y=0, x=1), anchor 0.
    a = grid_anchors(freeanchor_base(8), 2, 3, 8)
    assert a.shape == (2 * 3 * 9, 4)
    np.testing.assert_allclose(
        a[9], [-14.627417, -11.313708, 30.627417, 11.313708], atol=1e-6
    )
    # row (y*W + x)*A + a = base[a] + (x, y, x, y) * stride
    y, x, k = 1, 2, 7
    assert np.array_equal(
        a[(y * 3 + x) * 9 + k],
        freeanchor_base(8)[k] + F32(8) * np.array([x, y, x, y], F32),
    )


def test_points_offset() -> None:
    p = grid_points(2, 3, 16, 0.5)
    assert np.array_equal(p[0], [8.0, 8.0])
    assert np.array_equal(p[5], [40.0, 24.0])  # y=1, x=2


# ---------------------------------------------------------------- decode (delta2bbox)

STDS = (0.1, 0.1, 0.2, 0.2)
MEANS = (0.0, 0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("anchor", "delta", "want"),
    [
        (
            [-14.627417, -11.313708, 30.627417, 11.313708],
            [0.5, -0.3, 0.2, -0.1],
            [0, 0, 33.813602, 10.410859],
        ),
        (
            [-14.627417, -11.313708, 30.627417, 11.313708],
            [0, 0, 30, -30],
            [0, 0, 1199, 0.181019],
        ),
        ([1176, 776, 1240, 840], [1, 1, 1, 1], [1175.315186, 775.315125, 1199, 800]),
        ([100, 100, 132, 132], [0, 0, 0, 0], [100, 100, 132, 132]),
    ],
)
def test_delta2bbox_vectors(
    anchor: list[float], delta: list[float], want: list[float]
) -> None:
    out = delta2bbox(
        np.array([anchor], F32), np.array([delta], F32), MEANS, STDS, (1199.0, 800.0)
    )
    np.testing.assert_allclose(out[0], want, rtol=0, atol=2e-5)


def test_delta2bbox_row1_bits() -> None:
    a = grid_anchors(freeanchor_base(8), 2, 3, 8)[
        9:10
    ]  # the exact f32 anchor of the table
    out = delta2bbox(
        a, np.array([[0.5, -0.3, 0.2, -0.1]], F32), MEANS, STDS, (1199.0, 800.0)
    )
    want = np.array([0x42074121, 0x412692E1], dtype=np.uint32).view(F32)
    assert ulps(out[0, 2:], want) <= 1


def test_delta2bbox_clamp_bound() -> None:
    # dw clamps to the f32 of ln(62.5) (bits 0x40845349): growth 62.500004x at most.
    out = delta2bbox(
        np.array([[0, 0, 10, 10]], F32),
        np.array([[0, 0, 100, 100]], F32),
        MEANS,
        STDS,
        None,
    )
    w = out[0, 2] - out[0, 0]
    assert abs(float(w) - 625.0) < 1e-3


def test_distance_and_distribution() -> None:
    pts = np.array([[20.0, 12.0]], F32)
    box = distance2bbox(pts, np.array([[5, 3, 100, 2]], F32), (64.0, 48.0))
    assert np.array_equal(box[0], [15, 9, 64, 14])
    # A one-hot distribution (huge logit on bin k) integrates to k.
    reg = np.full((1, 32), -50.0, F32)
    for side, k in enumerate((0, 3, 7, 5)):
        reg[0, side * 8 + k] = 50.0
    np.testing.assert_allclose(
        distribution_to_distance(reg, 7)[0], [0, 3, 7, 5], atol=1e-5
    )
    # Uniform logits give the mean bin 3.5.
    np.testing.assert_allclose(
        distribution_to_distance(np.zeros((2, 32), F32), 7), 3.5, atol=1e-6
    )


# ---------------------------------------------------------------- NMS (mmcv, onnxruntime)


def brute_mmcv(
    boxes: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32],
    labels: list[int],
    thr: float,
) -> list[int]:
    """mmcv batched_nms written as plain scalar loops (offset trick, f32, strict >)."""
    n = len(scores)
    mx = F32(max(float(v) for v in boxes.reshape(-1)))
    b = [
        [F32(boxes[i][k]) + F32(labels[i]) * (mx + F32(1)) for k in range(4)]
        for i in range(n)
    ]
    area = [(r[2] - r[0]) * (r[3] - r[1]) for r in b]
    order = sorted(range(n), key=lambda i: (-float(scores[i]), i))
    supp = [False] * n
    keep = []
    for p, i in enumerate(order):
        if supp[i]:
            continue
        keep.append(i)
        for j in order[p + 1 :]:
            if supp[j]:
                continue
            w = max(F32(0), min(b[i][2], b[j][2]) - max(b[i][0], b[j][0]))
            h = max(F32(0), min(b[i][3], b[j][3]) - max(b[i][1], b[j][1]))
            inter = F32(w * h)
            den = F32(area[i] + area[j] - inter)
            if den != 0 and F32(inter / den) > F32(thr):
                supp[j] = True
    return keep


def brute_iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / ua if inter > 0 and ua > 0 else 0.0


def clustered_boxes(
    seed: int, n: int, classes: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 600, size=(max(1, n // 12), 2))
    c = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 6, size=(n, 2))
    wh = rng.uniform(20, 120, size=(n, 2))
    boxes = np.concatenate([c - wh / 2, c + wh / 2], axis=1).astype(F32)
    scores = rng.uniform(0.05, 1.0, n).astype(F32)
    scores[rng.integers(0, n, n // 10)] = F32(0.5)  # exact ties
    return boxes, scores, rng.integers(0, classes, n).astype(np.int64)


@pytest.mark.parametrize(("seed", "thr"), [(0, 0.5), (1, 0.6), (2, 0.3)])
def test_batched_nms_vs_brute_force(seed: int, thr: float) -> None:
    boxes, scores, labels = clustered_boxes(seed, 400, 4)
    got = batched_nms_mmcv(boxes, scores, labels, thr).tolist()
    assert got == brute_mmcv(boxes, scores, labels.tolist(), thr)
    assert 20 < len(got) < 400  # suppression really happened


def test_batched_nms_is_class_aware() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [1, 0, 11, 10]], F32)
    scores = np.array([0.9, 0.8, 0.7], F32)
    assert batched_nms_mmcv(boxes, scores, np.array([0, 1, 0]), 0.5).tolist() == [0, 1]
    assert batched_nms_mmcv(
        boxes, scores, np.array([0, 1, 0]), 0.5, class_agnostic=True
    ).tolist() == [0]
    # strict: IoU exactly 0.5 is not suppressed
    half = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], F32)
    assert batched_nms_mmcv(
        half, np.array([0.9, 0.8], F32), np.array([0, 0]), 0.5
    ).tolist() == [0, 1]


@pytest.mark.parametrize("seed", [3, 4])
def test_onnxruntime_nms_vs_brute_force(seed: int) -> None:
    boxes, scores, _ = clustered_boxes(seed, 300, 1)
    boxes[::7] = boxes[::7][:, [2, 3, 0, 1]]  # flipped corners are min/max normalised
    got = nms_onnxruntime(boxes, scores, 0.5, 0.3, 25).tolist()
    b = [[float(v) for v in r] for r in boxes]
    b = [
        [min(r[0], r[2]), min(r[1], r[3]), max(r[0], r[2]), max(r[1], r[3])] for r in b
    ]
    cand = sorted(
        (i for i in range(len(scores)) if scores[i] > F32(0.3)),
        key=lambda i: (-float(scores[i]), i),
    )
    keep: list[int] = []
    for i in cand:
        if len(keep) == 25:
            break
        if all(brute_iou(b[i], b[k]) <= 0.5 for k in keep):
            keep.append(i)
    assert got == keep and len(keep) == 25


# ---------------------------------------------------------------- resize geometry (rescale_size)

KEEP_RATIO_INPUT = {
    "name": "input",
    "channel_order": "rgb",
    "mean": [123.675, 116.28, 103.53],
    "std": [58.395, 57.12, 57.375],
    "resize": {"rule": "keep_ratio", "scale": [1333, 800]},
    "pad": {"size_divisor": 32, "value": 0.0},
    "dynamic_hw": True,
}


def tiny_spec(**over: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "format": "anchorkit.detector/1",
        "classes": ["a", "b", "c"],
        "input": KEEP_RATIO_INPUT,
        "head": {
            "kind": "atss",
            "layout": "nchw",
            "levels": [{"stride": 8, "cls": "c", "reg": "r", "centerness": "t"}],
            "priors": {
                "type": "anchors",
                "octave_base_scale": 8,
                "scales_per_octave": 1,
                "ratios": [1.0],
            },
            "coder": {
                "type": "delta_xywh",
                "means": [0, 0, 0, 0],
                "stds": [0.1, 0.1, 0.2, 0.2],
            },
            "score": "sigmoid",
            "centerness": True,
        },
        "postprocess": {
            "nms_pre": 1000,
            "score_thr": 0.05,
            "iou_thr": 0.6,
            "max_per_img": 100,
        },
    }
    spec.update(over)
    return spec


@pytest.mark.parametrize(
    ("orig", "resized", "scales", "padded"),
    [
        ((640, 480), (1067, 800), (1.6671875, 1.6666667), (1088, 800)),
        ((1920, 1080), (1333, 750), (0.6942708, 0.6944444), (1344, 768)),
        ((427, 640), (800, 1199), (1.8735363, 1.8734375), (800, 1216)),
    ],
)
def test_keep_ratio_sizes(
    orig: tuple[int, int],
    resized: tuple[int, int],
    scales: tuple[float, float],
    padded: tuple[int, int],
) -> None:
    m = plan(parse_spec(tiny_spec()).input, *orig)
    assert (m.resized_w, m.resized_h) == resized
    assert (m.input_w, m.input_h) == padded
    np.testing.assert_allclose((m.scale_w, m.scale_h), scales, atol=1e-7)
    # scale order in the spec does not matter (mmcv takes max/min)
    inp = dict(KEEP_RATIO_INPUT, resize={"rule": "keep_ratio", "scale": [800, 1333]})
    assert plan(parse_spec(tiny_spec(input=inp)).input, *orig) == m


def test_preprocess_normalize_and_pad() -> None:
    spec = parse_spec(tiny_spec())
    bgr = np.zeros((48, 64, 3), np.uint8)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 10, 20, 30  # B, G, R
    t, m = preprocess(spec.input, bgr)
    assert (m.resized_w, m.resized_h, m.input_w, m.input_h) == (1067, 800, 1088, 800)
    assert t.shape == (1, 3, 800, 1088) and t.dtype == F32
    # RGB order: channel 0 is R=30; (30 - 123.675) * (1/58.395)
    np.testing.assert_allclose(
        t[0, :, 10, 10],
        [(30 - 123.675) / 58.395, (20 - 116.28) / 57.12, (10 - 103.53) / 57.375],
        rtol=1e-6,
    )
    assert np.all(t[0, :, :, 1067:] == 0)  # right padding is 0 in normalised space


def test_letterbox_geometry() -> None:
    inp = dict(
        KEEP_RATIO_INPUT,
        resize={"rule": "letterbox", "width": 416, "height": 416, "pad_value": 114},
        pad={"size_divisor": 1},
    )
    m = plan(parse_spec(tiny_spec(input=inp)).input, 640, 480)
    assert (m.resized_w, m.resized_h, m.input_w, m.input_h, m.pad_left, m.pad_top) == (
        416,
        312,
        416,
        416,
        0,
        52,
    )


# ---------------------------------------------------------------- spec parsing


def test_spec_rejects_unknown_and_bad_values() -> None:
    with pytest.raises(SpecError, match="unknown field"):
        parse_spec(tiny_spec(extra=1))
    with pytest.raises(SpecError, match="format"):
        parse_spec(tiny_spec(format="anchorkit.detector/9"))
    bad_head = dict(tiny_spec()["head"])  # type: ignore[call-overload]
    bad_head["kind"] = "yolo"
    with pytest.raises(SpecError, match="head.kind"):
        parse_spec(tiny_spec(head=bad_head))


# ---------------------------------------------------------------- post-processing rules (4.1, 4.3, 5.1)


def one_level(
    cls_logits: list[list[float]], ctr_logits: list[float], h: int, w: int
) -> LevelRows:
    n = h * w
    return LevelRows(
        cls=np.array(cls_logits, F32).reshape(n, 3),
        reg=np.zeros((n, 4), F32),
        ctr=np.array(ctr_logits, F32),
        h=h,
        w=w,
        stride=8,
    )


def logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def test_mmdet_rule_pairwise_topk_ties_and_centerness() -> None:
    spec = parse_spec(
        tiny_spec(
            postprocess={
                "nms_pre": 3,
                "score_thr": 0.05,
                "iou_thr": 0.6,
                "max_per_img": 100,
            }
        )
    )
    meta = plan(spec.input, 1088, 800)  # identity scale
    assert (meta.scale_w, meta.scale_h) == (1.0, 1.0)
    lo = -9.0
    # 2x2 grid, A=1: anchors [-32,-32,32,32] shifted by 8 px, all overlapping heavily.
    cls = [
        [logit(0.5), logit(0.5), lo],
        [logit(0.06), lo, logit(0.5)],
        [lo, lo, lo],
        [logit(0.9), lo, lo],
    ]
    lv = one_level(cls, [logit(0.3), 0.0, 0.0, 0.0], 2, 2)
    d = postprocess(spec, [lv], meta)
    # Top-3 pairs: (row3,c0)=0.9, then the 0.5 ties by flat index: (row0,c0), (row0,c1); (row1,c2) and
    # (row1,c0)=0.06 fall out of nms_pre. Class-aware NMS: (row0,c0) overlaps (row3,c0) -> suppressed.
    assert d.labels.tolist() == [0, 1]
    np.testing.assert_allclose(d.scores, [0.9 * 0.5, 0.5 * 0.3], rtol=1e-6)
    # With nms_pre 1000, the 0.06 pair survives the threshold and its final score 0.018 < 0.05 stays.
    spec2 = parse_spec(
        tiny_spec(
            postprocess={
                "nms_pre": 1000,
                "score_thr": 0.05,
                "iou_thr": 0.99,
                "max_per_img": 100,
            }
        )
    )
    d2 = postprocess(spec2, [lv], meta)
    assert any(abs(s - 0.06 * 0.5) < 1e-6 for s in d2.scores.tolist())
    assert len(d2.scores) == 5


def test_mmdeploy_rule_thresholds_after_centerness() -> None:
    post = {
        "nms_pre": 1000,
        "score_thr": 0.05,
        "iou_thr": 0.99,
        "max_per_img": 100,
        "rule": "mmdeploy",
    }
    spec = parse_spec(tiny_spec(postprocess=post))
    meta = plan(spec.input, 1088, 800)
    lo = -9.0
    cls = [[logit(0.5), lo, lo], [logit(0.06), lo, lo], [lo, lo, lo], [lo, lo, lo]]
    d = postprocess(spec, [one_level(cls, [0.0, 0.0, 0.0, 0.0], 2, 2)], meta)
    # 0.06 * 0.5 = 0.03 <= 0.05 is dropped by the exact per-class NMS threshold.
    np.testing.assert_allclose(d.scores, [0.25], rtol=1e-6)


def test_clamp_resized_vs_padded() -> None:
    # 640x480 -> resized 1067x800, padded 1088x800, scale_w 1.6671875. One hot anchor at x=133
    # (centre 1064): [1032, -32, 1096, 32] before the clamp.
    lo = -9.0
    cls = [[lo, lo, lo] for _ in range(136)]
    cls[133][1] = logit(0.7)
    lv = LevelRows(
        np.array(cls, F32), np.zeros((136, 4), F32), np.zeros(136, F32), 1, 136, 8
    )
    for rule, x2 in (("mmdet", 1067.0), ("mmdeploy", 1088.0), ("legacy", 1067.0)):
        post = {
            "nms_pre": 1000,
            "score_thr": 0.05,
            "iou_thr": 0.6,
            "max_per_img": 100,
            "rule": rule,
        }
        spec = parse_spec(tiny_spec(postprocess=post))
        meta = plan(spec.input, 640, 480)
        d = postprocess(spec, [lv], meta)
        assert d.labels.tolist() == [1], rule
        want = np.array([1032, 0, x2, 32], F32) / np.array(
            [meta.scale_w, meta.scale_h] * 2, F32
        )
        np.testing.assert_allclose(d.boxes[0], want, rtol=1e-6, err_msg=rule)
