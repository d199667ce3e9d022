//! Tests of the dataset readers, box mapping, anchor generation, the shape optimizers and the
//! assigner-aware evaluation (against brute-force mmdet-literal implementations).
//! Data from `../shared` is used when present; those tests skip with a message otherwise.
#![allow(clippy::needless_range_loop)]

use anchorkit::Error;
use anchorkit::anchor_opt::anchors::{AnchorSet, Layout, atss_default, retinanet_default};
use anchorkit::anchor_opt::assign::{self, GridConfig, GtResult, eval_image, iou};
use anchorkit::anchor_opt::kmeans::{KmeansConfig, kmeans};
use anchorkit::anchor_opt::objective::ShapeProblem;
use anchorkit::dataset::mapping::Geometry;
use anchorkit::dataset::{self, Format, InputBoxes, MappedImage, ReadOptions, Resize};
use anchorkit::progress::{Progress, ProgressSink, Task};
use anchorkit::spec::{PriorSpec, ResizeRule};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

mod common;
use common::shared;

fn line_of_err(e: &Error) -> (PathBuf, Option<usize>, String) {
    match e {
        Error::Dataset { path, line, msg } => (path.clone(), *line, msg.clone()),
        other => panic!("expected a dataset error, got {other}"),
    }
}

// ---------------------------------------------------------------- readers

/// A dataset read with the default options (format detected).
fn load(p: &Path) -> dataset::Dataset {
    dataset::load(p, None, &ReadOptions::default()).unwrap()
}

/// The dataset error of reading `p` with the default options: (file, line, message).
fn load_err(p: &Path) -> (PathBuf, Option<usize>, String) {
    line_of_err(&dataset::load(p, None, &ReadOptions::default()).unwrap_err())
}

/// `../shared/<rel>` and its dataset read with the default options; `None` (after a SKIP line)
/// when absent.
fn load_shared(rel: &str) -> Option<(PathBuf, dataset::Dataset)> {
    let p = shared(rel)?;
    let ds = load(&p);
    Some((p, ds))
}

/// Reader options selecting the VOC split `name`.
fn split(name: &str) -> ReadOptions {
    ReadOptions {
        split: Some(name.into()),
        ..Default::default()
    }
}

/// Reader options taking every image as `w x h` (`--orig-size`).
fn sized(w: u32, h: u32) -> ReadOptions {
    ReadOptions {
        assume_size: Some((w, h)),
        ..Default::default()
    }
}

#[test]
fn coco_subset_matches_python_counts() {
    let Some((p, ds)) = load_shared("data/coco-val2017/instances_subset.json") else {
        return;
    };
    assert_eq!(ds.format, Format::Coco);
    // counts from json.load: images, non-crowd annotations with w, h > 0
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let anns = v["annotations"].as_array().unwrap();
    let crowd = anns
        .iter()
        .filter(|a| a["iscrowd"].as_u64() == Some(1))
        .count();
    assert_eq!(ds.images.len(), v["images"].as_array().unwrap().len());
    assert_eq!(ds.dropped.crowd, crowd);
    assert_eq!(ds.num_boxes() + ds.dropped.dropped(), anns.len());
    assert_eq!(ds.classes.len(), v["categories"].as_array().unwrap().len());
    // first annotation of image 139: bbox [236.98, 142.51, 24.7, 69.5], category 64
    let im = ds
        .images
        .iter()
        .find(|i| i.name == "000000000139.jpg")
        .unwrap();
    let b = im
        .boxes
        .iter()
        .find(|b| (b.bbox[0] - 236.98).abs() < 1e-9)
        .unwrap();
    assert!((b.bbox[3] - (142.51 + 69.5)).abs() < 1e-9);
    assert_eq!(ds.classes[b.class_id], "potted plant");
}

#[test]
fn coco_full_box_count() {
    let Some((_, ds)) = load_shared("data/coco-val2017/instances_val2017_boxes.json") else {
        return;
    };
    assert_eq!(ds.images.len(), 4952);
    assert_eq!(ds.num_boxes() + ds.dropped.dropped(), 36335);
}

#[test]
fn voc_bccd_file_and_split() {
    let Some(root) = shared("data/bccd/BCCD") else {
        return;
    };
    let one = load(&root.join("Annotations/BloodImage_00000.xml"));
    assert_eq!(one.images.len(), 1);
    let im = &one.images[0];
    assert_eq!(im.size, (640, 480));
    assert_eq!(im.boxes.len(), 20);
    assert_eq!(one.classes[im.boxes[0].class_id], "WBC");
    assert_eq!(im.boxes[0].bbox, [260.0, 177.0, 491.0, 376.0]);
    let tv = dataset::load(&root, Some(Format::Voc), &split("trainval")).unwrap();
    assert_eq!(tv.images.len(), 292);
    let te = dataset::load(&root, None, &split("test")).unwrap();
    assert_eq!(te.images.len(), 72);
    let all = load(&root);
    assert_eq!(all.images.len(), 364);
    // BCCD's annotations hold 4888 boxes; degenerate ones are counted, not lost
    assert_eq!(all.num_boxes() + all.dropped.dropped(), 4888);
}

