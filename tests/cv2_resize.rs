//! Exactness of the preprocessing against OpenCV / the Python reference (which is mmdet's
//! `cv2.imdecode` + `cv2.resize(INTER_LINEAR)` + `imnormalize_` + `Pad`), on real images:
//!
//! * `preprocess::resize_linear_cv2` equals `cv2.resize` byte for byte, from the same decoded
//!   pixels, for fixed and seeded random target sizes (up, down, exact 2x, 1-pixel sizes);
//! * the full `Preprocessor` tensor equals the reference `preprocess` tensor bit for bit for
//!   the NanoDet-m specs (stretch, BGR) and for keep-ratio 1333x800 / divisor 32 (RGB) and
//!   letterbox 416 (pad 114) variants;
//! * PNG decoding equals `cv2.imdecode`, and so does JPEG decoding with libjpeg-turbo
//!   (`preprocess::libjpeg`, required here unless `ANCHORKIT_LIBJPEG=off`, in which case the
//!   image crate's decoder is used and the share of differing bytes is printed, not asserted);
//! * with libjpeg-turbo, the whole pipeline from the file (`load_image` + `Preprocessor`)
//!   equals the reference tensor bit for bit.
//!
//! Skips (prints `SKIP`) without `../shared` or the tools venv, fails instead under `CI=true`.

use std::path::{Path, PathBuf};

use anchorkit::preprocess::{Preprocessor, load_image, resize_linear_cv2};
use anchorkit::spec::DetectorSpec;
use image::RgbImage;
use serde_json::Value;

mod common;

/// Seed of the random target sizes (reported in the test output).
const SIZE_SEED: u64 = 20261123;

fn images() -> Option<Vec<PathBuf>> {
    let coco = common::shared("data/coco-val2017/images")?;
    let photos = common::shared("photos")?;
    let mut v: Vec<PathBuf> = std::fs::read_dir(&coco)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    v.sort();
    v.truncate(8);
    for rel in [
        "skimage/chelsea.png",
        "skimage/camera.png",
        "opencv_samples/vtest_frame000.png",
        "registry/blood_smear_cbc.jpg",
    ] {
        v.push(photos.join(rel));
    }
    Some(v)
}

/// Number of positions where two byte slices differ.
fn differing_bytes(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}

fn sizes() -> Vec<(u32, u32)> {
    let mut v = vec![
        (320, 320),
        (1067, 800),
        (1333, 750),
        (320, 240),
        (17, 9),
        (1, 1),
        (999, 3),
        (3, 999),
    ];
    let mut s = SIZE_SEED;
    for _ in 0..8 {
        let mut next = |m: u64| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            1 + ((s >> 33) % m) as u32
        };
        v.push((next(1400), next(1400)));
    }
    eprintln!("random target sizes from seed {SIZE_SEED}: {:?}", &v[8..]);
    v
}

/// Spec variants: the two NanoDet-m specs, and the 320 spec with a keep-ratio and a letterbox
/// input section.
fn specs(dir: &Path) -> Vec<PathBuf> {
    let base = common::repo().join("models/specs/nanodet-m-320.json");
    let mut v = vec![
        base.clone(),
        common::repo().join("models/specs/nanodet-m-416.json"),
    ];
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&base).unwrap()).unwrap();
    let variants = [
        (
            "keep_ratio",
            serde_json::json!({"rule": "keep_ratio", "scale": [1333, 800]}),
            "rgb",
            32,
        ),
        (
            "letterbox",
            serde_json::json!({"rule": "letterbox", "width": 416, "height": 416, "pad_value": 114.0}),
            "bgr",
            1,
        ),
    ];
    for (name, resize, order, div) in variants {
        let mut j = json.clone();
        j["input"]["resize"] = resize;
        j["input"]["channel_order"] = order.into();
        j["input"]["mean"] = serde_json::json!([123.675, 116.28, 103.53]);
        j["input"]["std"] = serde_json::json!([58.395, 57.12, 57.375]);
        j["input"]["pad"] = serde_json::json!({"size_divisor": div, "value": 0.0});
        j["input"]["dynamic_hw"] = true.into();
        let p = dir.join(format!("{name}.json"));
        std::fs::write(&p, serde_json::to_string_pretty(&j).unwrap()).unwrap();
        v.push(p);
    }
    v
}

