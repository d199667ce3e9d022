"""Post-processing rules, per image (mmdet `base_dense_head.py`, mmdet 2.17 `anchor_head.py` and
`bbox_nms.py`, mmdeploy `codebase/mmdet/models/dense_heads/base_dense_head.py`).

- `mmdet` (mmdet >= 2.18 and 3.x, `BaseDenseHead._predict_by_feat_single` +
  `filter_scores_and_topk` + `_bbox_post_process`): pair-wise strict `score > score_thr`, per
  level top `nms_pre` pairs (0 = no limit; stable: ties by ascending flat index `row*C + c`), decode clamped
  to the resized image, rescale (divide by the f32 scale factors, v2) **before** NMS, multiply
  the sigmoid centerness, optional v3 `min_bbox_size` filter, mmcv `batched_nms`, `max_per_img`.
- `mmdeploy` (end2end.onnx, `base_dense_head__predict_by_feat`): per level top `nms_pre`
  anchors by `max_c(score * ctr)` with no threshold, decode clamped to the padded input, score
  times ctr, pre-top-k 5000, per-class exact NMS (onnxruntime semantics, `score > score_thr` on
  the final score, at most 200 per class), top `max_per_img` overall, rescale afterwards.
- `legacy` (mmdet <= 2.17 `get_bboxes` + `multiclass_nms`): per level top `nms_pre` anchors by
  `max_c(score * ctr)`, decode clamped to the resized image, rescale, pair-wise threshold on the
  raw score, times ctr, mmcv `batched_nms`, `max_per_img`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .coders import delta2bbox, distance2bbox, distribution_to_distance
from .nms import batched_nms_mmcv, nms_onnxruntime, stable_desc_order
from .preprocess import ImageMeta, level_hw
from .priors import level_priors
from .spec import DetectorSpec

F32 = np.float32
Arr = npt.NDArray[np.float32]
IntArr = npt.NDArray[np.int64]

MMDEPLOY_PRE_TOP_K = 5000
MMDEPLOY_MAX_PER_CLASS = 200


@dataclass
class LevelRows:
    """One level flattened to rows `(y*W + x)*A + a`: cls `[R, C]`, reg `[R, K]`, ctr `[R]` (raw)."""

    cls: Arr
    reg: Arr
    ctr: Arr | None
    h: int
    w: int
    stride: int


@dataclass
class Detections:
    """Final detections of one image in original pixels: boxes `[K, 4]` xyxy, scores, labels."""

    boxes: Arr
    scores: Arr
    labels: IntArr


def sigmoid(x: Arr) -> Arr:
    """Float32 logistic `1 / (1 + exp(-x))`."""
    with np.errstate(over="ignore"):
        return (F32(1) / (F32(1) + np.exp(-x.astype(F32)))).astype(F32)


def _rows_nchw(t: npt.NDArray[np.float32], k: int, name: str) -> tuple[Arr, int, int]:
    if t.ndim != 4:
        raise ValueError(
            f"output {name!r}: expected [N, A*K, H, W], got shape {list(t.shape)}"
        )
    x = t[0]
    ch, h, w = x.shape
    if ch % k:
        raise ValueError(f"output {name!r}: {ch} channels is not a multiple of {k}")
    return np.ascontiguousarray(x.transpose(1, 2, 0)).reshape(-1, k).astype(F32), h, w


def _rows_flat(t: npt.NDArray[np.float32], name: str) -> Arr:
    x = t[0] if t.ndim == 3 else t
    if x.ndim != 2:
        raise ValueError(
            f"output {name!r}: expected [N, R, K] or [R, K], got shape {list(t.shape)}"
        )
    return x.astype(F32)


def flatten_levels(
    spec: DetectorSpec, outputs: dict[str, npt.NDArray[np.float32]], meta: ImageMeta
) -> list[LevelRows]:
    """Slices image 0 of every level's outputs into rows (mmdet prior order `(y*W + x)*A + a`)."""
    head = spec.head
    a = head.priors.num_anchors()
    c = len(spec.classes)
    k = 4 * (head.coder.reg_max + 1) if head.coder.type == "distribution" else 4
    levels = []
    for lv in head.levels:
        for nm in (lv.cls, lv.reg) + ((lv.centerness,) if lv.centerness else ()):
            if nm not in outputs:
                raise ValueError(f"the graph has no output named {nm!r}")
        ctr: Arr | None = None
        if head.layout == "nchw":
            cls, h, w = _rows_nchw(outputs[lv.cls], c, lv.cls)
            reg, hr, wr = _rows_nchw(outputs[lv.reg], k, lv.reg)
            if head.centerness and lv.centerness:
                ctr = _rows_nchw(outputs[lv.centerness], 1, lv.centerness)[0][:, 0]
            if (hr, wr) != (h, w):
                raise ValueError(
                    f"level stride {lv.stride}: cls {h}x{w} and reg {hr}x{wr} differ"
                )
        else:
            h, w = level_hw(meta, lv.stride)
            cls = _rows_flat(outputs[lv.cls], lv.cls)
            reg = _rows_flat(outputs[lv.reg], lv.reg)
            if head.centerness and lv.centerness:
                ctr = _rows_flat(outputs[lv.centerness], lv.centerness)[:, 0]
        rows = h * w * a
        if (
            cls.shape != (rows, c)
            or reg.shape != (rows, k)
            or (ctr is not None and ctr.shape != (rows,))
        ):
            raise ValueError(
                f"level stride {lv.stride}: expected {rows} rows (H={h}, W={w}, A={a}) of C={c} / K={k}, got "
                f"cls {list(cls.shape)} reg {list(reg.shape)}"
            )
        levels.append(LevelRows(cls=cls, reg=reg, ctr=ctr, h=h, w=w, stride=lv.stride))
    return levels


