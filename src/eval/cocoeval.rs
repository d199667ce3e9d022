//! The COCO detection (bbox) evaluation protocol, step for step as pycocotools' `COCOeval`
//! (`pycocotools/cocoeval.py`: `evaluate`, `computeIoU`, `evaluateImg`, `accumulate`,
//! `summarize`; IoU from `maskApi.c` `bbIou`).
//!
//! Reproduced exactly, including its quirks:
//! - images are all GT images in ascending id order, categories all GT categories in ascending id
//!   order; GT and detections of one (image, category) keep their file order;
//! - detections are sorted by score with a *stable* sort (numpy `argsort(-s, kind='mergesort')`)
//!   and cut to `maxDets[-1]` = 100 per (image, category) *before* matching; matching is done once
//!   at 100 and the 1 / 10 cuts reuse it (as pycocotools does);
//! - GT `area` (the annotation field) decides the area range, detections use `w * h`; range bounds
//!   are inclusive on both ends (`area < lo or area > hi` is outside);
//! - crowd GT is ignored, can match several detections, and its IoU is `inter / det_area`;
//! - greedy matching in score order over GT sorted "not ignored first" (stable), threshold
//!   `min(t, 1 - 1e-10)`, ties go to the later GT (`iou < best` skips only strictly smaller);
//! - a detection's match is stored as the GT id and 0 means unmatched, so GT id 0 never counts;
//! - IoU thresholds and recall thresholds are numpy `linspace` values (see [`linspace`]);
//! - precision `tp / (fp + tp + eps)` with `eps = np.spacing(1)`, the right-to-left max envelope,
//!   `np.searchsorted(rc, recThrs, side='left')`, and 0 beyond the last reached recall;
//! - -1 for (category, area) cells without any non-ignored GT; means are over entries > -1, and a
//!   summary with no such entry is -1.

use crate::error::{Error, Result};
use crate::eval::coco::{CocoGt, DetRecord};
use rayon::prelude::*;
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::HashMap;

/// Short names of the 12 summary numbers, in pycocotools' `stats` order.
pub const STAT_NAMES: [&str; 12] = [
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
];

/// Labels of the area ranges, in pycocotools' order.
pub const AREA_LABELS: [&str; 4] = ["all", "small", "medium", "large"];

/// `np.spacing(1)`: the distance from 1.0 to the next double.
const EPS: f64 = f64::EPSILON;

/// numpy `linspace(start, stop, num, endpoint=True)` for float64, bit for bit:
/// `y[i] = i * ((stop - start) / (num - 1)) + start`, and `y[num - 1] = stop`
/// (numpy `_core/function_base.py`). pycocotools builds its thresholds this way, and its summary
/// selects AP50 / AP75 by exact equality with these values.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut y: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    y[num - 1] = stop;
    y
}

/// Evaluation parameters; [`Params::default`] is pycocotools' `Params.setDetParams()`.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// IoU thresholds T (default `linspace(0.5, 0.95, 10)`).
    pub iou_thrs: Vec<f64>,
    /// Recall thresholds R (default `linspace(0, 1, 101)`).
    pub rec_thrs: Vec<f64>,
    /// Maximum detections per image and category, ascending (default `[1, 10, 100]`).
    pub max_dets: Vec<usize>,
    /// Area ranges `[lo, hi]` in px² (default all `[0, 1e10]`, small `[0, 32²]`, medium
    /// `[32², 96²]`, large `[96², 1e10]`).
    pub area_rngs: Vec<[f64; 2]>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            iou_thrs: linspace(0.5, 0.95, 10),
            rec_thrs: linspace(0.0, 1.0, 101),
            max_dets: vec![1, 10, 100],
            area_rngs: vec![
                [0.0, 1e10],
                [0.0, 32.0 * 32.0],
                [32.0 * 32.0, 96.0 * 96.0],
                [96.0 * 96.0, 1e10],
            ],
        }
    }
}

/// AP of one category (area all, maxDets 100, mean over IoU 0.50:0.95 and the recall
/// thresholds; the definition detectron2 and mmdet print as per-class AP).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassAp {
    /// Ground-truth category id.
    pub category_id: i64,
    /// Category name.
    pub name: String,
    /// AP in [0, 1], or -1 when the category has no non-crowd ground truth.
    pub ap: f64,
    /// Number of non-crowd ground-truth boxes of this category.
    pub num_gt: usize,
}