#[test]
fn list_voc2007_reader() {
    let Some((p, ds)) = load_shared("data/voc2007/2007_test.txt") else {
        return;
    };
    assert_eq!(ds.format, Format::List);
    assert_eq!(ds.images.len(), 4952);
    assert_eq!(ds.num_boxes() + ds.dropped.dropped(), 12032);
    assert_eq!(ds.classes[11], "dog");
    // line 1: 48,240,195,371,11 8,12,352,498,14 -> size estimated as the box extent
    let im = &ds.images[0];
    assert!(!im.size_known);
    assert_eq!(im.size, (352, 498));
    assert_eq!(im.boxes[0].bbox, [48.0, 240.0, 195.0, 371.0]);
    assert_eq!(ds.classes[im.boxes[1].class_id], "person");
    assert_eq!(ds.warnings.len(), 1);
    // with --orig-size the size is taken as given
    let ds2 = dataset::load(&p, None, &sized(500, 500)).unwrap();
    assert!(ds2.images[0].size_known && ds2.images[0].size == (500, 500));
}

#[test]
fn yolo_reader_from_bccd_labels() {
    let Some(root) = shared("data/bccd/BCCD") else {
        return;
    };
    // real BCCD boxes converted to YOLO labels, with the real image beside them
    let xml = root.join("Annotations/BloodImage_00000.xml");
    let voc = load(&xml);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("labels")).unwrap();
    std::fs::create_dir_all(tmp.path().join("images")).unwrap();
    std::fs::copy(
        root.join("JPEGImages/BloodImage_00000.jpg"),
        tmp.path().join("images/BloodImage_00000.jpg"),
    )
    .unwrap();
    let mut txt = String::new();
    for b in &voc.images[0].boxes {
        let [x1, y1, x2, y2] = b.bbox;
        txt += &format!(
            "{} {} {} {} {}\n",
            b.class_id,
            (x1 + x2) / 2.0 / 640.0,
            (y1 + y2) / 2.0 / 480.0,
            (x2 - x1) / 640.0,
            (y2 - y1) / 480.0
        );
    }
    std::fs::write(tmp.path().join("labels/BloodImage_00000.txt"), txt).unwrap();
    let ds = load(tmp.path());
    assert_eq!(ds.format, Format::Yolo);
    assert_eq!(ds.images[0].size, (640, 480));
    for (a, b) in ds.images[0].boxes.iter().zip(&voc.images[0].boxes) {
        for k in 0..4 {
            assert!((a.bbox[k] - b.bbox[k]).abs() < 1e-6);
        }
        assert_eq!(a.class_id, b.class_id);
    }
}

#[test]
fn malformed_files_name_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    // COCO: syntax error on line 3
    let c = tmp.path().join("bad.json");
    std::fs::write(&c, "{\"images\": [\n {\"id\": 1, \"width\": 10, \"height\": 10}],\n \"annotations\": [ {\"image_id\": 1,, }]}").unwrap();
    let (p, l, _) = load_err(&c);
    assert_eq!((p, l), (c.clone(), Some(3)));
    // COCO: bbox with 3 numbers on line 4
    std::fs::write(&c, "{\"images\": [{\"id\": 1, \"width\": 10, \"height\": 10}],\n\"categories\": [{\"id\": 1, \"name\": \"a\"}],\n\"annotations\": [\n{\"image_id\": 1, \"category_id\": 1, \"bbox\": [1, 2, 3]}]}").unwrap();
    let (_, l, _) = load_err(&c);
    assert_eq!(l, Some(4));
    // VOC: non-numeric xmax on line 8
    let x = tmp.path().join("a.xml");
    std::fs::write(&x, "<annotation>\n<size><width>100</width><height>80</height></size>\n<object>\n<name>cat</name>\n<bndbox>\n<xmin>1</xmin>\n<ymin>2</ymin>\n<xmax>abc</xmax>\n<ymax>9</ymax>\n</bndbox>\n</object>\n</annotation>\n").unwrap();
    let e = dataset::load(&x, None, &ReadOptions::default()).unwrap_err();
    let (p, l, m) = line_of_err(&e);
    assert_eq!((p, l), (x.clone(), Some(8)));
    assert!(m.contains("xmax"), "{m}");
    assert!(e.to_string().contains("a.xml:8"), "{e}");
    // VOC: missing <size>
    std::fs::write(
        &x,
        "<annotation>\n<object><name>a</name></object>\n</annotation>",
    )
    .unwrap();
    let (_, l, m) = load_err(&x);
    assert_eq!(l, Some(1));
    assert!(m.contains("size"));
    // list: bad box on line 2
    let t = tmp.path().join("l.txt");
    std::fs::write(&t, "a.jpg 1,2,3,4,0\nb.jpg 1,2,3,0\n").unwrap();
    let (p, l, _) = load_err(&t);
    assert_eq!((p, l), (t.clone(), Some(2)));
    // YOLO: 4 fields on line 2
    let yd = tmp.path().join("y");
    std::fs::create_dir_all(&yd).unwrap();
    let yl = yd.join("img.txt");
    std::fs::write(&yl, "0 0.5 0.5 0.1 0.1\n1 0.5 0.5 0.1\n").unwrap();
    let e = dataset::load(&yd, Some(Format::Yolo), &sized(100, 100)).unwrap_err();
    let (p, l, _) = line_of_err(&e);
    assert_eq!((p, l), (yl.clone(), Some(2)));
    // YOLO without an image or --orig-size: names the label file
    std::fs::write(&yl, "0 0.5 0.5 0.1 0.1\n").unwrap();
    let (p, _, m) =
        line_of_err(&dataset::load(&yd, Some(Format::Yolo), &ReadOptions::default()).unwrap_err());
    assert_eq!(p, yl);
    assert!(m.contains("--orig-size"));
}

