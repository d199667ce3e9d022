//! Differential evolution over the RetinaNet anchor parameterization (martinzlocha/
//! anchor-optimization `anchor_optimization/optimize_anchors.py`, Zlocha et al. 2019): ratios
//! `[1, r_1, 1/r_1, ...]` (h/w, `r_i` in (1, 4)) and scales `s_j` in (0.4, 2) on the base size
//! `octave_base_scale * stride`, so the anchor of ratio `r` and scale `s` at stride `t` is
//! `w = b s / sqrt(r)`, `h = b s sqrt(r)` with `b = octave_base_scale * t` and A = ratios x
//! scales is unchanged (mmdet `AnchorGenerator(scales=[b s_j], ratios=...)`).
//!
//! The optimizer is scipy's `differential_evolution` as that tool calls it: `best1bin`, Latin
//! hypercube init, population `15 x D`, mutation 0.5, recombination 0.7, `tol = 0.01`
//! (stop when `std(energies) <= tol * |mean(energies)|`), at most 1000 generations, then a
//! local polish (scipy: L-BFGS-B; here a bounded pattern search, derivative free, the
//! neighbours of each step evaluated in parallel). Trials of a
//! generation are built from the current population and evaluated in parallel (scipy's
//! `updating='deferred'`, which the tool uses with `--threads`). Out-of-bounds trial values
//! are redrawn uniformly, as scipy does. Objectives on the best centred IoU `m` over all levels:
//! `focal` (default) `mean(-(1-m)^2 ln m)`, `avg` `1 - mean m`, `ce` `mean(-ln m)`.

use super::kmeans::sub_seed;
use super::objective::{ShapeProblem, fast_ln};
use crate::progress::ProgressSink;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

/// Zlocha objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum DeObjective {
    Focal,
    Avg,
    Ce,
}

/// Settings (the tool's defaults).
#[derive(Debug, Clone)]
pub struct DeConfig {
    /// Ratio pairs m (ratios = 2m + 1).
    pub ratio_pairs: usize,
    /// Scales S.
    pub scales: usize,
    pub octave_base_scale: f64,
    pub objective: DeObjective,
    pub popsize: usize,
    pub mutation: f64,
    pub recombination: f64,
    pub tol: f64,
    pub max_generations: usize,
    pub polish: bool,
    pub seed: u64,
    pub progress: ProgressSink,
}

impl Default for DeConfig {
    fn default() -> Self {
        DeConfig {
            ratio_pairs: 1,
            scales: 3,
            octave_base_scale: 4.0,
            objective: DeObjective::Focal,
            popsize: 15,
            mutation: 0.5,
            recombination: 0.7,
            tol: 0.01,
            max_generations: 1000,
            polish: true,
            seed: 0,
            progress: ProgressSink::silent(),
        }
    }
}

/// Result of [`de`].
#[derive(Debug, Clone, Serialize)]
pub struct DeResult {
    /// Ratios (h/w), ascending.
    pub ratios: Vec<f64>,
    /// Scales relative to the base size `octave_base_scale * stride` (Zlocha's `scales`).
    pub scales: Vec<f64>,
    /// Objective value (lower is better).
    pub value: f64,
    /// Objective before the polish.
    pub value_de: f64,
    pub generations: usize,
    pub evaluations: usize,
    pub converged: bool,
    pub seed: u64,
}

const R_LO: f64 = 1.0;
const R_HI: f64 = 4.0;
const S_LO: f64 = 0.4;
const S_HI: f64 = 2.0;

impl DeConfig {
    fn dims(&self) -> usize {
        self.ratio_pairs + self.scales
    }
    fn bounds(&self, d: usize) -> (f64, f64) {
        if d < self.ratio_pairs {
            (R_LO, R_HI)
        } else {
            (S_LO, S_HI)
        }
    }
    /// Ratios and scales of a parameter vector in real units.
    pub fn decode(&self, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let mut ratios = vec![1.0];
        for &r in &x[..self.ratio_pairs] {
            ratios.push(r);
            ratios.push(1.0 / r);
        }
        ratios.sort_by(f64::total_cmp);
        (ratios, x[self.ratio_pairs..].to_vec())
    }
}

