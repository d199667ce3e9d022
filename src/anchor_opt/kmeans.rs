//! IoU k-means (YOLOv2 / darknet `calc_anchors`, distance `1 - IoU` of centred boxes) with
//! k-means++ seeding (Arthur & Vassilvitskii 2007, with `D = 1 - best IoU`), several seeded
//! restarts, and an IoU-ascent polish: after Lloyd's iterations converge, each cluster centre is
//! moved to the point that maximizes the summed IoU of its members (pattern search in log w /
//! log h), then boxes are reassigned, repeated until the mean best IoU stops improving. Every
//! step can only raise the mean best IoU, the objective of darknet and mmdet
//! `optimize_anchors.py`. Empty clusters are re-seeded with the worst-matched box instead of
//! becoming all-zero (mmdet) or being dropped (scipy).

use super::objective::{ShapeProblem, lane_sum};
use crate::simd::avx2_or_portable;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

/// k-means settings.
#[derive(Debug, Clone)]
pub struct KmeansConfig {
    /// Number of shapes.
    pub k: usize,
    /// Independent seeded restarts; the best mean IoU wins.
    pub restarts: usize,
    /// Lloyd iterations per restart.
    pub max_iter: usize,
    /// Run the IoU-ascent polish.
    pub polish: bool,
    pub seed: u64,
    /// Fpn layout only: seeds are taken at the level where the box's normalized size
    /// `sqrt(w h) / stride` is closest to this (in log scale).
    pub ref_scale: f32,
}

impl Default for KmeansConfig {
    fn default() -> Self {
        KmeansConfig {
            k: 9,
            restarts: 8,
            max_iter: 100,
            polish: true,
            seed: 0,
            ref_scale: 4.0 * std::f32::consts::SQRT_2,
        }
    }
}

/// Result of [`kmeans`].
#[derive(Debug, Clone, Serialize)]
pub struct KmeansResult {
    /// Shapes `(w, h)` in layout units, sorted by area.
    pub shapes: Vec<[f32; 2]>,
    /// Mean best IoU of `shapes`.
    pub mean_iou: f64,
    /// Mean best IoU of the best restart before the polish.
    pub mean_iou_lloyd: f64,
    /// Lloyd iterations of the winning restart.
    pub iterations: usize,
    pub restarts: usize,
    pub seed: u64,
}

/// Seed of restart `r` derived from the base seed.
pub fn sub_seed(seed: u64, r: u64) -> u64 {
    seed ^ r.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
}

/// The normalized copy of box `i` whose size is closest to `ref_scale` (log scale).
pub fn canonical(p: &ShapeProblem, i: usize, ref_scale: f32) -> [f32; 2] {
    let mut best = [p.w[i], p.h[i]];
    let mut bd = f32::INFINITY;
    for &inv in &p.inv_strides {
        let (w, h) = (p.w[i] * inv, p.h[i] * inv);
        let d = ((w * h).sqrt() / ref_scale).ln().abs();
        if d < bd {
            bd = d;
            best = [w, h];
        }
    }
    best
}

/// k-means++ seeding with `D = 1 - best IoU`; `best` is a scratch buffer of `p.len()`.
fn seed_pp(
    p: &ShapeProblem,
    k: usize,
    ref_scale: f32,
    rng: &mut ChaCha8Rng,
    best: &mut [f32],
) -> Vec<[f32; 2]> {
    let n = p.len();
    let mut centers = Vec::with_capacity(k);
    centers.push(canonical(p, rng.random_range(0..n), ref_scale));
    best.fill(-1.0);
    while centers.len() < k {
        // only the newest centre can raise a box's best IoU
        p.best_update(&centers[centers.len() - 1..], false, best);
        let d2 = |v: f32| {
            let d = 1.0 - v as f64;
            d * d
        };
        let total: f64 = best.iter().map(|&v| d2(v)).sum();
        let idx = if total <= 0.0 {
            rng.random_range(0..n)
        } else {
            let mut t = rng.random::<f64>() * total;
            let mut pick = n - 1;
            for (i, &v) in best.iter().enumerate() {
                let d = d2(v);
                if t < d {
                    pick = i;
                    break;
                }
                t -= d;
            }
            pick
        };
        centers.push(canonical(p, idx, ref_scale));
    }
    centers
}

