//! `anchorkit eval` against pycocotools (run from the tools venv): all 12 numbers and per-class
//! AP must agree to 1e-9 (the requirement is 1e-4), on deterministic synthetic detections over
//! the real COCO subset and BCCD ground truth, and on the real detectors once available.
//!
//! Needs `../shared` (data) and `tools/.venv` (pycocotools); a test skips with a message naming
//! what is missing.

use anchorkit::eval::coco::{self, Category, CocoGt, DetRecord, GtImage};
use anchorkit::eval::cocoeval::{self, STAT_NAMES};
use anchorkit::eval::voc::{self, VocCoords};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::process::Command;

const TOL: f64 = 1e-9;

mod common;
use common::{RunOk, anchorkit, repo as root, runtime_ok, s, venv_python as python};

fn shared() -> Option<PathBuf> {
    common::shared("data")?;
    Some(common::shared_root())
}

/// Runs tools/coco_eval_ref.py and returns its JSON.
fn pycocotools(py: &Path, gt: &Path, res: &Path) -> serde_json::Value {
    let out = Command::new(py)
        .arg(root().join("tools/coco_eval_ref.py"))
        .arg(gt)
        .arg(res)
        .run_ok();
    serde_json::from_slice(&out.stdout).expect("reference JSON")
}

/// Asserts equality of the 12 numbers and per-class AP between ours (JSON report layout) and
/// pycocotools'.
fn assert_same(ours: &serde_json::Value, reference: &serde_json::Value, what: &str) {
    for n in STAT_NAMES {
        let a = ours["stats"][n].as_f64().unwrap();
        let b = reference["stats"][n].as_f64().unwrap();
        assert!((a - b).abs() <= TOL, "{what}: {n} ours {a} pycocotools {b}");
    }
    let pa = ours["per_class"].as_array().unwrap();
    let pb = reference["per_class"].as_array().unwrap();
    assert_eq!(pa.len(), pb.len(), "{what}: class count");
    for (a, b) in pa.iter().zip(pb) {
        assert_eq!(a["category_id"], b["category_id"], "{what}");
        let (x, y) = (a["ap"].as_f64().unwrap(), b["ap"].as_f64().unwrap());
        assert!(
            (x - y).abs() <= TOL,
            "{what}: class {} AP ours {x} pycocotools {y}",
            a["category_id"]
        );
    }
}

/// Deterministic detections for `gt` (seeded): jittered true positives (some with the wrong
/// class, some duplicated), missed objects, random false positives of all sizes, a few images
/// with more than 100 detections of equal score (tie order at the maxDets cut), images with no
/// detections, and detections of an unknown category. Scores are quantized to 1/20 so ties are
/// everywhere.
fn synthetic_dets(gt: &CocoGt, seed: u64) -> Vec<DetRecord> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let cats: Vec<i64> = gt.categories.iter().map(|c| c.id).collect();
    let mut out = Vec::new();
    let q = |rng: &mut ChaCha8Rng| (rng.random_range(0..20) as f64) / 20.0 + 0.025;
    for (ii, im) in gt.images.iter().enumerate() {
        if ii % 23 == 5 {
            continue; // no detections on this image
        }
        let (w_img, h_img) = (im.width.max(64) as f64, im.height.max(64) as f64);
        for a in gt.annotations.iter().filter(|a| a.image_id == im.id) {
            if rng.random::<f64>() < 0.15 {
                continue; // missed
            }
            let [x, y, w, h] = a.bbox;
            let jit = |rng: &mut ChaCha8Rng, s: f64| s * rng.random_range(-0.12..0.12);
            let bb = [
                x + jit(&mut rng, w),
                y + jit(&mut rng, h),
                (w * (1.0 + rng.random_range(-0.2..0.2))).max(0.5),
                (h * (1.0 + rng.random_range(-0.2..0.2))).max(0.5),
            ];
            let category_id = if rng.random::<f64>() < 0.1 {
                cats[rng.random_range(0..cats.len())]
            } else {
                a.category_id
            };
            out.push(DetRecord {
                image_id: im.id,
                category_id,
                bbox: bb,
                score: q(&mut rng),
            });
            if rng.random::<f64>() < 0.2 {
                let d = [
                    bb[0] + jit(&mut rng, w),
                    bb[1] + jit(&mut rng, h),
                    bb[2],
                    bb[3],
                ];
                out.push(DetRecord {
                    image_id: im.id,
                    category_id,
                    bbox: d,
                    score: q(&mut rng) * 0.5,
                });
            }
        }
        let n_fp = if ii % 17 == 3 {
            130
        } else {
            rng.random_range(0..6)
        };
        // Same-category floods use one category and one score, so the 100-cut depends on order.
        let flood_cat = cats[ii % cats.len()];
        for j in 0..n_fp {
            let s = 2f64.powf(rng.random_range(1.5..8.5));
            let ar = 2f64.powf(rng.random_range(-1.5..1.5));
            let (bw, bh) = (s * ar.sqrt(), s / ar.sqrt());
            let (category_id, score) = if n_fp > 100 {
                (flood_cat, 0.3)
            } else {
                (cats[rng.random_range(0..cats.len())], q(&mut rng))
            };
            out.push(DetRecord {
                image_id: im.id,
                category_id,
                bbox: [
                    rng.random_range(0.0..w_img - 1.0),
                    rng.random_range(0.0..h_img - 1.0),
                    bw,
                    bh,
                ],
                score,
            });
            if j == 0 && ii % 11 == 0 {
                out.push(DetRecord {
                    image_id: im.id,
                    category_id: 999_999, // unknown category: not evaluated
                    bbox: [1.0, 1.0, 10.0, 10.0],
                    score: 0.99,
                });
            }
        }
    }
    out
}

