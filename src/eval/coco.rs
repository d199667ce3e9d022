//! COCO ground truth and detection results in memory, and their readers.
//!
//! Readers:
//! - [`read_coco_gt`]: a COCO instances JSON (`images`, `annotations`, `categories`);
//! - [`read_detections`]: either a COCO results JSON (`[{image_id, category_id, bbox [x,y,w,h],
//!   score}]`, the format pycocotools' `COCO.loadRes` reads) or anchorkit's JSONL (one line per
//!   image, `{"image", "width", "height", "detections": [{"bbox": [x1,y1,x2,y2], "score",
//!   "class_id", "class_name"}]}`), told apart by the first non-blank byte (`[` or `{`).
//!
//! All coordinates are kept as `f64` exactly as written in the JSON, because pycocotools works in
//! double precision on the parsed values (`pycocotools/coco.py`, `loadRes`; `maskApi.c`, `bbIou`).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// One image of the ground truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GtImage {
    /// COCO image id.
    pub id: i64,
    /// File name relative to the image directory (`file_name` in COCO).
    pub file_name: String,
    /// Width in pixels (0 if the file does not say).
    #[serde(default)]
    pub width: u32,
    /// Height in pixels (0 if the file does not say).
    #[serde(default)]
    pub height: u32,
}

/// One category of the ground truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Category {
    /// COCO category id (need not be contiguous: COCO uses 1..90 for 80 classes).
    pub id: i64,
    /// Category name.
    pub name: String,
}

/// One ground-truth box.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GtAnnotation {
    /// Annotation id. pycocotools stores the matched GT id in `dtMatches` and treats 0 as
    /// "unmatched", so an annotation with id 0 can never count as a true positive there; we
    /// reproduce that (see [`crate::eval::cocoeval`]).
    pub id: i64,
    /// Image id (must be one of the images).
    pub image_id: i64,
    /// Category id.
    pub category_id: i64,
    /// `[x, y, w, h]` in pixels (COCO convention: top-left corner, width, height).
    pub bbox: [f64; 4],
    /// The annotation's `area` field (segment area in real COCO), used for the small / medium /
    /// large ranges, exactly as pycocotools does. Readers fall back to `w * h` when absent.
    pub area: f64,
    /// Crowd region: ignored for AP, may be matched by many detections, IoU = inter / det area.
    pub iscrowd: bool,
}

/// A complete ground truth set in COCO form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CocoGt {
    /// Images (every one of them is evaluated, annotated or not, as pycocotools does).
    pub images: Vec<GtImage>,
    /// Categories (every one is evaluated; those without GT get AP -1 and are left out of means).
    pub categories: Vec<Category>,
    /// Boxes, in file order (the order matters for tie-breaking, as in pycocotools).
    pub annotations: Vec<GtAnnotation>,
}

/// One detection in COCO results form.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DetRecord {
    /// Image id (must be one of the ground truth images).
    pub image_id: i64,
    /// Category id (detections of categories absent from the ground truth are not evaluated).
    pub category_id: i64,
    /// `[x, y, w, h]` in original image pixels.
    pub bbox: [f64; 4],
    /// Confidence score.
    pub score: f64,
}

/// How anchorkit JSONL class ids map to ground-truth category ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum ClassMapping {
    /// `class_name` must equal a ground-truth category name.
    #[default]
    Name,
    /// `class_id` i is the i-th ground-truth category in ascending id order (mmdet's
    /// `cat2label` for a dataset whose classes are all its categories).
    Index,
}

#[derive(Deserialize)]
struct RawGt {
    images: Vec<RawImage>,
    #[serde(default)]
    annotations: Vec<RawAnn>,
    categories: Vec<Category>,
}

