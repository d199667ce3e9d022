//! Assigner-aware evaluation of an anchor set on real FPN grids: every image's anchors are laid
//! out as mmdet does (grid `ceil(H_pad / s) x ceil(W_pad / s)` per level, anchor `base + (x s, y s)`,
//! flat index `(y W + x) A + a`, [`AnchorSet`]), and each ground truth is assigned with the exact
//! rules of:
//!
//! - **ATSS** (`mmdet/core/bbox/assigners/atss_assigner.py`, `ATSSAssigner.assign`):
//!   per level the `k = min(9, anchors in level)` anchors with the smallest centre distance, IoU
//!   threshold `mean + std` (unbiased) of the `L k` candidates, positive if `IoU >= thr` and the
//!   anchor centre is inside the gt by more than 0.01; an anchor positive for several gts goes to
//!   the one with the highest IoU (first gt on a tie).
//! - **max-IoU** (RetinaNet `MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0)`,
//!   `match_low_quality=True`, `gt_max_assign_all=True`): positive when the anchor's max IoU over
//!   gts is `>= 0.5` (argmax gt), then for every gt in order all anchors whose IoU equals the gt's
//!   best IoU are (re)assigned to it.
//! - **FreeAnchor** bags (`free_anchor_retina_head.py`, 6.1): the 50 anchors of highest IoU with
//!   the gt; reported as the bag's mean IoU.
//! - **Pseudo-IoU** (`piou_head.py`, 6.3), point heads: points `(x s + s//2, y s + s//2)`, FCOS
//!   candidates (inside the gt, `max(l,t,r,b)` in the level's regress range `[4 s, 8 s]`, first
//!   level from -1, last to infinity; smallest-area gt wins), kept when
//!   `PIoU = inter / (2 w h - inter) > 0.4`. Independent of the anchor shapes.
//!
//! IoU is mmdet `bbox_overlaps` in f32 (no `+1`, union clamped at 1e-6). Instead of the full
//! `N x G` matrix, each gt visits only the anchors that can overlap it, shape by shape in order
//! of the area bound `min(area) / max(area)` (an upper bound of IoU), skipping shapes that
//! cannot change any statistic. Results are identical to the brute-force assigners (tests).
//! ATSS centre-distance ties are broken by the lower flat anchor index (torch's `topk` order on
//! ties is unspecified).

use super::anchors::AnchorSet;
use crate::dataset::MappedImage;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashMap;

/// Evaluation settings (mmdet defaults).
#[derive(Debug, Clone, Serialize)]
pub struct GridConfig {
    /// ATSS `topk` per level.
    pub atss_topk: usize,
    /// Max-IoU positive threshold.
    pub pos_iou_thr: f32,
    /// FreeAnchor `pre_anchor_topk`.
    pub bag_topk: usize,
    /// Pseudo-IoU threshold.
    pub piou_thr: f32,
}

impl Default for GridConfig {
    fn default() -> Self {
        GridConfig {
            atss_topk: 9,
            pos_iou_thr: 0.5,
            bag_topk: 50,
            piou_thr: 0.4,
        }
    }
}

/// Per-gt results.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GtResult {
    pub class_id: u32,
    /// Best IoU over all anchors of the image at their grid positions.
    pub best_iou: f32,
    /// ATSS positives.
    pub atss_pos: u32,
    /// Max-IoU positives (after low-quality matching).
    pub maxiou_pos: u32,
    /// Max-IoU positives with IoU >= 0.5 (before low-quality matching).
    pub maxiou_hq: u32,
    /// Mean IoU of the FreeAnchor bag (top `bag_topk` anchors).
    pub bag_iou: f32,
    /// Pseudo-IoU positives (point head).
    pub piou_pos: u32,
}

/// mmdet `bbox_overlaps` (mode iou, no +1, eps 1e-6) in f32.
#[inline(always)]
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let area1 = (a[2] - a[0]) * (a[3] - a[1]);
    let area2 = (b[2] - b[0]) * (b[3] - b[1]);
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let ov = w * h;
    ov / (area1 + area2 - ov).max(1e-6)
}

/// Grid size `(H, W)` of every level for a padded input `(w, h)`.
pub fn grid_sizes(padded: (u32, u32), strides: &[u32]) -> Vec<(usize, usize)> {
    strides
        .iter()
        .map(|&s| (padded.1.div_ceil(s) as usize, padded.0.div_ceil(s) as usize))
        .collect()
}

