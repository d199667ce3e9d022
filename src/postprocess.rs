//! Full post-processing of one image: per-level selection, decode, rescale, NMS, max_per_img,
//! under one of three rules ([`PostprocessRule`]):
//!
//! * `Mmdet` (mmdet >= 2.18 and 3.x; `BaseDenseHead._predict_by_feat_single` +
//!   `filter_scores_and_topk` + `_bbox_post_process`; v2
//!   `mmdet/models/dense_heads/base_dense_head.py`, `mmdet/core/utils/misc.py`; v3 the same
//!   head file and `mmdet/models/utils/misc.py`):
//!   per level, pairs `(prior, class)` with `score > score_thr` (raw logits compared against
//!   `logit(score_thr)`), top `nms_pre` pairs, decode only those (clamped to the resized image);
//!   concat levels; rescale to original pixels (letterbox: subtract the pad offset, then divide
//!   by the f32 scale factors, as mmdet v2 does); multiply the sigmoid centerness (ATSS, no
//!   sqrt); with `min_bbox_size` set (mmdet 3.x) drop boxes with `w <= min` or `h <= min`;
//!   mmcv `batched_nms`; first `max_per_img`.
//! * `Mmdeploy` (end2end.onnx, `base_dense_head__predict_by_feat`, Appendix A item 11): per
//!   level top `nms_pre` priors by `max_c(score * ctr)` (no threshold), decode clamped to the
//!   padded input, score times ctr, pre-top-k 5000 rows, per-class exact NMS with onnxruntime
//!   `NonMaxSuppression` semantics (`score > score_thr` on the final score, at most 200 per
//!   class), top `max_per_img` overall, rescale afterwards.
//! * `Legacy` (mmdet <= 2.17 `get_bboxes` + `multiclass_nms`, 4.3): per level top `nms_pre`
//!   priors by `max_c(score * ctr)`, decode clamped to the resized image, rescale, pair-wise
//!   `score > score_thr` on the raw class score, times ctr, mmcv `batched_nms`, `max_per_img`.
//!
//! Ties are broken by ascending index everywhere (stable sorts); torch's sorts are unstable.
//! The centerness tensor is always passed through a sigmoid (mmdet heads output its logit).
//! For the anchor-wise rules, when `nms_pre == 0` or `nms_pre >= H*W*A` the level is kept in
//! prior order, as mmdet's `if 0 < nms_pre < n` does.

use crate::error::{Error, Result};
use crate::head::{
    LevelDecoder, LevelOutput, Pair, SelectScratch, check_level, gather_ctr, max_over_classes,
    priors_per_location, select_pairs, sigmoid,
};
use crate::nms::{batched_nms_fast, desc_key};
use crate::preprocess::ImageMeta;
use crate::spec::{DetectorSpec, PostprocessRule, ScoreActivation};

/// mmdeploy's `pre_top_k` (rows kept before NMS, by max class score).
pub const MMDEPLOY_PRE_TOP_K: usize = 5000;
/// mmdeploy's `max_output_boxes_per_class`.
pub const MMDEPLOY_MAX_PER_CLASS: usize = 200;

/// One detection in ORIGINAL image pixels, xyxy, no +1 (mmdet v2/v3 convention).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Detection {
    /// `[x1, y1, x2, y2]` in pixels of the original (EXIF-oriented) image.
    pub bbox: [f32; 4],
    /// Class probability (above the spec's `score_thr`), times the sigmoid centerness for heads
    /// that have one (ATSS, FCOS), as mmdet ranks them.
    pub score: f32,
    /// Index into the spec's `classes`.
    pub class_id: usize,
}

