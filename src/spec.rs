//! The detector spec (`"format": "anchorkit.detector/1"`): everything outside the ONNX graph that
//! is needed to run a dense detector exactly as its training framework does.
//!
//! A spec lives in the ONNX `metadata_props` under the key [`METADATA_KEY`], or in a sidecar
//! JSON file (`<model>.json`, or `--spec PATH`) for third-party models that cannot be rewritten.
//! See `docs/spec.md` for the full contract with examples. Field names follow mmdetection
//! (`octave_base_scale`, `scales_per_octave`, `ratios` as h/w, `nms_pre`, `score_thr`, `iou_thr`,
//! `max_per_img`).
//!
//! Validation against the graph (names, ranks, channel counts = A*C, A*4, 4*(reg_max+1)) lives
//! in [`DetectorSpec::validate_io`] and is called when a model is loaded.

use serde::{Deserialize, Serialize};

pub mod checks;
pub mod init;
pub mod nanodet;

/// The ONNX metadata key under which the spec JSON is stored.
pub const METADATA_KEY: &str = "anchorkit.detector";
/// The only spec format version understood by this build.
pub const FORMAT_V1: &str = "anchorkit.detector/1";

/// A complete detector spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSpec {
    /// Must be [`FORMAT_V1`].
    pub format: String,
    /// Human-readable model name.
    #[serde(default)]
    pub name: String,
    /// Class names in output-channel order; `classes.len()` is C.
    pub classes: Vec<String>,
    /// Input tensor and preprocessing.
    pub input: InputSpec,
    /// Head: levels, priors, box coder, score activation.
    pub head: HeadSpec,
    /// Score threshold, top-k, NMS.
    pub postprocess: PostprocessSpec,
    /// How the model was trained and its measured accuracy (free-form JSON object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<serde_json::Value>,
}

/// Channel order the network expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

/// Input tensor and preprocessing (mmdet `Resize` / `Normalize` / `Pad`,
/// `mmdet/datasets/pipelines/transforms.py`; mmcv `mmcv/image/geometric.py` `rescale_size`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Name of the image input tensor, e.g. `"input"`.
    pub name: String,
    /// Channel order of the tensor.
    pub channel_order: ChannelOrder,
    /// Per-channel mean in pixel units (0..255), **in `channel_order`**.
    pub mean: [f32; 3],
    /// Per-channel std in pixel units, in `channel_order`; normalized = (x - mean) / std.
    pub std: [f32; 3],
    /// Resize rule.
    pub resize: ResizeRule,
    /// Pad bottom/right to a multiple of `size_divisor` (1 = no padding), after normalization.
    #[serde(default)]
    pub pad: PadSpec,
    /// Whether the graph accepts any H/W (otherwise the resize must produce the fixed size).
    #[serde(default)]
    pub dynamic_hw: bool,
    /// Apply EXIF orientation when decoding (modern OpenCV / mmcv do).
    #[serde(default = "default_true")]
    pub exif_orientation: bool,
    /// Resize implementation (mmcv `imresize(..., backend=...)`); default `cv2`.
    #[serde(default)]
    pub resize_backend: ResizeBackend,
    /// Canonical padded input shapes `[width, height]` for GPU providers (keep-ratio models
    /// with dynamic H/W): each input is padded bottom/right up to the first that holds it, and
    /// each gets its own session. Absent: the padded maxima in landscape and portrait. Used
    /// when shape bucketing is on (default on CUDA / TensorRT; `--shape-buckets`). Each entry
    /// must be a multiple of `pad.size_divisor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape_buckets: Option<Vec<[u32; 2]>>,
}

impl InputSpec {
    /// The mmdet test-time input of the COCO detectors (FreeAnchor, ATSS, GFL configs):
    /// tensor `"input"`, RGB, ImageNet mean `[123.675, 116.28, 103.53]` / std
    /// `[58.395, 57.12, 57.375]` (pixel units), keep-ratio resize to scale (1333, 800), pad
    /// bottom/right to a multiple of 32 with 0, dynamic H/W, EXIF orientation, cv2 resize, no
    /// shape buckets. Source: mmdet `configs/_base_/datasets/coco_detection.py` `test_pipeline`
    /// (`Resize(img_scale=(1333, 800), keep_ratio=True)`, `Normalize`, `Pad(size_divisor=32)`).
    pub fn mmdet_default() -> Self {
        InputSpec {
            name: "input".into(),
            channel_order: ChannelOrder::Rgb,
            mean: [123.675, 116.28, 103.53],
            std: [58.395, 57.12, 57.375],
            resize: ResizeRule::KeepRatio { scale: [1333, 800] },
            pad: PadSpec {
                size_divisor: 32,
                value: 0.0,
            },
            dynamic_hw: true,
            exif_orientation: true,
            resize_backend: ResizeBackend::default(),
            shape_buckets: None,
        }
    }
}