/// Result of an evaluation: the 12 summary numbers, per-class AP and the accumulated arrays.
#[derive(Debug, Clone)]
pub struct EvalResult {
    /// The 12 numbers in [`STAT_NAMES`] order (pycocotools `COCOeval.stats`).
    pub stats: [f64; 12],
    /// Per-class AP in ascending category id order.
    pub per_class: Vec<ClassAp>,
    /// The parameters used.
    pub params: Params,
    /// `precision[t][r][k][a][m]` flattened row-major, shape `[T, R, K, A, M]`; -1 = absent.
    pub precision: Vec<f64>,
    /// `recall[t][k][a][m]` flattened row-major, shape `[T, K, A, M]`; -1 = absent.
    pub recall: Vec<f64>,
    /// Number of evaluated images.
    pub num_images: usize,
    /// Number of detections that took part (category known, within the per-image cut of 100).
    pub num_detections: usize,
}

/// Per (image, category, area range) matching result (pycocotools `evaluateImg` output).
struct ImgEval {
    /// Scores of the kept detections, sorted descending (stable).
    dt_scores: Vec<f64>,
    /// `[T * D]`: detection matched a GT with non-zero id (pycocotools `dtMatches != 0`).
    dt_matched: Vec<bool>,
    /// `[T * D]`: detection ignored.
    dt_ignore: Vec<bool>,
    /// Number of GT that are not ignored in this area range.
    num_gt_not_ignored: usize,
}

