//! Shape-only objectives over all dataset boxes (boxes and anchors centred at the origin), the
//! quantities the peers optimize (`reference/mmdet-inference.md` section 7):
//!
//! - centred IoU `min(w1,w2) min(h1,h2) / (w1 h1 + w2 h2 - min(w1,w2) min(h1,h2))` and the mean
//!   over boxes of the best IoU over anchors (YOLOv2 / darknet, mmdet `optimize_anchors.py`);
//! - the YOLOv5 shape-ratio metric `x = min(min(r, 1/r))` over w and h with `r = box / anchor`,
//!   BPR = share of boxes with best `x > 1/anchor_t`, AAT = mean count of anchors with `x > thr`,
//!   fitness = mean of `best * [best > thr]` (ultralytics/yolov5 `utils/autoanchor.py`);
//! - Zlocha et al.'s objectives on the best IoU `m`: focal `mean(-(1-m)^2 ln m)`, avg `1 - mean m`,
//!   ce `mean(-ln m)` (martinzlocha/anchor-optimization).
//!
//! In the [`Layout::Fpn`](super::Layout) layout a box is compared with `stride_l * shape` for every
//! level `l`; IoU and the ratio metric are scale invariant, so this is the box scaled by
//! `1 / stride_l` against the shape. The problem stores the boxes as f32 SoA and evaluates in
//! parallel over fixed chunks (deterministic sums), skipping levels whose area bound
//! `min(area) / max(area)` (an upper bound of IoU; its square root bounds the ratio metric)
//! cannot beat the current best.

use rayon::prelude::*;

/// Boxes per rayon task; fixed so that sums do not depend on the thread count.
pub const CHUNK: usize = 2048;

/// Centred IoU of two `(w, h)` shapes.
#[inline(always)]
pub fn iou_wh(bw: f32, bh: f32, aw: f32, ah: f32) -> f32 {
    let inter = bw.min(aw) * bh.min(ah);
    inter / (bw * bh + aw * ah - inter)
}

/// YOLOv5 ratio metric `min(min(r, 1/r))` over w and h, `r = box / anchor`.
#[inline(always)]
pub fn ratio_wh(bw: f32, bh: f32, aw: f32, ah: f32) -> f32 {
    let rw = bw / aw;
    let rh = bh / ah;
    rw.min(1.0 / rw).min(rh.min(1.0 / rh))
}

/// Shapes in SoA form with reciprocals and areas, built once per evaluation.
struct ShapeTable {
    w: Vec<f32>,
    h: Vec<f32>,
    iw: Vec<f32>,
    ih: Vec<f32>,
    a: Vec<f32>,
    amin: f32,
    amax: f32,
}

/// Best ratio metric per box of a chunk (see [`ShapeProblem::sum_best_ratio`]); `best` starts
/// at -1 and is raised in place.
fn best_ratio_chunk(w: &[f32], h: &[f32], inv_strides: &[f32], t: &ShapeTable, best: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { best_ratio_chunk_avx2(w, h, inv_strides, t, best) };
        return;
    }
    best_ratio_chunk_body(w, h, inv_strides, t, best)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn best_ratio_chunk_avx2(
    w: &[f32],
    h: &[f32],
    inv_strides: &[f32],
    t: &ShapeTable,
    best: &mut [f32],
) {
    best_ratio_chunk_body(w, h, inv_strides, t, best)
}

#[inline(always)]
fn best_ratio_chunk_body(
    w: &[f32],
    h: &[f32],
    inv_strides: &[f32],
    t: &ShapeTable,
    best: &mut [f32],
) {
    // `best` is one chunk (at most CHUNK boxes): the scaled sizes live on the stack
    let n = best.len();
    debug_assert!(n <= CHUNK);
    let (mut bw, mut bh, mut ibw, mut ibh) =
        ([0f32; CHUNK], [0f32; CHUNK], [0f32; CHUNK], [0f32; CHUNK]);
    let (bw, bh, ibw, ibh) = (&mut bw[..n], &mut bh[..n], &mut ibw[..n], &mut ibh[..n]);
    for &inv in inv_strides {
        for i in 0..n {
            bw[i] = w[i] * inv;
            bh[i] = h[i] * inv;
            ibw[i] = 1.0 / bw[i];
            ibh[i] = 1.0 / bh[i];
        }
        for k in 0..t.w.len() {
            let (aw, ah, iaw, iah) = (t.w[k], t.h[k], t.iw[k], t.ih[k]);
            for ((((b, &x), &y), &ix), &iy) in best
                .iter_mut()
                .zip(bw.iter())
                .zip(bh.iter())
                .zip(ibw.iter())
                .zip(ibh.iter())
            {
                let v = (x * iaw).min(aw * ix).min((y * iah).min(ah * iy));
                if v > *b {
                    *b = v;
                }
            }
        }
    }
}