/// The parameters of a result that sit on (within 0.1% of) a bound of the search box: ratios
/// at 1 (a duplicate of the square anchor) or 4, scales at 0.4 or 2. Such a result is limited
/// by the box, not by the data; one message per parameter.
pub fn on_bounds(r: &DeResult) -> Vec<String> {
    let near = |v: f64, b: f64| (v - b).abs() <= 1e-3 * b;
    let mut v = vec![];
    // ratios are [1/r_m, ..., 1/r_1, 1, r_1, ..., r_m] ascending: the parameters follow the 1
    let params = &r.ratios[r.ratios.len().div_ceil(2).min(r.ratios.len())..];
    for &x in params {
        for (b, which) in [(R_LO, "lower"), (R_HI, "upper")] {
            if near(x, b) {
                v.push(format!(
                    "--method de: ratio {x:.4} (and 1/{x:.4}) sits on the {which} bound {b} of \
                     its search range [{R_LO}, {R_HI}]"
                ));
            }
        }
    }
    for &x in &r.scales {
        for (b, which) in [(S_LO, "lower"), (S_HI, "upper")] {
            if near(x, b) {
                v.push(format!(
                    "--method de: scale {x:.4} sits on the {which} bound {b} of its search \
                     range [{S_LO}, {S_HI}]"
                ));
            }
        }
    }
    v
}

/// Shapes (stride units, ratio-major like mmdet) of ratios x scales.
pub fn product_shapes(ratios: &[f64], scales: &[f64], octave_base_scale: f64) -> Vec<[f32; 2]> {
    let mut v = Vec::with_capacity(ratios.len() * scales.len());
    for &r in ratios {
        for &s in scales {
            let b = octave_base_scale * s;
            v.push([(b / r.sqrt()) as f32, (b * r.sqrt()) as f32]);
        }
    }
    v
}

/// Objective of ratios x scales on the problem (sequential; callers parallelize over members),
/// with `f64::ln`.
pub fn objective(p: &ShapeProblem, shapes: &[[f32; 2]], obj: DeObjective) -> f64 {
    let n = p.len().max(1) as f64;
    match obj {
        DeObjective::Focal => {
            p.sum_best_seq(shapes, false, |m| {
                let m = (m as f64).max(1e-12);
                -(1.0 - m).powi(2) * m.ln()
            }) / n
        }
        DeObjective::Avg => 1.0 - p.sum_best_seq(shapes, false, |m| m as f64) / n,
        DeObjective::Ce => p.sum_best_seq(shapes, false, |m| -((m as f64).max(1e-12)).ln()) / n,
    }
}

/// [`objective`] with the vectorizable [`fast_ln`] (relative error below 3e-7 per box), the
/// energy the evolution compares; the reported values use [`objective`].
pub fn objective_fast(p: &ShapeProblem, shapes: &[[f32; 2]], obj: DeObjective) -> f64 {
    let n = p.len().max(1) as f64;
    match obj {
        DeObjective::Focal => {
            p.sum_best_seq(shapes, false, |m| {
                let m = m.max(1e-12);
                let q = 1.0 - m;
                (-(q * q) * fast_ln(m)) as f64
            }) / n
        }
        DeObjective::Avg => 1.0 - p.sum_best_seq(shapes, false, |m| m as f64) / n,
        DeObjective::Ce => p.sum_best_seq(shapes, false, |m| -fast_ln(m.max(1e-12)) as f64) / n,
    }
}