/// `maskApi.c` `bbIou` for one pair, in double precision; boxes `[x, y, w, h]`.
fn bb_iou(d: &[f64; 4], g: &[f64; 4], crowd: bool) -> f64 {
    let da = d[2] * d[3];
    let ga = g[2] * g[3];
    let w = (d[2] + d[0]).min(g[2] + g[0]) - d[0].max(g[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (d[3] + d[1]).min(g[3] + g[1]) - d[1].max(g[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let i = w * h;
    let u = if crowd { da } else { da + ga - i };
    i / u
}

/// Stable sort of indices by score descending (numpy `argsort(-s, kind='mergesort')`).
fn argsort_desc(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].partial_cmp(&scores[a]).unwrap_or(Ordering::Equal));
    idx
}

/// Evaluates one (image, category) pair for every area range (pycocotools `computeIoU` +
/// `evaluateImg` with `maxDet = maxDets[-1]`). `gts` / `dts` are in file order.
fn evaluate_pair(
    gt: &CocoGt,
    dets: &[DetRecord],
    gts: &[usize],
    dts: &[usize],
    p: &Params,
) -> Vec<Option<ImgEval>> {
    let n_area = p.area_rngs.len();
    if gts.is_empty() && dts.is_empty() {
        return (0..n_area).map(|_| None).collect();
    }
    let max_det = *p.max_dets.last().unwrap_or(&100);
    let scores: Vec<f64> = dts.iter().map(|&i| dets[i].score).collect();
    let mut order = argsort_desc(&scores);
    order.truncate(max_det);
    let dt: Vec<&DetRecord> = order.iter().map(|&o| &dets[dts[o]]).collect();
    let g_all: Vec<_> = gts.iter().map(|&i| &gt.annotations[i]).collect();
    let (nd, ng) = (dt.len(), g_all.len());
    // ious[d][g] in original GT order; empty when either side is empty (pycocotools returns []).
    let ious: Vec<f64> = if nd == 0 || ng == 0 {
        Vec::new()
    } else {
        let mut v = vec![0.0; nd * ng];
        for (di, d) in dt.iter().enumerate() {
            for (gi, g) in g_all.iter().enumerate() {
                v[di * ng + gi] = bb_iou(&d.bbox, &g.bbox, g.iscrowd);
            }
        }
        v
    };
    let t_n = p.iou_thrs.len();
    let dt_scores: Vec<f64> = dt.iter().map(|d| d.score).collect();
    let dt_area: Vec<f64> = dt.iter().map(|d| d.bbox[2] * d.bbox[3]).collect();
    p.area_rngs
        .iter()
        .map(|&[lo, hi]| {
            let ig: Vec<bool> = g_all
                .iter()
                .map(|g| g.iscrowd || g.area < lo || g.area > hi)
                .collect();
            // Stable sort of GT by ignore flag (not-ignored first).
            let mut gtind: Vec<usize> = (0..ng).collect();
            gtind.sort_by_key(|&i| ig[i]);
            let gt_ig: Vec<bool> = gtind.iter().map(|&i| ig[i]).collect();
            let crowd: Vec<bool> = gtind.iter().map(|&i| g_all[i].iscrowd).collect();
            let gt_id: Vec<i64> = gtind.iter().map(|&i| g_all[i].id).collect();
            // dtm holds the matched GT id (None = never matched), as pycocotools' dtMatches.
            let mut dtm: Vec<Option<i64>> = vec![None; t_n * nd];
            let mut dt_ig = vec![false; t_n * nd];
            if !ious.is_empty() {
                for (ti, &t) in p.iou_thrs.iter().enumerate() {
                    let mut gtm = vec![false; ng];
                    for di in 0..nd {
                        let mut iou = t.min(1.0 - 1e-10);
                        let mut m: Option<usize> = None;
                        for gi in 0..ng {
                            if gtm[gi] && !crowd[gi] {
                                continue;
                            }
                            if let Some(mm) = m
                                && !gt_ig[mm]
                                && gt_ig[gi]
                            {
                                break;
                            }
                            let v = ious[di * ng + gtind[gi]];
                            if v < iou {
                                continue;
                            }
                            iou = v;
                            m = Some(gi);
                        }
                        if let Some(mm) = m {
                            dt_ig[ti * nd + di] = gt_ig[mm];
                            dtm[ti * nd + di] = Some(gt_id[mm]);
                            gtm[mm] = true;
                        }
                    }
                }
            }
            // Unmatched (dtm == 0) detections outside the area range are ignored.
            let dt_matched: Vec<bool> = dtm
                .iter()
                .map(|m| matches!(m, Some(id) if *id != 0))
                .collect();
            for k in 0..t_n * nd {
                let area = dt_area[k % nd];
                if !dt_matched[k] && (area < lo || area > hi) {
                    dt_ig[k] = true;
                }
            }
            Some(ImgEval {
                dt_scores: dt_scores.clone(),
                dt_matched,
                dt_ignore: dt_ig,
                num_gt_not_ignored: gt_ig.iter().filter(|&&x| !x).count(),
            })
        })
        .collect()
}

/// Accumulates one category: returns `precision[t][r][a][m]` and `recall[t][a][m]` for it
/// (pycocotools `accumulate`, the loop body for one k).
fn accumulate_category(evals: &[Vec<Option<ImgEval>>], p: &Params) -> (Vec<f64>, Vec<f64>) {
    let (t_n, r_n, a_n, m_n) = (
        p.iou_thrs.len(),
        p.rec_thrs.len(),
        p.area_rngs.len(),
        p.max_dets.len(),
    );
    let mut prec = vec![-1.0; t_n * r_n * a_n * m_n];
    let mut rec = vec![-1.0; t_n * a_n * m_n];
    for a in 0..a_n {
        let e: Vec<&ImgEval> = evals.iter().filter_map(|per| per[a].as_ref()).collect();
        if e.is_empty() {
            continue;
        }
        let npig: usize = e.iter().map(|x| x.num_gt_not_ignored).sum();
        for (m, &max_det) in p.max_dets.iter().enumerate() {
            // Concatenate the first max_det detections of each image, in image order.
            let mut scores = Vec::new();
            let mut src: Vec<(usize, usize)> = Vec::new(); // (eval index, det index)
            for (ei, x) in e.iter().enumerate() {
                let n = x.dt_scores.len().min(max_det);
                scores.extend_from_slice(&x.dt_scores[..n]);
                src.extend((0..n).map(|d| (ei, d)));
            }
            if npig == 0 {
                continue;
            }
            let inds = argsort_desc(&scores);
            let nd = inds.len();
            for t in 0..t_n {
                let mut rc = Vec::with_capacity(nd);
                let mut pr = Vec::with_capacity(nd);
                let (mut tp, mut fp) = (0.0f64, 0.0f64);
                for &i in &inds {
                    let (ei, d) = src[i];
                    let x = e[ei];
                    let nde = x.dt_scores.len();
                    let matched = x.dt_matched[t * nde + d];
                    let ignored = x.dt_ignore[t * nde + d];
                    if !ignored {
                        if matched {
                            tp += 1.0;
                        } else {
                            fp += 1.0;
                        }
                    }
                    rc.push(tp / npig as f64);
                    pr.push(tp / (fp + tp + EPS));
                }
                rec[(t * a_n + a) * m_n + m] = if nd > 0 { rc[nd - 1] } else { 0.0 };
                for i in (1..nd).rev() {
                    if pr[i] > pr[i - 1] {
                        pr[i - 1] = pr[i];
                    }
                }
                // q starts at zeros; the first threshold beyond the reached recall ends the fill
                // (pycocotools' IndexError caught by `try: ... except: pass`).
                for (ri, &thr) in p.rec_thrs.iter().enumerate() {
                    let pi = rc.partition_point(|&x| x < thr);
                    prec[((t * r_n + ri) * a_n + a) * m_n + m] = if pi < nd { pr[pi] } else { 0.0 };
                    if pi >= nd {
                        for rj in ri + 1..r_n {
                            prec[((t * r_n + rj) * a_n + a) * m_n + m] = 0.0;
                        }
                        break;
                    }
                }
            }
        }
    }
    (prec, rec)
}

/// Runs the full protocol on `gt` and `dets` with the default [`Params`].
///
/// Detections of categories not in `gt.categories` are not evaluated (pycocotools selects by
/// `catIds`). Errors: [`Error::InvalidInput`] for a detection on an image id absent from the
/// ground truth (pycocotools' `loadRes` asserts the same) or a non-finite score / box.
pub fn evaluate(gt: &CocoGt, dets: &[DetRecord]) -> Result<EvalResult> {
    evaluate_with(gt, dets, Params::default())
}

/// [`evaluate`] with explicit parameters (`max_dets` must be ascending; the 12-number summary
/// looks up maxDets 1, 10, 100 and IoU 0.5 / 0.75 by exact value like pycocotools, giving -1
/// where absent).
///
/// Errors: as [`evaluate`], plus [`Error::InvalidInput`] for empty or unsorted `max_dets`.
pub fn evaluate_with(gt: &CocoGt, dets: &[DetRecord], p: Params) -> Result<EvalResult> {
    if p.max_dets.is_empty() || p.max_dets.windows(2).any(|w| w[0] > w[1]) {
        return Err(Error::InvalidInput(
            "max_dets must be non-empty and ascending".into(),
        ));
    }
    let mut img_ids: Vec<i64> = gt.images.iter().map(|i| i.id).collect();
    img_ids.sort_unstable();
    img_ids.dedup();
    let mut cat_ids: Vec<i64> = gt.categories.iter().map(|c| c.id).collect();
    cat_ids.sort_unstable();
    cat_ids.dedup();
    let img_index: HashMap<i64, usize> = img_ids.iter().enumerate().map(|(i, &v)| (v, i)).collect();
    let cat_index: HashMap<i64, usize> = cat_ids.iter().enumerate().map(|(i, &v)| (v, i)).collect();
    let (n_img, n_cat) = (img_ids.len(), cat_ids.len());

    // Group by (category, image), keeping file order.
    let mut gt_groups: Vec<Vec<usize>> = vec![Vec::new(); n_cat * n_img];
    for (ai, a) in gt.annotations.iter().enumerate() {
        if let (Some(&k), Some(&i)) = (cat_index.get(&a.category_id), img_index.get(&a.image_id)) {
            gt_groups[k * n_img + i].push(ai);
        }
    }
    let mut dt_groups: Vec<Vec<usize>> = vec![Vec::new(); n_cat * n_img];
    for (di, d) in dets.iter().enumerate() {
        let Some(&i) = img_index.get(&d.image_id) else {
            return Err(Error::InvalidInput(format!(
                "detection #{di} is for image id {} which is not in the ground truth",
                d.image_id
            )));
        };
        if !d.score.is_finite() || d.bbox.iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "detection #{di} (image id {}) has a non-finite score or box",
                d.image_id
            )));
        }
        if let Some(&k) = cat_index.get(&d.category_id) {
            dt_groups[k * n_img + i].push(di);
        }
    }

    let (t_n, r_n, a_n, m_n) = (
        p.iou_thrs.len(),
        p.rec_thrs.len(),
        p.area_rngs.len(),
        p.max_dets.len(),
    );
    let max_last = *p.max_dets.last().unwrap_or(&100);
    // Per category: evaluate all images, then accumulate (independent across categories).
    let per_cat: Vec<(Vec<f64>, Vec<f64>, usize)> = (0..n_cat)
        .into_par_iter()
        .map(|k| {
            let evals: Vec<Vec<Option<ImgEval>>> = (0..n_img)
                .map(|i| {
                    let idx = k * n_img + i;
                    evaluate_pair(gt, dets, &gt_groups[idx], &dt_groups[idx], &p)
                })
                .collect();
            let used: usize = (0..n_img)
                .map(|i| dt_groups[k * n_img + i].len().min(max_last))
                .sum();
            let (pr, rc) = accumulate_category(&evals, &p);
            (pr, rc, used)
        })
        .collect();

    let mut precision = vec![-1.0; t_n * r_n * n_cat * a_n * m_n];
    let mut recall = vec![-1.0; t_n * n_cat * a_n * m_n];
    let mut num_detections = 0;
    for (k, (pr, rc, used)) in per_cat.iter().enumerate() {
        num_detections += used;
        for t in 0..t_n {
            for a in 0..a_n {
                for m in 0..m_n {
                    recall[((t * n_cat + k) * a_n + a) * m_n + m] = rc[(t * a_n + a) * m_n + m];
                    for r in 0..r_n {
                        precision[(((t * r_n + r) * n_cat + k) * a_n + a) * m_n + m] =
                            pr[((t * r_n + r) * a_n + a) * m_n + m];
                    }
                }
            }
        }
    }

    let mut res = EvalResult {
        stats: [-1.0; 12],
        per_class: Vec::new(),
        params: p,
        precision,
        recall,
        num_images: n_img,
        num_detections,
    };
    res.stats = summarize(&res, n_cat);
    let names: HashMap<i64, &str> = gt
        .categories
        .iter()
        .map(|c| (c.id, c.name.as_str()))
        .collect();
    let mut num_gt = vec![0usize; n_cat];
    for a in &gt.annotations {
        if let (Some(&k), true) = (
            cat_index.get(&a.category_id),
            img_index.contains_key(&a.image_id),
        ) && !a.iscrowd
        {
            num_gt[k] += 1;
        }
    }
    res.per_class = cat_ids
        .iter()
        .enumerate()
        .map(|(k, &id)| ClassAp {
            category_id: id,
            name: names.get(&id).copied().unwrap_or("").to_string(),
            ap: mean_selected(
                &res,
                n_cat,
                true,
                None,
                0,
                res.params.max_dets.len() - 1,
                Some(k),
            ),
            num_gt: num_gt[k],
        })
        .collect();
    Ok(res)
}

