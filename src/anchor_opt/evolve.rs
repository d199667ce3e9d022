//! YOLOv5 AutoAnchor (`kmean_anchors` in ultralytics/yolov5 `utils/autoanchor.py`), seeded:
//!
//! 1. keep boxes with any side >= 2 px;
//! 2. whitened k-means: Euclidean k-means on `(w / sigma_w, h / sigma_h)` (population std), 30
//!    runs from k distinct random boxes, lowest distortion kept (scipy `cluster.vq.kmeans`,
//!    `iter=30`; empty clusters are re-seeded instead of dropped, so k shapes always come back);
//! 3. genetic evolution of the fitness `mean(best * [best > 1/anchor_t])` (ratio metric) for
//!    `generations` generations: multiplier `v = ([U < 0.9] * U' * N(0,1) * 0.1 + 1)` clipped to
//!    `[0.3, 3]` (redrawn while all equal 1), candidate `(k * v)` clipped below at 2 px, kept if
//!    its fitness is strictly greater;
//! 4. (anchorkit, `polish`, on by default) a pattern search on `ln w`, `ln h` of every anchor
//!    that only takes improving moves, so the fitness can only rise above the evolved one.
//!
//! In the fpn layout the boxes are compared against `stride * shape` on every level and the
//! 2 px floor applies to the finest level.

use super::kmeans::{canonical, sub_seed};
use super::objective::{ShapeProblem, lane_sum};
use crate::progress::ProgressSink;
use crate::simd::avx2_or_portable;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr_free::normal;
use rayon::prelude::*;
use serde::Serialize;

/// Settings (YOLOv5 defaults).
#[derive(Debug, Clone)]
pub struct EvolveConfig {
    pub k: usize,
    pub generations: usize,
    /// `anchor_t` (ratio threshold 4.0, thr = 1/4).
    pub anchor_t: f32,
    /// Mutation probability per element.
    pub mp: f64,
    /// Mutation sigma.
    pub sigma: f64,
    /// Runs of the whitened k-means.
    pub kmeans_runs: usize,
    pub seed: u64,
    /// Smallest anchor side in layout units (2 px / finest stride in fpn).
    pub min_side: f32,
    /// Fpn seeding scale (see [`super::kmeans::KmeansConfig::ref_scale`]).
    pub ref_scale: f32,
    pub progress: ProgressSink,
    /// After the generations, a pattern search on `ln w`, `ln h` of every anchor (monotone:
    /// only improving moves are taken), not part of YOLOv5.
    pub polish: bool,
}

impl Default for EvolveConfig {
    fn default() -> Self {
        EvolveConfig {
            k: 9,
            generations: 1000,
            anchor_t: 4.0,
            mp: 0.9,
            sigma: 0.1,
            kmeans_runs: 30,
            seed: 0,
            min_side: 2.0,
            ref_scale: 4.0 * std::f32::consts::SQRT_2,
            progress: ProgressSink::silent(),
            polish: true,
        }
    }
}

/// Result of [`evolve`].
#[derive(Debug, Clone, Serialize)]
pub struct EvolveResult {
    /// Shapes sorted by area (layout units).
    pub shapes: Vec<[f32; 2]>,
    /// Fitness after evolution (on boxes with a side >= 2 px).
    pub fitness: f64,
    /// Fitness of the whitened k-means start.
    pub fitness_kmeans: f64,
    /// BPR and AAT on all boxes.
    pub bpr: f64,
    pub aat: f64,
    pub generations: usize,
    /// Generations whose candidate was accepted.
    pub accepted: usize,
    /// Fitness after the generations, before the polish.
    pub fitness_evolved: f64,
    /// Polish moves taken.
    pub polish_moves: usize,
    pub seed: u64,
}