/// The COCO subset with crowd regions, non-box `area` values and an unannotated extra image.
fn crowd_variant(gt: &CocoGt) -> CocoGt {
    let mut g = gt.clone();
    for (i, a) in g.annotations.iter_mut().enumerate() {
        if i % 13 == 0 {
            a.iscrowd = true;
        }
        if i % 7 == 0 {
            a.area = 0.6 * a.bbox[2] * a.bbox[3]; // like a polygon area, crosses range bounds
        }
    }
    g.images.push(GtImage {
        id: 99_999_999,
        file_name: "extra.jpg".into(),
        width: 640,
        height: 480,
    });
    g.categories.push(Category {
        id: 500,
        name: "absent".into(),
    });
    g
}

fn compare_lib(py: &Path, gt: &CocoGt, dets: &[DetRecord], what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (gp, rp) = (dir.path().join("gt.json"), dir.path().join("res.json"));
    coco::write_coco_gt(&gp, gt).unwrap();
    coco::write_coco_results(&rp, dets).unwrap();
    let ours = cocoeval::evaluate(gt, dets).unwrap();
    let reference = pycocotools(py, &gp, &rp);
    assert_same(&ours.to_json(), &reference, what);
    // Thresholds bit for bit.
    let it: Vec<f64> = serde_json::from_value(reference["iou_thrs"].clone()).unwrap();
    let rt: Vec<f64> = serde_json::from_value(reference["rec_thrs"].clone()).unwrap();
    assert_eq!(ours.params.iou_thrs, it);
    assert_eq!(ours.params.rec_thrs, rt);
}

#[test]
fn coco_subset_synthetic_detections_match_pycocotools() {
    let (Some(sh), Some(py)) = (shared(), python()) else {
        return;
    };
    let gt = coco::read_coco_gt(&sh.join("data/coco-val2017/instances_subset.json")).unwrap();
    for seed in [1u64, 2, 3] {
        let dets = synthetic_dets(&gt, seed);
        assert!(dets.len() > 1500, "generator produced {}", dets.len());
        compare_lib(&py, &gt, &dets, &format!("subset seed {seed}"));
    }
    let g2 = crowd_variant(&gt);
    let dets = synthetic_dets(&g2, 7);
    compare_lib(&py, &g2, &dets, "crowd variant seed 7");
    // Sanity: the numbers are not trivial (a broken matcher would give 0 or 1).
    let r = cocoeval::evaluate(&gt, &synthetic_dets(&gt, 1)).unwrap();
    assert!(r.stats[0] > 0.1 && r.stats[0] < 0.9, "{:?}", r.stats);
}

