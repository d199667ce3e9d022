//! Mapping annotation boxes into the detector's input space with the spec's resize rule, as
//! mmdet's test/train pipeline does (`mmdet/datasets/pipelines/transforms.py` `Resize`, mmcv
//! `mmcv/image/geometric.py` `rescale_size`):
//!
//! - `keep_ratio` (`Resize(scale=(long, short), keep_ratio=True)`): `s = min(long / max(w, h),
//!   short / min(w, h))` in f64, `new = int(x * s + 0.5)`, box scale = `new / orig` per axis
//!   (`mmcv.rescale_size`, `mmdet` `Resize._resize_bboxes`);
//! - `stretch`: scale `W / w`, `H / h`;
//! - `letterbox`: `s = min(W / w, H / h)`, `new = int(x * s + 0.5)`, content placed at
//!   `((W - new_w) / 2, (H - new_h) / 2)` (integer division), boxes shifted by that offset;
//! - no rule: boxes stay in original pixels.
//!
//! The tensor size is the content size (or the fixed size) padded bottom/right to a multiple
//! of `size_divisor` (mmdet `Pad(size_divisor=32)`); the FPN grid of a level with stride `s`
//! has `ceil(H_pad / s) x ceil(W_pad / s)` cells (P6/P7 from stride-2 padding-1 convs give
//! the same ceil).

use super::Dataset;
use crate::spec::ResizeRule;
use serde::Serialize;

/// Resize rule plus padding.
#[derive(Debug, Clone, PartialEq)]
pub struct Resize {
    /// `None` keeps the original pixels.
    pub rule: Option<ResizeRule>,
    /// Pad to a multiple of this (1 = none).
    pub size_divisor: u32,
}

impl Default for Resize {
    /// mmdet FreeAnchor / ATSS test pipeline: keep ratio 1333x800, pad to 32.
    fn default() -> Self {
        Resize {
            rule: Some(ResizeRule::KeepRatio { scale: [1333, 800] }),
            size_divisor: 32,
        }
    }
}

/// Geometry of one image under a [`Resize`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Geometry {
    /// Resized content size `(w, h)` (mmdet `img_shape`).
    pub content: (u32, u32),
    /// Tensor size after padding `(w, h)` (mmdet `pad_shape`).
    pub padded: (u32, u32),
    /// Content offset (letterbox), else 0.
    pub offset: (u32, u32),
    /// Box scale per axis (mmdet `scale_factor`, `new / orig`).
    pub scale: (f64, f64),
}

impl Resize {
    /// Geometry for an original `(w, h)`.
    pub fn plan(&self, w: u32, h: u32) -> Geometry {
        let (wf, hf) = (w as f64, h as f64);
        let (content, offset, scale, fixed) = match &self.rule {
            None => ((w, h), (0, 0), (1.0, 1.0), None),
            Some(ResizeRule::KeepRatio { scale }) => {
                let long = scale[0].max(scale[1]) as f64;
                let short = scale[0].min(scale[1]) as f64;
                let s = (long / wf.max(hf)).min(short / wf.min(hf));
                let nw = (wf * s + 0.5) as u32;
                let nh = (hf * s + 0.5) as u32;
                ((nw, nh), (0, 0), (nw as f64 / wf, nh as f64 / hf), None)
            }
            Some(ResizeRule::Stretch { width, height }) => (
                (*width, *height),
                (0, 0),
                (*width as f64 / wf, *height as f64 / hf),
                Some((*width, *height)),
            ),
            Some(ResizeRule::Letterbox { width, height, .. }) => {
                let s = (*width as f64 / wf).min(*height as f64 / hf);
                let nw = ((wf * s + 0.5) as u32).min(*width);
                let nh = ((hf * s + 0.5) as u32).min(*height);
                (
                    (nw, nh),
                    ((width - nw) / 2, (height - nh) / 2),
                    (nw as f64 / wf, nh as f64 / hf),
                    Some((*width, *height)),
                )
            }
        };
        let base = fixed.unwrap_or(content);
        let d = self.size_divisor.max(1);
        let padded = (base.0.div_ceil(d) * d, base.1.div_ceil(d) * d);
        Geometry {
            content,
            padded,
            offset,
            scale,
        }
    }
}

/// One image's boxes in input pixels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MappedImage {
    pub geometry: Geometry,
    /// `[x1, y1, x2, y2]` in input pixels (f32, as the assigners compute in f32).
    pub boxes: Vec<[f32; 4]>,
    /// Class index per box.
    pub classes: Vec<u32>,
}

/// A dataset mapped into input space.
#[derive(Debug, Clone, Serialize)]
pub struct InputBoxes {
    pub classes: Vec<String>,
    pub images: Vec<MappedImage>,
}

impl InputBoxes {
    /// Map every box of `ds` with `resize`. Mapped boxes are clipped to the content area (mmdet
    /// clips resized gt boxes to `img_shape`); boxes that become degenerate are dropped and
    /// their count returned.
    pub fn map(ds: &Dataset, resize: &Resize) -> (InputBoxes, usize) {
        let mut dropped = 0;
        let images = ds
            .images
            .iter()
            .map(|im| {
                let g = resize.plan(im.size.0, im.size.1);
                let mut boxes = Vec::with_capacity(im.boxes.len());
                let mut classes = Vec::with_capacity(im.boxes.len());
                let (ox, oy) = (g.offset.0 as f64, g.offset.1 as f64);
                let (cw, ch) = (g.content.0 as f64, g.content.1 as f64);
                for b in &im.boxes {
                    let x1 = (b.bbox[0] * g.scale.0).clamp(0.0, cw);
                    let y1 = (b.bbox[1] * g.scale.1).clamp(0.0, ch);
                    let x2 = (b.bbox[2] * g.scale.0).clamp(0.0, cw);
                    let y2 = (b.bbox[3] * g.scale.1).clamp(0.0, ch);
                    let m = [
                        (x1 + ox) as f32,
                        (y1 + oy) as f32,
                        (x2 + ox) as f32,
                        (y2 + oy) as f32,
                    ];
                    if m[2] > m[0] && m[3] > m[1] {
                        boxes.push(m);
                        classes.push(b.class_id as u32);
                    } else {
                        dropped += 1;
                    }
                }
                MappedImage {
                    geometry: g,
                    boxes,
                    classes,
                }
            })
            .collect();
        (
            InputBoxes {
                classes: ds.classes.clone(),
                images,
            },
            dropped,
        )
    }

    /// Number of boxes.
    pub fn len(&self) -> usize {
        self.images.iter().map(|i| i.boxes.len()).sum()
    }

    /// Whether there are no boxes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Box widths and heights (SoA), in image order.
    pub fn wh(&self) -> (Vec<f32>, Vec<f32>) {
        let n = self.len();
        let (mut w, mut h) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for im in &self.images {
            for b in &im.boxes {
                w.push(b[2] - b[0]);
                h.push(b[3] - b[1]);
            }
        }
        (w, h)
    }

    /// Class index per box, in the order of [`InputBoxes::wh`].
    pub fn box_classes(&self) -> Vec<u32> {
        self.images
            .iter()
            .flat_map(|i| i.classes.iter().copied())
            .collect()
    }
}