/// Lloyd iterations (mean w, h of members as in darknet) on the calling thread, with scratch
/// buffers `best` and `arg` of `p.len()`; returns iterations run.
fn lloyd(
    p: &ShapeProblem,
    centers: &mut [[f32; 2]],
    max_iter: usize,
    best: &mut [f32],
    arg: &mut Vec<u32>,
) -> usize {
    // Lloyd's mean update is not monotone for the 1 - IoU distance: it can cycle between a few
    // assignments without converging. The best centres seen are kept, and the loop stops once
    // the mean best IoU has not improved by more than `TOL` for `PATIENCE` iterations (or the
    // assignment is a fixed point).
    const TOL: f64 = 1e-6;
    const PATIENCE: usize = 3;
    let k = centers.len();
    let n = p.len();
    let mut prev: Vec<u32> = vec![u32::MAX; n];
    let mut top = (f64::NEG_INFINITY, centers.to_vec());
    let mut stall = 0usize;
    let split: Vec<(f32, usize)> = (0..p.inv_strides.len() * k)
        .map(|code| (p.inv_strides[code / k], code % k))
        .collect();
    let mut sums = vec![(0.0f64, 0.0f64, 0usize); k];
    for it in 0..max_iter {
        p.best_into(centers, false, best, Some(arg));
        let iou = lane_sum(best, |v| v as f64) / n.max(1) as f64;
        if iou > top.0 + TOL {
            stall = 0;
        } else {
            stall += 1;
        }
        if iou > top.0 {
            top = (iou, centers.to_vec());
        }
        if *arg == prev || stall >= PATIENCE {
            centers.copy_from_slice(&top.1);
            return it;
        }
        // per-cluster sums of normalized w, h and counts (the code `level * k + shape` is
        // split through a table: an integer division per box per iteration cost more than
        // the whole assignment)
        sums.fill((0.0, 0.0, 0));
        for (i, &code) in arg.iter().enumerate() {
            let (inv, c) = split[code as usize];
            let e = &mut sums[c];
            e.0 += (p.w[i] * inv) as f64;
            e.1 += (p.h[i] * inv) as f64;
            e.2 += 1;
        }
        for (c, s) in sums.iter().enumerate() {
            if s.2 > 0 {
                centers[c] = [(s.0 / s.2 as f64) as f32, (s.1 / s.2 as f64) as f32];
            } else {
                // re-seed an empty cluster with the worst-matched box
                let wi = best
                    .iter()
                    .enumerate()
                    .fold(
                        (0, f32::INFINITY),
                        |acc, (i, &v)| {
                            if v < acc.1 { (i, v) } else { acc }
                        },
                    )
                    .0;
                let inv = split[arg[wi] as usize].0;
                centers[c] = [p.w[wi] * inv, p.h[wi] * inv];
            }
        }
        std::mem::swap(&mut prev, arg);
    }
    centers.copy_from_slice(&top.1);
    max_iter
}

/// Members of one cluster in SoA form (normalized sizes and areas).
#[derive(Debug, Clone, Default)]
pub struct Members {
    pub w: Vec<f32>,
    pub h: Vec<f32>,
    pub a: Vec<f32>,
}

impl Members {
    /// Add one member.
    pub fn push(&mut self, w: f32, h: f32) {
        self.w.push(w);
        self.h.push(h);
        self.a.push(w * h);
    }

    /// `sum_i IoU(member_i, (w, h))` in f64 over 8 lanes (vectorized; deterministic).
    pub fn iou_sum(&self, w: f32, h: f32) -> f64 {
        members_iou_sum(self, w, h)
    }

    #[inline(always)]
    fn iou_sum_body(&self, w: f32, h: f32) -> f64 {
        let sa = w * h;
        let iou = |x: f32, y: f32, a: f32| {
            let iw = if x < w { x } else { w };
            let ih = if y < h { y } else { h };
            let inter = iw * ih;
            inter / (a + sa - inter)
        };
        let n = self.w.len();
        let (mw, mh, ma) = (&self.w[..n], &self.h[..n], &self.a[..n]);
        let mut acc = [0f64; 8];
        let full = n / 8 * 8;
        for ((x, y), a) in mw[..full]
            .chunks_exact(8)
            .zip(mh[..full].chunks_exact(8))
            .zip(ma[..full].chunks_exact(8))
        {
            for j in 0..8 {
                acc[j] += iou(x[j], y[j], a[j]) as f64;
            }
        }
        let mut s: f64 = acc.iter().sum();
        for i in full..n {
            s += iou(mw[i], mh[i], ma[i]) as f64;
        }
        s
    }
}

avx2_or_portable! {
    /// [`Members::iou_sum`], AVX2 when the CPU has it.
    fn members_iou_sum(m: &Members, w: f32, h: f32) -> f64 => Members::iou_sum_body
}

/// Maximize `sum_i IoU(member_i, c)` over `c` by pattern search in `(ln w, ln h)`.
pub fn iou_center(members: &Members, start: [f32; 2]) -> [f32; 2] {
    if members.w.is_empty() {
        return start;
    }
    let f = |x: [f64; 2]| -> f64 { members.iou_sum(x[0].exp() as f32, x[1].exp() as f32) };
    let mut x = [(start[0] as f64).ln(), (start[1] as f64).ln()];
    let mut fx = f(x);
    let mut step = 0.02f64;
    const DIRS: [[f64; 2]; 8] = [
        [1.0, 0.0],
        [-1.0, 0.0],
        [0.0, 1.0],
        [0.0, -1.0],
        [1.0, 1.0],
        [-1.0, -1.0],
        [1.0, -1.0],
        [-1.0, 1.0],
    ];
    for _ in 0..400 {
        let mut improved = false;
        for d in DIRS {
            let y = [x[0] + d[0] * step, x[1] + d[1] * step];
            let fy = f(y);
            if fy > fx {
                x = y;
                fx = fy;
                improved = true;
            }
        }
        if !improved {
            step *= 0.5;
            if step < 1e-4 {
                break;
            }
        }
    }
    [x[0].exp() as f32, x[1].exp() as f32]
}

