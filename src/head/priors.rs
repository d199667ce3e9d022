//! Priors: mmdet `AnchorGenerator` anchors (bit-exact in f32), explicit per-level anchor shapes,
//! and points.
//!
//! Sources: mmdet v2 `mmdet/core/anchor/anchor_generator.py` (`gen_single_level_base_anchors`,
//! `_meshgrid`, `single_level_grid_priors`), v3
//! `mmdet/models/task_modules/prior_generators/anchor_generator.py` and
//! `point_generator.py` (`MlvlPointGenerator`).
//!
//! Flat prior index of anchor `a` at cell `(y, x)` of an `H x W` level: `i = (y*W + x)*A + a`,
//! coordinates `base[a] + (x*stride, y*stride, x*stride, y*stride)` (f32 add).

use crate::error::{Error, Result};
use crate::spec::PriorSpec;

/// Priors of one level: `A` base boxes centred at the cell origin, plus the stride.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelPriors {
    /// Stride in input pixels.
    pub stride: u32,
    /// Base anchors `[A][x1, y1, x2, y2]` (f32, input pixels, relative to the shift). For
    /// points, a single zero-size box at `offset * stride`.
    pub base: Vec<[f32; 4]>,
    /// True for point priors (`base` is one degenerate box at the point).
    pub is_point: bool,
}

/// Octave scales as mmdet computes them: `2**(i/scales_per_octave)` in f64, times
/// `octave_base_scale` in f64, then cast to f32 (`torch.Tensor(scales)`).
/// FreeAnchor (4, 3): `[4.0, 5.0396843, 6.349604]`.
pub fn octave_scales(octave_base_scale: f64, scales_per_octave: u32) -> Vec<f32> {
    (0..scales_per_octave)
        .map(|i| (2f64.powf(i as f64 / scales_per_octave as f64) * octave_base_scale) as f32)
        .collect()
}

/// mmdet `gen_single_level_base_anchors(base_size, scales, ratios, center=None)` with
/// `scale_major=True`: `h_ratios = sqrt(ratios)` (f32), `w_ratios = 1/h_ratios` (f32),
/// `ws = (base * w_ratios[:, None]) * scales[None, :]` (f32, flattened ratio-major, i.e.
/// `a = ratio_index * num_scales + scale_index`), same for `hs`; anchor
/// `[xc - 0.5*ws, yc - 0.5*hs, xc + 0.5*ws, yc + 0.5*hs]` with `xc = yc = center_offset * base`.
/// Ratios are h/w. Output: `[A][x1, y1, x2, y2]` f32.
pub fn base_anchors(
    base_size: u32,
    scales: &[f32],
    ratios: &[f64],
    center_offset: f64,
) -> Vec<[f32; 4]> {
    let base = base_size as f32;
    let c = (center_offset * base_size as f64) as f32;
    let mut out = Vec::with_capacity(scales.len() * ratios.len());
    for &r in ratios {
        let h_ratio = (r as f32).sqrt();
        let w_ratio = 1.0f32 / h_ratio;
        for &s in scales {
            let ws = (base * w_ratio) * s;
            let hs = (base * h_ratio) * s;
            out.push([c - 0.5 * ws, c - 0.5 * hs, c + 0.5 * ws, c + 0.5 * hs]);
        }
    }
    out
}