/// Which bilinear resize produces the network input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeBackend {
    /// Bit-exact OpenCV `cv2.resize(..., INTER_LINEAR)`, as mmcv `imresize` (default backend
    /// `cv2`) calls it during training and testing: the tensor equals mmdet's byte for byte
    /// once the decoded pixels are equal.
    #[default]
    Cv2,
    /// `fast_image_resize` bilinear convolution (antialiased when downscaling: every source
    /// pixel under the scaled kernel contributes). Differs from OpenCV by 1-3 levels on many
    /// pixels; kept for comparison and for models trained with an antialiased resize.
    FastImageResize,
}

fn default_true() -> bool {
    true
}

/// Resize rule of the input (sizes in pixels, `[width, height]` order where paired).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResizeRule {
    /// mmdet `Resize(keep_ratio=True, scale=(long, short))`: factor
    /// `s = min(long / max(w, h), short / min(w, h))`, new size `int(w*s + 0.5)`.
    KeepRatio { scale: [u32; 2] },
    /// Stretch to exactly `width x height` (aspect ratio not kept).
    Stretch { width: u32, height: u32 },
    /// Keep ratio to fit inside `width x height`, then pad to that size, image centered.
    /// `pad_value` is in pixel units (before normalization), e.g. 114.
    Letterbox {
        width: u32,
        height: u32,
        #[serde(default)]
        pad_value: f32,
    },
}

/// Padding after normalization (mmdet `Pad(size_divisor=32)`, value 0 in normalized space).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PadSpec {
    pub size_divisor: u32,
    /// Value of padded pixels in normalized space.
    #[serde(default)]
    pub value: f32,
}

impl Default for PadSpec {
    fn default() -> Self {
        PadSpec {
            size_divisor: 1,
            value: 0.0,
        }
    }
}

/// Memory layout of a level's output tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorLayout {
    /// `[N, A*K, H, W]` as mmdet exports (channel `a*K + k`).
    Nchw,
    /// `[N, H*W*A, K]` or `[H*W*A, K]` (no batch dim), rows in `(y*W + x)*A + a` order, as
    /// NanoDet exports.
    Flat,
}

/// Kind of dense head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadKind {
    /// RetinaNet / FreeAnchor: anchors, DeltaXYWH coder, sigmoid scores.
    Retina,
    /// ATSS: anchors (A=1), DeltaXYWH coder, centerness multiplied after the threshold.
    Atss,
    /// GFL / NanoDet: points, distribution coder.
    Gfl,
    /// FCOS / Pseudo-IoU: points, distance coder, optional centerness.
    Fcos,
}

/// Head description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadSpec {
    pub kind: HeadKind,
    /// Layout of every level's tensors.
    pub layout: TensorLayout,
    /// Levels in output order (P3, P4, ...).
    pub levels: Vec<LevelSpec>,
    pub priors: PriorSpec,
    pub coder: CoderSpec,
    /// Activation of the class scores.
    pub score: ScoreActivation,
    /// Multiply the (sigmoid) centerness into the score after the threshold (ATSS / FCOS).
    #[serde(default)]
    pub centerness: bool,
}

/// One FPN level: stride and the output tensors that hold it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelSpec {
    /// Stride in input pixels.
    pub stride: u32,
    /// Output tensor name of the class scores (A*C channels).
    pub cls: String,
    /// Output tensor name of the box regression (A*4, or 4*(reg_max+1) for GFL).
    pub reg: String,
    /// Output tensor name of the centerness (A channels), if the head has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub centerness: Option<String>,
}

/// Priors: anchors (mmdet `AnchorGenerator`) or points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PriorSpec {
    /// mmdet `AnchorGenerator` parameters (base size = stride; `scale_major=True`).
    /// A = len(ratios) * scales_per_octave. Source: `mmdet/core/anchor/anchor_generator.py`.
    Anchors {
        octave_base_scale: f64,
        scales_per_octave: u32,
        /// Aspect ratios as h/w.
        ratios: Vec<f64>,
        #[serde(default)]
        center_offset: f64,
    },
    /// Explicit per-level anchor shapes `(w, h)` in input pixels, as written by the anchor
    /// optimizer; `per_level[l]` has A entries (A equal on every level).
    ExplicitAnchors {
        per_level: Vec<Vec<[f64; 2]>>,
        #[serde(default)]
        center_offset: f64,
    },
    /// One point per location at `((x + offset) * stride, (y + offset) * stride)`.
    Points { offset: f64 },
}

