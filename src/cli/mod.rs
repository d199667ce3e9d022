//! Command bodies of the `anchorkit` binary (argument structs + `run`).

pub mod anchors;
pub mod bench;
pub mod detect;
pub mod eval;
pub mod inspect;
pub mod progress;
pub mod spec;

/// Log to stderr; `RUST_LOG=ort=debug` shows ONNX Runtime's EP placement messages.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,ort=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

use anchorkit::runtime::{ConvAlgoSearch, Ep, RuntimeOptions};
use anchorkit::shapes::ShapePolicy;
use std::path::{Path, PathBuf};

/// Options shared by every command that runs a model: which ONNX Runtime library, which
/// execution provider, how many threads.
#[derive(clap::Args, Debug, Clone)]
pub struct RuntimeArgs {
    /// Path of libonnxruntime.so.1.x to load (default: ORT_DYLIB_PATH, next to the executable,
    /// an installed Python onnxruntime, the user cache, else provisioned with pip).
    #[arg(long, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
    /// Execution provider; a GPU provider that cannot register is an error, never a CPU run.
    #[arg(long, value_enum, default_value_t = Ep::Cpu)]
    pub ep: Ep,
    /// Intra-op threads of ONNX Runtime (0 = one per physical core).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub threads: usize,
    /// Keep-ratio models: pad each input bottom/right up to a canonical shape, one session
    /// per shape (`auto`: the spec's `input.shape_buckets`, else the padded landscape and
    /// portrait maxima; `off`; or a list like `1344x800,800x1344`). Default: on for cuda and
    /// tensorrt, off for cpu.
    #[arg(
        long,
        value_name = "auto|off|WxH,..",
        default_value = "default",
        hide_default_value = true
    )]
    pub shape_buckets: ShapePolicy,
    /// CUDA: cuDNN convolution algorithm search (default: exhaustive when every session sees
    /// one input shape, `default` when shapes vary).
    #[arg(long, value_enum, value_name = "MODE")]
    pub cudnn_conv_algo_search: Option<ConvAlgoSearch>,
    /// CUDA: TF32 tensor-core math (faster, detections differ slightly from the CPU's).
    #[arg(
        long,
        value_name = "on|off",
        default_value = "off",
        value_parser = parse_on_off,
        action = clap::ArgAction::Set
    )]
    pub tf32: bool,
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        _ => Err(format!("{s:?}: expected on or off")),
    }
}

impl RuntimeArgs {
    /// The library-level options.
    pub fn options(&self) -> RuntimeOptions {
        RuntimeOptions {
            ort_lib: self.ort_lib.clone(),
            ep: self.ep,
            threads: self.threads,
            shape_buckets: self.shape_buckets.clone(),
            conv_algo_search: self.cudnn_conv_algo_search,
            tf32: self.tf32,
            ..RuntimeOptions::default()
        }
    }
}

/// Models tried, in order, when `--model` is not given (relative to the current directory, then
/// to the source checkout), each with the sidecar spec it runs with (`None`: the embedded one).
///
/// The first is the default of the README command: `bccd_freeanchor_x24` (FreeAnchor trained
/// with scale jitter 0.3-1.6) with the spec for smears at about half BCCD's magnification, the
/// sample photo's (`keep_ratio 832x500`). It is the model that generalizes best to that photo;
/// the best on the BCCD test split itself is `bccd_freeanchor_w24` (see `models/MODELS.md`).
/// `--spec` given with no `--model` replaces the sidecar.
pub const DEFAULT_MODELS: &[(&str, Option<&str>)] = &[
    (
        "models/bccd_freeanchor_x24.onnx",
        Some("models/specs/bccd_freeanchor_x24-smear.json"),
    ),
    ("models/bccd_freeanchor_w24.onnx", None),
    ("models/bccd_freeanchor_e20.onnx", None),
    ("models/bccd_atss.onnx", None),
    ("models/bccd_freeanchor.onnx", None),
];
/// Fallback until the project's own BCCD model exists: NanoDet-m (COCO) from `../shared` with
/// its sidecar spec.
pub const FALLBACK_MODEL: (&str, &str) = (
    "../shared/models/nanodet-m-coco/nanodet-m-320.onnx",
    "models/specs/nanodet-m-320.json",
);

fn roots() -> Vec<PathBuf> {
    let mut v = vec![PathBuf::new()];
    let m = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if std::fs::canonicalize(&m).ok() != std::fs::canonicalize(".").ok() {
        v.push(m);
    }
    v
}

/// Resolves `--model` / `--spec`, applying the default model when `--model` is absent.
/// Prints on stderr which default was chosen.
pub fn resolve_model(
    model: Option<&Path>,
    spec: Option<&Path>,
) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    if let Some(m) = model {
        return Ok((m.to_path_buf(), spec.map(Path::to_path_buf)));
    }
    for root in roots() {
        let mut cands: Vec<(PathBuf, Option<PathBuf>)> = DEFAULT_MODELS
            .iter()
            .map(|(m, s)| (root.join(m), s.map(|s| root.join(s))))
            .collect();
        if let Ok(g) = glob::glob(&root.join("models/bccd_*.onnx").to_string_lossy()) {
            let mut rest: Vec<PathBuf> = g.flatten().collect();
            rest.sort();
            cands.extend(rest.into_iter().map(|m| (m, None)));
        }
        if let Some((m, s)) = cands
            .into_iter()
            .find(|(m, s)| m.is_file() && s.as_ref().is_none_or(|s| s.is_file()))
        {
            let s = spec.map(Path::to_path_buf).or(s);
            match &s {
                Some(s) => eprintln!(
                    "anchorkit: using the default model {} with spec {}",
                    m.display(),
                    s.display()
                ),
                None => eprintln!("anchorkit: using the default model {}", m.display()),
            }
            return Ok((m, s));
        }
    }
    for root in roots() {
        let (m, s) = (root.join(FALLBACK_MODEL.0), root.join(FALLBACK_MODEL.1));
        if m.is_file() && s.is_file() {
            eprintln!(
                "anchorkit: no models/bccd_*.onnx yet; using NanoDet-m (COCO, 80 classes) {} with spec {}",
                m.display(),
                spec.unwrap_or(&s).display()
            );
            return Ok((m, Some(spec.map_or(s, Path::to_path_buf))));
        }
    }
    anyhow::bail!(
        "no model given and no default model found (looked for {} and {}); pass --model PATH",
        DEFAULT_MODELS
            .iter()
            .map(|(m, _)| *m)
            .collect::<Vec<_>>()
            .join(", "),
        FALLBACK_MODEL.0
    )
}