/// IoU-ascent polish of converged centres (see the module docs).
pub fn polish(p: &ShapeProblem, centers: &mut [[f32; 2]], rounds: usize) -> f64 {
    let k = centers.len();
    let n = p.len().max(1) as f64;
    // the assignment that scores a round's centres is the next round's starting assignment
    // (one pass for both; the value equals `mean_best_iou`)
    let (mut asg, s) = p.assign_sum(centers, false, |v| v as f64);
    let mut cur = s / n;
    for round in 0..rounds {
        let t0 = std::time::Instant::now();
        let mut counts = vec![0usize; k];
        for m in &asg {
            counts[m.shape as usize] += 1;
        }
        let mut members: Vec<Members> = counts
            .iter()
            .map(|&c| Members {
                w: Vec::with_capacity(c),
                h: Vec::with_capacity(c),
                a: Vec::with_capacity(c),
            })
            .collect();
        for (i, m) in asg.iter().enumerate() {
            let inv = p.inv_strides[m.level as usize];
            members[m.shape as usize].push(p.w[i] * inv, p.h[i] * inv);
        }
        let new: Vec<[f32; 2]> = members
            .par_iter()
            .zip(centers.par_iter())
            .map(|(m, &c)| iou_center(m, c))
            .collect();
        let (asg_new, s) = p.assign_sum(&new, false, |v| v as f64);
        let val = s / n;
        tracing::debug!(
            "polish round {round}: {:.2} ms, mean IoU {val:.7}",
            t0.elapsed().as_secs_f64() * 1e3
        );
        if val > cur + 1e-8 {
            centers.copy_from_slice(&new);
            cur = val;
            asg = asg_new;
        } else {
            break;
        }
    }
    cur
}

/// IoU k-means with k-means++ seeding, restarts and polish.
///
/// Errors: none; `k` is clamped to the number of boxes. Panics never; an empty problem returns
/// no shapes.
pub fn kmeans(p: &ShapeProblem, cfg: &KmeansConfig) -> KmeansResult {
    let k = cfg.k.min(p.len()).max(1);
    if p.is_empty() {
        return KmeansResult {
            shapes: Vec::new(),
            mean_iou: 0.0,
            mean_iou_lloyd: 0.0,
            iterations: 0,
            restarts: 0,
            seed: cfg.seed,
        };
    }
    // restarts run in parallel; each has its own sub-seed, and the best is picked in restart
    // order (ties: the lowest restart), so the result does not depend on the thread count
    let runs: Vec<(f64, Vec<[f32; 2]>, usize)> = (0..cfg.restarts.max(1))
        .into_par_iter()
        .map(|r| {
            let t0 = std::time::Instant::now();
            let mut rng = ChaCha8Rng::seed_from_u64(sub_seed(cfg.seed, r as u64));
            let mut best = vec![0f32; p.len()];
            let mut arg = vec![0u32; p.len()];
            let mut c = seed_pp(p, k, cfg.ref_scale, &mut rng, &mut best);
            let t1 = std::time::Instant::now();
            let it = lloyd(p, &mut c, cfg.max_iter, &mut best, &mut arg);
            let v = p.mean_best_iou(&c);
            tracing::debug!(
                "k-means restart {r}: seeding {:.2} ms, {it} Lloyd iterations {:.2} ms, mean IoU {v:.6}",
                (t1 - t0).as_secs_f64() * 1e3,
                t1.elapsed().as_secs_f64() * 1e3
            );
            (v, c, it)
        })
        .collect();
    let mut best: Option<(f64, Vec<[f32; 2]>, usize)> = None;
    for run in runs {
        if best.as_ref().is_none_or(|b| run.0 > b.0) {
            best = Some(run);
        }
    }
    let (lloyd_v, mut c, it) = best.expect("at least one restart");
    let t0 = std::time::Instant::now();
    let v = if cfg.polish {
        polish(p, &mut c, 10)
    } else {
        lloyd_v
    };
    tracing::debug!(
        "k-means polish {:.2} ms: mean IoU {lloyd_v:.6} -> {v:.6}",
        t0.elapsed().as_secs_f64() * 1e3
    );
    c.sort_by(|a, b| (a[0] * a[1]).total_cmp(&(b[0] * b[1])));
    KmeansResult {
        shapes: c,
        mean_iou: v,
        mean_iou_lloyd: lloyd_v,
        iterations: it,
        restarts: cfg.restarts.max(1),
        seed: cfg.seed,
    }
}
