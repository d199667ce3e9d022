//! [`Detector`]: a spec, an ONNX Runtime session and the pipeline stages
//! (`preprocess` -> `infer` -> `postprocess`), each callable on its own so `bench` can time them.

use crate::head::LevelOutput;
use crate::postprocess::{self, Detection};
use crate::preprocess::{self, ImageMeta, Preprocessor};
use crate::runtime::{self, ConvAlgoSearch, Ep, Runtime, RuntimeOptions};
use crate::shapes::ShapeBuckets;
use crate::spec::{self, DetectorSpec, SpecSource, TensorInfo, TensorLayout};
use crate::{Error, Result};
use image::RgbImage;
use ort::session::Session;
use ort::value::TensorRef;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
    /// The session of the first shape bucket, of every shape outside the buckets, and of all
    /// inputs when there are no per-bucket sessions.
    session: Session,
    /// Sessions of buckets 1.. (GPU providers with shape buckets: one input shape each).
    bucket_sessions: Vec<Session>,
    buckets: Option<ShapeBuckets>,
    /// Wall time of building the sessions (and reading the spec), for one-time reports.
    load_time: Duration,
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
            .field("buckets", &self.buckets)
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
    /// On GPU providers the spec is read first (through a CPU session) because it decides the
    /// session options: shape buckets ([`crate::shapes`], `rt.shape_buckets`) with one session
    /// per bucket, the cuDNN algorithm search when `rt.conv_algo_search` is `None` (exhaustive
    /// when each session sees one shape, `default` when shapes vary) and, for TensorRT, the
    /// optimization profile ([`crate::shapes::trt_profile`]) unless `rt.trt_profile` is set.
    ///
    /// Errors: [`Error::Runtime`] / [`Error::ExecutionProvider`] from the runtime,
    /// [`Error::Spec`] for a missing spec or one that disagrees with the graph.
    pub fn load(
        model: &Path,
        spec_override: Option<&Path>,
        rt: &RuntimeOptions,
    ) -> Result<Detector> {
        let t0 = Instant::now();
        let mut opts = rt.clone();
        opts.batch = opts.batch.max(1);
        // GPU providers: the spec decides the session options (shape buckets, cuDNN search,
        // TensorRT profile), so it is read first through a CPU session.
        let pre = if opts.ep == Ep::Cpu {
            None
        } else {
            let mut o = opts.clone();
            o.ep = Ep::Cpu;
            o.profile_prefix = None;
            let (cpu, _) = runtime::session(model, &o)?;
            Some(spec_for_session(model, &cpu, spec_override)?)
        };
        let bucket_shapes = match &pre {
            Some((spec, _)) => {
                let b = ShapeBuckets::resolve(&opts.shape_buckets, &spec.input, opts.ep)?;
                let varying = b.is_none()
                    && spec.input.dynamic_hw
                    && !preprocess::shape_range(&spec.input).is_fixed();
                if opts.conv_algo_search.is_none() {
                    opts.conv_algo_search = Some(if varying {
                        ConvAlgoSearch::Default
                    } else {
                        ConvAlgoSearch::Exhaustive
                    });
                }
                if opts.ep == Ep::TensorRt && opts.trt_profile.is_none() {
                    // every shape the resize rule gives (bucket sessions get their own)
                    opts.trt_profile = Some(crate::shapes::trt_profile(spec, opts.batch, None));
                }
                b
            }
            None => None,
        };
        // One session per bucket on GPU providers; one session otherwise.
        let shapes: Vec<Option<(u32, u32)>> = match &bucket_shapes {
            Some(b) => b.shapes().iter().copied().map(Some).collect(),
            None => vec![None],
        };
        let mut sessions = Vec::with_capacity(shapes.len());
        let mut runtime_ref = None;
        for shape in &shapes {
            let mut o = opts.clone();
            if let (Ep::TensorRt, None, Some((spec, _)), Some(_)) =
                (o.ep, &rt.trt_profile, &pre, shape)
            {
                o.trt_profile = Some(crate::shapes::trt_profile(spec, o.batch, *shape));
            }
            let (s, r) = runtime::session(model, &o)?;
            sessions.push(s);
            runtime_ref = Some(r);
        }
        let runtime = runtime_ref.expect("at least one session");
        let mut sessions = sessions.into_iter();
        let session = sessions.next().expect("at least one session");
        let bucket_sessions: Vec<Session> = sessions.collect();
        let (spec, spec_source) = match pre {
            Some(p) => p,
            None => spec_for_session(model, &session, spec_override)?,
        };
        // CPU: buckets (if asked for) only pad; one session serves every shape.
        let buckets = match bucket_shapes {
            Some(b) => Some(b),
            None => ShapeBuckets::resolve(&opts.shape_buckets, &spec.input, opts.ep)?,
        };
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
            pre: Preprocessor::with_buckets(&spec.input, buckets.clone()),
            spec,
            spec_source,
            model: model.to_path_buf(),
            session,
            bucket_sessions,
            buckets,
            load_time: t0.elapsed(),
            runtime,
            options: opts,
            inputs,
            outputs,
            outs,
            level_base,
            last_meta: None,
            first_run_checked: false,
        })
    }

    /// The shape buckets inputs are padded to, if any (see [`crate::shapes`]).
    pub fn buckets(&self) -> Option<&ShapeBuckets> {
        self.buckets.as_ref()
    }

    /// Number of ONNX Runtime sessions (one per shape bucket on GPU providers, else one).
    pub fn num_sessions(&self) -> usize {
        1 + self.bucket_sessions.len()
    }

    /// Wall time [`Self::load`] took (reading the spec, building every session).
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// A preprocessor for this detector's input (with its shape buckets), e.g. for worker
    /// threads.
    pub fn preprocessor(&self) -> Preprocessor {
        Preprocessor::with_buckets(&self.spec.input, self.buckets.clone())
    }

    /// The fixed batch size of the graph's image input, or `None` when its batch dimension is
    /// dynamic.
    pub fn fixed_batch(&self) -> Option<usize> {
        self.inputs
            .iter()
            .find(|i| i.name == self.spec.input.name)
            .and_then(|i| i.shape.first().copied())
            .filter(|&n| n > 0)
            .map(|n| n as usize)
    }

    /// Checks that the graph can run `batch` images per `Session::run`.
    ///
    /// Errors: [`Error::InvalidInput`] naming the model and its fixed batch size.
    pub fn check_batch(&self, batch: usize) -> Result<()> {
        match self.fixed_batch() {
            Some(n) if batch > n => Err(Error::InvalidInput(format!(
                "{}: the graph's input {:?} has a fixed batch size of {n}; batch {batch} needs a \
                 model exported with a dynamic batch axis (use --batch {n})",
                self.model.display(),
                self.spec.input.name
            ))),
            _ => Ok(()),
        }
    }

    /// Runs every session `runs` times on a pad-valued tensor of its input shape (each
    /// bucket; else the fixed size, or the landscape maximum for keep-ratio models), with the
    /// options' batch (1 for a fixed-batch graph), so that one-time costs (CUDA context,
    /// cuDNN algorithm search, TensorRT engine build) are paid before measuring. Returns the
    /// shape `(w, h)` and total time per session.
    ///
    /// Errors: [`Error::Runtime`] from ONNX Runtime.
    pub fn warm_up(&mut self, runs: usize) -> Result<Vec<((u32, u32), Duration)>> {
        let shapes: Vec<(u32, u32)> = match &self.buckets {
            Some(b) => b.shapes().to_vec(),
            None => vec![preprocess::shape_range(&self.spec.input).landscape],
        };
        let batch = match self.fixed_batch() {
            Some(n) => n.min(self.options.batch),
            None => self.options.batch,
        };
        let pad = self.spec.input.pad.value;
        let name = self.spec.input.name.clone();
        let mut out = vec![];
        for (w, h) in shapes {
            let data = vec![pad; batch * 3 * w as usize * h as usize];
            let t = Instant::now();
            for _ in 0..runs {
                let session = pick_session(
                    &mut self.session,
                    &mut self.bucket_sessions,
                    self.buckets.as_ref(),
                    w,
                    h,
                );
                run_batch(session, &name, &self.model, &data, batch, w, h)?;
            }
            out.push(((w, h), t.elapsed()));
        }
        Ok(out)
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
        let session = pick_session(
            &mut self.session,
            &mut self.bucket_sessions,
            self.buckets.as_ref(),
            meta.input_w,
            meta.input_h,
        );
        let outputs = run_session(session, name, &self.model, self.pre.tensor(), &meta)?;
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
        slice_levels(&self.spec, &self.level_base, &views, meta, 0)
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
        let session = pick_session(
            &mut self.session,
            &mut self.bucket_sessions,
            self.buckets.as_ref(),
            meta.input_w,
            meta.input_h,
        );
        let (dets, infer, post) = run_and_postprocess(
            session,
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

/// One image's result in a batch: its geometry, detections and stage times.
pub type BatchItem = Result<(ImageMeta, Vec<Detection>, StageTimes)>;

/// Raw head outputs of one run, owned: ONNX Runtime's own output values (reference-counted,
/// not copied) with the image geometry. `Send`, so a pipeline can post-process them on another
/// thread ([`PostProcessor`]) while the session already runs the next image.
pub struct HeadOutputs {
    /// The run's outputs, shared by the images of one batch.
    values: Arc<Vec<(String, ort::value::DynValue)>>,
    /// This image's index along the batch axis.
    item: usize,
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
        let levels = slice_levels(&self.spec, &self.level_base, &views, &outs.meta, outs.item)?;
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
        let session = pick_session(
            &mut self.session,
            &mut self.bucket_sessions,
            self.buckets.as_ref(),
            meta.input_w,
            meta.input_h,
        );
        let mut outputs = run_session(session, name, &self.model, tensor, meta)?;
        let t1 = t0.elapsed();
        let values = take_outputs(&self.outs, &mut outputs)?;
        Ok((
            HeadOutputs {
                values: Arc::new(values),
                item: 0,
                meta: *meta,
            },
            t1,
        ))
    }

    /// `Session::run` on a batch of images preprocessed elsewhere, all of one padded shape
    /// (`tensors[i]` is `[1, 3, metas[i].input_h, metas[i].input_w]`), as one
    /// `[N, 3, H, W]` tensor; returns each image's head outputs (sharing the run's output
    /// values) with the inference time of the whole run.
    ///
    /// Errors: [`Error::InvalidInput`] for an empty batch, mixed shapes, wrong tensor lengths
    /// or a batch the graph cannot take ([`Self::check_batch`]); [`Error::Runtime`] from ONNX
    /// Runtime or a missing output.
    pub fn infer_batch_owned(
        &mut self,
        tensors: &[&[f32]],
        metas: &[ImageMeta],
    ) -> Result<(Vec<HeadOutputs>, Duration)> {
        let (w, h) = batch_shape(tensors, metas)?;
        self.check_batch(tensors.len())?;
        let mut data = Vec::with_capacity(tensors.iter().map(|t| t.len()).sum());
        for t in tensors {
            data.extend_from_slice(t);
        }
        let t0 = Instant::now();
        let session = pick_session(
            &mut self.session,
            &mut self.bucket_sessions,
            self.buckets.as_ref(),
            w,
            h,
        );
        let name = self.spec.input.name.as_str();
        let mut outputs = run_batch(session, name, &self.model, &data, tensors.len(), w, h)?;
        let dt = t0.elapsed();
        let values = Arc::new(take_outputs(&self.outs, &mut outputs)?);
        let heads = metas
            .iter()
            .enumerate()
            .map(|(item, meta)| HeadOutputs {
                values: Arc::clone(&values),
                item,
                meta: *meta,
            })
            .collect();
        Ok((heads, dt))
    }

    /// Detects objects in several images with batched `Session::run`s: each image is
    /// preprocessed (padded to its shape bucket when buckets are on), the images are grouped
    /// by padded shape (first appearance order; groups split at the graph's fixed batch size),
    /// each group runs as one `[N, 3, H, W]` tensor, and each image is post-processed from its
    /// slice of the outputs. Images of different shapes are never padded to a common one, so
    /// the detections equal those of [`Self::detect`] one by one (a head with GroupNorm would
    /// otherwise normalize over the extra padding).
    ///
    /// Returns one result per image, in order, with its geometry and stage times (inference:
    /// the run's time divided by the images in it). An error of one image (preprocessing) or
    /// one run (all its images) does not stop the others.
    pub fn detect_batch(&mut self, imgs: &[&RgbImage]) -> Vec<BatchItem> {
        let mut prepared: Vec<Option<(Vec<f32>, ImageMeta, Duration)>> = vec![];
        let mut results: Vec<Option<BatchItem>> = (0..imgs.len()).map(|_| None).collect();
        for (i, img) in imgs.iter().enumerate() {
            let t = Instant::now();
            match self.pre.run(img) {
                Ok(meta) => prepared.push(Some((self.pre.tensor().to_vec(), meta, t.elapsed()))),
                Err(e) => {
                    prepared.push(None);
                    results[i] = Some(Err(e));
                }
            }
        }
        let mut groups: Vec<((u32, u32), Vec<usize>)> = vec![];
        for (i, p) in prepared.iter().enumerate() {
            if let Some((_, m, _)) = p {
                let key = (m.input_w, m.input_h);
                match groups.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, v)) => v.push(i),
                    None => groups.push((key, vec![i])),
                }
            }
        }
        let cap = self.fixed_batch().unwrap_or(usize::MAX).max(1);
        let post = self.post_processor();
        for (_, idx) in groups {
            for chunk in idx.chunks(cap) {
                let tensors: Vec<&[f32]> = chunk
                    .iter()
                    .map(|&i| prepared[i].as_ref().expect("grouped").0.as_slice())
                    .collect();
                let metas: Vec<ImageMeta> = chunk
                    .iter()
                    .map(|&i| prepared[i].as_ref().expect("grouped").1)
                    .collect();
                match self.infer_batch_owned(&tensors, &metas) {
                    Ok((heads, dt)) => {
                        let infer = dt / chunk.len() as u32;
                        for (&i, h) in chunk.iter().zip(heads) {
                            let t = Instant::now();
                            let r = post.run(&h).map(|d| {
                                let times = StageTimes {
                                    preprocess: prepared[i].as_ref().expect("grouped").2,
                                    infer,
                                    postprocess: t.elapsed(),
                                };
                                (h.meta, d, times)
                            });
                            results[i] = Some(r);
                        }
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        for &i in chunk {
                            results[i] = Some(Err(Error::Runtime(format!(
                                "batch of {} images: {msg}",
                                chunk.len()
                            ))));
                        }
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every image has a result"))
            .collect()
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
    let levels = slice_levels(spec, level_base, &views, meta, 0)?;
    if let Some(src) = first_run_check {
        spec::checks::check_first_run(spec, &levels, meta, src)?;
    }
    let dets = postprocess::postprocess(spec, &levels, meta)?;
    Ok((dets, t2 - t1, t2.elapsed()))
}

/// The session for a padded `w x h` input: the bucket's own session when there are
/// per-bucket sessions (bucket 0 and unbucketed shapes use `main`).
fn pick_session<'a>(
    main: &'a mut Session,
    extra: &'a mut [Session],
    buckets: Option<&ShapeBuckets>,
    w: u32,
    h: u32,
) -> &'a mut Session {
    let exact = buckets.and_then(|b| b.shapes().iter().position(|&s| s == (w, h)));
    match exact {
        Some(i) if i >= 1 && i <= extra.len() => &mut extra[i - 1],
        _ => main,
    }
}

/// The common padded shape `(w, h)` of a batch. Errors: [`Error::InvalidInput`] for an empty
/// batch, differing shapes or a tensor of the wrong length.
fn batch_shape(tensors: &[&[f32]], metas: &[ImageMeta]) -> Result<(u32, u32)> {
    let first = metas
        .first()
        .ok_or_else(|| Error::InvalidInput("empty batch".into()))?;
    let (w, h) = (first.input_w, first.input_h);
    if tensors.len() != metas.len() {
        return Err(Error::InvalidInput(format!(
            "{} tensors for {} images",
            tensors.len(),
            metas.len()
        )));
    }
    for (t, m) in tensors.iter().zip(metas) {
        if (m.input_w, m.input_h) != (w, h) {
            return Err(Error::InvalidInput(format!(
                "a batch needs one input shape: {w}x{h} and {}x{}",
                m.input_w, m.input_h
            )));
        }
        if t.len() != 3 * w as usize * h as usize {
            return Err(Error::InvalidInput(format!(
                "input tensor has {} values, expected 3x{h}x{w}",
                t.len()
            )));
        }
    }
    Ok((w, h))
}

/// `Session::run` of `n` images `[n, 3, h, w]`.
fn run_batch<'s>(
    session: &'s mut Session,
    input_name: &str,
    model: &Path,
    data: &[f32],
    n: usize,
    w: u32,
    h: u32,
) -> Result<ort::session::SessionOutputs<'s>> {
    let shape = [n, 3, h as usize, w as usize];
    let input = TensorRef::from_array_view((shape, data))
        .map_err(|e| Error::Runtime(format!("input tensor {shape:?}: {e}")))?;
    session
        .run(ort::inputs![input_name => input])
        .map_err(|e| Error::Runtime(format!("{}: inference failed: {e}", model.display())))
}