/// Full post-processing of one image per the spec's head + postprocess rule.
///
/// `levels[l]` holds the raw outputs of spec level `l` (see [`LevelOutput`] for shapes);
/// `meta` is the geometry from [`crate::preprocess::plan`]. Output: detections in original
/// pixels sorted by score descending (NMS order), at most `max_per_img`.
///
/// Errors: [`Error::InvalidInput`] when the number of levels or a tensor size disagrees with
/// the spec, or the priors and coder do not fit together.
pub fn postprocess(
    spec: &DetectorSpec,
    levels: &[LevelOutput],
    meta: &ImageMeta,
) -> Result<Vec<Detection>> {
    if levels.len() != spec.head.levels.len() {
        return Err(Error::InvalidInput(format!(
            "postprocess: got {} levels, the spec has {}",
            levels.len(),
            spec.head.levels.len()
        )));
    }
    for (l, out) in levels.iter().enumerate() {
        check_level(spec, l, out)?;
    }
    match spec.postprocess.rule {
        PostprocessRule::Mmdet => mmdet_rule(spec, levels, meta),
        PostprocessRule::Mmdeploy => mmdeploy_rule(spec, levels, meta),
        PostprocessRule::Legacy => legacy_rule(spec, levels, meta),
    }
}

/// Clamp region of the resized content in input pixels (mmdet `img_shape`; letterbox: offset).
fn content_region(meta: &ImageMeta) -> [f32; 4] {
    let (x0, y0) = (meta.pad_left as f32, meta.pad_top as f32);
    [
        x0,
        y0,
        (meta.pad_left + meta.resized_w) as f32,
        (meta.pad_top + meta.resized_h) as f32,
    ]
}

/// Input pixels -> original pixels: subtract the letterbox offset, divide by the f32 scale
/// factors (mmdet v2 `bboxes /= scale_factor`).
fn rescale(b: [f32; 4], meta: &ImageMeta) -> [f32; 4] {
    let (px, py) = (meta.pad_left as f32, meta.pad_top as f32);
    let (sx, sy) = (meta.scale_w as f32, meta.scale_h as f32);
    [
        (b[0] - px) / sx,
        (b[1] - py) / sy,
        (b[2] - px) / sx,
        (b[3] - py) / sy,
    ]
}

#[inline]
fn activate(act: ScoreActivation, v: f32) -> f32 {
    match act {
        ScoreActivation::Sigmoid => sigmoid(v),
        ScoreActivation::Activated => v,
    }
}

/// Concatenated candidates of all levels.
#[derive(Default)]
struct Candidates {
    boxes: Vec<[f32; 4]>,
    scores: Vec<f32>,
    labels: Vec<usize>,
}

impl Candidates {
    /// mmcv batched NMS (fast, identical result) + `max_per_img`, to detections.
    fn nms(self, spec: &DetectorSpec) -> Vec<Detection> {
        let pp = &spec.postprocess;
        let zero;
        let labels: &[usize] = if pp.class_agnostic {
            zero = vec![0usize; self.labels.len()];
            &zero
        } else {
            &self.labels
        };
        let keep = batched_nms_fast(
            &self.boxes,
            &self.scores,
            labels,
            pp.iou_thr,
            pp.max_per_img,
        );
        keep.into_iter()
            .map(|i| Detection {
                bbox: self.boxes[i],
                score: self.scores[i],
                class_id: self.labels[i],
            })
            .collect()
    }
}

/// Decoded, rescaled box of every pair (`boxes[j]` for `pairs[j]`), decoding each distinct
/// prior once: a prior appears once per class that passes `score_thr`, and the GFL
/// distribution decode (4 softmaxes over `reg_max + 1` bins) dominates post-processing when
/// it is repeated. Priors already decoded are found in `table` (scratch: open addressing,
/// linear probing, entries `(prior + 1) << 32 | pair index`, 0 = empty); the result is
/// identical to decoding every pair.
fn decode_distinct(
    pairs: &[Pair],
    dec: &mut LevelDecoder,
    reg: &[f32],
    meta: &ImageMeta,
    table: &mut Vec<u64>,
    boxes: &mut Vec<[f32; 4]>,
) {
    let size = (2 * pairs.len()).next_power_of_two().max(64);
    let shift = 64 - size.trailing_zeros();
    table.clear();
    table.resize(size, 0);
    boxes.clear();
    boxes.reserve(pairs.len());
    for (j, p) in pairs.iter().enumerate() {
        let key = p.prior as u64 + 1;
        let mut h = (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> shift) as usize;
        let b = loop {
            let e = table[h];
            if e == 0 {
                table[h] = (key << 32) | j as u64;
                break rescale(dec.decode(reg, p.prior as usize), meta);
            }
            if e >> 32 == key {
                break boxes[(e & 0xffff_ffff) as usize];
            }
            h = (h + 1) & (size - 1);
        };
        boxes.push(b);
    }
}