impl ShapeTable {
    fn new(shapes: &[[f32; 2]]) -> Self {
        let w: Vec<f32> = shapes.iter().map(|s| s[0]).collect();
        let h: Vec<f32> = shapes.iter().map(|s| s[1]).collect();
        let a: Vec<f32> = shapes.iter().map(|s| s[0] * s[1]).collect();
        ShapeTable {
            iw: w.iter().map(|v| 1.0 / v).collect(),
            ih: h.iter().map(|v| 1.0 / v).collect(),
            amin: a.iter().cloned().fold(f32::INFINITY, f32::min),
            amax: a.iter().cloned().fold(0.0, f32::max),
            w,
            h,
            a,
        }
    }
}

/// The boxes of a shape-optimization problem.
#[derive(Debug, Clone)]
pub struct ShapeProblem {
    /// Box widths in input pixels.
    pub w: Vec<f32>,
    /// Box heights in input pixels.
    pub h: Vec<f32>,
    /// `1 / stride` per level (`[1.0]` for the free layout).
    pub inv_strides: Vec<f32>,
}

/// Best match of one box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Match {
    /// Shape index.
    pub shape: u32,
    /// Level index.
    pub level: u8,
    /// Best value (IoU or ratio metric).
    pub value: f32,
}

impl ShapeProblem {
    /// A problem over `(w, h)` with one level per stride (`Fpn`), or a single unit level
    /// (`strides = None`, the free layout).
    pub fn new(w: Vec<f32>, h: Vec<f32>, strides: Option<&[u32]>) -> ShapeProblem {
        let inv_strides = match strides {
            Some(s) => s.iter().map(|&s| 1.0 / s as f32).collect(),
            None => vec![1.0],
        };
        ShapeProblem { w, h, inv_strides }
    }

    /// Number of boxes.
    pub fn len(&self) -> usize {
        self.w.len()
    }

    /// Whether there are no boxes.
    pub fn is_empty(&self) -> bool {
        self.w.is_empty()
    }

    /// Keep only boxes with `keep(w, h)` true.
    pub fn filtered(&self, keep: impl Fn(f32, f32) -> bool) -> ShapeProblem {
        let (mut w, mut h) = (Vec::new(), Vec::new());
        for i in 0..self.len() {
            if keep(self.w[i], self.h[i]) {
                w.push(self.w[i]);
                h.push(self.h[i]);
            }
        }
        ShapeProblem {
            w,
            h,
            inv_strides: self.inv_strides.clone(),
        }
    }

    /// Best match of box `i` over shapes and levels, for IoU (`ratio = false`) or the YOLOv5
    /// ratio metric (`ratio = true`). `t` is the precomputed shape table.
    #[inline]
    fn best_one(&self, i: usize, t: &ShapeTable, ratio: bool) -> Match {
        let (amin, amax) = (t.amin, t.amax);
        let mut best = Match {
            shape: 0,
            level: 0,
            value: -1.0,
        };
        let nl = self.inv_strides.len().min(8);
        let area = self.w[i] * self.h[i];
        let mut bounds = [0f32; 8];
        for (l, &inv) in self.inv_strides.iter().enumerate().take(nl) {
            let a = area * inv * inv;
            let b = a.min(amax) / a.max(amin);
            bounds[l] = if ratio { b.sqrt() } else { b };
        }
        let mut done = 0u32;
        for _ in 0..nl {
            // next level by descending bound
            let mut lb = usize::MAX;
            let mut bv = -1.0f32;
            for (l, &b) in bounds.iter().enumerate().take(nl) {
                if done & (1 << l) == 0 && b > bv {
                    bv = b;
                    lb = l;
                }
            }
            if lb == usize::MAX || bv <= best.value {
                break;
            }
            done |= 1 << lb;
            let inv = self.inv_strides[lb];
            let (bw, bh) = (self.w[i] * inv, self.h[i] * inv);
            if ratio {
                let (ibw, ibh) = (1.0 / bw, 1.0 / bh);
                for k in 0..t.w.len() {
                    let rw = bw * t.iw[k];
                    let rh = bh * t.ih[k];
                    let v = rw.min(t.w[k] * ibw).min(rh.min(t.h[k] * ibh));
                    if v > best.value {
                        best = Match {
                            shape: k as u32,
                            level: lb as u8,
                            value: v,
                        };
                    }
                }
            } else {
                // compare inter / union by cross-multiplication; one division at the end
                let ba = bw * bh;
                let (mut bn, mut bd, mut bk) = (0.0f32, 1.0f32, usize::MAX);
                for k in 0..t.w.len() {
                    let inter = bw.min(t.w[k]) * bh.min(t.h[k]);
                    let union = ba + t.a[k] - inter;
                    if inter * bd > bn * union {
                        bn = inter;
                        bd = union;
                        bk = k;
                    }
                }
                if bk != usize::MAX {
                    let v = bn / bd;
                    if v > best.value {
                        best = Match {
                            shape: bk as u32,
                            level: lb as u8,
                            value: v,
                        };
                    }
                }
            }
        }
        best
    }

