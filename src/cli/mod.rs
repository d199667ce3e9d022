//! Command bodies of the `anchorkit` binary (argument structs + `run`).

pub mod anchors;
pub mod bench;
pub mod detect;
pub mod eval;
pub mod inspect;

/// Log to stderr; `RUST_LOG=ort=debug` shows ONNX Runtime's EP placement messages.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,ort=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

use anchorkit::runtime::{Ep, RuntimeOptions};
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
}

impl RuntimeArgs {
    /// The library-level options.
    pub fn options(&self) -> RuntimeOptions {
        RuntimeOptions {
            ort_lib: self.ort_lib.clone(),
            ep: self.ep,
            threads: self.threads,
            ..RuntimeOptions::default()
        }
    }
}

/// Models tried, in order, when `--model` is not given (relative to the current directory, then
/// to the source checkout).
pub const DEFAULT_MODELS: &[&str] = &[
    "models/bccd_freeanchor_e20.onnx",
    "models/bccd_atss.onnx",
    "models/bccd_freeanchor.onnx",
    "models/bccd_pseudo_iou.onnx",
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
        let mut cands: Vec<PathBuf> = DEFAULT_MODELS.iter().map(|m| root.join(m)).collect();
        if let Ok(g) = glob::glob(&root.join("models/bccd_*.onnx").to_string_lossy()) {
            let mut rest: Vec<PathBuf> = g.flatten().collect();
            rest.sort();
            cands.extend(rest);
        }
        if let Some(m) = cands.into_iter().find(|p| p.is_file()) {
            eprintln!("anchorkit: using the default model {}", m.display());
            return Ok((m, spec.map(Path::to_path_buf)));
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
        DEFAULT_MODELS.join(", "),
        FALLBACK_MODEL.0
    )
}
