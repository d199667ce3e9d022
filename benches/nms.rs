//! Class-aware NMS of 20k clustered boxes (150 objects, 80 classes, 90% of a cluster sharing
//! its class, IoU 0.5, max_per_img 100), single thread. Target <= 0.5 ms for the fast NMS.
//! The mmcv-exact reference is timed for comparison. Seed 20261122.
//!
//! Run: `cargo bench --bench nms`

use anchorkit::nms::{batched_nms_fast, batched_nms_mmcv};
use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;

mod common;

const SEED: u64 = 20261122;

type Boxes = (Vec<[f32; 4]>, Vec<f32>, Vec<usize>);

fn clustered(n: usize, objects: usize, classes: usize) -> Boxes {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let (w, h) = (1333.0f32, 800.0f32);
    let objs: Vec<([f32; 4], usize)> = (0..objects)
        .map(|_| {
            let bw = rng.random_range(8.0..w / 3.0);
            let bh = rng.random_range(8.0..h / 3.0);
            let x = rng.random_range(0.0..w - bw);
            let y = rng.random_range(0.0..h - bh);
            ([x, y, x + bw, y + bh], rng.random_range(0..classes))
        })
        .collect();
    let (mut boxes, mut scores, mut labels) = (vec![], vec![], vec![]);
    for _ in 0..n {
        let (b, l) = objs[rng.random_range(0..objects)];
        let (bw, bh) = (b[2] - b[0], b[3] - b[1]);
        let mut j = |s: f32| rng.random_range(-0.15f32..0.15) * s;
        let x1 = (b[0] + j(bw)).clamp(0.0, w);
        let y1 = (b[1] + j(bh)).clamp(0.0, h);
        let x2 = (b[2] + j(bw)).clamp(x1, w);
        let y2 = (b[3] + j(bh)).clamp(y1, h);
        boxes.push([x1, y1, x2, y2]);
        scores.push(rng.random_range(0.05f32..1.0));
        labels.push(if rng.random_bool(0.9) {
            l
        } else {
            rng.random_range(0..classes)
        });
    }
    (boxes, scores, labels)
}

fn bench(c: &mut Criterion) {
    let (boxes, scores, labels) = clustered(20_000, 150, 80);
    let fast = batched_nms_fast(&boxes, &scores, &labels, 0.5, 100);
    let exact = batched_nms_mmcv(&boxes, &scores, &labels, 0.5);
    assert_eq!(fast, exact[..100.min(exact.len())]);
    eprintln!(
        "seed {SEED}: 20000 boxes, mmcv keeps {}, fast returns the same first {}",
        exact.len(),
        fast.len()
    );
    common::report_cpu_time("nms_fast_20k_80cls_max100", 500, || {
        batched_nms_fast(&boxes, &scores, &labels, 0.5, 100)
    });
    c.bench_function("nms_fast_20k_80cls_max100", |b| {
        b.iter(|| batched_nms_fast(black_box(&boxes), &scores, &labels, 0.5, 100))
    });
    c.bench_function("nms_fast_20k_80cls_nolimit", |b| {
        b.iter(|| batched_nms_fast(black_box(&boxes), &scores, &labels, 0.5, usize::MAX))
    });
    let (b5, s5, l5) = clustered(5_000, 100, 80);
    c.bench_function("nms_mmcv_exact_5k_80cls", |b| {
        b.iter(|| batched_nms_mmcv(black_box(&b5), &s5, &l5, 0.5))
    });
    c.bench_function("nms_fast_5k_80cls_max100", |b| {
        b.iter(|| batched_nms_fast(black_box(&b5), &s5, &l5, 0.5, 100))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).without_plots();
    targets = bench
}
criterion_main!(benches);