#[derive(Deserialize)]
struct RawImage {
    id: i64,
    #[serde(default)]
    file_name: String,
    #[serde(default)]
    width: u32,
    #[serde(default)]
    height: u32,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Flag {
    Int(i64),
    Bool(bool),
}

#[derive(Deserialize)]
struct RawAnn {
    id: i64,
    image_id: i64,
    category_id: i64,
    bbox: Vec<f64>,
    #[serde(default)]
    area: Option<f64>,
    #[serde(default)]
    iscrowd: Option<Flag>,
}

fn dataset_err(path: &Path, line: Option<usize>, msg: impl Into<String>) -> Error {
    Error::Dataset {
        path: path.to_path_buf(),
        line,
        msg: msg.into(),
    }
}

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

fn bbox4(v: &[f64], path: &Path, line: Option<usize>, what: &str) -> Result<[f64; 4]> {
    if v.len() != 4 {
        return Err(dataset_err(
            path,
            line,
            format!("{what}: bbox must have 4 numbers, found {}", v.len()),
        ));
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(dataset_err(
            path,
            line,
            format!("{what}: bbox {v:?} is not finite"),
        ));
    }
    Ok([v[0], v[1], v[2], v[3]])
}

/// Reads a COCO instances JSON file.
///
/// `iscrowd` may be 0/1 or a boolean and defaults to 0; `area` defaults to `w * h` of the bbox
/// (pycocotools would fail on a missing field). Annotations of images absent from `images` are
/// dropped with a warning (pycocotools never selects them).
///
/// Errors: [`Error::Io`] if unreadable, [`Error::Dataset`] naming the file for malformed JSON,
/// a bbox without 4 finite numbers, or duplicate image / category / annotation ids.
pub fn read_coco_gt(path: &Path) -> Result<CocoGt> {
    let bytes = read_bytes(path)?;
    let raw: RawGt = serde_json::from_slice(&bytes).map_err(|e| {
        dataset_err(
            path,
            Some(e.line()),
            format!("not a COCO instances file: {e}"),
        )
    })?;
    let mut image_ids = HashSet::new();
    let mut images = Vec::with_capacity(raw.images.len());
    for im in raw.images {
        if !image_ids.insert(im.id) {
            return Err(dataset_err(
                path,
                None,
                format!("duplicate image id {}", im.id),
            ));
        }
        images.push(GtImage {
            id: im.id,
            file_name: im.file_name,
            width: im.width,
            height: im.height,
        });
    }
    let mut cat_ids = HashSet::new();
    for c in &raw.categories {
        if !cat_ids.insert(c.id) {
            return Err(dataset_err(
                path,
                None,
                format!("duplicate category id {}", c.id),
            ));
        }
    }
    let mut ann_ids = HashSet::new();
    let mut annotations = Vec::with_capacity(raw.annotations.len());
    let mut dropped = 0usize;
    for a in raw.annotations {
        let what = format!("annotation id {}", a.id);
        let bbox = bbox4(&a.bbox, path, None, &what)?;
        if !ann_ids.insert(a.id) {
            return Err(dataset_err(path, None, format!("duplicate {what}")));
        }
        if !image_ids.contains(&a.image_id) {
            dropped += 1;
            continue;
        }
        let iscrowd = match a.iscrowd {
            None => false,
            Some(Flag::Int(v)) => v != 0,
            Some(Flag::Bool(b)) => b,
        };
        annotations.push(GtAnnotation {
            id: a.id,
            image_id: a.image_id,
            category_id: a.category_id,
            bbox,
            area: a.area.unwrap_or(bbox[2] * bbox[3]),
            iscrowd,
        });
    }
    if dropped > 0 {
        tracing::warn!(
            "{}: {dropped} annotations refer to images not listed in `images`; ignored",
            path.display()
        );
    }
    Ok(CocoGt {
        images,
        categories: raw.categories,
        annotations,
    })
}

#[derive(Deserialize)]
struct RawDet {
    image_id: i64,
    category_id: i64,
    bbox: Vec<f64>,
    score: f64,
}

#[derive(Deserialize)]
struct JsonlLine {
    image: String,
    #[serde(default)]
    detections: Vec<JsonlDet>,
}

#[derive(Deserialize)]
struct JsonlDet {
    bbox: [f64; 4],
    score: f64,
    class_id: usize,
    #[serde(default)]
    class_name: Option<String>,
}

/// Reads detections from `path`: a COCO results JSON array or anchorkit JSONL (see module doc).
///
/// JSONL lines are mapped to the ground truth: the image by the base name of `image` against the
/// base names of the GT `file_name`s, the class by `mapping`. xyxy boxes become
/// `[x1, y1, x2 - x1, y2 - y1]` (mmdet `xyxy2xywh`).
///
/// Errors: [`Error::Io`], or [`Error::Dataset`] naming the file and line for malformed JSON, a
/// non-finite bbox or score, an image not in the ground truth, or a class that does not map.
pub fn read_detections(path: &Path, gt: &CocoGt, mapping: ClassMapping) -> Result<Vec<DetRecord>> {
    let bytes = read_bytes(path)?;
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
    match first {
        None => Ok(Vec::new()),
        Some(b'[') => read_coco_results_bytes(&bytes, path),
        Some(b'{') => read_jsonl_bytes(&bytes, path, gt, mapping),
        Some(_) => Err(dataset_err(
            path,
            Some(1),
            "not a COCO results array ('[') nor anchorkit JSONL ('{')",
        )),
    }
}

/// Reads a COCO results JSON file (`[{image_id, category_id, bbox, score}]`).
///
/// Errors: as [`read_detections`].
pub fn read_coco_results(path: &Path) -> Result<Vec<DetRecord>> {
    read_coco_results_bytes(&read_bytes(path)?, path)
}

fn read_coco_results_bytes(bytes: &[u8], path: &Path) -> Result<Vec<DetRecord>> {
    let raw: Vec<RawDet> = serde_json::from_slice(bytes).map_err(|e| {
        dataset_err(
            path,
            Some(e.line()),
            format!("not a COCO results array: {e}"),
        )
    })?;
    raw.into_iter()
        .enumerate()
        .map(|(i, d)| {
            let what = format!("result #{i}");
            let bbox = bbox4(&d.bbox, path, None, &what)?;
            if !d.score.is_finite() {
                return Err(dataset_err(
                    path,
                    None,
                    format!("{what}: score is not finite"),
                ));
            }
            Ok(DetRecord {
                image_id: d.image_id,
                category_id: d.category_id,
                bbox,
                score: d.score,
            })
        })
        .collect()
}

fn base_name(s: &str) -> &str {
    s.rsplit(['/', '\\']).next().unwrap_or(s)
}

fn read_jsonl_bytes(
    bytes: &[u8],
    path: &Path,
    gt: &CocoGt,
    mapping: ClassMapping,
) -> Result<Vec<DetRecord>> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| dataset_err(path, None, format!("not UTF-8 text: {e}")))?;
    let mut by_name: HashMap<&str, Option<i64>> = HashMap::new();
    for im in &gt.images {
        by_name
            .entry(base_name(&im.file_name))
            .and_modify(|v| *v = None)
            .or_insert(Some(im.id));
    }
    let cat_by_name: HashMap<&str, i64> = gt
        .categories
        .iter()
        .map(|c| (c.name.as_str(), c.id))
        .collect();
    let mut sorted_cats: Vec<i64> = gt.categories.iter().map(|c| c.id).collect();
    sorted_cats.sort_unstable();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = Some(i + 1);
        if line.trim().is_empty() {
            continue;
        }
        let rec: JsonlLine = serde_json::from_str(line)
            .map_err(|e| dataset_err(path, lineno, format!("not an anchorkit JSONL line: {e}")))?;
        let name = base_name(&rec.image);
        let image_id = match by_name.get(name) {
            Some(Some(id)) => *id,
            Some(None) => {
                return Err(dataset_err(
                    path,
                    lineno,
                    format!("image {name:?} matches several ground-truth file names"),
                ));
            }
            None => {
                return Err(dataset_err(
                    path,
                    lineno,
                    format!("image {name:?} is not in the ground truth"),
                ));
            }
        };
        if !seen.insert(image_id) {
            return Err(dataset_err(
                path,
                lineno,
                format!("image {name:?} appears twice"),
            ));
        }
        for d in rec.detections {
            if d.bbox.iter().any(|v| !v.is_finite()) || !d.score.is_finite() {
                return Err(dataset_err(
                    path,
                    lineno,
                    format!("non-finite box or score in {:?}", rec.image),
                ));
            }
            let category_id = match mapping {
                ClassMapping::Name => {
                    let Some(cn) = d.class_name.as_deref() else {
                        return Err(dataset_err(
                            path,
                            lineno,
                            "detection without class_name; use class mapping `index`",
                        ));
                    };
                    *cat_by_name.get(cn).ok_or_else(|| {
                        dataset_err(
                            path,
                            lineno,
                            format!(
                                "class {cn:?} is not a ground-truth category name; \
                                 use class mapping `index` to map class_id by position"
                            ),
                        )
                    })?
                }
                ClassMapping::Index => *sorted_cats.get(d.class_id).ok_or_else(|| {
                    dataset_err(
                        path,
                        lineno,
                        format!(
                            "class_id {} but the ground truth has {} categories",
                            d.class_id,
                            sorted_cats.len()
                        ),
                    )
                })?,
            };
            let [x1, y1, x2, y2] = d.bbox;
            out.push(DetRecord {
                image_id,
                category_id,
                bbox: [x1, y1, x2 - x1, y2 - y1],
                score: d.score,
            });
        }
    }
    Ok(out)
}

