//! `anchorkit bench`: per-stage latency (decode, preprocess, inference, postprocess,
//! end-to-end) with HDR percentiles, throughput, one-time costs apart, bare `Session::run`
//! throughput, the execution provider verified from ONNX Runtime's profile, and ratios against
//! an earlier report (`--baseline`, e.g. `tools/bench_baseline.py --json`).

use super::RuntimeArgs;
use anchorkit::bench::{self, BenchReport, Plan, Recorder};
use anchorkit::detector::Detector;
use anchorkit::preprocess::{self, ImageMeta, Preprocessor};
use anchorkit::runtime::{self, Ep};
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Measure per-stage latency and throughput of a detector.
#[derive(clap::Args)]
pub struct Args {
    /// ONNX model (default: the project's default model, as `detect`).
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
    /// Detector spec JSON (overrides the ONNX metadata / sidecar).
    #[arg(long, value_name = "FILE")]
    spec: Option<PathBuf>,
    /// Directory of images (cycled in sorted order; files are read into memory first, so
    /// `decode` measures decoding, not disk I/O).
    #[arg(long, value_name = "DIR", conflicts_with = "synthetic")]
    images: Option<PathBuf>,
    /// A synthetic WIDTHxHEIGHT image (fixed pattern, JPEG-encoded in memory).
    #[arg(long, value_name = "WxH", default_value = "640x480")]
    synthetic: String,
    /// Refuse images of more than N pixels (decompression bombs); checked from the header,
    /// before decoding.
    #[arg(long, value_name = "N", default_value_t = anchorkit::preprocess::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
    #[command(flatten)]
    rt: RuntimeArgs,
    /// Images per `Session::run`, in the measured loop (decode and preprocess per image, one
    /// batch tensor per padded shape, post-processing per image) and in the bare-inference
    /// measurement; B > 1 needs a graph with a dynamic batch axis.
    #[arg(long, default_value_t = 1, value_name = "B")]
    batch: usize,
    /// Unmeasured iterations first (the first one is reported as a one-time cost).
    #[arg(long, default_value_t = 5, value_name = "N")]
    warmup: usize,
    /// Measured iterations.
    #[arg(
        long,
        default_value_t = 100,
        value_name = "N",
        conflicts_with = "duration"
    )]
    iters: usize,
    /// Measure for S seconds instead of a count.
    #[arg(long, value_name = "S")]
    duration: Option<f64>,
    /// Decode and preprocess the next images on worker threads while inference runs.
    #[arg(long)]
    pipeline: bool,
    /// Alternate the measured loop and the bare `Session::run` in N rounds (each gets 1/N of
    /// `--iters` or `--duration`), so that load changes on a shared machine hit both alike and
    /// the throughput ratio compares like with like; the report merges the rounds.
    #[arg(long, default_value_t = 3, value_name = "N")]
    rounds: usize,
    /// Worker threads for `--pipeline`.
    #[arg(long, default_value_t = 1, value_name = "N")]
    workers: usize,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Print ratios against an earlier JSON report (anchorkit or tools/bench_baseline.py).
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// Fail if any node ran on the CPU provider when a GPU provider was requested.
    #[arg(long)]
    strict_ep: bool,
    /// Skip the bare `Session::run` measurement.
    #[arg(long)]
    no_bare: bool,
    /// TensorRT: build FP16 engines.
    #[arg(long)]
    fp16: bool,
    /// TensorRT engine and timing cache directory (default: user cache dir/anchorkit/trt).
    #[arg(long, value_name = "DIR")]
    trt_cache: Option<PathBuf>,
}

/// Encoded image bytes held in memory.
struct Blob {
    name: PathBuf,
    bytes: Vec<u8>,
}