/// Box coder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CoderSpec {
    /// mmdet `DeltaXYWHBBoxCoder` (`delta2bbox`): means, stds, log-size clamp
    /// `max_ratio = |ln(wh_ratio_clip)|` with wh_ratio_clip = 16/1000.
    DeltaXywh {
        means: [f64; 4],
        stds: [f64; 4],
        #[serde(default = "default_wh_ratio_clip")]
        wh_ratio_clip: f64,
        #[serde(default = "default_true")]
        clip_border: bool,
    },
    /// Distances (l, t, r, b) from the point; multiplied by stride when `scale_by_stride`.
    Distance {
        #[serde(default)]
        scale_by_stride: bool,
        #[serde(default = "default_true")]
        clip_border: bool,
    },
    /// GFL integral: per side softmax over `reg_max + 1` bins, expected value (times stride).
    Distribution {
        reg_max: u32,
        #[serde(default = "default_true")]
        scale_by_stride: bool,
        #[serde(default = "default_true")]
        clip_border: bool,
    },
}

fn default_wh_ratio_clip() -> f64 {
    16.0 / 1000.0
}

/// Class score activation in the graph output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreActivation {
    /// Raw logits: sigmoid is applied by anchorkit (thresholds compare logits).
    Sigmoid,
    /// Already probabilities.
    Activated,
}

/// Which post-processing rule to reproduce (mmdet `BaseDenseHead`, mmdeploy
/// `mmdeploy/codebase/mmdet/models/dense_heads/base_dense_head.py`, mmdet 2.17 `AnchorHead`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PostprocessRule {
    /// mmdet >= 2.18 / 3.x: pair-wise `score > score_thr`, per-level top `nms_pre` pairs,
    /// rescale before NMS, mmcv batched NMS (offset trick), `max_per_img`.
    #[default]
    Mmdet,
    /// mmdeploy end2end: anchor-wise top-k by max(cls*ctr), clamp to padded size, exact
    /// per-class NMS on the final score with at most 200 per class, rescale after.
    Mmdeploy,
    /// mmdet <= 2.17: anchor-wise top-k by max score with no threshold, then threshold.
    Legacy,
}

/// Post-processing parameters (mmdet `test_cfg`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostprocessSpec {
    /// Per-level top-k before NMS (mmdet `nms_pre`).
    pub nms_pre: usize,
    /// Strict score threshold on the class score (before centerness).
    pub score_thr: f32,
    /// NMS IoU threshold; a box is suppressed when IoU > iou_thr.
    pub iou_thr: f32,
    /// Detections kept per image.
    pub max_per_img: usize,
    /// NMS across classes instead of per class.
    #[serde(default)]
    pub class_agnostic: bool,
    #[serde(default)]
    pub rule: PostprocessRule,
    /// mmdet v3 drops boxes with w or h <= min_bbox_size after rescaling; `None` = v2 (keep).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_bbox_size: Option<f32>,
}

// ---------------------------------------------------------------------------------------------
// Loading and validation
// ---------------------------------------------------------------------------------------------

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// Name, element type and shape of one graph input or output (`-1` = dynamic dimension), as
/// reported by ONNX Runtime. Plain data so validation can be tested without a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorInfo {
    pub name: String,
    /// Element type, e.g. `"f32"`.
    pub elem: String,
    pub shape: Vec<i64>,
}

impl TensorInfo {
    /// Shape as `[1, 3, 320, 320]`, dynamic dimensions as `?`.
    pub fn shape_str(&self) -> String {
        shape_str(&self.shape)
    }
}

fn shape_str(s: &[i64]) -> String {
    let v: Vec<String> = s
        .iter()
        .map(|d| if *d < 0 { "?".into() } else { d.to_string() })
        .collect();
    format!("[{}]", v.join(", "))
}

/// Where a spec came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecSource {
    /// `--spec PATH`.
    Explicit(PathBuf),
    /// The model's ONNX `metadata_props` entry [`METADATA_KEY`].
    Metadata(PathBuf),
    /// A sidecar JSON beside the model.
    Sidecar(PathBuf),
}

impl SpecSource {
    /// The file to name in error messages.
    pub fn path(&self) -> &Path {
        match self {
            SpecSource::Explicit(p) | SpecSource::Metadata(p) | SpecSource::Sidecar(p) => p,
        }
    }
}

impl std::fmt::Display for SpecSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpecSource::Explicit(p) => write!(f, "{} (--spec)", p.display()),
            SpecSource::Metadata(p) => {
                write!(f, "{} (ONNX metadata `{METADATA_KEY}`)", p.display())
            }
            SpecSource::Sidecar(p) => write!(f, "{} (sidecar)", p.display()),
        }
    }
}

/// Sidecar candidates for a model: `<model stem>.json`, then `<model file name>.json`.
pub fn sidecar_candidates(model: &Path) -> Vec<PathBuf> {
    let mut v = vec![model.with_extension("json")];
    let mut s = model.as_os_str().to_owned();
    s.push(".json");
    v.push(PathBuf::from(s));
    v
}