impl LevelPriors {
    /// Build the priors of level `level` (stride `stride`) from the spec.
    ///
    /// Errors: [`Error::InvalidInput`] if an explicit-anchor spec has no entry for the level.
    pub fn from_spec(spec: &PriorSpec, level: usize, stride: u32) -> Result<Self> {
        match spec {
            PriorSpec::Anchors {
                octave_base_scale,
                scales_per_octave,
                ratios,
                center_offset,
            } => Ok(LevelPriors {
                stride,
                base: base_anchors(
                    stride,
                    &octave_scales(*octave_base_scale, *scales_per_octave),
                    ratios,
                    *center_offset,
                ),
                is_point: false,
            }),
            PriorSpec::ExplicitAnchors {
                per_level,
                center_offset,
            } => {
                let shapes = per_level.get(level).ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "explicit anchors: no shapes for level {level} (spec has {})",
                        per_level.len()
                    ))
                })?;
                let c = (center_offset * stride as f64) as f32;
                let base = shapes
                    .iter()
                    .map(|&[w, h]| {
                        let (ws, hs) = (w as f32, h as f32);
                        [c - 0.5 * ws, c - 0.5 * hs, c + 0.5 * ws, c + 0.5 * hs]
                    })
                    .collect();
                Ok(LevelPriors {
                    stride,
                    base,
                    is_point: false,
                })
            }
            PriorSpec::Points { offset } => {
                let p = (*offset as f32) * stride as f32;
                Ok(LevelPriors {
                    stride,
                    base: vec![[p, p, p, p]],
                    is_point: true,
                })
            }
        }
    }

    /// Number of priors per location (A).
    pub fn num_base(&self) -> usize {
        self.base.len()
    }

    /// Prior `i = (y*W + x)*A + a` of a level `w` cells wide: `base[a] + shift` in f32, with
    /// `shift = (x as f32 * stride, y as f32 * stride)` (mmdet `_meshgrid` + broadcast add).
    /// For points, `((x + offset) * stride, (y + offset) * stride)` is returned as a
    /// degenerate box (x1 = x2, y1 = y2); see [`LevelPriors::point`].
    #[inline]
    pub fn prior(&self, i: usize, w: usize) -> [f32; 4] {
        let a_n = self.base.len();
        let (loc, a) = (i / a_n, i % a_n);
        let (y, x) = (loc / w, loc % w);
        let s = self.stride as f32;
        let (sx, sy) = (x as f32 * s, y as f32 * s);
        let b = &self.base[a];
        [b[0] + sx, b[1] + sy, b[2] + sx, b[3] + sy]
    }

    /// Point prior of location `loc = y*W + x`: `((x + offset) * stride, (y + offset) * stride)`
    /// computed as mmdet `MlvlPointGenerator` does (`(arange + offset) * stride` in f32).
    #[inline]
    pub fn point(&self, loc: usize, w: usize, offset: f32) -> (f32, f32) {
        let (y, x) = (loc / w, loc % w);
        let s = self.stride as f32;
        ((x as f32 + offset) * s, (y as f32 + offset) * s)
    }

    /// All priors of an `h x w` level, `[H*W*A][x1, y1, x2, y2]`, in flat index order.
    pub fn grid(&self, h: usize, w: usize) -> Vec<[f32; 4]> {
        (0..h * w * self.base.len())
            .map(|i| self.prior(i, w))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::excessive_precision)] // reference values are quoted as published
mod tests {
    use super::*;

    fn freeanchor() -> PriorSpec {
        PriorSpec::Anchors {
            octave_base_scale: 4.0,
            scales_per_octave: 3,
            ratios: vec![0.5, 1.0, 2.0],
            center_offset: 0.0,
        }
    }

    #[test]
    fn octave_scales_freeanchor() {
        assert_eq!(octave_scales(4.0, 3), vec![4.0f32, 5.0396843, 6.349604]);
        assert_eq!(octave_scales(8.0, 1), vec![8.0f32]);
    }

    /// Stride-8 FreeAnchor base anchors as mmdet 2.28.2 `gen_single_level_base_anchors`
    /// computes them under torch.
    #[test]
    fn stride8_table() {
        let p = LevelPriors::from_spec(&freeanchor(), 0, 8).unwrap();
        let (a, b, c) = (22.627417f32, 28.508759f32, 35.918785f32);
        let (d, e) = (20.158737f32, 25.398417f32);
        let (h0, h1, h2) = (11.313708f32, 14.254379f32, 17.959393f32);
        let expect: [[f32; 4]; 9] = [
            [-a, -h0, a, h0],
            [-b, -h1, b, h1],
            [-c, -h2, c, h2],
            [-16.0, -16.0, 16.0, 16.0],
            [-d, -d, d, d],
            [-e, -e, e, e],
            [-h0, -a, h0, a],
            [-h1, -b, h1, b],
            [-h2, -c, h2, c],
        ];
        assert_eq!(p.base.len(), 9);
        for (i, (got, want)) in p.base.iter().zip(&expect).enumerate() {
            for k in 0..4 {
                assert!(
                    (got[k] - want[k]).abs() <= 2e-6 * want[k].abs().max(1.0),
                    "row {i} {got:?} vs {want:?}"
                );
            }
        }
        // widths / heights of the table
        let wh = |r: &[f32; 4]| (r[2] - r[0], r[3] - r[1]);
        assert!((wh(&p.base[0]).0 - 45.254833).abs() < 1e-5);
        assert!((wh(&p.base[2]).0 - 71.837570).abs() < 1e-5);
        assert!((wh(&p.base[4]).0 - 40.317474).abs() < 1e-5);
        assert!((wh(&p.base[5]).1 - 50.796833).abs() < 1e-5);
        // exact f32 bit patterns checked against torch
        assert_eq!(p.base[0][2].to_bits(), 0x41b504f3);
        assert_eq!(p.base[0][3].to_bits(), 0x413504f3);
        assert_eq!(p.base[1][2].to_bits(), 0x41e411f0);
        assert_eq!(p.base[2][2].to_bits(), 0x420facd6);
        assert_eq!(p.base[3], [-16.0, -16.0, 16.0, 16.0]);
    }

