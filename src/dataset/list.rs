//! List-file reader: one image per line, `path x1,y1,x2,y2,cls x1,y1,x2,y2,cls ...` (the
//! keras-yolo3 `voc_annotation.py` format of `../shared/data/voc2007/2007_*.txt`), pixels,
//! class = index into the class list (`voc_classes.txt` / `classes.txt` beside the file when
//! present, else the numbers).
//!
//! The format carries no image size, which the resize rule needs. The size is taken, in
//! order, from the image header (the path as written, relative to the list file, or
//! `JPEGImages/<name>` beside it), from [`ReadOptions::assume_size`] (`--orig-size WxH`), and
//! otherwise estimated as the extent of the image's boxes (`ceil(max x2) x ceil(max y2)`, a
//! lower bound of the true size). Estimated sizes are flagged (`size_known = false`) and
//! counted in the dataset warnings.

use super::{Dataset, DropCounts, Format, GtBox, ImageRecord, ReadOptions, derr, sanitize};
use crate::error::Result;
use std::path::{Path, PathBuf};

/// Read a list file.
///
/// Errors: [`crate::Error::Dataset`] naming the file and line for a malformed box field (not
/// 5 comma-separated numbers, class not an integer).
pub fn read(path: &Path, opts: &ReadOptions) -> Result<Dataset> {
    let text = super::read_text(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let classes =
        super::read_class_names(dir, &["voc_classes.txt", "classes.txt", "coco_classes.txt"]);
    let mut max_class = 0usize;
    let mut images = Vec::new();
    let mut dropped = DropCounts::default();
    let mut estimated = 0usize;
    for (i, line) in text.lines().enumerate() {
        let mut toks = line.split_whitespace();
        let Some(name) = toks.next() else { continue };
        let mut raw = Vec::new();
        for t in toks {
            let f: Vec<&str> = t.split(',').collect();
            if f.len() != 5 {
                return Err(derr(
                    path,
                    Some(i + 1),
                    format!("box {t:?}: expected x1,y1,x2,y2,cls"),
                ));
            }
            let mut c = [0.0f64; 4];
            for k in 0..4 {
                c[k] = f[k]
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| {
                        derr(
                            path,
                            Some(i + 1),
                            format!("box {t:?}: {:?} is not a number", f[k]),
                        )
                    })?;
            }
            let cls: usize = f[4].parse().map_err(|_| {
                derr(
                    path,
                    Some(i + 1),
                    format!("box {t:?}: class {:?} is not an integer", f[4]),
                )
            })?;
            max_class = max_class.max(cls);
            raw.push((c, cls));
        }
        let (size, known) = match find_size(name, dir).or(opts.assume_size) {
            Some(s) => (s, true),
            None => {
                estimated += 1;
                let w = raw.iter().map(|(c, _)| c[2]).fold(1.0f64, f64::max).ceil();
                let h = raw.iter().map(|(c, _)| c[3]).fold(1.0f64, f64::max).ceil();
                ((w as u32, h as u32), false)
            }
        };
        let mut boxes = Vec::with_capacity(raw.len());
        for (c, cls) in raw {
            if let Some(b) = sanitize(c, size.0, size.1, &mut dropped) {
                boxes.push(GtBox {
                    bbox: b,
                    class_id: cls,
                });
            }
        }
        images.push(ImageRecord {
            name: name.to_string(),
            size,
            size_known: known,
            boxes,
        });
    }
    if images.is_empty() {
        return Err(derr(path, None, "no images listed"));
    }
    let mut warnings = Vec::new();
    if estimated > 0 {
        warnings.push(format!(
            "{estimated} of {} images: size unknown (image files absent), estimated as the extent of their boxes (a lower bound); pass --orig-size WxH to set it",
            images.len()
        ));
    }
    Ok(Dataset {
        source: path.to_path_buf(),
        format: Format::List,
        classes: super::class_names(classes, max_class),
        images,
        dropped,
        warnings,
    })
}

fn find_size(name: &str, dir: &Path) -> Option<(u32, u32)> {
    let p = PathBuf::from(name);
    let mut cands = vec![p.clone(), dir.join(&p)];
    if let Some(f) = p.file_name() {
        cands.push(dir.join("JPEGImages").join(f));
    }
    cands
        .iter()
        .filter(|c| c.is_file())
        .find_map(|c| super::image_size(c))
}
