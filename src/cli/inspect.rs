//! `anchorkit inspect`: print a model's inputs, outputs, detector spec, the ONNX Runtime library
//! and the execution provider in use. Shows the graph even when the spec is missing or wrong,
//! which is what one needs to write a spec.

use super::RuntimeArgs;
use anchorkit::runtime;
use anchorkit::spec::{self, DetectorSpec, TensorInfo};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// ONNX model.
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,
    /// Detector spec JSON (default: ONNX metadata, else a sidecar `<model>.json`).
    #[arg(long, value_name = "JSON")]
    pub spec: Option<PathBuf>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

fn role(spec: Option<&DetectorSpec>, name: &str) -> String {
    let Some(s) = spec else { return String::new() };
    for l in &s.head.levels {
        if l.cls == name {
            return format!("stride {} class scores", l.stride);
        }
        if l.reg == name {
            return format!("stride {} box regression", l.stride);
        }
        if l.centerness.as_deref() == Some(name) {
            return format!("stride {} centerness", l.stride);
        }
    }
    if s.input.name == name {
        return "image".into();
    }
    "unused".into()
}

fn table(title: &str, v: &[TensorInfo], spec: Option<&DetectorSpec>) {
    println!("{title}:");
    let w = v.iter().map(|t| t.name.len()).max().unwrap_or(0);
    for t in v {
        println!(
            "  {:<w$}  {:<4} {:<20} {}",
            t.name,
            t.elem,
            t.shape_str(),
            role(spec, &t.name)
        );
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let opts = args.runtime.options();
    let (session, rt) = runtime::session(&args.model, &opts)?;
    let (inputs, outputs) = runtime::io_infos(&session);
    println!("model:    {}", args.model.display());
    println!(
        "runtime:  ONNX Runtime {} from {} ({})",
        rt.version,
        rt.lib.display(),
        rt.source
    );
    println!(
        "EP:       {} ({}); this library provides: {}",
        opts.ep,
        opts.ep.ort_name(),
        rt.available_providers().join(", ")
    );
    println!(
        "jpeg:     {}",
        anchorkit::preprocess::libjpeg::decoder_description()
    );
    println!(
        "threads:  {}",
        if opts.threads == 0 {
            "ONNX Runtime default".to_string()
        } else {
            opts.threads.to_string()
        }
    );
    match anchorkit::precision::read(&args.model) {
        Ok(g) => println!("precision: {}", g.describe()),
        Err(e) => println!("precision: unknown ({e})"),
    }
    let meta = runtime::metadata_spec(&session);
    let resolved = spec::resolve(&args.model, args.spec.as_deref(), meta.as_deref());
    let checked = resolved.and_then(|(s, src)| {
        s.validate_io(&inputs, &outputs, src.path())?;
        Ok((s, src))
    });
    let sp = checked.as_ref().ok().map(|(s, _)| s);
    table("inputs", &inputs, sp);
    table("outputs", &outputs, sp);
    match checked {
        Ok((s, src)) => {
            println!("spec:     {src}: valid for this graph");
            for w in spec::checks::lint(&s) {
                println!("warning:  {w}");
            }
            println!(
                "          {} classes, {:?} head, {} levels (strides {:?}), A = {}",
                s.num_classes(),
                s.head.kind,
                s.head.levels.len(),
                s.head.levels.iter().map(|l| l.stride).collect::<Vec<_>>(),
                s.num_priors()
            );
            println!("{}", serde_json::to_string_pretty(&s)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