#[test]
fn degenerate_boxes_are_counted_and_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("l.txt");
    // ok, zero width, inverted, outside, partly outside (clipped)
    std::fs::write(
        &t,
        "a.jpg 1,2,30,40,0 5,5,5,9,0 9,9,3,3,0 200,200,250,250,0 90,90,120,95,0\n",
    )
    .unwrap();
    let ds = dataset::load(&t, None, &sized(100, 100)).unwrap();
    assert_eq!(ds.images[0].boxes.len(), 2);
    assert_eq!(ds.dropped.degenerate, 2);
    assert_eq!(ds.dropped.outside, 1);
    assert_eq!(ds.dropped.clipped, 1);
    assert_eq!(ds.images[0].boxes[1].bbox, [90.0, 90.0, 100.0, 95.0]);
}

// ---------------------------------------------------------------- mapping + anchors

#[test]
fn keep_ratio_mapping_matches_mmdet_worked_sizes() {
    let r = Resize::default();
    // reference 1.3 worked sizes
    let g = r.plan(640, 480);
    assert_eq!(g.content, (1067, 800));
    assert_eq!(g.padded, (1088, 800));
    assert!((g.scale.0 - 1.6671875).abs() < 1e-9 && (g.scale.1 - 800.0 / 480.0).abs() < 1e-9);
    let g = r.plan(1920, 1080);
    assert_eq!((g.content, g.padded), ((1333, 750), (1344, 768)));
    let g = r.plan(427, 640);
    assert_eq!((g.content, g.padded), ((800, 1199), (800, 1216)));
    assert_eq!(
        assign::grid_sizes(g.padded, &[8, 16, 32, 64, 128]),
        vec![(152, 100), (76, 50), (38, 25), (19, 13), (10, 7)]
    );
    let s = Resize {
        rule: Some(ResizeRule::Letterbox {
            width: 640,
            height: 640,
            pad_value: 114.0,
        }),
        size_divisor: 32,
    };
    let g = s.plan(640, 480);
    assert_eq!(
        (g.content, g.offset, g.padded),
        ((640, 480), (0, 80), (640, 640))
    );
}

#[test]
fn mmdet_base_anchors_bit_exact() {
    let set = AnchorSet::from_spec(&retinanet_default(), &[8, 16, 32, 64, 128]).unwrap();
    let b = set.base[0][0];
    assert_eq!(b[2].to_bits(), 0x41b504f3);
    assert_eq!(b[3].to_bits(), 0x413504f3);
    assert_eq!(set.base[0][1][2].to_bits(), 0x41e411f0);
    assert_eq!(set.base[0][2][2].to_bits(), 0x420facd6);
    assert_eq!(set.base[0][3], [-16.0, -16.0, 16.0, 16.0]);
    assert!((set.base[4][2][2] - 574.700_56).abs() < 1e-4);
    assert!((set.base[4][8][3] - 574.700_56).abs() < 1e-4);
    let atss = AnchorSet::from_spec(&atss_default(), &[8, 16, 32, 64, 128]).unwrap();
    assert_eq!(atss.base[2], vec![[-128.0, -128.0, 128.0, 128.0]]);
}

// ---------------------------------------------------------------- optimizers

