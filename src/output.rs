//! Writing detections: JSONL (one line per image), a readable summary, CSV, COCO results JSON,
//! annotated images, and `.npy` dumps of network inputs. Every file is written atomically (a
//! temp file in the destination directory, renamed into place on success; see [`crate::fsutil`]).

use crate::postprocess::Detection;
use crate::{Error, Result};
use image::{Rgb, RgbImage};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use crate::fsutil::{AtomicWriter, write_atomic};

/// Detections of one image, in original-image pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRecord {
    /// The image path as given (printed as is).
    pub image: PathBuf,
    /// Decoded size (after EXIF orientation).
    pub width: u32,
    pub height: u32,
    pub detections: Vec<Detection>,
}

#[derive(Serialize)]
struct JsonDet<'a> {
    bbox: [f32; 4],
    score: f32,
    class_id: usize,
    class_name: &'a str,
}

#[derive(Serialize)]
struct JsonRec<'a> {
    image: String,
    width: u32,
    height: u32,
    detections: Vec<JsonDet<'a>>,
}

fn class_name(classes: &[String], id: usize) -> &str {
    classes.get(id).map_or("?", String::as_str)
}

/// One JSONL line (no trailing newline):
/// `{"image": path, "width": W, "height": H, "detections": [{"bbox": [x1,y1,x2,y2], "score": s,
/// "class_id": i, "class_name": "..."}]}`, boxes xyxy in original pixels.
pub fn jsonl_line(rec: &ImageRecord, classes: &[String]) -> String {
    let r = JsonRec {
        image: rec.image.display().to_string(),
        width: rec.width,
        height: rec.height,
        detections: rec
            .detections
            .iter()
            .map(|d| JsonDet {
                bbox: d.bbox,
                score: d.score,
                class_id: d.class_id,
                class_name: class_name(classes, d.class_id),
            })
            .collect(),
    };
    serde_json::to_string(&r).expect("plain data serializes")
}

