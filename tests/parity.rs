//! Parity of `anchorkit detect` with the Python reference (`tools/reference`, numpy +
//! onnxruntime written plainly from the mmdet/mmcv sources each of its modules cites), on real
//! images.
//!
//! * Exact parity (`--dump-input` on the Rust side, `--input-from` on the Python side, so the
//!   network sees the identical tensor): same number of detections, same class ids in the same
//!   order, boxes within 1e-3 px, scores within 1e-5. Models: NanoDet-m 320 and 416 (GFL head,
//!   points, distribution coder; 24 COCO images + 4 photos, plus 3 EXIF-rotated JPEGs at 320)
//!   and the seeded synthetic RetinaNet/FreeAnchor-shaped (A=9, C=80, strides 8..128) and
//!   ATSS-shaped heads built by `tools/make_synthetic_heads.py` (keep-ratio 1333x800 input, 10
//!   COCO images + 4 photos), the latter also under the `mmdeploy` and `legacy` rules and with
//!   letterbox resize, explicit anchors, an FCOS-shaped distance head, class-agnostic NMS.
//!   Measured 2026-11-22: max |box diff| 1.4e-4 px, max |score diff| 1.3e-7 (0 for NanoDet).
//! * End to end (each side decodes and resizes itself: zune-jpeg + our OpenCV-exact resize vs
//!   OpenCV; the resize is bit-exact (`tests/cv2_resize.rs`), so the tensors differ only
//!   where the JPEG decoders do, by 1-3 u8 levels on about 1% of the bytes): confident
//!   detections (score >= 0.3) of either side must find a same-class partner with IoU >= 0.9 on
//!   the other; see `END_TO_END_*` for the bounds and the measured values.
//! * COCO AP of the Rust JSONL on all 198 images of `../shared/data/coco-val2017` (via
//!   `tools/reference/coco_ap.py`): within 0.005 of 0.194 (320) and 0.189 (416); measured
//!   0.1949 and 0.1892 (the Python pipeline alone: 0.1949 and 0.1889; with the
//!   `fast_image_resize` backend Rust gave 0.1939 and 0.1902).
//!
//! Every test prints `SKIP ...` and passes when `../shared` or `tools/.venv` is absent (fails
//! instead under `CI=true`, see `tests/common`).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

mod common;
use common::RunOk;

/// Maximum box coordinate difference (pixels of the original image) with identical input.
const BOX_TOL: f64 = 1e-3;
/// Maximum score difference with identical input.
const SCORE_TOL: f64 = 1e-5;
/// End to end: detections of either side with at least this score must be matched.
const END_TO_END_MIN_SCORE: f64 = 0.3;
/// End to end: fraction of those that must find a same-class partner with IoU >= 0.9, for
/// NanoDet-m. With libjpeg-turbo decoding the end-to-end outputs must instead be exact (as
/// with dumped inputs); these loose thresholds matter for the image crate's decoder
/// (`ANCHORKIT_LIBJPEG=off`: measured 99.4% at 320 and 99.0% at 416 on 2026-11-23 with the
/// OpenCV-exact resize; 96.9% / 97.7% with fast_image_resize).
const END_TO_END_MATCH_NANODET: f64 = 0.98;
/// The same for the synthetic heads (measured 99.0% FreeAnchor-shaped, 97.5% ATSS-shaped;
/// 93.3% / 93.2% with fast_image_resize): random weights amplify the remaining JPEG decoder
/// differences more than a trained network does.
const END_TO_END_MATCH_SYNTHETIC: f64 = 0.95;
/// End to end: mean |score difference| of the matched pairs.
const END_TO_END_MEAN_SCORE_DIFF: f64 = 0.01;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shared() -> PathBuf {
    root().join("../shared")
}

fn python() -> PathBuf {
    root().join("tools/.venv/bin/python")
}