/// Tight clusters of shapes around known centres.
fn clusters(centres: &[[f32; 2]], per: usize, jitter: f32, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut w, mut h) = (Vec::new(), Vec::new());
    for c in centres {
        for _ in 0..per {
            w.push(c[0] * (1.0 + jitter * (rng.random::<f32>() * 2.0 - 1.0)));
            h.push(c[1] * (1.0 + jitter * (rng.random::<f32>() * 2.0 - 1.0)));
        }
    }
    (w, h)
}

fn assert_recovers(found: &[[f32; 2]], truth: &[[f32; 2]], tol: f32) {
    for t in truth {
        let best = found
            .iter()
            .map(|f| ((f[0] / t[0]).ln().abs()).max((f[1] / t[1]).ln().abs()))
            .fold(f32::INFINITY, f32::min);
        assert!(best < tol, "centre {t:?} not recovered: {found:?}");
    }
}

#[test]
fn kmeans_recovers_synthetic_clusters() {
    let truth = [[12.0, 30.0], [40.0, 40.0], [90.0, 35.0], [160.0, 240.0]];
    let (w, h) = clusters(&truth, 500, 0.04, 7);
    let p = ShapeProblem::new(w, h, None);
    let cfg = KmeansConfig {
        k: 4,
        seed: 3,
        ..Default::default()
    };
    let r = kmeans(&p, &cfg);
    assert_recovers(&r.shapes, &truth, 0.02);
    assert!(r.mean_iou > 0.95, "{}", r.mean_iou);
    assert!(r.mean_iou >= r.mean_iou_lloyd);
    // deterministic for a seed
    assert_eq!(r.shapes, kmeans(&p, &cfg).shapes);
}

#[test]
fn kmeans_fpn_layout_is_scale_equivariant() {
    // the same two shapes (in stride units) at strides 8 and 32: the fpn layout finds them
    let truth = [[4.0f32, 8.0], [6.0, 3.0]];
    let mut centres = Vec::new();
    for s in [8.0f32, 32.0] {
        for t in truth {
            centres.push([t[0] * s, t[1] * s]);
        }
    }
    let (w, h) = clusters(&centres, 300, 0.03, 1);
    let p = ShapeProblem::new(w, h, Some(&[8, 16, 32, 64, 128]));
    let r = kmeans(
        &p,
        &KmeansConfig {
            k: 2,
            seed: 0,
            ..Default::default()
        },
    );
    // shapes are defined up to a factor 2 (one octave) in the fpn layout
    let norm = |s: [f32; 2]| {
        let mut s = s;
        while s[0] * s[1] > 64.0 {
            s = [s[0] / 2.0, s[1] / 2.0];
        }
        while s[0] * s[1] <= 16.0 {
            s = [s[0] * 2.0, s[1] * 2.0];
        }
        s
    };
    let found: Vec<_> = r.shapes.iter().map(|&s| norm(s)).collect();
    let want: Vec<_> = truth.iter().map(|&s| norm(s)).collect();
    assert_recovers(&found, &want, 0.03);
    assert!(r.mean_iou > 0.93, "{}", r.mean_iou);
}

#[test]
fn shape_scores_match_direct_formulas() {
    let (w, h) = clusters(&[[10.0, 20.0], [50.0, 25.0]], 50, 0.5, 2);
    let p = ShapeProblem::new(w.clone(), h.clone(), Some(&[8, 16]));
    let shapes = [[1.5f32, 2.5], [4.0, 2.0]];
    let s = p.scores(&shapes, 4.0);
    let (mut mi, mut bpr, mut fit, mut aat, mut focal) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
    for i in 0..w.len() {
        let (mut bi, mut br) = (0f64, 0f64);
        for st in [8.0f64, 16.0] {
            for a in shapes {
                let (aw, ah) = (a[0] as f64 * st, a[1] as f64 * st);
                let (bw, bh) = (w[i] as f64, h[i] as f64);
                let inter = bw.min(aw) * bh.min(ah);
                bi = bi.max(inter / (bw * bh + aw * ah - inter));
                let x = (bw / aw).min(aw / bw).min((bh / ah).min(ah / bh));
                br = br.max(x);
                aat += (x > 0.25) as u32 as f64;
            }
        }
        mi += bi;
        focal += -(1.0 - bi).powi(2) * bi.ln();
        if br > 0.25 {
            bpr += 1.0;
            fit += br;
        }
    }
    let n = w.len() as f64;
    assert!((s.mean_iou - mi / n).abs() < 1e-5);
    assert!((s.focal - focal / n).abs() < 1e-5);
    assert!((s.bpr - bpr / n).abs() < 1e-12);
    assert!((s.fitness - fit / n).abs() < 1e-5);
    assert!((s.aat - aat / n).abs() < 1e-12);
}

// ---------------------------------------------------------------- grid metrics vs brute force

struct Brute {
    anchors: Vec<[f32; 4]>,
    level_of: Vec<usize>,
    level_ranges: Vec<(usize, usize)>,
}

