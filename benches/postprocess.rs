//! Post-processing of a full FreeAnchor/RetinaNet head at 800x1344 (5 levels 100x168 .. 7x11,
//! A=9, C=80: 16.1 M logits), single thread, mmdet >= 2.18 rule (score_thr 0.05, nms_pre 1000,
//! IoU 0.5, max_per_img 100). Target <= 5 ms.
//!
//! Logits: background ~ N(-4.6, 0.4) (sigmoid ~ 0.01) plus 40 "objects", each raising ~60
//! (anchor, class) pairs around its location to U(-2.9, 3); the number of pairs above
//! logit(0.05) is printed. Seed 20261122.
//!
//! Second part, on a real model: NanoDet-m 320 (GFL head, 3 levels, 2100 points x 80 classes,
//! `../shared/models/nanodet-m-coco/`) run by ONNX Runtime on the first 24 COCO val2017 images
//! of `../shared/data/coco-val2017/images/`; post-processing alone is timed per image (200 calls
//! on each image's outputs) and averaged. Skipped with a message when the model, the images or
//! libonnxruntime are missing.
//!
//! Run: `cargo bench --bench postprocess`

use anchorkit::head::LevelOutput;
use anchorkit::postprocess::postprocess;
use anchorkit::preprocess::plan;
use anchorkit::spec::*;
use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;

mod common;

const SEED: u64 = 20261122;

fn spec() -> DetectorSpec {
    DetectorSpec {
        format: FORMAT_V1.into(),
        name: "freeanchor-bench".into(),
        classes: (0..80).map(|c| format!("c{c}")).collect(),
        input: common::mmdet_input(),
        head: HeadSpec {
            kind: HeadKind::Retina,
            layout: TensorLayout::Nchw,
            levels: [8u32, 16, 32, 64, 128]
                .iter()
                .map(|s| LevelSpec {
                    stride: *s,
                    cls: format!("cls{s}"),
                    reg: format!("reg{s}"),
                    centerness: None,
                })
                .collect(),
            priors: PriorSpec::Anchors {
                octave_base_scale: 4.0,
                scales_per_octave: 3,
                ratios: vec![0.5, 1.0, 2.0],
                center_offset: 0.0,
            },
            coder: CoderSpec::DeltaXywh {
                means: [0.0; 4],
                stds: [0.1, 0.1, 0.2, 0.2],
                wh_ratio_clip: 0.016,
                clip_border: true,
            },
            score: ScoreActivation::Sigmoid,
            centerness: false,
        },
        postprocess: PostprocessSpec {
            nms_pre: 1000,
            score_thr: 0.05,
            iou_thr: 0.5,
            max_per_img: 100,
            class_agnostic: false,
            rule: PostprocessRule::Mmdet,
            min_bbox_size: None,
        },
        provenance: None,
    }
}

fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