fn load_blobs(args: &Args) -> anyhow::Result<(Vec<Blob>, String)> {
    if let Some(dir) = &args.images {
        let rd = std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))?;
        let mut files: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                        matches!(
                            e.to_ascii_lowercase().as_str(),
                            "jpg" | "jpeg" | "png" | "bmp" | "webp" | "tif" | "tiff"
                        )
                    })
            })
            .collect();
        files.sort();
        let mut blobs = Vec::new();
        for f in files {
            // One bad file is reported and skipped; the rest go on.
            let bytes = match std::fs::read(&f) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("anchorkit: skipping {}: {e}", f.display());
                    continue;
                }
            };
            if let Err(e) = preprocess::decode_image(&bytes, &f, true) {
                eprintln!("anchorkit: skipping {e}");
                continue;
            }
            blobs.push(Blob { name: f, bytes });
        }
        if blobs.is_empty() {
            bail!("{}: no decodable images", dir.display());
        }
        let src = format!("{} ({} images)", dir.display(), blobs.len());
        return Ok((blobs, src));
    }
    let (w, h) = bench::parse_wxh(&args.synthetic)?;
    let bytes = bench::encode_jpeg(&bench::synthetic_image(w, h))?;
    Ok((
        vec![Blob {
            name: PathBuf::from(format!("synthetic_{w}x{h}.jpg")),
            bytes,
        }],
        format!("synthetic {w}x{h}"),
    ))
}

#[derive(Default)]
struct Recs {
    decode: Recorder,
    pre: Recorder,
    infer: Recorder,
    post: Recorder,
    e2e: Recorder,
}

impl Recs {
    fn merge(&mut self, o: &Recs) {
        self.decode.merge(&o.decode);
        self.pre.merge(&o.pre);
        self.infer.merge(&o.infer);
        self.post.merge(&o.post);
        self.e2e.merge(&o.e2e);
    }

    fn into_map(self) -> BTreeMap<String, bench::StageStats> {
        let mut m = BTreeMap::new();
        for (k, r) in [
            ("decode", self.decode),
            ("preprocess", self.pre),
            ("inference", self.infer),
            ("postprocess", self.post),
            ("end_to_end", self.e2e),
        ] {
            if !r.is_empty() {
                m.insert(k.to_string(), r.stats());
            }
        }
        m
    }
}

/// Result of the timed loop.
#[derive(Default)]
struct Measured {
    recs: Recs,
    n: usize,
    wall: Duration,
    first: Duration,
    detections: usize,
}

impl Measured {
    /// Adds a later round (its first-iteration time is not a one-time cost).
    fn merge(&mut self, o: Measured) {
        self.recs.merge(&o.recs);
        self.n += o.n;
        self.wall += o.wall;
        self.detections += o.detections;
    }
}

/// The timed loop on this thread with `batch` images per `Session::run`
/// ([`Detector::detect_batch`]); iterations count images.
fn sequential_batched(
    det: &mut Detector,
    blobs: &[Blob],
    plan: Plan,
    offset: usize,
    batch: usize,
) -> anyhow::Result<Measured> {
    let exif = det.spec().input.exif_orientation;
    let mut recs = Recs::default();
    let (mut first, mut detections, mut i, mut n) = (Duration::ZERO, 0usize, 0usize, 0usize);
    let (mut start, mut started) = (Instant::now(), false);
    loop {
        if i >= plan.warmup && !started {
            (start, started) = (Instant::now(), true);
        }
        if i >= plan.warmup && plan.done(n, start) {
            break;
        }
        let t0 = Instant::now();
        let mut imgs = Vec::with_capacity(batch);
        let mut dec = Vec::with_capacity(batch);
        for k in 0..batch {
            let b = &blobs[(offset + i + k) % blobs.len()];
            let t = Instant::now();
            imgs.push(preprocess::decode_image(&b.bytes, &b.name, exif)?);
            dec.push(t.elapsed());
        }
        let refs: Vec<&image::RgbImage> = imgs.iter().collect();
        let res = det.detect_batch(&refs);
        let t4 = Instant::now();
        if i == 0 {
            first = t4 - t0;
        }
        for (r, d) in res.into_iter().zip(dec) {
            let (_, dets, st) = r?;
            if i >= plan.warmup {
                recs.decode.record(d);
                recs.pre.record(st.preprocess);
                recs.infer.record(st.infer);
                recs.post.record(st.postprocess);
                recs.e2e.record((t4 - t0) / batch as u32);
                detections += dets.len();
                n += 1;
            }
        }
        i += batch;
    }
    Ok(Measured {
        recs,
        n,
        wall: start.elapsed(),
        first,
        detections,
    })
}