/// Human-readable summary of one image: a header line with counts per class, then up to
/// `max_lines` detections (`class score [x1, y1, x2, y2]`).
pub fn summary(rec: &ImageRecord, classes: &[String], max_lines: usize) -> String {
    let mut counts: Vec<(usize, usize)> = vec![];
    for d in &rec.detections {
        match counts.iter_mut().find(|(c, _)| *c == d.class_id) {
            Some((_, n)) => *n += 1,
            None => counts.push((d.class_id, 1)),
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let per: Vec<String> = counts
        .iter()
        .map(|(c, n)| format!("{n} {}", class_name(classes, *c)))
        .collect();
    let mut s = format!(
        "{} ({}x{}): {} detection{}{}\n",
        rec.image.display(),
        rec.width,
        rec.height,
        rec.detections.len(),
        if rec.detections.len() == 1 { "" } else { "s" },
        if per.is_empty() {
            String::new()
        } else {
            format!(" ({})", per.join(", "))
        }
    );
    for d in rec.detections.iter().take(max_lines) {
        s.push_str(&format!(
            "  {:<16} {:.3}  [{:.1}, {:.1}, {:.1}, {:.1}]\n",
            class_name(classes, d.class_id),
            d.score,
            d.bbox[0],
            d.bbox[1],
            d.bbox[2],
            d.bbox[3]
        ));
    }
    if rec.detections.len() > max_lines {
        s.push_str(&format!(
            "  ... {} more\n",
            rec.detections.len() - max_lines
        ));
    }
    s
}

/// CSV header matching [`csv_rows`].
pub const CSV_HEADER: &str = "image,width,height,class_id,class_name,score,x1,y1,x2,y2\n";

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// CSV rows (one per detection, RFC 4180 quoting) of one image.
pub fn csv_rows(rec: &ImageRecord, classes: &[String]) -> String {
    let img = csv_field(&rec.image.display().to_string());
    let mut s = String::new();
    for d in &rec.detections {
        s.push_str(&format!(
            "{img},{},{},{},{},{},{},{},{},{}\n",
            rec.width,
            rec.height,
            d.class_id,
            csv_field(class_name(classes, d.class_id)),
            d.score,
            d.bbox[0],
            d.bbox[1],
            d.bbox[2],
            d.bbox[3]
        ));
    }
    s
}

/// Image ids and category ids of a COCO annotation file, to write COCO results.
#[derive(Debug, Clone)]
pub struct CocoIds {
    by_file: HashMap<String, u64>,
    /// Category id of class index i.
    cat_of_class: Vec<u64>,
}

/// One COCO result entry (`bbox` is `[x, y, w, h]`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CocoResult {
    pub image_id: u64,
    pub category_id: u64,
    pub bbox: [f32; 4],
    pub score: f32,
}

impl CocoIds {
    /// Reads `images[].{id, file_name}` and `categories[].{id, name}` of a COCO annotation file.
    /// Classes map to categories by name when every class name is a category name, else by
    /// position in ascending category id order (the mmdet convention) when the counts agree.
    ///
    /// Errors: [`Error::Dataset`] for unreadable / malformed JSON or classes that cannot be mapped.
    pub fn from_instances(path: &Path, classes: &[String]) -> Result<CocoIds> {
        let err = |msg: String| Error::Dataset {
            path: path.to_path_buf(),
            line: None,
            msg,
        };
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| err(format!("not valid JSON: {e}")))?;
        let mut by_file = HashMap::new();
        for im in v["images"]
            .as_array()
            .ok_or_else(|| err("no \"images\" array".into()))?
        {
            let (Some(id), Some(f)) = (im["id"].as_u64(), im["file_name"].as_str()) else {
                return Err(err(format!("image entry without id / file_name: {im}")));
            };
            by_file.insert(f.to_string(), id);
        }
        let mut cats: Vec<(u64, String)> = v["categories"]
            .as_array()
            .ok_or_else(|| err("no \"categories\" array".into()))?
            .iter()
            .filter_map(|c| Some((c["id"].as_u64()?, c["name"].as_str()?.to_string())))
            .collect();
        cats.sort();
        let by_name: HashMap<&str, u64> = cats.iter().map(|(i, n)| (n.as_str(), *i)).collect();
        let cat_of_class = if let Some(v) = classes
            .iter()
            .map(|c| by_name.get(c.as_str()).copied())
            .collect::<Option<Vec<u64>>>()
        {
            v
        } else if cats.len() == classes.len() {
            cats.iter().map(|(i, _)| *i).collect()
        } else {
            return Err(err(format!(
                "cannot map the model's {} classes onto the file's {} categories (names differ)",
                classes.len(),
                cats.len()
            )));
        };
        Ok(CocoIds {
            by_file,
            cat_of_class,
        })
    }

    /// COCO results of one image, matched by file name. Errors: [`Error::InvalidInput`] when
    /// the image is not in the annotation file.
    pub fn results(&self, rec: &ImageRecord) -> Result<Vec<CocoResult>> {
        let name = rec
            .image
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let id = *self.by_file.get(&name).ok_or_else(|| {
            Error::InvalidInput(format!(
                "{}: file name {name:?} is not an image of the COCO annotation file",
                rec.image.display()
            ))
        })?;
        Ok(rec
            .detections
            .iter()
            .filter_map(|d| {
                Some(CocoResult {
                    image_id: id,
                    category_id: *self.cat_of_class.get(d.class_id)?,
                    bbox: [
                        d.bbox[0],
                        d.bbox[1],
                        d.bbox[2] - d.bbox[0],
                        d.bbox[3] - d.bbox[1],
                    ],
                    score: d.score,
                })
            })
            .collect())
    }
}

/// The label font (DejaVu Sans, embedded; license in `assets/fonts/`).
pub fn font() -> ab_glyph::FontRef<'static> {
    ab_glyph::FontRef::try_from_slice(include_bytes!("../assets/fonts/DejaVuSans.ttf"))
        .expect("embedded font parses")
}

