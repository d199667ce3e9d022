//! ONNX Runtime: locating the shared library ([`locate`]), creating the process-wide
//! environment (loaded exactly once), and building sessions with the requested execution
//! provider.
//!
//! Requested GPU execution providers are registered with `error_on_failure`, so a CUDA or
//! TensorRT request that cannot be satisfied is an [`Error::ExecutionProvider`] naming what is
//! missing, never a silent CPU run (`ort` 2.0.0-rc.15 `src/ep/mod.rs`,
//! `ExecutionProviderDispatch::error_on_failure`: without it a failed registration falls back to
//! the CPU provider silently).

pub mod locate;
pub mod profile;

use crate::{Error, Result};
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

pub use locate::{LibSource, PINNED_ORT_VERSION};

/// Execution provider to run the model on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Ep {
    /// ONNX Runtime's CPU execution provider.
    #[default]
    Cpu,
    /// NVIDIA CUDA (needs the `onnxruntime-gpu` build, CUDA 13 and cuDNN 9).
    Cuda,
    /// NVIDIA TensorRT 10 (needs the `onnxruntime-gpu` build, TensorRT 10, CUDA 13); nodes that
    /// TensorRT cannot take run on CUDA.
    #[cfg_attr(feature = "cli", value(name = "tensorrt"))]
    TensorRt,
}

impl Ep {
    /// ONNX Runtime's name of the provider.
    pub fn ort_name(self) -> &'static str {
        match self {
            Ep::Cpu => "CPUExecutionProvider",
            Ep::Cuda => "CUDAExecutionProvider",
            Ep::TensorRt => "TensorrtExecutionProvider",
        }
    }
}

impl std::fmt::Display for Ep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Ep::Cpu => "cpu",
            Ep::Cuda => "cuda",
            Ep::TensorRt => "tensorrt",
        })
    }
}

/// cuDNN convolution algorithm search of the CUDA EP (`cudnn_conv_algo_search`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum ConvAlgoSearch {
    /// Benchmark every algorithm (`cudnnFindConvolutionForwardAlgorithmEx`) for each new
    /// input shape: fastest once a session sees one shape, very slow when shapes vary.
    Exhaustive,
    /// cuDNN's heuristic ranking (`cudnnGetConvolutionForwardAlgorithm_v7`).
    Heuristic,
    /// The fixed implicit-precomputed-GEMM algorithm, no search (best when shapes vary).
    Default,
}

impl ConvAlgoSearch {
    fn to_ort(self) -> ort::ep::cuda::ConvAlgorithmSearch {
        use ort::ep::cuda::ConvAlgorithmSearch as C;
        match self {
            ConvAlgoSearch::Exhaustive => C::Exhaustive,
            ConvAlgoSearch::Heuristic => C::Heuristic,
            ConvAlgoSearch::Default => C::Default,
        }
    }
}

impl std::fmt::Display for ConvAlgoSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConvAlgoSearch::Exhaustive => "exhaustive",
            ConvAlgoSearch::Heuristic => "heuristic",
            ConvAlgoSearch::Default => "default",
        })
    }
}

/// How to load ONNX Runtime and build sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// Explicit path of `libonnxruntime.so.1.x` (`--ort-lib`); otherwise [`locate::locate`]
    /// searches for it.
    pub ort_lib: Option<PathBuf>,
    /// Execution provider.
    pub ep: Ep,
    /// Intra-op threads (`--threads`); 0 lets ONNX Runtime choose (one per physical core).
    pub threads: usize,
    /// GPU device id for CUDA / TensorRT.
    pub device_id: i32,
    /// TensorRT engine and timing cache directory (default: `<cache dir>/anchorkit/trt`).
    pub trt_cache: Option<PathBuf>,
    /// TensorRT: build FP16 engines (`trt_fp16_enable`).
    pub trt_fp16: bool,
    /// TensorRT optimization profile `[min, opt, max]`, each like `"input:1x3x320x320"`
    /// (`trt_profile_{min,opt,max}_shapes`); without it TensorRT rebuilds the engine whenever
    /// a new input shape falls outside the range seen so far.
    pub trt_profile: Option<[String; 3]>,
    /// Write ONNX Runtime's profile (Chrome trace JSON, one event per node run with its
    /// provider) under this path prefix (`SessionOptions::EnableProfiling`); finish it with
    /// `Session::end_profiling`, which returns the file name.
    pub profile_prefix: Option<PathBuf>,
    /// CUDA EP: allow TF32 tensor-core math in convolutions and GEMMs (`use_tf32`); off by
    /// default so CUDA detections match the CPU's.
    pub tf32: bool,
    /// CUDA EP: cuDNN convolution algorithm search; `None` lets [`crate::Detector::load`]
    /// choose (exhaustive when every session sees one input shape: fixed-size models or shape
    /// buckets; `default` when shapes vary).
    pub conv_algo_search: Option<ConvAlgoSearch>,
    /// Shape buckets for keep-ratio models (see [`crate::shapes`]); default: on for CUDA /
    /// TensorRT, off on the CPU.
    pub shape_buckets: crate::shapes::ShapePolicy,
    /// Images per `Session::run` the sessions are prepared for (TensorRT profile and warm-up
    /// batch); at least 1.
    pub batch: usize,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            ort_lib: None,
            ep: Ep::Cpu,
            threads: 0,
            device_id: 0,
            trt_cache: None,
            trt_fp16: false,
            trt_profile: None,
            profile_prefix: None,
            tf32: false,
            conv_algo_search: None,
            shape_buckets: crate::shapes::ShapePolicy::Default,
            batch: 1,
        }
    }
}

