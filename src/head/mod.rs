//! Dense-head numerics: priors (anchors / points), box coders, and per-level candidate
//! selection on raw head outputs. [`crate::postprocess`] drives them from the spec.
//!
//! Index mapping (mmdet `AnchorGenerator.single_level_grid_priors` order and the permute /
//! reshape in `BaseDenseHead._predict_by_feat_single`): for NCHW outputs of one image, class
//! element `cls[((a*C + c)*H + y)*W + x]` pairs with prior `i = (y*W + x)*A + a`; regression
//! channel `a*R + k` (R = 4, or 4*(reg_max+1) for GFL) and centerness channel `a`. For Flat
//! outputs, row `i` of `[H*W*A, K]`.

pub mod coder;
pub mod priors;
pub mod select;

pub use coder::{DeltaParams, clip_box, delta2bbox, distance2bbox, distribution2bbox, integral};
pub use priors::{LevelPriors, base_anchors, octave_scales};
pub use select::{
    Pair, SelectScratch, max_over_classes, raw_threshold, select_pairs, sigmoid, topk_desc,
};

use crate::error::{Error, Result};
use crate::spec::{CoderSpec, DetectorSpec, PriorSpec, TensorLayout};

/// Borrowed raw outputs of one level for ONE image, already sliced out of the batch.
/// For NCHW layout: cls = `[A*C, H, W]`, reg = `[A*4 | 4*(reg_max+1), H, W]`,
/// centerness = `[A, H, W]`. For Flat layout: cls = `[H*W*A, C]`,
/// reg = `[H*W*A, 4 | 4*(reg_max+1)]`, centerness = `[H*W*A, 1]`.
#[derive(Debug, Clone, Copy)]
pub struct LevelOutput<'a> {
    pub cls: &'a [f32],
    pub reg: &'a [f32],
    pub centerness: Option<&'a [f32]>,
    /// Feature-map height and width (cells).
    pub h: usize,
    pub w: usize,
}

/// Number of priors per location (A) of the spec's prior rule for `level`.
pub fn priors_per_location(priors: &PriorSpec, level: usize) -> usize {
    match priors {
        PriorSpec::Anchors {
            scales_per_octave,
            ratios,
            ..
        } => *scales_per_octave as usize * ratios.len(),
        PriorSpec::ExplicitAnchors { per_level, .. } => per_level.get(level).map_or(0, |v| v.len()),
        PriorSpec::Points { .. } => 1,
    }
}

/// Regression channels per prior (R): 4, or `4*(reg_max+1)` for the distribution coder.
pub fn reg_channels(coder: &CoderSpec) -> usize {
    match coder {
        CoderSpec::Distribution { reg_max, .. } => 4 * (*reg_max as usize + 1),
        _ => 4,
    }
}

