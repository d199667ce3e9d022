//! YOLO / darknet label reader: `*.txt` files with one `cls cx cy w h` line per box, all
//! normalized to the image (0..1). The image size is read from the header of the matching
//! image (the `labels` path component replaced by `images`, as YOLOv5 `img2label_paths` does,
//! or the same directory), else from [`ReadOptions::assume_size`]; a label file without either
//! is an error. Class names come from `classes.txt` / `obj.names` beside the labels when present.

use super::{Dataset, DropCounts, Format, GtBox, ImageRecord, ReadOptions, derr, sanitize};
use crate::error::Result;
use std::path::{Path, PathBuf};

/// Class-name files looked for beside the labels (and their parent directory), in order.
const NAME_FILES: [&str; 2] = ["classes.txt", "obj.names"];

/// Read a YOLO label directory (or a dataset root containing `labels/`).
///
/// Errors: [`crate::Error::Dataset`] naming the label file and line for a malformed line
/// (not 5 numbers, class not an integer, size outside 0..1), or a label file whose image size
/// is unknown.
pub fn read(path: &Path, opts: &ReadOptions) -> Result<Dataset> {
    let root = if path.join("labels").is_dir() {
        path.join("labels")
    } else {
        path.to_path_buf()
    };
    let pattern = format!(
        "{}/**/*.txt",
        glob::Pattern::escape(&root.to_string_lossy())
    );
    let mut files: Vec<PathBuf> = glob::glob(&pattern)
        .map_err(|e| derr(&root, None, format!("bad path: {e}")))?
        .flatten()
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !NAME_FILES.contains(&n)
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(derr(&root, None, "no *.txt label files"));
    }
    let classes = super::read_class_names(&root, &NAME_FILES).or_else(|| {
        path.parent()
            .and_then(|d| super::read_class_names(d, &NAME_FILES))
    });
    let mut max_class = 0usize;
    let mut images = Vec::with_capacity(files.len());
    let mut dropped = DropCounts::default();
    for f in &files {
        let text = super::read_text(f)?;
        let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let img = image_for_label(f, stem);
        let size = img
            .as_deref()
            .and_then(super::image_size)
            .or(opts.assume_size)
            .ok_or_else(|| {
                derr(
                    f,
                    None,
                    "image size unknown: no matching image found (labels/ -> images/); pass --orig-size WxH",
                )
            })?;
        let (w, h) = (size.0 as f64, size.1 as f64);
        let mut boxes = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let t: Vec<&str> = line.split_whitespace().collect();
            if t.is_empty() {
                continue;
            }
            if t.len() != 5 {
                return Err(derr(
                    f,
                    Some(i + 1),
                    format!("expected `cls cx cy w h`, got {} fields", t.len()),
                ));
            }
            let cls: usize = t[0].parse().map_err(|_| {
                derr(
                    f,
                    Some(i + 1),
                    format!("class {:?} is not an integer", t[0]),
                )
            })?;
            let mut v = [0.0f64; 4];
            for k in 0..4 {
                v[k] = t[k + 1]
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| {
                        derr(f, Some(i + 1), format!("{:?} is not a number", t[k + 1]))
                    })?;
            }
            if v.iter().any(|&x| !(-0.5..=1.5).contains(&x)) {
                return Err(derr(
                    f,
                    Some(i + 1),
                    "coordinates are not normalized to 0..1",
                ));
            }
            max_class = max_class.max(cls);
            let b = [
                (v[0] - v[2] / 2.0) * w,
                (v[1] - v[3] / 2.0) * h,
                (v[0] + v[2] / 2.0) * w,
                (v[1] + v[3] / 2.0) * h,
            ];
            if let Some(b) = sanitize(b, size.0, size.1, &mut dropped) {
                boxes.push(GtBox {
                    bbox: b,
                    class_id: cls,
                });
            }
        }
        images.push(ImageRecord {
            name: img
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|| f.to_string_lossy().into_owned()),
            size,
            size_known: true,
            boxes,
        });
    }
    Ok(Dataset {
        source: path.to_path_buf(),
        format: Format::Yolo,
        classes: super::class_names(classes, max_class),
        images,
        dropped,
        warnings: Vec::new(),
    })
}

fn image_for_label(label: &Path, stem: &str) -> Option<PathBuf> {
    let dir = label.parent()?;
    // YOLOv5 img2label_paths: /images/ <-> /labels/ (last occurrence).
    let comps: Vec<_> = dir.components().collect();
    if let Some(pos) = comps.iter().rposition(|c| c.as_os_str() == "labels") {
        let mut p = PathBuf::new();
        for (i, c) in comps.iter().enumerate() {
            if i == pos {
                p.push("images");
            } else {
                p.push(c.as_os_str());
            }
        }
        if let Some(f) = super::find_image(&p, stem) {
            return Some(f);
        }
    }
    super::find_image(dir, stem)
}