/// `Session::run` of one preprocessed image `[1, 3, meta.input_h, meta.input_w]`.
fn run_session<'s>(
    session: &'s mut Session,
    input_name: &str,
    model: &Path,
    tensor: &[f32],
    meta: &ImageMeta,
) -> Result<ort::session::SessionOutputs<'s>> {
    run_batch(
        session,
        input_name,
        model,
        tensor,
        1,
        meta.input_w,
        meta.input_h,
    )
}

/// Moves the head outputs `outs` (in the detector's output order) out of a run's outputs.
///
/// Errors: [`Error::Runtime`] when an output is missing from the run.
fn take_outputs(
    outs: &[OutBuf],
    outputs: &mut ort::session::SessionOutputs<'_>,
) -> Result<Vec<(String, ort::value::DynValue)>> {
    outs.iter()
        .map(|o| {
            let v = outputs.remove(&o.name).ok_or_else(|| {
                Error::Runtime(format!("output {:?} missing from the run", o.name))
            })?;
            Ok((o.name.clone(), v))
        })
        .collect()
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

/// Slices each level's outputs (batch element `item`) into [`LevelOutput`]s: NCHW takes H, W
/// from the output shape; the flat layout computes `H = ceil(input_h / stride)`,
/// `W = ceil(input_w / stride)` and checks `rows = H*W*A`.
fn slice_levels<'a>(
    spec: &DetectorSpec,
    level_base: &[usize],
    outs: &[OutView<'a>],
    meta: &ImageMeta,
    item: usize,
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
            if rows_dim * k_dim != need as i64 || b.data.len() < (item + 1) * need {
                return Err(Error::Runtime(format!(
                    "level {li} (stride {}) output {:?} has shape {:?}; expected {} values per image \
                     ({per_row} per location x {h}x{w} locations)",
                    l.stride, b.name, b.shape, need
                )));
            }
            slices[k] = &b.data[item * need..(item + 1) * need];
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
