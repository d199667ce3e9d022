//! FPN anchor sets: per-level base anchors exactly as mmdet's `AnchorGenerator` /
//! `YOLOAnchorGenerator` build them (`mmdet/core/anchor/anchor_generator.py`, v2.28; identical in
//! v3 `task_modules/prior_generators/anchor_generator.py`), conversion to and from
//! [`PriorSpec`], and the optimizer's shape layouts.

use crate::error::{Error, Result};
use crate::head::priors::{base_anchors, octave_scales};
use crate::spec::PriorSpec;
use serde::Serialize;

/// Base anchors of every level, ready to be shifted over the grid.
///
/// Anchor `a` of level `l` at grid cell `(x, y)` is `base[l][a] + (x*s, y*s, x*s, y*s)` in f32
/// (`s = strides[l]`), flat index `(y*W + x)*A + a` (mmdet `single_level_grid_priors`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnchorSet {
    /// Strides in input pixels, one per level (P3, P4, ...).
    pub strides: Vec<u32>,
    /// `base[l][a] = [x1, y1, x2, y2]` in f32, centred at `center_offset * stride`.
    pub base: Vec<Vec<[f32; 4]>>,
    /// mmdet `center_offset` (0 for `AnchorGenerator` as configured by RetinaNet/FreeAnchor/ATSS,
    /// 0.5 for `YOLOAnchorGenerator`).
    pub center_offset: f64,
}

/// How optimized shapes become per-level anchors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// The same A = k shapes on every level, in units of the level's stride (anchor = stride x
    /// shape), as RetinaNet / FreeAnchor / ATSS configs do; A is unchanged across levels.
    Fpn,
    /// k free `(w, h)` shapes in input pixels (the peers' parameterization), sorted by area
    /// and split into equal groups over the levels, smallest to the finest (YOLO style);
    /// needs k to be a multiple of the number of levels.
    Free,
}

impl AnchorSet {
    /// Number of anchors per location (A).
    pub fn num_anchors(&self) -> usize {
        self.base.first().map_or(0, |b| b.len())
    }

    /// `(w, h)` of every anchor of level `l`.
    pub fn shapes(&self, l: usize) -> Vec<[f32; 2]> {
        self.base[l]
            .iter()
            .map(|b| [b[2] - b[0], b[3] - b[1]])
            .collect()
    }

    /// mmdet `AnchorGenerator` with `octave_base_scale` / `scales_per_octave` (or an explicit
    /// `scales` list when `scales` is `Some`, cast to f32 as `torch.Tensor(scales)`), `ratios` as
    /// h/w, `scale_major = True`, base size = stride: [`octave_scales`] and [`base_anchors`] of
    /// every level, flat index `ratio * S + scale`.
    pub fn mmdet(
        strides: &[u32],
        octave_base_scale: f64,
        scales_per_octave: u32,
        scales: Option<&[f64]>,
        ratios: &[f64],
        center_offset: f64,
    ) -> AnchorSet {
        let scales: Vec<f32> = match scales {
            Some(s) => s.iter().map(|&v| v as f32).collect(),
            None => octave_scales(octave_base_scale, scales_per_octave),
        };
        let base = strides
            .iter()
            .map(|&s| base_anchors(s, &scales, ratios, center_offset))
            .collect();
        AnchorSet {
            strides: strides.to_vec(),
            base,
            center_offset,
        }
    }

    /// Explicit per-level `(w, h)` (mmdet `YOLOAnchorGenerator` semantics: the base anchor is
    /// computed in f64 as `[c - 0.5 w, c - 0.5 h, c + 0.5 w, c + 0.5 h]` with
    /// `c = center_offset * stride` and then stored as f32).
    pub fn explicit(strides: &[u32], per_level: &[Vec<[f64; 2]>], center_offset: f64) -> AnchorSet {
        let base = strides
            .iter()
            .zip(per_level)
            .map(|(&s, shapes)| {
                let c = center_offset * s as f64;
                shapes
                    .iter()
                    .map(|&[w, h]| {
                        [
                            (c - 0.5 * w) as f32,
                            (c - 0.5 * h) as f32,
                            (c + 0.5 * w) as f32,
                            (c + 0.5 * h) as f32,
                        ]
                    })
                    .collect()
            })
            .collect();
        AnchorSet {
            strides: strides.to_vec(),
            base,
            center_offset,
        }
    }

