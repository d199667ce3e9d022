//! Pascal VOC reader: a directory with `Annotations/*.xml` (optionally restricted to
//! `ImageSets/Main/<split>.txt`), a directory of `*.xml` files, or a single `.xml` file.
//! Coordinates are taken as written (`int(float(text))` like mmdet v2/v3 `XMLDataset`,
//! which no longer subtracts 1); `difficult = 1` objects are dropped and counted, as mmdet
//! moves them to the ignore set. Classes are ordered by first appearance (files sorted by name).

use super::xml::{self, Elem};
use super::{Dataset, DropCounts, Format, GtBox, ImageRecord, ReadOptions, derr, sanitize};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Read a VOC dataset. See the module docs for the accepted layouts.
///
/// Errors: [`Error::Dataset`] naming the XML file and line of the first malformed element
/// (missing `<size>`, `<bndbox>`, non-numeric coordinates, unclosed tags), or the split file.
pub fn read(path: &Path, opts: &ReadOptions) -> Result<Dataset> {
    let files = list_files(path, opts)?;
    let mut classes: Vec<String> = Vec::new();
    let mut class_index: HashMap<String, usize> = HashMap::new();
    let mut images = Vec::with_capacity(files.len());
    let mut dropped = DropCounts::default();
    for f in &files {
        let text = super::read_text(f)?;
        images.push(parse_one(
            f,
            &text,
            &mut classes,
            &mut class_index,
            &mut dropped,
        )?);
    }
    Ok(Dataset {
        source: path.to_path_buf(),
        format: Format::Voc,
        classes,
        images,
        dropped,
        warnings: Vec::new(),
    })
}

fn list_files(path: &Path, opts: &ReadOptions) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let ann = if path.join("Annotations").is_dir() {
        path.join("Annotations")
    } else {
        path.to_path_buf()
    };
    if let Some(split) = &opts.split {
        let sf = path
            .join("ImageSets")
            .join("Main")
            .join(format!("{split}.txt"));
        let text = super::read_text(&sf)?;
        let mut out = Vec::new();
        for (i, l) in text.lines().enumerate() {
            let id = l.split_whitespace().next();
            if let Some(id) = id {
                let p = ann.join(format!("{id}.xml"));
                if !p.is_file() {
                    return Err(derr(
                        &sf,
                        Some(i + 1),
                        format!("no annotation file {}", p.display()),
                    ));
                }
                out.push(p);
            }
        }
        return Ok(out);
    }
    let rd = std::fs::read_dir(&ann).map_err(|e| Error::io(&ann, e))?;
    let mut out: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("xml"))
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(derr(&ann, None, "no *.xml annotation files"));
    }
    Ok(out)
}

fn parse_one(
    path: &Path,
    text: &str,
    classes: &mut Vec<String>,
    class_index: &mut HashMap<String, usize>,
    dropped: &mut DropCounts,
) -> Result<ImageRecord> {
    let unclosed = |off: usize| derr(path, Some(xml::line_of(text, off)), "unclosed XML element");
    let n = text.len();
    let Some(root) = xml::find_one(text, "annotation", 0, n).map_err(unclosed)? else {
        return Err(derr(path, Some(1), "no <annotation> element"));
    };
    let (rs, re) = root.inner;
    let name = xml::find_one(text, "filename", rs, re)
        .map_err(unclosed)?
        .map(|e| xml::inner_text(text, e))
        .unwrap_or_else(|| {
            path.file_stem()
                .map(|s| format!("{}.jpg", s.to_string_lossy()))
                .unwrap_or_default()
        });
    let Some(size) = xml::find_one(text, "size", rs, re).map_err(unclosed)? else {
        return Err(derr(
            path,
            Some(xml::line_of(text, root.start)),
            "no <size> element",
        ));
    };
    let mut wh = [0u32; 2];
    for (k, tag) in ["width", "height"].iter().enumerate() {
        // as written (mmdet: int(text)); reported as written when not a positive size
        let v = num_child(path, text, size, tag)?;
        if !(1.0..=u32::MAX as f64).contains(&v) {
            return Err(derr(
                path,
                Some(xml::line_of(text, size.start)),
                format!("image {tag} is {v}; it must be a positive number of pixels"),
            ));
        }
        wh[k] = v as u32;
    }
    let [width, height] = wh;
    let mut boxes = Vec::new();
    for obj in xml::find_all(text, "object", rs, re).map_err(unclosed)? {
        let (os, oe) = obj.inner;
        let Some(ne) = xml::find_one(text, "name", os, oe).map_err(unclosed)? else {
            return Err(derr(
                path,
                Some(xml::line_of(text, obj.start)),
                "<object> without <name>",
            ));
        };
        let cname = xml::inner_text(text, ne);
        let difficult = match xml::find_one(text, "difficult", os, oe).map_err(unclosed)? {
            Some(d) => xml::inner_text(text, d) == "1",
            None => false,
        };
        let Some(bb) = xml::find_one(text, "bndbox", os, oe).map_err(unclosed)? else {
            return Err(derr(
                path,
                Some(xml::line_of(text, obj.start)),
                "<object> without <bndbox>",
            ));
        };
        let mut c = [0.0f64; 4];
        for (k, t) in ["xmin", "ymin", "xmax", "ymax"].iter().enumerate() {
            // mmdet: int(float(text))
            c[k] = num_child(path, text, bb, t)?.trunc();
        }
        if difficult {
            dropped.difficult += 1;
            continue;
        }
        let ci = *class_index.entry(cname.clone()).or_insert_with(|| {
            classes.push(cname.clone());
            classes.len() - 1
        });
        if let Some(b) = sanitize(c, width, height, dropped) {
            boxes.push(GtBox {
                bbox: b,
                class_id: ci,
            });
        }
    }
    Ok(ImageRecord {
        name,
        size: (width, height),
        size_known: true,
        boxes,
    })
}

fn num_child(path: &Path, text: &str, parent: Elem, tag: &str) -> Result<f64> {
    let e = xml::find_one(text, tag, parent.inner.0, parent.inner.1)
        .map_err(|off| derr(path, Some(xml::line_of(text, off)), "unclosed XML element"))?;
    let Some(e) = e else {
        return Err(derr(
            path,
            Some(xml::line_of(text, parent.start)),
            format!("missing <{tag}>"),
        ));
    };
    let s = xml::inner_text(text, e);
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| {
            derr(
                path,
                Some(xml::line_of(text, e.start)),
                format!("<{tag}> is not a number: {s:?}"),
            )
        })
}