/// The inputs every test needs, or `None` (with a SKIP line) when the data or venv is absent.
fn prerequisites(what: &str) -> Option<()> {
    let images = shared().join("data/coco-val2017/images");
    if !images.is_dir() {
        common::skip(&format!(
            "{what}: {} is absent (CI layout: a clone with ../shared beside it)",
            images.display()
        ));
        return None;
    }
    if !python().is_file() {
        common::skip(&format!(
            "{what}: {} is absent (run tools/setup_venv.sh)",
            python().display()
        ));
        return None;
    }
    Some(())
}

/// libonnxruntime of the venv's onnxruntime wheel, for `ORT_DYLIB_PATH` when it is not set.
fn venv_ort_lib() -> Option<PathBuf> {
    let pattern =
        root().join("tools/.venv/lib/python*/site-packages/onnxruntime/capi/libonnxruntime.so*");
    glob::glob(pattern.to_str()?)
        .ok()?
        .filter_map(|p| p.ok())
        .max()
}

fn coco_images(n: usize) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(shared().join("data/coco-val2017/images"))
        .expect("read coco images dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    v.sort();
    v.truncate(n);
    v
}

/// A few photos of other sizes and colour types (gray PNG, EXIF-tagged JPEG).
fn photos() -> Vec<PathBuf> {
    [
        "opencv_samples/basketball1.png",
        "skimage/chelsea.png",
        "registry/blood_smear_cbc.jpg",
        "skimage/rocket.jpg",
    ]
    .iter()
    .map(|p| shared().join("photos").join(p))
    .filter(|p| p.is_file())
    .collect()
}

/// JPEG copies of a COCO image carrying EXIF orientation 3, 6 and 8 (180, 90 cw, 90 ccw), so
/// both sides must apply the rotation when decoding (pixels re-encoded by PIL, quality 95).
fn exif_rotated(dir: &Path) -> Vec<PathBuf> {
    let src = coco_images(1).remove(0);
    let code = format!(
        "from PIL import Image\nim = Image.open({:?}).convert('RGB')\n\
         for o in (3, 6, 8):\n    ex = Image.Exif()\n    ex[274] = o\n    \
         im.save({:?} + f'/exif{{o}}_rot.jpg', quality=95, exif=ex.tobytes())\n",
        src.to_str().expect("utf-8 path"),
        dir.to_str().expect("utf-8 path")
    );
    let mut cmd = Command::new(python());
    cmd.arg("-c").arg(code);
    run(cmd, "write EXIF-rotated test images");
    [3, 6, 8]
        .iter()
        .map(|o| dir.join(format!("exif{o}_rot.jpg")))
        .collect()
}

fn nanodet(size: u32) -> (PathBuf, PathBuf) {
    (
        shared().join(format!("models/nanodet-m-coco/nanodet-m-{size}.onnx")),
        root().join(format!("models/specs/nanodet-m-{size}.json")),
    )
}

/// Builds (once per process; reused across runs while up to date) the seeded synthetic models.
fn synthetic(kind: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let out = root().join("target/synthetic-heads");
        let st = Command::new(python())
            .current_dir(root())
            .args([
                "tools/make_synthetic_heads.py",
                "--if-stale",
                "--seed",
                "0",
                "--out",
            ])
            .arg(&out)
            .status()
            .map_err(|e| format!("cannot run {}: {e}", python().display()))?;
        if !st.success() {
            return Err(format!("tools/make_synthetic_heads.py failed: {st}"));
        }
        Ok(out)
    });
    match dir {
        Ok(d) => d.join(format!("{kind}_synth.onnx")),
        Err(e) => panic!("{e}"),
    }
}

