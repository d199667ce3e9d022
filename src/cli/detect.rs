//! `anchorkit detect`: run a detector on files, directories and globs; write JSONL / CSV / COCO
//! results / annotated images, or print a summary. A bad image is reported and skipped; the exit
//! code is 1 if any input failed, 130 when interrupted (the results done so far are written).

use super::RuntimeArgs;
use anchorkit::Detector;
use anchorkit::output::{self, AtomicWriter, CocoIds, ImageRecord};
use anchorkit::preprocess;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// File extensions taken from directories (case-insensitive).
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff", "gif", "pnm", "ppm", "pgm", "pbm",
];

#[derive(clap::Args)]
pub struct Args {
    /// ONNX model (default: models/bccd_*.onnx, else NanoDet-m from ../shared).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Detector spec JSON (default: the model's ONNX metadata, else a sidecar `<model>.json`).
    #[arg(long, value_name = "JSON")]
    pub spec: Option<PathBuf>,
    /// Override the spec's score threshold (0 <= X < 1).
    #[arg(long, value_name = "X")]
    pub score_thr: Option<f32>,
    /// Write one JSON line per image to FILE (otherwise a summary goes to stdout).
    #[arg(long, value_name = "FILE")]
    pub jsonl: Option<PathBuf>,
    /// Write one CSV row per detection to FILE.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Write COCO results JSON ([{image_id, category_id, bbox: [x, y, w, h], score}]) to FILE;
    /// needs --coco-gt for the ids.
    #[arg(long, value_name = "FILE", requires = "coco_gt")]
    pub coco_results: Option<PathBuf>,
    /// COCO annotation file giving image ids (by file name) and category ids.
    #[arg(long, value_name = "JSON", requires = "coco_results")]
    pub coco_gt: Option<PathBuf>,
    /// Write annotated copies of the images (boxes, class names, scores) into DIR.
    #[arg(long, value_name = "DIR")]
    pub draw: Option<PathBuf>,
    /// Debug: write each network input as DIR/<stem>.npy (float32 [1,3,H,W]) plus
    /// DIR/<stem>.meta.json, to feed the Python reference the identical tensor.
    #[arg(long, value_name = "DIR", hide = true)]
    pub dump_input: Option<PathBuf>,
    /// Refuse images of more than N pixels (decompression bombs); checked from the header,
    /// before decoding.
    #[arg(long, value_name = "N", default_value_t = preprocess::DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Images per `Session::run` (images of one padded shape run together; needs a graph with
    /// a dynamic batch axis when > 1).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub batch: usize,
    /// Unmeasured warm-up runs of every session before the first image (reported as a
    /// one-time cost). Default: 1 on GPU providers, 0 on the CPU.
    #[arg(long, value_name = "N")]
    pub warmup: Option<usize>,
    /// Images: files, directories (images by extension, sorted) or glob patterns.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<String>,
}

/// An input entry: a path to process, or a pattern / directory that yielded an error.
enum Item {
    Path(PathBuf),
    Bad(String, String),
}

