//! `--plot FILE.png`: density of the boxes in log w / log h (input pixels), with the anchors of
//! every level marked, as in Figure 2 of Zhong et al. ("Anchor Box Optimization for Object
//! Detection"). Text uses the embedded DejaVu Sans (license in `assets/fonts/`); the bitmap is
//! rendered in memory and encoded as PNG by the `image` crate.

use crate::error::{Error, Result};
use plotters::prelude::*;
use std::path::Path;

/// One anchor set to mark: label, per-level `(w, h)` in input pixels, marker colour.
pub struct Marked<'a> {
    pub label: &'a str,
    pub per_level: Vec<Vec<[f32; 2]>>,
    pub color: RGBColor,
}

fn font_registered() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let b: &'static [u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
        plotters::style::register_font("sans-serif", FontStyle::Normal, b).is_ok()
    })
}

/// Write the plot atomically (temporary PNG beside `path`, then rename).
///
/// Errors: [`Error::Io`] / [`Error::InvalidInput`] when the file cannot be written or there are
/// no boxes.
pub fn plot(path: &Path, w: &[f32], h: &[f32], sets: &[Marked], title: &str) -> Result<()> {
    if w.is_empty() {
        return Err(Error::InvalidInput("no boxes to plot".into()));
    }
    let lw: Vec<f32> = w.iter().map(|v| v.max(1e-3).log2()).collect();
    let lh: Vec<f32> = h.iter().map(|v| v.max(1e-3).log2()).collect();
    let mut lo = lw.iter().chain(&lh).cloned().fold(f32::INFINITY, f32::min);
    let mut hi = lw
        .iter()
        .chain(&lh)
        .cloned()
        .fold(f32::NEG_INFINITY, f32::max);
    for s in sets {
        for l in &s.per_level {
            for a in l {
                lo = lo.min(a[0].log2()).min(a[1].log2());
                hi = hi.max(a[0].log2()).max(a[1].log2());
            }
        }
    }
    let (lo, hi) = (lo.floor() - 0.25, hi.ceil() + 0.25);
    const BINS: usize = 140;
    let mut hist = vec![0u32; BINS * BINS];
    let bin =
        |v: f32| (((v - lo) / (hi - lo)) * BINS as f32).clamp(0.0, BINS as f32 - 1.0) as usize;
    for (a, b) in lw.iter().zip(&lh) {
        hist[bin(*b) * BINS + bin(*a)] += 1;
    }
    let maxc = hist.iter().cloned().max().unwrap_or(1).max(1) as f32;
    let text = font_registered();
    const SIZE: (u32, u32) = (900, 860);
    let mut rgb = vec![255u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
        let de = |e: String| Error::InvalidInput(format!("{}: plot: {e}", path.display()));
        root.fill(&WHITE).map_err(|e| de(e.to_string()))?;
        let mut b = ChartBuilder::on(&root);
        b.margin(20);
        if text {
            b.caption(title, ("sans-serif", 22))
                .x_label_area_size(45)
                .y_label_area_size(55);
        }
        let mut chart = b
            .build_cartesian_2d(lo..hi, lo..hi)
            .map_err(|e| de(e.to_string()))?;
        if text {
            chart
                .configure_mesh()
                .x_desc("log2 width (input px)")
                .y_desc("log2 height (input px)")
                .disable_mesh()
                .draw()
                .map_err(|e| de(e.to_string()))?;
        }
        let step = (hi - lo) / BINS as f32;
        chart
            .draw_series((0..BINS * BINS).filter(|&i| hist[i] > 0).map(|i| {
                let (y, x) = (i / BINS, i % BINS);
                let t = ((hist[i] as f32).ln_1p() / maxc.ln_1p()).clamp(0.0, 1.0);
                let c = RGBColor(
                    (255.0 * (1.0 - 0.85 * t)) as u8,
                    (255.0 * (1.0 - 0.75 * t)) as u8,
                    (255.0 * (1.0 - 0.35 * t)) as u8,
                );
                let x0 = lo + x as f32 * step;
                let y0 = lo + y as f32 * step;
                Rectangle::new([(x0, y0), (x0 + step, y0 + step)], c.filled())
            }))
            .map_err(|e| de(e.to_string()))?;
        for (si, s) in sets.iter().enumerate() {
            let pts: Vec<(f32, f32)> = s
                .per_level
                .iter()
                .flatten()
                .map(|a| (a[0].log2(), a[1].log2()))
                .collect();
            let color = s.color;
            let series = chart
                .draw_series(pts.iter().map(move |&p| {
                    if si == 0 {
                        Cross::new(p, 6, color.stroke_width(2)).into_dyn()
                    } else {
                        Circle::new(p, 5, color.stroke_width(2)).into_dyn()
                    }
                }))
                .map_err(|e| de(e.to_string()))?;
            if text {
                series
                    .label(s.label)
                    .legend(move |(x, y)| Circle::new((x, y), 5, color.filled()));
            }
        }
        if text {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| de(e.to_string()))?;
        }
        root.present().map_err(|e| de(e.to_string()))?;
    }
    let img = image::RgbImage::from_raw(SIZE.0, SIZE.1, rgb)
        .ok_or_else(|| Error::InvalidInput(format!("{}: plot buffer size", path.display())))?;
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| Error::InvalidInput(format!("{}: plot: {e}", path.display())))?;
    crate::fsutil::write_atomic(path, png.get_ref())
}
