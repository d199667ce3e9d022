//! End-to-end tests of the `anchorkit` binary on real models and images from `../shared`
//! (skipped with a message when `../shared` is absent): detect / inspect, bad inputs, spec
//! errors, GPU execution providers that cannot register.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{repo, s};

fn shared() -> Option<PathBuf> {
    common::shared("models/nanodet-m-coco/nanodet-m-320.onnx")?;
    Some(common::shared_root())
}

fn nanodet320(shared: &Path) -> (PathBuf, PathBuf) {
    (
        shared.join("models/nanodet-m-coco/nanodet-m-320.onnx"),
        repo().join("models/specs/nanodet-m-320.json"),
    )
}

fn anchorkit(args: &[&str]) -> Output {
    common::anchorkit()
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run anchorkit")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn inspect_lists_graph_and_validates_spec() {
    let Some(sh) = shared() else { return };
    let (m, spec) = nanodet320(&sh);
    let o = anchorkit(&["inspect", "--model", s(&m), "--spec", s(&spec)]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.contains("image  f32  [1, 3, 320, 320]"), "{out}");
    assert!(
        out.contains("bbox_pred0  f32  [400, 80]") && out.contains("stride 16 class scores"),
        "{out}"
    );
    assert!(
        out.contains("valid for this graph") && out.contains("CPUExecutionProvider"),
        "{out}"
    );
    // 416 export: weights listed as graph inputs, outputs with a batch dim.
    let m416 = sh.join("models/nanodet-m-coco/nanodet-m-416.onnx");
    let spec416 = repo().join("models/specs/nanodet-m-416.json");
    let o = anchorkit(&["inspect", "--model", s(&m416), "--spec", s(&spec416)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("792  f32  [1, 2704, 80]"));
}

#[test]
fn model_without_spec_is_a_clear_error() {
    let Some(sh) = shared() else { return };
    let (m, _) = nanodet320(&sh);
    for cmd in ["inspect", "detect"] {
        let o = anchorkit(
            &[cmd, "--model", s(&m), "samples/blood_smear.jpg"]
                [..if cmd == "detect" { 4 } else { 3 }],
        );
        let e = stderr(&o);
        assert!(!o.status.success(), "{cmd}: {e}");
        assert!(
            e.contains("nanodet-m-320.onnx")
                && e.contains("has no detector spec")
                && e.contains("--spec PATH"),
            "{cmd}: {e}"
        );
    }
}

fn spec_variant(edit: impl Fn(&mut serde_json::Value)) -> tempfile::NamedTempFile {
    let text = std::fs::read_to_string(repo().join("models/specs/nanodet-m-320.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut v);
    let f = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
    std::fs::write(f.path(), serde_json::to_string(&v).unwrap()).unwrap();
    f
}

#[test]
fn spec_disagreeing_with_graph_is_a_clear_error() {
    let Some(sh) = shared() else { return };
    let (m, _) = nanodet320(&sh);
    let cases: Vec<(tempfile::NamedTempFile, Vec<&str>)> = vec![
        (
            spec_variant(|v| {
                v["classes"].as_array_mut().unwrap().pop();
            }),
            vec!["\"cls_score0\"", "C = 79 classes", "found [1600, 80]"],
        ),
        (
            spec_variant(|v| v["head"]["levels"][1]["reg"] = "bbox_pred_16".into()),
            vec![
                "\"bbox_pred_16\" is not a graph output",
                "cls_score2 [400, 32]",
            ],
        ),
        (
            spec_variant(|v| v["input"]["name"] = "input".into()),
            vec!["\"input\" is not a graph input", "image [1, 3, 320, 320]"],
        ),
        (
            spec_variant(|v| v["head"]["coder"]["reg_max"] = 15.into()),
            vec!["\"bbox_pred1\"", "4*(reg_max+1) = 64", "found [1600, 32]"],
        ),
    ];
    for (f, needles) in cases {
        let o = anchorkit(&[
            "detect",
            "--model",
            s(&m),
            "--spec",
            s(f.path()),
            "samples/blood_smear.jpg",
        ]);
        let e = stderr(&o);
        assert!(!o.status.success(), "{e}");
        assert!(e.contains(s(f.path())), "names the spec file: {e}");
        for n in needles {
            assert!(e.contains(n), "missing {n:?} in: {e}");
        }
    }
}

#[test]
fn gpu_eps_with_cpu_only_library_fail_without_cpu_run() {
    let Some(sh) = shared() else { return };
    let (m, spec) = nanodet320(&sh);
    for (ep, name) in [
        ("cuda", "CUDAExecutionProvider"),
        ("tensorrt", "TensorrtExecutionProvider"),
    ] {
        let o = anchorkit(&["inspect", "--model", s(&m), "--spec", s(&spec), "--ep", ep]);
        let e = stderr(&o);
        assert!(!o.status.success(), "{ep}: {e}");
        assert!(
            e.contains(name) && e.contains("not enabled in this build"),
            "{ep}: {e}"
        );
        assert!(
            e.contains("onnxruntime-gpu") && e.contains("Not falling back to CPU"),
            "{ep}: {e}"
        );
        assert!(
            o.stdout.is_empty() || !String::from_utf8_lossy(&o.stdout).contains("inputs:"),
            "{ep}: no session was built"
        );
    }
}

fn coco_image(sh: &Path, name: &str) -> PathBuf {
    sh.join("data/coco-val2017/images").join(name)
}

/// The detections of one JSONL line as `(class_name, score, [x1, y1, x2, y2])`.
fn jsonl_dets(line: &str) -> Vec<(String, f64, [f64; 4])> {
    let v: serde_json::Value = serde_json::from_str(line).expect("JSONL line");
    v["detections"]
        .as_array()
        .expect("detections")
        .iter()
        .map(|d| {
            let b = common::bbox(d);
            (
                d["class_name"].as_str().unwrap().to_string(),
                d["score"].as_f64().unwrap(),
                [b[0], b[1], b[2], b[3]],
            )
        })
        .collect()
}

#[test]
fn readme_command_runs_with_the_default_model() {
    let Some(_) = shared() else { return };
    let o = anchorkit(&["detect", "samples/blood_smear.jpg"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with("samples/blood_smear.jpg (1226x652): "),
        "{out}"
    );
    assert!(
        stderr(&o).contains("bccd_freeanchor_x24.onnx with spec")
            && stderr(&o).contains("bccd_freeanchor_x24-smear.json"),
        "{}",
        stderr(&o)
    );
    // What the default command must find on this photo: its white cell, its platelets
    // (seven small purple dots, hand-located at these centres in original pixels) and most of
    // its red cells (about 90 are fully or mostly inside the frame).
    let dir = tempfile::tempdir().unwrap();
    let jl = dir.path().join("d.jsonl");
    let o = anchorkit(&["detect", "--jsonl", s(&jl), "samples/blood_smear.jpg"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&jl).unwrap();
    let dets = jsonl_dets(text.lines().next().unwrap());
    let confident = |cls: &str, thr: f64| -> Vec<[f64; 4]> {
        dets.iter()
            .filter(|d| d.0 == cls && d.1 >= thr)
            .map(|d| d.2)
            .collect()
    };
    let wbc = confident("WBC", 0.5);
    assert_eq!(wbc.len(), 1, "one white cell: {dets:?}");
    let c = [(wbc[0][0] + wbc[0][2]) / 2.0, (wbc[0][1] + wbc[0][3]) / 2.0];
    assert!(
        (c[0] - 872.0).abs() < 40.0 && (c[1] - 240.0).abs() < 40.0,
        "white cell at {c:?}"
    );
    let platelets_truth = [
        [135.0, 300.0],
        [457.0, 322.0],
        [88.0, 465.0],
        [118.0, 537.0],
        [1083.0, 192.0],
        [75.0, 395.0],
    ];
    let plt = confident("Platelets", 0.5);
    let found = platelets_truth
        .iter()
        .filter(|t| {
            plt.iter().any(|b| {
                let c = [(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0];
                (c[0] - t[0]).abs() < 20.0 && (c[1] - t[1]).abs() < 20.0
            })
        })
        .count();
    assert!(found >= 5, "platelets found: {found} of 6: {plt:?}");
    assert!(
        plt.len() <= found + 1,
        "at most one platelet box off the truth: {plt:?}"
    );
    let rbc = confident("RBC", 0.3).len();
    assert!(rbc >= 70, "red cells: {rbc}");
}

#[test]
fn detect_writes_jsonl_csv_coco_and_drawings() {
    let Some(sh) = shared() else { return };
    let (m, spec) = nanodet320(&sh);
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    for n in ["000000000139.jpg", "000000000802.jpg", "000000005001.jpg"] {
        std::fs::copy(coco_image(&sh, n), imgs.join(n)).unwrap();
    }
    std::fs::write(
        imgs.join("notes.txt"),
        "not an image, and not picked from a directory",
    )
    .unwrap();
    let (jsonl, csv, coco, draw) = (
        dir.path().join("out.jsonl"),
        dir.path().join("out.csv"),
        dir.path().join("coco.json"),
        dir.path().join("drawn"),
    );
    let ann = sh.join("data/coco-val2017/instances_subset.json");
    let o = anchorkit(&[
        "detect",
        "--model",
        s(&m),
        "--spec",
        s(&spec),
        "--threads",
        "1",
        "--jsonl",
        s(&jsonl),
        "--csv",
        s(&csv),
        "--coco-results",
        s(&coco),
        "--coco-gt",
        s(&ann),
        "--draw",
        s(&draw),
        s(&imgs),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("3 images done, 0 failed"),
        "{}",
        stderr(&o)
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    // Sorted directory order, real sizes, boxes inside the image, scores sorted.
    assert!(
        lines[0]["image"]
            .as_str()
            .unwrap()
            .ends_with("000000000139.jpg")
    );
    assert_eq!(
        (lines[0]["width"].as_u64(), lines[0]["height"].as_u64()),
        (Some(640), Some(426))
    );
    let mut n_csv = 0;
    for l in &lines {
        let (w, h) = (l["width"].as_f64().unwrap(), l["height"].as_f64().unwrap());
        let dets = l["detections"].as_array().unwrap();
        assert!(!dets.is_empty() && dets.len() <= 100);
        n_csv += dets.len();
        let mut prev = 1.0;
        for d in dets {
            let b = common::bbox(d);
            assert!(
                b[0] >= 0.0
                    && b[1] >= 0.0
                    && b[2] <= w + 1e-3
                    && b[3] <= h + 1e-3
                    && b[0] <= b[2]
                    && b[1] <= b[3],
                "{d}"
            );
            let sc = d["score"].as_f64().unwrap();
            assert!(sc > 0.05 && sc <= prev, "{d}");
            prev = sc;
            let id = d["class_id"].as_u64().unwrap() as usize;
            assert!(id < 80 && d["class_name"].is_string());
        }
    }
    // 000000000139.jpg (a living room): NanoDet-m's best detection is the TV at ~0.77.
    let top = &lines[0]["detections"][0];
    assert_eq!(top["class_name"], "tv", "{top}");
    assert!(
        (top["score"].as_f64().unwrap() - 0.775).abs() < 0.02,
        "{top}"
    );
    let csv_text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(csv_text.lines().count(), 1 + n_csv);
    let coco: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&coco).unwrap()).unwrap();
    assert_eq!(coco.len(), n_csv);
    assert_eq!(coco[0]["image_id"], 139);
    assert_eq!(coco[0]["category_id"], 72, "tv is COCO category 72");
    for n in ["000000000139.jpg", "000000000802.jpg", "000000005001.jpg"] {
        let d = image::open(draw.join(n)).unwrap();
        let orig = image::open(imgs.join(n)).unwrap();
        assert_eq!((d.width(), d.height()), (orig.width(), orig.height()));
        assert_ne!(
            d.to_rgb8().as_raw(),
            orig.to_rgb8().as_raw(),
            "{n}: boxes drawn"
        );
    }
    // No temp files left beside the outputs.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn bad_inputs_are_reported_and_the_batch_goes_on() {
    let Some(sh) = shared() else { return };
    let (m, spec) = nanodet320(&sh);
    let dir = tempfile::tempdir().unwrap();
    let good = coco_image(&sh, "000000000139.jpg");
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.jpg");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let empty = dir.path().join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let text = dir.path().join("readme.jpg");
    std::fs::write(&text, "this is text, not a JPEG\n").unwrap();
    let missing = dir.path().join("missing.jpg");
    let nomatch = dir.path().join("*.png");
    let jsonl = dir.path().join("out.jsonl");
    let o = anchorkit(&[
        "detect",
        "--model",
        s(&m),
        "--spec",
        s(&spec),
        "--jsonl",
        s(&jsonl),
        s(&missing),
        s(&empty),
        s(&truncated),
        s(&good),
        s(&text),
        s(&nomatch),
    ]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    let line_of = |p: &Path| {
        e.lines()
            .find(|l| l.contains(s(p)))
            .map(str::to_string)
            .unwrap_or_default()
    };
    assert!(line_of(&missing).contains("No such file"), "{e}");
    assert!(line_of(&empty).contains("empty (0 bytes)"), "{e}");
    assert!(line_of(&truncated).contains("truncated"), "{e}");
    assert!(
        line_of(&text).contains("not a recognized image format"),
        "{e}"
    );
    assert!(line_of(&nomatch).contains("matches no file"), "{e}");
    assert!(e.contains("1 image done, 5 failed"), "{e}");
    // The good image, processed after three bad ones, is in the output.
    let out = std::fs::read_to_string(&jsonl).unwrap();
    assert_eq!(out.lines().count(), 1);
    assert!(out.contains("000000000139.jpg"));
}

#[test]
fn unusable_runtime_library_is_an_error_with_a_remedy() {
    let Some(sh) = shared() else { return };
    let (m, spec) = nanodet320(&sh);
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libonnxruntime.so.1.32.0");
    std::fs::write(&fake, "not a shared library").unwrap();
    let missing = dir.path().join("nope/libonnxruntime.so.1.32.0");
    let o = anchorkit(&[
        "inspect",
        "--model",
        s(&m),
        "--spec",
        s(&spec),
        "--ort-lib",
        s(&missing),
    ]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("--ort-lib") && e.contains(s(&missing)) && e.contains("no such file"),
        "{e}"
    );
    for env in [false, true] {
        let mut c = common::anchorkit();
        c.args(["inspect", "--model", s(&m), "--spec", s(&spec)])
            .current_dir(repo());
        if env {
            c.env("ORT_DYLIB_PATH", &fake);
        } else {
            c.args(["--ort-lib", s(&fake)]);
        }
        let o = c.output().unwrap();
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{e}");
        assert!(!e.contains("panicked"), "{e}");
        assert!(
            e.contains("cannot load") && e.contains(s(&fake)) && e.contains("ORT_DYLIB_PATH"),
            "{e}"
        );
    }
}

#[test]
fn detector_library_stages_equal_detect_on_both_nanodet_models() {
    use anchorkit::Detector;
    use anchorkit::runtime::RuntimeOptions;
    let Some(sh) = shared() else { return };
    let img = image::open(coco_image(&sh, "000000000802.jpg"))
        .unwrap()
        .to_rgb8();
    let opts = RuntimeOptions {
        threads: 1,
        ..RuntimeOptions::default()
    };
    for size in [320, 416] {
        let model = sh.join(format!("models/nanodet-m-coco/nanodet-m-{size}.onnx"));
        let spec = repo().join(format!("models/specs/nanodet-m-{size}.json"));
        let mut det = Detector::load(&model, Some(&spec), &opts).unwrap();
        assert_eq!(det.spec().name, format!("nanodet-m-{size}"));
        let a = det.detect(&img).unwrap();
        let meta = det.preprocess(&img).unwrap();
        assert_eq!((meta.input_w, meta.input_h), (size, size));
        assert_eq!(det.input_tensor().len(), 3 * (size * size) as usize);
        det.infer().unwrap();
        let b = det.postprocess(&meta).unwrap();
        assert!(!a.is_empty(), "{size}: detections on a real COCO image");
        assert_eq!(
            a, b,
            "{size}: in-place and copied outputs give the same detections"
        );
        det.set_score_thr(0.5).unwrap();
        let c = det.detect(&img).unwrap();
        assert!(c.len() < a.len() && c.iter().all(|d| d.score > 0.5));
        assert!(det.set_score_thr(1.5).is_err());
    }
}

#[test]
fn dump_input_writes_npy_and_meta() {
    let Some(sh) = shared() else { return };
    let (m, spec) = nanodet320(&sh);
    let dir = tempfile::tempdir().unwrap();
    let img = coco_image(&sh, "000000000139.jpg");
    let o = anchorkit(&[
        "detect",
        "--model",
        s(&m),
        "--spec",
        s(&spec),
        "--dump-input",
        s(dir.path()),
        "--jsonl",
        s(&dir.path().join("o.jsonl")),
        s(&img),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let npy = std::fs::read(dir.path().join("000000000139.npy")).unwrap();
    let hl = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    assert!(
        std::str::from_utf8(&npy[10..10 + hl])
            .unwrap()
            .contains("'shape': (1, 3, 320, 320)")
    );
    assert_eq!(npy.len(), 10 + hl + 4 * 3 * 320 * 320);
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("000000000139.meta.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (meta["orig_w"].as_u64(), meta["orig_h"].as_u64()),
        (Some(640), Some(426))
    );
    assert_eq!(
        (meta["input_w"].as_u64(), meta["input_h"].as_u64()),
        (Some(320), Some(320))
    );
    // BGR, (x - mean) / std: every value lies in [(0 - 123.675) / 58.395, (255 - 103.53) / 57.375].
    let vals: Vec<f32> = npy[10 + hl..]
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert!(vals.iter().all(|v| (-2.12..=2.65).contains(v)));
}
