//! [`Detector`]: a spec, an ONNX Runtime session and the pipeline stages
//! (`preprocess` -> `infer` -> `postprocess`), each callable on its own so `bench` can time them.

use crate::head::LevelOutput;
use crate::postprocess::{self, Detection};
use crate::preprocess::{ImageMeta, Preprocessor};
use crate::runtime::{self, Runtime, RuntimeOptions};
use crate::spec::{self, DetectorSpec, SpecSource, TensorInfo, TensorLayout};
use crate::{Error, Result};
use image::RgbImage;
use ort::session::Session;
use ort::value::TensorRef;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Wall time of each stage for one image.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    /// Resize + normalize + pad (decode not included).
    pub preprocess: Duration,
    /// `Session::run`.
    pub infer: Duration,
    /// Slicing the outputs, selection, decode, NMS.
    pub postprocess: Duration,
}

/// One output tensor the head needs, with its latest value copied out of the session.
#[derive(Debug, Default)]
struct OutBuf {
    name: String,
    shape: Vec<i64>,
    data: Vec<f32>,
}

/// A loaded dense detector: spec + session + reusable buffers.
pub struct Detector {
    spec: DetectorSpec,
    spec_source: SpecSource,
    model: PathBuf,
    session: Session,
    runtime: &'static Runtime,
    options: RuntimeOptions,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
    pre: Preprocessor,
    /// `[l0.cls, l0.reg, (l0.ctr), l1.cls, ...]`.
    outs: Vec<OutBuf>,
    /// Index of each level's first buffer in `outs`.
    level_base: Vec<usize>,
    last_meta: Option<ImageMeta>,
    /// Whether [`spec::checks::check_first_run`] has passed (it runs until it does).
    first_run_checked: bool,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("model", &self.model)
            .field("spec_source", &self.spec_source)
            .field("ep", &self.options.ep)
            .finish()
    }
}

/// Finds the spec of a loaded session (`--spec`, ONNX metadata, sidecar) and validates it
/// against the graph. Errors: [`Error::Spec`].
pub fn spec_for_session(
    model: &Path,
    session: &Session,
    spec_override: Option<&Path>,
) -> Result<(DetectorSpec, SpecSource)> {
    let (inputs, outputs) = runtime::io_infos(session);
    let meta = runtime::metadata_spec(session);
    let (spec, src) = spec::resolve(model, spec_override, meta.as_deref())?;
    spec.validate_io(&inputs, &outputs, src.path())?;
    Ok((spec, src))
}

impl Detector {
    /// Loads ONNX Runtime (once per process), builds the session with `rt`'s execution provider
    /// and threads, then finds and validates the spec (`spec_override`, else ONNX metadata, else
    /// a sidecar `<model>.json`).
    ///
    /// Errors: [`Error::Runtime`] / [`Error::ExecutionProvider`] from the runtime,
    /// [`Error::Spec`] for a missing spec or one that disagrees with the graph.
    pub fn load(
        model: &Path,
        spec_override: Option<&Path>,
        rt: &RuntimeOptions,
    ) -> Result<Detector> {
        let (session, runtime) = runtime::session(model, rt)?;
        let (spec, spec_source) = spec_for_session(model, &session, spec_override)?;
        let (inputs, outputs) = runtime::io_infos(&session);
        let mut outs = vec![];
        let mut level_base = vec![];
        for l in &spec.head.levels {
            level_base.push(outs.len());
            for n in [Some(&l.cls), Some(&l.reg), l.centerness.as_ref()]
                .into_iter()
                .flatten()
            {
                outs.push(OutBuf {
                    name: n.clone(),
                    ..OutBuf::default()
                });
            }
        }
        Ok(Detector {
            pre: Preprocessor::new(&spec.input),
            spec,
            spec_source,
            model: model.to_path_buf(),
            session,
            runtime,
            options: rt.clone(),
            inputs,
            outputs,
            outs,
            level_base,
            last_meta: None,
            first_run_checked: false,
        })
    }

    /// The validated spec.
    pub fn spec(&self) -> &DetectorSpec {
        &self.spec
    }

    /// Overrides the spec's `postprocess.score_thr` (`--score-thr`). Errors:
    /// [`Error::InvalidInput`] outside `[0, 1)`.
    pub fn set_score_thr(&mut self, thr: f32) -> Result<()> {
        if !(0.0..1.0).contains(&thr) {
            return Err(Error::InvalidInput(format!(
                "score threshold {thr} is not in [0, 1)"
            )));
        }
        self.spec.postprocess.score_thr = thr;
        Ok(())
    }

