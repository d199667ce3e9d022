//! Library error type. Every variant names the file (or tensor / field) involved and the problem,
//! so the binary can print it as is. Modules add variants here rather than panicking.

use std::path::PathBuf;

/// Errors returned by the anchorkit library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed. (The I/O error is part of the message, and not
    /// also a `source()`, so that a printed error chain names it once.)
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    /// An input image could not be decoded (missing, empty, truncated, not an image ...).
    #[error("{path}: cannot decode image: {msg}")]
    Image { path: PathBuf, msg: String },
    /// The detector spec is missing, malformed, or disagrees with the ONNX graph.
    #[error("{path}: detector spec: {msg}")]
    Spec { path: PathBuf, msg: String },
    /// ONNX Runtime could not be located, loaded or provisioned, or a session failed.
    #[error("onnx runtime: {0}")]
    Runtime(String),
    /// A requested execution provider could not be registered (never a silent CPU fallback).
    #[error("execution provider {ep}: {msg}")]
    ExecutionProvider { ep: String, msg: String },
    /// A dataset / annotation file is malformed; `line` is 1-based where known.
    #[error("{path}{}: {msg}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Dataset {
        path: PathBuf,
        line: Option<usize>,
        msg: String,
    },
    /// A model file is not a readable ONNX protobuf.
    #[error("{path}: ONNX model: {msg}")]
    Model { path: PathBuf, msg: String },
    /// An argument or in-memory input is invalid.
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wrap an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            err: source,
        }
    }
}