/// Finds and parses the spec of `model`: `explicit` (`--spec`) first, then the ONNX metadata
/// value `metadata` (read by the caller from the session), then a sidecar JSON.
///
/// Errors: [`Error::Spec`] for unreadable / malformed JSON, a wrong `format`, an internally
/// inconsistent spec ([`DetectorSpec::check`]), or no spec at all (the message says how to supply
/// one).
pub fn resolve(
    model: &Path,
    explicit: Option<&Path>,
    metadata: Option<&str>,
) -> Result<(DetectorSpec, SpecSource)> {
    if let Some(p) = explicit {
        let text = std::fs::read_to_string(p).map_err(|e| Error::Spec {
            path: p.to_path_buf(),
            msg: format!("cannot read spec file: {e}"),
        })?;
        return Ok((
            DetectorSpec::from_json(&text, p)?,
            SpecSource::Explicit(p.into()),
        ));
    }
    if let Some(text) = metadata {
        let src = SpecSource::Metadata(model.to_path_buf());
        return Ok((DetectorSpec::from_json(text, src.path())?, src));
    }
    for c in sidecar_candidates(model) {
        if c.is_file() {
            let text = std::fs::read_to_string(&c).map_err(|e| Error::Spec {
                path: c.clone(),
                msg: format!("cannot read sidecar spec: {e}"),
            })?;
            return Ok((DetectorSpec::from_json(&text, &c)?, SpecSource::Sidecar(c)));
        }
    }
    Err(Error::Spec {
        path: model.to_path_buf(),
        msg: format!(
            "the model has no detector spec: no `{METADATA_KEY}` entry in its ONNX metadata_props and \
             no sidecar {}; pass one with --spec PATH (format in docs/spec.md; specs for the NanoDet-m \
             models are in models/specs/)",
            sidecar_candidates(model)[0].display()
        ),
    })
}

