//! `anchorkit eval`: COCO AP/AR identical to pycocotools, on COCO JSON or VOC XML ground truth,
//! for an existing detections file (COCO results JSON or anchorkit JSONL) or for a model run on
//! the ground truth's images.

use super::RuntimeArgs;
use anchorkit::detector::Detector;
use anchorkit::eval::coco::{self, ClassMapping, CocoGt, DetRecord};
use anchorkit::eval::cocoeval;
use anchorkit::eval::voc::{self, VocCoords};
use anchorkit::output;
use anchorkit::preprocess;
use anyhow::{Context, bail};
use std::collections::HashMap;
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
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "model",
        conflicts_with = "model"
    )]
    detections: Option<PathBuf>,
    /// Run this model on the ground truth's images instead (needs --images).
    #[arg(long, value_name = "PATH", requires = "images")]
    model: Option<PathBuf>,
    /// Detector spec JSON for --model (overrides the ONNX metadata / sidecar).
    #[arg(long, value_name = "FILE", requires = "model")]
    spec: Option<PathBuf>,
    /// Directory holding the ground truth's images (`file_name` relative to it).
    #[arg(long, value_name = "DIR", requires = "model")]
    images: Option<PathBuf>,
    /// With --model: also write the detections as anchorkit JSONL.
    #[arg(long, value_name = "FILE", requires = "model")]
    jsonl: Option<PathBuf>,
    /// With --model: override the spec's score threshold.
    #[arg(long, value_name = "T", requires = "model")]
    score_thr: Option<f32>,
    /// Refuse images of more than N pixels (decompression bombs); checked from the header,
    /// before decoding.
    #[arg(long, value_name = "N", default_value_t = anchorkit::preprocess::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
    #[command(flatten)]
    rt: RuntimeArgs,
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

/// Loads the ground truth selected by the arguments; `model_classes` is the VOC class order
/// when --classes is absent.
fn load_gt(args: &Args, model_classes: Option<&[String]>) -> anyhow::Result<CocoGt> {
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
        args.classes.as_deref().or(model_classes),
        args.voc_coords,
    )?)
}

/// Maps model class indices to GT category ids: by name when every class name is a category
/// name, else by position in ascending category id order (mmdet's convention) when the counts
/// agree, or as `--class-map index` asks.
fn class_to_category(
    classes: &[String],
    gt: &CocoGt,
    mapping: ClassMapping,
) -> anyhow::Result<Vec<i64>> {
    let mut sorted: Vec<i64> = gt.categories.iter().map(|c| c.id).collect();
    sorted.sort_unstable();
    let by_name: HashMap<&str, i64> = gt
        .categories
        .iter()
        .map(|c| (c.name.as_str(), c.id))
        .collect();
    if mapping == ClassMapping::Name
        && let Some(v) = classes
            .iter()
            .map(|c| by_name.get(c.as_str()).copied())
            .collect::<Option<Vec<i64>>>()
    {
        return Ok(v);
    }
    if sorted.len() == classes.len() {
        return Ok(sorted);
    }
    bail!(
        "cannot map the model's {} classes onto the ground truth's {} categories (names differ)",
        classes.len(),
        sorted.len()
    )
}

/// Runs the detector on every ground-truth image; a missing or undecodable image is reported
/// and counts as an image without detections. Returns the records and the number of failures.
fn detect_all(
    args: &Args,
    det: &mut Detector,
    gt: &CocoGt,
    model: &Path,
) -> anyhow::Result<(Vec<DetRecord>, usize)> {
    let dir = args.images.as_deref().unwrap_or(Path::new("."));
    let classes = det.spec().classes.clone();
    let cat_of = class_to_category(&classes, gt, args.class_map)?;
    let exif = det.spec().input.exif_orientation;
    let mut images: Vec<_> = gt.images.iter().collect();
    images.sort_by_key(|i| i.id);
    let mut out = Vec::new();
    let mut lines = String::new();
    let mut failed = 0usize;
    let t = std::time::Instant::now();
    for (k, im) in images.iter().enumerate() {
        let path = dir.join(&im.file_name);
        let r = preprocess::load_image(&path, exif).and_then(|img| {
            let d = det.detect(&img)?;
            Ok((img.width(), img.height(), d))
        });
        let (w, h, dets) = match r {
            Ok(v) => v,
            Err(e) => {
                eprintln!("anchorkit: {e}");
                failed += 1;
                continue;
            }
        };
        for d in &dets {
            let Some(&category_id) = cat_of.get(d.class_id) else {
                continue;
            };
            // mmdet xyxy2xywh on `bbox.tolist()`: widen to f64, then subtract.
            let [x1, y1, x2, y2] = d.bbox.map(f64::from);
            out.push(DetRecord {
                image_id: im.id,
                category_id,
                bbox: [x1, y1, x2 - x1, y2 - y1],
                score: f64::from(d.score),
            });
        }
        if args.jsonl.is_some() {
            let rec = output::ImageRecord {
                image: path.clone(),
                width: w,
                height: h,
                detections: dets,
            };
            lines.push_str(&output::jsonl_line(&rec, &classes));
            lines.push('\n');
        }
        if (k + 1) % 50 == 0 {
            eprintln!(
                "anchorkit: {}/{} images ({:.1} s)",
                k + 1,
                images.len(),
                t.elapsed().as_secs_f64()
            );
        }
    }
    if let Some(p) = &args.jsonl {
        output::write_atomic(p, lines.as_bytes())?;
    }
    eprintln!(
        "anchorkit: {} ran on {} images in {:.1} s",
        model.display(),
        images.len() - failed,
        t.elapsed().as_secs_f64()
    );
    Ok((out, failed))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    anchorkit::preprocess::set_max_pixels(args.max_pixels)?;
    let mut detector = match &args.model {
        Some(m) => {
            let mut d = Detector::load(m, args.spec.as_deref(), &args.rt.options())?;
            if let Some(t) = args.score_thr {
                d.set_score_thr(t)?;
            }
            Some(d)
        }
        None => None,
    };
    let gt = load_gt(
        &args,
        detector.as_ref().map(|d| d.spec().classes.as_slice()),
    )?;
    if let Some(p) = &args.save_gt {
        coco::write_coco_gt(p, &gt)?;
    }
    let (dets, failed, what) = match (&mut detector, &args.detections, &args.model) {
        (Some(d), _, Some(m)) => {
            let (dets, failed) = detect_all(&args, d, &gt, m)?;
            (dets, failed, m.display().to_string())
        }
        (_, Some(f), _) => (
            coco::read_detections(f, &gt, args.class_map)?,
            0,
            f.display().to_string(),
        ),
        _ => bail!("one of --detections or --model is required"),
    };
    if let Some(p) = &args.save_results {
        coco::write_coco_results(p, &dets)?;
    }
    let r = cocoeval::evaluate(&gt, &dets).with_context(|| format!("evaluating {what}"))?;
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
    if failed > 0 {
        eprintln!(
            "anchorkit: {failed} images could not be read; they count as images without detections"
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