#[test]
fn preprocessing_equals_opencv_and_the_reference_bit_for_bit() {
    let (Some(py), Some(imgs)) = (common::venv_python(), images()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dump");
    let sizes = sizes();
    let specs = specs(dir.path());
    let size_arg: Vec<String> = sizes.iter().map(|(w, h)| format!("{w}x{h}")).collect();
    let mut cmd = std::process::Command::new(py);
    cmd.current_dir(common::repo())
        .args(["-m", "tools.reference.preprocess_dump"])
        .arg(&out)
        .arg("--sizes")
        .arg(size_arg.join(","));
    for s in &specs {
        cmd.arg("--spec").arg(s);
    }
    common::RunOk::run_ok(cmd.args(&imgs));

    let mut resized_checked = 0;
    let mut tensors_checked = 0;
    for path in &imgs {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let ours = load_image(path, true).unwrap();
        let (w, h) = ours.dimensions();
        let raw = std::fs::read(out.join(format!("{stem}.rgb"))).unwrap();
        assert_eq!(
            raw.len(),
            (w * h * 3) as usize,
            "{stem}: decoded size differs"
        );
        let cv_img = RgbImage::from_raw(w, h, raw).unwrap();
        let differing = differing_bytes(ours.as_raw(), cv_img.as_raw());
        let exact_decode =
            path.extension().is_some_and(|x| x == "png") || common::libjpeg_required();
        if exact_decode {
            assert_eq!(differing, 0, "{stem}: decode differs from cv2.imdecode");
        } else {
            eprintln!(
                "{stem}: JPEG decode vs cv2.imdecode: {:.3}% of bytes differ",
                100.0 * differing as f64 / ours.as_raw().len() as f64
            );
        }
        // resize kernel, from OpenCV's own decoded pixels
        for &(dw, dh) in &sizes {
            let want = std::fs::read(out.join(format!("{stem}.{dw}x{dh}.rgb"))).unwrap();
            let got = resize_linear_cv2(&cv_img, dw, dh).unwrap();
            if got.as_raw() != &want {
                let n = differing_bytes(got.as_raw(), &want);
                panic!("{stem} {w}x{h} -> {dw}x{dh}: {n} bytes differ from cv2.resize");
            }
            resized_checked += 1;
        }
        // whole tensor through the Preprocessor
        for (k, sp) in specs.iter().enumerate() {
            let spec = DetectorSpec::from_json(&std::fs::read_to_string(sp).unwrap(), sp).unwrap();
            let mut pre = Preprocessor::new(&spec.input);
            // from our own decode where it is exact (the whole pipeline), else from OpenCV's
            pre.run(if exact_decode { &ours } else { &cv_img }).unwrap();
            let bytes = std::fs::read(out.join(format!("{stem}.spec{k}.f32"))).unwrap();
            let want: Vec<u32> = bytes
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let got: Vec<u32> = pre.tensor().iter().map(|v| v.to_bits()).collect();
            assert_eq!(
                got.len(),
                want.len(),
                "{stem} spec {}: tensor size",
                sp.display()
            );
            let n = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(
                n,
                0,
                "{stem} spec {}: {n} tensor values differ",
                sp.display()
            );
            tensors_checked += 1;
        }
    }
    eprintln!(
        "{resized_checked} resizes and {tensors_checked} tensors bit-equal to OpenCV / the reference"
    );
    assert_eq!(resized_checked, imgs.len() * sizes.len());
}

/// JPEG variants (grayscale, progressive, 4:4:4, 4:2:2, restart markers, low quality with odd
/// size) encoded by OpenCV from a real photo decode exactly as `cv2.imdecode` decodes them.
#[test]
fn jpeg_variants_decode_like_opencv() {
    let (Some(py), Some(src)) = (
        common::venv_python(),
        common::shared("photos/registry/blood_smear_cbc.jpg"),
    ) else {
        return;
    };
    if !common::libjpeg_required() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("variants");
    let mut cmd = std::process::Command::new(py);
    cmd.current_dir(common::repo())
        .args(["-m", "tools.reference.preprocess_dump"])
        .arg(&out)
        .arg("--jpeg-variants")
        .arg(&src);
    common::RunOk::run_ok(&mut cmd);
    let names = [
        "gray",
        "progressive",
        "s444",
        "s422",
        "restart",
        "q30_odd_size",
    ];
    for name in names {
        let path = out.join(format!("{name}.jpg"));
        let ours = load_image(&path, true).unwrap();
        let want = std::fs::read(out.join(format!("{name}.jpg.rgb"))).unwrap();
        assert_eq!(
            ours.as_raw().len(),
            want.len(),
            "{name}: decoded size {}x{}",
            ours.width(),
            ours.height()
        );
        let n = differing_bytes(ours.as_raw(), &want);
        assert_eq!(n, 0, "{name}: {n} bytes differ from cv2.imdecode");
    }
    eprintln!(
        "{} JPEG variants decode exactly like cv2.imdecode",
        names.len()
    );
}
