//! `anchorkit` command line: parse, call the library, print. Command bodies live in `cli/`.

mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Run FreeAnchor / ATSS / GFL detectors from ONNX exactly as mmdetection does; benchmark,
/// evaluate, and re-optimize anchors.
#[derive(Parser)]
#[command(name = "anchorkit", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Detect objects in images (files, directories, globs).
    Detect(cli::detect::Args),
    /// Print a model's spec, inputs, outputs and the execution provider in use.
    Inspect(cli::inspect::Args),
    /// Measure per-stage latency and throughput.
    Bench(cli::bench::Args),
    /// COCO-style evaluation (AP, AP50, ... identical to pycocotools).
    Eval(cli::eval::Args),
    /// Re-optimize anchor shapes for a dataset and evaluate them under real assigners.
    Anchors(cli::anchors::Args),
    /// Detector specs: `spec init` writes one from the graph and a training config.
    Spec(cli::spec::Args),
}

fn main() -> ExitCode {
    cli::init_logging();
    // SIGINT / SIGTERM: remove temp files and exit 130 (batch commands finish the current item
    // and write what is done first)
    anchorkit::fsutil::interrupt::install();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Detect(a) => cli::detect::run(a),
        Command::Inspect(a) => cli::inspect::run(a),
        Command::Bench(a) => cli::bench::run(a),
        Command::Eval(a) => cli::eval::run(a),
        Command::Anchors(a) => cli::anchors::run(a),
        Command::Spec(a) => cli::spec::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
