//! Gradient-based learned anchors after Zhong et al., "Anchor Box Optimization for Object
//! Detection" (WACV 2020), applied to the dataset boxes alone (no detector):
//!
//! - parameters: `theta_a = (ln w_a, ln h_a)` of the k shapes (layout units);
//! - localization objective: for every box its matched shape/level, `||x - theta_a||^2` with
//!   `x = (ln w, ln h) - ln stride_l` (the squared log-space size regression target `(dw, dh)`
//!   of the DeltaXYWH coder), averaged over the boxes of a mini-batch (online, seeded sampling);
//! - soft-assignment warm-up: during the first `warmup` steps every box spreads its gradient
//!   over all (level, shape) pairs with weights `softmax(-d / T)`, `T` annealed geometrically
//!   from `t0` to `t1`, so no anchor starts "dead"; afterwards a box is matched to the pair of
//!   highest IoU, as the detector's assigner would;
//! - online clustering term: `lambda * ||theta_a - c_a||^2` towards the (stop-gradient) mean
//!   `c_a` of the batch boxes matched to shape a;
//! - Adam (beta 0.9 / 0.999) on `theta`, learning rate with cosine decay to 0; the final
//!   shapes are kept only if their full-dataset objective is below the initialization's.
//!
//! Initializations as in the paper: `identical` (all shapes at the median box, with a 1e-3
//! seeded jitter so that the soft assignment can separate them), `uniform` (seeded uniform in
//! the 5-95 % box of log sizes) and `kmeans` (the IoU k-means result).

use super::kmeans::{KmeansConfig, canonical, kmeans, sub_seed};
use super::objective::{ShapeProblem, iou_wh};
use crate::progress::ProgressSink;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

/// Initialization of the learned shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum LearnedInit {
    Identical,
    Uniform,
    Kmeans,
}

/// Settings.
#[derive(Debug, Clone)]
pub struct LearnedConfig {
    pub k: usize,
    pub init: LearnedInit,
    pub iterations: usize,
    pub warmup: usize,
    pub batch: usize,
    pub lr: f64,
    pub t0: f64,
    pub t1: f64,
    /// Weight of the online clustering term.
    pub cluster_weight: f64,
    pub seed: u64,
    pub ref_scale: f32,
    pub progress: ProgressSink,
}

impl Default for LearnedConfig {
    fn default() -> Self {
        LearnedConfig {
            k: 9,
            init: LearnedInit::Uniform,
            iterations: 600,
            warmup: 200,
            batch: 4096,
            lr: 0.03,
            t0: 1.0,
            t1: 0.02,
            cluster_weight: 0.1,
            seed: 0,
            ref_scale: 4.0 * std::f32::consts::SQRT_2,
            progress: ProgressSink::silent(),
        }
    }
}

/// Result of [`learned`].
#[derive(Debug, Clone, Serialize)]
pub struct LearnedResult {
    /// Shapes sorted by area.
    pub shapes: Vec<[f32; 2]>,
    /// Final localization objective over all boxes (mean squared log-space error to the
    /// IoU-matched shape).
    pub loc_loss: f64,
    /// Localization objective of the initialization.
    pub loc_loss_init: f64,
    pub mean_iou: f64,
    pub mean_iou_init: f64,
    pub iterations: usize,
    pub init: LearnedInit,
    pub seed: u64,
    /// The optimized shapes were not better than the initialization, which is returned.
    pub kept_init: bool,
}

/// Mean over all boxes of the squared log error to the IoU-matched shape.
pub fn loc_loss(p: &ShapeProblem, shapes: &[[f32; 2]]) -> f64 {
    let m = p.assign(shapes, false);
    let s: f64 = m
        .par_iter()
        .enumerate()
        .map(|(i, m)| {
            let inv = p.inv_strides[m.level as usize];
            let a = shapes[m.shape as usize];
            let dw = ((p.w[i] * inv) / a[0]).ln() as f64;
            let dh = ((p.h[i] * inv) / a[1]).ln() as f64;
            dw * dw + dh * dh
        })
        .sum();
    s / p.len().max(1) as f64
}