/// Serializes the heavy runs: the box has 2 cores and each side already uses them.
fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn run(mut cmd: Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Which implementation runs a detection.
#[derive(Clone, Copy)]
enum Side {
    /// `anchorkit detect`; a tensor directory is where it dumps its network inputs.
    Rust,
    /// `python -m tools.reference.detect`; a tensor directory holds the inputs it runs on
    /// instead of preprocessing the images itself.
    Python,
}

/// Detection on `images` into `jsonl` by `side`, with the spec sidecar and the tensor
/// directory when given; run in the repository root.
fn detect(
    side: Side,
    model: &Path,
    spec: Option<&Path>,
    images: &[PathBuf],
    jsonl: &Path,
    tensors: Option<&Path>,
) {
    let (mut cmd, flag, what) = match side {
        Side::Rust => {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_anchorkit"));
            cmd.arg("detect");
            if std::env::var_os("ORT_DYLIB_PATH").is_none()
                && let Some(lib) = venv_ort_lib()
            {
                cmd.env("ORT_DYLIB_PATH", lib);
            }
            (cmd, "--dump-input", "anchorkit detect")
        }
        Side::Python => {
            let mut cmd = Command::new(python());
            cmd.args(["-m", "tools.reference.detect"]);
            (cmd, "--input-from", "python -m tools.reference.detect")
        }
    };
    cmd.current_dir(root()).arg("--model").arg(model);
    if let Some(s) = spec {
        cmd.arg("--spec").arg(s);
    }
    if let Some(d) = tensors {
        cmd.arg(flag).arg(d);
    }
    cmd.arg("--jsonl").arg(jsonl).args(images);
    run(cmd, what);
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: bad line {l}: {e}", path.display()))
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
struct Det {
    bbox: [f64; 4],
    score: f64,
    class_id: u64,
}

fn dets(rec: &Value) -> Vec<Det> {
    rec["detections"]
        .as_array()
        .expect("detections array")
        .iter()
        .map(|d| {
            let b = common::bbox(d);
            Det {
                bbox: [b[0], b[1], b[2], b[3]],
                score: d["score"].as_f64().expect("score"),
                class_id: d["class_id"].as_u64().expect("class_id"),
            }
        })
        .collect()
}

fn file_name(rec: &Value) -> String {
    Path::new(rec["image"].as_str().expect("image"))
        .file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned()
}

/// Per-image statistics of one exact comparison.
#[derive(Default, Debug)]
struct Exact {
    images: usize,
    detections: usize,
    max_box: f64,
    max_score: f64,
}

/// Asserts exact parity of two JSONL files (same images in the same order).
fn assert_exact(rust: &[Value], py: &[Value], what: &str) -> Exact {
    assert_eq!(rust.len(), py.len(), "{what}: number of images");
    let mut st = Exact::default();
    for (r, p) in rust.iter().zip(py) {
        let name = file_name(r);
        assert_eq!(name, file_name(p), "{what}: image order");
        assert_eq!(r["width"], p["width"], "{what} {name}: width");
        assert_eq!(r["height"], p["height"], "{what} {name}: height");
        let (rd, pd) = (dets(r), dets(p));
        let rl: Vec<u64> = rd.iter().map(|d| d.class_id).collect();
        let pl: Vec<u64> = pd.iter().map(|d| d.class_id).collect();
        assert_eq!(
            rl,
            pl,
            "{what} {name}: class ids / order differ (rust {} dets, python {})",
            rd.len(),
            pd.len()
        );
        for (i, (a, b)) in rd.iter().zip(&pd).enumerate() {
            let db = (0..4)
                .map(|k| (a.bbox[k] - b.bbox[k]).abs())
                .fold(0.0, f64::max);
            let ds = (a.score - b.score).abs();
            assert!(
                db <= BOX_TOL,
                "{what} {name} det {i}: box {:?} vs {:?} (diff {db:e} px)",
                a.bbox,
                b.bbox
            );
            assert!(
                ds <= SCORE_TOL,
                "{what} {name} det {i}: score {} vs {} (diff {ds:e})",
                a.score,
                b.score
            );
            st.max_box = st.max_box.max(db);
            st.max_score = st.max_score.max(ds);
        }
        st.images += 1;
        st.detections += rd.len();
    }
    st
}

fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Loose end-to-end comparison; returns (matched fraction, mean |score diff|, max |score diff|,
/// mean IoU of the matched pairs, compared detections).
fn compare_loose(rust: &[Value], py: &[Value], what: &str) -> (f64, f64, f64, f64, usize) {
    assert_eq!(rust.len(), py.len(), "{what}: number of images");
    let (mut total, mut matched, mut sum_ds, mut max_ds, mut sum_iou) =
        (0usize, 0usize, 0.0, 0.0f64, 0.0);
    for (r, p) in rust.iter().zip(py) {
        assert_eq!(file_name(r), file_name(p), "{what}: image order");
        assert_eq!(
            (&r["width"], &r["height"]),
            (&p["width"], &p["height"]),
            "{what} {}: size",
            file_name(r)
        );
        let (rd, pd) = (dets(r), dets(p));
        // Both directions: every confident detection of one side must exist on the other.
        for (a_side, b_side) in [(&rd, &pd), (&pd, &rd)] {
            let mut used = vec![false; b_side.len()];
            for a in a_side.iter().filter(|d| d.score >= END_TO_END_MIN_SCORE) {
                total += 1;
                let best = b_side
                    .iter()
                    .enumerate()
                    .filter(|(j, b)| !used[*j] && b.class_id == a.class_id)
                    .map(|(j, b)| (j, iou(&a.bbox, &b.bbox), (a.score - b.score).abs()))
                    .max_by(|x, y| x.1.total_cmp(&y.1));
                if let Some((j, o, ds)) = best
                    && o >= 0.9
                {
                    used[j] = true;
                    matched += 1;
                    sum_ds += ds;
                    max_ds = max_ds.max(ds);
                    sum_iou += o;
                }
            }
        }
    }
    assert!(
        total > 0,
        "{what}: no detection above {END_TO_END_MIN_SCORE}"
    );
    let m = matched.max(1) as f64;
    (
        matched as f64 / total as f64,
        sum_ds / m,
        max_ds,
        sum_iou / m,
        total,
    )
}

/// Exact parity on dumped inputs, then the loose end-to-end comparison, for one model.
fn parity_case(
    name: &str,
    model: &Path,
    spec: Option<&Path>,
    images: &[PathBuf],
    end_to_end_min_match: Option<f64>,
) {
    let _g = heavy();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dump, rj, pj, pe) = (
        tmp.path().join("dump"),
        tmp.path().join("rust.jsonl"),
        tmp.path().join("py.jsonl"),
        tmp.path().join("py_e2e.jsonl"),
    );
    detect(Side::Rust, model, spec, images, &rj, Some(&dump));
    detect(Side::Python, model, spec, images, &pj, Some(&dump));
    let (rust, py) = (read_jsonl(&rj), read_jsonl(&pj));
    assert_eq!(
        rust.len(),
        images.len(),
        "{name}: every image must give a line"
    );
    let st = assert_exact(&rust, &py, name);
    assert!(
        st.detections >= images.len(),
        "{name}: too few detections ({}) to mean anything",
        st.detections
    );
    eprintln!(
        "{name}: exact parity on {} images, {} detections: max |box diff| {:.2e} px, max |score diff| {:.2e}",
        st.images, st.detections, st.max_box, st.max_score
    );
    let Some(min_match) = end_to_end_min_match else {
        return;
    };
    detect(Side::Python, model, spec, images, &pe, None);
    let py_e2e = read_jsonl(&pe);
    if common::libjpeg_required() {
        // OpenCV-exact decode and resize: from the files, Rust equals the reference exactly
        let st = assert_exact(&rust, &py_e2e, &format!("{name} end to end"));
        eprintln!(
            "{name}: end to end (own decode/resize) exact on {} images, {} detections: \
             max |box diff| {:.2e} px, max |score diff| {:.2e}",
            st.images, st.detections, st.max_box, st.max_score
        );
    }
    let (frac, mean_ds, max_ds, mean_iou, n) = compare_loose(&rust, &py_e2e, name);
    eprintln!(
        "{name}: end to end (own decode/resize): {:.1}% of {n} detections >= {END_TO_END_MIN_SCORE} matched \
         (same class, IoU >= 0.9; mean IoU {mean_iou:.4}), |score diff| mean {mean_ds:.2e} max {max_ds:.2e}",
        100.0 * frac
    );
    assert!(
        frac >= min_match,
        "{name}: only {:.1}% matched end to end",
        100.0 * frac
    );
    assert!(
        mean_ds <= END_TO_END_MEAN_SCORE_DIFF,
        "{name}: mean end-to-end score diff {mean_ds}"
    );
}

/// The first `n` COCO images and the photos.
fn coco_and_photos(n: usize) -> Vec<PathBuf> {
    let mut images = coco_images(n);
    images.extend(photos());
    images
}

/// [`parity_case`] for NanoDet-m at `size` on 24 COCO images and the photos (and, with
/// `exif`, EXIF-rotated copies of a COCO image).
fn nanodet_parity(size: u32, exif: bool) {
    if prerequisites(&format!("parity_nanodet_m_{size}")).is_none() {
        return;
    }
    let (model, spec) = nanodet(size);
    let exif_dir = tempfile::tempdir().expect("tempdir");
    let mut images = coco_and_photos(24);
    if exif {
        images.extend(exif_rotated(exif_dir.path()));
    }
    parity_case(
        &format!("nanodet-m-{size}"),
        &model,
        Some(&spec),
        &images,
        Some(END_TO_END_MATCH_NANODET),
    );
}

/// [`parity_case`] for a synthetic head (`retina` or `atss`) on 10 COCO images and the photos.
fn synthetic_parity(kind: &str, test: &str) {
    if prerequisites(test).is_none() {
        return;
    }
    parity_case(
        &format!("{kind}-synthetic"),
        &synthetic(kind),
        None,
        &coco_and_photos(10),
        Some(END_TO_END_MATCH_SYNTHETIC),
    );
}

#[test]
fn parity_nanodet_m_320() {
    nanodet_parity(320, true);
}

#[test]
fn parity_nanodet_m_416() {
    nanodet_parity(416, false);
}

#[test]
fn parity_synthetic_freeanchor() {
    synthetic_parity("retina", "parity_synthetic_freeanchor");
}

#[test]
fn parity_synthetic_atss() {
    synthetic_parity("atss", "parity_synthetic_atss");
}

/// The spec embedded in a synthetic model (as `tools/make_synthetic_heads.py` writes it).
fn synthetic_spec(kind: &str) -> Value {
    let code = format!(
        "import json; from tools.make_synthetic_heads import spec_for; print(json.dumps(spec_for({kind:?})))"
    );
    let out = Command::new(python())
        .current_dir(root())
        .arg("-c")
        .arg(code)
        .run_ok();
    serde_json::from_slice(&out.stdout).expect("spec JSON")
}

/// Writes `spec` changed by `edit` to `dir/name.json` (a sidecar for `--spec`).
fn spec_variant(mut spec: Value, dir: &Path, name: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    edit(&mut spec);
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&spec).expect("json")).expect("write spec");
    path
}

