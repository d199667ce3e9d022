//! Post-processing of a full FreeAnchor/RetinaNet head at 800x1344 (5 levels 100x168 .. 7x11,
//! A=9, C=80: 16.1 M logits), single thread, mmdet >= 2.18 rule (score_thr 0.05, nms_pre 1000,
//! IoU 0.5, max_per_img 100). Target <= 5 ms.
//!
//! Logits: background ~ N(-4.6, 0.4) (sigmoid ~ 0.01) plus 40 "objects", each raising ~60
//! (anchor, class) pairs around its location to U(-2.9, 3); the number of pairs above
//! logit(0.05) is printed. Seed 20261122.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-release cargo bench --bench postprocess`

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

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).without_plots();
    targets = bench
}
criterion_main!(benches);