/// The loaded library and the process-wide environment.
pub struct Runtime {
    /// Path of the loaded library.
    pub lib: PathBuf,
    /// Where it was found.
    pub source: LibSource,
    /// Version string reported by the library (e.g. "1.32.0").
    pub version: String,
    env: ort::environment::Environment,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("lib", &self.lib)
            .field("source", &self.source)
            .field("version", &self.version)
            .finish()
    }
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Loads libonnxruntime (once per process) and creates the environment.
///
/// A later call with a different explicit `ort_lib` than the one loaded is an error (a process
/// can hold one ONNX Runtime only). Errors: library not found / not loadable / too old, each
/// with the remedy in the message.
pub fn runtime(ort_lib: Option<&Path>) -> Result<&'static Runtime> {
    if let Some(rt) = RUNTIME.get() {
        return check_same(rt, ort_lib);
    }
    let _guard = INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(rt) = RUNTIME.get() {
        return check_same(rt, ort_lib);
    }
    let (lib, source) = locate::locate(ort_lib)?;
    let builder = ort::init_from(&lib).map_err(|e| {
        Error::Runtime(format!(
            "cannot load {} (found via {source}): {e}. anchorkit needs ONNX Runtime >= 1.{} \
             (pinned {PINNED_ORT_VERSION}); pass another library with --ort-lib PATH or ORT_DYLIB_PATH",
            lib.display(),
            locate::MIN_ORT_MINOR
        ))
    })?;
    let env = builder
        .with_name("anchorkit")
        .with_telemetry(false)
        .build()
        .map_err(|e| {
            Error::Runtime(format!(
                "creating the environment from {}: {e}",
                lib.display()
            ))
        })?;
    // The versioned file name (symlinks resolved) carries the version, e.g. libonnxruntime.so.1.32.0.
    let version = std::fs::canonicalize(&lib)
        .ok()
        .and_then(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
        .and_then(|n| n.strip_prefix("libonnxruntime.so.").map(str::to_string))
        .unwrap_or_else(|| "unknown version".to_string());
    tracing::info!(
        "loaded ONNX Runtime {version} from {} ({source})",
        lib.display()
    );
    let rt = Runtime {
        lib,
        source,
        version,
        env,
    };
    let _ = RUNTIME.set(rt);
    Ok(RUNTIME.get().expect("just set"))
}