/// Mean over entries > -1 of precision (ap) or recall for the selected IoU threshold (exact match
/// as `np.where(iouThr == p.iouThrs)`, or all), area index, maxDets index and optionally one
/// category; -1 if nothing qualifies (pycocotools `_summarize`).
fn mean_selected(
    r: &EvalResult,
    n_cat: usize,
    ap: bool,
    iou_thr: Option<f64>,
    a: usize,
    m: usize,
    only_k: Option<usize>,
) -> f64 {
    let p = &r.params;
    let (r_n, a_n, m_n) = (p.rec_thrs.len(), p.area_rngs.len(), p.max_dets.len());
    let (mut sum, mut n) = (0.0f64, 0usize);
    let ks: Vec<usize> = match only_k {
        Some(k) => vec![k],
        None => (0..n_cat).collect(),
    };
    for (t, &thr) in p.iou_thrs.iter().enumerate() {
        if iou_thr.is_some_and(|x| x != thr) {
            continue;
        }
        for &k in &ks {
            if ap {
                for ri in 0..r_n {
                    let v = r.precision[(((t * r_n + ri) * n_cat + k) * a_n + a) * m_n + m];
                    if v > -1.0 {
                        sum += v;
                        n += 1;
                    }
                }
            } else {
                let v = r.recall[((t * n_cat + k) * a_n + a) * m_n + m];
                if v > -1.0 {
                    sum += v;
                    n += 1;
                }
            }
        }
    }
    if n == 0 { -1.0 } else { sum / n as f64 }
}