#[test]
fn empty_and_single_image_cases_match_pycocotools() {
    let (Some(sh), Some(py)) = (shared(), python()) else {
        return;
    };
    let gt = coco::read_coco_gt(&sh.join("data/coco-val2017/instances_subset.json")).unwrap();
    compare_lib(&py, &gt, &[], "no detections");
    let first = gt.images[0].id;
    let dets: Vec<DetRecord> = synthetic_dets(&gt, 11)
        .into_iter()
        .filter(|d| d.image_id == first)
        .collect();
    compare_lib(&py, &gt, &dets, "detections on one image only");
}

#[test]
fn cli_jsonl_input_matches_pycocotools() {
    let (Some(sh), Some(py)) = (shared(), python()) else {
        return;
    };
    let ann = sh.join("data/coco-val2017/instances_subset.json");
    let gt = coco::read_coco_gt(&ann).unwrap();
    let dets = synthetic_dets(&gt, 5);
    // As anchorkit detect writes it: one line per image, xyxy boxes, class names.
    let dir = tempfile::tempdir().unwrap();
    let names: std::collections::HashMap<i64, &str> = gt
        .categories
        .iter()
        .map(|c| (c.id, c.name.as_str()))
        .collect();
    let mut jsonl = String::new();
    for im in &gt.images {
        let ds: Vec<serde_json::Value> = dets
            .iter()
            .filter(|d| d.image_id == im.id && names.contains_key(&d.category_id))
            .map(|d| {
                let [x, y, w, h] = d.bbox;
                serde_json::json!({"bbox": [x, y, x + w, y + h], "score": d.score,
                    "class_id": 0, "class_name": names[&d.category_id]})
            })
            .collect();
        let line = serde_json::json!({"image": format!("/somewhere/images/{}", im.file_name),
            "width": im.width, "height": im.height, "detections": ds});
        jsonl.push_str(&line.to_string());
        jsonl.push('\n');
    }
    let jp = dir.path().join("dets.jsonl");
    std::fs::write(&jp, jsonl).unwrap();
    let (rp, js) = (dir.path().join("res.json"), dir.path().join("report.json"));
    let out = anchorkit()
        .args(["eval", "--coco"])
        .arg(&ann)
        .arg("--detections")
        .arg(&jp)
        .arg("--save-results")
        .arg(&rp)
        .arg("--json")
        .arg(&js)
        .run_ok();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]")
    );
    let ours: serde_json::Value = serde_json::from_slice(&std::fs::read(&js).unwrap()).unwrap();
    let reference = pycocotools(&py, &ann, &rp);
    assert_same(&ours, &reference, "CLI JSONL");
}

#[test]
fn bccd_voc_ground_truth_matches_pycocotools() {
    let (Some(sh), Some(py)) = (shared(), python()) else {
        return;
    };
    let voc_root = sh.join("data/bccd/BCCD");
    let classes: Vec<String> = ["RBC", "WBC", "Platelets"].map(String::from).to_vec();
    for coords in [VocCoords::AsWritten, VocCoords::PixelInclusive] {
        let gt = voc::read_voc(
            &voc_root.join("Annotations"),
            Some(&voc_root.join("ImageSets/Main/test.txt")),
            Some(&classes),
            coords,
        )
        .unwrap();
        assert_eq!(gt.images.len(), 72);
        let dets = synthetic_dets(&gt, 3);
        let dir = tempfile::tempdir().unwrap();
        let (rp, gp, js) = (
            dir.path().join("res.json"),
            dir.path().join("gt.json"),
            dir.path().join("report.json"),
        );
        coco::write_coco_results(&rp, &dets).unwrap();
        let coords_arg = match coords {
            VocCoords::AsWritten => "as-written",
            VocCoords::PixelInclusive => "pixel-inclusive",
        };
        anchorkit()
            .args(["eval", "--voc"])
            .arg(&voc_root)
            .args([
                "--split",
                "test",
                "--classes",
                "RBC,WBC,Platelets",
                "--voc-coords",
            ])
            .arg(coords_arg)
            .arg("--detections")
            .arg(&rp)
            .arg("--save-gt")
            .arg(&gp)
            .arg("--json")
            .arg(&js)
            .run_ok();
        let ours: serde_json::Value = serde_json::from_slice(&std::fs::read(&js).unwrap()).unwrap();
        let reference = pycocotools(&py, &gp, &rp);
        assert_same(&ours, &reference, &format!("BCCD test {coords_arg}"));
        let ap = ours["stats"]["AP"].as_f64().unwrap();
        assert!(ap > 0.05 && ap < 0.95, "AP {ap}");
    }
}