/// FCOS regress ranges for the strides: `[4 s, 8 s]`, the first from -1, the last unbounded
/// (equals mmdet's `((-1, 64), (64, 128), (128, 256), (256, 512), (512, INF))` for 8..128).
pub fn regress_ranges(strides: &[u32]) -> Vec<(f32, f32)> {
    let n = strides.len();
    strides
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let lo = if i == 0 { -1.0 } else { 4.0 * s as f32 };
            let hi = if i + 1 == n { 1e8 } else { 8.0 * s as f32 };
            (lo, hi)
        })
        .collect()
}

struct Grid<'a> {
    set: &'a AnchorSet,
    sizes: Vec<(usize, usize)>,
    offsets: Vec<usize>,
    a: usize,
}

impl<'a> Grid<'a> {
    fn new(set: &'a AnchorSet, padded: (u32, u32)) -> Self {
        let sizes = grid_sizes(padded, &set.strides);
        let a = set.num_anchors();
        let mut offsets = Vec::with_capacity(sizes.len());
        let mut o = 0;
        for &(h, w) in &sizes {
            offsets.push(o);
            o += h * w * a;
        }
        Grid {
            set,
            sizes,
            offsets,
            a,
        }
    }

    #[inline(always)]
    fn anchor(&self, l: usize, a: usize, x: usize, y: usize) -> [f32; 4] {
        let s = self.set.strides[l] as f32;
        let b = &self.set.base[l][a];
        let (sx, sy) = (x as f32 * s, y as f32 * s);
        [b[0] + sx, b[1] + sy, b[2] + sx, b[3] + sy]
    }

    #[inline(always)]
    fn index(&self, l: usize, a: usize, x: usize, y: usize) -> u32 {
        (self.offsets[l] + (y * self.sizes[l].1 + x) * self.a + a) as u32
    }

    /// Cell range `[lo, hi]` (inclusive) of shifts where `[b0 + x s, b1 + x s]` can overlap
    /// `[g0, g1]`, clipped to `[0, n - 1]`; `None` if empty.
    fn range(b0: f32, b1: f32, g0: f32, g1: f32, s: f32, n: usize) -> Option<(usize, usize)> {
        let lo = ((g0 - b1) / s).floor() - 1.0;
        let hi = ((g1 - b0) / s).ceil() + 1.0;
        let lo = lo.max(0.0) as i64;
        let hi = (hi as i64).min(n as i64 - 1);
        if hi < lo {
            None
        } else {
            Some((lo as usize, hi as usize))
        }
    }
}

/// A fixed-capacity min-heap of the largest values (for the FreeAnchor bag).
struct TopK {
    k: usize,
    v: std::collections::BinaryHeap<std::cmp::Reverse<OrdF32>>,
}