/// The timed loop on this thread, starting at image `offset` (cycled).
fn sequential(
    det: &mut Detector,
    blobs: &[Blob],
    plan: Plan,
    offset: usize,
) -> anyhow::Result<Measured> {
    let exif = det.spec().input.exif_orientation;
    let mut recs = Recs::default();
    let mut first = Duration::ZERO;
    let mut detections = 0usize;
    let mut i = 0usize;
    let mut n = 0usize;
    let mut start = Instant::now();
    loop {
        if i == plan.warmup {
            start = Instant::now();
        }
        if i >= plan.warmup && plan.done(n, start) {
            break;
        }
        let b = &blobs[(offset + i) % blobs.len()];
        let t0 = Instant::now();
        let img = preprocess::decode_image(&b.bytes, &b.name, exif)?;
        let t1 = Instant::now();
        // Outputs are read in place (no copy), as `detect` does.
        let (_, dets, st) = det.detect_timed(&img)?;
        let t4 = Instant::now();
        if i == 0 {
            first = t4 - t0;
        }
        if i >= plan.warmup {
            recs.decode.record(t1 - t0);
            recs.pre.record(st.preprocess);
            recs.infer.record(st.infer);
            recs.post.record(st.postprocess);
            recs.e2e.record(t4 - t0);
            detections += dets.len();
            n += 1;
        }
        i += 1;
    }
    Ok(Measured {
        recs,
        n,
        wall: start.elapsed(),
        first,
        detections,
    })
}

/// An inferred image going to the post-processing thread.
struct Inferred {
    outputs: anchorkit::detector::HeadOutputs,
    index: usize,
    measured: bool,
    t_start: Instant,
    decode: Duration,
    pre: Duration,
    infer: Duration,
}

/// A preprocessed image coming from a worker.
struct Prepared {
    tensor: Vec<f32>,
    meta: ImageMeta,
    t_start: Instant,
    decode: Duration,
    pre: Duration,
}

