//! Hostile inputs against the `anchorkit` binary and the library parsers: decompression bombs,
//! truncated and odd images, bad specs and datasets, outputs that name an input, `--draw` into
//! the input folder, SIGINT in the middle of a batch, two runs writing one file. Every run must
//! exit with 0, 1 or 2 (130 when interrupted), never panic, keep the results of the good files,
//! leave its inputs byte for byte as they were, give new files the umask mode and leave no temp
//! file. The corpus is made here in a temp folder (bombs included). The parsers get property
//! tests: any bytes give `Ok` or an error, never a panic.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{repo, s};

fn run(args: &[&str]) -> Output {
    common::anchorkit()
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::null())
        .output()
        .expect("run anchorkit")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit status in {0, 1, 2} (or `expect`) and no panic message.
fn assert_sane(o: &Output, expect: i32) {
    let e = stderr(o);
    assert!(!e.contains("panicked"), "panic: {e}");
    assert_eq!(o.status.code(), Some(expect), "{e}");
}

/// Every file under `dir` with its bytes (recursively).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            m.extend(snapshot(&p));
        } else {
            m.insert(p.clone(), std::fs::read(&p).unwrap());
        }
    }
    m
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    snapshot(dir)
        .into_keys()
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// The mode the kernel gives a plain new file here: 0666 & !umask.
fn umask_mode() -> u32 {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("probe");
    std::fs::File::create(&p).unwrap();
    mode(&p)
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A valid PNG whose header claims `w` x `h` RGB8 pixels, with a few bytes of image data.
fn png_bomb(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8; 4], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    // zlib stream of 1 KB of zeros (a filter byte and black pixels of the first row)
    chunk(
        b"IDAT",
        &[
            0x78, 0x9c, 0x63, 0x60, 0x18, 0x05, 0xa3, 0x60, 0x14, 0x0c, 0x77, 0x00, 0x00, 0x04,
            0x00, 0x00, 0x01,
        ],
    );
    chunk(b"IEND", &[]);
    out
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 90]));
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    out
}

/// A small real JPEG whose SOF0 frame header is patched to claim `w` x `h` pixels.
fn jpeg_bomb(w: u16, h: u16) -> Vec<u8> {
    let mut b = jpeg(16, 16);
    let sof = b
        .windows(2)
        .position(|x| x == [0xff, 0xc0])
        .expect("baseline SOF0");
    b[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    b[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    b
}

fn png(img: &image::RgbImage) -> Vec<u8> {
    let mut c = std::io::Cursor::new(Vec::new());
    img.write_to(&mut c, image::ImageFormat::Png).unwrap();
    c.into_inner()
}

/// Good images (the sample photo, a small PNG), bombs, truncated and odd files in `dir`.
fn corpus(dir: &Path) -> Vec<&'static str> {
    let smear = std::fs::read(repo().join("samples/blood_smear.jpg")).unwrap();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("a_good.jpg", smear.clone()),
        (
            "b_good.png",
            png(&image::RgbImage::from_fn(96, 64, |x, y| {
                image::Rgb([(x * 2) as u8, (y * 3) as u8, 128])
            })),
        ),
        ("bomb.png", png_bomb(60000, 60000)),
        ("bomb.jpg", jpeg_bomb(65000, 65000)),
        ("truncated.jpg", smear[..smear.len() * 3 / 5].to_vec()),
        ("empty.jpg", vec![]),
        ("text.png", b"this is not an image\n".to_vec()),
        ("one_pixel.png", png(&image::RgbImage::new(1, 1))),
        ("header_only.png", png_bomb(64, 64)[..33].to_vec()),
    ];
    for (n, b) in &files {
        std::fs::write(dir.join(n), b).unwrap();
    }
    vec!["a_good.jpg", "b_good.png", "one_pixel.png"]
}

/// The JSONL lines of `p` by image file name.
fn jsonl_images(p: &Path) -> BTreeMap<String, serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("complete JSON line");
            let name = Path::new(v["image"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (name, v)
        })
        .collect()
}

