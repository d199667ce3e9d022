//! Input shape policy for GPU execution providers.
//!
//! mmdet's keep-ratio resize (`Resize(keep_ratio=True)` + `Pad(size_divisor=32)`) gives a
//! different padded tensor shape for nearly every image. The CPU provider does not care, but
//! cuDNN searches convolution algorithms again whenever a session's input shape differs from
//! its previous run (ONNX Runtime's CUDA EP, `cudnn_conv_algo_search`), which makes a
//! keep-ratio model many times slower than its bare inference at one shape.
//!
//! Shape buckets fix the shapes: every input is padded further, bottom/right with the spec's
//! pad value exactly as mmdet's `Pad` pads (so box coordinates are unchanged), up to the first
//! of a few canonical shapes that holds it, and each bucket runs in its own session (see
//! [`crate::detector::Detector`]). The default buckets are the padded maxima in landscape and
//! portrait ([`crate::preprocess::shape_range`]), e.g. 1344x800 and 800x1344 for (1333, 800)
//! with divisor 32.
//!
//! Extra padding is not free of numerical effects: convolutions near the bottom/right edge see
//! padded values instead of conv zero padding in deeper layers, and a head with GroupNorm
//! normalizes over the padded area too; `docs/gpu.md` gives the measured effect.

use crate::error::{Error, Result};
use crate::preprocess::shape_range;
use crate::runtime::Ep;
use crate::spec::{InputSpec, ResizeRule};

/// Whether and how to pad inputs to canonical shapes (`--shape-buckets`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ShapePolicy {
    /// On for CUDA / TensorRT, off for the CPU provider.
    #[default]
    Default,
    /// Off: every input keeps its own padded shape.
    Off,
    /// On with the spec's `input.shape_buckets`, else the padded landscape / portrait maxima.
    Auto,
    /// On with these `(width, height)` shapes.
    List(Vec<(u32, u32)>),
}

impl std::str::FromStr for ShapePolicy {
    type Err = Error;

    /// Parses `default`, `off`, `auto` or a list `WxH,WxH,...` (e.g. `1344x800,800x1344`).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "default" => Ok(ShapePolicy::Default),
            "off" | "none" => Ok(ShapePolicy::Off),
            "auto" | "on" => Ok(ShapePolicy::Auto),
            list => {
                let mut v = vec![];
                for part in list.split(',').filter(|p| !p.trim().is_empty()) {
                    v.push(crate::bench::parse_wxh(part.trim()).map_err(|_| {
                        Error::InvalidInput(format!(
                            "shape buckets {s:?}: {part:?} is not WIDTHxHEIGHT; expected \
                             auto, off, or a list like 1344x800,800x1344"
                        ))
                    })?);
                }
                if v.is_empty() {
                    return Err(Error::InvalidInput(format!(
                        "shape buckets {s:?}: expected auto, off, or a list like 1344x800,800x1344"
                    )));
                }
                Ok(ShapePolicy::List(v))
            }
        }
    }
}

impl std::fmt::Display for ShapePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShapePolicy::Default => f.write_str("default"),
            ShapePolicy::Off => f.write_str("off"),
            ShapePolicy::Auto => f.write_str("auto"),
            ShapePolicy::List(v) => {
                let parts: Vec<String> = v.iter().map(|(w, h)| format!("{w}x{h}")).collect();
                f.write_str(&parts.join(","))
            }
        }
    }
}

/// A validated list of canonical padded shapes `(width, height)`, in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeBuckets {
    shapes: Vec<(u32, u32)>,
}

impl ShapeBuckets {
    /// Buckets from explicit shapes, tried smallest area first (ties: the given order).
    ///
    /// Errors: [`Error::InvalidInput`] for an empty list, a zero side, or a side that is not a
    /// multiple of `size_divisor` (the network's strides need it).
    pub fn new(shapes: &[(u32, u32)], size_divisor: u32) -> Result<Self> {
        if shapes.is_empty() {
            return Err(Error::InvalidInput("shape buckets: empty list".into()));
        }
        let d = size_divisor.max(1);
        let mut v: Vec<(u32, u32)> = vec![];
        for &(w, h) in shapes {
            if w == 0 || h == 0 || w % d != 0 || h % d != 0 {
                return Err(Error::InvalidInput(format!(
                    "shape bucket {w}x{h}: both sides must be positive multiples of the pad \
                     size divisor {d}"
                )));
            }
            if !v.contains(&(w, h)) {
                v.push((w, h));
            }
        }
        v.sort_by_key(|&(w, h)| u64::from(w) * u64::from(h));
        Ok(ShapeBuckets { shapes: v })
    }