fn brute_anchors(set: &AnchorSet, padded: (u32, u32)) -> Brute {
    let sizes = assign::grid_sizes(padded, &set.strides);
    let mut anchors = Vec::new();
    let mut level_of = Vec::new();
    let mut level_ranges = Vec::new();
    for (l, &(h, w)) in sizes.iter().enumerate() {
        let s = set.strides[l] as f32;
        let start = anchors.len();
        for y in 0..h {
            for x in 0..w {
                for b in &set.base[l] {
                    let (sx, sy) = (x as f32 * s, y as f32 * s);
                    anchors.push([b[0] + sx, b[1] + sy, b[2] + sx, b[3] + sy]);
                    level_of.push(l);
                }
            }
        }
        level_ranges.push((start, anchors.len()));
    }
    Brute {
        anchors,
        level_of,
        level_ranges,
    }
}

/// mmdet-literal assigners on the full anchor list.
fn brute_eval(img: &MappedImage, set: &AnchorSet) -> Vec<GtResult> {
    let b = brute_anchors(set, img.geometry.padded);
    let n = b.anchors.len();
    let gts = &img.boxes;
    let g = gts.len();
    let ov: Vec<Vec<f32>> = gts
        .iter()
        .map(|gt| b.anchors.iter().map(|a| iou(a, gt)).collect())
        .collect();
    // ATSS
    let mut atss_ov = vec![vec![f32::NEG_INFINITY; n]; g];
    for (gi, gt) in gts.iter().enumerate() {
        let gcx = (gt[0] + gt[2]) / 2.0;
        let gcy = (gt[1] + gt[3]) / 2.0;
        let mut cand = Vec::new();
        for &(s, e) in &b.level_ranges {
            let mut d: Vec<(f32, usize)> = (s..e)
                .map(|i| {
                    let a = b.anchors[i];
                    let (cx, cy) = ((a[0] + a[2]) / 2.0, (a[1] + a[3]) / 2.0);
                    (
                        ((cx - gcx) * (cx - gcx) + (cy - gcy) * (cy - gcy)).sqrt(),
                        i,
                    )
                })
                .collect();
            d.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
            cand.extend(d.iter().take(9.min(e - s)).map(|x| x.1));
        }
        let vals: Vec<f32> = cand.iter().map(|&i| ov[gi][i]).collect();
        let m = vals.iter().sum::<f32>() / vals.len() as f32;
        let sd =
            (vals.iter().map(|v| (v - m) * (v - m)).sum::<f32>() / (vals.len() - 1) as f32).sqrt();
        for &i in &cand {
            let a = b.anchors[i];
            let (cx, cy) = ((a[0] + a[2]) / 2.0, (a[1] + a[3]) / 2.0);
            let inside = (cx - gt[0]).min(cy - gt[1]).min(gt[2] - cx).min(gt[3] - cy) > 0.01;
            if ov[gi][i] >= m + sd && inside {
                atss_ov[gi][i] = ov[gi][i];
            }
        }
    }
    let mut atss = vec![0u32; g];
    for i in 0..n {
        let mut best = (f32::NEG_INFINITY, usize::MAX);
        for gi in 0..g {
            if atss_ov[gi][i] > best.0 {
                best = (atss_ov[gi][i], gi);
            }
        }
        if best.0 != f32::NEG_INFINITY {
            atss[best.1] += 1;
        }
    }
    // max-IoU
    let mut asg = vec![usize::MAX; n];
    let mut hq = vec![0u32; g];
    for i in 0..n {
        let mut best = (-1.0f32, 0usize);
        for gi in 0..g {
            if ov[gi][i] > best.0 {
                best = (ov[gi][i], gi);
            }
        }
        if best.0 >= 0.5 {
            asg[i] = best.1;
            hq[best.1] += 1;
        }
    }
    let gmax: Vec<f32> = ov
        .iter()
        .map(|r| r.iter().cloned().fold(0.0, f32::max))
        .collect();
    for gi in 0..g {
        if gmax[gi] > 0.0 {
            for i in 0..n {
                if ov[gi][i] == gmax[gi] {
                    asg[i] = gi;
                }
            }
        }
    }
    let mut maxiou = vec![0u32; g];
    for &a in &asg {
        if a != usize::MAX {
            maxiou[a] += 1;
        }
    }
    let _ = &b.level_of;
    // bags
    let bag: Vec<f32> = ov
        .iter()
        .map(|r| {
            let mut v = r.clone();
            v.sort_by(|a, b| b.total_cmp(a));
            (v.iter().take(50).map(|&x| x as f64).sum::<f64>() / 50.0) as f32
        })
        .collect();
    // Pseudo-IoU, literal: every point against every gt
    let sizes = assign::grid_sizes(img.geometry.padded, &set.strides);
    let ranges = assign::regress_ranges(&set.strides);
    let mut piou = vec![0u32; g];
    for (l, &(gh, gw)) in sizes.iter().enumerate() {
        let s = set.strides[l];
        for y in 0..gh {
            for x in 0..gw {
                let px = (x as u32 * s) as f32 + (s / 2) as f32;
                let py = (y as u32 * s) as f32 + (s / 2) as f32;
                let mut best = (f32::INFINITY, usize::MAX);
                for (gi, gt) in gts.iter().enumerate() {
                    let (le, t, r, bb) = (px - gt[0], py - gt[1], gt[2] - px, gt[3] - py);
                    let mx = le.max(t).max(r).max(bb);
                    if le.min(t).min(r).min(bb) > 0.0 && mx >= ranges[l].0 && mx <= ranges[l].1 {
                        let area = (gt[2] - gt[0]) * (gt[3] - gt[1]);
                        if area < best.0 {
                            best = (area, gi);
                        }
                    }
                }
                if best.1 != usize::MAX {
                    let gt = gts[best.1];
                    let (le, t, r, bb) = (px - gt[0], py - gt[1], gt[2] - px, gt[3] - py);
                    let (w, h) = (le + r, t + bb);
                    let inter =
                        (le.min(w / 2.0) + r.min(w / 2.0)) * (t.min(h / 2.0) + bb.min(h / 2.0));
                    if inter / (2.0 * w * h - inter) > 0.4 {
                        piou[best.1] += 1;
                    }
                }
            }
        }
    }
    (0..g)
        .map(|i| GtResult {
            class_id: img.classes[i],
            best_iou: gmax[i],
            atss_pos: atss[i],
            maxiou_pos: maxiou[i],
            maxiou_hq: hq[i],
            bag_iou: bag[i],
            piou_pos: piou[i],
        })
        .collect()
}