    /// Where the spec came from.
    pub fn spec_source(&self) -> &SpecSource {
        &self.spec_source
    }

    /// The model file.
    pub fn model(&self) -> &Path {
        &self.model
    }

    /// The loaded ONNX Runtime library.
    pub fn runtime(&self) -> &'static Runtime {
        self.runtime
    }

    /// The runtime options the session was built with (EP, threads).
    pub fn options(&self) -> &RuntimeOptions {
        &self.options
    }

    /// Graph inputs and outputs (name, type, shape).
    pub fn io(&self) -> (&[TensorInfo], &[TensorInfo]) {
        (&self.inputs, &self.outputs)
    }

    /// Resizes, normalizes and pads `img` into the reused NCHW input buffer.
    pub fn preprocess(&mut self, img: &RgbImage) -> Result<ImageMeta> {
        let meta = self.pre.run(img)?;
        self.last_meta = Some(meta);
        Ok(meta)
    }

    /// The current network input, `[1, 3, input_h, input_w]` f32 (valid after [`Self::preprocess`]).
    pub fn input_tensor(&self) -> &[f32] {
        self.pre.tensor()
    }

    /// Runs the session on the current input tensor and copies the head outputs into reused
    /// buffers. Errors: [`Error::InvalidInput`] before any `preprocess`, [`Error::Runtime`] from
    /// ONNX Runtime or an output that is not f32.
    pub fn infer(&mut self) -> Result<()> {
        let meta = self
            .last_meta
            .ok_or_else(|| Error::InvalidInput("infer() called before preprocess()".into()))?;
        let name = self.spec.input.name.as_str();
        let outputs = run_session(
            &mut self.session,
            name,
            &self.model,
            self.pre.tensor(),
            &meta,
        )?;
        for o in &mut self.outs {
            let v = outputs.get(&o.name).ok_or_else(|| {
                Error::Runtime(format!("output {:?} missing from the run", o.name))
            })?;
            let (shape, data) = v
                .try_extract_tensor::<f32>()
                .map_err(|e| Error::Runtime(format!("output {:?}: {e}", o.name)))?;
            o.shape.clear();
            o.shape.extend(shape.iter().copied());
            o.data.clear();
            o.data.extend_from_slice(data);
        }
        Ok(())
    }

    fn levels(&self, meta: &ImageMeta) -> Result<Vec<LevelOutput<'_>>> {
        let views: Vec<OutView<'_>> = self
            .outs
            .iter()
            .map(|o| OutView {
                name: &o.name,
                shape: &o.shape,
                data: &o.data,
            })
            .collect();
        slice_levels(&self.spec, &self.level_base, &views, meta)
    }

    /// Post-processes the outputs of the last [`Self::infer`] for the image described by
    /// `meta`: per-level selection, decode, rescale to original pixels, NMS, `max_per_img`.
    pub fn postprocess(&self, meta: &ImageMeta) -> Result<Vec<Detection>> {
        let levels = self.levels(meta)?;
        postprocess::postprocess(&self.spec, &levels, meta)
    }

    /// `preprocess` + `infer` + `postprocess`; boxes in original-image pixels, sorted by score
    /// descending. Reads the head outputs in place (no copy, unlike [`Self::infer`]).
    pub fn detect(&mut self, img: &RgbImage) -> Result<Vec<Detection>> {
        self.detect_timed(img).map(|(_, d, _)| d)
    }

    /// [`Self::detect`] that also returns the image geometry and the wall time of each stage.
    pub fn detect_timed(
        &mut self,
        img: &RgbImage,
    ) -> Result<(ImageMeta, Vec<Detection>, StageTimes)> {
        let t0 = Instant::now();
        let meta = self.preprocess(img)?;
        let t1 = Instant::now();
        let (dets, infer, post) = run_and_postprocess(
            &mut self.session,
            &self.spec,
            &self.outs,
            &self.level_base,
            &self.model,
            self.pre.tensor(),
            &meta,
            (!self.first_run_checked).then_some(self.spec_source.path()),
        )?;
        self.first_run_checked = true;
        let times = StageTimes {
            preprocess: t1 - t0,
            infer,
            postprocess: post,
        };
        Ok((meta, dets, times))
    }
}

