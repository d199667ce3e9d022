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
