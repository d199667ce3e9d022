//! The committed INT8 models (`models/*.int8.onnx`, written by `tools.quantize`): they load with
//! their embedded spec, detect like their FP32 parents on BCCD test images, `inspect` says they
//! are quantized, and `bench --baseline` names the precisions it compares. Needs a loadable
//! libonnxruntime (the tools venv) and, for the detection check, `../shared`.

use anchorkit::detector::Detector;
use anchorkit::precision::{self, Precision};
use anchorkit::runtime::RuntimeOptions;
use anchorkit::{Detection, bench};

mod common;
use common::{RunOk, anchorkit, repo, runtime_ok, s, shared};

const TWINS: [&str; 2] = ["bccd_freeanchor_w24", "bccd_atss"];

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |x: &[f32; 4]| (x[2] - x[0]) * (x[3] - x[1]);
    inter / (area(a) + area(b) - inter)
}

/// Share of `reference` detections with score >= 0.3 that `other` matches (same class, score
/// >= 0.15, IoU >= 0.5), and their number.
fn matched(reference: &[Detection], other: &[Detection]) -> (f64, usize) {
    let confident: Vec<&Detection> = reference.iter().filter(|d| d.score >= 0.3).collect();
    let hits = confident
        .iter()
        .filter(|r| {
            other.iter().any(|o| {
                o.score >= 0.15 && o.class_id == r.class_id && iou(&o.bbox, &r.bbox) >= 0.5
            })
        })
        .count();
    (hits as f64 / confident.len().max(1) as f64, confident.len())
}

#[test]
fn committed_int8_models_load_with_their_spec_and_detect_like_fp32() {
    if !runtime_ok() {
        return;
    }
    let images: Vec<_> = ["BloodImage_00007", "BloodImage_00011", "BloodImage_00013"]
        .iter()
        .filter_map(|id| shared(&format!("data/bccd/BCCD/JPEGImages/{id}.jpg")))
        .collect();
    let opts = RuntimeOptions {
        threads: 1,
        ..RuntimeOptions::default()
    };
    for name in TWINS {
        let fp32 = repo().join(format!("models/{name}.onnx"));
        let int8 = repo().join(format!("models/{name}.int8.onnx"));
        let g = precision::read(&int8).unwrap();
        assert_eq!(g.precision(), Precision::Int8Qdq, "{name}");
        assert!(g.qdq_nodes() > 200, "{name}: {}", g.describe());
        assert!(g.count("Conv") >= 30, "{name}: {:?}", g.ops);
        assert_eq!(precision::read(&fp32).unwrap().precision(), Precision::Fp32);

        let mut a = Detector::load(&fp32, None, &opts).unwrap();
        let mut b = Detector::load(&int8, None, &opts).unwrap();
        // Same spec apart from the provenance (which records the quantization).
        let (mut sa, mut sb) = (a.spec().clone(), b.spec().clone());
        let prov = sb.provenance.take().expect("INT8 provenance");
        assert_eq!(prov["quantization"]["parent"], format!("{name}.onnx"));
        assert_eq!(prov["quantization"]["format"], "QDQ");
        sa.provenance = None;
        assert_eq!(
            serde_json::to_value(&sa).unwrap(),
            serde_json::to_value(&sb).unwrap()
        );
        let (mut hits, mut total) = (0.0, 0usize);
        for p in &images {
            let img = anchorkit::preprocess::load_image(p, true).unwrap();
            let (share, n) = matched(&a.detect(&img).unwrap(), &b.detect(&img).unwrap());
            hits += share * n as f64;
            total += n;
        }
        if !images.is_empty() {
            assert!(total >= 30, "{name}: {total} FP32 detections");
            assert!(
                hits / total as f64 >= 0.9,
                "{name}: INT8 matched {hits} of {total} FP32 detections"
            );
        }
    }
}

#[test]
fn inspect_says_quantized_and_bench_baseline_names_the_precisions() {
    if !runtime_ok() {
        return;
    }
    let int8 = repo().join("models/bccd_freeanchor_w24.int8.onnx");
    let fp32 = repo().join("models/bccd_freeanchor_w24.onnx");
    let out = anchorkit().args(["inspect", "--model", s(&int8)]).run_ok();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("precision: INT8 (QDQ): quantized, 273 QDQ nodes"),
        "{stdout}"
    );
    assert!(stdout.contains("valid for this graph"), "{stdout}");
    let out = anchorkit().args(["inspect", "--model", s(&fp32)]).run_ok();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("precision: FP32: not quantized"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("fp32.json");
    let quick = [
        "--synthetic",
        "320x240",
        "--threads",
        "1",
        "--warmup",
        "1",
        "--iters",
        "3",
        "--rounds",
        "1",
        "--no-bare",
    ];
    anchorkit()
        .args(["bench", "--model", s(&fp32)])
        .args(quick)
        .arg("--json")
        .arg(&base)
        .run_ok();
    assert_eq!(
        bench::read_report(&base).unwrap().precision.as_deref(),
        Some("FP32")
    );
    let out = anchorkit()
        .args(["bench", "--model", s(&int8)])
        .args(quick)
        .arg("--baseline")
        .arg(&base)
        .run_ok();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "precision: baseline FP32, this INT8 (QDQ): the ratios below are FP32 / INT8 (QDQ)"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("inference"), "{stdout}");
}