/// Run the differential evolution. `p` must be an fpn-layout problem.
pub fn de(p: &ShapeProblem, cfg: &DeConfig) -> DeResult {
    // boxes by area: the objective's kernel then skips levels that cannot matter
    let sorted = p.sorted_by_area();
    let p = &sorted;
    let d = cfg.dims();
    let np = (cfg.popsize * d).max(5);
    let mut rng = ChaCha8Rng::seed_from_u64(sub_seed(cfg.seed, 77));
    // Latin hypercube in the unit cube
    let mut pop = vec![vec![0.0f64; d]; np];
    #[allow(clippy::needless_range_loop)]
    for j in 0..d {
        let mut perm: Vec<usize> = (0..np).collect();
        for i in (1..np).rev() {
            perm.swap(i, rng.random_range(0..=i));
        }
        for i in 0..np {
            pop[i][j] = (perm[i] as f64 + rng.random::<f64>()) / np as f64;
        }
    }
    let scale = |u: &[f64]| -> Vec<f64> {
        u.iter()
            .enumerate()
            .map(|(j, &v)| {
                let (lo, hi) = cfg.bounds(j);
                lo + v * (hi - lo)
            })
            .collect()
    };
    // `objective_fast` drives the search; `objective` gives the reported values
    let eval = |u: &[f64], obj: fn(&ShapeProblem, &[[f32; 2]], DeObjective) -> f64| -> f64 {
        let (r, s) = cfg.decode(&scale(u));
        obj(
            p,
            &product_shapes(&r, &s, cfg.octave_base_scale),
            cfg.objective,
        )
    };
    let energy = |u: &[f64]| eval(u, objective_fast);
    let exact = |u: &[f64]| eval(u, objective);
    let mut en: Vec<f64> = pop.par_iter().map(|u| energy(u)).collect();
    let mut evals = np;
    let bar = cfg
        .progress
        .task("differential evolution", cfg.max_generations as u64);
    let mut generations = 0;
    let mut converged = false;
    for g in 0..cfg.max_generations {
        let best = (0..np)
            .min_by(|&a, &b| en[a].total_cmp(&en[b]))
            .unwrap_or(0);
        let mut grng = ChaCha8Rng::seed_from_u64(sub_seed(cfg.seed, 100_000 + g as u64));
        let trials: Vec<Vec<f64>> = (0..np)
            .map(|i| {
                let (mut r0, mut r1);
                loop {
                    r0 = grng.random_range(0..np);
                    if r0 != i {
                        break;
                    }
                }
                loop {
                    r1 = grng.random_range(0..np);
                    if r1 != i && r1 != r0 {
                        break;
                    }
                }
                let fill = grng.random_range(0..d);
                let mut t = pop[i].clone();
                for j in 0..d {
                    if j == fill || grng.random::<f64>() < cfg.recombination {
                        t[j] = pop[best][j] + cfg.mutation * (pop[r0][j] - pop[r1][j]);
                    }
                }
                for v in t.iter_mut() {
                    if !(0.0..=1.0).contains(v) {
                        *v = grng.random::<f64>();
                    }
                }
                t
            })
            .collect();
        let te: Vec<f64> = trials.par_iter().map(|u| energy(u)).collect();
        evals += np;
        for i in 0..np {
            if te[i] <= en[i] {
                en[i] = te[i];
                pop[i] = trials[i].clone();
            }
        }
        generations = g + 1;
        bar.inc(1);
        let mean = en.iter().sum::<f64>() / np as f64;
        let sd = (en.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / np as f64).sqrt();
        if sd <= cfg.tol * mean.abs() {
            converged = true;
            break;
        }
    }
    bar.finish();
    let best = (0..np)
        .min_by(|&a, &b| en[a].total_cmp(&en[b]))
        .unwrap_or(0);
    let mut x = pop[best].clone();
    let mut fx = en[best];
    let value_de = exact(&x);
    if cfg.polish {
        // bounded pattern search: the 2 d neighbours at the current step are evaluated in
        // parallel and the best improving one is taken; the step halves when none improves
        let mut step = 0.02f64;
        while step > 1e-6 {
            let cands: Vec<Vec<f64>> = (0..2 * d)
                .map(|m| {
                    let mut y = x.clone();
                    let sgn = if m % 2 == 0 { 1.0 } else { -1.0 };
                    y[m / 2] = (y[m / 2] + sgn * step).clamp(0.0, 1.0);
                    y
                })
                .collect();
            let fs: Vec<f64> = cands.par_iter().map(|y| energy(y)).collect();
            evals += cands.len();
            // lowest energy, first in order on ties
            let (mut bi, mut bf) = (usize::MAX, fx);
            for (m, &fy) in fs.iter().enumerate() {
                if fy < bf {
                    bi = m;
                    bf = fy;
                }
            }
            if bi == usize::MAX {
                step *= 0.5;
            } else {
                x = cands[bi].clone();
                fx = bf;
            }
        }
    }
    let (ratios, scales) = cfg.decode(&scale(&x));
    DeResult {
        ratios,
        scales,
        value: exact(&x),
        value_de,
        generations,
        evaluations: evals,
        converged,
        seed: cfg.seed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_on_a_bound_are_reported() {
        let r = |ratios: Vec<f64>, scales: Vec<f64>| DeResult {
            ratios,
            scales,
            value: 0.0,
            value_de: 0.0,
            generations: 1,
            evaluations: 1,
            converged: true,
            seed: 0,
        };
        assert!(on_bounds(&r(vec![0.5, 1.0, 2.0], vec![0.7, 1.0, 1.3])).is_empty());
        // the fixed ratio 1 is never reported; a scale at 0.4 and a ratio at 4 are
        let w = on_bounds(&r(vec![0.25, 1.0, 4.0], vec![0.4, 1.0, 1.99999]));
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].contains("ratio 4.0000") && w[0].contains("upper bound 4"));
        assert!(w[1].contains("scale 0.4000") && w[1].contains("lower bound 0.4"));
        assert!(w[2].contains("upper bound 2"));
        // a ratio pair collapsed onto 1 (duplicates the square anchor)
        let w = on_bounds(&r(vec![1.0, 1.0, 1.0], vec![1.0]));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("lower bound 1"));
    }
}
