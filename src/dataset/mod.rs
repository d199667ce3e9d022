//! Box annotations of a detection dataset, read from COCO JSON, VOC XML directories, YOLO txt
//! label directories, or `path x1,y1,x2,y2,cls ...` list files, and mapped into a detector's
//! input space with the spec's resize rule ([`mapping`]).
//!
//! Every reader returns a [`Dataset`]: boxes in **original image pixels**, `xyxy` with no `+1`
//! (the mmdet v2/v3 convention), one [`ImageRecord`] per image (images without boxes kept, so
//! the grid statistics see them). Degenerate boxes (w or h <= 0 after clipping to the image,
//! i.e. also boxes entirely outside it) are counted in [`DropCounts`] and dropped; crowd (COCO
//! `iscrowd=1`) and VOC `difficult=1` boxes are dropped and counted as mmdet ignores them.
//! Malformed files give [`Error::Dataset`] naming the file and the 1-based line.

pub mod coco;
pub mod list;
pub mod mapping;
pub mod voc;
mod xml;
pub mod yolo;

use crate::error::{Error, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

pub use mapping::{InputBoxes, MappedImage, Resize};

/// Annotation file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// COCO `instances_*.json` (bbox = `[x, y, w, h]`).
    Coco,
    /// Pascal VOC directory (`Annotations/*.xml`, optional `ImageSets/Main/<split>.txt`).
    Voc,
    /// YOLO / darknet labels (`cls cx cy w h`, normalized), image sizes read from the images.
    Yolo,
    /// One image per line: `path x1,y1,x2,y2,cls ...` (keras-yolo3 / VOC2007 list files).
    List,
}

/// One ground-truth box in original image pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GtBox {
    /// `[x1, y1, x2, y2]`, original pixels, no `+1`.
    pub bbox: [f64; 4],
    /// Index into [`Dataset::classes`].
    pub class_id: usize,
}

/// All boxes of one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageRecord {
    /// File name or path as written in the annotations.
    pub name: String,
    /// Original `(width, height)` in pixels.
    pub size: (u32, u32),
    /// Whether `size` was read from the annotations / image header (`true`) or estimated as
    /// the extent of the boxes (`false`, list files whose images are absent).
    pub size_known: bool,
    pub boxes: Vec<GtBox>,
}

/// Counts of boxes that were not kept, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DropCounts {
    /// Width or height <= 0 (after clipping to the image).
    pub degenerate: usize,
    /// Entirely outside the image.
    pub outside: usize,
    /// COCO `iscrowd = 1` (mmdet puts them in `gt_bboxes_ignore`).
    pub crowd: usize,
    /// VOC `difficult = 1` (mmdet VOC ignores them at training).
    pub difficult: usize,
    /// Boxes kept but clipped because they extended past the image border.
    pub clipped: usize,
}

impl DropCounts {
    /// Number of dropped boxes (clipped boxes are kept and not counted).
    pub fn dropped(&self) -> usize {
        self.degenerate + self.outside + self.crowd + self.difficult
    }
}

/// A loaded dataset.
#[derive(Debug, Clone, Serialize)]
pub struct Dataset {
    pub source: PathBuf,
    pub format: Format,
    /// Class names, index = `GtBox::class_id`.
    pub classes: Vec<String>,
    pub images: Vec<ImageRecord>,
    pub dropped: DropCounts,
    /// Non-fatal notes (e.g. images whose size was estimated).
    pub warnings: Vec<String>,
}

impl Dataset {
    /// Total kept boxes.
    pub fn num_boxes(&self) -> usize {
        self.images.iter().map(|i| i.boxes.len()).sum()
    }
}

/// Reader options.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// VOC: restrict to `ImageSets/Main/<split>.txt` (e.g. `trainval`, `test`).
    pub split: Option<String>,
    /// Original size to assume for images whose size cannot be read (list / YOLO formats).
    pub assume_size: Option<(u32, u32)>,
}