    /// Anchors of a [`PriorSpec`] on the given strides.
    ///
    /// Errors: [`Error::InvalidInput`] for point priors, or explicit anchors whose level count
    /// differs from `strides` or whose A differs between levels.
    pub fn from_spec(prior: &PriorSpec, strides: &[u32]) -> Result<AnchorSet> {
        match prior {
            PriorSpec::Anchors {
                octave_base_scale,
                scales_per_octave,
                ratios,
                center_offset,
            } => Ok(AnchorSet::mmdet(
                strides,
                *octave_base_scale,
                *scales_per_octave,
                None,
                ratios,
                *center_offset,
            )),
            PriorSpec::ExplicitAnchors {
                per_level,
                center_offset,
            } => {
                if per_level.len() != strides.len() {
                    return Err(Error::InvalidInput(format!(
                        "explicit anchors have {} levels but {} strides were given",
                        per_level.len(),
                        strides.len()
                    )));
                }
                if per_level.iter().any(|l| l.len() != per_level[0].len()) {
                    return Err(Error::InvalidInput(
                        "explicit anchors: A differs between levels".into(),
                    ));
                }
                Ok(AnchorSet::explicit(strides, per_level, *center_offset))
            }
            PriorSpec::Points { .. } => Err(Error::InvalidInput(
                "point priors have no anchor shapes".into(),
            )),
        }
    }

    /// Build per-level `(w, h)` (f64, input pixels) from optimized shapes in a [`Layout`].
    /// `Fpn`: `stride * shape` on every level. `Free`: shapes sorted by area, `k / L` per level.
    ///
    /// Errors: [`Error::InvalidInput`] for `Free` when k is not a multiple of the level count.
    pub fn layout_shapes(
        shapes: &[[f64; 2]],
        layout: Layout,
        strides: &[u32],
    ) -> Result<Vec<Vec<[f64; 2]>>> {
        match layout {
            Layout::Fpn => Ok(strides
                .iter()
                .map(|&s| {
                    shapes
                        .iter()
                        .map(|&[w, h]| [w * s as f64, h * s as f64])
                        .collect()
                })
                .collect()),
            Layout::Free => {
                let l = strides.len();
                if l == 0 || !shapes.len().is_multiple_of(l) {
                    return Err(Error::InvalidInput(format!(
                        "free layout: k = {} is not a multiple of the {} levels (use --k {} or --layout fpn)",
                        shapes.len(),
                        l,
                        (shapes.len() / l.max(1)).max(1) * l.max(1)
                    )));
                }
                let mut s = shapes.to_vec();
                s.sort_by(|a, b| (a[0] * a[1]).total_cmp(&(b[0] * b[1])));
                Ok(s.chunks(shapes.len() / l).map(|c| c.to_vec()).collect())
            }
        }
    }
}

/// The RetinaNet / FreeAnchor default: `octave_base_scale = 4`, 3 scales per octave, ratios
/// `[0.5, 1, 2]` (A = 9), center offset 0.
pub fn retinanet_default() -> PriorSpec {
    PriorSpec::Anchors {
        octave_base_scale: 4.0,
        scales_per_octave: 3,
        ratios: vec![0.5, 1.0, 2.0],
        center_offset: 0.0,
    }
}

/// The ATSS default: one square anchor of side `8 * stride` (A = 1), center offset 0.
pub fn atss_default() -> PriorSpec {
    PriorSpec::Anchors {
        octave_base_scale: 8.0,
        scales_per_octave: 1,
        ratios: vec![1.0],
        center_offset: 0.0,
    }
}