    /// Best match of every box (IoU or ratio metric).
    pub fn assign(&self, shapes: &[[f32; 2]], ratio: bool) -> Vec<Match> {
        let rng = ShapeTable::new(shapes);
        let mut out = vec![
            Match {
                shape: 0,
                level: 0,
                value: 0.0
            };
            self.len()
        ];
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, o)| {
            for (j, m) in o.iter_mut().enumerate() {
                *m = self.best_one(c * CHUNK + j, &rng, ratio);
            }
        });
        out
    }

    /// Sum over boxes of `f(best value)` in f64, deterministic.
    pub fn sum_best(&self, shapes: &[[f32; 2]], ratio: bool, f: impl Fn(f32) -> f64 + Sync) -> f64 {
        let rng = ShapeTable::new(shapes);
        let n = self.len();
        let parts: Vec<f64> = (0..n.div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| {
                let mut s = 0.0f64;
                for i in c * CHUNK..((c + 1) * CHUNK).min(n) {
                    s += f(self.best_one(i, &rng, ratio).value);
                }
                s
            })
            .collect();
        parts.iter().sum()
    }

    /// Sum over boxes of `f(best ratio metric)`: the same value as
    /// `sum_best(shapes, true, f)` (the same f32 expressions, min/max are exact, the same
    /// chunked f64 summation), computed densely: per chunk of boxes, shapes and levels in the
    /// outer loops and boxes in the inner one, so the compiler vectorizes it (AVX2 when the CPU
    /// has it). This is the fitness of [`super::evolve::evolve`] (YOLOv5 `anchor_fitness`),
    /// evaluated once per generation.
    pub fn sum_best_ratio(&self, shapes: &[[f32; 2]], f: impl Fn(f32) -> f64 + Sync) -> f64 {
        let t = ShapeTable::new(shapes);
        let n = self.len();
        let parts: Vec<f64> = (0..n.div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| {
                let (lo, hi) = (c * CHUNK, ((c + 1) * CHUNK).min(n));
                let mut best = [-1.0f32; CHUNK];
                let best = &mut best[..hi - lo];
                best_ratio_chunk(
                    &self.w[lo..hi],
                    &self.h[lo..hi],
                    &self.inv_strides,
                    &t,
                    best,
                );
                best.iter().map(|&v| f(v)).sum::<f64>()
            })
            .collect();
        parts.iter().sum()
    }

    /// Sum over boxes of `f(best value)`, single-threaded (for callers that parallelize over
    /// candidates instead, e.g. differential evolution).
    pub fn sum_best_seq(&self, shapes: &[[f32; 2]], ratio: bool, f: impl Fn(f32) -> f64) -> f64 {
        let rng = ShapeTable::new(shapes);
        let mut total = 0.0f64;
        for c in 0..self.len().div_ceil(CHUNK) {
            let mut s = 0.0f64;
            for i in c * CHUNK..((c + 1) * CHUNK).min(self.len()) {
                s += f(self.best_one(i, &rng, ratio).value);
            }
            total += s;
        }
        total
    }

    /// Mean over boxes of the best centred IoU.
    pub fn mean_best_iou(&self, shapes: &[[f32; 2]]) -> f64 {
        self.sum_best(shapes, false, |v| v as f64) / self.len().max(1) as f64
    }

    /// All shape-only scores of an anchor set (every peer's objective), see [`ShapeScores`].
    pub fn scores(&self, shapes: &[[f32; 2]], anchor_t: f32) -> ShapeScores {
        let n = self.len().max(1) as f64;
        let best = self.assign(shapes, false);
        let mut mean_iou = 0.0;
        let mut focal = 0.0;
        let mut ce = 0.0;
        let mut below = 0usize;
        for m in &best {
            let v = m.value.max(1e-12) as f64;
            mean_iou += v;
            focal += -(1.0 - v).powi(2) * v.ln();
            ce += -v.ln();
            if m.value < 0.5 {
                below += 1;
            }
        }
        let thr = 1.0 / anchor_t;
        let (bpr, aat, fitness) = self.yolo_scores(shapes, thr);
        ShapeScores {
            mean_iou: mean_iou / n,
            focal: focal / n,
            ce: ce / n,
            not_matched: below,
            bpr,
            aat,
            fitness,
        }
    }

    /// YOLOv5 `(BPR, AAT, fitness)` with threshold `thr = 1 / anchor_t`; AAT counts anchors
    /// over all levels.
    pub fn yolo_scores(&self, shapes: &[[f32; 2]], thr: f32) -> (f64, f64, f64) {
        let n = self.len();
        let parts: Vec<(f64, f64, f64)> = (0..n.div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| {
                let (mut bpr, mut aat, mut fit) = (0.0, 0.0, 0.0);
                for i in c * CHUNK..((c + 1) * CHUNK).min(n) {
                    let mut best = 0f32;
                    let mut cnt = 0u32;
                    for &inv in &self.inv_strides {
                        let (bw, bh) = (self.w[i] * inv, self.h[i] * inv);
                        for s in shapes {
                            let x = ratio_wh(bw, bh, s[0], s[1]);
                            best = best.max(x);
                            cnt += (x > thr) as u32;
                        }
                    }
                    if best > thr {
                        bpr += 1.0;
                        fit += best as f64;
                    }
                    aat += cnt as f64;
                }
                (bpr, aat, fit)
            })
            .collect();
        let nf = n.max(1) as f64;
        let (b, a, f) = parts
            .iter()
            .fold((0.0, 0.0, 0.0), |s, p| (s.0 + p.0, s.1 + p.1, s.2 + p.2));
        (b / nf, a / nf, f / nf)
    }
}