fn synthetic_image(rng: &mut ChaCha8Rng, padded: (u32, u32), n: usize) -> MappedImage {
    let mut boxes = Vec::new();
    for i in 0..n {
        let (pw, ph) = (padded.0 as f32, padded.1 as f32);
        let b = match i % 5 {
            // integer boxes on the grid (centre-distance ties)
            0 => {
                let x = (rng.random_range(0..padded.0 / 8) * 8) as f32;
                let y = (rng.random_range(0..padded.1 / 8) * 8) as f32;
                let s = (rng.random_range(1..12) * 8) as f32;
                [x, y, (x + s).min(pw), (y + s * 0.5).min(ph)]
            }
            // tiny
            1 => {
                let x = rng.random::<f32>() * (pw - 6.0);
                let y = rng.random::<f32>() * (ph - 6.0);
                [x, y, x + 2.0 + rng.random::<f32>() * 4.0, y + 3.0]
            }
            // duplicate of the previous box (ties between gts)
            2 if !boxes.is_empty() => *boxes.last().unwrap(),
            // large, touching the border
            3 => [
                0.0,
                rng.random::<f32>() * ph * 0.3,
                pw * (0.5 + 0.5 * rng.random::<f32>()),
                ph,
            ],
            _ => {
                let w = 4.0 + rng.random::<f32>() * pw * 0.6;
                let h = 4.0 + rng.random::<f32>() * ph * 0.6;
                let x = rng.random::<f32>() * (pw - w);
                let y = rng.random::<f32>() * (ph - h);
                [x, y, x + w, y + h]
            }
        };
        boxes.push(b);
    }
    let classes = (0..boxes.len() as u32).map(|i| i % 3).collect();
    MappedImage {
        geometry: Geometry {
            content: padded,
            padded,
            offset: (0, 0),
            scale: (1.0, 1.0),
        },
        boxes,
        classes,
    }
}