fn bench(c: &mut Criterion) {
    let spec = spec();
    // 2000x1200 original -> 1333x800 resized -> 1344x800 input
    let meta = plan(&spec.input, 2000, 1200);
    assert_eq!((meta.input_w, meta.input_h), (1344, 800));
    let sizes = [(100usize, 168usize), (50, 84), (25, 42), (13, 21), (7, 11)];
    let (a_n, c_n) = (9usize, 80usize);
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut cls: Vec<Vec<f32>> = Vec::new();
    let mut reg: Vec<Vec<f32>> = Vec::new();
    for &(h, w) in &sizes {
        let hw = h * w;
        let mut t: Vec<f32> = (0..a_n * c_n * hw)
            .map(|_| -4.6 + 0.4 * normal(&mut rng))
            .collect();
        for _ in 0..8 {
            // objects: a few anchors around a cell, one class
            let (y, x) = (rng.random_range(0..h), rng.random_range(0..w));
            let class = rng.random_range(0..c_n);
            for _ in 0..60 {
                let yy = (y + rng.random_range(0..3)).min(h - 1);
                let xx = (x + rng.random_range(0..3)).min(w - 1);
                let a = rng.random_range(0..a_n);
                t[((a * c_n + class) * h + yy) * w + xx] = rng.random_range(-2.9f32..3.0);
            }
        }
        cls.push(t);
        reg.push((0..a_n * 4 * hw).map(|_| 0.5 * normal(&mut rng)).collect());
    }
    let levels: Vec<LevelOutput> = (0..5)
        .map(|l| LevelOutput {
            cls: &cls[l],
            reg: &reg[l],
            centerness: None,
            h: sizes[l].0,
            w: sizes[l].1,
        })
        .collect();
    let total: usize = cls.iter().map(|v| v.len()).sum();
    let thr = anchorkit::head::raw_threshold(ScoreActivation::Sigmoid, 0.05);
    let hits: usize = cls.iter().flatten().filter(|&&v| v > thr).count();
    let dets = postprocess(&spec, &levels, &meta).unwrap();
    eprintln!(
        "seed {SEED}: {total} logits, {hits} pairs above logit(0.05) = {thr}, {} detections",
        dets.len()
    );
    // single thread: fast_image_resize (and anything else using rayon) sees one thread
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global();
    {
        common::report_cpu_time("postprocess_freeanchor_800x1344", 60, || {
            postprocess(&spec, &levels, &meta).unwrap()
        });
        c.bench_function("postprocess_freeanchor_800x1344_16.1M_logits", |b| {
            b.iter(|| postprocess(black_box(&spec), black_box(&levels), &meta).unwrap())
        });
        // the score scan alone (the memory-bound part)
        common::report_cpu_time("scan_only_16.1M_logits", 60, || {
            let mut n = 0usize;
            for t in &cls {
                anchorkit::head::select::scan_above(black_box(t), thr, |_, _| n += 1);
            }
            n
        });
        c.bench_function("scan_only_16.1M_logits", |b| {
            b.iter(|| {
                let mut n = 0usize;
                for t in &cls {
                    anchorkit::head::select::scan_above(black_box(t), thr, |_, _| n += 1);
                }
                n
            })
        });
    }
}

/// Post-processing of real NanoDet-m 320 outputs on COCO images (see the module docs).
fn bench_nanodet(c: &mut Criterion) {
    use anchorkit::detector::Detector;
    use anchorkit::runtime::RuntimeOptions;
    use std::path::Path;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("../shared/models/nanodet-m-coco/nanodet-m-320.onnx");
    let spec = root.join("models/specs/nanodet-m-320.json");
    let images = root.join("../shared/data/coco-val2017/images");
    let mut files: Vec<_> = match std::fs::read_dir(&images) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) => {
            eprintln!("nanodet post bench skipped: {}: {e}", images.display());
            return;
        }
    };
    files.sort();
    files.truncate(24);
    let rt = RuntimeOptions {
        threads: 1,
        ..RuntimeOptions::default()
    };
    let mut det = match Detector::load(&model, Some(&spec), &rt) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("nanodet post bench skipped: {e}");
            return;
        }
    };
    let mut metas = vec![];
    let (mut per_image, mut n_dets) = (vec![], 0usize);
    for f in &files {
        let img = anchorkit::preprocess::load_image(f, true).unwrap();
        let meta = det.preprocess(&img).unwrap();
        det.infer().unwrap();
        n_dets += det.postprocess(&meta).unwrap().len();
        let reps = 200u32;
        let (c0, t0) = (common::thread_cpu_ns(), std::time::Instant::now());
        for _ in 0..reps {
            black_box(det.postprocess(black_box(&meta)).unwrap());
        }
        let wall = t0.elapsed().as_secs_f64() * 1e3 / reps as f64;
        let cpu = match (c0, common::thread_cpu_ns()) {
            (Some(a), Some(b)) => (b - a) as f64 / 1e6 / reps as f64,
            _ => wall,
        };
        per_image.push((wall, cpu));
        metas.push(meta);
    }
    let n = per_image.len() as f64;
    let (wall, cpu) = per_image
        .iter()
        .fold((0.0, 0.0), |(a, b), (w, c)| (a + w / n, b + c / n));
    let mut sorted: Vec<f64> = per_image.iter().map(|p| p.1).collect();
    sorted.sort_by(f64::total_cmp);
    eprintln!(
        "postprocess_nanodet_m_320 on {} COCO images ({n_dets} detections): mean wall {wall:.4} ms, \
         mean on-CPU {cpu:.4} ms, median on-CPU {:.4} ms, max {:.4} ms",
        files.len(),
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1]
    );
    // criterion on the last image's outputs (still held by the detector)
    let meta = *metas.last().unwrap();
    c.bench_function("postprocess_nanodet_m_320_last_image", |b| {
        b.iter(|| det.postprocess(black_box(&meta)).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).without_plots();
    targets = bench, bench_nanodet
}
criterion_main!(benches);
