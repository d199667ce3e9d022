//! End-to-end tests of the `anchorkit` binary on real models and images from `../shared`
//! (skipped with a message when `../shared` is absent): detect / inspect, bad inputs, spec
//! errors, GPU execution providers that cannot register.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shared() -> Option<PathBuf> {
    let p = repo().join("../shared");
    if p.join("models/nanodet-m-coco/nanodet-m-320.onnx").is_file() {
        Some(p)
    } else {
        eprintln!("SKIP: ../shared (NanoDet-m models, COCO images) is absent");
        None
    }
}

fn nanodet320(shared: &Path) -> (PathBuf, PathBuf) {
    (
        shared.join("models/nanodet-m-coco/nanodet-m-320.onnx"),
        repo().join("models/specs/nanodet-m-320.json"),
    )
}

fn anchorkit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anchorkit"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run anchorkit")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
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
    {
        let cmd = "inspect";
        let o = anchorkit(&[cmd, "--model", s(&m)]);
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
        let o = anchorkit(&["inspect", "--model", s(&m), "--spec", s(f.path())]);
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