/// Writes detections as a COCO results JSON array (readable by pycocotools' `loadRes`),
/// atomically (temp file + rename). Numbers are written with Rust's shortest round-trip `f64`
/// formatting, so Python reads back exactly the same doubles.
///
/// Errors: [`Error::Io`] naming `path`.
pub fn write_coco_results(path: &Path, dets: &[DetRecord]) -> Result<()> {
    write_json_atomic(path, &dets)
}

/// Writes a ground truth as a COCO instances JSON (atomically), e.g. the in-memory conversion
/// of VOC XML, so that pycocotools can evaluate exactly the same boxes.
///
/// Errors: [`Error::Io`] naming `path`.
pub fn write_coco_gt(path: &Path, gt: &CocoGt) -> Result<()> {
    #[derive(Serialize)]
    struct Ann<'a> {
        id: i64,
        image_id: i64,
        category_id: i64,
        bbox: &'a [f64; 4],
        area: f64,
        iscrowd: u8,
    }
    #[derive(Serialize)]
    struct Out<'a> {
        images: &'a [GtImage],
        annotations: Vec<Ann<'a>>,
        categories: &'a [Category],
    }
    let out = Out {
        images: &gt.images,
        annotations: gt
            .annotations
            .iter()
            .map(|a| Ann {
                id: a.id,
                image_id: a.image_id,
                category_id: a.category_id,
                bbox: &a.bbox,
                area: a.area,
                iscrowd: a.iscrowd as u8,
            })
            .collect(),
        categories: &gt.categories,
    };
    write_json_atomic(path, &out)
}