#[test]
fn eval_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let gt = dir.path().join("gt.json");
    std::fs::write(&gt, "{\"images\": [], \"categories\": 3}").unwrap();
    let eval = |gt: &Path| {
        anchorkit()
            .args(["eval", "--coco"])
            .arg(gt)
            .args(["--detections", "/dev/null"])
            .output()
            .unwrap()
    };
    let out = eval(&gt);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("gt.json") && err.contains("not a COCO instances file"),
        "{err}"
    );
    let out = eval(&dir.path().join("missing.json"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.json"));
}

/// Runs `anchorkit eval` with the `(option, value)` pairs, returns the JSON report and the saved
/// results path.
fn eval_cli(opts: &[(&str, &str)], dir: &Path) -> (serde_json::Value, PathBuf) {
    let (rp, js) = (dir.join("res.json"), dir.join("report.json"));
    anchorkit()
        .arg("eval")
        .args(opts.iter().flat_map(|&(k, v)| [k, v]))
        .arg("--save-results")
        .arg(&rp)
        .arg("--json")
        .arg(&js)
        .run_ok();
    let v = serde_json::from_slice(&std::fs::read(&js).unwrap()).unwrap();
    (v, rp)
}

#[test]
fn nanodet_on_coco_subset_matches_pycocotools() {
    let (Some(sh), Some(py)) = (shared(), python()) else {
        return;
    };
    if !runtime_ok() {
        return;
    }
    let ann = sh.join("data/coco-val2017/instances_subset.json");
    let model = sh.join("models/nanodet-m-coco/nanodet-m-320.onnx");
    let spec = root().join("models/specs/nanodet-m-320.json");
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("dets.jsonl");
    let (ours, rp) = eval_cli(
        &[
            ("--coco", s(&ann)),
            ("--model", s(&model)),
            ("--spec", s(&spec)),
            ("--images", s(&sh.join("data/coco-val2017/images"))),
            ("--jsonl", s(&jsonl)),
        ],
        dir.path(),
    );
    let reference = pycocotools(&py, &ann, &rp);
    assert_same(&ours, &reference, "NanoDet-m 320 on the COCO subset");
    // NanoDet-m 320 has 20.6 AP on val2017; the 198-image subset is close to that.
    let ap = ours["stats"]["AP"].as_f64().unwrap();
    assert!((0.12..0.35).contains(&ap), "AP {ap}");
    // Scoring the JSONL written on the way gives the same numbers (f32 boxes round-trip).
    let dir2 = tempfile::tempdir().unwrap();
    let (again, _) = eval_cli(
        &[("--coco", s(&ann)), ("--detections", s(&jsonl))],
        dir2.path(),
    );
    for n in STAT_NAMES {
        let (a, b) = (
            ours["stats"][n].as_f64().unwrap(),
            again["stats"][n].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 1e-4, "{n}: model run {a} vs its JSONL {b}");
    }
}

#[test]
fn bccd_models_on_test_split_match_pycocotools() {
    let (Some(sh), Some(py)) = (shared(), python()) else {
        return;
    };
    if !runtime_ok() {
        return;
    }
    let mut models: Vec<PathBuf> = glob::glob(&root().join("models/bccd_*.onnx").to_string_lossy())
        .unwrap()
        .flatten()
        .collect();
    models.sort();
    if models.is_empty() {
        common::skip("no models/bccd_*.onnx yet");
        return;
    }
    let voc = sh.join("data/bccd/BCCD");
    for m in models {
        let dir = tempfile::tempdir().unwrap();
        let gp = dir.path().join("gt.json");
        let (ours, rp) = eval_cli(
            &[
                ("--voc", s(&voc)),
                ("--split", "test"),
                ("--model", s(&m)),
                ("--images", s(&voc.join("JPEGImages"))),
                ("--save-gt", s(&gp)),
            ],
            dir.path(),
        );
        let reference = pycocotools(&py, &gp, &rp);
        assert_same(&ours, &reference, &m.display().to_string());
        let ap50 = ours["stats"]["AP50"].as_f64().unwrap();
        assert!(ap50 > 0.5, "{}: AP50 {ap50}", m.display());
        eprintln!(
            "{}: AP {:.4} AP50 {ap50:.4}",
            m.display(),
            ours["stats"]["AP"]
        );
    }
}