/// Every peer's shape-only objective for one anchor set.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ShapeScores {
    /// Mean best centred IoU (darknet / mmdet k-means and DE; higher is better).
    pub mean_iou: f64,
    /// Zlocha focal objective `mean(-(1-m)^2 ln m)` (lower is better).
    pub focal: f64,
    /// Zlocha ce objective `mean(-ln m)` (lower is better).
    pub ce: f64,
    /// Boxes with best IoU < 0.5 (Zlocha "not matched").
    pub not_matched: usize,
    /// YOLOv5 best possible recall (share of boxes with best ratio metric > 1/anchor_t).
    pub bpr: f64,
    /// YOLOv5 anchors above threshold per box.
    pub aat: f64,
    /// YOLOv5 fitness `mean(best * [best > thr])` (higher is better).
    pub fitness: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The dense ratio kernel gives bit-identical sums to the generic per-box search, in the
    /// free and the FPN layout, for boxes spanning tiny to huge and several chunk sizes.
    #[test]
    fn sum_best_ratio_equals_generic_search() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for n in [1usize, 7, CHUNK - 1, CHUNK + 3, 3 * CHUNK + 17] {
            let w: Vec<f32> = (0..n)
                .map(|_| 2f32.powf(rng.random_range(0.0..9.0)))
                .collect();
            let h: Vec<f32> = (0..n)
                .map(|_| 2f32.powf(rng.random_range(0.0..9.0)))
                .collect();
            let shapes: Vec<[f32; 2]> = (0..9)
                .map(|_| {
                    [
                        2f32.powf(rng.random_range(0.0..6.0)),
                        2f32.powf(rng.random_range(0.0..6.0)),
                    ]
                })
                .collect();
            for strides in [None, Some(&[8u32, 16, 32, 64, 128][..])] {
                let p = ShapeProblem::new(w.clone(), h.clone(), strides);
                for thr in [0.0f32, 0.25] {
                    let f = |v: f32| if v > thr { v as f64 } else { 0.0 };
                    let a = p.sum_best(&shapes, true, f);
                    let b = p.sum_best_ratio(&shapes, f);
                    assert_eq!(a.to_bits(), b.to_bits(), "n {n}, fpn {}", strides.is_some());
                    assert!(a > 0.0 || n < 10, "n {n}: a sum of zero tests nothing");
                }
            }
        }
    }
}