fn mmdet_rule(
    spec: &DetectorSpec,
    levels: &[LevelOutput],
    meta: &ImageMeta,
) -> Result<Vec<Detection>> {
    let pp = &spec.postprocess;
    let c_n = spec.classes.len();
    let clip = content_region(meta);
    let mut scratch = SelectScratch::default();
    let mut pairs: Vec<Pair> = Vec::new();
    let (mut table, mut boxes) = (Vec::new(), Vec::new());
    let mut cand = Candidates::default();
    for (l, out) in levels.iter().enumerate() {
        let a_n = priors_per_location(&spec.head.priors, l);
        let hw = out.h * out.w;
        select_pairs(
            out.cls,
            spec.head.layout,
            hw,
            a_n,
            c_n,
            spec.head.score,
            pp.score_thr,
            pp.nms_pre,
            &mut scratch,
            &mut pairs,
        );
        if pairs.is_empty() {
            continue;
        }
        let mut dec = LevelDecoder::new(spec, l, out.h, out.w, clip)?;
        let ctr = if spec.head.centerness {
            out.centerness
        } else {
            None
        };
        decode_distinct(&pairs, &mut dec, out.reg, meta, &mut table, &mut boxes);
        for (p, &b) in pairs.iter().zip(&boxes) {
            let i = p.prior as usize;
            let score = match ctr {
                Some(t) => p.score * sigmoid(gather_ctr(t, spec.head.layout, hw, a_n, i)),
                None => p.score,
            };
            if let Some(m) = pp.min_bbox_size
                && !(b[2] - b[0] > m && b[3] - b[1] > m)
            {
                continue;
            }
            cand.boxes.push(b);
            cand.scores.push(score);
            cand.labels.push(p.class as usize);
        }
    }
    Ok(cand.nms(spec))
}

/// Anchor-wise top-k of one level: rows (flat prior indices), their activated class scores
/// `[rows][C]`, and their sigmoid centerness (if the head has one). Ranking value per prior:
/// `max_c(score) * ctr` (= `max_c(score * ctr)`, the activation and the product being monotone).
fn anchorwise_topk(
    spec: &DetectorSpec,
    l: usize,
    out: &LevelOutput,
) -> (Vec<usize>, Vec<f32>, Option<Vec<f32>>) {
    let c_n = spec.classes.len();
    let a_n = priors_per_location(&spec.head.priors, l);
    let hw = out.h * out.w;
    let n = hw * a_n;
    let layout = spec.head.layout;
    let act = spec.head.score;
    let ctr_of = |i: usize| -> Option<f32> {
        match (spec.head.centerness, out.centerness) {
            (true, Some(t)) => Some(sigmoid(gather_ctr(t, layout, hw, a_n, i))),
            _ => None,
        }
    };
    let nms_pre = spec.postprocess.nms_pre;
    let rows: Vec<usize> = if nms_pre > 0 && nms_pre < n {
        let mut m = Vec::new();
        max_over_classes(out.cls, layout, hw, a_n, c_n, &mut m);
        let mut keys: Vec<u64> = m
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let s = activate(act, v);
                let r = match ctr_of(i) {
                    Some(c) => s * c,
                    None => s,
                };
                ((desc_key(r) as u64) << 32) | i as u64
            })
            .collect();
        keys.select_nth_unstable(nms_pre);
        keys.truncate(nms_pre);
        keys.sort_unstable();
        keys.iter().map(|k| (k & 0xffff_ffff) as usize).collect()
    } else {
        (0..n).collect()
    };
    let mut scores = Vec::with_capacity(rows.len() * c_n);
    for &i in &rows {
        let (loc, a) = (i / a_n, i % a_n);
        for c in 0..c_n {
            let v = match layout {
                crate::spec::TensorLayout::Nchw => out.cls[(a * c_n + c) * hw + loc],
                crate::spec::TensorLayout::Flat => out.cls[i * c_n + c],
            };
            scores.push(activate(act, v));
        }
    }
    let ctr = if spec.head.centerness && out.centerness.is_some() {
        Some(rows.iter().map(|&i| ctr_of(i).unwrap_or(1.0)).collect())
    } else {
        None
    };
    (rows, scores, ctr)
}