#[derive(PartialEq, Clone, Copy)]
struct OrdF32(f32);
impl Eq for OrdF32 {}
impl PartialOrd for OrdF32 {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for OrdF32 {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

impl TopK {
    fn new(k: usize) -> Self {
        TopK {
            k,
            v: std::collections::BinaryHeap::with_capacity(k + 1),
        }
    }
    fn full(&self) -> bool {
        self.v.len() >= self.k
    }
    fn min(&self) -> f32 {
        self.v.peek().map_or(0.0, |r| r.0.0)
    }
    fn push(&mut self, x: f32) {
        if self.v.len() < self.k {
            self.v.push(std::cmp::Reverse(OrdF32(x)));
        } else if x > self.min() {
            self.v.pop();
            self.v.push(std::cmp::Reverse(OrdF32(x)));
        }
    }
    fn mean(&self) -> f32 {
        (self.v.iter().map(|r| r.0.0 as f64).sum::<f64>() / self.k.max(1) as f64) as f32
    }
}

/// What one gt needs from the overlap scan.
struct Scan {
    best: f32,
    ties: Vec<u32>,
    hq: Vec<(u32, f32)>,
    bag: TopK,
}

fn scan_gt(g: &Grid, gt: &[f32; 4], cfg: &GridConfig) -> Scan {
    let garea = (gt[2] - gt[0]) * (gt[3] - gt[1]);
    // shapes in order of decreasing area bound
    let mut order: Vec<(f32, usize, usize)> = Vec::new();
    for (l, base) in g.set.base.iter().enumerate() {
        for (a, b) in base.iter().enumerate() {
            let ar = (b[2] - b[0]) * (b[3] - b[1]);
            order.push((ar.min(garea) / ar.max(garea), l, a));
        }
    }
    order.sort_by(|x, y| y.0.total_cmp(&x.0).then((x.1, x.2).cmp(&(y.1, y.2))));
    let mut sc = Scan {
        best: 0.0,
        ties: Vec::new(),
        hq: Vec::new(),
        bag: TopK::new(cfg.bag_topk),
    };
    let eps = 1e-5f32;
    for &(bound, l, a) in &order {
        let need_best = bound + eps >= sc.best;
        let need_hq = bound + eps >= cfg.pos_iou_thr;
        let need_bag = !sc.bag.full() || bound + eps > sc.bag.min();
        if !(need_best || need_hq || need_bag) {
            continue;
        }
        let s = g.set.strides[l] as f32;
        let b = g.set.base[l][a];
        let (gh, gw) = g.sizes[l];
        let Some((x0, x1)) = Grid::range(b[0], b[2], gt[0], gt[2], s, gw) else {
            continue;
        };
        let Some((y0, y1)) = Grid::range(b[1], b[3], gt[1], gt[3], s, gh) else {
            continue;
        };
        for y in y0..=y1 {
            for x in x0..=x1 {
                let an = g.anchor(l, a, x, y);
                let v = iou(&an, gt);
                if v <= 0.0 {
                    continue;
                }
                let idx = g.index(l, a, x, y);
                if v > sc.best {
                    sc.best = v;
                    sc.ties.clear();
                    sc.ties.push(idx);
                } else if v == sc.best {
                    sc.ties.push(idx);
                }
                if v >= cfg.pos_iou_thr {
                    sc.hq.push((idx, v));
                }
                sc.bag.push(v);
            }
        }
    }
    // anchors with IoU 0 fill the bag when fewer than bag_topk overlap (mean counts them as 0)
    sc
}

/// ATSS candidates of one gt: `(flat index, IoU, centre inside)` for the `k` nearest anchors
/// of every level.
fn atss_candidates(g: &Grid, gt: &[f32; 4], topk: usize) -> Vec<(u32, f32, bool)> {
    let gcx = (gt[0] + gt[2]) / 2.0;
    let gcy = (gt[1] + gt[3]) / 2.0;
    let mut out = Vec::with_capacity(topk * g.sizes.len());
    for (l, &(gh, gw)) in g.sizes.iter().enumerate() {
        let s = g.set.strides[l] as f32;
        let n_level = gh * gw * g.a;
        let k = topk.min(n_level);
        if k == 0 {
            continue;
        }
        let c = (g.set.center_offset as f32) * s;
        let cx = ((gcx - c) / s).round().clamp(0.0, gw as f32 - 1.0) as i64;
        let cy = ((gcy - c) / s).round().clamp(0.0, gh as f32 - 1.0) as i64;
        let mut r: i64 = 2;
        loop {
            let x0 = (cx - r).max(0);
            let x1 = (cx + r).min(gw as i64 - 1);
            let y0 = (cy - r).max(0);
            let y1 = (cy + r).min(gh as i64 - 1);
            let mut cand: Vec<(f32, u32, [f32; 4])> = Vec::new();
            for y in y0..=y1 {
                for x in x0..=x1 {
                    for a in 0..g.a {
                        let an = g.anchor(l, a, x as usize, y as usize);
                        let acx = (an[0] + an[2]) / 2.0;
                        let acy = (an[1] + an[3]) / 2.0;
                        let d = ((acx - gcx) * (acx - gcx) + (acy - gcy) * (acy - gcy)).sqrt();
                        cand.push((d, g.index(l, a, x as usize, y as usize), an));
                    }
                }
            }
            cand.sort_by(|p, q| p.0.total_cmp(&q.0).then(p.1.cmp(&q.1)));
            let kk = k.min(cand.len());
            let dk = cand[kk - 1].0;
            // smallest possible distance of an anchor centre outside the window
            let mut outside = f32::INFINITY;
            if x0 > 0 {
                outside = outside.min(gcx - ((x0 - 1) as f32 * s + c));
            }
            if x1 < gw as i64 - 1 {
                outside = outside.min(((x1 + 1) as f32 * s + c) - gcx);
            }
            if y0 > 0 {
                outside = outside.min(gcy - ((y0 - 1) as f32 * s + c));
            }
            if y1 < gh as i64 - 1 {
                outside = outside.min(((y1 + 1) as f32 * s + c) - gcy);
            }
            let covers_all = x0 == 0 && y0 == 0 && x1 == gw as i64 - 1 && y1 == gh as i64 - 1;
            if kk == k && (covers_all || dk + 1e-3 * s < outside) {
                for &(_, idx, an) in &cand[..k] {
                    let acx = (an[0] + an[2]) / 2.0;
                    let acy = (an[1] + an[3]) / 2.0;
                    let inside = (acx - gt[0])
                        .min(acy - gt[1])
                        .min(gt[2] - acx)
                        .min(gt[3] - acy)
                        > 0.01;
                    out.push((idx, iou(&an, gt), inside));
                }
                break;
            }
            r *= 2;
        }
    }
    out
}

/// ATSS positives of all gts of one image after conflict resolution, as counts per gt.
fn atss_image(g: &Grid, gts: &[[f32; 4]], topk: usize) -> Vec<u32> {
    let mut pos: Vec<(u32, u32, f32)> = Vec::new(); // (anchor, gt, iou)
    for (gi, gt) in gts.iter().enumerate() {
        let cand = atss_candidates(g, gt, topk);
        let n = cand.len();
        if n == 0 {
            continue;
        }
        let mean = cand.iter().map(|c| c.1).sum::<f32>() / n as f32;
        let std = if n > 1 {
            (cand
                .iter()
                .map(|c| (c.1 - mean) * (c.1 - mean))
                .sum::<f32>()
                / (n - 1) as f32)
                .sqrt()
        } else {
            f32::NAN
        };
        let thr = mean + std;
        for &(idx, v, inside) in &cand {
            if v >= thr && inside {
                pos.push((idx, gi as u32, v));
            }
        }
    }
    resolve_max(&mut pos, gts.len())
}

/// Anchor -> gt with the highest IoU (first gt on ties); counts per gt.
fn resolve_max(pos: &mut [(u32, u32, f32)], ngt: usize) -> Vec<u32> {
    pos.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut counts = vec![0u32; ngt];
    let mut i = 0;
    while i < pos.len() {
        let mut j = i;
        let mut best = pos[i];
        while j < pos.len() && pos[j].0 == pos[i].0 {
            if pos[j].2 > best.2 {
                best = pos[j];
            }
            j += 1;
        }
        counts[best.1 as usize] += 1;
        i = j;
    }
    counts
}

/// Pseudo-IoU positives per gt (points; independent of anchor shapes).
pub fn piou_image(padded: (u32, u32), strides: &[u32], gts: &[[f32; 4]], thr: f32) -> Vec<u32> {
    let sizes = grid_sizes(padded, strides);
    let ranges = regress_ranges(strides);
    let mut owner: HashMap<(u8, u32), (f32, u32)> = HashMap::new();
    for (gi, gt) in gts.iter().enumerate() {
        let area = (gt[2] - gt[0]) * (gt[3] - gt[1]);
        for (l, &s) in strides.iter().enumerate() {
            let sf = s as f32;
            let off = (s / 2) as f32;
            let (gh, gw) = sizes[l];
            let (lo, hi) = ranges[l];
            let x0 = ((gt[0] - off) / sf).floor().max(0.0) as usize;
            let x1 = (((gt[2] - off) / sf).ceil().max(0.0) as usize).min(gw.saturating_sub(1));
            let y0 = ((gt[1] - off) / sf).floor().max(0.0) as usize;
            let y1 = (((gt[3] - off) / sf).ceil().max(0.0) as usize).min(gh.saturating_sub(1));
            for y in y0..=y1 {
                for x in x0..=x1 {
                    let px = x as f32 * sf + off;
                    let py = y as f32 * sf + off;
                    let (le, t, r, b) = (px - gt[0], py - gt[1], gt[2] - px, gt[3] - py);
                    if le.min(t).min(r).min(b) <= 0.0 {
                        continue;
                    }
                    let m = le.max(t).max(r).max(b);
                    if m < lo || m > hi {
                        continue;
                    }
                    let key = (l as u8, (y * gw + x) as u32);
                    match owner.get(&key) {
                        Some(&(a, _)) if a <= area => {}
                        _ => {
                            owner.insert(key, (area, gi as u32));
                        }
                    }
                }
            }
        }
    }
    let mut counts = vec![0u32; gts.len()];
    for (&(l, idx), &(_, gi)) in &owner {
        let s = strides[l as usize];
        let gw = sizes[l as usize].1 as u32;
        let (x, y) = (idx % gw, idx / gw);
        let off = (s / 2) as f32;
        let px = x as f32 * s as f32 + off;
        let py = y as f32 * s as f32 + off;
        let gt = &gts[gi as usize];
        let (le, t, r, b) = (px - gt[0], py - gt[1], gt[2] - px, gt[3] - py);
        let (w, h) = (le + r, t + b);
        let inter = (le.min(w / 2.0) + r.min(w / 2.0)) * (t.min(h / 2.0) + b.min(h / 2.0));
        let p = inter / (2.0 * w * h - inter);
        if p > thr {
            counts[gi as usize] += 1;
        }
    }
    counts
}

/// Evaluate one image.
pub fn eval_image(img: &MappedImage, set: &AnchorSet, cfg: &GridConfig) -> Vec<GtResult> {
    let g = Grid::new(set, img.geometry.padded);
    let gts = &img.boxes;
    let scans: Vec<Scan> = gts.iter().map(|gt| scan_gt(&g, gt, cfg)).collect();
    // max-IoU: anchor -> argmax gt among IoU >= pos_thr
    let mut assigned: HashMap<u32, (u32, f32)> = HashMap::new();
    for (gi, sc) in scans.iter().enumerate() {
        for &(idx, v) in &sc.hq {
            match assigned.get(&idx) {
                Some(&(_, bv)) if bv >= v => {}
                _ => {
                    assigned.insert(idx, (gi as u32, v));
                }
            }
        }
    }
    let mut hq = vec![0u32; gts.len()];
    for &(gi, _) in assigned.values() {
        hq[gi as usize] += 1;
    }
    let mut final_map: HashMap<u32, u32> = assigned.iter().map(|(&k, &(g, _))| (k, g)).collect();
    for (gi, sc) in scans.iter().enumerate() {
        if sc.best > 0.0 {
            for &idx in &sc.ties {
                final_map.insert(idx, gi as u32);
            }
        }
    }
    let mut maxiou = vec![0u32; gts.len()];
    for &gi in final_map.values() {
        maxiou[gi as usize] += 1;
    }
    let atss = atss_image(&g, gts, cfg.atss_topk);
    let piou = piou_image(img.geometry.padded, &set.strides, gts, cfg.piou_thr);
    (0..gts.len())
        .map(|i| GtResult {
            class_id: img.classes[i],
            best_iou: scans[i].best,
            atss_pos: atss[i],
            maxiou_pos: maxiou[i],
            maxiou_hq: hq[i],
            bag_iou: scans[i].bag.mean(),
            piou_pos: piou[i],
        })
        .collect()
}

/// Evaluate every image (parallel over images); results in image/box order.
pub fn eval_all(images: &[MappedImage], set: &AnchorSet, cfg: &GridConfig) -> Vec<GtResult> {
    images
        .par_iter()
        .map(|im| eval_image(im, set, cfg))
        .collect::<Vec<_>>()
        .into_iter()
        .flatten()
        .collect()
}

/// Summary of one assigner's positives.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PosStats {
    pub mean: f64,
    /// Population std over gts.
    pub std: f64,
    /// Share of gts with no positive.
    pub no_pos: f64,
}

impl PosStats {
    fn of(v: impl Iterator<Item = u32> + Clone) -> PosStats {
        let n = v.clone().count().max(1) as f64;
        let mean = v.clone().map(|x| x as f64).sum::<f64>() / n;
        let var = v.clone().map(|x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        let zero = v.filter(|&x| x == 0).count() as f64 / n;
        PosStats {
            mean,
            std: var.sqrt(),
            no_pos: zero,
        }
    }
}

/// Aggregate grid statistics over a set of gts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GridSummary {
    pub num_gts: usize,
    /// Mean best IoU at real grid positions.
    pub mean_best_iou: f64,
    /// Share of gts with an anchor of IoU >= 0.5 at a real grid position.
    pub recall50: f64,
    pub atss: PosStats,
    pub maxiou: PosStats,
    /// Max-IoU positives with IoU >= 0.5 only (no low-quality matches).
    pub maxiou_hq: PosStats,
    /// Mean IoU of FreeAnchor bags.
    pub bag_iou: f64,
    pub piou: PosStats,
}

impl GridSummary {
    /// Summarize gts (e.g. all, or one class).
    pub fn of(r: &[GtResult]) -> GridSummary {
        let n = r.len().max(1) as f64;
        GridSummary {
            num_gts: r.len(),
            mean_best_iou: r.iter().map(|g| g.best_iou as f64).sum::<f64>() / n,
            recall50: r.iter().filter(|g| g.best_iou >= 0.5).count() as f64 / n,
            atss: PosStats::of(r.iter().map(|g| g.atss_pos)),
            maxiou: PosStats::of(r.iter().map(|g| g.maxiou_pos)),
            maxiou_hq: PosStats::of(r.iter().map(|g| g.maxiou_hq)),
            bag_iou: r.iter().map(|g| g.bag_iou as f64).sum::<f64>() / n,
            piou: PosStats::of(r.iter().map(|g| g.piou_pos)),
        }
    }
}