/// A distinct, saturated color per class id.
pub fn class_color(class_id: usize) -> Rgb<u8> {
    const P: [[u8; 3]; 10] = [
        [230, 25, 75],
        [60, 180, 75],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [255, 225, 25],
        [0, 128, 128],
    ];
    Rgb(P[class_id % P.len()])
}

/// Draws each detection as a box (2 px, class color) with a filled label `class score` above
/// it (inside the image), on a copy of `img`.
pub fn draw(img: &RgbImage, dets: &[Detection], classes: &[String]) -> RgbImage {
    use imageproc::drawing::{
        draw_filled_rect_mut, draw_hollow_rect_mut, draw_text_mut, text_size,
    };
    use imageproc::rect::Rect;
    let mut out = img.clone();
    let (w, h) = (img.width() as i32, img.height() as i32);
    if w == 0 || h == 0 {
        return out;
    }
    let font = font();
    let scale = ab_glyph::PxScale::from((h.min(w) as f32 / 40.0).clamp(12.0, 32.0));
    // Lowest score first so the best boxes end on top.
    for d in dets.iter().rev() {
        let c = class_color(d.class_id);
        let x1 = (d.bbox[0].round() as i32).clamp(0, w - 1);
        let y1 = (d.bbox[1].round() as i32).clamp(0, h - 1);
        let x2 = (d.bbox[2].round() as i32).clamp(0, w - 1);
        let y2 = (d.bbox[3].round() as i32).clamp(0, h - 1);
        for t in 0..2 {
            let (bw, bh) = ((x2 - x1 - 2 * t).max(1), (y2 - y1 - 2 * t).max(1));
            draw_hollow_rect_mut(
                &mut out,
                Rect::at(x1 + t, y1 + t).of_size(bw as u32, bh as u32),
                c,
            );
        }
        let label = format!("{} {:.2}", class_name(classes, d.class_id), d.score);
        let (tw, th) = text_size(scale, &font, &label);
        let (tw, th) = (tw as i32 + 4, th as i32 + 4);
        let ly = if y1 - th >= 0 {
            y1 - th
        } else {
            (y1 + 2).min(h - th).max(0)
        };
        let lx = x1.min(w - tw).max(0);
        draw_filled_rect_mut(&mut out, Rect::at(lx, ly).of_size(tw as u32, th as u32), c);
        let luma = 0.299 * c.0[0] as f32 + 0.587 * c.0[1] as f32 + 0.114 * c.0[2] as f32;
        let fg = if luma > 150.0 {
            Rgb([0, 0, 0])
        } else {
            Rgb([255, 255, 255])
        };
        draw_text_mut(&mut out, fg, lx + 2, ly + 1, scale, &font, &label);
    }
    out
}

/// Where `detect --draw DIR` writes the annotated copy of each input: `DIR/<file name>` for
/// JPEG and PNG inputs, `DIR/<stem>.png` for other formats; the same file name from
/// different folders gets `-2`, `-3`, ... before the extension (inputs in order; a path given
/// twice maps to one copy).
pub fn draw_destinations(dir: &Path, inputs: &[PathBuf]) -> HashMap<PathBuf, PathBuf> {
    let mut taken = std::collections::HashSet::new();
    let mut out = HashMap::new();
    for path in inputs {
        if out.contains_key(path) {
            continue;
        }
        let name = path
            .file_name()
            .map_or("image".into(), |s| s.to_string_lossy().into_owned());
        let keep = matches!(
            path.extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("jpg" | "jpeg" | "png")
        );
        let mut dest = if keep {
            dir.join(&name)
        } else {
            dir.join(&name).with_extension("png")
        };
        let mut k = 1;
        while !taken.insert(dest.clone()) {
            k += 1;
            let stem = Path::new(&name)
                .file_stem()
                .map_or("image".into(), |s| s.to_string_lossy().into_owned());
            let ext = dest
                .extension()
                .map_or("png".into(), |e| e.to_string_lossy().into_owned());
            dest = dir.join(format!("{stem}-{k}.{ext}"));
        }
        out.insert(path.clone(), dest);
    }
    out
}