fn legacy_rule(
    spec: &DetectorSpec,
    levels: &[LevelOutput],
    meta: &ImageMeta,
) -> Result<Vec<Detection>> {
    let pp = &spec.postprocess;
    let c_n = spec.classes.len();
    let clip = content_region(meta);
    let mut cand = Candidates::default();
    for (l, out) in levels.iter().enumerate() {
        let (rows, scores, ctr) = anchorwise_topk(spec, l, out);
        let mut dec = LevelDecoder::new(spec, l, out.h, out.w, clip)?;
        for (r, &i) in rows.iter().enumerate() {
            let mut b = None;
            for c in 0..c_n {
                let s = scores[r * c_n + c];
                if s > pp.score_thr {
                    let bb = *b.get_or_insert_with(|| rescale(dec.decode(out.reg, i), meta));
                    let s = match &ctr {
                        Some(t) => s * t[r],
                        None => s,
                    };
                    cand.boxes.push(bb);
                    cand.scores.push(s);
                    cand.labels.push(c);
                }
            }
        }
    }
    Ok(cand.nms(spec))
}

/// onnxruntime `NonMaxSuppression` overlap test (`SuppressByIOU`, CPU kernel).
#[inline]
fn ort_suppress(a: &[f32; 4], b: &[f32; 4], thr: f32) -> bool {
    let (ax1, ax2) = (a[0].min(a[2]), a[0].max(a[2]));
    let (ay1, ay2) = (a[1].min(a[3]), a[1].max(a[3]));
    let (bx1, bx2) = (b[0].min(b[2]), b[0].max(b[2]));
    let (by1, by2) = (b[1].min(b[3]), b[1].max(b[3]));
    let (ix1, ix2) = (ax1.max(bx1), ax2.min(bx2));
    let (iy1, iy2) = (ay1.max(by1), ay2.min(by2));
    if ix2 <= ix1 || iy2 <= iy1 {
        return false;
    }
    let inter = (ix2 - ix1) * (iy2 - iy1);
    if inter <= 0.0 {
        return false;
    }
    let area_a = (ax2 - ax1) * (ay2 - ay1);
    let area_b = (bx2 - bx1) * (by2 - by1);
    let union = area_a + area_b - inter;
    if area_a <= 0.0 || area_b <= 0.0 || union <= 0.0 {
        return false;
    }
    inter / union > thr
}

/// onnxruntime `NonMaxSuppression` for one class over all rows: candidates `score > score_thr`
/// visited by score descending (ties: ascending row), greedy against the selected set, at most
/// `max_out`. Returns selected rows in selection order.
fn nms_onnxruntime(
    boxes: &[[f32; 4]],
    scores: impl Fn(usize) -> f32,
    n: usize,
    iou_thr: f32,
    score_thr: f32,
    max_out: usize,
) -> Vec<usize> {
    let mut keys: Vec<u64> = (0..n)
        .filter_map(|r| {
            let s = scores(r);
            (s > score_thr).then(|| ((desc_key(s) as u64) << 32) | r as u64)
        })
        .collect();
    keys.sort_unstable();
    let mut keep: Vec<usize> = Vec::new();
    for k in keys {
        if keep.len() >= max_out {
            break;
        }
        let r = (k & 0xffff_ffff) as usize;
        if keep
            .iter()
            .any(|&q| ort_suppress(&boxes[q], &boxes[r], iou_thr))
        {
            continue;
        }
        keep.push(r);
    }
    keep
}

