//! `anchorkit spec init`: write a detector spec from the ONNX graph, a training config and
//! command-line flags, recording where each value came from.
//!
//! Two stages with plain data in between:
//! 1. [`probe`] opens the graph with ONNX Runtime and runs it once on a synthetic image of the
//!    input size (fixed dims, else the configured size): the inputs and outputs, the shape of
//!    every output after the run (dynamic dims resolved) and the value range of every output.
//! 2. [`build`] derives the spec from a [`GraphProbe`], an optional [`ConfigValues`] (from a
//!    NanoDet `.yml`, [`super::nanodet::read`]) and [`InitFlags`]; flags win over the config,
//!    the config over the graph, the graph over defaults. It returns the spec and a [`Row`] per
//!    field saying where the value came from. A value that none of them gives is an
//!    [`Error::Spec`] naming the field and the flag that sets it.
//!
//! From the graph alone: the image input (rank 4, 3 channels), the levels (outputs grouped by
//! feature-map size; strides from the input / feature-map ratio), the layout (`[1, K, H, W]` is
//! NCHW, `[H*W, K]` / `[1, H*W, K]` flat), which tensor holds the class scores, the box
//! regression and the centerness (channel counts: A*C, A*4 or 4*(reg_max+1), A), reg_max, and
//! whether the class scores are already activated ([`super::checks::score_activation`]).

use super::checks::{ScoreStats, score_activation};
use super::{
    ChannelOrder, CoderSpec, DetectorSpec, FORMAT_V1, HeadKind, HeadSpec, InputSpec, LevelSpec,
    PadSpec, PostprocessRule, PostprocessSpec, PriorSpec, ResizeBackend, ResizeRule,
    ScoreActivation, TensorInfo, TensorLayout,
};
use crate::runtime::{self, RuntimeOptions};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where a spec value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "from", content = "detail", rename_all = "snake_case")]
pub enum Origin {
    /// Read off the graph (shapes, names, the synthetic run); the detail says how.
    Graph(String),
    /// A config key (`data.val.keep_ratio`, ...).
    Config(String),
    /// A command-line flag (`--classes`, ...).
    Flag(String),
    /// A default; the detail names the convention it follows.
    Default(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Graph(d) => write!(f, "graph: {d}"),
            Origin::Config(k) => write!(f, "config: {k}"),
            Origin::Flag(k) => write!(f, "flag {k}"),
            Origin::Default(d) => write!(f, "default: {d}"),
        }
    }
}

/// One line of the source table: a spec field, its value (short text) and its origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub field: String,
    pub value: String,
    pub origin: Origin,
}

/// A config value with the key it was read from (e.g. `data.val.input_size`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sourced<T> {
    pub value: T,
    pub key: String,
}

impl<T> Sourced<T> {
    /// `value` read from `key`.
    pub fn new(value: T, key: impl Into<String>) -> Self {
        Sourced {
            value,
            key: key.into(),
        }
    }
}

/// Values a training config gives, each with its key. Every field is optional: what is absent
/// comes from the graph, a flag or a default. Plain data (JSON), so a config reader in another
/// language can produce it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigValues {
    /// What kind of config this was, e.g. `"NanoDet .yml"`.
    pub kind: String,
    pub classes: Option<Sourced<Vec<String>>>,
    pub num_classes: Option<Sourced<usize>>,
    pub channel_order: Option<Sourced<ChannelOrder>>,
    /// Per channel, in `channel_order`, pixel units.
    pub mean: Option<Sourced<[f32; 3]>>,
    pub std: Option<Sourced<[f32; 3]>>,
    pub resize: Option<Sourced<ResizeRule>>,
    pub pad: Option<Sourced<PadSpec>>,
    pub head_kind: Option<Sourced<HeadKind>>,
    pub strides: Option<Sourced<Vec<u32>>>,
    pub reg_max: Option<Sourced<u32>>,
    pub priors: Option<Sourced<PriorSpec>>,
    pub coder: Option<Sourced<CoderSpec>>,
    pub nms_pre: Option<Sourced<usize>>,
    pub score_thr: Option<Sourced<f32>>,
    pub iou_thr: Option<Sourced<f32>>,
    pub max_per_img: Option<Sourced<usize>>,
    pub rule: Option<Sourced<PostprocessRule>>,
    pub min_bbox_size: Option<Sourced<f32>>,
}

/// Resize rule chosen with `--resize` (its size comes from `--size`, the config or the graph).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum ResizeChoice {
    /// Stretch to the input size.
    Stretch,
    /// Keep ratio, centred inside the input size, pad value 0.
    Letterbox,
    /// mmdet `Resize(keep_ratio=True, scale=(long, short))` on a graph with dynamic H, W.
    #[cfg_attr(feature = "cli", value(name = "keep_ratio"))]
    KeepRatio,
}

/// Values given on the command line; each wins over the config and the graph.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InitFlags {
    /// `--classes FILE`: the file and its names (one per line).
    pub classes: Option<(PathBuf, Vec<String>)>,
    pub channel_order: Option<ChannelOrder>,
    pub mean: Option<[f32; 3]>,
    pub std: Option<[f32; 3]>,
    pub resize: Option<ResizeChoice>,
    /// `--size A,B`: width, height (stretch, letterbox) or the keep-ratio scale (long, short).
    pub size: Option<[u32; 2]>,
    pub head: Option<HeadKind>,
    pub name: Option<String>,
}

/// Reads a class-name file: one name per line, surrounding whitespace trimmed, empty lines
/// skipped. Errors: [`Error::Io`], or [`Error::Spec`] when it has no names.
pub fn read_classes(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let v: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if v.is_empty() {
        return Err(Error::Spec {
            path: path.to_path_buf(),
            msg: "the class-name file has no names (one per line)".into(),
        });
    }
    Ok(v)
}

