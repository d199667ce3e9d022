//! Checks for silent misconfiguration: spec settings that pass the shape validation of
//! [`DetectorSpec::validate_io`] but give plausible-looking wrong detections.
//!
//! * [`score_activation`]: the class-score outputs of a run tell whether the graph already
//!   applies the sigmoid. Used on the first image by [`crate::Detector`] and by
//!   `anchorkit spec init` on a synthetic image.
//! * [`check_first_run`]: the run-time checks on the first image (score activation, NCHW
//!   feature-map sizes against the strides).
//! * [`lint`]: settings that are legal but unusual for the head kind (warnings, not errors).
//!
//! The graph-side check of the resize rule (a `keep_ratio` rule or `dynamic_hw: true` on a
//! graph with a fixed input size) is part of [`DetectorSpec::validate_io`].

use super::{DetectorSpec, HeadKind, PriorSpec, ResizeRule, ScoreActivation, TensorLayout};
use crate::head::LevelOutput;
use crate::preprocess::ImageMeta;
use crate::{Error, Result};
use std::path::Path;

/// Value statistics of the class-score outputs of one run (all levels together).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreStats {
    /// Number of finite values seen.
    pub n: usize,
    /// Number of non-finite values (NaN, inf).
    pub non_finite: usize,
    pub min: f32,
    pub max: f32,
    pub mean: f64,
}

impl ScoreStats {
    /// Statistics of the values of `slices` (e.g. every level's class-score tensor).
    pub fn of<'a>(slices: impl IntoIterator<Item = &'a [f32]>) -> ScoreStats {
        let mut s = ScoreStats {
            n: 0,
            non_finite: 0,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            mean: 0.0,
        };
        let mut sum = 0f64;
        for sl in slices {
            for &v in sl {
                if v.is_finite() {
                    s.n += 1;
                    s.min = s.min.min(v);
                    s.max = s.max.max(v);
                    sum += v as f64;
                } else {
                    s.non_finite += 1;
                }
            }
        }
        if s.n > 0 {
            s.mean = sum / s.n as f64;
        }
        s
    }

    /// Statistics of the union of the values behind `self` and `o`.
    pub fn merge(self, o: ScoreStats) -> ScoreStats {
        let n = self.n + o.n;
        ScoreStats {
            n,
            non_finite: self.non_finite + o.non_finite,
            min: self.min.min(o.min),
            max: self.max.max(o.max),
            mean: if n == 0 {
                0.0
            } else {
                (self.mean * self.n as f64 + o.mean * o.n as f64) / n as f64
            },
        }
    }

    /// Whether every value lies in `[0, 1]`, i.e. the values are probabilities.
    pub fn all_in_unit_interval(&self) -> bool {
        self.n > 0 && self.min >= 0.0 && self.max <= 1.0
    }
}

impl std::fmt::Display for ScoreStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} values in [{:.4}, {:.4}], mean {:.4}",
            self.n, self.min, self.max, self.mean
        )
    }
}

/// What the class-score values of a run say about the graph's activation.
///
/// Every value in `[0, 1]` means the graph already applies the sigmoid (`activated`): the raw
/// class logits of a trained dense detector are never all inside `[0, 1]`, since almost every
/// prior is background with a strongly negative logit (heads are initialized with the focal-loss
/// prior bias `-log((1 - 0.01) / 0.01) = -4.6`, mmdet `bias_init_with_prob(0.01)`, and training
/// pushes background further down). Any value outside `[0, 1]` means logits (`sigmoid`).
/// Returns `None` when no finite value was seen.
pub fn score_activation(stats: &ScoreStats) -> Option<ScoreActivation> {
    if stats.n == 0 {
        None
    } else if stats.all_in_unit_interval() {
        Some(ScoreActivation::Activated)
    } else {
        Some(ScoreActivation::Sigmoid)
    }
}