/// pycocotools `_summarizeDets`: the 12 numbers.
fn summarize(r: &EvalResult, n_cat: usize) -> [f64; 12] {
    let p = &r.params;
    let area = |lbl: &str| AREA_LABELS.iter().position(|&l| l == lbl);
    let mdet = |v: usize| p.max_dets.iter().position(|&m| m == v);
    let md = &p.max_dets;
    let m_at = |i: usize| md.get(i).copied().unwrap_or(usize::MAX);
    let s = |ap: bool, thr: Option<f64>, a: &str, max_det: usize| -> f64 {
        match (area(a).filter(|&a| a < p.area_rngs.len()), mdet(max_det)) {
            (Some(a), Some(m)) => mean_selected(r, n_cat, ap, thr, a, m, None),
            _ => -1.0,
        }
    };
    [
        s(true, None, "all", 100),
        s(true, Some(0.5), "all", m_at(2)),
        s(true, Some(0.75), "all", m_at(2)),
        s(true, None, "small", m_at(2)),
        s(true, None, "medium", m_at(2)),
        s(true, None, "large", m_at(2)),
        s(false, None, "all", m_at(0)),
        s(false, None, "all", m_at(1)),
        s(false, None, "all", m_at(2)),
        s(false, None, "small", m_at(2)),
        s(false, None, "medium", m_at(2)),
        s(false, None, "large", m_at(2)),
    ]
}