/// Exact parity of one spec variant of a model on 6 COCO images and 2 photos.
fn variant_case(name: &str, model: &Path, spec: &Path) {
    let mut images = coco_images(6);
    images.extend(photos().into_iter().take(2));
    parity_case(name, model, Some(spec), &images, None);
}

/// Exact parity of the other post-processing rules (mmdeploy end2end, mmdet <= 2.17) on the
/// synthetic heads: anchor-wise top-k, thresholds after centerness, per-class exact NMS.
#[test]
fn parity_rules_mmdeploy_and_legacy() {
    if prerequisites("parity_rules_mmdeploy_and_legacy").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    for kind in ["atss", "retina"] {
        let base = synthetic_spec(kind);
        for rule in ["mmdeploy", "legacy"] {
            let spec = spec_variant(base.clone(), tmp.path(), &format!("{kind}_{rule}"), |s| {
                s["postprocess"]["rule"] = rule.into();
            });
            variant_case(&format!("{kind}-synthetic/{rule}"), &synthetic(kind), &spec);
        }
    }
}

/// Exact parity of the less common spec paths: letterbox resize (content offset, pad value
/// before normalisation, clamp to the content), explicit per-level anchors, class-agnostic NMS
/// with the v3 `min_bbox_size` filter, and an FCOS-shaped head (points with offset 0, distance
/// coder scaled by stride, centerness) read from the ATSS-shaped graph.
#[test]
fn parity_spec_variants() {
    if prerequisites("parity_spec_variants").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let (nd_model, nd_spec) = nanodet(320);
    let nd: Value =
        serde_json::from_str(&std::fs::read_to_string(&nd_spec).expect("spec")).expect("json");
    let letterbox = spec_variant(nd, tmp.path(), "nanodet_letterbox", |s| {
        s["input"]["resize"] = serde_json::json!({"rule": "letterbox", "width": 320, "height": 320, "pad_value": 114.0});
    });
    variant_case("nanodet-m-320/letterbox", &nd_model, &letterbox);

    let atss = synthetic_spec("atss");
    let explicit = spec_variant(atss.clone(), tmp.path(), "atss_explicit", |s| {
        let per_level: Vec<Value> = [8.0, 16.0, 32.0, 64.0, 128.0]
            .iter()
            .map(|st: &f64| serde_json::json!([[8.0 * st, 8.0 * st]]))
            .collect();
        s["head"]["priors"] =
            serde_json::json!({"type": "explicit_anchors", "per_level": per_level});
    });
    variant_case(
        "atss-synthetic/explicit-anchors",
        &synthetic("atss"),
        &explicit,
    );
    let fcos = spec_variant(atss, tmp.path(), "fcos_like", |s| {
        s["head"]["kind"] = "fcos".into();
        s["head"]["priors"] = serde_json::json!({"type": "points", "offset": 0.0});
        s["head"]["coder"] = serde_json::json!({"type": "distance", "scale_by_stride": true});
    });
    variant_case("atss-synthetic/fcos-distance", &synthetic("atss"), &fcos);

    let agnostic = spec_variant(
        synthetic_spec("retina"),
        tmp.path(),
        "retina_agnostic",
        |s| {
            s["postprocess"]["class_agnostic"] = true.into();
            s["postprocess"]["min_bbox_size"] = 0.0.into();
        },
    );
    variant_case(
        "retina-synthetic/class-agnostic+min_bbox_size",
        &synthetic("retina"),
        &agnostic,
    );
}