/// Checks the outputs of the first image against the spec. Errors ([`Error::Spec`] naming
/// `source`), each a setting that would otherwise run silently with wrong results:
///
/// * `head.score` is `sigmoid` but every class-score value lies in `[0, 1]`: the graph already
///   applies the sigmoid, and a second sigmoid squeezes every score into `[0.5, 0.73]`, so every
///   prior passes `score_thr` (about `max_per_img` detections on every image);
/// * `head.score` is `activated` but some value lies outside `[0, 1]`: the outputs are logits
///   (a probability cannot be negative), and thresholds would compare logits with probabilities;
/// * non-finite class scores;
/// * NCHW layout: a level's feature map is not `ceil(input / stride)` (a wrong stride places
///   every prior wrongly; the message gives the stride the sizes imply).
///
/// An error here is a spec error, not an image error: the decision does not depend on the
/// image content (see [`score_activation`]).
pub fn check_first_run(
    spec: &DetectorSpec,
    levels: &[LevelOutput<'_>],
    meta: &ImageMeta,
    source: &Path,
) -> Result<()> {
    let err = |msg: String| {
        Err(Error::Spec {
            path: source.to_path_buf(),
            msg,
        })
    };
    let stats = ScoreStats::of(levels.iter().map(|l| l.cls));
    if stats.non_finite > 0 {
        return err(format!(
            "{} of the class-score output values of the first image are NaN or infinite",
            stats.non_finite
        ));
    }
    match (spec.head.score, score_activation(&stats)) {
        (ScoreActivation::Sigmoid, Some(ScoreActivation::Activated)) => {
            return err(format!(
                "head.score is \"sigmoid\" but every class-score output value of the first image \
                 lies in [0, 1] ({stats}): the graph already applies the sigmoid (a second one would \
                 put every score in [0.5, 0.73] and pass score_thr everywhere); set \
                 \"score\": \"activated\""
            ));
        }
        (ScoreActivation::Activated, Some(ScoreActivation::Sigmoid)) => {
            return err(format!(
                "head.score is \"activated\" but the class-score outputs of the first image are not \
                 probabilities ({stats}): the graph outputs logits; set \"score\": \"sigmoid\""
            ));
        }
        _ => {}
    }
    if spec.head.layout == TensorLayout::Nchw {
        for (li, (l, out)) in spec.head.levels.iter().zip(levels).enumerate() {
            let s = l.stride;
            let (eh, ew) = (meta.input_h.div_ceil(s), meta.input_w.div_ceil(s));
            if (out.h as u32, out.w as u32) != (eh, ew) {
                let implied = if out.h > 0 {
                    format!(
                        "; the sizes imply stride {}",
                        implied_stride(meta.input_h, out.h as u32)
                            .map_or("(none)".into(), |v| v.to_string())
                    )
                } else {
                    String::new()
                };
                return err(format!(
                    "level {li} (stride {s}): feature map {}x{} for a {}x{} input, expected \
                     ceil(input / stride) = {eh}x{ew}{implied}; check head.levels[{li}].stride and \
                     the level order",
                    out.h, out.w, meta.input_h, meta.input_w
                ));
            }
        }
    }
    Ok(())
}

/// Load-time check of the resize rule against the graph's input `inp` (`graph_hw`: its fixed
/// `(H, W)`, `None` when either is dynamic). Errors ([`Error::Spec`] naming `source`, the rule
/// and the graph's dims):
///
/// * a `keep_ratio` rule on a graph with a fixed H x W: the resized size follows each image's
///   aspect ratio, so most images would fail inside ONNX Runtime ("invalid dimensions");
/// * `input.dynamic_hw: true` on a graph with a fixed H x W.
///
/// (`stretch` / `letterbox` sizes against a fixed graph are compared by
/// [`DetectorSpec::validate_io`].)
pub fn check_resize_against_graph(
    spec: &DetectorSpec,
    inp: &super::TensorInfo,
    graph_hw: Option<(i64, i64)>,
    source: &Path,
) -> Result<()> {
    let Some((gh, gw)) = graph_hw else {
        return Ok(());
    };
    let err = |msg: String| {
        Err(Error::Spec {
            path: source.to_path_buf(),
            msg,
        })
    };
    if let ResizeRule::KeepRatio { scale } = spec.input.resize {
        return err(format!(
            "input.resize is keep_ratio (scale {scale:?}) but the graph input {:?} has the fixed \
             size {} (H = {gh}, W = {gw}): a keep-ratio resize gives a different H x W for each \
             aspect ratio; use {{\"rule\": \"stretch\", \"width\": {gw}, \"height\": {gh}}} or \
             {{\"rule\": \"letterbox\", \"width\": {gw}, \"height\": {gh}}} (or export the graph \
             with dynamic H, W)",
            inp.name,
            inp.shape_str()
        ));
    }
    if spec.input.dynamic_hw {
        return err(format!(
            "input.dynamic_hw is true but the graph input {:?} has the fixed size {} (H = {gh}, \
             W = {gw}); set \"dynamic_hw\": false",
            inp.name,
            inp.shape_str()
        ));
    }
    Ok(())
}

/// The power-of-two stride `s` (2..=512) with `ceil(input / s) == cells`, if any.
pub fn implied_stride(input: u32, cells: u32) -> Option<u32> {
    (1..=9)
        .map(|k| 1u32 << k)
        .find(|s| input.div_ceil(*s) == cells)
}

/// Legal but suspicious settings, as warning lines (empty when none):
///
/// * `mean` / `std` all <= 1: values in 0..1 units, while the spec wants pixel units 0..255
///   (torchvision's `[0.485, 0.456, 0.406]` must be written `[123.675, 116.28, 103.53]`);
/// * point offset against the head's usual convention: mmdet `MlvlPointGenerator` (FCOS)
///   uses offset 0.5; mmdet `GFLHead` decodes from anchor centres (`AnchorGenerator`,
///   `center_offset=0`), so an NCHW `gfl` head normally has offset 0, while NanoDet's
///   flat exports (`nanodet/model/head/gfl_head.py` `get_single_level_center_point`, all
///   releases up to 1.0) use 0.5;
/// * anchors with a non-zero `center_offset` (mmdet's detectors all use 0).
pub fn lint(spec: &DetectorSpec) -> Vec<String> {
    let mut w = vec![];
    let i = &spec.input;
    if i.mean.iter().chain(&i.std).all(|v| v.abs() <= 1.0) {
        w.push(format!(
            "input.mean {:?} and input.std {:?} look like 0..1 units; the spec takes pixel units \
             (0..255), e.g. mean [123.675, 116.28, 103.53], std [58.395, 57.12, 57.375]",
            i.mean, i.std
        ));
    }
    let h = &spec.head;
    match (&h.priors, h.kind, h.layout) {
        (PriorSpec::Points { offset }, HeadKind::Fcos, _) if *offset != 0.5 => w.push(format!(
            "head.priors.offset is {offset} for an fcos head; mmdet's point generator \
             (MlvlPointGenerator) uses 0.5"
        )),
        (PriorSpec::Points { offset }, HeadKind::Gfl, TensorLayout::Nchw) if *offset != 0.0 => w
            .push(format!(
                "head.priors.offset is {offset} for an NCHW gfl head; mmdet's GFLHead decodes \
                 from anchor centres (center_offset 0), so mmdet exports need offset 0"
            )),
        (PriorSpec::Points { offset }, HeadKind::Gfl, TensorLayout::Flat) if *offset != 0.5 => w
            .push(format!(
                "head.priors.offset is {offset} for a flat gfl head; NanoDet up to 1.0 \
                 (NanoDetHead / GFLHead) places points at (x + 0.5) * stride"
            )),
        (
            PriorSpec::Anchors { center_offset, .. }
            | PriorSpec::ExplicitAnchors { center_offset, .. },
            _,
            _,
        ) if *center_offset != 0.0 => w.push(format!(
            "head.priors.center_offset is {center_offset}; mmdet's anchor heads use 0"
        )),
        _ => {}
    }
    if let ResizeRule::KeepRatio { scale } = i.resize
        && scale[0] < scale[1]
    {
        w.push(format!(
            "input.resize.scale {scale:?} is [short, long]; mmdet writes (long, short), e.g. \
             [1333, 800] (the order does not change the result)"
        ));
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_from_values() {
        let probs = [0.0f32, 0.01, 0.5, 1.0];
        let logits = [-4.6f32, -7.0, 0.3];
        assert_eq!(
            score_activation(&ScoreStats::of([&probs[..]])),
            Some(ScoreActivation::Activated)
        );
        assert_eq!(
            score_activation(&ScoreStats::of([&probs[..], &logits[..]])),
            Some(ScoreActivation::Sigmoid)
        );
        assert_eq!(score_activation(&ScoreStats::of([&[][..]])), None);
        let s = ScoreStats::of([&[f32::NAN, 0.5][..]]);
        assert_eq!((s.n, s.non_finite), (1, 1));
        assert_eq!(implied_stride(320, 40), Some(8));
        assert_eq!(implied_stride(333, 42), Some(8));
        assert_eq!(implied_stride(320, 41), None);
    }
}