/// Checks a `--draw` folder before any work: it must be a folder (created when missing) in
/// which no annotated copy ([`draw_destinations`]) would replace one of the inputs.
///
/// Errors: [`Error::InvalidInput`] naming the folder, the input and the copy that would
/// replace it; [`Error::Io`] when the folder cannot be created.
pub fn check_draw_dir(
    dir: &Path,
    dests: &HashMap<PathBuf, PathBuf>,
    inputs: &crate::fsutil::InputSet,
) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::InvalidInput(format!(
            "--draw {}: is a file, not a folder",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut clashes: Vec<(&PathBuf, &Path)> = dests
        .values()
        .filter_map(|d| inputs.find(d).map(|i| (d, i)))
        .collect();
    clashes.sort();
    if let Some((d, i)) = clashes.first() {
        return Err(Error::InvalidInput(format!(
            "--draw {}: the annotated copy {} would replace the input {}{}; \
             choose another folder",
            dir.display(),
            d.display(),
            i.display(),
            if clashes.len() > 1 {
                format!(" (and {} more)", clashes.len() - 1)
            } else {
                String::new()
            }
        )));
    }
    Ok(())
}

/// Checks every output of a `detect` run before any image is processed: each output file
/// (`(flag, path)`, e.g. `("--jsonl", out.jsonl)`) with [`crate::fsutil::check_output`], no
/// two flags naming one file, and the `--draw` folder with [`check_draw_dir`]. Returns where
/// the annotated copies go ([`draw_destinations`]; empty without `draw`).
///
/// Errors: the first problem found, naming the flag and the path as given.
pub fn check_detect_outputs(
    files: &[(&str, &Path)],
    draw: Option<&Path>,
    inputs: &[PathBuf],
) -> Result<HashMap<PathBuf, PathBuf>> {
    let set = crate::fsutil::InputSet::new(inputs);
    for (i, (flag, p)) in files.iter().enumerate() {
        crate::fsutil::check_output(flag, p, &set)?;
        if let Some((other, _)) = files[..i]
            .iter()
            .find(|(_, q)| q == p || crate::fsutil::same_file(p, q))
        {
            return Err(Error::InvalidInput(format!(
                "{other} and {flag} both name {}; give each output its own file",
                p.display()
            )));
        }
    }
    match draw {
        Some(dir) => {
            let dests = draw_destinations(dir, inputs);
            check_draw_dir(dir, &dests, &set)?;
            Ok(dests)
        }
        None => Ok(HashMap::new()),
    }
}

/// Encodes `img` (format from `dest`'s extension; JPEG quality 90) and writes it atomically.
pub fn save_image(dest: &Path, img: &RgbImage) -> Result<()> {
    let fmt = image::ImageFormat::from_path(dest).unwrap_or(image::ImageFormat::Png);
    let mut buf = std::io::Cursor::new(Vec::new());
    let res = if fmt == image::ImageFormat::Jpeg {
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 90).encode_image(img)
    } else {
        img.write_to(&mut buf, fmt)
    };
    res.map_err(|e| Error::Image {
        path: dest.to_path_buf(),
        msg: format!("cannot encode: {e}"),
    })?;
    write_atomic(dest, buf.get_ref())
}