fn is_image_ext(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Expands INPUT arguments: directories (image extensions, sorted), existing files as is, glob
/// patterns (sorted matches), and anything else kept as a path so it is reported as missing.
fn expand(inputs: &[String]) -> Vec<Item> {
    let mut v = vec![];
    for a in inputs {
        let p = Path::new(a);
        if p.is_dir() {
            match std::fs::read_dir(p) {
                Ok(rd) => {
                    let mut files: Vec<PathBuf> = rd
                        .flatten()
                        .map(|e| e.path())
                        .filter(|f| f.is_file() && is_image_ext(f))
                        .collect();
                    files.sort();
                    if files.is_empty() {
                        v.push(Item::Bad(a.clone(), "directory contains no images".into()));
                    }
                    v.extend(files.into_iter().map(Item::Path));
                }
                Err(e) => v.push(Item::Bad(a.clone(), format!("cannot list directory: {e}"))),
            }
        } else if p.exists() || !a.contains(['*', '?', '[']) {
            v.push(Item::Path(p.to_path_buf()));
        } else {
            match glob::glob(a) {
                Ok(g) => {
                    let mut m: Vec<PathBuf> = g.flatten().filter(|f| f.is_file()).collect();
                    m.sort();
                    if m.is_empty() {
                        v.push(Item::Bad(a.clone(), "pattern matches no file".into()));
                    }
                    v.extend(m.into_iter().map(Item::Path));
                }
                Err(e) => v.push(Item::Bad(a.clone(), format!("bad glob pattern: {e}"))),
            }
        }
    }
    v
}

/// Per-stage wall time totals.
#[derive(Default)]
struct Times {
    decode: Duration,
    pre: Duration,
    infer: Duration,
    post: Duration,
    n: u32,
}

fn ms(d: Duration, n: u32) -> f64 {
    d.as_secs_f64() * 1e3 / n.max(1) as f64
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    preprocess::set_max_pixels(args.max_pixels)?;
    // every output is checked before the model loads: never after the work, never an input
    let items = expand(&args.inputs);
    let draw_dests = {
        let inputs: Vec<PathBuf> = items
            .iter()
            .filter_map(|i| match i {
                Item::Path(p) => Some(p.clone()),
                Item::Bad(..) => None,
            })
            .collect();
        let files: Vec<(&str, &Path)> = [
            ("--jsonl", &args.jsonl),
            ("--csv", &args.csv),
            ("--coco-results", &args.coco_results),
        ]
        .into_iter()
        .filter_map(|(f, p)| p.as_deref().map(|p| (f, p)))
        .collect();
        output::check_detect_outputs(&files, args.draw.as_deref(), &inputs)?
    };
    let (model, spec) = super::resolve_model(args.model.as_deref(), args.spec.as_deref())?;
    let batch = args.batch;
    if batch == 0 {
        anyhow::bail!("--batch must be at least 1");
    }
    if batch > 1 && args.dump_input.is_some() {
        anyhow::bail!("--dump-input needs --batch 1");
    }
    let mut opts = args.runtime.options();
    opts.batch = batch;
    let mut det = Detector::load(&model, spec.as_deref(), &opts)?;
    det.check_batch(batch)?;
    let warmup = args
        .warmup
        .unwrap_or(usize::from(det.options().ep != anchorkit::runtime::Ep::Cpu));
    let warm: Duration = det.warm_up(warmup)?.iter().map(|(_, d)| *d).sum();
    if let Some(t) = args.score_thr {
        det.set_score_thr(t)?;
    }
    let classes = det.spec().classes.clone();
    let exif = det.spec().input.exif_orientation;

    for d in [&args.draw, &args.dump_input].into_iter().flatten() {
        std::fs::create_dir_all(d)
            .with_context(|| format!("{}: cannot create directory", d.display()))?;
    }
    let coco_ids = match &args.coco_gt {
        Some(p) => Some(CocoIds::from_instances(p, &classes)?),
        None => None,
    };
    let mut jsonl = args
        .jsonl
        .as_deref()
        .map(AtomicWriter::create)
        .transpose()?;
    let mut csv = args.csv.as_deref().map(AtomicWriter::create).transpose()?;
    if let Some(w) = csv.as_mut() {
        w.write_all(output::CSV_HEADER.as_bytes())?;
    }
    let mut coco: Vec<output::CocoResult> = vec![];

    let n_paths = items.iter().filter(|i| matches!(i, Item::Path(_))).count();
    let pb = if items.len() > 1 {
        let pb = ProgressBar::new(n_paths as u64);
        pb.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} images [{elapsed_precise}<{eta_precise}] {msg}",
            )
            .expect("valid template"),
        );
        pb
    } else {
        ProgressBar::hidden()
    };
    let mut failed = 0usize;
    let report = |pb: &ProgressBar, what: &str, msg: &str| {
        pb.suspend(|| eprintln!("error: {what}: {msg}"));
    };

    // Decode on a helper thread, one image ahead of inference.
    let paths: Vec<PathBuf> = items
        .iter()
        .filter_map(|i| match i {
            Item::Path(p) => Some(p.clone()),
            Item::Bad(..) => None,
        })
        .collect();
    for i in &items {
        if let Item::Bad(a, m) = i {
            failed += 1;
            report(&pb, a, m);
        }
    }
    let (tx, rx) = crossbeam_channel::bounded(2);
    let decoder = std::thread::spawn(move || {
        for p in paths {
            let t = Instant::now();
            let r = preprocess::load_image(&p, exif);
            if tx.send((p, r, t.elapsed())).is_err() {
                break;
            }
        }
    });
    let mut times = Times::default();
    // the first run (its images) is a one-time cost, kept apart from the per-image figures
    let mut first = Times::default();
    let wall = Instant::now();
    let stdout = std::io::stdout();
    anchorkit::fsutil::interrupt::set_cooperative(true);
    loop {
        if anchorkit::fsutil::interrupt::interrupted() {
            break;
        }
        let chunk: Vec<_> = rx.iter().take(batch).collect();
        if chunk.is_empty() {
            break;
        }
        let mut decoded = vec![];
        for (path, img, t_dec) in chunk {
            pb.inc(1);
            match img {
                Ok(i) => decoded.push((path, i, t_dec)),
                Err(e) => {
                    failed += 1;
                    report(
                        &pb,
                        &path.display().to_string(),
                        &e.to_string().replace(&format!("{}: ", path.display()), ""),
                    );
                }
            }
        }
        let results = if batch == 1 {
            decoded
                .iter()
                .map(|(_, i, _)| det.detect_timed(i))
                .collect()
        } else {
            det.detect_batch(&decoded.iter().map(|(_, i, _)| i).collect::<Vec<_>>())
        };
        let tally = if first.n == 0 { &mut first } else { &mut times };
        let mut done = vec![];
        for ((path, img, t_dec), r) in decoded.into_iter().zip(results) {
            match r {
                Ok((meta, dets, st)) => {
                    tally.decode += t_dec;
                    tally.pre += st.preprocess;
                    tally.infer += st.infer;
                    tally.post += st.postprocess;
                    tally.n += 1;
                    done.push((path, img, meta, dets));
                }
                Err(e) => {
                    failed += 1;
                    report(&pb, &path.display().to_string(), &e.to_string());
                }
            }
        }
        for (path, img, meta, dets) in done {
            let rec = ImageRecord {
                image: path.clone(),
                width: img.width(),
                height: img.height(),
                detections: dets,
            };
            if let Some(dir) = &args.dump_input {
                let stem = path
                    .file_stem()
                    .map_or("image".into(), |s| s.to_string_lossy().into_owned());
                let shape = [1, 3, meta.input_h as usize, meta.input_w as usize];
                output::write_npy_f32(
                    &dir.join(format!("{stem}.npy")),
                    &shape,
                    det.input_tensor(),
                )?;
                output::write_atomic(
                    &dir.join(format!("{stem}.meta.json")),
                    serde_json::to_string_pretty(&meta)?.as_bytes(),
                )?;
            }
            if let Some(w) = jsonl.as_mut() {
                writeln!(w, "{}", output::jsonl_line(&rec, &classes))
                    .with_context(|| format!("{}: write failed", w.dest().display()))?;
            } else {
                let s = output::summary(&rec, &classes, 10);
                pb.suspend(|| {
                    let mut o = stdout.lock();
                    let _ = o.write_all(s.as_bytes());
                });
            }
            if let Some(w) = csv.as_mut() {
                w.write_all(output::csv_rows(&rec, &classes).as_bytes())?;
            }
            if let Some(ids) = &coco_ids {
                match ids.results(&rec) {
                    Ok(r) => coco.extend(r),
                    Err(e) => {
                        failed += 1;
                        report(&pb, &path.display().to_string(), &e.to_string());
                    }
                }
            }
            if let Some(dest) = draw_dests.get(&path)
                && let Err(e) =
                    output::save_image(dest, &output::draw(&img, &rec.detections, &classes))
            {
                failed += 1;
                report(&pb, &path.display().to_string(), &e.to_string());
            }
        }
    }
    let interrupted = anchorkit::fsutil::interrupt::interrupted();
    // a decoder blocked on a full channel ends when the receiver is gone (after an interrupt)
    drop(rx);
    let _ = decoder.join();
    pb.finish_and_clear();
    let wall = wall.elapsed();
    if let Some(w) = jsonl {
        w.commit()?;
    }
    if let Some(w) = csv {
        w.commit()?;
    }
    if let Some(p) = &args.coco_results {
        output::write_atomic(p, serde_json::to_string(&coco)?.as_bytes())?;
    }
    let n = times.n + first.n;
    // per-image figures leave out the first run, unless it was the only one
    let only_first = times.n == 0;
    let per = if only_first { &first } else { &times };
    eprintln!(
        "one-time: session start {:.1} ms ({} session{}{}), warm-up {} run{} {:.1} ms, first run \
         {:.1} ms inference ({} image{}{})",
        det.load_time().as_secs_f64() * 1e3,
        det.num_sessions(),
        if det.num_sessions() == 1 { "" } else { "s" },
        det.buckets()
            .map_or(String::new(), |b| format!(", shape buckets {b}")),
        warmup,
        if warmup == 1 { "" } else { "s" },
        warm.as_secs_f64() * 1e3,
        first.infer.as_secs_f64() * 1e3,
        first.n,
        if first.n == 1 { "" } else { "s" },
        if only_first {
            "; the only run, so the per-image figures include it"
        } else {
            ", not in the per-image figures"
        }
    );
    let m = per.n;
    eprintln!(
        "{n} image{} done, {failed} failed, {:.2} s ({:.1} ms/image wall; per image: decode {:.1} ms, \
         preprocess {:.1} ms, inference {:.1} ms, postprocess {:.2} ms; EP {}, threads {})",
        if n == 1 { "" } else { "s" },
        wall.as_secs_f64(),
        ms(wall, n),
        ms(per.decode, m),
        ms(per.pre, m),
        ms(per.infer, m),
        ms(per.post, m),
        det.options().ep,
        if det.options().threads == 0 {
            "default".to_string()
        } else {
            det.options().threads.to_string()
        }
    );
    Ok(if interrupted {
        eprintln!(
            "anchorkit: interrupted after {n} image{}; the results written are complete for those",
            if n == 1 { "" } else { "s" }
        );
        ExitCode::from(anchorkit::fsutil::interrupt::EXIT_CODE)
    } else if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