#[test]
fn a_batch_with_bombs_and_broken_files_keeps_the_good_results() {
    if !common::runtime_ok() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in");
    let outdir = d.path().join("out");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::create_dir_all(&outdir).unwrap();
    let good = corpus(&input);
    let before = snapshot(&input);
    let out = outdir.join("r.jsonl");
    let csv = outdir.join("r.csv");
    // an existing output keeps its mode
    std::fs::write(&csv, "old").unwrap();
    std::fs::set_permissions(&csv, std::fs::Permissions::from_mode(0o640)).unwrap();
    let o = run(&[
        "detect",
        "--jsonl",
        s(&out),
        "--csv",
        s(&csv),
        "--draw",
        s(&outdir.join("drawn")),
        s(&input),
    ]);
    assert_sane(&o, 1);
    let e = stderr(&o);
    for bad in [
        "bomb.png",
        "bomb.jpg",
        "truncated.jpg",
        "empty.jpg",
        "text.png",
        "header_only.png",
    ] {
        assert!(
            e.lines()
                .any(|l| l.starts_with("error: ") && l.contains(bad)),
            "{bad} not reported: {e}"
        );
    }
    assert!(
        e.contains("60000x60000") && e.contains("65000x65000"),
        "{e}"
    );
    assert!(e.contains("3 images done, 6 failed"), "{e}");
    let lines = jsonl_images(&out);
    assert_eq!(lines.keys().collect::<Vec<_>>(), good, "{e}");
    assert!(
        lines["a_good.jpg"]["detections"].as_array().unwrap().len() > 20,
        "the smear has many cells"
    );
    let csv_text = std::fs::read_to_string(&csv).unwrap();
    assert!(csv_text.starts_with("image,") && csv_text.contains("a_good.jpg"));
    assert_eq!(mode(&csv), 0o640);
    assert_eq!(mode(&out), umask_mode());
    let drawn = outdir.join("drawn/a_good.jpg");
    assert_eq!(mode(&drawn), umask_mode());
    assert!(image::open(&drawn).is_ok());
    assert_eq!(snapshot(&input), before, "an input changed");
    assert!(
        temp_files(d.path()).is_empty(),
        "{:?}",
        temp_files(d.path())
    );
}

#[test]
fn outputs_that_would_replace_an_input_are_refused_before_any_work() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    corpus(&input);
    let before = snapshot(&input);
    let img = input.join("a_good.jpg");
    let link = d.path().join("link.jpg");
    std::os::unix::fs::symlink(&img, &link).unwrap();
    for (args, want) in [
        (
            vec!["--jsonl", s(&img), s(&img)],
            "refusing to overwrite an input",
        ),
        (
            vec!["--csv", s(&link), s(&input)],
            "refusing to overwrite an input",
        ),
        (
            vec!["--coco-results", s(&img), "--coco-gt", s(&img), s(&img)],
            "refusing to overwrite an input",
        ),
        (
            vec!["--draw", s(&input), s(&input)],
            "would replace the input",
        ),
        (vec!["--jsonl", s(&input), s(&img)], "is a folder"),
        (
            vec![
                "--jsonl",
                s(&d.path().join("o.x")),
                "--csv",
                s(&d.path().join("o.x")),
                s(&img),
            ],
            "both name",
        ),
    ] {
        let mut a = vec!["detect"];
        a.extend(args);
        let o = run(&a);
        assert_sane(&o, 2);
        let e = stderr(&o);
        assert!(e.contains(want), "{a:?}: {e}");
        // refused before the model ran: no per-run summary
        assert!(
            !e.contains("images done") && !e.contains("image done"),
            "{e}"
        );
    }
    // a missing or unwritable folder: the user's path, once, no temp file name
    let missing = d.path().join("nope/out.jsonl");
    let o = run(&["detect", "--jsonl", s(&missing), s(&img)]);
    assert_sane(&o, 2);
    let e = stderr(&o);
    assert_eq!(e.matches(s(&missing)).count(), 1, "{e}");
    assert!(
        e.contains("does not exist") && !e.contains(".out.jsonl."),
        "{e}"
    );
    if unsafe_is_root() {
        eprintln!("running as root: the read-only folder case cannot fail a write");
    } else {
        let ro = d.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        let o = run(&["detect", "--jsonl", s(&ro.join("o.jsonl")), s(&img)]);
        assert_sane(&o, 2);
        assert!(stderr(&o).contains("permission denied"), "{}", stderr(&o));
    }
    assert_eq!(snapshot(&input), before, "an input changed");
    assert!(temp_files(d.path()).is_empty());
}