/// Writes a little-endian float32 `.npy` (format 1.0, C order) atomically.
pub fn write_npy_f32(dest: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_s = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_s}, }}");
    // Magic (6) + version (2) + header len (2) + header + '\n' must be a multiple of 64.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + data.len() * 4);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    write_atomic(dest, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> ImageRecord {
        ImageRecord {
            image: PathBuf::from("dir/000000000139.jpg"),
            width: 640,
            height: 426,
            detections: vec![
                Detection {
                    bbox: [10.0, 20.5, 110.0, 220.25],
                    score: 0.875,
                    class_id: 1,
                },
                Detection {
                    bbox: [0.0, 0.0, 5.0, 5.0],
                    score: 0.5,
                    class_id: 0,
                },
            ],
        }
    }

    fn classes() -> Vec<String> {
        vec!["person".into(), "dining, table".into()]
    }

    #[test]
    fn jsonl_line_has_the_documented_shape() {
        let line = jsonl_line(&rec(), &classes());
        assert_eq!(
            line,
            r#"{"image":"dir/000000000139.jpg","width":640,"height":426,"detections":[{"bbox":[10.0,20.5,110.0,220.25],"score":0.875,"class_id":1,"class_name":"dining, table"},{"bbox":[0.0,0.0,5.0,5.0],"score":0.5,"class_id":0,"class_name":"person"}]}"#
        );
    }

    #[test]
    fn csv_quotes_and_summary_counts() {
        let c = csv_rows(&rec(), &classes());
        assert_eq!(
            c.lines().next().unwrap(),
            "dir/000000000139.jpg,640,426,1,\"dining, table\",0.875,10,20.5,110,220.25"
        );
        let s = summary(&rec(), &classes(), 1);
        assert!(
            s.starts_with(
                "dir/000000000139.jpg (640x426): 2 detections (1 person, 1 dining, table)"
            ),
            "{s}"
        );
        assert!(s.contains("... 1 more"));
    }

    #[test]
    fn coco_results_map_ids_and_xywh() {
        let d = tempfile::tempdir().unwrap();
        let ann = d.path().join("a.json");
        std::fs::write(
            &ann,
            r#"{"images":[{"id":139,"file_name":"000000000139.jpg"}],"categories":[{"id":67,"name":"dining, table"},{"id":1,"name":"person"}]}"#,
        )
        .unwrap();
        let ids = CocoIds::from_instances(&ann, &classes()).unwrap();
        let r = ids.results(&rec()).unwrap();
        assert_eq!(
            r[0],
            CocoResult {
                image_id: 139,
                category_id: 67,
                bbox: [10.0, 20.5, 100.0, 199.75],
                score: 0.875
            }
        );
        assert_eq!(r[1].category_id, 1);
        let mut other = rec();
        other.image = "x.jpg".into();
        assert!(
            ids.results(&other)
                .unwrap_err()
                .to_string()
                .contains("x.jpg")
        );
    }

    #[test]
    fn npy_header_is_aligned_and_data_follows() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.npy");
        write_npy_f32(
            &p,
            &[1, 3, 2, 2],
            &(0..12).map(|i| i as f32).collect::<Vec<_>>(),
        )
        .unwrap();
        let b = std::fs::read(&p).unwrap();
        let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hl) % 64, 0);
        let h = std::str::from_utf8(&b[10..10 + hl]).unwrap();
        assert!(h.contains("'shape': (1, 3, 2, 2)") && h.ends_with('\n'));
        assert_eq!(b.len(), 10 + hl + 48);
        assert_eq!(
            f32::from_le_bytes(b[10 + hl + 44..].try_into().unwrap()),
            11.0
        );
    }

    #[test]
    fn draw_marks_box_pixels_with_class_color() {
        let img = RgbImage::from_pixel(200, 100, Rgb([128, 128, 128]));
        let dets = [Detection {
            bbox: [20.0, 40.0, 120.0, 90.0],
            score: 0.9,
            class_id: 2,
        }];
        let out = draw(&img, &dets, &["a".into(), "b".into(), "car".into()]);
        assert_eq!(*out.get_pixel(20, 60), class_color(2));
        assert_eq!(*out.get_pixel(119, 60), class_color(2));
        assert_eq!(*out.get_pixel(60, 65), Rgb([128, 128, 128]));
        // The label sits above the box.
        assert!((0..40).any(|y| *out.get_pixel(25, y) == class_color(2)));
    }
}
