//! `anchorkit eval`: COCO AP/AR identical to pycocotools, on COCO JSON or VOC XML ground truth,
//! for an existing detections file (COCO results JSON or anchorkit JSONL).

use anchorkit::eval::coco::{self, ClassMapping, CocoGt};
use anchorkit::eval::cocoeval;
use anchorkit::eval::voc::{self, VocCoords};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Evaluate detections against COCO or VOC ground truth (pycocotools' protocol, bbox).
#[derive(clap::Args)]
pub struct Args {
    /// COCO instances JSON ground truth.
    #[arg(
        long,
        value_name = "ANN.json",
        conflicts_with = "voc",
        required_unless_present = "voc"
    )]
    coco: Option<PathBuf>,
    /// Pascal VOC ground truth: the `Annotations` directory, or a VOC root containing it.
    #[arg(long, value_name = "DIR")]
    voc: Option<PathBuf>,
    /// VOC split: a file of image ids, or a name looked up as `ImageSets/Main/<NAME>.txt` under
    /// the VOC root (e.g. `test`). Default: every XML file.
    #[arg(long, value_name = "FILE|NAME", requires = "voc")]
    split: Option<String>,
    /// VOC class order (category ids 1..K), comma-separated. Default: names sorted.
    #[arg(long, value_delimiter = ',', requires = "voc")]
    classes: Option<Vec<String>>,
    /// How VOC xmin/ymin/xmax/ymax map to COCO boxes: `as-written` (mmdet XMLDataset, the frame
    /// models trained on VOC files predict in) or `pixel-inclusive` (devkit: x - 1, w + 1).
    #[arg(long, value_enum, default_value_t = VocCoords::AsWritten, requires = "voc")]
    voc_coords: VocCoords,
    /// Detections to score: a COCO results JSON array or anchorkit JSONL (`detect --jsonl`).
    #[arg(long, value_name = "FILE")]
    detections: PathBuf,
    /// How JSONL class ids map to GT categories: by `name`, or by `index` into the categories
    /// sorted by id.
    #[arg(long, value_enum, default_value_t = ClassMapping::Name)]
    class_map: ClassMapping,
    /// Write the 12 numbers (AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl)
    /// and per-class AP as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the evaluated detections as a COCO results JSON (input for pycocotools).
    #[arg(long, value_name = "FILE")]
    save_results: Option<PathBuf>,
    /// Write the ground truth (e.g. converted from VOC) as a COCO instances JSON.
    #[arg(long, value_name = "FILE")]
    save_gt: Option<PathBuf>,
}

/// Resolves `--voc` / `--split` to (Annotations dir, split file).
fn voc_paths(root: &Path, split: Option<&str>) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    let (ann, base) = if root.join("Annotations").is_dir() {
        (root.join("Annotations"), root.to_path_buf())
    } else {
        (
            root.to_path_buf(),
            root.parent().map(Path::to_path_buf).unwrap_or_default(),
        )
    };
    let split = match split {
        None => None,
        Some(s) if Path::new(s).is_file() => Some(PathBuf::from(s)),
        Some(s) => {
            let p = base.join("ImageSets").join("Main").join(format!("{s}.txt"));
            if !p.is_file() {
                bail!("split {s:?}: neither a file nor {}", p.display());
            }
            Some(p)
        }
    };
    Ok((ann, split))
}

/// Loads the ground truth selected by the arguments.
fn load_gt(args: &Args) -> anyhow::Result<CocoGt> {
    if let Some(c) = &args.coco {
        return Ok(coco::read_coco_gt(c)?);
    }
    let Some(root) = &args.voc else {
        bail!("one of --coco or --voc is required");
    };
    let (ann, split) = voc_paths(root, args.split.as_deref())?;
    Ok(voc::read_voc(
        &ann,
        split.as_deref(),
        args.classes.as_deref(),
        args.voc_coords,
    )?)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let gt = load_gt(&args)?;
    if let Some(p) = &args.save_gt {
        coco::write_coco_gt(p, &gt)?;
    }
    let dets = coco::read_detections(&args.detections, &gt, args.class_map)?;
    if let Some(p) = &args.save_results {
        coco::write_coco_results(p, &dets)?;
    }
    let r = cocoeval::evaluate(&gt, &dets)
        .with_context(|| format!("evaluating {}", args.detections.display()))?;
    println!(
        "{} images, {} categories, {} ground-truth boxes, {} detections evaluated",
        r.num_images,
        gt.categories.len(),
        gt.annotations.len(),
        r.num_detections
    );
    print!("{}", r.summary_text());
    println!();
    print!("{}", r.per_class_text());
    if let Some(p) = &args.json {
        coco::write_json_atomic(p, &r.to_json())?;
    }
    Ok(ExitCode::SUCCESS)
}