/// COCO AP of the Rust JSONL for one NanoDet-m model on the 198-image subset.
fn coco_ap_case(size: u32, want: f64) {
    let _g = heavy();
    let (model, spec) = nanodet(size);
    let tmp = tempfile::tempdir().expect("tempdir");
    let (jsonl, stats) = (tmp.path().join("dets.jsonl"), tmp.path().join("stats.json"));
    let images = coco_images(usize::MAX);
    assert_eq!(images.len(), 198, "the COCO subset has 198 images");
    detect(Side::Rust, &model, Some(&spec), &images, &jsonl, None);
    let mut cmd = Command::new(python());
    cmd.current_dir(root())
        .args(["-m", "tools.reference.coco_ap", "--jsonl"])
        .arg(&jsonl)
        .arg("--ann");
    cmd.arg(shared().join("data/coco-val2017/instances_subset.json"))
        .arg("--json")
        .arg(&stats);
    run(cmd, "python -m tools.reference.coco_ap");
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).expect("stats")).expect("stats json");
    let ap = s["AP"].as_f64().expect("AP");
    eprintln!(
        "nanodet-m-{size}: Rust pipeline COCO AP {ap:.4} (AP50 {:.4}) on 198 images; reference {want}",
        s["AP50"]
    );
    assert!(
        (ap - want).abs() < 0.005,
        "nanodet-m-{size}: AP {ap} is not within 0.005 of {want}"
    );
}

#[test]
fn coco_ap_nanodet_m_320() {
    if prerequisites("coco_ap_nanodet_m_320").is_some() {
        coco_ap_case(320, 0.194);
    }
}

#[test]
fn coco_ap_nanodet_m_416() {
    if prerequisites("coco_ap_nanodet_m_416").is_some() {
        coco_ap_case(416, 0.189);
    }
}