/// Raw head outputs of one run, owned: ONNX Runtime's own output values (reference-counted,
/// not copied) with the image geometry. `Send`, so a pipeline can post-process them on another
/// thread ([`PostProcessor`]) while the session already runs the next image.
pub struct HeadOutputs {
    values: Vec<(String, ort::value::DynValue)>,
    meta: ImageMeta,
}

impl HeadOutputs {
    /// Geometry of the image these outputs belong to.
    pub fn meta(&self) -> &ImageMeta {
        &self.meta
    }
}

/// Everything post-processing needs from a [`Detector`] (the spec and the output layout),
/// detached from the session so it can run on another thread.
#[derive(Debug, Clone)]
pub struct PostProcessor {
    spec: DetectorSpec,
    level_base: Vec<usize>,
}

impl PostProcessor {
    /// Post-processes `outs` exactly as [`Detector::postprocess`] would: boxes in
    /// original-image pixels, sorted by score descending, at most `max_per_img`.
    ///
    /// Errors: [`Error::Runtime`] for an output that is not f32 or has the wrong shape;
    /// post-processing errors.
    pub fn run(&self, outs: &HeadOutputs) -> Result<Vec<Detection>> {
        let views = outs
            .values
            .iter()
            .map(|(name, v)| out_view(name, v))
            .collect::<Result<Vec<_>>>()?;
        let levels = slice_levels(&self.spec, &self.level_base, &views, &outs.meta)?;
        postprocess::postprocess(&self.spec, &levels, &outs.meta)
    }
}

impl Detector {
    /// `Session::run` on a tensor preprocessed elsewhere (`[1, 3, meta.input_h,
    /// meta.input_w]`), keeping the head outputs for [`PostProcessor::run`] instead of
    /// post-processing them here; returns them with the inference time.
    ///
    /// Errors: [`Error::InvalidInput`] when `tensor` has the wrong length; [`Error::Runtime`]
    /// from ONNX Runtime or a missing output.
    pub fn infer_owned(
        &mut self,
        tensor: &[f32],
        meta: &ImageMeta,
    ) -> Result<(HeadOutputs, Duration)> {
        let shape = [1usize, 3, meta.input_h as usize, meta.input_w as usize];
        if tensor.len() != shape.iter().product::<usize>() {
            return Err(Error::InvalidInput(format!(
                "input tensor has {} values, expected {shape:?}",
                tensor.len()
            )));
        }
        let t0 = Instant::now();
        let name = self.spec.input.name.as_str();
        let mut outputs = run_session(&mut self.session, name, &self.model, tensor, meta)?;
        let t1 = t0.elapsed();
        let mut values = Vec::with_capacity(self.outs.len());
        for o in &self.outs {
            let v = outputs.remove(&o.name).ok_or_else(|| {
                Error::Runtime(format!("output {:?} missing from the run", o.name))
            })?;
            values.push((o.name.clone(), v));
        }
        Ok((
            HeadOutputs {
                values,
                meta: *meta,
            },
            t1,
        ))
    }

    /// A detached post-processor for [`Self::infer_owned`]'s outputs.
    pub fn post_processor(&self) -> PostProcessor {
        PostProcessor {
            spec: self.spec.clone(),
            level_base: self.level_base.clone(),
        }
    }
}

/// `Session::run` on `tensor` (`[1, 3, meta.input_h, meta.input_w]`), then post-processing
/// with the head outputs read in place; returns the detections and the run / post-processing
/// times. With `first_run_check` (the spec's source), the outputs are first checked with
/// [`spec::checks::check_first_run`].
#[allow(clippy::too_many_arguments)]
fn run_and_postprocess(
    session: &mut Session,
    spec: &DetectorSpec,
    outs: &[OutBuf],
    level_base: &[usize],
    model: &Path,
    tensor: &[f32],
    meta: &ImageMeta,
    first_run_check: Option<&Path>,
) -> Result<(Vec<Detection>, Duration, Duration)> {
    let t1 = Instant::now();
    let outputs = run_session(session, &spec.input.name, model, tensor, meta)?;
    let t2 = Instant::now();
    let mut views = Vec::with_capacity(outs.len());
    for o in outs {
        let v = outputs
            .get(&o.name)
            .ok_or_else(|| Error::Runtime(format!("output {:?} missing from the run", o.name)))?;
        views.push(out_view(&o.name, v)?);
    }
    let levels = slice_levels(spec, level_base, &views, meta)?;
    if let Some(src) = first_run_check {
        spec::checks::check_first_run(spec, &levels, meta, src)?;
    }
    let dets = postprocess::postprocess(spec, &levels, meta)?;
    Ok((dets, t2 - t1, t2.elapsed()))
}