    /// The buckets a policy gives for an input spec on an execution provider; `None` when
    /// bucketing is off, or when the resize rule already fixes the shape (stretch, letterbox)
    /// or the graph has a fixed H/W.
    ///
    /// Errors: as [`Self::new`] for bad user shapes (CLI list or the spec's
    /// `input.shape_buckets`).
    pub fn resolve(policy: &ShapePolicy, input: &InputSpec, ep: Ep) -> Result<Option<Self>> {
        let on = match policy {
            ShapePolicy::Off => false,
            ShapePolicy::Default => ep != Ep::Cpu,
            ShapePolicy::Auto | ShapePolicy::List(_) => true,
        };
        if !on || !matches!(input.resize, ResizeRule::KeepRatio { .. }) || !input.dynamic_hw {
            return Ok(None);
        }
        let d = input.pad.size_divisor;
        if let ShapePolicy::List(v) = policy {
            return Self::new(v, d).map(Some);
        }
        if let Some(v) = &input.shape_buckets {
            let v: Vec<(u32, u32)> = v.iter().map(|[w, h]| (*w, *h)).collect();
            return Self::new(&v, d).map(Some);
        }
        Ok(Some(Self::auto(input)))
    }

    /// The default buckets: the padded landscape and portrait maxima of the resize rule.
    pub fn auto(input: &InputSpec) -> Self {
        let r = shape_range(input);
        let mut shapes = vec![r.landscape];
        if r.portrait != r.landscape {
            shapes.push(r.portrait);
        }
        ShapeBuckets { shapes }
    }

    /// The shapes `(width, height)`, in routing order.
    pub fn shapes(&self) -> &[(u32, u32)] {
        &self.shapes
    }

    /// Index of the bucket a padded `w x h` tensor goes to: the first (smallest area) that
    /// holds it; `None` when none does.
    pub fn index(&self, w: u32, h: u32) -> Option<usize> {
        self.shapes.iter().position(|&(bw, bh)| w <= bw && h <= bh)
    }

    /// The bucket shape for a padded `w x h` tensor (see [`Self::index`]).
    pub fn route(&self, w: u32, h: u32) -> Option<(u32, u32)> {
        self.index(w, h).map(|i| self.shapes[i])
    }
}

impl std::fmt::Display for ShapeBuckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .shapes
            .iter()
            .map(|(w, h)| format!("{w}x{h}"))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// TensorRT optimization profile `[min, opt, max]` (`trt_profile_{min,opt,max}_shapes`, each
