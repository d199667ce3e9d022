//! `anchorkit anchors`: re-optimize anchor shapes for a dataset and compare them with the
//! default anchors under real assigners (library: `anchorkit::anchor_opt`).

use anchorkit::anchor_opt::Layout;
use anchorkit::anchor_opt::assign::GridConfig;
use anchorkit::anchor_opt::learned::LearnedInit;
use anchorkit::anchor_opt::plot;
use anchorkit::anchor_opt::report::table;
use anchorkit::anchor_opt::run::{
    Assigner, Method, OptimizeOptions, compare_warnings, evaluate, optimize,
};
use anchorkit::dataset::{self, Format, InputBoxes, ReadOptions, Resize};
use anchorkit::spec::ResizeRule;
use anyhow::bail;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Resize rule names on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ResizeArg {
    /// mmdet keep-ratio (`--input-size` = long x short, default 1333x800), pad to 32.
    KeepRatio,
    /// Stretch to `--input-size` (default 640x640).
    Stretch,
    /// Keep ratio inside `--input-size` (default 640x640), pad centered.
    Letterbox,
    /// Keep original pixels.
    None,
}

#[derive(clap::Args)]
pub struct Args {
    /// Annotations: COCO JSON, VOC directory, YOLO label directory, or a list file.
    #[arg(long)]
    pub dataset: PathBuf,
    /// Annotation format (guessed from the path when omitted).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// VOC: use only ImageSets/Main/<SPLIT>.txt.
    #[arg(long)]
    pub split: Option<String>,
    /// Original image size WxH for images whose size is unknown (list / YOLO).
    #[arg(long, value_parser = parse_wh)]
    pub orig_size: Option<(u32, u32)>,
    /// Network input size WxH (keep-ratio: long x short).
    #[arg(long, value_parser = parse_wh)]
    pub input_size: Option<(u32, u32)>,
    /// Resize rule mapping boxes into the input space.
    #[arg(long, value_enum, default_value = "keep-ratio")]
    pub resize: ResizeArg,
    /// Optimization method.
    #[arg(long, value_enum, default_value = "kmeans")]
    pub method: Method,
    /// Number of shapes (anchors per location in the fpn layout); default 9, 1 for --assigner atss.
    #[arg(long)]
    pub k: Option<usize>,
    /// fpn: the same k shapes (x stride) on every level; free: k pixel shapes split over levels.
    #[arg(long, value_enum, default_value = "fpn")]
    pub layout: Layout,
    /// FPN strides.
    #[arg(long, value_delimiter = ',', default_value = "8,16,32,64,128")]
    pub strides: Vec<u32>,
    /// Assigner the report leads with; also picks the default anchors compared against.
    #[arg(long, value_enum, default_value = "atss")]
    pub assigner: Assigner,
    /// Random seed (every randomized step derives from it).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// k-means restarts.
    #[arg(long, default_value_t = 8)]
    pub restarts: usize,
    /// Skip the final local search (kmeans: IoU-ascent; evolve: fitness pattern search; de:
    /// bounded pattern search), e.g. to reproduce a peer exactly.
    #[arg(long)]
    pub no_polish: bool,
    /// Generations / iterations of evolve, de, learned (0 = method default).
    #[arg(long, default_value_t = 0)]
    pub iterations: usize,
    /// Write the log-w / log-h density plot with the anchors marked (PNG).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Write the full report as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a spec fragment `{"priors": ..., "strides": [...]}` for the optimized anchors.
    #[arg(long)]
    pub write_spec: Option<PathBuf>,
    /// Initialization of --method learned.
    #[arg(long, value_enum, default_value = "kmeans")]
    pub init: LearnedInit,
    /// Hide progress bars.
    #[arg(long)]
    pub quiet: bool,
}

fn parse_wh(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("expected WxH, got {s:?}"))?;
    let w: u32 = a
        .trim()
        .parse()
        .map_err(|_| format!("bad width in {s:?}"))?;
    let h: u32 = b
        .trim()
        .parse()
        .map_err(|_| format!("bad height in {s:?}"))?;
    if w == 0 || h == 0 {
        return Err(format!("zero size in {s:?}"));
    }
    Ok((w, h))
}