fn mmdeploy_rule(
    spec: &DetectorSpec,
    levels: &[LevelOutput],
    meta: &ImageMeta,
) -> Result<Vec<Detection>> {
    let pp = &spec.postprocess;
    let c_n = spec.classes.len();
    let clip = [0.0, 0.0, meta.input_w as f32, meta.input_h as f32];
    let mut boxes: Vec<[f32; 4]> = Vec::new();
    let mut scores: Vec<f32> = Vec::new(); // [rows][C], times ctr
    for (l, out) in levels.iter().enumerate() {
        let (rows, s, ctr) = anchorwise_topk(spec, l, out);
        let mut dec = LevelDecoder::new(spec, l, out.h, out.w, clip)?;
        for (r, &i) in rows.iter().enumerate() {
            boxes.push(dec.decode(out.reg, i));
            for c in 0..c_n {
                let v = s[r * c_n + c];
                scores.push(match &ctr {
                    Some(t) => v * t[r],
                    None => v,
                });
            }
        }
    }
    let row_max = |scores: &[f32], r: usize| {
        scores[r * c_n..(r + 1) * c_n]
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max)
    };
    if boxes.len() > MMDEPLOY_PRE_TOP_K {
        let m: Vec<f32> = (0..boxes.len()).map(|r| row_max(&scores, r)).collect();
        let top = crate::head::topk_desc(&m, MMDEPLOY_PRE_TOP_K);
        boxes = top.iter().map(|&r| boxes[r]).collect();
        scores = top
            .iter()
            .flat_map(|&r| scores[r * c_n..(r + 1) * c_n].to_vec())
            .collect();
    }
    let n = boxes.len();
    // (row, label, score) in class-major selection order
    let mut sel: Vec<(usize, usize, f32)> = Vec::new();
    if pp.class_agnostic {
        let best: Vec<(usize, f32)> = (0..n)
            .map(|r| {
                let row = &scores[r * c_n..(r + 1) * c_n];
                // argmax: first maximum
                let mut bi = 0;
                for (c, &v) in row.iter().enumerate() {
                    if v > row[bi] {
                        bi = c;
                    }
                }
                (bi, row[bi])
            })
            .collect();
        for r in nms_onnxruntime(
            &boxes,
            |r| best[r].1,
            n,
            pp.iou_thr,
            pp.score_thr,
            MMDEPLOY_MAX_PER_CLASS,
        ) {
            sel.push((r, best[r].0, best[r].1));
        }
    } else {
        for c in 0..c_n {
            for r in nms_onnxruntime(
                &boxes,
                |r| scores[r * c_n + c],
                n,
                pp.iou_thr,
                pp.score_thr,
                MMDEPLOY_MAX_PER_CLASS,
            ) {
                sel.push((r, c, scores[r * c_n + c]));
            }
        }
    }
    // stable sort by score descending, keep max_per_img
    sel.sort_by(|a, b| b.2.total_cmp(&a.2));
    sel.truncate(pp.max_per_img);
    Ok(sel
        .into_iter()
        .map(|(r, c, s)| Detection {
            bbox: rescale(boxes[r], meta),
            score: s,
            class_id: c,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nms::batched_nms_mmcv;
    use crate::spec::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn retina_spec(rule: PostprocessRule, centerness: bool, c_n: usize) -> DetectorSpec {
        let levels = [8u32, 16, 32]
            .iter()
            .map(|&s| LevelSpec {
                stride: s,
                cls: format!("cls{s}"),
                reg: format!("reg{s}"),
                centerness: centerness.then(|| format!("ctr{s}")),
            })
            .collect();
        DetectorSpec {
            format: FORMAT_V1.into(),
            name: "t".into(),
            classes: (0..c_n).map(|c| format!("c{c}")).collect(),
            input: InputSpec {
                mean: [0.0; 3],
                std: [1.0; 3],
                ..InputSpec::mmdet_default()
            },
            head: HeadSpec {
                kind: if centerness {
                    HeadKind::Atss
                } else {
                    HeadKind::Retina
                },
                layout: TensorLayout::Nchw,
                levels,
                priors: PriorSpec::Anchors {
                    octave_base_scale: 4.0,
                    scales_per_octave: if centerness { 1 } else { 3 },
                    ratios: if centerness {
                        vec![1.0]
                    } else {
                        vec![0.5, 1.0, 2.0]
                    },
                    center_offset: 0.0,
                },
                coder: CoderSpec::DeltaXywh {
                    means: [0.0; 4],
                    stds: [0.1, 0.1, 0.2, 0.2],
                    wh_ratio_clip: 0.016,
                    clip_border: true,
                },
                score: ScoreActivation::Sigmoid,
                centerness,
            },
            postprocess: PostprocessSpec {
                nms_pre: 50,
                score_thr: 0.05,
                iou_thr: 0.5,
                max_per_img: 30,
                class_agnostic: false,
                rule,
                min_bbox_size: None,
            },
            provenance: None,
        }
    }

    struct Head {
        cls: Vec<Vec<f32>>,
        reg: Vec<Vec<f32>>,
        ctr: Vec<Vec<f32>>,
        hw: Vec<(usize, usize)>,
    }

    fn random_head(rng: &mut ChaCha8Rng, spec: &DetectorSpec, meta: &ImageMeta) -> Head {
        let a_n = priors_per_location(&spec.head.priors, 0);
        let c_n = spec.classes.len();
        let mut h = Head {
            cls: vec![],
            reg: vec![],
            ctr: vec![],
            hw: vec![],
        };
        for lv in &spec.head.levels {
            let (fh, fw) = (
                meta.input_h.div_ceil(lv.stride) as usize,
                meta.input_w.div_ceil(lv.stride) as usize,
            );
            let n = fh * fw * a_n;
            h.cls.push(
                (0..n * c_n)
                    .map(|_| {
                        if rng.random_bool(0.02) {
                            rng.random_range(-3.5f32..3.0)
                        } else {
                            rng.random_range(-8.0f32..-3.0)
                        }
                    })
                    .collect(),
            );
            h.reg
                .push((0..n * 4).map(|_| rng.random_range(-2.0f32..2.0)).collect());
            h.ctr
                .push((0..n).map(|_| rng.random_range(-3.0f32..3.0)).collect());
            h.hw.push((fh, fw));
        }
        h
    }

    fn outputs<'a>(h: &'a Head, ctr: bool) -> Vec<LevelOutput<'a>> {
        (0..h.cls.len())
            .map(|l| LevelOutput {
                cls: &h.cls[l],
                reg: &h.reg[l],
                centerness: ctr.then(|| h.ctr[l].as_slice()),
                h: h.hw[l].0,
                w: h.hw[l].1,
            })
            .collect()
    }

    /// Direct, unoptimized implementation of the mmdet >= 2.18 rule (full sigmoid, materialized
    /// anchors, NCHW->rows transpose, stable sort, mmcv NMS) as the oracle for `postprocess`.
    fn direct_mmdet(spec: &DetectorSpec, h: &Head, meta: &ImageMeta) -> Vec<Detection> {
        use crate::head::{DeltaParams, LevelPriors, delta2bbox};
        let c_n = spec.classes.len();
        let a_n = priors_per_location(&spec.head.priors, 0);
        let (mut boxes, mut scores, mut labels) = (vec![], vec![], vec![]);
        let dp = DeltaParams::new([0.0; 4], [0.1, 0.1, 0.2, 0.2], 0.016);
        for (l, lv) in spec.head.levels.iter().enumerate() {
            let (fh, fw) = h.hw[l];
            let hw = fh * fw;
            let anchors = LevelPriors::from_spec(&spec.head.priors, l, lv.stride)
                .unwrap()
                .grid(fh, fw);
            let mut pairs = vec![];
            for i in 0..hw * a_n {
                let (loc, a) = (i / a_n, i % a_n);
                for c in 0..c_n {
                    let s = sigmoid(h.cls[l][(a * c_n + c) * hw + loc]);
                    if s > spec.postprocess.score_thr {
                        pairs.push((i, c, s));
                    }
                }
            }
            pairs.sort_by(|x, y| y.2.total_cmp(&x.2));
            pairs.truncate(spec.postprocess.nms_pre);
            for (i, c, s) in pairs {
                let (loc, a) = (i / a_n, i % a_n);
                let d: [f32; 4] = std::array::from_fn(|k| h.reg[l][(a * 4 + k) * hw + loc]);
                let clip = [0.0, 0.0, meta.resized_w as f32, meta.resized_h as f32];
                let b = delta2bbox(anchors[i], d, &dp, Some(clip));
                let sw = meta.scale_w as f32;
                let sh = meta.scale_h as f32;
                boxes.push([b[0] / sw, b[1] / sh, b[2] / sw, b[3] / sh]);
                let f = if spec.head.centerness {
                    sigmoid(h.ctr[l][a * hw + loc])
                } else {
                    1.0
                };
                scores.push(s * f);
                labels.push(c);
            }
        }
        let keep = batched_nms_mmcv(&boxes, &scores, &labels, spec.postprocess.iou_thr);
        keep.into_iter()
            .take(spec.postprocess.max_per_img)
            .map(|i| Detection {
                bbox: boxes[i],
                score: scores[i],
                class_id: labels[i],
            })
            .collect()
    }

    #[test]
    fn mmdet_rule_matches_direct_implementation() {
        let seed = 5u64;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for (case, ctr) in [false, true, false, true].into_iter().enumerate() {
            let spec = retina_spec(PostprocessRule::Mmdet, ctr, 6);
            let meta = crate::preprocess::plan(&spec.input, 300 + 37 * case as u32, 200);
            let head = random_head(&mut rng, &spec, &meta);
            let got = postprocess(&spec, &outputs(&head, ctr), &meta).unwrap();
            let want = direct_mmdet(&spec, &head, &meta);
            assert!(got.len() > 5, "case {case}: too few detections");
            assert_eq!(got, want, "seed {seed} case {case}");
        }
    }

    #[test]
    fn rules_run_and_differ_sensibly() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        for rule in [PostprocessRule::Legacy, PostprocessRule::Mmdeploy] {
            for ctr in [false, true] {
                let spec = retina_spec(rule, ctr, 4);
                let meta = crate::preprocess::plan(&spec.input, 320, 240);
                let head = random_head(&mut rng, &spec, &meta);
                let d = postprocess(&spec, &outputs(&head, ctr), &meta).unwrap();
                assert!(!d.is_empty() && d.len() <= 30);
                for w in d.windows(2) {
                    assert!(w[0].score >= w[1].score);
                }
                for x in &d {
                    // mmdeploy clamps to the padded input, the others to the resized image
                    let max_x = if rule == PostprocessRule::Mmdeploy {
                        meta.input_w as f32 / meta.scale_w as f32
                    } else {
                        320.0
                    };
                    assert!(
                        x.bbox[0] >= 0.0 && x.bbox[2] <= max_x + 1e-3,
                        "{rule:?} {x:?}"
                    );
                    if rule == PostprocessRule::Mmdeploy {
                        assert!(x.score > 0.05);
                    }
                }
            }
        }
    }

    #[test]
    fn shape_errors_name_the_level() {
        let spec = retina_spec(PostprocessRule::Mmdet, false, 3);
        let meta = crate::preprocess::plan(&spec.input, 64, 64);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut head = random_head(&mut rng, &spec, &meta);
        head.reg[1].pop();
        let e = postprocess(&spec, &outputs(&head, false), &meta).unwrap_err();
        assert!(e.to_string().contains("level 1"), "{e}");
        let e = postprocess(&spec, &outputs(&head, false)[..2], &meta).unwrap_err();
        assert!(e.to_string().contains("got 2 levels"), "{e}");
    }

    #[test]
    fn ort_suppress_semantics() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert!(ort_suppress(&a, &[0.0, 0.0, 10.0, 9.0], 0.5));
        assert!(!ort_suppress(&a, &[10.0, 0.0, 20.0, 10.0], 0.0)); // touching: no overlap
        assert!(!ort_suppress(&a, &[5.0, 5.0, 5.0, 8.0], 0.0)); // zero area
        assert!(ort_suppress(&a, &[10.0, 10.0, 0.0, 1.0], 0.05)); // unnormalized corners
    }
}
