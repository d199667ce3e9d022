//! Pascal VOC XML ground truth converted to a COCO ground truth in memory, for `anchorkit eval`.
//!
//! (`src/dataset/voc.rs`, the reader of the anchor optimizer, drops difficult and degenerate
//! boxes and clips, which suits box statistics but not scoring.)
//!
//! Conversion rule:
//! - images: the ids of the split file (first token per line; `ImageSets/Main/<split>.txt`), or
//!   every `*.xml` of the directory sorted by name; image id = 1-based position in that list,
//!   `file_name = <stem>.jpg` (the devkit's `JPEGImages/%s.jpg`), size from `<size>`;
//! - categories: the given class list (a model's `classes`), ids 1..K in that order; without
//!   one, the object names sorted alphabetically;
//! - boxes, [`VocCoords::AsWritten`] (default): `[xmin, ymin, xmax - xmin, ymax - ymin]` as
//!   written, the frame mmdet's `XMLDataset` (v2/v3, `mmdet/datasets/xml_style.py`) trains in,
//!   and so the frame a model trained on these files predicts in; [`VocCoords::PixelInclusive`]:
//!   the devkit's reading of 1-based inclusive pixel indices, `[xmin - 1, ymin - 1,
//!   xmax - xmin + 1, ymax - ymin + 1]` (detectron2 `data/datasets/pascal_voc.py`). Scoring a
//!   model in a frame other than its training frame shifts x1/y1 by one pixel and costs AP at
//!   high IoU on small objects (BCCD platelets are ~20 px), hence the default.
//! - `area = w * h`; `difficult = 1` objects become `iscrowd = 1` (ignored, as VOC's protocol
//!   ignores them); boxes with `w <= 0` or `h <= 0` in the chosen frame cannot be matched by any
//!   detection and are dropped with a warning (BCCD has two, both outside the test split).

use crate::error::{Error, Result};
use crate::eval::coco::{Category, CocoGt, GtAnnotation, GtImage};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// How VOC `xmin/ymin/xmax/ymax` become a COCO `[x, y, w, h]` box (see module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum VocCoords {
    /// `[xmin, ymin, xmax - xmin, ymax - ymin]` (mmdet `XMLDataset`).
    #[default]
    AsWritten,
    /// `[xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]` (devkit, detectron2).
    PixelInclusive,
}

struct VocObject {
    name: String,
    difficult: bool,
    b: [f64; 4],
}

struct VocFile {
    width: u32,
    height: u32,
    objects: Vec<VocObject>,
}

fn derr(path: &Path, msg: impl Into<String>) -> Error {
    Error::Dataset {
        path: path.to_path_buf(),
        line: None,
        msg: msg.into(),
    }
}

/// Inner text of each `<tag>...</tag>` (or `<tag attr>...</tag>`) in `s`, in order; nested
/// elements of the same tag are not expected in VOC files.
fn elements<'a>(s: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(i) = s[pos..].find(&open) {
        let start = pos + i + open.len();
        // The tag name must end here (">" or whitespace), so <name> does not match <names>.
        let next = s[start..].chars().next();
        if !matches!(
            next,
            Some('>') | Some(' ') | Some('\t') | Some('\n') | Some('\r')
        ) {
            pos = start;
            continue;
        }
        let Some(gt) = s[start..].find('>') else {
            break;
        };
        let body = start + gt + 1;
        let Some(end) = s[body..].find(&close) else {
            break;
        };
        out.push(&s[body..body + end]);
        pos = body + end + close.len();
    }
    out
}

fn unescape(s: &str) -> String {
    s.trim()
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn num(path: &Path, parent: &str, tag: &str) -> Result<f64> {
    let v = elements(parent, tag);
    let t = v
        .first()
        .ok_or_else(|| derr(path, format!("missing <{tag}>")))?;
    t.trim()
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
        .ok_or_else(|| derr(path, format!("<{tag}> is not a number: {:?}", t.trim())))
}

fn parse_file(path: &Path) -> Result<VocFile> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let root = elements(&text, "annotation");
    let root = root
        .first()
        .ok_or_else(|| derr(path, "no <annotation> element"))?;
    let size = elements(root, "size");
    let size = size
        .first()
        .ok_or_else(|| derr(path, "no <size> element"))?;
    let width = num(path, size, "width")? as u32;
    let height = num(path, size, "height")? as u32;
    let mut objects = Vec::new();
    for (i, obj) in elements(root, "object").into_iter().enumerate() {
        let name = elements(obj, "name")
            .first()
            .map(|s| unescape(s))
            .ok_or_else(|| derr(path, format!("<object> #{} without <name>", i + 1)))?;
        let difficult = elements(obj, "difficult")
            .first()
            .is_some_and(|s| s.trim() == "1");
        let bb = elements(obj, "bndbox");
        let bb = bb
            .first()
            .ok_or_else(|| derr(path, format!("<object> #{} without <bndbox>", i + 1)))?;
        let b = [
            num(path, bb, "xmin")?,
            num(path, bb, "ymin")?,
            num(path, bb, "xmax")?,
            num(path, bb, "ymax")?,
        ];
        objects.push(VocObject { name, difficult, b });
    }
    Ok(VocFile {
        width,
        height,
        objects,
    })
}

