//! Anchor optimizer timings on all 36,335 COCO val2017 boxes (`../shared`), mapped with the
//! mmdet keep-ratio 1333x800 rule. Targets (2 cores): IoU k-means k = 9 <= 0.5 s,
//! 1000-generation evolution <= 2 s, differential evolution <= 10 s.
//! Run: `cargo bench --bench anchors`.

use anchorkit::anchor_opt::de::{DeConfig, de};
use anchorkit::anchor_opt::evolve::{EvolveConfig, evolve};
use anchorkit::anchor_opt::kmeans::{KmeansConfig, kmeans};
use anchorkit::anchor_opt::objective::ShapeProblem;
use anchorkit::dataset::{self, InputBoxes, ReadOptions, Resize};
use criterion::{Criterion, criterion_group, criterion_main};
use std::path::Path;

const STRIDES: [u32; 5] = [8, 16, 32, 64, 128];

fn load() -> Option<(Vec<f32>, Vec<f32>)> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/coco-val2017/instances_val2017_boxes.json");
    if !p.exists() {
        eprintln!("SKIP: {} not found", p.display());
        return None;
    }
    let ds = dataset::load(&p, None, &ReadOptions::default()).ok()?;
    let (input, _) = InputBoxes::map(&ds, &Resize::default());
    Some(input.wh())
}

fn bench(c: &mut Criterion) {
    let Some((w, h)) = load() else { return };
    let free = ShapeProblem::new(w.clone(), h.clone(), None);
    let fpn = ShapeProblem::new(w, h, Some(&STRIDES));
    let mut g = c.benchmark_group("anchors_coco36k");
    g.sample_size(10);
    g.bench_function("kmeans_k9_free_8restarts", |b| {
        b.iter(|| kmeans(&free, &KmeansConfig::default()))
    });
    g.bench_function("kmeans_k9_fpn_8restarts", |b| {
        b.iter(|| kmeans(&fpn, &KmeansConfig::default()))
    });
    g.bench_function("evolve_k9_free_1000gen", |b| {
        b.iter(|| evolve(&free, &EvolveConfig::default()))
    });
    g.bench_function("evolve_k9_fpn_1000gen", |b| {
        b.iter(|| {
            evolve(
                &fpn,
                &EvolveConfig {
                    min_side: 0.25,
                    ..Default::default()
                },
            )
        })
    });
    g.bench_function("de_retinanet_3x3_fpn", |b| {
        b.iter(|| de(&fpn, &DeConfig::default()))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = bench
}
criterion_main!(benches);