/// Serializes `value` as JSON into `path` through a temporary file in the same directory and a
/// rename, so readers never see a half-written file.
///
/// Errors: [`Error::Io`] naming `path`.
pub fn write_json_atomic<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))?;
    write_bytes_atomic(path, &bytes)
}

/// Writes `bytes` to `path` atomically (temp file in the same directory + rename).
///
/// Errors: [`Error::Io`] naming `path`.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::fsutil::write_atomic(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gt() -> CocoGt {
        CocoGt {
            images: vec![GtImage {
                id: 7,
                file_name: "sub/a.jpg".into(),
                width: 10,
                height: 10,
            }],
            categories: vec![
                Category {
                    id: 5,
                    name: "dog".into(),
                },
                Category {
                    id: 2,
                    name: "cat".into(),
                },
            ],
            annotations: vec![],
        }
    }

    #[test]
    fn jsonl_maps_by_name_and_index() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.jsonl");
        std::fs::write(
            &p,
            r#"{"image":"/x/y/a.jpg","width":10,"height":10,"detections":[{"bbox":[1,2,4,6],"score":0.5,"class_id":0,"class_name":"dog"}]}"#,
        )
        .unwrap();
        let d = read_detections(&p, &gt(), ClassMapping::Name).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].image_id, 7);
        assert_eq!(d[0].category_id, 5);
        assert_eq!(d[0].bbox, [1.0, 2.0, 3.0, 4.0]);
        // by index: class 0 is the smallest category id (2).
        let d = read_detections(&p, &gt(), ClassMapping::Index).unwrap();
        assert_eq!(d[0].category_id, 2);
    }

    #[test]
    fn unknown_image_is_an_error_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.jsonl");
        std::fs::write(&p, "\n{\"image\":\"zzz.jpg\",\"detections\":[]}\n").unwrap();
        let e = read_detections(&p, &gt(), ClassMapping::Name).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("d.jsonl:2") && s.contains("zzz.jpg"), "{s}");
    }

    #[test]
    fn bad_bbox_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        std::fs::write(
            &p,
            r#"[{"image_id":7,"category_id":5,"bbox":[1,2,3],"score":0.1}]"#,
        )
        .unwrap();
        let e = read_detections(&p, &gt(), ClassMapping::Name).unwrap_err();
        assert!(e.to_string().contains("4 numbers"), "{e}");
    }

    #[test]
    fn gt_roundtrip_through_writer() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gt.json");
        let mut g = gt();
        g.annotations.push(GtAnnotation {
            id: 1,
            image_id: 7,
            category_id: 2,
            bbox: [0.1, 0.2, 3.3, 4.4],
            area: 9.5,
            iscrowd: true,
        });
        write_coco_gt(&p, &g).unwrap();
        let back = read_coco_gt(&p).unwrap();
        assert_eq!(back, g);
    }
}