/// `Session::run` of one preprocessed image `[1, 3, meta.input_h, meta.input_w]`.
fn run_session<'s>(
    session: &'s mut Session,
    input_name: &str,
    model: &Path,
    tensor: &[f32],
    meta: &ImageMeta,
) -> Result<ort::session::SessionOutputs<'s>> {
    let shape = [1usize, 3, meta.input_h as usize, meta.input_w as usize];
    let input = TensorRef::from_array_view((shape, tensor))
        .map_err(|e| Error::Runtime(format!("input tensor {shape:?}: {e}")))?;
    session
        .run(ort::inputs![input_name => input])
        .map_err(|e| Error::Runtime(format!("{}: inference failed: {e}", model.display())))
}

/// The f32 view of output `name`. Errors: [`Error::Runtime`] when it is not an f32 tensor.
fn out_view<'a>(name: &'a str, v: &'a ort::value::DynValue) -> Result<OutView<'a>> {
    let (shape, data) = v
        .try_extract_tensor::<f32>()
        .map_err(|e| Error::Runtime(format!("output {name:?}: {e}")))?;
    Ok(OutView { name, shape, data })
}

/// Borrowed view of one output tensor.
struct OutView<'a> {
    name: &'a str,
    shape: &'a [i64],
    data: &'a [f32],
}

/// Slices each level's outputs (batch element 0) into [`LevelOutput`]s: NCHW takes H, W from
/// the output shape; the flat layout computes `H = ceil(input_h / stride)`,
/// `W = ceil(input_w / stride)` and checks `rows = H*W*A`.
fn slice_levels<'a>(
    spec: &DetectorSpec,
    level_base: &[usize],
    outs: &[OutView<'a>],
    meta: &ImageMeta,
) -> Result<Vec<LevelOutput<'a>>> {
    let a = spec.num_priors();
    let mut v = Vec::with_capacity(spec.head.levels.len());
    for (li, l) in spec.head.levels.iter().enumerate() {
        let base = level_base[li];
        let n = if l.centerness.is_some() { 3 } else { 2 };
        let bufs = &outs[base..base + n];
        let (h, w) = match spec.head.layout {
            TensorLayout::Nchw => {
                let s = &bufs[0].shape;
                if s.len() != 4 {
                    return Err(Error::Runtime(format!(
                        "output {:?}: expected rank 4, got {s:?}",
                        bufs[0].name
                    )));
                }
                (s[2] as usize, s[3] as usize)
            }
            TensorLayout::Flat => {
                let st = l.stride;
                (
                    (meta.input_h.div_ceil(st)) as usize,
                    (meta.input_w.div_ceil(st)) as usize,
                )
            }
        };
        let mut slices = [&[][..]; 3];
        for (k, b) in bufs.iter().enumerate() {
            let per_row = match (spec.head.layout, k) {
                (_, 0) => a * spec.num_classes(),
                (_, 1) => a * spec.reg_channels(),
                _ => a,
            };
            let need = per_row * h * w;
            let (rows_dim, k_dim) = match spec.head.layout {
                TensorLayout::Nchw => (
                    b.shape.get(2).copied().unwrap_or(-1) * b.shape.get(3).copied().unwrap_or(-1),
                    b.shape.get(1).copied().unwrap_or(-1),
                ),
                TensorLayout::Flat => (
                    b.shape.iter().rev().nth(1).copied().unwrap_or(-1),
                    b.shape.last().copied().unwrap_or(-1),
                ),
            };
            if rows_dim * k_dim != need as i64 || b.data.len() < need {
                return Err(Error::Runtime(format!(
                    "level {li} (stride {}) output {:?} has shape {:?}; expected {} values per image \
                     ({per_row} per location x {h}x{w} locations)",
                    l.stride, b.name, b.shape, need
                )));
            }
            slices[k] = &b.data[..need];
        }
        v.push(LevelOutput {
            cls: slices[0],
            reg: slices[1],
            centerness: (n == 3).then_some(slices[2]),
            h,
            w,
        });
    }
    Ok(v)
}
