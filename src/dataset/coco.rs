//! COCO `instances_*.json` reader (`images`, `annotations` with `bbox = [x, y, w, h]`,
//! `categories`). Crowd annotations (`iscrowd = 1`) are dropped and counted, as mmdet moves
//! them to `gt_bboxes_ignore` (`mmdet/datasets/coco.py`, `_parse_ann_info`).

use super::{Dataset, DropCounts, Format, GtBox, ImageRecord, derr, sanitize};
use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

#[derive(Deserialize)]
struct CocoFile {
    images: Vec<CocoImage>,
    #[serde(default)]
    annotations: Vec<CocoAnn>,
    #[serde(default)]
    categories: Vec<CocoCat>,
}

#[derive(Deserialize)]
struct CocoImage {
    id: u64,
    #[serde(default)]
    file_name: String,
    width: u32,
    height: u32,
}

#[derive(Deserialize)]
struct CocoAnn {
    #[serde(default)]
    id: u64,
    image_id: u64,
    category_id: u64,
    bbox: [f64; 4],
    #[serde(default)]
    iscrowd: u8,
}

#[derive(Deserialize)]
struct CocoCat {
    id: u64,
    name: String,
}

/// Read a COCO JSON file. Classes are the `categories` in file order.
///
/// Errors: [`Error::Dataset`] with the JSON line for syntax / type errors, or naming the
/// annotation id for an unknown `image_id` / `category_id`.
pub fn read(path: &Path) -> Result<Dataset> {
    let text = super::read_text(path)?;
    let file: CocoFile = serde_json::from_str(&text).map_err(|e| Error::Dataset {
        path: path.to_path_buf(),
        line: Some(e.line()),
        msg: format!("invalid COCO JSON: {e}"),
    })?;
    let mut cat_index = HashMap::new();
    let mut classes = Vec::with_capacity(file.categories.len());
    for c in &file.categories {
        cat_index.insert(c.id, classes.len());
        classes.push(c.name.clone());
    }
    let mut img_index = HashMap::with_capacity(file.images.len());
    let mut images: Vec<ImageRecord> = Vec::with_capacity(file.images.len());
    for im in &file.images {
        if im.width == 0 || im.height == 0 {
            return Err(derr(
                path,
                None,
                format!("image id {} has a zero width or height", im.id),
            ));
        }
        img_index.insert(im.id, images.len());
        images.push(ImageRecord {
            name: im.file_name.clone(),
            size: (im.width, im.height),
            size_known: true,
            boxes: Vec::new(),
        });
    }
    let mut dropped = DropCounts::default();
    for a in &file.annotations {
        let Some(&ii) = img_index.get(&a.image_id) else {
            return Err(derr(
                path,
                None,
                format!(
                    "annotation id {} refers to unknown image_id {}",
                    a.id, a.image_id
                ),
            ));
        };
        let Some(&ci) = cat_index.get(&a.category_id) else {
            return Err(derr(
                path,
                None,
                format!(
                    "annotation id {} refers to unknown category_id {}",
                    a.id, a.category_id
                ),
            ));
        };
        if a.iscrowd != 0 {
            dropped.crowd += 1;
            continue;
        }
        let [x, y, w, h] = a.bbox;
        let img = &mut images[ii];
        if let Some(b) = sanitize([x, y, x + w, y + h], img.size.0, img.size.1, &mut dropped) {
            img.boxes.push(GtBox {
                bbox: b,
                class_id: ci,
            });
        }
    }
    Ok(Dataset {
        source: path.to_path_buf(),
        format: Format::Coco,
        classes,
        images,
        dropped,
        warnings: Vec::new(),
    })
}