/// One graph output after the synthetic run.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputProbe {
    pub name: String,
    /// Shape of the run's value (dynamic dims resolved).
    pub shape: Vec<i64>,
    /// Value statistics; `None` for a non-f32 output.
    pub stats: Option<ScoreStats>,
}

/// What [`probe`] learned about a graph.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphProbe {
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    /// Index in `inputs` of the image input.
    pub image_input: usize,
    /// `(height, width)` of the synthetic image the graph was run on.
    pub run_hw: (u32, u32),
    /// Whether the image input's H or W is dynamic.
    pub dynamic_hw: bool,
    /// Every graph output after the run, in graph order.
    pub run: Vec<OutputProbe>,
}

/// The image input among `inputs`: f32, rank 4, 3 (or dynamic) channels, H and W dynamic or at
/// least 16 (old exporters list weights such as `[24, 3, 3, 3]` as inputs). Errors:
/// [`Error::Spec`] naming `model` when there is none or more than one.
pub fn image_input(inputs: &[TensorInfo], model: &Path) -> Result<usize> {
    let ok = |t: &TensorInfo| {
        t.elem == "f32"
            && t.shape.len() == 4
            && (t.shape[1] == 3 || t.shape[1] < 0)
            && t.shape[2..].iter().all(|d| *d < 0 || *d >= 16)
    };
    let c: Vec<usize> = (0..inputs.len()).filter(|i| ok(&inputs[*i])).collect();
    match c.as_slice() {
        [i] => Ok(*i),
        _ => Err(Error::Spec {
            path: model.to_path_buf(),
            msg: format!(
                "input.name: {} graph inputs look like an image [N, 3, H, W] (f32, rank 4): {}",
                if c.is_empty() { "no" } else { "several" },
                inputs
                    .iter()
                    .map(|t| format!("{} {} {}", t.name, t.elem, t.shape_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// Opens `model` and runs it once on a synthetic image (a fixed diagonal pattern, values in
/// about [-2, 2] after normalization; no randomness) of the graph's fixed H x W, else of
/// `size_hint` `(height, width)` rounded up to a multiple of 128, else 640 x 640.
///
/// Errors: [`Error::Runtime`] from ONNX Runtime, [`Error::Spec`] when no input looks like an
/// image.
pub fn probe(
    model: &Path,
    rt: &RuntimeOptions,
    size_hint: Option<(u32, u32)>,
) -> Result<GraphProbe> {
    use ort::value::TensorRef;
    let (mut session, _) = runtime::session(model, rt)?;
    let (inputs, outputs) = runtime::io_infos(&session);
    let ii = image_input(&inputs, model)?;
    let s = &inputs[ii].shape;
    let dynamic_hw = s[2] < 0 || s[3] < 0;
    let run_hw = if !dynamic_hw {
        (s[2] as u32, s[3] as u32)
    } else {
        let (h, w) = size_hint.unwrap_or((640, 640));
        (h.div_ceil(128) * 128, w.div_ceil(128) * 128)
    };
    let (h, w) = (run_hw.0 as usize, run_hw.1 as usize);
    let mut data = vec![0f32; 3 * h * w];
    for (i, v) in data.iter_mut().enumerate() {
        let (c, y, x) = (i / (h * w), (i / w) % h, i % w);
        *v = (((x + 2 * y + 37 * c) % 64) as f32 - 32.0) / 16.0;
    }
    let shape = [1usize, 3, h, w];
    let input = TensorRef::from_array_view((shape, &data[..]))
        .map_err(|e| Error::Runtime(format!("input tensor {shape:?}: {e}")))?;
    let name = inputs[ii].name.clone();
    let out = session
        .run(ort::inputs![name.as_str() => input])
        .map_err(|e| {
            Error::Runtime(format!(
                "{}: inference on a synthetic {h}x{w} image failed: {e}",
                model.display()
            ))
        })?;
    let mut run = vec![];
    for o in &outputs {
        let Some(v) = out.get(&o.name) else { continue };
        let (shape, stats) = match v.try_extract_tensor::<f32>() {
            Ok((sh, d)) => (sh.to_vec(), Some(ScoreStats::of([d]))),
            Err(_) => (o.shape.clone(), None),
        };
        run.push(OutputProbe {
            name: o.name.clone(),
            shape,
            stats,
        });
    }
    Ok(GraphProbe {
        inputs,
        outputs,
        image_input: ii,
        run_hw,
        dynamic_hw,
        run,
    })
}

/// One output of a level, as the graph shows it.
#[derive(Debug, Clone)]
struct Part {
    name: String,
    /// Values per location (channels).
    k: i64,
    stats: Option<ScoreStats>,
}

/// Outputs of one feature-map size.
#[derive(Debug, Clone)]
struct Group {
    stride: u32,
    /// `H x W` (NCHW) or rows (flat), for messages.
    size: String,
    parts: Vec<Part>,
}

struct Ctx<'a> {
    model: &'a Path,
    rows: Vec<Row>,
}

impl Ctx<'_> {
    fn err<T>(&self, msg: String) -> Result<T> {
        Err(Error::Spec {
            path: self.model.to_path_buf(),
            msg,
        })
    }
    fn row(&mut self, field: &str, value: impl Into<String>, origin: Origin) {
        self.rows.push(Row {
            field: field.into(),
            value: value.into(),
            origin,
        });
    }
}

fn j<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Derives a spec from the probe, the config and the flags (see the module docs for the order
/// of precedence), validates it ([`DetectorSpec::check`], [`DetectorSpec::validate_io`]) and
/// returns it with the source table.
///
/// Errors: [`Error::Spec`] naming `model` and the field that cannot be determined (with the
/// flag that sets it), a config value that contradicts the graph, or a spec that fails
/// validation.
pub fn build(
    probe: &GraphProbe,
    model: &Path,
    cfg: Option<&ConfigValues>,
    flags: &InitFlags,
) -> Result<(DetectorSpec, Vec<Row>)> {
    let mut cx = Ctx {
        model,
        rows: vec![],
    };
    let empty = ConfigValues::default();
    let cfg = cfg.unwrap_or(&empty);
    let (ph, pw) = probe.run_hw;
    let inp = &probe.inputs[probe.image_input];

    // ---- levels: group the outputs by feature-map size --------------------------------------
    let mut layout: Option<TensorLayout> = None;
    let mut groups: Vec<(i64, i64, Vec<Part>)> = vec![]; // (h or rows, w or -1, parts)
    for o in &probe.run {
        let Some(stats) = o.stats else { continue };
        let s = &o.shape;
        let (l, key, k) = match s.len() {
            4 if s[0] == 1 => (TensorLayout::Nchw, (s[2], s[3]), s[1]),
            3 if s[0] == 1 => (TensorLayout::Flat, (s[1], -1), s[2]),
            2 => (TensorLayout::Flat, (s[0], -1), s[1]),
            _ => {
                return cx.err(format!(
                    "head.layout: output {:?} has shape {:?}, neither NCHW [1, K, H, W] nor flat \
                     [H*W, K] / [1, H*W, K]",
                    o.name, s
                ));
            }
        };
        if layout.is_some_and(|x| x != l) {
            return cx.err(format!(
                "head.layout: the outputs mix NCHW and flat tensors (output {:?} {:?})",
                o.name, s
            ));
        }
        layout = Some(l);
        let part = Part {
            name: o.name.clone(),
            k,
            stats: Some(stats),
        };
        match groups.iter_mut().find(|g| (g.0, g.1) == key) {
            Some(g) => g.2.push(part),
            None => groups.push((key.0, key.1, vec![part])),
        }
    }
    let Some(layout) = layout else {
        return cx.err("head.levels: the graph has no f32 outputs".into());
    };
    if groups.len() == 1 && groups[0].2.len() == 1 {
        let p = &groups[0].2[0];
        return cx.err(format!(
            "head.levels: the graph has a single output {:?} (shape {:?}): class scores and box \
             regression of every level in one tensor (as NanoDet-Plus / NanoDet >= 1.0 export). \
             anchorkit.detector/1 needs one tensor per level and role: export the head's \
             per-level outputs",
            p.name,
            probe
                .run
                .iter()
                .find(|o| o.name == p.name)
                .map(|o| &o.shape)
        ));
    }
    let mut levels: Vec<Group> = vec![];
    for (a, b, parts) in groups {
        let stride = match layout {
            TensorLayout::Nchw => (1..=9)
                .map(|k| 1u32 << k)
                .find(|s| ph.div_ceil(*s) as i64 == a && pw.div_ceil(*s) as i64 == b),
            TensorLayout::Flat => (1..=9)
                .map(|k| 1u32 << k)
                .find(|s| (ph.div_ceil(*s) * pw.div_ceil(*s)) as i64 == a),
        };
        let size = match layout {
            TensorLayout::Nchw => format!("{a}x{b}"),
            TensorLayout::Flat => format!("{a} rows"),
        };
        let Some(stride) = stride else {
            return cx.err(format!(
                "head.levels: outputs {} ({size}) match no stride 2..512 for the {ph}x{pw} input",
                parts
                    .iter()
                    .map(|p| format!("{:?}", p.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        levels.push(Group {
            stride,
            size,
            parts,
        });
    }
    levels.sort_by_key(|g| g.stride);
    if let Some(w) = levels.windows(2).find(|w| w[0].stride == w[1].stride) {
        return cx.err(format!(
            "head.levels: two output groups ({} and {}) map to stride {}",
            w[0].size, w[1].size, w[0].stride
        ));
    }
    let strides: Vec<u32> = levels.iter().map(|g| g.stride).collect();
    if let Some(cs) = &cfg.strides
        && cs.value != strides
    {
        return cx.err(format!(
            "head.levels: {} = {:?} but the graph's feature maps give strides {strides:?} for a \
             {ph}x{pw} input",
            cs.key, cs.value
        ));
    }

    // ---- roles: class scores, regression, centerness -----------------------------------------
    let (c_known, c_origin): (Option<usize>, String) = if let Some((p, v)) = &flags.classes {
        (Some(v.len()), format!("--classes {}", p.display()))
    } else if let Some(c) = &cfg.classes {
        (Some(c.value.len()), c.key.clone())
    } else if let Some(c) = &cfg.num_classes {
        (Some(c.value), c.key.clone())
    } else {
        (None, String::new())
    };
    let mut roles: Vec<(usize, usize, Option<usize>)> = vec![]; // indices into parts
    let mut role_why = String::new();
    for g in &levels {
        let n = g.parts.len();
        let ctr = if n == 3 {
            let ones: Vec<usize> = (0..3).filter(|i| g.parts[*i].k == 1).collect();
            if ones.len() != 1 {
                return cx.err(format!(
                    "head.levels: stride {} has 3 outputs ({}) but not exactly one with 1 channel \
                     (centerness)",
                    g.stride,
                    names(&g.parts)
                ));
            }
            Some(ones[0])
        } else if n == 2 {
            None
        } else {
            return cx.err(format!(
                "head.levels: stride {} has {n} outputs ({}); expected class scores, box \
                 regression and optionally centerness",
                g.stride,
                names(&g.parts)
            ));
        };
        let rest: Vec<usize> = (0..n).filter(|i| Some(*i) != ctr).collect();
        let (x, y) = (&g.parts[rest[0]], &g.parts[rest[1]]);
        let unit = |p: &Part| p.stats.is_some_and(|s| s.all_in_unit_interval());
        // (cls, reg) fits C: A = cls / C priors per location and 4*A (anchors) or
        // 4*(reg_max+1) (A = 1) regression channels.
        let fits = |cls: &Part, reg: &Part, c: usize| {
            let c = c as i64;
            cls.k % c == 0 && (reg.k == 4 * (cls.k / c) || (cls.k == c && reg.k % 4 == 0))
        };
        let by_c = c_known.map(|c| (fits(x, y, c), fits(y, x, c)));
        let cls_first = if let Some((true, false)) = by_c {
            role_why = format!("channels fit C = {} classes ({c_origin})", c_known.unwrap());
            true
        } else if let Some((false, true)) = by_c {
            role_why = format!("channels fit C = {} classes ({c_origin})", c_known.unwrap());
            false
        } else if unit(x) != unit(y) {
            role_why = "class scores are the outputs with values in [0, 1]".into();
            unit(x)
        } else if x.k % 4 != 0 && y.k % 4 == 0 {
            role_why = "box regression has a multiple of 4 channels".into();
            true
        } else if y.k % 4 != 0 && x.k % 4 == 0 {
            role_why = "box regression has a multiple of 4 channels".into();
            false
        } else {
            return cx.err(format!(
                "head.levels: cannot tell the class scores from the box regression at stride {} \
                 ({:?} with {} channels, {:?} with {}); pass --classes FILE (C names)",
                g.stride, x.name, x.k, y.name, y.k
            ));
        };
        let (ci, ri) = if cls_first {
            (rest[0], rest[1])
        } else {
            (rest[1], rest[0])
        };
        roles.push((ci, ri, ctr));
    }
    let first = &levels[0];
    let (cls_k, reg_k) = (first.parts[roles[0].0].k, first.parts[roles[0].1].k);
    let has_ctr = roles[0].2.is_some();
    for (g, r) in levels.iter().zip(&roles) {
        if g.parts[r.0].k != cls_k || g.parts[r.1].k != reg_k || r.2.is_some() != has_ctr {
            return cx.err(format!(
                "head.levels: stride {} has outputs {} but stride {} has {}",
                g.stride,
                names(&g.parts),
                first.stride,
                names(&first.parts)
            ));
        }
    }

    // ---- head kind, A, C --------------------------------------------------------------------
    let kind_of = |a: i64| -> Option<HeadKind> {
        match (has_ctr, a, reg_k) {
            (false, 1, r) if r > 4 && r % 4 == 0 => Some(HeadKind::Gfl),
            (false, a, r) if a > 1 && r == 4 * a => Some(HeadKind::Retina),
            _ => None,
        }
    };
    if let Some(ck) = c_known
        && cls_k % ck as i64 != 0
    {
        return cx.err(format!(
            "classes: {c_origin} gives {ck} classes but the graph's class-score outputs have \
             {cls_k} channels, not a multiple of {ck}"
        ));
    }
    let a_from_c = c_known.map(|c| cls_k / c as i64);
    let (kind, kind_origin) =
        if let Some(k) = flags.head {
            (k, Origin::Flag("--head".into()))
        } else if let Some(k) = &cfg.head_kind {
            (k.value, Origin::Config(k.key.clone()))
        } else {
            let a = match (a_from_c, layout) {
                (Some(a), _) => Some(a),
                (None, TensorLayout::Flat) => Some(1),
                (None, TensorLayout::Nchw) if reg_k > 4 && cls_k % (reg_k / 4) != 0 => Some(1),
                _ => None,
            };
            match a.and_then(kind_of) {
                Some(k) => (
                    k,
                    Origin::Graph(format!(
                        "{cls_k} class and {reg_k} regression channels{}",
                        if has_ctr { " and centerness" } else { "" }
                    )),
                ),
                None => {
                    return cx.err(format!(
                    "head.kind: the graph's levels ({cls_k} class, {reg_k} regression channels{}) \
                     fit several head kinds{}; pass --head retina|atss|gfl|fcos{}",
                    if has_ctr { ", centerness" } else { ", no centerness" },
                    if has_ctr {
                        " (ATSS and FCOS export the same tensors)"
                    } else {
                        ""
                    },
                    if c_known.is_none() {
                        " and --classes FILE"
                    } else {
                        ""
                    }
                ));
                }
            }
        };
    let a: i64 = match kind {
        HeadKind::Gfl | HeadKind::Fcos => 1,
        HeadKind::Atss => 1,
        HeadKind::Retina => reg_k / 4,
    };
    if kind == HeadKind::Retina && (reg_k % 4 != 0 || cls_k % a != 0) {
        return cx.err(format!(
            "head.kind retina: {reg_k} regression channels are not A*4 with {cls_k} = A*C class \
             channels"
        ));
    }
    let c = (cls_k / a) as usize;
    if let Some(ck) = c_known
        && ck != c
    {
        return cx.err(format!(
            "classes: {c_origin} gives {ck} classes but the graph's class-score outputs have \
             {cls_k} channels = A*C with A = {a} ({kind:?} head), i.e. C = {c}"
        ));
    }
    if matches!(kind, HeadKind::Atss | HeadKind::Fcos) && reg_k != 4 {
        return cx.err(format!(
            "head.kind {kind:?}: expected 4 regression channels, the graph has {reg_k}"
        ));
    }
    if kind == HeadKind::Atss && !has_ctr {
        return cx.err("head.kind atss: the graph has no centerness outputs".into());
    }
    if kind == HeadKind::Gfl && (reg_k <= 4 || reg_k % 4 != 0) {
        return cx.err(format!(
            "head.kind gfl: {reg_k} regression channels are not 4*(reg_max+1)"
        ));
    }
    cx.row("head.kind", j(&kind), kind_origin);
    cx.row(
        "head.layout",
        j(&layout),
        Origin::Graph(match layout {
            TensorLayout::Nchw => "outputs are [1, K, H, W]".into(),
            TensorLayout::Flat => "outputs are [H*W, K] / [1, H*W, K]".into(),
        }),
    );
    let mut level_specs = vec![];
    for (i, (g, r)) in levels.iter().zip(&roles).enumerate() {
        let l = LevelSpec {
            stride: g.stride,
            cls: g.parts[r.0].name.clone(),
            reg: g.parts[r.1].name.clone(),
            centerness: r.2.map(|k| g.parts[k].name.clone()),
        };
        cx.row(
            &format!("head.levels[{i}]"),
            format!(
                "stride {}: cls {:?}, reg {:?}{}",
                l.stride,
                l.cls,
                l.reg,
                l.centerness
                    .as_ref()
                    .map_or(String::new(), |c| format!(", centerness {c:?}"))
            ),
            Origin::Graph(format!("{} for a {ph}x{pw} input; {role_why}", g.size)),
        );
        level_specs.push(l);
    }

    // ---- priors and coder --------------------------------------------------------------------
    let priors = if let Some(p) = &cfg.priors {
        cx.row("head.priors", j(&p.value), Origin::Config(p.key.clone()));
        p.value.clone()
    } else {
        let (p, why) = match (kind, layout) {
            (HeadKind::Gfl, TensorLayout::Flat) => (
                PriorSpec::Points { offset: 0.5 },
                "NanoDet <= 1.0 flat export, points at (x + 0.5) * stride \
                 (nanodet/model/head/gfl_head.py get_single_level_center_point)",
            ),
            (HeadKind::Gfl, TensorLayout::Nchw) => (
                PriorSpec::Points { offset: 0.0 },
                "mmdet GFLHead decodes from anchor centres (AnchorGenerator center_offset 0)",
            ),
            (HeadKind::Fcos, _) => (
                PriorSpec::Points { offset: 0.5 },
                "mmdet MlvlPointGenerator offset 0.5 (FCOSHead)",
            ),
            (HeadKind::Atss, _) => (
                PriorSpec::Anchors {
                    octave_base_scale: 8.0,
                    scales_per_octave: 1,
                    ratios: vec![1.0],
                    center_offset: 0.0,
                },
                "mmdet atss_r50_fpn_1x_coco anchor_generator",
            ),
            (HeadKind::Retina, _) if a == 9 => (
                PriorSpec::Anchors {
                    octave_base_scale: 4.0,
                    scales_per_octave: 3,
                    ratios: vec![0.5, 1.0, 2.0],
                    center_offset: 0.0,
                },
                "mmdet retinanet_r50_fpn anchor_generator (A = 9)",
            ),
            (HeadKind::Retina, _) => {
                return cx.err(format!(
                    "head.priors: the graph has A = {a} anchors per location; their shapes \
                     (octave_base_scale, scales_per_octave, ratios) are not in the graph: pass \
                     --from CONFIG or write head.priors by hand"
                ));
            }
        };
        cx.row("head.priors", j(&p), Origin::Default(why.into()));
        p
    };
    let coder = if let Some(cd) = &cfg.coder {
        cx.row("head.coder", j(&cd.value), Origin::Config(cd.key.clone()));
        cd.value.clone()
    } else {
        let (cd, origin) = match kind {
            HeadKind::Gfl => {
                let reg_max = (reg_k / 4 - 1) as u32;
                (
                    CoderSpec::Distribution {
                        reg_max,
                        scale_by_stride: true,
                        clip_border: true,
                    },
                    Origin::Graph(format!("reg_max = {reg_k} / 4 - 1 regression channels")),
                )
            }
            HeadKind::Fcos => (
                CoderSpec::Distance {
                    scale_by_stride: false,
                    clip_border: true,
                },
                Origin::Default(
                    "mmdet FCOSHead in test mode multiplies the distances by the stride inside \
                     the head"
                        .into(),
                ),
            ),
            HeadKind::Atss | HeadKind::Retina => {
                let stds = if kind == HeadKind::Atss {
                    [0.1, 0.1, 0.2, 0.2]
                } else {
                    [1.0; 4]
                };
                (
                    CoderSpec::DeltaXywh {
                        means: [0.0; 4],
                        stds,
                        wh_ratio_clip: 16.0 / 1000.0,
                        clip_border: true,
                    },
                    Origin::Default(format!(
                        "mmdet {} bbox_coder",
                        if kind == HeadKind::Atss {
                            "atss_r50_fpn_1x_coco"
                        } else {
                            "retinanet_r50_fpn"
                        }
                    )),
                )
            }
        };
        cx.row("head.coder", j(&cd), origin);
        cd
    };
    if let (Some(rm), CoderSpec::Distribution { reg_max, .. }) = (&cfg.reg_max, &coder)
        && rm.value != *reg_max
    {
        return cx.err(format!(
            "head.coder.reg_max: {} = {} but the graph's {reg_k} regression channels give {}",
            rm.key, rm.value, reg_max
        ));
    }
    if let (Some(rm), CoderSpec::Distribution { reg_max, .. }) = (&cfg.reg_max, &coder)
        && rm.value == *reg_max
    {
        cx.rows
            .last_mut()
            .expect("coder row")
            .origin
            .clone_from(&Origin::Graph(format!(
                "reg_max = {reg_k} / 4 - 1 regression channels, as {} says",
                rm.key
            )));
    }

    // ---- score activation -------------------------------------------------------------------
    let stats = levels
        .iter()
        .zip(&roles)
        .filter_map(|(g, r)| g.parts[r.0].stats)
        .fold(ScoreStats::of([]), ScoreStats::merge);
    let score = match score_activation(&stats) {
        Some(s) => s,
        None => {
            return cx.err(
                "head.score: the class-score outputs of the synthetic run have no finite value"
                    .into(),
            );
        }
    };
    cx.row(
        "head.score",
        j(&score),
        Origin::Graph(format!(
            "class-score values of a synthetic {ph}x{pw} run lie in [{:.4}, {:.4}]{}",
            stats.min,
            stats.max,
            if score == ScoreActivation::Activated {
                ": already probabilities"
            } else {
                ": logits"
            }
        )),
    );
    cx.row(
        "head.centerness",
        has_ctr.to_string(),
        Origin::Graph(if has_ctr {
            "each level has a 1-channel output".into()
        } else {
            "no 1-channel outputs".into()
        }),
    );

    // ---- classes ------------------------------------------------------------------------------
    let classes = if let Some((p, v)) = &flags.classes {
        cx.row(
            "classes",
            format!("{} names", v.len()),
            Origin::Flag(format!("--classes {}", p.display())),
        );
        v.clone()
    } else if let Some(cl) = &cfg.classes {
        cx.row(
            "classes",
            format!("{} names", cl.value.len()),
            Origin::Config(cl.key.clone()),
        );
        cl.value.clone()
    } else {
        return cx.err(format!(
            "classes: the graph has C = {c} classes but no names; pass --classes FILE (one name \
             per line, in output-channel order) or --from CONFIG"
        ));
    };

    // ---- input ----------------------------------------------------------------------------------
    cx.row(
        "input.name",
        inp.name.clone(),
        Origin::Graph(format!("the image input {}", inp.shape_str())),
    );
    let channel_order = if let Some(o) = flags.channel_order {
        cx.row(
            "input.channel_order",
            j(&o),
            Origin::Flag("--channel-order".into()),
        );
        o
    } else if let Some(o) = &cfg.channel_order {
        cx.row(
            "input.channel_order",
            j(&o.value),
            Origin::Config(o.key.clone()),
        );
        o.value
    } else {
        return cx.err(
            "input.channel_order: not in the graph; pass --channel-order rgb|bgr or --from CONFIG"
                .into(),
        );
    };
    let mut norm = |field: &str, flag: Option<[f32; 3]>, c: &Option<Sourced<[f32; 3]>>| {
        if let Some(v) = flag {
            cx.row(field, j(&v), Origin::Flag(format!("--{}", &field[6..])));
            Ok(v)
        } else if let Some(v) = c {
            cx.row(field, j(&v.value), Origin::Config(v.key.clone()));
            Ok(v.value)
        } else {
            cx.err(format!(
                "{field}: not in the graph; pass --{} A,B,C (pixel units, in channel order) or \
                 --from CONFIG",
                &field[6..]
            ))
        }
    };
    let mean = norm("input.mean", flags.mean, &cfg.mean)?;
    let std = norm("input.std", flags.std, &cfg.std)?;
    let graph_hw = (!probe.dynamic_hw).then_some((inp.shape[3] as u32, inp.shape[2] as u32));
    let resize = if let Some(r) = flags.resize {
        let size = if let Some(s) = flags.size {
            Some((s, "--size".to_string()))
        } else if let Some(cr) = &cfg.resize {
            Some((
                match cr.value {
                    ResizeRule::KeepRatio { scale } => scale,
                    ResizeRule::Stretch { width, height }
                    | ResizeRule::Letterbox { width, height, .. } => [width, height],
                },
                cr.key.clone(),
            ))
        } else {
            graph_hw.map(|(w, h)| ([w, h], "graph input size".to_string()))
        };
        let Some((s, from)) = size else {
            return cx.err(
                "input.resize: --resize needs a size: pass --size A,B or --from CONFIG".into(),
            );
        };
        let rule = match r {
            ResizeChoice::Stretch => ResizeRule::Stretch {
                width: s[0],
                height: s[1],
            },
            ResizeChoice::Letterbox => ResizeRule::Letterbox {
                width: s[0],
                height: s[1],
                pad_value: 0.0,
            },
            ResizeChoice::KeepRatio => ResizeRule::KeepRatio { scale: s },
        };
        cx.row(
            "input.resize",
            j(&rule),
            Origin::Flag(format!("--resize (size from {from})")),
        );
        rule
    } else if let Some(cr) = &cfg.resize {
        cx.row("input.resize", j(&cr.value), Origin::Config(cr.key.clone()));
        cr.value.clone()
    } else {
        return cx.err(format!(
            "input.resize: not in the graph{}; pass --resize stretch|letterbox|keep_ratio (with \
             --size A,B) or --from CONFIG",
            graph_hw.map_or(String::new(), |(w, h)| format!(
                " (its input is a fixed {w}x{h}: stretch or letterbox)"
            ))
        ));
    };
    let pad = if let Some(p) = &cfg.pad {
        cx.row("input.pad", j(&p.value), Origin::Config(p.key.clone()));
        p.value.clone()
    } else if matches!(resize, ResizeRule::KeepRatio { .. }) {
        let p = PadSpec {
            size_divisor: 32,
            value: 0.0,
        };
        cx.row(
            "input.pad",
            j(&p),
            Origin::Default("mmdet Pad(size_divisor=32) after a keep-ratio resize".into()),
        );
        p
    } else {
        let p = PadSpec::default();
        cx.row("input.pad", j(&p), Origin::Default("no padding".into()));
        p
    };
    cx.row(
        "input.dynamic_hw",
        probe.dynamic_hw.to_string(),
        Origin::Graph(format!("input {}", inp.shape_str())),
    );

    // ---- postprocess ---------------------------------------------------------------------------
    macro_rules! pp {
        ($field:literal, $c:expr, $def:expr, $why:expr) => {
            if let Some(v) = &$c {
                cx.row($field, j(&v.value), Origin::Config(v.key.clone()));
                v.value.clone()
            } else {
                cx.row($field, j(&$def), Origin::Default($why.into()));
                $def
            }
        };
    }
    let mm = "mmdet test_cfg of RetinaNet / ATSS / FCOS / GFL";
    // nms.iou_threshold differs by head: 0.5 in mmdet's retinanet_r50_fpn and
    // fcos_r50-caffe_fpn_gn-head configs, 0.6 in atss_r50_fpn and gfl_r50_fpn.
    let (iou_def, iou_why) = match kind {
        HeadKind::Retina => (0.5f32, "mmdet retinanet_r50_fpn test_cfg nms.iou_threshold"),
        HeadKind::Fcos => (
            0.5,
            "mmdet fcos_r50-caffe_fpn_gn-head test_cfg nms.iou_threshold",
        ),
        HeadKind::Atss => (0.6, "mmdet atss_r50_fpn_1x_coco test_cfg nms.iou_threshold"),
        HeadKind::Gfl => (0.6, "mmdet gfl_r50_fpn_1x_coco test_cfg nms.iou_threshold"),
    };
    let post = PostprocessSpec {
        nms_pre: pp!("postprocess.nms_pre", cfg.nms_pre, 1000usize, mm),
        score_thr: pp!("postprocess.score_thr", cfg.score_thr, 0.05f32, mm),
        iou_thr: pp!("postprocess.iou_thr", cfg.iou_thr, iou_def, iou_why),
        max_per_img: pp!("postprocess.max_per_img", cfg.max_per_img, 100usize, mm),
        class_agnostic: false,
        rule: pp!(
            "postprocess.rule",
            cfg.rule,
            PostprocessRule::Mmdet,
            "mmdet >= 2.18 / 3.x"
        ),
        min_bbox_size: cfg.min_bbox_size.as_ref().map(|v| {
            cx.row(
                "postprocess.min_bbox_size",
                j(&v.value),
                Origin::Config(v.key.clone()),
            );
            v.value
        }),
    };

    let name = flags.name.clone().unwrap_or_else(|| {
        model
            .file_stem()
            .map_or("model".into(), |s| s.to_string_lossy().into_owned())
    });
    let spec = DetectorSpec {
        format: FORMAT_V1.into(),
        name,
        classes,
        input: InputSpec {
            name: inp.name.clone(),
            channel_order,
            mean,
            std,
            resize,
            pad,
            dynamic_hw: probe.dynamic_hw,
            exif_orientation: true,
            resize_backend: ResizeBackend::Cv2,
            shape_buckets: None,
        },
        head: HeadSpec {
            kind,
            layout,
            levels: level_specs,
            priors,
            coder,
            score,
            centerness: has_ctr,
        },
        postprocess: post,
        provenance: Some(serde_json::json!({
            "spec_init": {
                "model": model.file_name().map(|n| n.to_string_lossy().into_owned()),
                "config": if cfg.kind.is_empty() { None } else { Some(cfg.kind.clone()) },
            }
        })),
    };
    spec.check(model)?;
    spec.validate_io(&probe.inputs, &probe.outputs, model)?;
    Ok((spec, cx.rows))
}

fn names(parts: &[Part]) -> String {
    parts
        .iter()
        .map(|p| format!("{:?} ({} channels)", p.name, p.k))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes `spec` as pretty JSON to `dest` atomically (a temp file in the same directory,
/// renamed into place). An existing `dest` is an error unless `force`; without `force` the
/// rename itself refuses to replace a file created meanwhile.
///
/// Errors: [`Error::Io`] naming `dest`.
pub fn write_spec(spec: &DetectorSpec, dest: &Path, force: bool) -> Result<()> {
    use std::io::Write;
    if !force && dest.exists() {
        return Err(Error::io(
            dest,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists; pass --force to replace it",
            ),
        ));
    }
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".spec-init.")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dest, e))?;
    let mut text = serde_json::to_string_pretty(spec)
        .map_err(|e| Error::io(dest, std::io::Error::other(e)))?;
    text.push('\n');
    tmp.write_all(text.as_bytes())
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| Error::io(dest, e))?;
    if force {
        tmp.persist(dest).map_err(|e| Error::io(dest, e.error))?;
    } else {
        tmp.persist_noclobber(dest)
            .map_err(|e| Error::io(dest, e.error))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ti(name: &str, shape: &[i64]) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            elem: "f32".into(),
            shape: shape.to_vec(),
        }
    }

    fn stats(min: f32, max: f32) -> Option<ScoreStats> {
        Some(ScoreStats::of([&[min, max][..]]))
    }

    /// A probe of a 320x320 graph with the given outputs `(name, shape, min, max)`.
    fn probe(outs: &[(&str, Vec<i64>, f32, f32)]) -> GraphProbe {
        GraphProbe {
            inputs: vec![ti("w", &[24, 3, 3, 3]), ti("image", &[1, 3, 320, 320])],
            outputs: outs.iter().map(|(n, s, ..)| ti(n, s)).collect(),
            image_input: 1,
            run_hw: (320, 320),
            dynamic_hw: false,
            run: outs
                .iter()
                .map(|(n, s, lo, hi)| OutputProbe {
                    name: n.to_string(),
                    shape: s.clone(),
                    stats: stats(*lo, *hi),
                })
                .collect(),
        }
    }

    fn flags(c: usize) -> InitFlags {
        InitFlags {
            classes: Some((
                PathBuf::from("names.txt"),
                (0..c).map(|i| format!("c{i}")).collect(),
            )),
            channel_order: Some(ChannelOrder::Rgb),
            mean: Some([123.675, 116.28, 103.53]),
            std: Some([58.395, 57.12, 57.375]),
            resize: Some(ResizeChoice::Stretch),
            ..InitFlags::default()
        }
    }

    fn err(r: Result<(DetectorSpec, Vec<Row>)>) -> String {
        r.unwrap_err().to_string()
    }

    /// RetinaNet-like NCHW head, A = `a`, C = 3, strides 8..32, logits.
    fn retina(a: i64) -> GraphProbe {
        let mut o = vec![];
        for (i, n) in [40i64, 20, 10].iter().enumerate() {
            o.push((["c0", "c1", "c2"][i], vec![1, 3 * a, *n, *n], -9.0, -1.0));
            o.push((["r0", "r1", "r2"][i], vec![1, 4 * a, *n, *n], -2.0, 2.0));
        }
        probe(&o)
    }

    #[test]
    fn retina_levels_priors_and_score_from_shapes() {
        let m = Path::new("m.onnx");
        let (s, rows) = build(&retina(9), m, None, &flags(3)).unwrap();
        assert_eq!(s.head.kind, HeadKind::Retina);
        assert_eq!(s.num_priors(), 9);
        assert_eq!(s.head.score, ScoreActivation::Sigmoid);
        assert_eq!(s.postprocess.iou_thr, 0.5, "RetinaNet's NMS threshold");
        assert_eq!(
            s.head.levels.iter().map(|l| l.stride).collect::<Vec<_>>(),
            [8, 16, 32]
        );
        assert_eq!(s.head.levels[1].cls, "c1");
        assert_eq!(s.input.name, "image");
        assert!(
            rows.iter()
                .any(|r| r.field == "head.priors" && matches!(r.origin, Origin::Default(_)))
        );
        // A = 3 anchors: their shapes are not in the graph.
        let e = err(build(&retina(3), m, None, &flags(3)));
        assert!(e.contains("head.priors") && e.contains("A = 3"), "{e}");
        // Wrong class count.
        let e = err(build(&retina(9), m, None, &flags(4)));
        assert!(e.contains("classes") && e.contains("27 channels"), "{e}");
    }

    #[test]
    fn config_values_that_contradict_the_graph_are_errors() {
        let p = probe(&[
            ("a", vec![1600, 80], 0.0, 0.4),
            ("b", vec![1600, 32], -3.0, 5.0),
            ("c", vec![400, 80], 0.0, 0.4),
            ("d", vec![400, 32], -3.0, 5.0),
            ("e", vec![100, 80], 0.0, 0.4),
            ("f", vec![100, 32], -3.0, 5.0),
        ]);
        let m = Path::new("m.onnx");
        let (s, _) = build(&p, m, None, &flags(80)).unwrap();
        assert_eq!(
            (s.head.kind, s.head.layout, s.head.score),
            (
                HeadKind::Gfl,
                TensorLayout::Flat,
                ScoreActivation::Activated
            )
        );
        assert_eq!(s.reg_channels(), 32);
        assert_eq!(s.head.priors, PriorSpec::Points { offset: 0.5 });
        let cfg = ConfigValues {
            strides: Some(Sourced::new(vec![8, 16, 32, 64], "model.arch.head.strides")),
            ..ConfigValues::default()
        };
        let e = err(build(&p, m, Some(&cfg), &flags(80)));
        assert!(
            e.contains("model.arch.head.strides") && e.contains("[8, 16, 32]"),
            "{e}"
        );
        let cfg = ConfigValues {
            reg_max: Some(Sourced::new(16, "model.arch.head.reg_max")),
            ..ConfigValues::default()
        };
        let e = err(build(&p, m, Some(&cfg), &flags(80)));
        assert!(e.contains("model.arch.head.reg_max = 16"), "{e}");
        // Without class names: the roles still come from the values, then classes is missing.
        let mut f = flags(80);
        f.classes = None;
        let e = err(build(&p, m, None, &f));
        assert!(e.contains("C = 80") && e.contains("--classes FILE"), "{e}");
    }

    #[test]
    fn one_concatenated_output_is_explained() {
        let p = probe(&[("output", vec![1, 2100, 112], -3.0, 5.0)]);
        let e = err(build(&p, Path::new("m.onnx"), None, &flags(80)));
        assert!(
            e.contains("single output") && e.contains("NanoDet-Plus"),
            "{e}"
        );
    }

    #[test]
    fn image_input_skips_weights_listed_as_inputs() {
        let v = vec![ti("w", &[24, 3, 3, 3]), ti("input.1", &[1, 3, 416, 416])];
        assert_eq!(image_input(&v, Path::new("m")).unwrap(), 1);
        let v = vec![ti("a", &[1, 3, -1, -1]), ti("b", &[1, 3, 416, 416])];
        let e = image_input(&v, Path::new("m")).unwrap_err().to_string();
        assert!(
            e.contains("several") && e.contains("a f32 [1, 3, ?, ?]"),
            "{e}"
        );
    }

    #[test]
    fn write_spec_never_replaces_without_force() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = build(&retina(9), Path::new("m.onnx"), None, &flags(3)).unwrap();
        let out = d.path().join("s.json");
        std::fs::write(&out, "keep").unwrap();
        let e = write_spec(&s, &out, false).unwrap_err().to_string();
        assert!(e.contains("--force"), "{e}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "keep");
        write_spec(&s, &out, true).unwrap();
        let back = DetectorSpec::from_json(&std::fs::read_to_string(&out).unwrap(), &out).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
