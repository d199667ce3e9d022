//! Helpers shared by the integration tests: paths, the `anchorkit` binary, prerequisites.
//!
//! The data in `../shared`, the tools venv and a loadable libonnxruntime are prerequisites.
//! Outside CI a test whose prerequisite is absent prints `SKIP: ...` and passes; with
//! `CI=true` (`.ci/run`, where all of them must exist) a missing prerequisite fails the test
//! instead, so a broken install step cannot hide behind skipped tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared` beside the repository (may be absent).
pub fn shared_root() -> PathBuf {
    repo().join("../shared")
}

/// Report a missing prerequisite: panics under `CI=true`, else prints `SKIP: reason`.
pub fn skip(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("prerequisite missing in CI: {reason}");
    }
    eprintln!("SKIP: {reason}");
}

/// `p` when `present`, else [`skip`] with `p` and `why` and `None`.
fn present_or_skip(p: PathBuf, present: bool, why: &str) -> Option<PathBuf> {
    if !present {
        skip(&format!("{} {why}", p.display()));
    }
    present.then_some(p)
}

/// `../shared/<rel>` if it exists, else [`skip`] and `None`.
pub fn shared(rel: &str) -> Option<PathBuf> {
    let p = shared_root().join(rel);
    let ok = p.exists();
    present_or_skip(p, ok, "not found (needs ../shared beside the repo)")
}

/// The tools venv's python, else [`skip`] and `None`.
pub fn venv_python() -> Option<PathBuf> {
    let p = repo().join("tools/.venv/bin/python");
    let ok = p.is_file();
    present_or_skip(p, ok, "is absent (run tools/setup_venv.sh)")
}

/// Whether ONNX Runtime can be loaded (else [`skip`] with the reason).
pub fn runtime_ok() -> bool {
    match anchorkit::runtime::runtime(None) {
        Ok(_) => true,
        Err(e) => {
            skip(&format!("no ONNX Runtime library: {e}"));
            false
        }
    }
}

/// NanoDet-m at `size` (320 or 416) from `../shared` and its sidecar spec in `models/specs/`.
pub fn nanodet(size: u32) -> Option<(PathBuf, PathBuf)> {
    let m = shared(&format!("models/nanodet-m-coco/nanodet-m-{size}.onnx"))?;
    Some((
        m,
        repo().join(format!("models/specs/nanodet-m-{size}.json")),
    ))
}

/// The `anchorkit` binary under test.
pub fn anchorkit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_anchorkit"))
}

/// A path as `&str` (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Run a command that must succeed: its output, or a panic showing its stderr.
pub trait RunOk {
    fn run_ok(&mut self) -> std::process::Output;
}

impl RunOk for Command {
    fn run_ok(&mut self) -> std::process::Output {
        let out = self.output().expect("start the command");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// True when JPEGs are decoded by libjpeg-turbo (`preprocess::libjpeg`), as OpenCV decodes
/// them; it must load unless `ANCHORKIT_LIBJPEG=off` selects the image crate's decoder (then
/// false).
pub fn libjpeg_required() -> bool {
    if std::env::var("ANCHORKIT_LIBJPEG").is_ok_and(|v| v == "off") {
        return false;
    }
    assert!(
        anchorkit::preprocess::libjpeg::available(),
        "libjpeg.so.62 did not load: install libjpeg62-turbo (scripts/test-all.sh does)"
    );
    true
}

/// The `bbox` of one detection record of the JSONL/COCO output as `[x1, y1, x2, y2]`
/// (pixels of the original image); panics when it is not an array of numbers.
pub fn bbox(d: &serde_json::Value) -> [f64; 4] {
    let b: Vec<f64> = d["bbox"]
        .as_array()
        .expect("bbox")
        .iter()
        .map(|v| v.as_f64().expect("bbox number"))
        .collect();
    [b[0], b[1], b[2], b[3]]
}