impl DetectorSpec {
    /// Parses a spec from JSON text and runs [`DetectorSpec::check`]; `path` names the source in
    /// errors.
    pub fn from_json(text: &str, path: &Path) -> Result<DetectorSpec> {
        let err = |msg: String| Error::Spec {
            path: path.to_path_buf(),
            msg,
        };
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| err(format!("not valid JSON: {e}")))?;
        match v.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT_V1) => {}
            Some(f) => {
                return Err(err(format!(
                    "unsupported format {f:?}; this build reads {FORMAT_V1:?}"
                )));
            }
            None => return Err(err(format!("missing \"format\": {FORMAT_V1:?}"))),
        }
        let spec: DetectorSpec =
            serde_json::from_value(v).map_err(|e| err(format!("invalid spec: {e}")))?;
        spec.check(path)?;
        Ok(spec)
    }

    /// Number of classes C.
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// Priors per location A (anchors: `len(ratios) * scales_per_octave`; explicit: entries per
    /// level; points: 1).
    pub fn num_priors(&self) -> usize {
        match &self.head.priors {
            PriorSpec::Anchors {
                scales_per_octave,
                ratios,
                ..
            } => ratios.len() * *scales_per_octave as usize,
            PriorSpec::ExplicitAnchors { per_level, .. } => per_level.first().map_or(0, Vec::len),
            PriorSpec::Points { .. } => 1,
        }
    }

    /// Regression channels per prior: 4, or `4 * (reg_max + 1)` for the distribution coder.
    pub fn reg_channels(&self) -> usize {
        match &self.head.coder {
            CoderSpec::Distribution { reg_max, .. } => 4 * (*reg_max as usize + 1),
            _ => 4,
        }
    }

    /// Fixed network input size `(height, width)` when the resize rule fixes it (stretch,
    /// letterbox); `None` for keep-ratio.
    pub fn fixed_input_hw(&self) -> Option<(u32, u32)> {
        match self.input.resize {
            ResizeRule::Stretch { width, height } | ResizeRule::Letterbox { width, height, .. } => {
                let d = self.input.pad.size_divisor.max(1);
                Some((height.div_ceil(d) * d, width.div_ceil(d) * d))
            }
            ResizeRule::KeepRatio { .. } => None,
        }
    }

    /// Checks the spec on its own (no graph): format, classes, strictly increasing strides,
    /// priors / coder matching the head kind, centerness tensors present iff `head.centerness`,
    /// explicit anchors per level, sane thresholds and sizes.
    pub fn check(&self, path: &Path) -> Result<()> {
        let err = |msg: String| {
            Err(Error::Spec {
                path: path.to_path_buf(),
                msg,
            })
        };
        if self.format != FORMAT_V1 {
            return err(format!(
                "format is {:?}, expected {FORMAT_V1:?}",
                self.format
            ));
        }
        if self.classes.is_empty() {
            return err("classes is empty".into());
        }
        let h = &self.head;
        if h.levels.is_empty() {
            return err("head.levels is empty".into());
        }
        for w in h.levels.windows(2) {
            if w[1].stride <= w[0].stride {
                return err(format!(
                    "head.levels strides must increase: {} then {}",
                    w[0].stride, w[1].stride
                ));
            }
        }
        if h.levels.iter().any(|l| l.stride == 0) {
            return err("head.levels: stride 0".into());
        }
        let anchors = matches!(
            h.priors,
            PriorSpec::Anchors { .. } | PriorSpec::ExplicitAnchors { .. }
        );
        match (h.kind, anchors, &h.coder) {
            (HeadKind::Retina | HeadKind::Atss, true, CoderSpec::DeltaXywh { .. }) => {}
            (HeadKind::Gfl, false, CoderSpec::Distribution { .. }) => {}
            (HeadKind::Fcos, false, CoderSpec::Distance { .. }) => {}
            (k, _, c) => {
                let want = match k {
                    HeadKind::Retina | HeadKind::Atss => {
                        "anchors/explicit_anchors priors with the delta_xywh coder"
                    }
                    HeadKind::Gfl => "points priors with the distribution coder",
                    HeadKind::Fcos => "points priors with the distance coder",
                };
                return err(format!(
                    "head.kind {k:?} needs {want}, found priors {} with coder {c:?}",
                    match h.priors {
                        PriorSpec::Anchors { .. } => "anchors",
                        PriorSpec::ExplicitAnchors { .. } => "explicit_anchors",
                        PriorSpec::Points { .. } => "points",
                    }
                ));
            }
        }
        match &h.priors {
            PriorSpec::Anchors {
                octave_base_scale,
                scales_per_octave,
                ratios,
                ..
            } => {
                if ratios.is_empty() || *scales_per_octave == 0 || *octave_base_scale <= 0.0 {
                    return err("head.priors: need ratios, scales_per_octave >= 1 and octave_base_scale > 0".into());
                }
                if ratios.iter().any(|r| *r <= 0.0) {
                    return err("head.priors.ratios must be > 0 (h/w)".into());
                }
            }
            PriorSpec::ExplicitAnchors { per_level, .. } => {
                if per_level.len() != h.levels.len() {
                    return err(format!(
                        "head.priors.per_level has {} levels, head.levels has {}",
                        per_level.len(),
                        h.levels.len()
                    ));
                }
                let a = per_level[0].len();
                if a == 0 || per_level.iter().any(|l| l.len() != a) {
                    return err("head.priors.per_level: every level needs the same, non-zero number of (w, h) anchors".into());
                }
                if per_level
                    .iter()
                    .flatten()
                    .any(|[w, hh]| *w <= 0.0 || *hh <= 0.0)
                {
                    return err("head.priors.per_level: anchor sizes must be > 0".into());
                }
            }
            PriorSpec::Points { .. } => {}
        }
        for (i, l) in h.levels.iter().enumerate() {
            match (h.centerness, &l.centerness) {
                (true, None) => {
                    return err(format!(
                        "head.centerness is true but level {i} (stride {}) names no centerness tensor",
                        l.stride
                    ));
                }
                (false, Some(c)) => {
                    return err(format!(
                        "level {i} names centerness tensor {c:?} but head.centerness is false"
                    ));
                }
                _ => {}
            }
        }
        let p = &self.postprocess;
        if !(0.0..1.0).contains(&p.score_thr) {
            return err(format!(
                "postprocess.score_thr {} is not in [0, 1)",
                p.score_thr
            ));
        }
        if !(p.iou_thr > 0.0 && p.iou_thr <= 1.0) {
            return err(format!(
                "postprocess.iou_thr {} is not in (0, 1]",
                p.iou_thr
            ));
        }
        if p.nms_pre == 0 || p.max_per_img == 0 {
            return err("postprocess.nms_pre and max_per_img must be >= 1".into());
        }
        if self.input.std.contains(&0.0) {
            return err("input.std has a zero".into());
        }
        if self.input.pad.size_divisor == 0 {
            return err("input.pad.size_divisor must be >= 1".into());
        }
        if let Some(b) = &self.input.shape_buckets {
            let d = self.input.pad.size_divisor;
            if let Some([w, h]) = b
                .iter()
                .find(|[w, h]| *w == 0 || *h == 0 || w % d != 0 || h % d != 0)
            {
                return err(format!(
                    "input.shape_buckets entry [{w}, {h}]: both sides must be positive \
                     multiples of input.pad.size_divisor ({d})"
                ));
            }
            if b.is_empty() {
                return err(
                    "input.shape_buckets is empty (omit it for the default buckets)".into(),
                );
            }
        }
        let zero = match self.input.resize {
            ResizeRule::KeepRatio { scale } => scale[0] == 0 || scale[1] == 0,
            ResizeRule::Stretch { width, height } | ResizeRule::Letterbox { width, height, .. } => {
                width == 0 || height == 0
            }
        };
        if zero {
            return err("input.resize has a zero size".into());
        }
        Ok(())
    }

    /// Validates the spec against the graph's inputs and outputs: the input tensor exists with
    /// rank 4 and 3 channels (and the fixed size of a stretch / letterbox resize, where the graph
    /// is static); every level tensor exists, is f32, and has the channel count the spec implies
    /// (`A*C` class scores, `A*4` or `4*(reg_max+1)` regression, `A` centerness) and consistent
    /// spatial sizes (`H = ceil(input_h / stride)`; for the flat layout `rows = H*W*A`).
    ///
    /// Errors: [`Error::Spec`] naming the tensor, the expected and the found shape.
    pub fn validate_io(
        &self,
        inputs: &[TensorInfo],
        outputs: &[TensorInfo],
        path: &Path,
    ) -> Result<()> {
        let err = |msg: String| {
            Err(Error::Spec {
                path: path.to_path_buf(),
                msg,
            })
        };
        let list = |v: &[TensorInfo]| {
            v.iter()
                .map(|t| format!("{} {}", t.name, t.shape_str()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some(inp) = inputs.iter().find(|t| t.name == self.input.name) else {
            return err(format!(
                "input.name {:?} is not a graph input; the graph's inputs are: {}",
                self.input.name,
                list(inputs)
            ));
        };
        if inp.shape.len() != 4 {
            return err(format!(
                "input {:?}: expected rank 4 [N, 3, H, W], found {}",
                inp.name,
                inp.shape_str()
            ));
        }
        if inp.elem != "f32" {
            return err(format!(
                "input {:?}: expected f32, found {}",
                inp.name, inp.elem
            ));
        }
        if inp.shape[1] >= 0 && inp.shape[1] != 3 {
            return err(format!(
                "input {:?}: expected 3 channels [N, 3, H, W], found {}",
                inp.name,
                inp.shape_str()
            ));
        }
        let graph_hw =
            (inp.shape[2] > 0 && inp.shape[3] > 0).then_some((inp.shape[2], inp.shape[3]));
        checks::check_resize_against_graph(self, inp, graph_hw, path)?;
        let fixed = self.fixed_input_hw();
        if let (Some((gh, gw)), Some((h, w))) = (graph_hw, fixed)
            && (gh != h as i64 || gw != w as i64)
        {
            return err(format!(
                "input {:?}: the resize rule produces [1, 3, {h}, {w}] but the graph expects {}",
                inp.name,
                inp.shape_str()
            ));
        }
        // Input size to derive level sizes from: the fixed resize size, else a static graph.
        let in_hw = fixed
            .map(|(h, w)| (h as i64, w as i64))
            .or(if self.input.dynamic_hw {
                None
            } else {
                graph_hw
            });

        let a = self.num_priors() as i64;
        let c = self.num_classes() as i64;
        let r = self.reg_channels() as i64;
        let find = |name: &str, what: &str, level: usize| -> Result<&TensorInfo> {
            outputs.iter().find(|t| t.name == name).ok_or_else(|| Error::Spec {
                path: path.to_path_buf(),
                msg: format!(
                    "level {level} {what} tensor {name:?} is not a graph output; the graph's outputs are: {}",
                    list(outputs)
                ),
            })
        };
        for (li, l) in self.head.levels.iter().enumerate() {
            let expect_hw = in_hw.map(|(h, w)| {
                let s = l.stride as i64;
                ((h + s - 1) / s, (w + s - 1) / s)
            });
            let mut tensors = vec![
                (
                    find(&l.cls, "class-score", li)?,
                    a * c,
                    "class-score",
                    format!("A*C = {a}*{c}"),
                ),
                (
                    find(&l.reg, "box-regression", li)?,
                    a * r,
                    "box-regression",
                    if r == 4 {
                        format!("A*4 = {a}*4")
                    } else {
                        format!("A*4*(reg_max+1) = {a}*{r}")
                    },
                ),
            ];
            if let Some(cn) = &l.centerness {
                tensors.push((
                    find(cn, "centerness", li)?,
                    a,
                    "centerness",
                    format!("A = {a}"),
                ));
            }
            let mut spatial: Option<(i64, i64, &str)> = None;
            for (t, ch, what, why) in tensors {
                if t.elem != "f32" {
                    return err(format!(
                        "level {li} {what} tensor {:?}: expected f32, found {}",
                        t.name, t.elem
                    ));
                }
                match self.head.layout {
                    TensorLayout::Nchw => {
                        if t.shape.len() != 4 {
                            return err(format!(
                                "level {li} (stride {}) {what} tensor {:?}: expected NCHW [N, {ch}, H, W] ({why}), found {}",
                                l.stride,
                                t.name,
                                t.shape_str()
                            ));
                        }
                        if t.shape[1] >= 0 && t.shape[1] != ch {
                            return err(format!(
                                "level {li} (stride {}) {what} tensor {:?}: expected [N, {ch}, H, W] ({why}{}), found {}",
                                l.stride,
                                t.name,
                                if what == "class-score" {
                                    format!("; C = {} classes in the spec", c)
                                } else {
                                    String::new()
                                },
                                t.shape_str()
                            ));
                        }
                        let (th, tw) = (t.shape[2], t.shape[3]);
                        if let Some((eh, ew)) = expect_hw
                            && ((th >= 0 && th != eh) || (tw >= 0 && tw != ew))
                        {
                            return err(format!(
                                "level {li} (stride {}) {what} tensor {:?}: expected [N, {ch}, {eh}, {ew}] (input {:?} / stride), found {}",
                                l.stride,
                                t.name,
                                in_hw.unwrap(),
                                t.shape_str()
                            ));
                        }
                        if th >= 0 && tw >= 0 {
                            if let Some((sh, sw, first)) = spatial {
                                if (sh, sw) != (th, tw) {
                                    return err(format!(
                                        "level {li} (stride {}): {what} tensor {:?} is {}x{} but {first} is {sh}x{sw}",
                                        l.stride, t.name, th, tw
                                    ));
                                }
                            } else {
                                spatial = Some((th, tw, what));
                            }
                        }
                    }
                    TensorLayout::Flat => {
                        let per = ch / a.max(1);
                        let ok_rank = t.shape.len() == 2 || t.shape.len() == 3;
                        let rows = if ok_rank {
                            t.shape[t.shape.len() - 2]
                        } else {
                            -1
                        };
                        let k = t.shape.last().copied().unwrap_or(-1);
                        let exp_rows = expect_hw.map(|(h, w)| h * w * a);
                        let exp_str = format!(
                            "[{}, {per}]",
                            exp_rows.map_or("H*W*A".to_string(), |r| r.to_string())
                        );
                        let bad_rows = matches!((exp_rows, rows), (Some(e), r) if r >= 0 && r != e);
                        if !ok_rank || (k >= 0 && k != per) || bad_rows {
                            let per_why = match what {
                                "class-score" => format!("C = {c} classes"),
                                "box-regression" if r != 4 => format!("4*(reg_max+1) = {r}"),
                                _ => per.to_string(),
                            };
                            let rows_why = match (expect_hw, in_hw) {
                                (Some((h, w)), Some(ih)) => format!(
                                    "; rows = H*W*A = {h}*{w}*{a} for input {ih:?} at stride {}",
                                    l.stride
                                ),
                                _ => String::new(),
                            };
                            return err(format!(
                                "level {li} (stride {}) {what} tensor {:?}: expected {exp_str} or [N, ...] \
                                 (flat layout, {per_why} per row{rows_why}), found {}",
                                l.stride,
                                t.name,
                                t.shape_str()
                            ));
                        }
                        if rows >= 0 {
                            if let Some((sr, _, first)) = spatial {
                                if sr != rows {
                                    return err(format!(
                                        "level {li} (stride {}): {what} tensor {:?} has {rows} rows but {first} has {sr}",
                                        l.stride, t.name
                                    ));
                                }
                            } else {
                                spatial = Some((rows, 0, what));
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nanodet_like() -> DetectorSpec {
        let text = include_str!("../models/specs/nanodet-m-320.json");
        DetectorSpec::from_json(text, Path::new("nanodet-m-320.json")).unwrap()
    }

    fn ti(name: &str, shape: &[i64]) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            elem: "f32".into(),
            shape: shape.to_vec(),
        }
    }

    fn nanodet_io() -> (Vec<TensorInfo>, Vec<TensorInfo>) {
        (
            vec![ti("image", &[1, 3, 320, 320])],
            vec![
                ti("cls_score0", &[1600, 80]),
                ti("bbox_pred0", &[400, 80]),
                ti("cls_score1", &[100, 80]),
                ti("bbox_pred1", &[1600, 32]),
                ti("cls_score2", &[400, 32]),
                ti("bbox_pred2", &[100, 32]),
            ],
        )
    }

    fn msg(r: Result<()>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn shipped_nanodet_spec_matches_graph_shapes() {
        let s = nanodet_like();
        let (i, o) = nanodet_io();
        s.validate_io(&i, &o, Path::new("m.json")).unwrap();
        assert_eq!(
            (s.num_priors(), s.num_classes(), s.reg_channels()),
            (1, 80, 32)
        );
    }

    #[test]
    fn wrong_class_count_names_tensor_and_shapes() {
        let mut s = nanodet_like();
        s.classes.pop();
        let (i, o) = nanodet_io();
        let m = msg(s.validate_io(&i, &o, Path::new("m.json")));
        assert!(
            m.contains("\"cls_score0\"")
                && m.contains("[1600, 79]")
                && m.contains("found [1600, 80]"),
            "{m}"
        );
    }

    #[test]
    fn missing_tensor_and_input_are_named() {
        let mut s = nanodet_like();
        s.head.levels[1].reg = "nope".into();
        let (i, o) = nanodet_io();
        let m = msg(s.validate_io(&i, &o, Path::new("m.json")));
        assert!(
            m.contains("\"nope\" is not a graph output") && m.contains("bbox_pred1 [1600, 32]"),
            "{m}"
        );
        let mut s = nanodet_like();
        s.input.name = "images".into();
        let m = msg(s.validate_io(&i, &o, Path::new("m.json")));
        assert!(
            m.contains("\"images\" is not a graph input") && m.contains("image [1, 3, 320, 320]"),
            "{m}"
        );
    }

    #[test]
    fn wrong_rows_and_input_size_are_reported() {
        let mut s = nanodet_like();
        s.head.levels.swap(0, 1);
        s.head.levels[0].stride = 8;
        s.head.levels[1].stride = 16;
        let (i, o) = nanodet_io();
        let m = msg(s.validate_io(&i, &o, Path::new("m.json")));
        assert!(
            m.contains("expected [1600, 80]") && m.contains("found [400, 80]"),
            "{m}"
        );
        let mut s = nanodet_like();
        s.input.resize = ResizeRule::Stretch {
            width: 416,
            height: 416,
        };
        let m = msg(s.validate_io(&i, &o, Path::new("m.json")));
        assert!(
            m.contains("[1, 3, 416, 416]") && m.contains("[1, 3, 320, 320]"),
            "{m}"
        );
    }

    #[test]
    fn nchw_channel_counts_are_checked() {
        // RetinaNet-like: A = 9, C = 80 -> 720 class channels, 36 regression channels.
        let mut s = nanodet_like();
        s.head.kind = HeadKind::Retina;
        s.head.layout = TensorLayout::Nchw;
        s.head.priors = PriorSpec::Anchors {
            octave_base_scale: 4.0,
            scales_per_octave: 3,
            ratios: vec![0.5, 1.0, 2.0],
            center_offset: 0.0,
        };
        s.head.coder = CoderSpec::DeltaXywh {
            means: [0.0; 4],
            stds: [1.0; 4],
            wh_ratio_clip: 0.016,
            clip_border: true,
        };
        s.check(Path::new("x")).unwrap();
        let i = vec![ti("image", &[1, 3, 320, 320])];
        let mut o: Vec<TensorInfo> = s
            .head
            .levels
            .iter()
            .flat_map(|l| {
                let n = (320 / l.stride) as i64;
                [ti(&l.cls, &[1, 720, n, n]), ti(&l.reg, &[1, 36, n, n])]
            })
            .collect();
        s.validate_io(&i, &o, Path::new("m")).unwrap();
        o[1].shape[1] = 32;
        let m = msg(s.validate_io(&i, &o, Path::new("m")));
        assert!(
            m.contains("A*4 = 9*4")
                && m.contains("[N, 36, H, W]")
                && m.contains("found [1, 32, 40, 40]"),
            "{m}"
        );
    }

    #[test]
    fn internal_checks() {
        let base = nanodet_like();
        let mut s = base.clone();
        s.head.levels[2].stride = 16;
        assert!(msg(s.check(Path::new("x"))).contains("strides must increase"));
        let mut s = base.clone();
        s.head.centerness = true;
        assert!(msg(s.check(Path::new("x"))).contains("names no centerness tensor"));
        let mut s = base.clone();
        s.head.kind = HeadKind::Atss;
        assert!(msg(s.check(Path::new("x"))).contains("needs anchors"));
        let e =
            DetectorSpec::from_json(r#"{"format": "anchorkit.detector/9"}"#, Path::new("s.json"))
                .unwrap_err()
                .to_string();
        assert!(
            e.contains("s.json") && e.contains("unsupported format"),
            "{e}"
        );
    }

    #[test]
    fn no_spec_error_says_how_to_supply_one() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("model.onnx");
        let e = resolve(&m, None, None).unwrap_err().to_string();
        assert!(
            e.contains("--spec PATH")
                && e.contains("model.json")
                && e.contains("anchorkit.detector"),
            "{e}"
        );
        std::fs::write(
            d.path().join("model.json"),
            include_str!("../models/specs/nanodet-m-320.json"),
        )
        .unwrap();
        let (_, src) = resolve(&m, None, None).unwrap();
        assert_eq!(src, SpecSource::Sidecar(d.path().join("model.json")));
    }

    #[test]
    fn examples_in_docs_are_valid_specs() {
        let doc = include_str!("../docs/spec.md");
        let blocks: Vec<&str> = doc
            .split("```json")
            .skip(1)
            .map(|b| b.split("```").next().unwrap())
            .collect();
        assert_eq!(blocks.len(), 2);
        for b in blocks {
            DetectorSpec::from_json(b, Path::new("docs/spec.md")).unwrap();
        }
    }
}
