//! Batched inference and shape buckets on real ONNX Runtime sessions (CPU): `detect --batch 4`
//! equals `--batch 1`, a fixed-batch graph is a clear error, `--ep cuda` fails fast from
//! `detect`, and `scripts/gpu-check.sh` degrades clearly without a GPU.

use anchorkit::Detector;
use anchorkit::preprocess;
use anchorkit::runtime::RuntimeOptions;
use anchorkit::shapes::ShapePolicy;
use std::path::PathBuf;

mod common;
use common::{RunOk, anchorkit, nanodet, repo, runtime_ok, s, shared};

/// The first `n` BCCD test images.
fn bccd_test(n: usize) -> Option<Vec<PathBuf>> {
    let root = shared("data/bccd/BCCD")?;
    let ids = std::fs::read_to_string(root.join("ImageSets/Main/test.txt")).unwrap();
    Some(
        ids.lines()
            .filter(|l| !l.trim().is_empty())
            .take(n)
            .map(|id| root.join(format!("JPEGImages/{}.jpg", id.trim())))
            .collect(),
    )
}

/// `anchorkit detect ARGS IMAGES`, which must fail with exit code 2; the output and stderr.
fn detect_fails(args: &[&str], imgs: &[PathBuf]) -> (std::process::Output, String) {
    let o = anchorkit()
        .arg("detect")
        .args(args)
        .args(imgs)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{e}");
    (o, e)
}

/// `(image, [(class, score, box)])` per JSONL line.
type Dets = Vec<(String, Vec<(u64, f64, [f64; 4])>)>;

fn read_jsonl(p: &std::path::Path) -> Dets {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let dets = v["detections"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| {
                    let b = common::bbox(d);
                    (
                        d["class_id"].as_u64().unwrap(),
                        d["score"].as_f64().unwrap(),
                        [b[0], b[1], b[2], b[3]],
                    )
                })
                .collect();
            (v["image"].as_str().unwrap().to_string(), dets)
        })
        .collect()
}

/// Same images, same number of detections, same class at every rank, boxes within `box_tol`
/// px and scores within `score_tol`; returns the largest differences seen.
fn assert_same(a: &Dets, b: &Dets, box_tol: f64, score_tol: f64) -> (f64, f64, usize) {
    assert_eq!(a.len(), b.len());
    let (mut db, mut ds, mut n) = (0f64, 0f64, 0usize);
    for ((ia, da), (ib, dbb)) in a.iter().zip(b) {
        assert_eq!(ia, ib);
        assert_eq!(da.len(), dbb.len(), "{ia}: detection count");
        for (r, (x, y)) in da.iter().zip(dbb).enumerate() {
            assert_eq!(x.0, y.0, "{ia} rank {r}: class");
            ds = ds.max((x.1 - y.1).abs());
            for k in 0..4 {
                db = db.max((x.2[k] - y.2[k]).abs());
            }
            n += 1;
        }
    }
    assert!(db <= box_tol, "box difference {db} px > {box_tol}");
    assert!(ds <= score_tol, "score difference {ds} > {score_tol}");
    (db, ds, n)
}

#[test]
fn detect_batch_4_equals_batch_1_on_bccd() {
    let Some(imgs) = bccd_test(24) else { return };
    if !runtime_ok() {
        return;
    }
    let model = repo().join("models/bccd_freeanchor_w24.onnx");
    let dir = tempfile::tempdir().unwrap();
    let mut out = vec![];
    for b in ["1", "4"] {
        let j = dir.path().join(format!("b{b}.jsonl"));
        let o = anchorkit()
            .args(["detect", "--threads", "1", "--batch", b, "--model"])
            .arg(&model)
            .arg("--jsonl")
            .arg(&j)
            .args(&imgs)
            .run_ok();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("24 images done, 0 failed"), "{err}");
        assert!(err.contains("one-time: session start"), "{err}");
        out.push(read_jsonl(&j));
    }
    let (db, ds, n) = assert_same(&out[0], &out[1], 0.01, 1e-4);
    assert!(n > 24 * 5, "only {n} detections");
    eprintln!("batch 4 vs 1: {n} detections, max box diff {db} px, max score diff {ds}");
}

/// The library's batch path groups images by padded shape: a batch mixing BCCD images with
/// crops of other aspect ratios (other padded shapes) gives each image the detections of a
/// batch-1 run.
#[test]
fn detect_batch_with_mixed_shapes_equals_one_by_one() {
    let Some(imgs) = bccd_test(3) else { return };
    if !runtime_ok() {
        return;
    }
    let model = repo().join("models/bccd_freeanchor_w24.onnx");
    let opts = RuntimeOptions {
        threads: 1,
        batch: 4,
        ..RuntimeOptions::default()
    };
    let mut det = Detector::load(&model, None, &opts).unwrap();
    assert_eq!(det.fixed_batch(), None);
    let mut images = vec![];
    for p in &imgs {
        images.push(preprocess::load_image(p, true).unwrap());
    }
    images.push(image::imageops::crop_imm(&images[0], 0, 0, 300, 480).to_image());
    images.push(image::imageops::crop_imm(&images[1], 100, 40, 500, 300).to_image());
    let refs: Vec<&image::RgbImage> = images.iter().collect();
    let batched = det.detect_batch(&refs);
    for (img, r) in images.iter().zip(batched) {
        let (meta, dets, _) = r.unwrap();
        let (meta1, one, _) = det.detect_timed(img).unwrap();
        assert_eq!(meta, meta1);
        assert_eq!(dets.len(), one.len());
        for (a, b) in dets.iter().zip(&one) {
            assert_eq!(a.class_id, b.class_id);
            assert!((a.score - b.score).abs() <= 1e-4, "{a:?} vs {b:?}");
            for k in 0..4 {
                assert!((a.bbox[k] - b.bbox[k]).abs() <= 0.01, "{a:?} vs {b:?}");
            }
        }
    }
}