impl EvalResult {
    /// The 12 lines exactly as pycocotools' `summarize()` prints them (3 decimals).
    pub fn summary_text(&self) -> String {
        let p = &self.params;
        let md = |i: usize| p.max_dets.get(i).copied().unwrap_or(0);
        let rows: [(bool, Option<f64>, &str, usize); 12] = [
            (true, None, "all", 100),
            (true, Some(0.5), "all", md(2)),
            (true, Some(0.75), "all", md(2)),
            (true, None, "small", md(2)),
            (true, None, "medium", md(2)),
            (true, None, "large", md(2)),
            (false, None, "all", md(0)),
            (false, None, "all", md(1)),
            (false, None, "all", md(2)),
            (false, None, "small", md(2)),
            (false, None, "medium", md(2)),
            (false, None, "large", md(2)),
        ];
        let first = p.iou_thrs.first().copied().unwrap_or(0.0);
        let last = p.iou_thrs.last().copied().unwrap_or(0.0);
        let mut out = String::new();
        for (i, (ap, thr, area, max_det)) in rows.iter().enumerate() {
            let title = if *ap {
                "Average Precision"
            } else {
                "Average Recall"
            };
            let typ = if *ap { "(AP)" } else { "(AR)" };
            let iou = match thr {
                Some(t) => format!("{t:0.2}"),
                None => format!("{first:0.2}:{last:0.2}"),
            };
            out.push_str(&format!(
                " {title:<18} {typ} @[ IoU={iou:<9} | area={area:>6} | maxDets={max_det:>3} ] = {:0.3}\n",
                self.stats[i]
            ));
        }
        out
    }

    /// A per-class AP table (id, name, GT count, AP with 3 decimals; -1 = no GT).
    pub fn per_class_text(&self) -> String {
        let w = self
            .per_class
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(4)
            .max(5);
        let mut out = format!(
            "{:>5}  {:<w$}  {:>6}  {:>6}\n",
            "id", "class", "num_gt", "AP"
        );
        for c in &self.per_class {
            out.push_str(&format!(
                "{:>5}  {:<w$}  {:>6}  {:>6.3}\n",
                c.category_id, c.name, c.num_gt, c.ap
            ));
        }
        out
    }