fn check_same(rt: &'static Runtime, ort_lib: Option<&Path>) -> Result<&'static Runtime> {
    if let Some(p) = ort_lib {
        let same = std::fs::canonicalize(p).ok() == std::fs::canonicalize(&rt.lib).ok();
        if !same {
            return Err(Error::Runtime(format!(
                "ONNX Runtime is already loaded from {} in this process; cannot switch to {}",
                rt.lib.display(),
                p.display()
            )));
        }
    }
    Ok(rt)
}

impl Runtime {
    /// Execution providers compiled into the loaded library (e.g. `["CPUExecutionProvider"]` for
    /// the CPU wheel).
    pub fn available_providers(&self) -> Vec<&'static str> {
        use ort::ep::ExecutionProvider;
        let mut v = vec![];
        if ort::ep::TensorRT::is_available().unwrap_or(false) {
            v.push(Ep::TensorRt.ort_name());
        }
        if ort::ep::CUDA::is_available().unwrap_or(false) {
            v.push(Ep::Cuda.ort_name());
        }
        v.push(Ep::Cpu.ort_name());
        v
    }

    /// Builds a session for `model` with the options' EP and threads (intra = `threads`,
    /// inter = 1, graph optimization level All).
    ///
    /// Errors: [`Error::ExecutionProvider`] when a requested GPU EP cannot register (what is
    /// missing and how to get it); [`Error::Runtime`] when the model cannot be read or compiled.
    pub fn session(&self, model: &Path, opts: &RuntimeOptions) -> Result<Session> {
        let rt_err = |e: ort::Error<ort::session::builder::SessionBuilder>| {
            Error::Runtime(format!("{}: {e}", model.display()))
        };
        if model.is_dir() {
            return Err(Error::Runtime(format!(
                "{}: is a folder, not an ONNX model file",
                model.display()
            )));
        }
        if !model.is_file() {
            return Err(Error::Runtime(format!(
                "{}: model file not found",
                model.display()
            )));
        }
        let mut b = Session::builder(&self.env)
            .map_err(|e| Error::Runtime(format!("session builder: {e}")))?;
        match opts.ep {
            Ep::Cpu => {}
            Ep::Cuda => {
                let cuda = cuda_ep(opts).build().error_on_failure();
                b = b
                    .with_execution_providers([cuda])
                    .map_err(|e| self.ep_error(Ep::Cuda, e.message()))?;
            }
            Ep::TensorRt => {
                let cache = opts
                    .trt_cache
                    .clone()
                    .or_else(|| dirs::cache_dir().map(|d| d.join("anchorkit").join("trt")));
                let mut trt = ort::ep::TensorRT::default()
                    .with_device_id(opts.device_id)
                    .with_fp16(opts.trt_fp16);
                if let Some([min, opt, max]) = &opts.trt_profile {
                    trt = trt
                        .with_profile_min_shapes(min)
                        .with_profile_opt_shapes(opt)
                        .with_profile_max_shapes(max);
                }
                if let Some(c) = cache {
                    let _ = std::fs::create_dir_all(&c);
                    let c = c.display().to_string();
                    trt = trt
                        .with_engine_cache(true)
                        .with_engine_cache_path(c.clone())
                        .with_timing_cache(true)
                        .with_timing_cache_path(c);
                }
                let cuda = cuda_ep(opts).build().error_on_failure();
                b = b
                    .with_execution_providers([trt.build().error_on_failure()])
                    .map_err(|e| self.ep_error(Ep::TensorRt, e.message()))?
                    .with_execution_providers([cuda])
                    .map_err(|e| self.ep_error(Ep::TensorRt, e.message()))?;
            }
        }
        if opts.threads > 0 {
            b = b.with_intra_threads(opts.threads).map_err(rt_err)?;
        }
        if let Some(p) = &opts.profile_prefix {
            b = b.with_profiling(p).map_err(rt_err)?;
        }
        b = b
            .with_inter_threads(1)
            .map_err(rt_err)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(rt_err)?;
        b.commit_from_file(model)
            .map_err(|e| Error::Runtime(format!("{}: cannot load model: {e}", model.display())))
    }

    fn ep_error(&self, ep: Ep, ort_msg: &str) -> Error {
        let avail = self.available_providers();
        let mut msg = format!(
            "{} could not be registered with {} (ONNX Runtime {}): {}. ",
            ep.ort_name(),
            self.lib.display(),
            self.version,
            ort_msg.trim_end_matches('.')
        );
        if !avail.contains(&ep.ort_name()) {
            msg.push_str(&format!(
                "This library is a build without it (providers: {}). Install the GPU build \
                 (`python3 -m pip install onnxruntime-gpu`, with CUDA 13 + cuDNN 9{}) and pass its \
                 onnxruntime/capi/libonnxruntime.so.1.x with --ort-lib. ",
                avail.join(", "),
                if ep == Ep::TensorRt {
                    " + TensorRT 10"
                } else {
                    ""
                }
            ));
        } else {
            msg.push_str(
                "The provider is compiled in but its libraries failed to load: put the missing \
                 CUDA/cuDNN/TensorRT libraries named above on LD_LIBRARY_PATH. ",
            );
        }
        msg.push_str("Not falling back to CPU; use --ep cpu to run on the CPU.");
        Error::ExecutionProvider {
            ep: ep.to_string(),
            msg,
        }
    }
}

/// The CUDA EP with the options' device, TF32 setting and cuDNN algorithm search.
fn cuda_ep(opts: &RuntimeOptions) -> ort::ep::CUDA {
    let mut c = ort::ep::CUDA::default()
        .with_device_id(opts.device_id)
        .with_tf32(opts.tf32);
    if let Some(s) = opts.conv_algo_search {
        c = c.with_conv_algorithm_search(s.to_ort());
    }
    c
}

/// Loads the runtime per `opts` and builds a session for `model` (see [`Runtime::session`]).
pub fn session(model: &Path, opts: &RuntimeOptions) -> Result<(Session, &'static Runtime)> {
    let rt = runtime(opts.ort_lib.as_deref())?;
    Ok((rt.session(model, opts)?, rt))
}

/// Names, element types and shapes of a session's inputs and outputs (`-1` = dynamic).
pub fn io_infos(session: &Session) -> (Vec<crate::spec::TensorInfo>, Vec<crate::spec::TensorInfo>) {
    let conv = |o: &ort::value::Outlet| crate::spec::TensorInfo {
        name: o.name().to_string(),
        elem: o
            .dtype()
            .tensor_type()
            .map_or_else(|| o.dtype().to_string(), |t| t.to_string()),
        shape: o
            .dtype()
            .tensor_shape()
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default(),
    };
    (
        session.inputs().iter().map(conv).collect(),
        session.outputs().iter().map(conv).collect(),
    )
}

/// Reads the spec JSON stored in the model's ONNX `metadata_props` under
/// [`crate::spec::METADATA_KEY`], if any.
pub fn metadata_spec(session: &Session) -> Option<String> {
    session
        .metadata()
        .ok()
        .and_then(|m| m.custom(crate::spec::METADATA_KEY))
}