/// Shape buckets on the CPU (asked for explicitly): every input is padded to its bucket,
/// box coordinates stay in original pixels, and a portrait image goes to the portrait bucket.
#[test]
fn shape_buckets_pad_to_the_bucket_on_cpu() {
    let Some(imgs) = bccd_test(1) else { return };
    if !runtime_ok() {
        return;
    }
    let model = repo().join("models/bccd_atss.onnx");
    let opts = RuntimeOptions {
        threads: 1,
        shape_buckets: ShapePolicy::Auto,
        ..RuntimeOptions::default()
    };
    let mut det = Detector::load(&model, None, &opts).unwrap();
    let b = det.buckets().expect("buckets on").clone();
    assert_eq!(b.shapes(), &[(416, 320), (320, 416)]);
    assert_eq!(det.num_sessions(), 1, "the CPU provider shares one session");
    let img = preprocess::load_image(&imgs[0], true).unwrap();
    let crop = image::imageops::crop_imm(&img, 0, 0, 200, 480).to_image();
    let (m, dets, _) = det.detect_timed(&crop).unwrap();
    assert_eq!((m.input_w, m.input_h), (320, 416));
    assert!(m.resized_w < 320, "{m:?}");
    assert!(!dets.is_empty());
    for d in &dets {
        assert!(
            d.bbox[2] <= 200.0 + 1e-3 && d.bbox[3] <= 480.0 + 1e-3,
            "{d:?}"
        );
    }
    let w = det.warm_up(1).unwrap();
    assert_eq!(
        w.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![(416, 320), (320, 416)]
    );
}

#[test]
fn fixed_batch_model_is_a_clear_error() {
    let Some((model, spec)) = nanodet(320) else {
        return;
    };
    let Some(imgs) = bccd_test(1) else { return };
    if !runtime_ok() {
        return;
    }
    let (_, e) = detect_fails(
        &["--batch", "4", "--model", s(&model), "--spec", s(&spec)],
        &imgs,
    );
    assert!(
        e.contains("fixed batch size of 1") && e.contains("nanodet-m-320.onnx"),
        "{e}"
    );
}

#[test]
fn detect_on_cuda_without_a_gpu_fails_fast() {
    let Some(imgs) = bccd_test(1) else { return };
    if !runtime_ok() {
        return;
    }
    let model = repo().join("models/bccd_freeanchor_w24.onnx");
    let t = std::time::Instant::now();
    let (o, e) = detect_fails(
        &["--ep", "cuda", "--batch", "4", "--model", s(&model)],
        &imgs,
    );
    assert!(
        e.contains("CUDAExecutionProvider") && e.contains("Not falling back to CPU"),
        "{e}"
    );
    assert!(o.stdout.is_empty(), "no detections printed");
    assert!(t.elapsed().as_secs() < 30, "took {:?}", t.elapsed());
}

/// `scripts/gpu-check.sh` on a machine without a GPU: argument errors, then the CPU parts
/// (CPU reference detections, argument handling) and a summary that says the GPU part was
/// skipped and why.
#[test]
fn gpu_check_script_degrades_without_a_gpu() {
    if !runtime_ok() {
        return;
    }
    let Some(_) = shared("data/coco-val2017/images") else {
        return;
    };
    let script = repo().join("scripts/gpu-check.sh");
    let o = std::process::Command::new("bash")
        .arg(&script)
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("usage"));
    let dir = tempfile::tempdir().unwrap();
    let o = std::process::Command::new("bash")
        .arg(&script)
        .args(["--out", s(dir.path()), "--quick", "--bin"])
        .arg(env!("CARGO_BIN_EXE_anchorkit"))
        .current_dir(repo())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    let sum = dir.path().join("gpu-check.json");
    assert!(sum.is_file(), "no summary: {err}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sum).unwrap()).unwrap();
    assert_eq!(v["gpu"], false, "{v}");
    assert!(v["skipped"].as_str().unwrap().contains("no GPU"), "{v}");
    assert_eq!(o.status.code(), Some(3), "exit 3 = no GPU: {err}");
    // the CPU parts ran: CPU reference detections and a CPU bench
    let cpu = v["cpu"].as_object().expect("cpu section");
    assert!(!cpu.is_empty(), "{v}");
    for (name, r) in cpu {
        assert!(r["ok"].as_bool().unwrap(), "{name}: {r}");
    }
}