/// Per-chunk gradient sums and weighted cluster sums `(sum w x, sum w y, sum w)` per shape.
type ChunkGrad = (Vec<[f64; 2]>, Vec<[f64; 3]>);

/// Learn the shapes.
pub fn learned(p: &ShapeProblem, cfg: &LearnedConfig) -> LearnedResult {
    let k = cfg.k.max(1);
    let n = p.len();
    let mut rng = ChaCha8Rng::seed_from_u64(sub_seed(cfg.seed, 4242));
    let logs: Vec<[f64; 2]> = (0..n)
        .map(|i| {
            let c = canonical(p, i, cfg.ref_scale);
            [(c[0] as f64).ln(), (c[1] as f64).ln()]
        })
        .collect();
    let quant = |d: usize, q: f64| {
        let mut v: Vec<f64> = logs.iter().map(|x| x[d]).collect();
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q) as usize]
    };
    let mut theta: Vec<[f64; 2]> = match cfg.init {
        LearnedInit::Identical => {
            let m = [quant(0, 0.5), quant(1, 0.5)];
            (0..k)
                .map(|_| {
                    [
                        m[0] + 1e-3 * (rng.random::<f64>() - 0.5),
                        m[1] + 1e-3 * (rng.random::<f64>() - 0.5),
                    ]
                })
                .collect()
        }
        LearnedInit::Uniform => {
            let (lw, hw) = (quant(0, 0.05), quant(0, 0.95));
            let (lh, hh) = (quant(1, 0.05), quant(1, 0.95));
            (0..k)
                .map(|_| {
                    [
                        lw + (hw - lw) * rng.random::<f64>(),
                        lh + (hh - lh) * rng.random::<f64>(),
                    ]
                })
                .collect()
        }
        LearnedInit::Kmeans => {
            let r = kmeans(
                p,
                &KmeansConfig {
                    k,
                    seed: cfg.seed,
                    ref_scale: cfg.ref_scale,
                    ..Default::default()
                },
            );
            r.shapes
                .iter()
                .map(|s| [(s[0] as f64).ln(), (s[1] as f64).ln()])
                .collect()
        }
    };
    // k-means returns fewer shapes than asked when there are fewer distinct boxes
    let k = theta.len();
    let to_shapes = |t: &[[f64; 2]]| -> Vec<[f32; 2]> {
        t.iter()
            .map(|x| [x[0].exp() as f32, x[1].exp() as f32])
            .collect()
    };
    let init_shapes = to_shapes(&theta);
    let loc0 = loc_loss(p, &init_shapes);
    let iou0 = p.mean_best_iou(&init_shapes);
    let lsl: Vec<f64> = p.inv_strides.iter().map(|&v| (v as f64).ln()).collect();
    let (mut m1, mut m2) = (vec![[0.0f64; 2]; k], vec![[0.0f64; 2]; k]);
    let bar = cfg.progress.task("learning anchors", cfg.iterations as u64);
    for it in 0..cfg.iterations {
        let batch: Vec<usize> = (0..cfg.batch.min(n))
            .map(|_| rng.random_range(0..n))
            .collect();
        let soft = it < cfg.warmup;
        let t = cfg.t0 * (cfg.t1 / cfg.t0).powf(it as f64 / cfg.warmup.max(1) as f64);
        let shapes = to_shapes(&theta);
        // per box: gradient contributions (weight, x) per shape
        let parts: Vec<ChunkGrad> = batch
            .par_chunks(512)
            .map(|ch| {
                let mut g = vec![[0.0f64; 2]; k];
                let mut c = vec![[0.0f64; 3]; k];
                let mut d = vec![0.0f64; k * lsl.len()];
                for &i in ch {
                    let lw = (p.w[i] as f64).ln();
                    let lh = (p.h[i] as f64).ln();
                    if soft {
                        let mut mn = f64::INFINITY;
                        for (l, &ls) in lsl.iter().enumerate() {
                            for a in 0..k {
                                let dx = lw + ls - theta[a][0];
                                let dy = lh + ls - theta[a][1];
                                let v = dx * dx + dy * dy;
                                d[l * k + a] = v;
                                mn = mn.min(v);
                            }
                        }
                        let z: f64 = d.iter().map(|v| (-(v - mn) / t).exp()).sum();
                        for (l, &ls) in lsl.iter().enumerate() {
                            for a in 0..k {
                                let w = (-(d[l * k + a] - mn) / t).exp() / z;
                                let x = [lw + ls, lh + ls];
                                g[a][0] += w * (theta[a][0] - x[0]);
                                g[a][1] += w * (theta[a][1] - x[1]);
                                c[a][0] += w * x[0];
                                c[a][1] += w * x[1];
                                c[a][2] += w;
                            }
                        }
                    } else {
                        let mut best = (-1.0f32, 0usize, 0usize);
                        for (l, &inv) in p.inv_strides.iter().enumerate() {
                            for (a, s) in shapes.iter().enumerate() {
                                let v = iou_wh(p.w[i] * inv, p.h[i] * inv, s[0], s[1]);
                                if v > best.0 {
                                    best = (v, l, a);
                                }
                            }
                        }
                        let (l, a) = (best.1, best.2);
                        let x = [lw + lsl[l], lh + lsl[l]];
                        g[a][0] += theta[a][0] - x[0];
                        g[a][1] += theta[a][1] - x[1];
                        c[a][0] += x[0];
                        c[a][1] += x[1];
                        c[a][2] += 1.0;
                    }
                }
                (g, c)
            })
            .collect();
        let mut g = vec![[0.0f64; 2]; k];
        let mut c = vec![[0.0f64; 3]; k];
        for (pg, pc) in parts {
            for a in 0..k {
                g[a][0] += pg[a][0];
                g[a][1] += pg[a][1];
                for j in 0..3 {
                    c[a][j] += pc[a][j];
                }
            }
        }
        let nb = batch.len() as f64;
        for a in 0..k {
            for j in 0..2 {
                let mut grad = 2.0 * g[a][j] / nb;
                if c[a][2] > 0.0 {
                    grad += cfg.cluster_weight * 2.0 * (theta[a][j] - c[a][j] / c[a][2]);
                }
                m1[a][j] = 0.9 * m1[a][j] + 0.1 * grad;
                m2[a][j] = 0.999 * m2[a][j] + 0.001 * grad * grad;
                let mh = m1[a][j] / (1.0 - 0.9f64.powi(it as i32 + 1));
                let vh = m2[a][j] / (1.0 - 0.999f64.powi(it as i32 + 1));
                let lr = cfg.lr
                    * 0.5
                    * (1.0 + (std::f64::consts::PI * it as f64 / cfg.iterations as f64).cos());
                theta[a][j] -= lr * mh / (vh.sqrt() + 1e-8);
            }
        }
        bar.inc(1);
    }
    bar.finish();
    let mut shapes = to_shapes(&theta);
    let mut loss = loc_loss(p, &shapes);
    let kept_init = loss > loc0;
    if kept_init {
        // the mini-batch noise did not beat the start (e.g. a converged k-means init)
        shapes = init_shapes;
        loss = loc0;
    }
    shapes.sort_by(|a, b| (a[0] * a[1]).total_cmp(&(b[0] * b[1])));
    LearnedResult {
        loc_loss: loss,
        loc_loss_init: loc0,
        mean_iou: p.mean_best_iou(&shapes),
        mean_iou_init: iou0,
        shapes,
        iterations: cfg.iterations,
        init: cfg.init,
        seed: cfg.seed,
        kept_init,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_shapes_than_boxes_does_not_panic() {
        // k-means cannot make 4 shapes of 3 boxes; the learned steps run on what it returns
        let p = ShapeProblem::new(
            vec![10.0, 30.0, 40.0],
            vec![20.0, 12.0, 40.0],
            Some(&[8, 16, 32]),
        );
        let r = learned(
            &p,
            &LearnedConfig {
                k: 4,
                init: LearnedInit::Kmeans,
                iterations: 20,
                warmup: 5,
                ..LearnedConfig::default()
            },
        );
        assert!(
            !r.shapes.is_empty() && r.shapes.len() <= 3,
            "{:?}",
            r.shapes
        );
        assert!(r.loc_loss <= r.loc_loss_init);
    }
}