#[test]
fn grid_metrics_equal_brute_force() {
    let strides = [8u32, 16, 32, 64, 128];
    let sets = [
        AnchorSet::from_spec(&retinanet_default(), &strides).unwrap(),
        AnchorSet::from_spec(&atss_default(), &strides).unwrap(),
        AnchorSet::from_spec(
            &PriorSpec::ExplicitAnchors {
                per_level: AnchorSet::layout_shapes(
                    &[[1.3, 2.1], [3.0, 1.2], [6.5, 7.0]],
                    Layout::Fpn,
                    &strides,
                )
                .unwrap(),
                center_offset: 0.5,
            },
            &strides,
        )
        .unwrap(),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let cfg = GridConfig::default();
    for (si, set) in sets.iter().enumerate() {
        for t in 0..4 {
            let padded = [(320, 256), (128, 96), (640, 480), (96, 352)][t];
            let img = synthetic_image(&mut rng, padded, 12);
            let fast = eval_image(&img, set, &cfg);
            let slow = brute_eval(&img, set);
            for (i, (a, b)) in fast.iter().zip(&slow).enumerate() {
                let ctx = format!(
                    "set {si} image {t} gt {i} {:?}: fast {a:?} brute {b:?}",
                    img.boxes[i]
                );
                assert_eq!(a.best_iou, b.best_iou, "{ctx}");
                assert_eq!(a.atss_pos, b.atss_pos, "{ctx}");
                assert_eq!(a.maxiou_pos, b.maxiou_pos, "{ctx}");
                assert_eq!(a.maxiou_hq, b.maxiou_hq, "{ctx}");
                assert!((a.bag_iou - b.bag_iou).abs() < 1e-6, "{ctx}");
                assert_eq!(a.piou_pos, b.piou_pos, "{ctx}");
            }
        }
    }
}

#[test]
fn bccd_mapping_and_eval_runs() {
    let Some(root) = shared("data/bccd/BCCD") else {
        return;
    };
    let ds = dataset::load(&root, None, &split("test")).unwrap();
    let (input, dropped) = InputBoxes::map(&ds, &Resize::default());
    assert_eq!(dropped, 0);
    assert_eq!(input.images[0].geometry.padded, (1088, 800));
    // 640x480 -> x 1.6671875, y 1.6666667
    let b0 = ds.images[0].boxes[0].bbox;
    let m0 = input.images[0].boxes[0];
    assert!((m0[0] as f64 - b0[0] * 1.6671875).abs() < 1e-3);
    assert!((m0[3] as f64 - b0[3] * 800.0 / 480.0).abs() < 1e-3);
}

// ---------------------------------------------------------------- evolve / de / learned / mmdet

/// A progress report that adds up the steps of all its tasks.
struct CountSteps(Arc<AtomicU64>);

impl Progress for CountSteps {
    fn task(&self, _label: &str, _len: u64) -> Box<dyn Task> {
        Box::new(CountSteps(self.0.clone()))
    }
}

impl Task for CountSteps {
    fn inc(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

#[test]
fn evolve_recovers_synthetic_clusters() {
    use anchorkit::anchor_opt::evolve::{EvolveConfig, evolve};
    let truth = [[10.0, 30.0], [45.0, 40.0], [120.0, 60.0]];
    let (w, h) = clusters(&truth, 400, 0.03, 5);
    let p = ShapeProblem::new(w, h, None);
    let cfg = EvolveConfig {
        k: 3,
        seed: 1,
        ..Default::default()
    };
    let r = evolve(&p, &cfg);
    assert_recovers(&r.shapes, &truth, 0.05);
    assert!(r.fitness >= r.fitness_kmeans);
    assert!(r.fitness > 0.95, "{}", r.fitness);
    assert_eq!(r.bpr, 1.0);
    // deterministic for a seed, and every generation is reported to the progress sink
    let steps = Arc::new(AtomicU64::new(0));
    let counted = EvolveConfig {
        progress: ProgressSink::new(CountSteps(steps.clone())),
        ..cfg.clone()
    };
    assert_eq!(r.shapes, evolve(&p, &counted).shapes);
    assert_eq!(steps.load(Ordering::Relaxed), cfg.generations as u64);
}

#[test]
fn de_recovers_retinanet_ratios_and_scales() {
    use anchorkit::anchor_opt::de::{DeConfig, de, product_shapes};
    let ratios = [0.4, 1.0, 2.5];
    let scales = [0.5, 0.7, 0.95];
    let strides = [8u32, 16, 32, 64, 128];
    let base = product_shapes(&ratios, &scales, 4.0);
    let mut centres = Vec::new();
    for s in [16.0f32, 32.0, 64.0] {
        for b in &base {
            centres.push([b[0] * s, b[1] * s]);
        }
    }
    let (w, h) = clusters(&centres, 30, 0.01, 9);
    let p = ShapeProblem::new(w, h, Some(&strides));
    let r = de(
        &p,
        &DeConfig {
            seed: 2,
            ..Default::default()
        },
    );
    for (a, b) in r.ratios.iter().zip(&ratios) {
        assert!((a / b).ln().abs() < 0.03, "ratios {:?}", r.ratios);
    }
    // scales are defined up to an octave (the next level has twice the base size)
    let frac = |s: f64| s.log2().rem_euclid(1.0);
    let mut got: Vec<f64> = r.scales.iter().map(|&s| frac(s)).collect();
    let mut want: Vec<f64> = scales.iter().map(|&s| frac(s)).collect();
    got.sort_by(f64::total_cmp);
    want.sort_by(f64::total_cmp);
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 0.03, "scales {:?}", r.scales);
    }
    assert!(r.value < 1e-3, "{}", r.value);
    assert!(r.value <= r.value_de);
}

#[test]
fn learned_recovers_clusters_from_every_init() {
    use anchorkit::anchor_opt::learned::{LearnedConfig, LearnedInit, learned};
    let truth = [[12.0, 36.0], [50.0, 50.0], [140.0, 70.0]];
    let (w, h) = clusters(&truth, 400, 0.05, 3);
    let p = ShapeProblem::new(w, h, None);
    for init in [
        LearnedInit::Identical,
        LearnedInit::Uniform,
        LearnedInit::Kmeans,
    ] {
        let r = learned(
            &p,
            &LearnedConfig {
                k: 3,
                init,
                seed: 4,
                ..Default::default()
            },
        );
        assert_recovers(&r.shapes, &truth, 0.05);
        assert!(r.loc_loss <= r.loc_loss_init + 1e-9, "{init:?}: {r:?}");
        assert!(r.mean_iou > 0.9, "{init:?}: {}", r.mean_iou);
    }
}

#[test]
fn mmdet_snippet_round_trips_through_the_spec() {
    use anchorkit::anchor_opt::mmdet_cfg::MmdetAnchorGenerator;
    let strides = [8u32, 16, 32, 64, 128];
    // default octave anchors
    let g = MmdetAnchorGenerator::from_prior(&retinanet_default(), &strides).unwrap();
    let back = MmdetAnchorGenerator::parse(&g.to_python()).unwrap();
    assert_eq!(back, g);
    assert_eq!(back.prior_spec(), retinanet_default());
    assert_eq!(
        back.anchor_set(),
        AnchorSet::from_spec(&retinanet_default(), &strides).unwrap()
    );
    // explicit free shapes -> YOLOAnchorGenerator
    let per_level =
        AnchorSet::layout_shapes(&[[1.37, 2.9], [4.123456789, 3.5]], Layout::Fpn, &strides)
            .unwrap();
    let prior = PriorSpec::ExplicitAnchors {
        per_level,
        center_offset: 0.5,
    };
    let text = MmdetAnchorGenerator::from_prior(&prior, &strides)
        .unwrap()
        .to_python();
    assert!(text.contains("YOLOAnchorGenerator"));
    let back = MmdetAnchorGenerator::parse(&text).unwrap();
    assert_eq!(back.prior_spec(), prior);
    assert_eq!(
        back.anchor_set(),
        AnchorSet::from_spec(&prior, &strides).unwrap()
    );
    // explicit scales (de): AnchorGenerator(scales=...) -> ExplicitAnchors with mmdet's f32 sizes
    let g = MmdetAnchorGenerator::Anchor {
        strides: strides.to_vec(),
        ratios: vec![0.61, 1.0, 1.0 / 0.61],
        octave: None,
        scales: Some(vec![2.7, 3.9, 5.3]),
    };
    let back = MmdetAnchorGenerator::parse(&g.to_python()).unwrap();
    assert_eq!(back, g);
    let spec_set = AnchorSet::from_spec(&back.prior_spec(), &strides).unwrap();
    assert_eq!(spec_set.base, g.anchor_set().base);
    // a hand-written mmdet config parses too
    let hand = "anchor_generator=dict(\n  type='AnchorGenerator',  # comment\n  octave_base_scale=8,\n  scales_per_octave=1,\n  ratios=[1.0],\n  strides=[8, 16, 32, 64, 128])";
    assert_eq!(
        MmdetAnchorGenerator::parse(hand).unwrap().prior_spec(),
        atss_default()
    );
    assert!(MmdetAnchorGenerator::parse("dict(type='AnchorGenerator', ratios=[1.0])").is_err());
}

/// The warning that an optimized set is worse than the defaults: on BCCD test, anchors a
/// quarter of the RetinaNet default size lose recall at IoU >= 0.5 and are flagged, the
/// defaults compared with themselves are not.
#[test]
fn worse_than_default_anchors_are_flagged() {
    use anchorkit::anchor_opt::run::{compare_warnings, evaluate};
    let Some(root) = shared("data/bccd/BCCD") else {
        return;
    };
    let ds = dataset::load(&root, None, &split("test")).unwrap();
    let (input, _) = InputBoxes::map(&ds, &Resize::default());
    let strides = [8u32, 16, 32, 64, 128];
    let cfg = GridConfig::default();
    let default = evaluate(&input, "default", &retinanet_default(), &strides, &cfg).unwrap();
    let tiny = PriorSpec::Anchors {
        octave_base_scale: 1.0,
        scales_per_octave: 3,
        ratios: vec![0.5, 1.0, 2.0],
        center_offset: 0.0,
    };
    let bad = evaluate(&input, "tiny", &tiny, &strides, &cfg).unwrap();
    assert!(bad.grid.recall50 < default.grid.recall50);
    let w = compare_warnings(&default, &bad);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("worse than the default anchors"), "{}", w[0]);
    assert!(compare_warnings(&default, &default).is_empty());
}
