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

/// Input tensor and preprocessing (mmdet `Resize` / `Normalize` / `Pad`, see
/// `reference/mmdet-inference.md` section 1.3).
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

/// Which post-processing rule to reproduce (`reference/mmdet-inference.md` section 4, App. A).
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