    /// The report written by `anchorkit eval --json`: the 12 numbers under pycocotools' short
    /// names, then per-class AP.
    pub fn to_json(&self) -> serde_json::Value {
        let mut stats = serde_json::Map::new();
        for (n, v) in STAT_NAMES.iter().zip(self.stats) {
            stats.insert((*n).to_string(), serde_json::json!(v));
        }
        serde_json::json!({
            "stats": stats,
            "per_class": self.per_class,
            "num_images": self.num_images,
            "num_detections": self.num_detections,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::coco::{Category, GtAnnotation, GtImage};

    #[test]
    fn linspace_matches_numpy_bits() {
        // Values printed by numpy 2.x: np.linspace(.5, .95, 10).tolist()
        let t = linspace(0.5, 0.95, 10);
        let numpy = [
            0.5,
            0.55,
            0.6,
            0.65,
            0.7,
            0.75,
            0.8,
            0.85,
            0.8999999999999999,
            0.95,
        ];
        assert_eq!(t, numpy);
        let r = linspace(0.0, 1.0, 101);
        assert_eq!(r.len(), 101);
        assert_eq!(r[3], 0.03);
        assert_eq!(r[100], 1.0);
    }

    fn one_image(anns: Vec<([f64; 4], bool, i64)>) -> CocoGt {
        CocoGt {
            images: vec![GtImage {
                id: 1,
                file_name: "a.jpg".into(),
                width: 100,
                height: 100,
            }],
            categories: vec![Category {
                id: 1,
                name: "x".into(),
            }],
            annotations: anns
                .into_iter()
                .map(|(b, crowd, id)| GtAnnotation {
                    id,
                    image_id: 1,
                    category_id: 1,
                    bbox: b,
                    area: b[2] * b[3],
                    iscrowd: crowd,
                })
                .collect(),
        }
    }

    fn det(b: [f64; 4], s: f64) -> DetRecord {
        DetRecord {
            image_id: 1,
            category_id: 1,
            bbox: b,
            score: s,
        }
    }

    #[test]
    fn perfect_detection_gives_one() {
        let gt = one_image(vec![([10.0, 10.0, 50.0, 50.0], false, 1)]);
        let r = evaluate(&gt, &[det([10.0, 10.0, 50.0, 50.0], 0.9)]).unwrap();
        // precision = tp / (tp + fp + eps) is 1 - 2.2e-16, as in pycocotools.
        assert!((r.stats[0] - 1.0).abs() < 1e-12);
        assert_eq!(r.stats[3], -1.0, "no small GT -> APs is -1");
        assert!((r.stats[4] - 1.0).abs() < 1e-12);
        assert_eq!(r.stats[8], 1.0, "recall is exactly 1");
    }

    #[test]
    fn gt_id_zero_never_counts_as_matched() {
        // pycocotools quirk: dtMatches stores the GT id and 0 means "unmatched".
        let gt = one_image(vec![([10.0, 10.0, 50.0, 50.0], false, 0)]);
        let r = evaluate(&gt, &[det([10.0, 10.0, 50.0, 50.0], 0.9)]).unwrap();
        assert_eq!(r.stats[0], 0.0);
    }

    #[test]
    fn crowd_match_is_ignored_not_false_positive() {
        let gt = one_image(vec![
            ([0.0, 0.0, 100.0, 100.0], true, 1),
            ([10.0, 10.0, 20.0, 20.0], false, 2),
        ]);
        // A det inside the crowd region (IoU with crowd = inter/det area = 1) is ignored; the
        // second det hits the real GT. AP is 1 only if the crowd-matched det is not an FP.
        let dets = [
            det([50.0, 50.0, 30.0, 30.0], 0.95),
            det([10.0, 10.0, 20.0, 20.0], 0.9),
        ];
        let r = evaluate(&gt, &dets).unwrap();
        assert!((r.stats[0] - 1.0).abs() < 1e-12, "{:?}", r.stats);
    }

    #[test]
    fn unknown_image_is_an_error() {
        let gt = one_image(vec![]);
        let mut d = det([0.0, 0.0, 1.0, 1.0], 0.5);
        d.image_id = 99;
        assert!(evaluate(&gt, &[d]).is_err());
    }

    #[test]
    fn summary_text_has_pycocotools_layout() {
        let gt = one_image(vec![([10.0, 10.0, 50.0, 50.0], false, 1)]);
        let r = evaluate(&gt, &[det([10.0, 10.0, 50.0, 50.0], 0.9)]).unwrap();
        let text = r.summary_text();
        let first = text.lines().next().unwrap();
        assert_eq!(
            first,
            " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 1.000"
        );
        assert!(text.contains(
            " Average Recall     (AR) @[ IoU=0.50:0.95 | area= small | maxDets=100 ] = -1.000"
        ));
    }
}