/// Guess the format from the path: `.json` -> COCO, `.txt` file -> list, a directory with
/// `Annotations/` or `*.xml` -> VOC, a directory with `*.txt` labels -> YOLO.
///
/// Errors: [`Error::Dataset`] when the path does not exist or nothing matches.
pub fn detect_format(path: &Path) -> Result<Format> {
    let err = |msg: &str| Error::Dataset {
        path: path.to_path_buf(),
        line: None,
        msg: msg.to_string(),
    };
    if path.is_file() {
        return match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Ok(Format::Coco),
            Some("txt") => Ok(Format::List),
            Some("xml") => Ok(Format::Voc),
            _ => Err(err(
                "cannot guess the annotation format from the extension; pass --format",
            )),
        };
    }
    if !path.is_dir() {
        return Err(err("no such file or directory"));
    }
    if path.join("Annotations").is_dir() {
        return Ok(Format::Voc);
    }
    if path.join("labels").is_dir() {
        return Ok(Format::Yolo);
    }
    let rd = std::fs::read_dir(path).map_err(|e| Error::io(path, e))?;
    let mut has_txt = false;
    for e in rd.flatten() {
        match e.path().extension().and_then(|e| e.to_str()) {
            Some("xml") => return Ok(Format::Voc),
            Some("txt") => has_txt = true,
            _ => {}
        }
    }
    if has_txt {
        return Ok(Format::Yolo);
    }
    Err(err(
        "no Annotations/, labels/, *.xml or *.txt found; pass --format",
    ))
}

/// Read a dataset in the given (or detected) format.
///
/// Errors: [`Error::Dataset`] naming the file and 1-based line of the first malformed entry,
/// [`Error::Io`] for unreadable files.
pub fn load(path: &Path, format: Option<Format>, opts: &ReadOptions) -> Result<Dataset> {
    let format = match format {
        Some(f) => f,
        None => detect_format(path)?,
    };
    match format {
        Format::Coco => coco::read(path),
        Format::Voc => voc::read(path, opts),
        Format::Yolo => yolo::read(path, opts),
        Format::List => list::read(path, opts),
    }
}

/// Clip a box to the image and classify it: `Ok(Some(box))` kept (and `clipped` counted),
/// `Ok(None)` dropped with the reason counted.
pub(crate) fn sanitize(b: [f64; 4], w: u32, h: u32, counts: &mut DropCounts) -> Option<[f64; 4]> {
    let (w, h) = (w as f64, h as f64);
    if !(b.iter().all(|v| v.is_finite())) || b[2] <= b[0] || b[3] <= b[1] {
        counts.degenerate += 1;
        return None;
    }
    if b[2] <= 0.0 || b[3] <= 0.0 || b[0] >= w || b[1] >= h {
        counts.outside += 1;
        return None;
    }
    let c = [b[0].max(0.0), b[1].max(0.0), b[2].min(w), b[3].min(h)];
    if c != b {
        counts.clipped += 1;
    }
    if c[2] <= c[0] || c[3] <= c[1] {
        counts.degenerate += 1;
        return None;
    }
    Some(c)
}

/// Read a whole text file, mapping I/O errors to [`Error::Io`].
pub(crate) fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// Dataset error helper.
pub(crate) fn derr(path: &Path, line: Option<usize>, msg: impl Into<String>) -> Error {
    Error::Dataset {
        path: path.to_path_buf(),
        line,
        msg: msg.into(),
    }
}

/// Class names from the first of `files` that exists in `dir`: one name a line, trimmed, blank
/// lines skipped. `None` when none of them can be read.
pub(crate) fn read_class_names(dir: &Path, files: &[&str]) -> Option<Vec<String>> {
    files.iter().find_map(|n| {
        let t = std::fs::read_to_string(dir.join(n)).ok()?;
        Some(
            t.lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect(),
        )
    })
}

/// `names` extended with the ids `names.len()..=max_class` as names, so that every class id up
/// to `max_class` has one.
pub(crate) fn class_names(names: Option<Vec<String>>, max_class: usize) -> Vec<String> {
    let mut names = names.unwrap_or_default();
    while names.len() <= max_class {
        names.push(names.len().to_string());
    }
    names
}

/// Size of an image file from its header (no decode).
pub(crate) fn image_size(path: &Path) -> Option<(u32, u32)> {
    image::image_dimensions(path).ok()
}

/// Find an image file for a stem in a directory (jpg, jpeg, png, bmp; either case).
pub(crate) fn find_image(dir: &Path, stem: &str) -> Option<PathBuf> {
    for ext in ["jpg", "jpeg", "png", "bmp", "JPG", "JPEG", "PNG", "BMP"] {
        let p = dir.join(format!("{stem}.{ext}"));
        if p.is_file() {
            return Some(p);
        }
    }
    None
}