/// like `"input:1x3x800x1344"`) for batch 1 .. `batch`, from the same geometry as the
/// preprocessing ([`crate::preprocess::shape_range`]):
/// * a bucket `(w, h)`: exactly that shape (one engine shape per bucket session);
/// * otherwise fixed-size rules give their one shape; keep-ratio covers every aspect ratio,
///   from `d x d` up to the square of the larger maximum, optimal at the landscape maximum
///   (e.g. 800x1344 in H x W for mmdet's (1333, 800)).
pub fn trt_profile(
    spec: &crate::spec::DetectorSpec,
    batch: usize,
    bucket: Option<(u32, u32)>,
) -> [String; 3] {
    let name = &spec.input.name;
    let b = batch.max(1);
    let shape = |n: usize, (w, h): (u32, u32)| format!("{name}:{n}x3x{h}x{w}");
    if let Some(wh) = bucket {
        return [shape(1, wh), shape(b, wh), shape(b, wh)];
    }
    let r = shape_range(&spec.input);
    if r.is_fixed() {
        return [shape(1, r.min), shape(b, r.min), shape(b, r.min)];
    }
    let (mw, mh) = r.max();
    let l = mw.max(mh);
    [shape(1, r.min), shape(b, r.landscape), shape(b, (l, l))]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::{plan, plan_bucketed};
    use crate::spec::PadSpec;

    fn keep_ratio(scale: [u32; 2], d: u32) -> InputSpec {
        InputSpec {
            mean: [0.0; 3],
            std: [1.0; 3],
            resize: ResizeRule::KeepRatio { scale },
            pad: PadSpec {
                size_divisor: d,
                value: 0.0,
            },
            ..InputSpec::mmdet_default()
        }
    }

    #[test]
    fn auto_buckets_are_the_padded_maxima() {
        let i = keep_ratio([1333, 800], 32);
        let b = ShapeBuckets::auto(&i);
        assert_eq!(b.shapes(), &[(1344, 800), (800, 1344)]);
        let b = ShapeBuckets::auto(&keep_ratio([416, 312], 32));
        assert_eq!(b.shapes(), &[(416, 320), (320, 416)]);
    }

    #[test]
    fn every_keep_ratio_plan_fits_an_auto_bucket() {
        let i = keep_ratio([1333, 800], 32);
        let b = ShapeBuckets::auto(&i);
        for (w, h) in [
            (640, 480),
            (480, 640),
            (1000, 1000),
            (333, 1000),
            (1, 5000),
            (5000, 1),
            (1333, 800),
            (799, 1333),
            (427, 640),
            (640, 427),
        ] {
            let m = plan(&i, w, h);
            let (bw, bh) = b
                .route(m.input_w, m.input_h)
                .unwrap_or_else(|| panic!("{w}x{h} -> {m:?} fits no bucket"));
            let mb = plan_bucketed(&i, Some(&b), w, h);
            assert_eq!((mb.input_w, mb.input_h), (bw, bh));
            // only the tensor extent changes: content size, offsets and scale stay
            assert_eq!(
                (mb.resized_w, mb.resized_h, mb.pad_left, mb.pad_top),
                (m.resized_w, m.resized_h, 0, 0)
            );
            assert_eq!((mb.scale_w, mb.scale_h), (m.scale_w, m.scale_h));
            // landscape content goes to the landscape bucket
            if m.input_w > m.input_h {
                assert_eq!((bw, bh), (1344, 800), "{w}x{h}");
            }
        }
    }

    #[test]
    fn policy_parsing_and_resolution() {
        let i = keep_ratio([1333, 800], 32);
        assert_eq!(
            "1344x800, 800x1344".parse::<ShapePolicy>().unwrap(),
            ShapePolicy::List(vec![(1344, 800), (800, 1344)])
        );
        assert_eq!("off".parse::<ShapePolicy>().unwrap(), ShapePolicy::Off);
        assert!("13x".parse::<ShapePolicy>().is_err());
        assert!(",".parse::<ShapePolicy>().is_err());
        // default: on for GPU providers only
        assert!(
            ShapeBuckets::resolve(&ShapePolicy::Default, &i, Ep::Cpu)
                .unwrap()
                .is_none()
        );
        let g = ShapeBuckets::resolve(&ShapePolicy::Default, &i, Ep::Cuda)
            .unwrap()
            .unwrap();
        assert_eq!(g.shapes().len(), 2);
        assert!(
            ShapeBuckets::resolve(&ShapePolicy::Off, &i, Ep::Cuda)
                .unwrap()
                .is_none()
        );
        // a list is sorted by area; sides must be multiples of the divisor
        let l = ShapePolicy::List(vec![(1344, 800), (800, 800)]);
        let b = ShapeBuckets::resolve(&l, &i, Ep::Cpu).unwrap().unwrap();
        assert_eq!(b.shapes(), &[(800, 800), (1344, 800)]);
        assert_eq!(b.route(640, 480), Some((800, 800)));
        assert_eq!(b.route(800, 1344), None);
        let bad = ShapePolicy::List(vec![(1340, 800)]);
        assert!(ShapeBuckets::resolve(&bad, &i, Ep::Cpu).is_err());
        // the spec's list is used by auto
        let mut s = i.clone();
        s.shape_buckets = Some(vec![[1024, 1024]]);
        let b = ShapeBuckets::resolve(&ShapePolicy::Auto, &s, Ep::Cpu)
            .unwrap()
            .unwrap();
        assert_eq!(b.shapes(), &[(1024, 1024)]);
        // fixed-size rules are never bucketed
        let mut f = i.clone();
        f.resize = ResizeRule::Stretch {
            width: 320,
            height: 320,
        };
        assert!(
            ShapeBuckets::resolve(&ShapePolicy::Auto, &f, Ep::Cuda)
                .unwrap()
                .is_none()
        );
    }
}