fn unsafe_is_root() -> bool {
    // root can write into a 0555 folder
    std::env::var("USER").is_ok_and(|u| u == "root")
        || std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

#[test]
fn sigint_in_a_batch_writes_the_finished_images_and_exits_130() {
    if !common::runtime_ok() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let smear = repo().join("samples/blood_smear.jpg");
    std::fs::copy(&smear, input.join("img000.jpg")).unwrap();
    for i in 1..60 {
        std::fs::hard_link(
            input.join("img000.jpg"),
            input.join(format!("img{i:03}.jpg")),
        )
        .unwrap();
    }
    let csv = d.path().join("out.csv");
    let mut child = common::anchorkit()
        .args(["detect", "--csv", s(&csv), s(&input)])
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // wait for two per-image summaries on stdout, then interrupt
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = 0;
    let t = Instant::now();
    while seen < 2 && t.elapsed() < Duration::from_secs(120) {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() == 0 {
            break;
        }
        if line.contains("detections") {
            seen += 1;
        }
    }
    assert_eq!(seen, 2, "the batch did not start");
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // a run that does not stop is killed after 90 s, so the test fails instead of hanging
    let pid = child.id().to_string();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(90));
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
    });
    let rest = std::io::read_to_string(stdout).unwrap();
    let o = child.wait_with_output().unwrap();
    let e = stderr(&o);
    assert!(!e.contains("panicked"), "{e}");
    assert_eq!(o.status.code(), Some(130), "{e}");
    assert!(e.contains("interrupted"), "{e}");
    let done = 2 + rest.lines().filter(|l| l.contains("detections")).count();
    assert!(done < 60, "not interrupted: {done}");
    let text = std::fs::read_to_string(&csv).expect("results written");
    let images: std::collections::BTreeSet<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    // every image summarized on stdout has its rows, no other
    assert_eq!(images.len(), done, "{e}");
    let rows_per_image = text.lines().skip(1).count() / done;
    assert!(rows_per_image > 20);
    assert!(
        temp_files(d.path()).is_empty(),
        "{:?}",
        temp_files(d.path())
    );
}

#[test]
fn two_runs_writing_one_file_leave_one_complete_result() {
    if !common::runtime_ok() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a.png");
    let b = d.path().join("b.png");
    let img = image::RgbImage::from_fn(128, 96, |x, y| image::Rgb([x as u8, y as u8, 77]));
    std::fs::write(&a, png(&img)).unwrap();
    std::fs::write(&b, png(&img)).unwrap();
    let out = d.path().join("same.jsonl");
    let spawn = |inputs: &[&Path]| {
        let mut c = common::anchorkit();
        c.args(["detect", "--jsonl", s(&out)])
            .args(inputs.iter().map(|p| s(p)))
            .current_dir(repo())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let p1 = spawn(&[&a, &a, &a]);
    let p2 = spawn(&[&b, &b]);
    let (o1, o2) = (
        p1.wait_with_output().unwrap(),
        p2.wait_with_output().unwrap(),
    );
    assert_sane(&o1, 0);
    assert_sane(&o2, 0);
    // one run's complete output, never a mix or a truncation
    let text = std::fs::read_to_string(&out).unwrap();
    let names: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["image"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        names == vec![s(&a); 3] || names == vec![s(&b); 2],
        "{names:?}"
    );
    assert!(temp_files(d.path()).is_empty());
}

#[test]
fn a_tall_thin_image_gives_no_zero_width_boxes() {
    if !common::runtime_ok() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("tall.png");
    let img = image::RgbImage::from_fn(3, 10000, |x, y| {
        let v = ((y / 7 + x) % 255) as u8;
        image::Rgb([v, 255 - v, (y % 200) as u8])
    });
    std::fs::write(&p, png(&img)).unwrap();
    let sidecar = repo().join("models/specs/bccd_freeanchor_x24-smear.json");
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sidecar).unwrap()).unwrap();
    assert_eq!(spec["postprocess"]["min_bbox_size"], 0.0);
    // the same spec without min_bbox_size (mmdet 2.x: no size filter)
    spec["postprocess"]
        .as_object_mut()
        .unwrap()
        .remove("min_bbox_size");
    let v2 = d.path().join("v2.json");
    std::fs::write(&v2, spec.to_string()).unwrap();
    let zero_width = |extra: &[&str]| -> (usize, usize) {
        let out = d.path().join("o.jsonl");
        let mut a = vec!["detect", "--jsonl", s(&out)];
        a.extend(extra);
        a.push(s(&p));
        let o = run(&a);
        assert_sane(&o, 0);
        let v = &jsonl_images(&out)["tall.png"];
        let dets = v["detections"].as_array().unwrap();
        let bad = dets
            .iter()
            .filter(|d| {
                let b = common::bbox(d);
                b[2] <= b[0] || b[3] <= b[1]
            })
            .count();
        (dets.len(), bad)
    };
    let (n_v2, bad_v2) = zero_width(&[
        "--model",
        "models/bccd_freeanchor_x24.onnx",
        "--spec",
        s(&v2),
    ]);
    assert!(bad_v2 > 0, "the case is not exercised: {n_v2} boxes");
    let (n, bad) = zero_width(&[]);
    assert_eq!(bad, 0, "{n} boxes");
    // the boxes with an area are kept (others may take the places of the dropped ones)
    assert!(n >= n_v2 - bad_v2, "{n} < {n_v2} - {bad_v2}");
}