    #[test]
    fn other_strides_are_exact_multiples() {
        let p8 = LevelPriors::from_spec(&freeanchor(), 0, 8).unwrap();
        for (l, s) in [(1usize, 16u32), (2, 32), (3, 64), (4, 128)] {
            let p = LevelPriors::from_spec(&freeanchor(), l, s).unwrap();
            let f = (s / 8) as f32;
            for (a, b) in p.base.iter().zip(&p8.base) {
                for k in 0..4 {
                    assert_eq!(a[k], b[k] * f);
                }
            }
        }
        let p128 = LevelPriors::from_spec(&freeanchor(), 4, 128).unwrap();
        assert!((p128.base[2][2] - 574.700562).abs() < 1e-4);
        assert!((p128.base[2][3] - 287.350281).abs() < 1e-4);
        assert!((p128.base[8][3] - 574.700562).abs() < 1e-4);
    }

    #[test]
    fn grid_check_row_featmap_2x3() {
        let p = LevelPriors::from_spec(&freeanchor(), 0, 8).unwrap();
        let g = p.grid(2, 3);
        assert_eq!(g.len(), 2 * 3 * 9);
        let want = [-14.627417f32, -11.313708, 30.627417, 11.313708];
        for k in 0..4 {
            assert!((g[9][k] - want[k]).abs() < 2e-6, "{:?}", g[9]);
        }
        // exact: base + 8.0 in f32
        assert_eq!(g[9][0], p.base[0][0] + 8.0);
        // row (y=1, x=2), anchor 4 -> flat index (1*3+2)*9+4
        let r = g[(3 + 2) * 9 + 4];
        assert_eq!(
            r,
            [
                p.base[4][0] + 16.0,
                p.base[4][1] + 8.0,
                p.base[4][2] + 16.0,
                p.base[4][3] + 8.0
            ]
        );
    }

    #[test]
    fn atss_base_anchors() {
        let spec = PriorSpec::Anchors {
            octave_base_scale: 8.0,
            scales_per_octave: 1,
            ratios: vec![1.0],
            center_offset: 0.0,
        };
        for (l, s) in [8u32, 16, 32, 64, 128].into_iter().enumerate() {
            let p = LevelPriors::from_spec(&spec, l, s).unwrap();
            let h = 4.0 * s as f32;
            assert_eq!(p.base, vec![[-h, -h, h, h]]);
        }
    }

    #[test]
    fn explicit_anchors_and_points() {
        let spec = PriorSpec::ExplicitAnchors {
            per_level: vec![vec![[10.0, 20.0], [30.0, 15.0]]],
            center_offset: 0.5,
        };
        let p = LevelPriors::from_spec(&spec, 0, 8).unwrap();
        assert_eq!(
            p.base,
            vec![[-1.0, -6.0, 9.0, 14.0], [-11.0, -3.5, 19.0, 11.5]]
        );
        assert_eq!(p.prior(3, 4), [-11.0 + 8.0, -3.5, 19.0 + 8.0, 11.5]);
        assert!(LevelPriors::from_spec(&spec, 1, 16).is_err());
        let pts = LevelPriors::from_spec(&PriorSpec::Points { offset: 0.5 }, 0, 16).unwrap();
        assert_eq!(pts.point(5, 4, 0.5), (24.0, 24.0));
        assert_eq!(pts.prior(5, 4), [24.0, 24.0, 24.0, 24.0]);
    }
}