/// Decode + preprocess on `workers` threads (each with its own [`Preprocessor`] and recycled
/// tensor buffers), inference on this thread, post-processing of the previous image on one
/// more thread; bounded queues (2 per worker, 2 for post-processing) keep the stages just
/// ahead of / behind inference.
fn pipelined(
    det: &mut Detector,
    blobs: &[Blob],
    plan: Plan,
    workers: usize,
    offset: usize,
    batch: usize,
) -> anyhow::Result<Measured> {
    let input = det.spec().input.clone();
    let buckets = det.buckets().cloned();
    let exif = input.exif_orientation;
    let workers = workers.max(1);
    let (job_tx, job_rx) = crossbeam_channel::bounded::<usize>(workers * 2);
    let (res_tx, res_rx) = crossbeam_channel::bounded::<anyhow::Result<Prepared>>(workers * 2);
    let (buf_tx, buf_rx) = crossbeam_channel::unbounded::<Vec<f32>>();
    let stop = AtomicBool::new(false);
    let mut recs = Recs::default();
    let mut first = Duration::ZERO;
    let mut detections = 0usize;
    let mut n = 0usize;
    let mut wall = Duration::ZERO;
    let result: anyhow::Result<()> = std::thread::scope(|s| {
        let stop = &stop;
        s.spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                if job_tx.send(i).is_err() {
                    break;
                }
                i += 1;
            }
        });
        for _ in 0..workers {
            let (job_rx, res_tx, buf_rx, input, buckets) = (
                job_rx.clone(),
                res_tx.clone(),
                buf_rx.clone(),
                input.clone(),
                buckets.clone(),
            );
            s.spawn(move || {
                let mut pre = Preprocessor::with_buckets(&input, buckets);
                for i in job_rx {
                    let b = &blobs[(offset + i) % blobs.len()];
                    let t0 = Instant::now();
                    let r = (|| -> anyhow::Result<Prepared> {
                        let img = preprocess::decode_image(&b.bytes, &b.name, exif)?;
                        let t1 = Instant::now();
                        let meta = pre.run(&img)?;
                        let mut tensor = buf_rx.try_recv().unwrap_or_default();
                        tensor.clear();
                        tensor.extend_from_slice(pre.tensor());
                        Ok(Prepared {
                            tensor,
                            meta,
                            t_start: t0,
                            decode: t1 - t0,
                            pre: t1.elapsed(),
                        })
                    })();
                    if res_tx.send(r).is_err() {
                        break;
                    }
                }
            });
        }
        drop((res_tx, job_rx, buf_rx));
        // Post-processing thread: owns the head outputs of image i while the session runs
        // image i+1 (ONNX Runtime allocates fresh outputs per run; nothing is copied).
        let post = det.post_processor();
        let (post_tx, post_rx) = crossbeam_channel::bounded::<Inferred>(2);
        let post_thread = s.spawn(move || -> anyhow::Result<(Recs, Duration, usize)> {
            let mut recs = Recs::default();
            let (mut first, mut detections) = (Duration::ZERO, 0usize);
            for m in post_rx {
                let t3 = Instant::now();
                let dets = post.run(&m.outputs)?;
                let t4 = Instant::now();
                if m.index == 0 {
                    first = t4 - m.t_start;
                }
                if m.measured {
                    recs.decode.record(m.decode);
                    recs.pre.record(m.pre);
                    recs.infer.record(m.infer);
                    recs.post.record(t4 - t3);
                    recs.e2e.record(t4 - m.t_start);
                    detections += dets.len();
                }
            }
            Ok((recs, first, detections))
        });
        let mut i = 0usize;
        let (mut start, mut started) = (Instant::now(), false);
        let out = (|| -> anyhow::Result<()> {
            loop {
                if i >= plan.warmup && !started {
                    (start, started) = (Instant::now(), true);
                }
                if i >= plan.warmup && plan.done(n, start) {
                    break;
                }
                // `batch` images, one run per padded shape among them
                let mut got = Vec::with_capacity(batch);
                for _ in 0..batch {
                    got.push(res_rx.recv().context("pipeline workers stopped")??);
                }
                let mut shapes: Vec<(u32, u32)> = vec![];
                for p in &got {
                    if !shapes.contains(&(p.meta.input_w, p.meta.input_h)) {
                        shapes.push((p.meta.input_w, p.meta.input_h));
                    }
                }
                let mut runs = vec![];
                for wh in shapes {
                    let idx: Vec<usize> = (0..got.len())
                        .filter(|&k| (got[k].meta.input_w, got[k].meta.input_h) == wh)
                        .collect();
                    let tensors: Vec<&[f32]> =
                        idx.iter().map(|&k| got[k].tensor.as_slice()).collect();
                    let metas: Vec<ImageMeta> = idx.iter().map(|&k| got[k].meta).collect();
                    let (heads, dt) = if batch == 1 {
                        let (h, dt) = det.infer_owned(tensors[0], &metas[0])?;
                        (vec![h], dt)
                    } else {
                        det.infer_batch_owned(&tensors, &metas)?
                    };
                    let per = dt / idx.len() as u32;
                    runs.extend(idx.into_iter().zip(heads).map(|(k, h)| (k, h, per)));
                }
                runs.sort_by_key(|r| r.0);
                let measured = i >= plan.warmup;
                for ((k, outputs, infer), p) in runs.into_iter().zip(got) {
                    post_tx
                        .send(Inferred {
                            outputs,
                            index: i + k,
                            measured,
                            t_start: p.t_start,
                            decode: p.decode,
                            pre: p.pre,
                            infer,
                        })
                        .map_err(|_| anyhow::anyhow!("the post-processing thread stopped"))?;
                    if measured {
                        n += 1;
                    }
                    let _ = buf_tx.send(p.tensor);
                }
                i += batch;
            }
            Ok(())
        })();
        drop(post_tx);
        let post_out = post_thread
            .join()
            .map_err(|_| anyhow::anyhow!("the post-processing thread panicked"))?;
        wall = start.elapsed();
        // an error of the post-processing thread is the cause of a failed send: report it
        let out = match (out, post_out) {
            (_, Err(e)) | (Err(e), _) => Err(e),
            (Ok(()), Ok((r, f, d))) => {
                (recs, first, detections) = (r, f, d);
                Ok(())
            }
        };
        stop.store(true, Ordering::Relaxed);
        // Unblock the producer and the workers, then let them finish.
        while res_rx.recv_timeout(Duration::from_millis(200)).is_ok() {}
        drop(res_rx);
        out
    });
    result?;
    Ok(Measured {
        recs,
        n,
        wall,
        first,
        detections,
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    anchorkit::preprocess::set_max_pixels(args.max_pixels)?;
    let (model, spec_path) = super::resolve_model(args.model.as_deref(), args.spec.as_deref())?;
    if args.batch == 0 || args.workers == 0 {
        bail!("--batch and --workers must be at least 1");
    }
    let plan = Plan {
        warmup: args.warmup,
        iters: args.iters,
        duration: match args.duration {
            Some(s) if !(s > 0.0 && s.is_finite()) => bail!("--duration must be > 0 seconds"),
            Some(s) => Some(Duration::from_secs_f64(s)),
            None => None,
        },
    };
    let (rounds, note) = plan.checked_rounds(args.rounds)?;
    if let Some(n) = note {
        eprintln!("anchorkit: {n}");
    }
    // read before measuring: a bad baseline fails now, not after the run
    let baseline = args
        .baseline
        .as_deref()
        .map(bench::read_report)
        .transpose()?;
    if let Some(p) = &args.json {
        anchorkit::fsutil::check_output("--json", p, &Default::default())?;
    }
    let (blobs, source) = load_blobs(&args)?;

    let t = Instant::now();
    let rt = runtime::runtime(args.rt.ort_lib.as_deref())?;
    let lib_ms = t.elapsed().as_secs_f64() * 1e3;

    let mut opts = args.rt.options();
    opts.trt_fp16 = args.fp16;
    opts.trt_cache = args.trt_cache.clone();
    opts.batch = args.batch;
    let t = Instant::now();
    let mut det = Detector::load(&model, spec_path.as_deref(), &opts)?;
    let session_ms = t.elapsed().as_secs_f64() * 1e3;
    det.check_batch(args.batch)?;
    let opts = det.options().clone();
    if let Some([min, opt, max]) = &opts.trt_profile {
        eprintln!(
            "anchorkit: TensorRT profile min {min} opt {opt} max {max}; the first run builds the \
             engine (cached in the TensorRT cache directory)"
        );
    }
    // GPU providers: every session (one per shape bucket) pays its one-time costs here.
    let warm_ms = if opts.ep == Ep::Cpu {
        None
    } else {
        let w = det.warm_up(1)?;
        Some(w.iter().map(|(_, d)| d.as_secs_f64() * 1e3).sum::<f64>())
    };
    if let Some(b) = det.buckets() {
        eprintln!(
            "anchorkit: shape buckets {b} ({} session(s)){}",
            det.num_sessions(),
            warm_ms.map_or(String::new(), |ms| format!(", warm-up {ms:.1} ms"))
        );
    }

    // One preprocessed tensor of the first image, for the bare run and the EP profile.
    let exif = det.spec().input.exif_orientation;
    let img = preprocess::decode_image(&blobs[0].bytes, &blobs[0].name, exif)?;
    let meta = det.preprocess(&img)?;
    let tensor = det.input_tensor().to_vec();
    let hw = (meta.input_h as usize, meta.input_w as usize);
    let input_name = det.spec().input.name.clone();
    let mut bare = if args.no_bare {
        None
    } else {
        let acc = bench::BareAcc::new(&input_name, &tensor, hw, args.batch);
        Some((runtime::session(&model, &opts)?.0, acc))
    };

    // The measured loop and the bare runs alternate round by round (same load for both).
    let mut m = Measured::default();
    let mut offset = 0usize;
    for r in 0..rounds {
        let pr = plan.round(r, rounds);
        let mr = if args.pipeline {
            pipelined(&mut det, &blobs, pr, args.workers, offset, args.batch)?
        } else if args.batch > 1 {
            sequential_batched(&mut det, &blobs, pr, offset, args.batch)?
        } else {
            sequential(&mut det, &blobs, pr, offset)?
        };
        offset += pr.warmup + mr.n;
        if r == 0 {
            m = mr;
        } else {
            m.merge(mr);
        }
        if let Some((session, acc)) = &mut bare {
            acc.run(session, pr)?;
        }
    }
    let bare_run = bare.as_ref().map(|(_, acc)| acc.report());
    let profile = bench::profile_providers(&model, &opts, &input_name, &tensor, hw, 3)?;

    let mut one_time = BTreeMap::new();
    one_time.insert("library_load_ms".to_string(), lib_ms);
    one_time.insert("session_create_ms".to_string(), session_ms);
    if let Some(ms) = warm_ms {
        one_time.insert("session_warmup_ms".to_string(), ms);
    }
    one_time.insert(
        "first_iteration_ms".to_string(),
        m.first.as_secs_f64() * 1e3,
    );
    let mut machine = BTreeMap::new();
    machine.insert(
        "cpus".to_string(),
        serde_json::json!(std::thread::available_parallelism().map_or(0, |n| n.get())),
    );
    machine.insert("os".to_string(), serde_json::json!(std::env::consts::OS));
    machine.insert(
        "arch".to_string(),
        serde_json::json!(std::env::consts::ARCH),
    );
    let report = BenchReport {
        tool: format!(
            "anchorkit {} (ONNX Runtime {})",
            env!("CARGO_PKG_VERSION"),
            rt.version
        ),
        model: model.display().to_string(),
        source,
        ep: opts.ep.to_string(),
        threads: opts.threads,
        batch: args.batch,
        mode: if args.pipeline {
            format!("pipeline ({} workers)", args.workers)
        } else {
            "sequential".to_string()
        },
        warmup: plan.warmup,
        iters: m.n,
        rounds,
        one_time,
        stages: m.recs.into_map(),
        throughput_ips: m.n as f64 / m.wall.as_secs_f64().max(f64::MIN_POSITIVE),
        detections_per_image: m.detections as f64 / m.n.max(1) as f64,
        bare_run,
        ep_check: profile.shares.clone(),
        ep_elsewhere: profile.elsewhere.clone(),
        machine,
        precision: anchorkit::precision::read(&model)
            .ok()
            .map(|g| g.precision().to_string()),
    };
    print!("{}", report.table());
    if let Some(base) = &baseline {
        for w in report.baseline_mismatches(base) {
            eprintln!("warning: {w}");
        }
        print!("{}", report.compare(base));
    }
    if let Some(p) = &args.json {
        anchorkit::eval::coco::write_json_atomic(p, &report)?;
    }
    let requested = opts.ep.ort_name();
    let elsewhere = profile.describe();
    if opts.ep != Ep::Cpu && !elsewhere.is_empty() {
        eprint!("anchorkit: node runs outside {requested}:\n{elsewhere}");
    }
    profile.check(requested, args.strict_ep)?;
    Ok(ExitCode::SUCCESS)
}