#[test]
fn bad_specs_models_datasets_and_arguments_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("x.png");
    std::fs::write(&img, png(&image::RgbImage::new(8, 8))).unwrap();
    let w = |name: &str, text: &str| {
        let p = d.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let garbage = w(
        "garbage.json",
        "{\"format\": \"anchorkit.detector/1\", \"classes\": 7",
    );
    let coco3 = w(
        "three.json",
        r#"{"images":[{"id":1,"file_name":"a.jpg","width":100,"height":100}],
            "annotations":[{"id":1,"image_id":1,"category_id":1,"bbox":[1,1,10,20]},
                           {"id":2,"image_id":1,"category_id":1,"bbox":[5,5,30,12]},
                           {"id":3,"image_id":1,"category_id":1,"bbox":[50,50,40,40]}],
            "categories":[{"id":1,"name":"tree"}]}"#,
    );
    let voc = w(
        "neg.xml",
        "<annotation><size><width>-1</width><height>50</height></size>\
         <object><name>a</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax>\
         <ymax>9</ymax></bndbox></object></annotation>",
    );
    let mut cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["anchors".into(), "--dataset".into(), s(&voc).into()],
            "image width is -1",
        ),
        (
            vec!["bench".into(), "--synthetic".into(), "0x0".into()],
            "zero size",
        ),
        (
            vec!["bench".into(), "--iters".into(), "0".into()],
            "--iters must be at least 1",
        ),
        (
            vec!["bench".into(), "--rounds".into(), "0".into()],
            "--rounds must be at least 1",
        ),
        (
            vec![
                "detect".into(),
                "--max-pixels".into(),
                "0".into(),
                s(&img).into(),
            ],
            "--max-pixels must be at least 1",
        ),
    ];
    for method in ["kmeans", "evolve", "learned"] {
        cases.push((
            [
                "anchors",
                "--dataset",
                s(&coco3),
                "--method",
                method,
                "--k",
                "4",
            ]
            .map(String::from)
            .to_vec(),
            "distinct box shape",
        ));
    }
    if common::runtime_ok() {
        cases.push((
            vec![
                "detect".into(),
                "--model".into(),
                s(d.path()).into(),
                "--spec".into(),
                s(&garbage).into(),
                s(&img).into(),
            ],
            "is a folder, not an ONNX model file",
        ));
        cases.push((
            vec![
                "detect".into(),
                "--spec".into(),
                s(&garbage).into(),
                s(&img).into(),
            ],
            "garbage.json",
        ));
    }
    for (args, want) in cases {
        let o = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_sane(&o, 2);
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
}

