//! YOLOv5 AutoAnchor (`kmean_anchors` in ultralytics/yolov5 `utils/autoanchor.py`,
//! `reference/mmdet-inference.md` section 7.2), seeded:
//!
//! 1. keep boxes with any side >= 2 px;
//! 2. whitened k-means: Euclidean k-means on `(w / sigma_w, h / sigma_h)` (population std), 30
//!    runs from k distinct random boxes, lowest distortion kept (scipy `cluster.vq.kmeans`,
//!    `iter=30`; empty clusters are re-seeded instead of dropped, so k shapes always come back);
//! 3. genetic evolution of the fitness `mean(best * [best > 1/anchor_t])` (ratio metric) for
//!    `generations` generations: multiplier `v = ([U < 0.9] * U' * N(0,1) * 0.1 + 1)` clipped to
//!    `[0.3, 3]` (redrawn while all equal 1), candidate `(k * v)` clipped below at 2 px, kept if
//!    its fitness is strictly greater.
//!
//! In the fpn layout the boxes are compared against `stride * shape` on every level and the
//! 2 px floor applies to the finest level.

use super::kmeans::{canonical, sub_seed};
use super::objective::ShapeProblem;
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
    pub progress: bool,
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
            progress: false,
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

/// Euclidean k-means on whitened points; returns (centres, distortion).
fn whitened_run(pts: &[[f32; 2]], k: usize, rng: &mut ChaCha8Rng) -> (Vec<[f32; 2]>, f64) {
    let n = pts.len();
    // k distinct random points
    let mut idx: Vec<usize> = Vec::with_capacity(k);
    while idx.len() < k.min(n) {
        let i = rng.random_range(0..n);
        if !idx.contains(&i) {
            idx.push(i);
        }
    }
    let mut c: Vec<[f32; 2]> = idx.iter().map(|&i| pts[i]).collect();
    let mut prev = f64::INFINITY;
    for _ in 0..300 {
        let mut sums = vec![(0.0f64, 0.0f64, 0usize); c.len()];
        let mut dist = 0.0f64;
        let mut worst = (0usize, -1.0f32);
        for (i, p) in pts.iter().enumerate() {
            let mut bd = f32::INFINITY;
            let mut bk = 0;
            for (j, q) in c.iter().enumerate() {
                let d = (p[0] - q[0]) * (p[0] - q[0]) + (p[1] - q[1]) * (p[1] - q[1]);
                if d < bd {
                    bd = d;
                    bk = j;
                }
            }
            let e = &mut sums[bk];
            e.0 += p[0] as f64;
            e.1 += p[1] as f64;
            e.2 += 1;
            dist += (bd as f64).sqrt();
            if bd > worst.1 {
                worst = (i, bd);
            }
        }
        let avg = dist / n as f64;
        for (j, s) in sums.iter().enumerate() {
            c[j] = if s.2 > 0 {
                [(s.0 / s.2 as f64) as f32, (s.1 / s.2 as f64) as f32]
            } else {
                pts[worst.0]
            };
        }
        if (prev - avg).abs() <= 1e-5 * avg.max(1e-12) {
            return (c, avg);
        }
        prev = avg;
    }
    (c, prev)
}

/// YOLOv5 k-means + genetic evolution.
pub fn evolve(p: &ShapeProblem, cfg: &EvolveConfig) -> EvolveResult {
    let thr = 1.0 / cfg.anchor_t;
    let min_px = 2.0f32;
    let fp = p.filtered(|w, h| w >= min_px || h >= min_px);
    let fp = if fp.is_empty() { p.clone() } else { fp };
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
    let white: Vec<[f32; 2]> = pts.iter().map(|q| [q[0] / sd[0], q[1] / sd[1]]).collect();
    let runs: Vec<(Vec<[f32; 2]>, f64)> = (0..cfg.kmeans_runs.max(1))
        .into_par_iter()
        .map(|r| {
            let mut rng = ChaCha8Rng::seed_from_u64(sub_seed(cfg.seed, 1000 + r as u64));
            whitened_run(&white, k, &mut rng)
        })
        .collect();
    let best = runs
        .into_iter()
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
    let fitness = |a: &[[f32; 2]]| -> f64 {
        fp.sum_best_ratio(a, |v| if v > thr { v as f64 } else { 0.0 }) / fp.len() as f64
    };
    let mut f = fitness(&anchors);
    let f0 = f;
    let mut rng = ChaCha8Rng::seed_from_u64(sub_seed(cfg.seed, 999));
    let bar = super::run::progress_bar(cfg.generations as u64, "evolving anchors", cfg.progress);
    let mut accepted = 0;
    for _ in 0..cfg.generations {
        let mut v = vec![[1.0f32; 2]; anchors.len()];
        while v.iter().all(|x| x[0] == 1.0 && x[1] == 1.0) {
            let scalar: f64 = rng.random();
            for x in v.iter_mut() {
                for e in x.iter_mut() {
                    let m = (rng.random::<f64>() < cfg.mp) as u8 as f64;
                    *e = ((m * scalar * normal(&mut rng) * cfg.sigma + 1.0).clamp(0.3, 3.0)) as f32;
                }
            }
        }
        let cand: Vec<[f32; 2]> = anchors
            .iter()
            .zip(&v)
            .map(|(a, m)| {
                [
                    (a[0] * m[0]).max(cfg.min_side),
                    (a[1] * m[1]).max(cfg.min_side),
                ]
            })
            .collect();
        let fc = fitness(&cand);
        if fc > f {
            f = fc;
            anchors = cand;
            accepted += 1;
            bar.set_message(format!("fitness = {f:.4}"));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
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
        seed: cfg.seed,
    }
}
