//! `anchorkit spec init`: write a detector spec from the graph, a training config and flags
//! (logic in `anchorkit::spec::init`).

use super::RuntimeArgs;
use anchorkit::spec::init::{self, InitFlags, ResizeChoice};
use anchorkit::spec::{ChannelOrder, HeadKind, checks, nanodet};
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: SpecCommand,
}

#[derive(clap::Subcommand)]
pub enum SpecCommand {
    /// Write a validated spec from the ONNX graph (and a training config); prints where each
    /// value came from.
    Init(InitArgs),
}

#[derive(clap::Args)]
pub struct InitArgs {
    /// ONNX model.
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,
    /// Training config: a NanoDet .yml.
    #[arg(long = "from", value_name = "CONFIG")]
    pub from: Option<PathBuf>,
    /// Class names, one per line, in output-channel order.
    #[arg(long, value_name = "FILE")]
    pub classes: Option<PathBuf>,
    /// Write the spec here (default: print it on stdout).
    #[arg(long, value_name = "SPEC.json")]
    pub out: Option<PathBuf>,
    /// Replace an existing --out file.
    #[arg(long)]
    pub force: bool,
    /// Channel order of the input tensor.
    #[arg(long, value_enum)]
    pub channel_order: Option<Order>,
    /// Per-channel mean in pixel units (0..255), in channel order.
    #[arg(long, value_name = "A,B,C", value_parser = parse3)]
    pub mean: Option<[f32; 3]>,
    /// Per-channel std in pixel units, in channel order.
    #[arg(long, value_name = "A,B,C", value_parser = parse3)]
    pub std: Option<[f32; 3]>,
    /// Resize rule (overrides the config).
    #[arg(long, value_enum)]
    pub resize: Option<ResizeChoice>,
    /// Resize size: width,height (stretch, letterbox) or the keep-ratio scale long,short.
    #[arg(long, value_name = "A,B", value_parser = parse2)]
    pub size: Option<[u32; 2]>,
    /// Head kind, where the graph fits several (ATSS and FCOS export the same tensors).
    #[arg(long, value_enum)]
    pub head: Option<Head>,
    /// Model name written into the spec (default: the model file's stem).
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Order {
    Rgb,
    Bgr,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Head {
    Retina,
    Atss,
    Gfl,
    Fcos,
}

fn parse_n<T: std::str::FromStr, const N: usize>(s: &str) -> Result<[T; N], String> {
    let v: Vec<T> = s
        .split(',')
        .map(|x| x.trim().parse::<T>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{s:?}: expected {N} comma-separated numbers"))?;
    v.try_into()
        .map_err(|_| format!("{s:?}: expected {N} comma-separated numbers"))
}

fn parse3(s: &str) -> Result<[f32; 3], String> {
    parse_n::<f32, 3>(s)
}

fn parse2(s: &str) -> Result<[u32; 2], String> {
    parse_n::<u32, 2>(s)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        SpecCommand::Init(a) => run_init(a),
    }
}

fn run_init(a: InitArgs) -> anyhow::Result<ExitCode> {
    let cfg = match &a.from {
        Some(p) => {
            let ext = p
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            match ext.as_deref() {
                Some("yml" | "yaml") => Some(nanodet::read(p)?),
                _ => anyhow::bail!(
                    "{}: --from reads NanoDet .yml configs (mmdetection .py configs are not read yet)",
                    p.display()
                ),
            }
        }
        None => None,
    };
    let flags = InitFlags {
        classes: match &a.classes {
            Some(p) => Some((p.clone(), init::read_classes(p)?)),
            None => None,
        },
        channel_order: a.channel_order.map(|o| match o {
            Order::Rgb => ChannelOrder::Rgb,
            Order::Bgr => ChannelOrder::Bgr,
        }),
        mean: a.mean,
        std: a.std,
        resize: a.resize,
        size: a.size,
        head: a.head.map(|h| match h {
            Head::Retina => HeadKind::Retina,
            Head::Atss => HeadKind::Atss,
            Head::Gfl => HeadKind::Gfl,
            Head::Fcos => HeadKind::Fcos,
        }),
        name: a.name.clone(),
    };
    if let Some(out) = &a.out
        && out.exists()
        && !a.force
    {
        anyhow::bail!(
            "{}: exists; pass --force to replace it (nothing written)",
            out.display()
        );
    }
    // Size of the synthetic run where the graph's H, W are dynamic: --size, else the config's.
    let hint = match (a.size, cfg.as_ref().and_then(|c| c.resize.as_ref())) {
        (Some([x, y]), _) if a.resize == Some(ResizeChoice::KeepRatio) => {
            Some((x.min(y), x.max(y)))
        }
        (Some([w, h]), _) => Some((h, w)),
        (None, Some(r)) => {
            use anchorkit::spec::ResizeRule::*;
            Some(match r.value {
                KeepRatio { scale } => (scale[0].min(scale[1]), scale[0].max(scale[1])),
                Stretch { width, height } | Letterbox { width, height, .. } => (height, width),
            })
        }
        (None, None) => None,
    };
    let probe = init::probe(&a.model, &a.runtime.options(), hint)?;
    let (spec, rows) = init::build(&probe, &a.model, cfg.as_ref(), &flags)?;
    let fw = rows.iter().map(|r| r.field.len()).max().unwrap_or(0);
    let vw = rows
        .iter()
        .map(|r| r.value.chars().count().min(48))
        .max()
        .unwrap_or(0);
    eprintln!("{:<fw$}  {:<vw$}  source", "field", "value");
    for r in &rows {
        let mut v: String = r.value.chars().take(48).collect();
        if r.value.chars().count() > 48 {
            v.replace_range(v.len() - 3.., "...");
        }
        eprintln!("{:<fw$}  {:<vw$}  {}", r.field, v, r.origin);
    }
    for w in checks::lint(&spec) {
        eprintln!("warning: {w}");
    }
    match &a.out {
        Some(out) => {
            init::write_spec(&spec, out, a.force)
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!(
                "wrote {} (validated against {})",
                out.display(),
                a.model.display()
            );
        }
        None => println!("{}", serde_json::to_string_pretty(&spec)?),
    }
    Ok(ExitCode::SUCCESS)
}