mod parsers {
    //! Property tests: the spec, COCO, VOC, YOLO and list parsers take any bytes (and any
    //! mutation of a valid file) without panicking.
    use anchorkit::dataset::{self, Format, ReadOptions};
    use proptest::prelude::*;
    use std::path::Path;

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 96,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    const SPEC: &str = include_str!("../models/specs/nanodet-m-320.json");
    const COCO: &str = r#"{"images":[{"id":1,"file_name":"a.jpg","width":640,"height":480}],
        "annotations":[{"id":1,"image_id":1,"category_id":3,"bbox":[10,20,30,40],"iscrowd":0}],
        "categories":[{"id":3,"name":"car"}]}"#;
    const VOC: &str = "<annotation><filename>a.jpg</filename><size><width>500</width>\
        <height>375</height><depth>3</depth></size><object><name>dog</name>\
        <difficult>0</difficult><bndbox><xmin>48</xmin><ymin>240</ymin><xmax>195</xmax>\
        <ymax>371</ymax></bndbox></object></annotation>";
    const YOLO: &str = "0 0.5 0.5 0.2 0.3\n1 0.1 0.1 0.05 0.05\n";
    const LIST: &str = "img/a.jpg 10,20,30,40,0 5,5,50,60,1\nimg/b.jpg\n";

    /// Hostile JSON values put in place of a leaf of a valid document.
    fn hostile_value() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            Just(serde_json::json!(null)),
            Just(serde_json::json!(0)),
            Just(serde_json::json!(-1)),
            Just(serde_json::json!(1e300)),
            Just(serde_json::json!(-1e-300)),
            Just(serde_json::json!(u64::MAX)),
            Just(serde_json::json!(i64::MIN)),
            Just(serde_json::json!(65535)),
            Just(serde_json::json!("")),
            Just(serde_json::json!("x")),
            Just(serde_json::json!([])),
            Just(serde_json::json!({})),
            Just(serde_json::json!([0, 0])),
            Just(serde_json::json!(true)),
        ]
    }

    /// Pointers to every node of a JSON document.
    fn pointers(v: &serde_json::Value, at: String, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    pointers(x, format!("{at}/{k}"), out);
                }
            }
            serde_json::Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    pointers(x, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
        out.push(at);
    }

    /// `base` with up to three nodes replaced or removed.
    fn mutate_json(base: &str, edits: &[(usize, Option<serde_json::Value>)]) -> String {
        let mut v: serde_json::Value = serde_json::from_str(base).unwrap();
        for (i, repl) in edits {
            let mut ptrs = vec![];
            pointers(&v, String::new(), &mut ptrs);
            let p = &ptrs[i % ptrs.len()];
            if p.is_empty() {
                continue;
            }
            match repl {
                Some(x) => {
                    if let Some(n) = v.pointer_mut(p) {
                        *n = x.clone();
                    }
                }
                None => {
                    let (parent, key) = p.rsplit_once('/').unwrap();
                    match v.pointer_mut(parent) {
                        Some(serde_json::Value::Object(m)) => {
                            m.remove(key);
                        }
                        Some(serde_json::Value::Array(a)) => {
                            if let Ok(k) = key.parse::<usize>()
                                && k < a.len()
                            {
                                a.remove(k);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        v.to_string()
    }

    fn json_edits() -> impl Strategy<Value = Vec<(usize, Option<serde_json::Value>)>> {
        prop::collection::vec((any::<usize>(), prop::option::of(hostile_value())), 1..4)
    }

    /// `base` with bytes replaced, inserted and deleted (from a small alphabet of structure).
    fn mutate_text(base: &str, edits: &[(usize, u8, u8)]) -> Vec<u8> {
        let mut b = base.as_bytes().to_vec();
        const ALPHA: &[u8] = b"<>/ -.,0123456789e\n\tx\"\xff\x00";
        for &(pos, op, c) in edits {
            let c = ALPHA[c as usize % ALPHA.len()];
            let i = pos % (b.len() + 1);
            match op % 3 {
                0 if i < b.len() => b[i] = c,
                1 => b.insert(i, c),
                _ if i < b.len() => {
                    b.remove(i);
                }
                _ => {}
            }
        }
        b
    }

    fn text_edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
        prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..12)
    }

    fn load(dir: &Path, name: &str, bytes: &[u8], format: Format) -> String {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, bytes).unwrap();
        let opts = ReadOptions {
            split: None,
            assume_size: Some((640, 480)),
        };
        let root = if format == Format::Yolo { dir } else { &p };
        match dataset::load(root, Some(format), &opts) {
            Ok(ds) => {
                // boxes that survive are inside their image and not degenerate
                for im in &ds.images {
                    for b in &im.boxes {
                        let [x1, y1, x2, y2] = b.bbox;
                        assert!(x1 < x2 && y1 < y2, "{b:?}");
                        assert!(x1 >= 0.0 && y1 >= 0.0, "{b:?}");
                        assert!(x2 <= im.size.0 as f64 && y2 <= im.size.1 as f64, "{b:?}");
                    }
                }
                String::new()
            }
            Err(e) => {
                let m = e.to_string();
                assert!(m.contains(name) || m.contains(s(dir)), "unnamed error: {m}");
                m
            }
        }
    }

    fn s(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn spec_parser_never_panics(edits in json_edits(), raw in prop::collection::vec(any::<u8>(), 0..64)) {
            let path = Path::new("fuzz.json");
            let text = mutate_json(SPEC, &edits);
            if let Ok(spec) = anchorkit::DetectorSpec::from_json(&text, path) {
                // a spec that passes its checks must also preprocess and build priors
                let mut pre = anchorkit::preprocess::Preprocessor::new(&spec.input);
                let img = image::RgbImage::new(7, 5);
                let _ = pre.run(&img);
            }
            let _ = anchorkit::DetectorSpec::from_json(&String::from_utf8_lossy(&raw), path);
        }

        #[test]
        fn coco_reader_never_panics(edits in json_edits(), raw in prop::collection::vec(any::<u8>(), 0..64)) {
            let d = tempfile::tempdir().unwrap();
            load(d.path(), "c.json", mutate_json(COCO, &edits).as_bytes(), Format::Coco);
            load(d.path(), "r.json", &raw, Format::Coco);
        }

        #[test]
        fn voc_reader_never_panics(edits in text_edits()) {
            let d = tempfile::tempdir().unwrap();
            load(d.path(), "a.xml", &mutate_text(VOC, &edits), Format::Voc);
        }

        #[test]
        fn yolo_reader_never_panics(edits in text_edits()) {
            let d = tempfile::tempdir().unwrap();
            load(d.path(), "labels/a.txt", &mutate_text(YOLO, &edits), Format::Yolo);
        }

        #[test]
        fn list_reader_never_panics(edits in text_edits()) {
            let d = tempfile::tempdir().unwrap();
            load(d.path(), "list.txt", &mutate_text(LIST, &edits), Format::List);
        }
    }
}

/// `bench --images` and `eval --images` take `--max-pixels` like `detect`: a real 0.8 MP photo
/// over a 0.1 MP limit is refused from its header, naming the file, without a panic.
#[test]
fn bench_and_eval_apply_max_pixels() {
    if !common::runtime_ok() {
        return common::skip("no ONNX Runtime");
    }
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo().join("samples/blood_smear.jpg"),
        d.path().join("smear.jpg"),
    )
    .unwrap();
    let o = run(&[
        "bench",
        "--images",
        s(d.path()),
        "--iters",
        "1",
        "--rounds",
        "1",
        "--max-pixels",
        "100000",
    ]);
    let e = stderr(&o);
    assert!(!e.contains("panicked"), "{e}");
    assert!(matches!(o.status.code(), Some(1 | 2)), "{e}");
    assert!(e.contains("smear.jpg") && e.contains("megapixels"), "{e}");
    let Some(bccd) = common::shared("data/bccd/BCCD") else {
        return;
    };
    let o = run(&[
        "eval",
        "--voc",
        s(&bccd),
        "--split",
        "test",
        "--model",
        "models/bccd_atss.onnx",
        "--images",
        s(&bccd.join("JPEGImages")),
        "--max-pixels",
        "1000",
    ]);
    let e = stderr(&o);
    assert!(!e.contains("panicked"), "{e}");
    assert!(matches!(o.status.code(), Some(1 | 2)), "{e}");
    assert!(e.contains("BloodImage_") && e.contains("megapixels"), "{e}");
}