/// Small standard-normal sampler (Box-Muller), to avoid an extra dependency.
mod rand_distr_free {
    use rand::Rng;
    /// One N(0, 1) draw.
    pub fn normal<R: Rng>(rng: &mut R) -> f64 {
        let u1: f64 = rng.random::<f64>().max(1e-300);
        let u2: f64 = rng.random();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// Points in SoA form for the whitened k-means.
struct Points {
    x: Vec<f32>,
    y: Vec<f32>,
}

avx2_or_portable! {
    /// Squared distance to the nearest centre and its index for every point (dense: centres in
    /// the outer loop, points in the vectorized inner one; AVX2 when present). Ties go to the
    /// first centre, as scipy's `vq`.
    fn nearest(pts: &Points, c: &[[f32; 2]], bd: &mut [f32], bk: &mut [u32]) => nearest_body
}

#[inline(always)]
fn nearest_body(pts: &Points, c: &[[f32; 2]], bd: &mut [f32], bk: &mut [u32]) {
    // 16 points held in registers while every centre passes over them (a running minimum
    // kept in memory compiled to masked stores that stall the next centre's loads); the
    // remainder point by point, the same expressions in the same order
    const B: usize = 16;
    let n = pts.x.len();
    let (px, py, bd, bk) = (&pts.x[..n], &pts.y[..n], &mut bd[..n], &mut bk[..n]);
    let full = n / B * B;
    for b0 in (0..full).step_by(B) {
        let x: &[f32; B] = px[b0..b0 + B].try_into().expect("B points");
        let y: &[f32; B] = py[b0..b0 + B].try_into().expect("B points");
        let mut d = [f32::INFINITY; B];
        let mut k = [0u32; B];
        for (j, q) in c.iter().enumerate() {
            let j = j as u32;
            for l in 0..B {
                let (dx, dy) = (x[l] - q[0], y[l] - q[1]);
                let v = dx * dx + dy * dy;
                let better = v < d[l];
                d[l] = if better { v } else { d[l] };
                k[l] = if better { j } else { k[l] };
            }
        }
        bd[b0..b0 + B].copy_from_slice(&d);
        bk[b0..b0 + B].copy_from_slice(&k);
    }
    for i in full..n {
        let (mut d, mut k) = (f32::INFINITY, 0u32);
        for (j, q) in c.iter().enumerate() {
            let (dx, dy) = (px[i] - q[0], py[i] - q[1]);
            let v = dx * dx + dy * dy;
            if v < d {
                d = v;
                k = j as u32;
            }
        }
        bd[i] = d;
        bk[i] = k;
    }
}

/// Euclidean k-means on whitened points (one scipy `cluster.vq.kmeans` run, `_kmeans`: stop
/// when the mean distance changes by at most `1e-5`); returns (centres, mean distance).
fn whitened_run(pts: &Points, k: usize, rng: &mut ChaCha8Rng) -> (Vec<[f32; 2]>, f64, usize) {
    let n = pts.x.len();
    // k distinct random points
    let mut idx: Vec<usize> = Vec::with_capacity(k);
    while idx.len() < k.min(n) {
        let i = rng.random_range(0..n);
        if !idx.contains(&i) {
            idx.push(i);
        }
    }
    let mut c: Vec<[f32; 2]> = idx.iter().map(|&i| [pts.x[i], pts.y[i]]).collect();
    let (mut bd, mut bk) = (vec![0f32; n], vec![0u32; n]);
    let mut old = vec![u32::MAX; n];
    // per-cluster sums of x, y and counts, updated for the points whose cluster changed (late
    // iterations move few points, so this is much cheaper than summing from scratch)
    let mut sums = vec![(0.0f64, 0.0f64, 0usize); c.len()];
    let mut prev = f64::INFINITY;
    for it in 0..300 {
        nearest(pts, &c, &mut bd, &mut bk);
        // blocks of 64 labels are compared whole first (a vectorized compare): late
        // iterations change few labels, and the per-point branch cost more than the rest of
        // the update; the order of the f64 updates is unchanged (ascending point index)
        const BLOCK: usize = 64;
        for (b, (nb, ob)) in bk.chunks(BLOCK).zip(old.chunks_mut(BLOCK)).enumerate() {
            if nb == ob {
                continue;
            }
            for (l, (&j, o)) in nb.iter().zip(ob.iter_mut()).enumerate() {
                if j != *o {
                    let i = b * BLOCK + l;
                    let (x, y) = (pts.x[i] as f64, pts.y[i] as f64);
                    if *o != u32::MAX {
                        let e = &mut sums[*o as usize];
                        e.0 -= x;
                        e.1 -= y;
                        e.2 -= 1;
                    }
                    let e = &mut sums[j as usize];
                    e.0 += x;
                    e.1 += y;
                    e.2 += 1;
                    *o = j;
                }
            }
        }
        let avg = lane_sum(&bd, |d| d.sqrt() as f64) / n as f64;
        for (j, s) in sums.iter().enumerate() {
            c[j] = if s.2 > 0 {
                [(s.0 / s.2 as f64) as f32, (s.1 / s.2 as f64) as f32]
            } else {
                // re-seed an empty cluster with the farthest point
                let worst = bd
                    .iter()
                    .enumerate()
                    .fold(
                        (0usize, -1.0f32),
                        |acc, (i, &d)| if d > acc.1 { (i, d) } else { acc },
                    )
                    .0;
                [pts.x[worst], pts.y[worst]]
            };
        }
        // scipy `_kmeans`: stop once the mean distance changes by at most `thresh = 1e-5`
        if (prev - avg).abs() <= 1e-5 {
            return (c, avg, it + 1);
        }
        prev = avg;
    }
    (c, prev, 300)
}

/// YOLOv5 k-means + genetic evolution.
pub fn evolve(p: &ShapeProblem, cfg: &EvolveConfig) -> EvolveResult {
    let thr = 1.0 / cfg.anchor_t;
    let min_px = 2.0f32;
    let fp = p.filtered(|w, h| w >= min_px || h >= min_px);
    let fp = if fp.is_empty() { p.clone() } else { fp };
    // boxes by area: in the fpn layout the fitness kernel then skips levels that cannot win
    let fp = fp.sorted_by_area();
    let k = cfg.k.min(fp.len()).max(1);
    // whitened k-means on canonical copies
    let pts: Vec<[f32; 2]> = (0..fp.len())
        .map(|i| canonical(&fp, i, cfg.ref_scale))
        .collect();
    let n = pts.len() as f64;
    let mean = pts
        .iter()
        .fold([0.0f64; 2], |m, q| [m[0] + q[0] as f64, m[1] + q[1] as f64]);
    let mean = [mean[0] / n, mean[1] / n];
    let var = pts.iter().fold([0.0f64; 2], |v, q| {
        [
            v[0] + (q[0] as f64 - mean[0]).powi(2),
            v[1] + (q[1] as f64 - mean[1]).powi(2),
        ]
    });
    let sd = [
        ((var[0] / n).sqrt() as f32).max(1e-6),
        ((var[1] / n).sqrt() as f32).max(1e-6),
    ];
    let white = Points {
        x: pts.iter().map(|q| q[0] / sd[0]).collect(),
        y: pts.iter().map(|q| q[1] / sd[1]).collect(),
    };
    let t0 = std::time::Instant::now();
    let runs: Vec<(Vec<[f32; 2]>, f64, usize)> = (0..cfg.kmeans_runs.max(1))
        .into_par_iter()
        .map(|r| {
            let mut rng = ChaCha8Rng::seed_from_u64(sub_seed(cfg.seed, 1000 + r as u64));
            whitened_run(&white, k, &mut rng)
        })
        .collect();
    tracing::debug!(
        "evolve: {} whitened k-means runs, {} iterations in all, {:.2} ms",
        runs.len(),
        runs.iter().map(|r| r.2).sum::<usize>(),
        t0.elapsed().as_secs_f64() * 1e3
    );
    let t0 = std::time::Instant::now();
    let best = runs
        .into_iter()
        .map(|(c, avg, _)| (c, avg))
        .fold(None::<(Vec<[f32; 2]>, f64)>, |b, r| match b {
            Some(b) if b.1 <= r.1 => Some(b),
            _ => Some(r),
        })
        .expect("one run");
    let mut anchors: Vec<[f32; 2]> = best
        .0
        .iter()
        .map(|c| [c[0] * sd[0], c[1] * sd[1]])
        .collect();
    // one fitness evaluation on the calling thread (bit-identical to the parallel sum)
    // YOLOv5 `anchor_fitness` per box: the best ratio metric if above `thr`, else 0
    let ff = |v: f32| if v > thr { v as f64 } else { 0.0 };
    let fitness = |a: &[[f32; 2]]| -> f64 { fp.sum_best_seq(a, true, ff) / fp.len() as f64 };
    let mut f = fitness(&anchors);
    let f0 = f;
    // The multipliers do not depend on the anchors, so all are drawn up front from the seeded
    // stream in YOLOv5's order. Generations are then evaluated speculatively in batches:
    // every candidate of a batch mutates the current anchors and is evaluated in parallel; the
    // first one that improves is accepted and the rest of the batch (built on the anchors it
    // replaced) is discarded and redone. The result is identical to the sequential loop.
    let mut rng = ChaCha8Rng::seed_from_u64(sub_seed(cfg.seed, 999));
    let mults: Vec<Vec<[f32; 2]>> = (0..cfg.generations)
        .map(|_| {
            let mut v = vec![[1.0f32; 2]; anchors.len()];
            while v.iter().all(|x| x[0] == 1.0 && x[1] == 1.0) {
                let scalar: f64 = rng.random();
                for x in v.iter_mut() {
                    for e in x.iter_mut() {
                        let m = (rng.random::<f64>() < cfg.mp) as u8 as f64;
                        *e = ((m * scalar * normal(&mut rng) * cfg.sigma + 1.0).clamp(0.3, 3.0))
                            as f32;
                    }
                }
            }
            v
        })
        .collect();
    let mutate = |a: &[[f32; 2]], v: &[[f32; 2]]| -> Vec<[f32; 2]> {
        a.iter()
            .zip(v)
            .map(|(a, m)| {
                [
                    (a[0] * m[0]).max(cfg.min_side),
                    (a[1] * m[1]).max(cfg.min_side),
                ]
            })
            .collect()
    };
    let bar = cfg
        .progress
        .task("evolving anchors", cfg.generations as u64);
    let batch = rayon::current_num_threads().clamp(1, 16);
    let mut accepted = 0;
    let mut g = 0;
    while g < cfg.generations {
        let end = (g + batch).min(cfg.generations);
        let evals: Vec<(f64, Vec<[f32; 2]>)> = mults[g..end]
            .par_iter()
            .map(|v| {
                let c = mutate(&anchors, v);
                (fitness(&c), c)
            })
            .collect();
        let first = evals.iter().position(|e| e.0 > f);
        let done = match first {
            Some(j) => {
                let (fc, c) = evals.into_iter().nth(j).expect("index from position");
                f = fc;
                anchors = c;
                accepted += 1;
                bar.set_message(format!("fitness = {f:.4}"));
                j + 1
            }
            None => end - g,
        };
        g += done;
        bar.inc(done as u64);
    }
    bar.finish();
    tracing::debug!(
        "evolve: {} generations ({accepted} accepted) {:.2} ms",
        cfg.generations,
        t0.elapsed().as_secs_f64() * 1e3
    );
    let t0 = std::time::Instant::now();
    let fitness_evolved = f;
    let mut polish_moves = 0;
    if cfg.polish {
        // All 4 k neighbours (one side of one anchor scaled by exp(+-step)) are evaluated in
        // parallel. The move taken is the better of the best single neighbour and the
        // combination of every anchor's best improving neighbour (anchors mostly cover
        // different boxes, so their moves usually add up); when nothing improves, the step
        // halves (0.05, 0.025, 0.0125).
        let mut step = 0.05f32;
        // move `m` of the polish: side `(m / 2) % 2` of anchor `m / 4` scaled by exp(+-step)
        let apply = |c: &mut [[f32; 2]], m: usize, step: f32| {
            let s = if m.is_multiple_of(2) { step } else { -step };
            let e = &mut c[m / 4][(m / 2) % 2];
            *e = (*e * s.exp()).max(cfg.min_side);
        };
        while step >= 1e-2 {
            // each neighbour changes one anchor: evaluated from the per-box best and
            // second-best of the current anchors, bit-identical to `fitness` (tested in
            // `objective`) at 1/K of its cost
            let top = fp.top2(&anchors, true);
            let fs: Vec<f64> = (0..4 * anchors.len())
                .into_par_iter()
                .map(|m| {
                    let mut c = anchors.clone();
                    apply(&mut c, m, step);
                    fp.sum_best_replacing(&top, m / 4, c[m / 4], ff) / fp.len() as f64
                })
                .collect();
            let (mut bi, mut bf) = (usize::MAX, f);
            for (m, &fc) in fs.iter().enumerate() {
                if fc > bf {
                    bi = m;
                    bf = fc;
                }
            }
            if bi == usize::MAX {
                step *= 0.5;
                continue;
            }
            let mut single = anchors.clone();
            apply(&mut single, bi, step);
            // every anchor's best improving move, combined
            let mut comb = anchors.clone();
            let mut moved = 0;
            for j in 0..anchors.len() {
                let (mut mi, mut mf) = (usize::MAX, f);
                for (m, &fc) in fs.iter().enumerate().skip(4 * j).take(4) {
                    if fc > mf {
                        mi = m;
                        mf = fc;
                    }
                }
                if mi != usize::MAX {
                    apply(&mut comb, mi, step);
                    moved += 1;
                }
            }
            let fcomb = if moved > 1 {
                fitness(&comb)
            } else {
                f64::NEG_INFINITY
            };
            if fcomb > bf {
                anchors = comb;
                f = fcomb;
            } else {
                anchors = single;
                f = bf;
            }
            polish_moves += 1;
        }
    }
    tracing::debug!(
        "evolve: polish {polish_moves} moves {:.2} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    anchors.sort_by(|a, b| (a[0] * a[1]).total_cmp(&(b[0] * b[1])));
    let (bpr, aat, _) = p.yolo_scores(&anchors, thr);
    EvolveResult {
        shapes: anchors,
        fitness: f,
        fitness_kmeans: f0,
        bpr,
        aat,
        generations: cfg.generations,
        accepted,
        fitness_evolved,
        polish_moves,
        seed: cfg.seed,
    }
}