/// Write bytes atomically (temp file in the same directory + rename; file modes as
/// `anchorkit::fsutil` describes).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    Ok(anchorkit::fsutil::write_atomic(path, bytes)?)
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    if a.strides.is_empty() || a.strides.contains(&0) {
        bail!("--strides must be positive integers");
    }
    let opts = ReadOptions {
        split: a.split.clone(),
        assume_size: a.orig_size,
    };
    // outputs are checked before the (possibly long) optimization; none may be the dataset
    let inputs = anchorkit::fsutil::InputSet::new([&a.dataset]);
    for (flag, p) in [
        ("--plot", &a.plot),
        ("--json", &a.json),
        ("--write-spec", &a.write_spec),
    ] {
        if let Some(p) = p {
            anchorkit::fsutil::check_output(flag, p, &inputs)?;
        }
    }
    let ds = dataset::load(&a.dataset, a.format, &opts)?;
    let rule = match a.resize {
        ResizeArg::KeepRatio => {
            let (w, h) = a.input_size.unwrap_or((1333, 800));
            Some(ResizeRule::KeepRatio { scale: [w, h] })
        }
        ResizeArg::Stretch => {
            let (w, h) = a.input_size.unwrap_or((640, 640));
            Some(ResizeRule::Stretch {
                width: w,
                height: h,
            })
        }
        ResizeArg::Letterbox => {
            let (w, h) = a.input_size.unwrap_or((640, 640));
            Some(ResizeRule::Letterbox {
                width: w,
                height: h,
                pad_value: 114.0,
            })
        }
        ResizeArg::None => None,
    };
    let resize = Resize {
        rule,
        size_divisor: 32,
    };
    let (input, dropped_map) = InputBoxes::map(&ds, &resize);
    println!(
        "dataset: {} ({:?}): {} images, {} boxes kept, {} classes",
        ds.source.display(),
        ds.format,
        ds.images.len(),
        input.len(),
        ds.classes.len()
    );
    let d = ds.dropped;
    println!(
        "dropped: {} degenerate (w or h <= 0), {} outside the image, {} crowd, {} difficult, {} degenerate after resize; {} clipped to the image",
        d.degenerate, d.outside, d.crowd, d.difficult, dropped_map, d.clipped
    );
    for w in &ds.warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "resize: {:?}, pad to 32; strides {:?}",
        resize.rule, a.strides
    );
    let k =
        a.k.unwrap_or(if a.assigner == Assigner::Atss { 1 } else { 9 });
    let o = OptimizeOptions {
        method: a.method,
        k,
        layout: a.layout,
        strides: a.strides.clone(),
        seed: a.seed,
        restarts: a.restarts,
        polish: !a.no_polish,
        iterations: a.iterations,
        progress: super::progress::bars(a.quiet),
        init: a.init,
    };
    let opt = optimize(&input, &o)?;
    println!(
        "method {:?} (k = {k}, layout {:?}, seed {}): {} = {:.6} in {:.3} s",
        opt.method, opt.layout, opt.seed, opt.objective.0, opt.objective.1, opt.seconds
    );
    let shapes: Vec<String> = opt
        .shapes
        .iter()
        .map(|s| format!("({:.2}, {:.2})", s[0], s[1]))
        .collect();
    println!(
        "shapes ({}): {}",
        if a.layout == Layout::Fpn {
            "x stride"
        } else {
            "pixels"
        },
        shapes.join(" ")
    );
    println!("\nmmdetection config:\n{}", opt.mmdet);
    let cfg = GridConfig::default();
    let def = evaluate(
        &input,
        "default",
        &a.assigner.default_prior(),
        &a.strides,
        &cfg,
    )?;
    let best = evaluate(&input, "optimized", &opt.prior, &a.strides, &cfg)?;
    println!();
    print!("{}", table(&[&def, &best], a.assigner));
    let mut warnings = opt.warnings.clone();
    warnings.extend(compare_warnings(&def, &best));
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if let Some(p) = &a.plot {
        let (w, h) = input.wh();
        let mark = |r: &anchorkit::anchor_opt::run::SetReport| -> Vec<Vec<[f32; 2]>> {
            anchorkit::anchor_opt::AnchorSet::from_spec(&r.prior, &r.strides)
                .map(|s| (0..s.strides.len()).map(|l| s.shapes(l)).collect())
                .unwrap_or_default()
        };
        let sets = [
            plot::Marked {
                label: "default anchors",
                per_level: mark(&def),
                color: plotters::style::RGBColor(200, 30, 30),
            },
            plot::Marked {
                label: "optimized anchors",
                per_level: mark(&best),
                color: plotters::style::RGBColor(20, 140, 40),
            },
        ];
        let title = format!("{} boxes, {:?} (k = {k})", input.len(), opt.method);
        plot::plot(p, &w, &h, &sets, &title)?;
        println!("wrote plot {}", p.display());
    }
    if let Some(p) = &a.write_spec {
        let frag = serde_json::json!({ "priors": opt.prior, "strides": a.strides });
        write_atomic(p, serde_json::to_string_pretty(&frag)?.as_bytes())?;
        println!("wrote spec fragment {}", p.display());
    }
    if let Some(p) = &a.json {
        let rep = serde_json::json!({
            "dataset": {
                "source": ds.source, "format": ds.format, "images": ds.images.len(),
                "boxes": input.len(), "classes": ds.classes, "dropped": ds.dropped,
                "dropped_after_resize": dropped_map, "warnings": ds.warnings,
            },
            "resize": format!("{:?}", resize.rule),
            "strides": a.strides,
            "assigner": a.assigner,
            "optimized": opt,
            "default_report": def,
            "optimized_report": best,
            "warnings": warnings,
        });
        write_atomic(p, serde_json::to_string_pretty(&rep)?.as_bytes())?;
        println!("wrote report {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}