/// Check the buffer lengths of one level against the spec (`A*C*H*W` etc.).
///
/// Errors: [`Error::InvalidInput`] naming the level and the mismatching tensor.
pub fn check_level(spec: &DetectorSpec, level: usize, out: &LevelOutput) -> Result<()> {
    let a = priors_per_location(&spec.head.priors, level);
    let c = spec.classes.len();
    let r = reg_channels(&spec.head.coder);
    let n = out.h * out.w * a;
    let bad = |what: &str, got: usize, want: usize| {
        Error::InvalidInput(format!(
            "level {level} (stride {}): {what} has {got} values, expected {want} (H={} W={} A={a} C={c} R={r})",
            spec.head.levels.get(level).map_or(0, |l| l.stride),
            out.h,
            out.w
        ))
    };
    if a == 0 {
        return Err(Error::InvalidInput(format!(
            "level {level}: no priors per location"
        )));
    }
    if out.cls.len() != n * c {
        return Err(bad("class tensor", out.cls.len(), n * c));
    }
    if out.reg.len() != n * r {
        return Err(bad("regression tensor", out.reg.len(), n * r));
    }
    if spec.head.centerness {
        match out.centerness {
            Some(ctr) if ctr.len() != n => return Err(bad("centerness tensor", ctr.len(), n)),
            None => {
                return Err(Error::InvalidInput(format!(
                    "level {level}: the spec multiplies centerness but no centerness tensor was given"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Gather the `R` regression values of prior `i` into `dst` (len R).
#[inline]
pub fn gather_reg(
    reg: &[f32],
    layout: TensorLayout,
    hw: usize,
    a_n: usize,
    i: usize,
    dst: &mut [f32],
) {
    let r = dst.len();
    match layout {
        TensorLayout::Nchw => {
            let (loc, a) = (i / a_n, i % a_n);
            for (k, d) in dst.iter_mut().enumerate() {
                *d = reg[(a * r + k) * hw + loc];
            }
        }
        TensorLayout::Flat => dst.copy_from_slice(&reg[i * r..(i + 1) * r]),
    }
}

/// Raw centerness value of prior `i` (NCHW channel `a`, or Flat row `i`).
#[inline]
pub fn gather_ctr(ctr: &[f32], layout: TensorLayout, hw: usize, a_n: usize, i: usize) -> f32 {
    match layout {
        TensorLayout::Nchw => ctr[(i % a_n) * hw + i / a_n],
        TensorLayout::Flat => ctr[i],
    }
}

/// Decoder of one level: priors + coder, decodes the box of any prior index.
#[derive(Debug, Clone)]
pub struct LevelDecoder {
    pub priors: LevelPriors,
    coder: CoderKind,
    layout: TensorLayout,
    hw: usize,
    w: usize,
    /// Clip region `[x0, y0, x1, y1]` in input pixels, if clipping.
    clip: Option<[f32; 4]>,
    reg_buf: Vec<f32>,
}

#[derive(Debug, Clone)]
enum CoderKind {
    Delta(DeltaParams),
    Distance {
        scale: f32,
        offset: f32,
    },
    Distribution {
        reg_max: usize,
        scale: f32,
        offset: f32,
    },
}

impl LevelDecoder {
    /// Build the decoder of level `level` (`h x w` cells). `clip_region` is the clamp region
    /// used when the coder's `clip_border` is set.
    ///
    /// Point coders (distance, distribution) on anchor priors use the anchor centres
    /// `((x1+x2)*0.5, (y1+y2)*0.5)` (mmdet GFL/FCOS-on-anchors `anchor_center`).
    ///
    /// Errors: [`Error::InvalidInput`] for the delta coder on point priors, or a level missing
    /// from the spec.
    pub fn new(
        spec: &DetectorSpec,
        level: usize,
        h: usize,
        w: usize,
        clip_region: [f32; 4],
    ) -> Result<Self> {
        let stride = spec
            .head
            .levels
            .get(level)
            .ok_or_else(|| Error::InvalidInput(format!("level {level} is not in the spec")))?
            .stride;
        let priors = LevelPriors::from_spec(&spec.head.priors, level, stride)?;
        let offset = match spec.head.priors {
            PriorSpec::Points { offset } => offset as f32,
            _ => 0.0,
        };
        let (coder, clip_border) = match &spec.head.coder {
            CoderSpec::DeltaXywh {
                means,
                stds,
                wh_ratio_clip,
                clip_border,
            } => {
                if priors.is_point {
                    return Err(Error::InvalidInput(
                        "the delta_xywh coder needs anchor priors".into(),
                    ));
                }
                (
                    CoderKind::Delta(DeltaParams::new(*means, *stds, *wh_ratio_clip)),
                    *clip_border,
                )
            }
            CoderSpec::Distance {
                scale_by_stride,
                clip_border,
            } => {
                let scale = if *scale_by_stride { stride as f32 } else { 1.0 };
                (CoderKind::Distance { scale, offset }, *clip_border)
            }
            CoderSpec::Distribution {
                reg_max,
                scale_by_stride,
                clip_border,
            } => {
                let scale = if *scale_by_stride { stride as f32 } else { 1.0 };
                (
                    CoderKind::Distribution {
                        reg_max: *reg_max as usize,
                        scale,
                        offset,
                    },
                    *clip_border,
                )
            }
        };
        Ok(LevelDecoder {
            priors,
            coder,
            layout: spec.head.layout,
            hw: h * w,
            w,
            clip: clip_border.then_some(clip_region),
            reg_buf: vec![0.0; reg_channels(&spec.head.coder)],
        })
    }

    /// Point of prior `i` for the point coders: the point itself, or the anchor centre.
    #[inline]
    fn point_of(&self, i: usize, offset: f32) -> (f32, f32) {
        if self.priors.is_point {
            self.priors
                .point(i / self.priors.num_base(), self.w, offset)
        } else {
            let b = self.priors.prior(i, self.w);
            ((b[0] + b[2]) * 0.5, (b[1] + b[3]) * 0.5)
        }
    }

    /// Decode the box of prior `i` from the level's regression tensor (input pixels, xyxy).
    pub fn decode(&mut self, reg: &[f32], i: usize) -> [f32; 4] {
        let a_n = self.priors.num_base();
        gather_reg(reg, self.layout, self.hw, a_n, i, &mut self.reg_buf);
        match &self.coder {
            CoderKind::Delta(p) => {
                let d = [
                    self.reg_buf[0],
                    self.reg_buf[1],
                    self.reg_buf[2],
                    self.reg_buf[3],
                ];
                delta2bbox(self.priors.prior(i, self.w), d, p, self.clip)
            }
            CoderKind::Distance { scale, offset } => {
                let pt = self.point_of(i, *offset);
                let b = &self.reg_buf;
                let d = if *scale == 1.0 {
                    [b[0], b[1], b[2], b[3]]
                } else {
                    [b[0] * scale, b[1] * scale, b[2] * scale, b[3] * scale]
                };
                distance2bbox(pt, d, self.clip)
            }
            CoderKind::Distribution {
                reg_max,
                scale,
                offset,
            } => {
                let pt = self.point_of(i, *offset);
                distribution2bbox(pt, &self.reg_buf, *reg_max, *scale, self.clip)
            }
        }
    }
}