def _scores(spec: DetectorSpec, cls: Arr) -> Arr:
    return sigmoid(cls) if spec.head.score == "sigmoid" else cls.astype(F32)


def _decode(
    spec: DetectorSpec,
    level: int,
    lv: LevelRows,
    rows: IntArr,
    max_wh: tuple[float, float] | None,
) -> Arr:
    """Decodes the boxes of `rows` of one level in input-tensor pixels, clamped to `max_wh`."""
    coder = spec.head.coder
    a = spec.head.priors.num_anchors()
    priors = level_priors(spec.head.priors, level, lv.stride, lv.h, lv.w)
    if spec.head.priors.type != "points":
        pr = priors[rows]
    else:
        pr = priors[rows // a]
    reg = lv.reg[rows]
    clip = max_wh if coder.clip_border else None
    if coder.type == "delta_xywh":
        if pr.shape[1] != 4:
            raise ValueError("the delta_xywh coder needs anchor priors")
        return delta2bbox(pr, reg, coder.means, coder.stds, clip, coder.wh_ratio_clip)
    if (
        pr.shape[1] == 4
    ):  # point coders on anchors use the anchor centres (mmdet GFL/FCOS style)
        pr = ((pr[:, :2] + pr[:, 2:]) * F32(0.5)).astype(F32)
    dist = (
        distribution_to_distance(reg, coder.reg_max)
        if coder.type == "distribution"
        else reg.astype(F32)
    )
    if coder.scale_by_stride:
        dist = dist * F32(lv.stride)
    return distance2bbox(pr, dist, clip)


def rescale(boxes: Arr, meta: ImageMeta) -> Arr:
    """Input pixels -> original pixels: subtract the letterbox offset, divide by f32 scale factors."""
    off = np.array(
        [meta.pad_left, meta.pad_top, meta.pad_left, meta.pad_top], dtype=F32
    )
    sf = np.array([meta.scale_w, meta.scale_h, meta.scale_w, meta.scale_h], dtype=F32)
    return ((boxes - off) / sf).astype(F32)


def _empty() -> Detections:
    return Detections(np.zeros((0, 4), F32), np.zeros(0, F32), np.zeros(0, np.int64))


def _decode_resized(
    spec: DetectorSpec, level: int, lv: LevelRows, rows: IntArr, meta: ImageMeta
) -> Arr:
    """Decodes clamped to the resized content (mmdet `img_shape`); letterbox content is offset."""
    if meta.pad_left == 0 and meta.pad_top == 0:
        return _decode(
            spec, level, lv, rows, (float(meta.resized_w), float(meta.resized_h))
        )
    boxes = _decode(spec, level, lv, rows, None)
    if not spec.head.coder.clip_border:
        return boxes
    out = boxes.copy()
    out[:, 0::2] = np.clip(
        out[:, 0::2], F32(meta.pad_left), F32(meta.pad_left + meta.resized_w)
    )
    out[:, 1::2] = np.clip(
        out[:, 1::2], F32(meta.pad_top), F32(meta.pad_top + meta.resized_h)
    )
    return out


def postprocess_mmdet(
    spec: DetectorSpec, levels: list[LevelRows], meta: ImageMeta
) -> Detections:
    """The mmdet >= 2.18 / 3.x rule (see the module docstring)."""
    pp = spec.postprocess
    c = len(spec.classes)
    thr = F32(pp.score_thr)
    all_boxes, all_scores, all_labels, all_ctr = [], [], [], []
    for li, lv in enumerate(levels):
        flat = _scores(spec, lv.cls).reshape(-1)
        valid = np.nonzero(flat > thr)[0]
        vs = flat[valid]
        k = valid.size if pp.nms_pre == 0 else min(pp.nms_pre, valid.size)
        order = stable_desc_order(vs)[:k]
        idx = valid[order]
        rows, labels = idx // c, idx % c
        boxes = _decode_resized(spec, li, lv, rows, meta)
        all_boxes.append(boxes)
        all_scores.append(vs[order])
        all_labels.append(labels.astype(np.int64))
        if spec.head.centerness and lv.ctr is not None:
            all_ctr.append(sigmoid(lv.ctr[rows]))
    boxes = rescale(np.concatenate(all_boxes), meta)
    scores = np.concatenate(all_scores).astype(F32)
    labels = np.concatenate(all_labels)
    if all_ctr:
        scores = (scores * np.concatenate(all_ctr)).astype(F32)
    if pp.min_bbox_size is not None:
        m = F32(pp.min_bbox_size)
        ok = ((boxes[:, 2] - boxes[:, 0]) > m) & ((boxes[:, 3] - boxes[:, 1]) > m)
        boxes, scores, labels = boxes[ok], scores[ok], labels[ok]
    if boxes.shape[0] == 0:
        return _empty()
    keep = batched_nms_mmcv(boxes, scores, labels, pp.iou_thr, pp.class_agnostic)[
        : pp.max_per_img
    ]
    return Detections(boxes[keep], scores[keep], labels[keep])


def _anchorwise_topk(
    spec: DetectorSpec, lv: LevelRows
) -> tuple[IntArr, Arr, Arr | None]:
    """Rows of the per-level top `nms_pre` anchors by `max_c(score * ctr)` (no threshold)."""
    scores = _scores(spec, lv.cls)
    ctr = sigmoid(lv.ctr) if (spec.head.centerness and lv.ctr is not None) else None
    n = scores.shape[0]
    nms_pre = spec.postprocess.nms_pre
    if 0 < nms_pre < n:
        ranked = scores * ctr[:, None] if ctr is not None else scores
        rows = stable_desc_order(ranked.max(axis=1))[:nms_pre]
    else:
        rows = np.arange(n, dtype=np.int64)
    return rows, scores[rows], None if ctr is None else ctr[rows]


def postprocess_mmdeploy(
    spec: DetectorSpec, levels: list[LevelRows], meta: ImageMeta
) -> Detections:
    """The mmdeploy end2end rule (Appendix A item 11; see the module docstring)."""
    pp = spec.postprocess
    all_boxes, all_scores = [], []
    for li, lv in enumerate(levels):
        rows, scores, ctr = _anchorwise_topk(spec, lv)
        boxes = _decode(spec, li, lv, rows, (float(meta.input_w), float(meta.input_h)))
        all_boxes.append(boxes)
        all_scores.append(scores * ctr[:, None] if ctr is not None else scores)
    boxes = np.concatenate(all_boxes).astype(F32)
    scores = np.concatenate(all_scores).astype(F32)
    if boxes.shape[0] > MMDEPLOY_PRE_TOP_K:
        top = stable_desc_order(scores.max(axis=1))[:MMDEPLOY_PRE_TOP_K]
        boxes, scores = boxes[top], scores[top]
    sel_rows: list[IntArr] = []
    sel_labels: list[IntArr] = []
    for c in range(scores.shape[1]):
        if pp.class_agnostic:
            break
        k = nms_onnxruntime(
            boxes, scores[:, c], pp.iou_thr, pp.score_thr, MMDEPLOY_MAX_PER_CLASS
        )
        sel_rows.append(k)
        sel_labels.append(np.full(k.size, c, dtype=np.int64))
    if pp.class_agnostic:
        best = scores.argmax(axis=1)
        k = nms_onnxruntime(
            boxes, scores.max(axis=1), pp.iou_thr, pp.score_thr, MMDEPLOY_MAX_PER_CLASS
        )
        sel_rows, sel_labels = [k], [best[k].astype(np.int64)]
    rows = np.concatenate(sel_rows) if sel_rows else np.zeros(0, np.int64)
    labels = np.concatenate(sel_labels) if sel_labels else np.zeros(0, np.int64)
    if rows.size == 0:
        return _empty()
    s = scores[rows, labels].astype(F32)
    top = stable_desc_order(s)[: pp.max_per_img]
    return Detections(rescale(boxes[rows[top]], meta), s[top], labels[top])


def postprocess_legacy(
    spec: DetectorSpec, levels: list[LevelRows], meta: ImageMeta
) -> Detections:
    """The mmdet <= 2.17 rule (see the module docstring)."""
    pp = spec.postprocess
    all_boxes, all_scores, all_ctr = [], [], []
    for li, lv in enumerate(levels):
        rows, scores, ctr = _anchorwise_topk(spec, lv)
        boxes = _decode_resized(spec, li, lv, rows, meta)
        all_boxes.append(boxes)
        all_scores.append(scores)
        if ctr is not None:
            all_ctr.append(ctr)
    boxes = rescale(np.concatenate(all_boxes), meta)
    scores = np.concatenate(all_scores).astype(F32)
    c = scores.shape[1]
    flat = scores.reshape(-1)
    valid = np.nonzero(flat > F32(pp.score_thr))[0]
    rows, labels = valid // c, (valid % c).astype(np.int64)
    s = flat[valid]
    if all_ctr:
        s = (s * np.concatenate(all_ctr)[rows]).astype(F32)
    if valid.size == 0:
        return _empty()
    b = boxes[rows]
    keep = batched_nms_mmcv(b, s, labels, pp.iou_thr, pp.class_agnostic)[
        : pp.max_per_img
    ]
    return Detections(b[keep], s[keep], labels[keep])


def postprocess(
    spec: DetectorSpec, levels: list[LevelRows], meta: ImageMeta
) -> Detections:
    """Dispatches on `spec.postprocess.rule`."""
    rule = spec.postprocess.rule
    if rule == "mmdet":
        return postprocess_mmdet(spec, levels, meta)
    if rule == "mmdeploy":
        return postprocess_mmdeploy(spec, levels, meta)
    return postprocess_legacy(spec, levels, meta)