/// Lists the annotation files: those named in `split` (relative to `ann_dir`), else all `*.xml`
/// sorted by name. Returns `(stem, path)`.
fn list_files(ann_dir: &Path, split: Option<&Path>) -> Result<Vec<(String, PathBuf)>> {
    if let Some(sf) = split {
        let text = std::fs::read_to_string(sf).map_err(|e| Error::io(sf, e))?;
        let mut out = Vec::new();
        for (i, l) in text.lines().enumerate() {
            let Some(stem) = l.split_whitespace().next() else {
                continue;
            };
            let p = ann_dir.join(format!("{stem}.xml"));
            if !p.is_file() {
                return Err(Error::Dataset {
                    path: sf.to_path_buf(),
                    line: Some(i + 1),
                    msg: format!("no annotation file {}", p.display()),
                });
            }
            out.push((stem.to_string(), p));
        }
        if out.is_empty() {
            return Err(derr(sf, "split file lists no images"));
        }
        return Ok(out);
    }
    let rd = std::fs::read_dir(ann_dir).map_err(|e| Error::io(ann_dir, e))?;
    let mut out: Vec<(String, PathBuf)> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("xml"))
        .filter_map(|p| {
            let stem = p.file_stem()?.to_string_lossy().into_owned();
            Some((stem, p))
        })
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(derr(ann_dir, "no *.xml annotation files"));
    }
    Ok(out)
}

/// Reads VOC XML annotations from `ann_dir` (the `Annotations` directory), restricted to the
/// ids in `split` if given, and converts them to a [`CocoGt`] by the rule in the module doc.
///
/// `classes`: category order (ids 1..K); an object whose name is not in it is an error.
///
/// Errors: [`Error::Io`] / [`Error::Dataset`] naming the XML or split file (missing element,
/// non-numeric coordinate, unknown class, missing annotation file).
pub fn read_voc(
    ann_dir: &Path,
    split: Option<&Path>,
    classes: Option<&[String]>,
    coords: VocCoords,
) -> Result<CocoGt> {
    let files = list_files(ann_dir, split)?;
    let parsed: Vec<(String, PathBuf, VocFile)> = files
        .into_iter()
        .map(|(stem, p)| {
            let f = parse_file(&p)?;
            Ok((stem, p, f))
        })
        .collect::<Result<_>>()?;
    let class_list: Vec<String> = match classes {
        Some(c) => c.to_vec(),
        None => parsed
            .iter()
            .flat_map(|(_, _, f)| f.objects.iter().map(|o| o.name.clone()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    };
    let categories: Vec<Category> = class_list
        .iter()
        .enumerate()
        .map(|(i, n)| Category {
            id: i as i64 + 1,
            name: n.clone(),
        })
        .collect();
    let mut images = Vec::with_capacity(parsed.len());
    let mut annotations = Vec::new();
    let mut degenerate = 0usize;
    for (ii, (stem, path, f)) in parsed.iter().enumerate() {
        let image_id = ii as i64 + 1;
        images.push(GtImage {
            id: image_id,
            file_name: format!("{stem}.jpg"),
            width: f.width,
            height: f.height,
        });
        for o in &f.objects {
            let Some(ci) = class_list.iter().position(|c| *c == o.name) else {
                return Err(derr(
                    path,
                    format!(
                        "object class {:?} is not one of the classes {:?}",
                        o.name, class_list
                    ),
                ));
            };
            let [x1, y1, x2, y2] = o.b;
            let bbox = match coords {
                VocCoords::AsWritten => [x1, y1, x2 - x1, y2 - y1],
                VocCoords::PixelInclusive => [x1 - 1.0, y1 - 1.0, x2 - x1 + 1.0, y2 - y1 + 1.0],
            };
            if bbox[2] <= 0.0 || bbox[3] <= 0.0 {
                degenerate += 1;
                continue;
            }
            annotations.push(GtAnnotation {
                id: annotations.len() as i64 + 1,
                image_id,
                category_id: ci as i64 + 1,
                bbox,
                area: bbox[2] * bbox[3],
                iscrowd: o.difficult,
            });
        }
    }
    if degenerate > 0 {
        tracing::warn!(
            "{}: {degenerate} boxes with zero width or height dropped",
            ann_dir.display()
        );
    }
    Ok(CocoGt {
        images,
        categories,
        annotations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = "<annotation><filename>a.jpg</filename><size><width>640</width>\
        <height>480</height><depth>3</depth></size>\
        <object><name>RBC</name><difficult>0</difficult><bndbox><xmin>10</xmin><ymin>20</ymin>\
        <xmax>30</xmax><ymax>60</ymax></bndbox></object>\
        <object><name>WBC</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>1</ymin>\
        <xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>";

    #[test]
    fn converts_both_frames() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.xml"), XML).unwrap();
        let g = read_voc(dir.path(), None, None, VocCoords::AsWritten).unwrap();
        assert_eq!(g.images[0].file_name, "a.jpg");
        assert_eq!(g.categories[0].name, "RBC");
        assert_eq!(g.annotations[0].bbox, [10.0, 20.0, 20.0, 40.0]);
        assert_eq!(g.annotations[0].area, 800.0);
        assert!(g.annotations[1].iscrowd);
        let g = read_voc(dir.path(), None, None, VocCoords::PixelInclusive).unwrap();
        assert_eq!(g.annotations[0].bbox, [9.0, 19.0, 21.0, 41.0]);
    }

    #[test]
    fn unknown_class_and_bad_number_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.xml"), XML).unwrap();
        let only = vec!["RBC".to_string()];
        let e = read_voc(dir.path(), None, Some(&only), VocCoords::AsWritten).unwrap_err();
        assert!(
            e.to_string().contains("a.xml") && e.to_string().contains("WBC"),
            "{e}"
        );
        std::fs::write(
            dir.path().join("a.xml"),
            XML.replace("<xmin>10<", "<xmin>ten<"),
        )
        .unwrap();
        let e = read_voc(dir.path(), None, None, VocCoords::AsWritten).unwrap_err();
        assert!(e.to_string().contains("<xmin> is not a number"), "{e}");
    }
}
