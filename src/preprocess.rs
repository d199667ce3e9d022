//! Image decoding and network-input preprocessing: EXIF orientation, any colour type to RGB8,
//! resize (mmdet keep-ratio rounding, stretch, letterbox), normalize, pad, NCHW f32.
//!
//! Sources: mmcv `v1.7.2:mmcv/image/geometric.py` (`rescale_size`, `_scale_size`, `imresize`),
//! mmcv `v1.7.2:mmcv/image/photometric.py` (`imnormalize_`), mmdet
//! `mmdet/datasets/pipelines/transforms.py` (v2 `Resize`, `Normalize`, `Pad`), v3
//! `mmdet/models/data_preprocessors/data_preprocessor.py` (`DetDataPreprocessor`).
//!
//! # Resize kernel
//! The default backend ([`ResizeBackend::Cv2`], module [`cv2_linear`]) reproduces OpenCV's
//! fixed-point `cv2.resize(..., INTER_LINEAR)` bit for bit, as mmcv `imresize` calls it, and
//! fuses the normalization into the same row loop. The other backend,
//! [`ResizeBackend::FastImageResize`], uses `fast_image_resize` with
//! `ResizeAlg::Interpolation(FilterType::Bilinear)`: a bilinear convolution that widens its
//! support when downscaling (antialiased), so it differs from OpenCV by 1-3 u8 levels on
//! 15-38% of the pixels of COCO images.
//!
//! # Normalization
//! mmdet v2: `(x - mean) * (1/std)` in f32 with `1/std` taken in f64 (`cv2.multiply` by the
//! reciprocal). This module reproduces the v2 form through a per-channel 256-entry lookup table
//! (the value for each u8 level is computed exactly with that formula), which makes the
//! normalize loop a gather.

use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use fast_image_resize as fir;
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

use crate::error::{Error, Result};
use crate::spec::{ChannelOrder, InputSpec, ResizeBackend, ResizeRule};

pub mod cv2_linear;
pub mod libjpeg;

/// Bit-exact `cv2.resize(src, (dw, dh), interpolation=cv2.INTER_LINEAR)` of an RGB8 image
/// (see [`cv2_linear`]); `dw`, `dh` at least 1.
///
/// Errors: [`Error::InvalidInput`] for an empty source or a zero destination size.
pub fn resize_linear_cv2(src: &RgbImage, dw: u32, dh: u32) -> Result<RgbImage> {
    if src.width() == 0 || src.height() == 0 || dw == 0 || dh == 0 {
        return Err(Error::InvalidInput(format!(
            "cannot resize {}x{} to {dw}x{dh}",
            src.width(),
            src.height()
        )));
    }
    let mut out = RgbImage::new(dw, dh);
    let row = dw as usize * 3;
    let buf: &mut [u8] = &mut out;
    cv2_linear::LinearResize::new(src.width(), src.height(), dw, dh).run(src.as_raw(), |y, px| {
        for (d, s) in buf[y * row..(y + 1) * row]
            .chunks_exact_mut(3)
            .zip(px.chunks_exact(4))
        {
            d.copy_from_slice(&s[..3]);
        }
    });
    Ok(out)
}

/// Decode encoded image bytes to RGB8.
///
/// * JPEG pixels come from libjpeg-turbo when it loads ([`libjpeg`]), equal to OpenCV's
///   `cv2.imdecode`; otherwise (and for CMYK JPEGs and every other format) from the `image`
///   crate.
/// * Gray, gray+alpha, RGBA, 16-bit and palette images are converted to RGB8 (alpha is dropped,
///   as OpenCV `IMREAD_COLOR` does; 16-bit samples are scaled to 8 bits by the `image` crate's
///   rounding conversion, which may differ by 1 from OpenCV's `>> 8`).
/// * With `exif_orientation`, the EXIF orientation tag (JPEG, TIFF, WebP, PNG eXIf) is applied,
///   as OpenCV 4.x `imdecode(IMREAD_COLOR)` does (mmcv `imfrombytes`, flag `'color'`;
///   `mmcv/image/io.py` `imread_flags`).
///
/// * Decompression bombs: the size in the header is checked against [`max_pixels`] (default
///   [`DEFAULT_MAX_PIXELS`], `--max-pixels`) before any pixel buffer is allocated, and the
///   `image` crate's decoders run under an allocation limit of 8 bytes per allowed pixel.
///
/// Errors: [`Error::Image`] naming `path` for empty, truncated, corrupt or non-image data, and
/// for an image larger than the pixel limit.
pub fn decode_image(bytes: &[u8], path: &Path, exif_orientation: bool) -> Result<RgbImage> {
    let err = |msg: String| Error::Image {
        path: path.to_path_buf(),
        msg,
    };
    if bytes.is_empty() {
        return Err(err("file is empty (0 bytes)".into()));
    }
    let limit = max_pixels();
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| err(format!("cannot read: {e}")))?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(limit.saturating_mul(8).max(64 << 20));
    reader.limits(limits);
    if reader.format().is_none() {
        return Err(err(
            "not a recognized image format (unknown file signature)".into(),
        ));
    }
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_has_eoi_after_last_scan(bytes) {
        // zune-jpeg (like libjpeg with a warning) fills a truncated scan with grey; a
        // half-grey image silently degrades detection, so this is reported as an error.
        return Err(err(
            "truncated JPEG data (no end-of-image marker after the last scan)".into(),
        ));
    }
    let is_jpeg = reader.format() == Some(image::ImageFormat::Jpeg);
    let mut decoder = reader.into_decoder().map_err(|e| match e {
        image::ImageError::Limits(l) => err(format!("image exceeds the decoder limits: {l}")),
        e => err(format!("invalid or truncated image header: {e}")),
    })?;
    let (w, h) = decoder.dimensions();
    check_pixels(w, h, limit).map_err(err)?;
    // An unreadable or absent EXIF block is not an error: OpenCV ignores it too.
    let orientation = if exif_orientation {
        decoder.orientation().ok()
    } else {
        None
    };
    // JPEG pixels from libjpeg-turbo, as OpenCV decodes them; else (no library, CMYK) and
    // for every other format from the image crate
    let jpeg = if is_jpeg {
        match libjpeg::decode(bytes, limit) {
            Ok(libjpeg::Decoded::Rgb(img, warning)) => {
                if let Some(w) = warning {
                    // OpenCV decodes such files too (libjpeg recovers); say so and go on
                    tracing::warn!("{}: corrupt JPEG data: {w}", path.display());
                }
                Some(DynamicImage::ImageRgb8(img))
            }
            Ok(libjpeg::Decoded::Unsupported) => None,
            Err(msg) => return Err(err(format!("corrupt JPEG data: {msg}"))),
        }
    } else {
        None
    };
    let mut img = match jpeg {
        Some(img) => img,
        None => DynamicImage::from_decoder(decoder).map_err(|e| match e {
            image::ImageError::Limits(l) => err(format!("image exceeds the decoder limits: {l}")),
            e => err(format!("corrupt or truncated image data: {e}")),
        })?,
    };
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    if img.width() == 0 || img.height() == 0 {
        return Err(err(format!(
            "image has zero size ({}x{})",
            img.width(),
            img.height()
        )));
    }
    Ok(match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.into_rgb8(),
    })
}

/// Default maximum number of pixels of a decoded image: 100 megapixels (e.g. 12000 x 8333), a
/// 300 MB RGB8 buffer.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

static MAX_PIXELS: AtomicU64 = AtomicU64::new(DEFAULT_MAX_PIXELS);

/// Sets the process-wide pixel limit of [`decode_image`] / [`load_image`] (`--max-pixels`).
///
/// Errors: [`Error::InvalidInput`] for 0.
pub fn set_max_pixels(n: u64) -> Result<()> {
    if n == 0 {
        return Err(Error::InvalidInput(
            "--max-pixels must be at least 1".into(),
        ));
    }
    MAX_PIXELS.store(n, Ordering::Relaxed);
    Ok(())
}

/// The pixel limit in force (see [`set_max_pixels`]).
pub fn max_pixels() -> u64 {
    MAX_PIXELS.load(Ordering::Relaxed)
}

/// `Err(message)` when a `w` x `h` header exceeds `limit` pixels.
pub(crate) fn check_pixels(w: u32, h: u32, limit: u64) -> std::result::Result<(), String> {
    let n = w as u64 * h as u64;
    if n > limit {
        return Err(format!(
            "image is {w}x{h} = {:.1} megapixels, more than the limit of {:.1} megapixels \
             (a decompression bomb, or a real image: raise --max-pixels)",
            n as f64 / 1e6,
            limit as f64 / 1e6
        ));
    }
    Ok(())
}

/// True when a JPEG stream has an EOI marker (`FF D9`) after its last SOS marker (`FF DA`).
///
/// Inside entropy-coded data every `FF` byte is followed by `00` or a restart marker, so both
/// markers are unambiguous; an EXIF thumbnail's own EOI lies before the main image's SOS.
fn jpeg_has_eoi_after_last_scan(bytes: &[u8]) -> bool {
    // memchr's SIMD substring search: a baseline JPEG's only SOS sits near the start, so the
    // backward search crosses the whole entropy-coded scan
    match memchr::memmem::rfind(bytes, &[0xff, 0xda]) {
        Some(p) => memchr::memmem::find(&bytes[p..], &[0xff, 0xd9]).is_some(),
        None => false,
    }
}

/// Read a file and decode it with [`decode_image`].
///
/// Errors: [`Error::Io`] naming `path` when the file cannot be read (missing, permission),
/// [`Error::Image`] when it cannot be decoded.
pub fn load_image(path: &Path, exif_orientation: bool) -> Result<RgbImage> {
    // no image within the pixel limit needs more than 8 bytes per pixel plus its metadata
    let max_len = max_pixels().saturating_mul(8).saturating_add(64 << 20);
    if let Ok(m) = std::fs::metadata(path)
        && m.len() > max_len
    {
        return Err(Error::Image {
            path: path.to_path_buf(),
            msg: format!(
                "file is {} MB, more than an image within the limit of {:.1} megapixels \
                 can take (raise --max-pixels)",
                m.len() >> 20,
                max_pixels() as f64 / 1e6
            ),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_image(&bytes, path, exif_orientation)
}

/// Geometry of one preprocessed image: everything post-processing needs to map boxes back.
///
/// Boxes in network-input pixels map to original pixels by
/// `x_orig = (x_input - pad_left) / scale_w`, `y_orig = (y_input - pad_top) / scale_h`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageMeta {
    /// Decoded size (after EXIF orientation), pixels.
    pub orig_w: u32,
    pub orig_h: u32,
    /// Size of the resized image content (mmdet `img_shape`), pixels.
    pub resized_w: u32,
    pub resized_h: u32,
    /// Tensor size after padding (mmdet `pad_shape`), pixels.
    pub input_w: u32,
    pub input_h: u32,
    /// Offset of the content inside the tensor (letterbox), else 0.
    pub pad_left: u32,
    pub pad_top: u32,
    /// `resized_w / orig_w` and `resized_h / orig_h` in f64 (mmdet `scale_factor`, recomputed
    /// from the integer sizes; the two are not equal in general).
    pub scale_w: f64,
    pub scale_h: f64,
}

/// Round `v` up to a multiple of `d` (`d <= 1` means no padding).
fn round_up(v: u32, d: u32) -> u32 {
    if d <= 1 { v } else { v.div_ceil(d) * d }
}

/// mmcv `_scale_size`: `int(x * s + 0.5)` in f64 (truncation toward zero), at least 1.
fn scale_size(x: u32, s: f64) -> u32 {
    ((x as f64 * s + 0.5) as u32).max(1)
}

/// Compute the geometry of an `orig_w x orig_h` image under the spec's resize rule.
///
/// * `KeepRatio { scale: [a, b] }`: mmcv `rescale_size`: `s = min(long / max(w, h),
///   short / min(w, h))` in f64 with `long = max(a, b)`, `short = min(a, b)`; new size
///   `int(w*s + 0.5)`, `int(h*s + 0.5)`; scale factors recomputed from the integers.
/// * `Stretch { width, height }`: exactly that size.
/// * `Letterbox { width, height }`: `s = min(width / w, height / h)`, new size as keep-ratio
///   (capped at the box), content centred with `pad_left = (width - new_w) / 2` (floor).
///
/// The tensor size is then rounded up to `pad.size_divisor` (padding bottom/right).
/// A zero original size is treated as 1 (never divides by zero).
pub fn plan(input: &InputSpec, orig_w: u32, orig_h: u32) -> ImageMeta {
    let (w, h) = (orig_w.max(1), orig_h.max(1));
    let (resized_w, resized_h, box_w, box_h, pad_left, pad_top) = match &input.resize {
        ResizeRule::KeepRatio { scale } => {
            let long = scale[0].max(scale[1]) as f64;
            let short = scale[0].min(scale[1]) as f64;
            let s = (long / w.max(h) as f64).min(short / w.min(h) as f64);
            let (nw, nh) = (scale_size(w, s), scale_size(h, s));
            (nw, nh, nw, nh, 0, 0)
        }
        ResizeRule::Stretch { width, height } => {
            let (bw, bh) = ((*width).max(1), (*height).max(1));
            (bw, bh, bw, bh, 0, 0)
        }
        ResizeRule::Letterbox { width, height, .. } => {
            let (bw, bh) = ((*width).max(1), (*height).max(1));
            let s = (bw as f64 / w as f64).min(bh as f64 / h as f64);
            let nw = scale_size(w, s).min(bw);
            let nh = scale_size(h, s).min(bh);
            (nw, nh, bw, bh, (bw - nw) / 2, (bh - nh) / 2)
        }
    };
    ImageMeta {
        orig_w: w,
        orig_h: h,
        resized_w,
        resized_h,
        input_w: round_up(box_w, input.pad.size_divisor),
        input_h: round_up(box_h, input.pad.size_divisor),
        pad_left,
        pad_top,
        scale_w: resized_w as f64 / w as f64,
        scale_h: resized_h as f64 / h as f64,
    }
}

/// The padded tensor extents `(width, height)` the input's resize rule can produce, all taken
/// from [`plan`]:
/// * keep-ratio to `(long, short)`: the landscape maximum is the plan of a `long x short`
///   image (e.g. 1344x800 for mmdet's (1333, 800) with divisor 32), the portrait maximum its
///   transpose; the minimum is one divisor step (`d x d`).
/// * stretch / letterbox: the one fixed size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapeRange {
    /// Smallest padded extent `(w, h)`.
    pub min: (u32, u32),
    /// Largest landscape padded extent `(w, h)`.
    pub landscape: (u32, u32),
    /// Largest portrait padded extent `(w, h)`.
    pub portrait: (u32, u32),
}

impl ShapeRange {
    /// `(max w, max h)` over both orientations: the square that holds every padded input.
    pub fn max(&self) -> (u32, u32) {
        (
            self.landscape.0.max(self.portrait.0),
            self.landscape.1.max(self.portrait.1),
        )
    }

    /// Whether every input has the same padded extent (stretch, letterbox).
    pub fn is_fixed(&self) -> bool {
        self.min == self.landscape && self.landscape == self.portrait
    }
}

/// The padded extents of `input`'s resize rule (see [`ShapeRange`]).
pub fn shape_range(input: &InputSpec) -> ShapeRange {
    let at = |w: u32, h: u32| {
        let m = plan(input, w, h);
        (m.input_w, m.input_h)
    };
    match &input.resize {
        ResizeRule::KeepRatio { scale } => {
            let long = scale[0].max(scale[1]).max(1);
            let short = scale[0].min(scale[1]).max(1);
            let d = input.pad.size_divisor.max(1);
            ShapeRange {
                min: (d, d),
                landscape: at(long, short),
                portrait: at(short, long),
            }
        }
        ResizeRule::Stretch { .. } | ResizeRule::Letterbox { .. } => {
            let f = at(1, 1);
            ShapeRange {
                min: f,
                landscape: f,
                portrait: f,
            }
        }
    }
}

/// [`plan`], then the tensor extent padded further (bottom/right, with `pad.value` as mmdet's
/// `Pad` does, so box coordinates are unchanged) to the first of `buckets` that holds it (see
/// [`crate::shapes::ShapeBuckets::route`]); an image larger than every bucket keeps its own
/// extent.
pub fn plan_bucketed(
    input: &InputSpec,
    buckets: Option<&crate::shapes::ShapeBuckets>,
    orig_w: u32,
    orig_h: u32,
) -> ImageMeta {
    let mut meta = plan(input, orig_w, orig_h);
    if let Some((w, h)) = buckets.and_then(|b| b.route(meta.input_w, meta.input_h)) {
        meta.input_w = w;
        meta.input_h = h;
    }
    meta
}

/// Reusable preprocessor: resize (the spec's [`ResizeBackend`]) + normalize + pad into an
/// NCHW f32 tensor `[1, 3, input_h, input_w]` in the spec's channel order. Buffers are kept
/// between calls, so steady-state runs do not allocate (the OpenCV backend rebuilds its
/// coefficient tables only when the source or target size changes).
pub struct Preprocessor {
    input: InputSpec,
    resizer: fir::Resizer,
    /// Tables of the OpenCV backend for the last geometry.
    linear: Option<cv2_linear::LinearResize>,
    resized: Vec<u8>,
    tensor: Vec<f32>,
    /// Tensor channel `c` reads RGB channel `src_ch[c]`.
    src_ch: [usize; 3],
    /// mmdet v2 normalization per tensor channel: `(x - mean) * inv_std` in f32.
    mean: [f32; 3],
    inv_std: [f32; 3],
    /// `lut[c][v]` = normalized value of u8 level `v` for tensor channel `c`.
    lut: [[f32; 256]; 3],
    /// Normalized letterbox fill per tensor channel.
    letterbox_fill: [f32; 3],
    /// Canonical padded shapes to pad every input up to (GPU shape buckets), if any.
    buckets: Option<crate::shapes::ShapeBuckets>,
    meta: Option<ImageMeta>,
}

impl Preprocessor {
    /// Build a preprocessor for the spec's input section.
    pub fn new(input: &InputSpec) -> Self {
        let mut lut = [[0f32; 256]; 3];
        let mut inv_stds = [0f32; 3];
        let mut letterbox_fill = [0f32; 3];
        let lb_pad = match input.resize {
            ResizeRule::Letterbox { pad_value, .. } => pad_value,
            _ => 0.0,
        };
        for c in 0..3 {
            let mean = input.mean[c];
            let inv_std = (1.0f64 / input.std[c] as f64) as f32;
            for (v, slot) in lut[c].iter_mut().enumerate() {
                *slot = (v as f32 - mean) * inv_std;
            }
            letterbox_fill[c] = (lb_pad - mean) * inv_std;
            inv_stds[c] = inv_std;
        }
        Preprocessor {
            input: input.clone(),
            resizer: fir::Resizer::new(),
            linear: None,
            resized: Vec::new(),
            tensor: Vec::new(),
            src_ch: match input.channel_order {
                ChannelOrder::Rgb => [0, 1, 2],
                ChannelOrder::Bgr => [2, 1, 0],
            },
            mean: input.mean,
            inv_std: inv_stds,
            lut,
            letterbox_fill,
            buckets: None,
            meta: None,
        }
    }

    /// A preprocessor that pads every input further to its shape bucket
    /// ([`plan_bucketed`]); `None` behaves as [`Preprocessor::new`].
    pub fn with_buckets(input: &InputSpec, buckets: Option<crate::shapes::ShapeBuckets>) -> Self {
        let mut p = Self::new(input);
        p.buckets = buckets;
        p
    }

    /// The shape buckets this preprocessor pads to, if any.
    pub fn buckets(&self) -> Option<&crate::shapes::ShapeBuckets> {
        self.buckets.as_ref()
    }

    /// The input spec this preprocessor was built for.
    pub fn input_spec(&self) -> &InputSpec {
        &self.input
    }

    /// Geometry of the last [`Preprocessor::run`], if any.
    pub fn meta(&self) -> Option<&ImageMeta> {
        self.meta.as_ref()
    }

    /// Preprocess one RGB8 image into the internal tensor; returns its geometry.
    ///
    /// Errors: [`Error::InvalidInput`] for an empty image or a resize failure.
    pub fn run(&mut self, img: &RgbImage) -> Result<ImageMeta> {
        if img.width() == 0 || img.height() == 0 {
            return Err(Error::InvalidInput(format!(
                "cannot preprocess an empty image ({}x{})",
                img.width(),
                img.height()
            )));
        }
        let meta = plan_bucketed(
            &self.input,
            self.buckets.as_ref(),
            img.width(),
            img.height(),
        );
        self.tensor
            .resize(3 * meta.input_w as usize * meta.input_h as usize, 0.0);
        self.fill_padding(&meta);
        match self.input.resize_backend {
            ResizeBackend::Cv2 => self.resize_normalize_cv2(img, &meta),
            ResizeBackend::FastImageResize => {
                self.resize(img, &meta)?;
                self.normalize_content(&meta);
            }
        }
        self.meta = Some(meta);
        Ok(meta)
    }

    /// The tensor of the last run: NCHW f32, length `3 * input_h * input_w`.
    pub fn tensor(&self) -> &[f32] {
        &self.tensor
    }

    /// The tensor's three channel planes (`input_h * input_w` each) for `meta`.
    fn planes(&mut self, meta: &ImageMeta) -> [&mut [f32]; 3] {
        let plane = meta.input_w as usize * meta.input_h as usize;
        let (p0, rest) = self.tensor.split_at_mut(plane);
        let (p1, p2) = rest.split_at_mut(plane);
        [p0, p1, p2]
    }

    /// OpenCV backend: resize row by row and normalize each row while it is in cache.
    fn resize_normalize_cv2(&mut self, img: &RgbImage, meta: &ImageMeta) {
        let (rw, rh) = (meta.resized_w, meta.resized_h);
        let (iw, pl, pt) = (
            meta.input_w as usize,
            meta.pad_left as usize,
            meta.pad_top as usize,
        );
        if !self
            .linear
            .as_ref()
            .is_some_and(|l| l.fits(img.width(), img.height(), rw, rh))
        {
            self.linear = Some(cv2_linear::LinearResize::new(
                img.width(),
                img.height(),
                rw,
                rh,
            ));
        }
        let (src_ch, mean, inv_std) = (self.src_ch, self.mean, self.inv_std);
        let mut lin = self.linear.take().expect("tables were just built");
        let [p0, p1, p2] = self.planes(meta);
        let rw = rw as usize;
        lin.run(img.as_raw(), |dy, row| {
            let o = (pt + dy) * iw + pl;
            cv2_linear::normalize_row(
                row,
                src_ch,
                mean,
                inv_std,
                [&mut p0[o..o + rw], &mut p1[o..o + rw], &mut p2[o..o + rw]],
            );
        });
        self.linear = Some(lin);
    }

    fn resize(&mut self, img: &RgbImage, meta: &ImageMeta) -> Result<()> {
        let (rw, rh) = (meta.resized_w, meta.resized_h);
        let n = rw as usize * rh as usize * 3;
        self.resized.resize(n, 0);
        if rw == img.width() && rh == img.height() {
            self.resized.copy_from_slice(img.as_raw());
            return Ok(());
        }
        let fail = |e: String| Error::InvalidInput(format!("resize to {rw}x{rh} failed: {e}"));
        let src = fir::images::ImageRef::new(
            img.width(),
            img.height(),
            img.as_raw(),
            fir::PixelType::U8x3,
        )
        .map_err(|e| fail(e.to_string()))?;
        let mut dst =
            fir::images::Image::from_slice_u8(rw, rh, &mut self.resized, fir::PixelType::U8x3)
                .map_err(|e| fail(e.to_string()))?;
        let opts = fir::ResizeOptions::new()
            .resize_alg(fir::ResizeAlg::Interpolation(fir::FilterType::Bilinear));
        self.resizer
            .resize(&src, &mut dst, &opts)
            .map_err(|e| fail(e.to_string()))
    }

    /// Fill everything outside the resized content: divisor padding (`pad.value`, already
    /// normalized units, as mmdet pads after `Normalize`) and the letterbox border (the
    /// normalized `pad_value`).
    fn fill_padding(&mut self, meta: &ImageMeta) {
        let iw = meta.input_w as usize;
        let (rw, rh) = (meta.resized_w as usize, meta.resized_h as usize);
        let (pl, pt) = (meta.pad_left as usize, meta.pad_top as usize);
        // Letterbox box (content + centred padding) vs. divisor padding (bottom/right).
        let (bw, bh) = match self.input.resize {
            ResizeRule::Letterbox { width, height, .. } => (width as usize, height as usize),
            _ => (rw, rh),
        };
        let pad_val = self.input.pad.value;
        let lb = self.letterbox_fill;
        let planes = self.planes(meta);
        for (p, lbv) in planes.into_iter().zip(lb) {
            for (y, r) in p.chunks_exact_mut(iw).enumerate() {
                if y >= bh {
                    r.fill(pad_val);
                    continue;
                }
                r[bw..].fill(pad_val);
                if y < pt || y >= pt + rh {
                    r[..bw].fill(lbv);
                    continue;
                }
                r[..pl].fill(lbv);
                r[pl + rw..bw].fill(lbv);
            }
        }
    }

    /// fast_image_resize backend: normalize `self.resized` into the content rectangle.
    fn normalize_content(&mut self, meta: &ImageMeta) {
        let iw = meta.input_w as usize;
        let (rw, rh) = (meta.resized_w as usize, meta.resized_h as usize);
        let (pl, pt) = (meta.pad_left as usize, meta.pad_top as usize);
        let [s0, s1, s2] = self.src_ch;
        let lut = self.lut;
        let resized = std::mem::take(&mut self.resized);
        let [o0, o1, o2] = self.planes(meta);
        let l = [&lut[0], &lut[1], &lut[2]];
        for y in 0..rh {
            let o = (pt + y) * iw + pl;
            let src = &resized[y * rw * 3..(y + 1) * rw * 3];
            let d = [&mut o0[o..o + rw], &mut o1[o..o + rw], &mut o2[o..o + rw]];
            match (s0, s1, s2) {
                (0, 1, 2) => planar_row::<0, 1, 2>(src, d, l),
                _ => planar_row::<2, 1, 0>(src, d, l),
            }
        }
        self.resized = resized;
    }
}

/// One row of interleaved RGB8 to three normalized planes through the per-channel LUTs;
/// tensor channel `c` reads source channel `S_c` (constants, so the loop has no bounds checks
/// and no index arithmetic beyond the zipped iterators).
#[inline(always)]
fn planar_row<const S0: usize, const S1: usize, const S2: usize>(
    src: &[u8],
    d: [&mut [f32]; 3],
    l: [&[f32; 256]; 3],
) {
    let [d0, d1, d2] = d;
    for (((px, a), b), c) in src
        .chunks_exact(3)
        .zip(d0.iter_mut())
        .zip(d1.iter_mut())
        .zip(d2.iter_mut())
    {
        *a = l[0][px[S0] as usize];
        *b = l[1][px[S1] as usize];
        *c = l[2][px[S2] as usize];
    }
}

#[cfg(test)]
#[allow(clippy::excessive_precision)] // reference values are quoted as published
mod tests {
    use super::*;
    use crate::spec::PadSpec;

    fn keep_ratio_spec() -> InputSpec {
        InputSpec::mmdet_default()
    }

    /// Sizes worked out with mmcv `rescale_size` for mmdet's (1333, 800) keep-ratio scale.
    #[test]
    fn keep_ratio_worked_sizes() {
        let spec = keep_ratio_spec();
        let cases = [
            // orig w, h -> resized w, h, w_scale, h_scale, padded w, h
            (640, 480, 1067, 800, 1.6671875, 1.6666667, 1088, 800),
            (1920, 1080, 1333, 750, 0.6942708, 0.6944444, 1344, 768),
            (427, 640, 800, 1199, 1.8735363, 1.8734375, 800, 1216),
        ];
        for (w, h, rw, rh, sw, sh, pw, ph) in cases {
            let m = plan(&spec, w, h);
            assert_eq!((m.resized_w, m.resized_h), (rw, rh), "{w}x{h}");
            assert_eq!((m.input_w, m.input_h), (pw, ph), "{w}x{h}");
            assert!((m.scale_w - sw).abs() < 1e-7, "{w}x{h}: {}", m.scale_w);
            assert!((m.scale_h - sh).abs() < 1e-7, "{w}x{h}: {}", m.scale_h);
            assert_eq!((m.pad_left, m.pad_top), (0, 0));
        }
        // scale given as (short, long) means the same thing
        let mut s2 = spec.clone();
        s2.resize = ResizeRule::KeepRatio { scale: [800, 1333] };
        assert_eq!(plan(&s2, 640, 480), plan(&spec, 640, 480));
    }

    #[test]
    fn stretch_and_letterbox_plans() {
        let mut spec = keep_ratio_spec();
        spec.resize = ResizeRule::Stretch {
            width: 320,
            height: 320,
        };
        spec.pad.size_divisor = 1;
        let m = plan(&spec, 640, 427);
        assert_eq!(
            (m.resized_w, m.resized_h, m.input_w, m.input_h),
            (320, 320, 320, 320)
        );
        assert_eq!(m.scale_w, 0.5);
        assert_eq!(m.scale_h, 320.0 / 427.0);

        spec.resize = ResizeRule::Letterbox {
            width: 640,
            height: 640,
            pad_value: 114.0,
        };
        let m = plan(&spec, 640, 427);
        assert_eq!((m.resized_w, m.resized_h), (640, 427));
        assert_eq!((m.input_w, m.input_h), (640, 640));
        assert_eq!((m.pad_left, m.pad_top), (0, 106));
        let m = plan(&spec, 100, 300);
        assert_eq!((m.resized_w, m.resized_h), (213, 640));
        assert_eq!((m.pad_left, m.pad_top), (213, 0));
    }

    #[test]
    fn normalize_pad_layout_and_values() {
        // 2x2 image, no resize: keep_ratio scale that maps 2x2 to 2x2.
        let mut spec = keep_ratio_spec();
        spec.resize = ResizeRule::Stretch {
            width: 2,
            height: 2,
        };
        spec.pad = PadSpec {
            size_divisor: 4,
            value: -7.0,
        };
        let mut img = RgbImage::new(2, 2);
        img.put_pixel(0, 0, image::Rgb([10, 20, 30]));
        img.put_pixel(1, 0, image::Rgb([40, 50, 60]));
        img.put_pixel(0, 1, image::Rgb([70, 80, 90]));
        img.put_pixel(1, 1, image::Rgb([255, 0, 128]));
        let mut pre = Preprocessor::new(&spec);
        let m = pre.run(&img).unwrap();
        assert_eq!((m.input_w, m.input_h), (4, 4));
        let t = pre.tensor();
        assert_eq!(t.len(), 3 * 16);
        let norm = |v: u8, c: usize| (v as f32 - spec.mean[c]) * (1.0 / spec.std[c] as f64) as f32;
        // RGB order, planar.
        assert_eq!(t[0], norm(10, 0));
        assert_eq!(t[1], norm(40, 0));
        assert_eq!(t[4], norm(70, 0));
        assert_eq!(t[5], norm(255, 0));
        assert_eq!(t[16 + 5], norm(0, 1));
        assert_eq!(t[32 + 5], norm(128, 2));
        assert!((t[0] - (10.0 - 123.675) / 58.395).abs() < 1e-6);
        // padding right and bottom
        for &i in &[2usize, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15] {
            assert_eq!(t[i], -7.0);
            assert_eq!(t[16 + i], -7.0);
            assert_eq!(t[32 + i], -7.0);
        }
        // BGR order swaps the source channels (mean/std are given in tensor order)
        spec.channel_order = ChannelOrder::Bgr;
        let mut pre = Preprocessor::new(&spec);
        pre.run(&img).unwrap();
        let t = pre.tensor();
        assert_eq!(t[0], norm(30, 0));
        assert_eq!(t[32], norm(10, 2));
    }

    #[test]
    fn letterbox_fill_values() {
        let mut spec = keep_ratio_spec();
        spec.resize = ResizeRule::Letterbox {
            width: 4,
            height: 4,
            pad_value: 114.0,
        };
        spec.pad.size_divisor = 1;
        let img = RgbImage::from_pixel(4, 2, image::Rgb([200, 200, 200]));
        let mut pre = Preprocessor::new(&spec);
        let m = pre.run(&img).unwrap();
        assert_eq!((m.pad_top, m.resized_h), (1, 2));
        let t = pre.tensor();
        let fill = (114.0 - spec.mean[0]) * (1.0 / spec.std[0] as f64) as f32;
        let content = (200.0 - spec.mean[0]) * (1.0 / spec.std[0] as f64) as f32;
        assert_eq!(&t[0..4], &[fill; 4]);
        assert_eq!(&t[4..12], &[content; 8]);
        assert_eq!(&t[12..16], &[fill; 4]);
    }

    #[test]
    fn both_backends_resize_a_ramp_bilinearly() {
        // A horizontal ramp upscaled 2x stays a ramp (bilinear, half-pixel centres).
        let mut img = RgbImage::new(8, 8);
        for y in 0..8 {
            for x in 0..8 {
                let v = (x * 30) as u8;
                img.put_pixel(x, y, image::Rgb([v, v, v]));
            }
        }
        let mut spec = keep_ratio_spec();
        spec.resize = ResizeRule::Stretch {
            width: 16,
            height: 16,
        };
        spec.pad.size_divisor = 1;
        spec.mean = [0.0; 3];
        spec.std = [1.0; 3];
        // dst x=3 -> src 1.25 -> 0.75*30 + 0.25*60 = 37.5; OpenCV's fixed point truncates
        // (weights 1536/512, (4800*1536 >> 16) + (4800*512 >> 16) = 149, (149 + 2) >> 2 = 37)
        let expect = [
            (0usize, 0.0f32),
            (3, 37.0),
            (4, 52.0),
            (8, 112.0),
            (15, 210.0),
        ];
        for backend in [ResizeBackend::Cv2, ResizeBackend::FastImageResize] {
            spec.resize_backend = backend;
            let mut pre = Preprocessor::new(&spec);
            pre.run(&img).unwrap();
            let t = pre.tensor();
            for (x, want) in expect {
                let got = t[5 * 16 + x];
                let tol = if backend == ResizeBackend::Cv2 {
                    0.0
                } else {
                    1.0
                };
                assert!(
                    (got - want).abs() <= tol,
                    "{backend:?} x={x}: {got} vs {want}"
                );
            }
        }
    }

    fn encode_png(img: &DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn color_types_convert_to_rgb8() {
        let p = Path::new("mem.png");
        let gray = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(3, 2, image::Luma([77])));
        let d = decode_image(&encode_png(&gray), p, true).unwrap();
        assert_eq!(d.dimensions(), (3, 2));
        assert_eq!(d.get_pixel(1, 1).0, [77, 77, 77]);
        let rgba = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            2,
            2,
            image::Rgba([1, 2, 3, 9]),
        ));
        assert_eq!(
            decode_image(&encode_png(&rgba), p, true)
                .unwrap()
                .get_pixel(0, 0)
                .0,
            [1, 2, 3]
        );
        let g16 = DynamicImage::ImageLuma16(image::ImageBuffer::from_pixel(
            2,
            2,
            image::Luma([65535u16]),
        ));
        assert_eq!(
            decode_image(&encode_png(&g16), p, true)
                .unwrap()
                .get_pixel(0, 0)
                .0,
            [255, 255, 255]
        );
        let rgb16 = DynamicImage::ImageRgb16(image::ImageBuffer::from_pixel(
            2,
            2,
            image::Rgb([0u16, 32896, 65535]),
        ));
        assert_eq!(
            decode_image(&encode_png(&rgb16), p, true)
                .unwrap()
                .get_pixel(0, 0)
                .0,
            [0, 128, 255]
        );
    }

    /// A minimal palette PNG (2x1, palette [red, blue]) built by hand.
    #[test]
    fn palette_png_converts_to_rgb8() {
        fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let start = out.len();
            out.extend_from_slice(kind);
            out.extend_from_slice(data);
            let crc = crc32(&out[start..]);
            out.extend_from_slice(&crc.to_be_bytes());
        }
        fn crc32(bytes: &[u8]) -> u32 {
            let mut c = 0xffff_ffffu32;
            for &b in bytes {
                c ^= b as u32;
                for _ in 0..8 {
                    c = if c & 1 != 0 {
                        0xedb8_8320 ^ (c >> 1)
                    } else {
                        c >> 1
                    };
                }
            }
            !c
        }
        fn adler32(bytes: &[u8]) -> u32 {
            let (mut a, mut b) = (1u32, 0u32);
            for &x in bytes {
                a = (a + x as u32) % 65521;
                b = (b + a) % 65521;
            }
            (b << 16) | a
        }
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        // IHDR: 2x1, bit depth 8, colour type 3 (palette)
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&2u32.to_be_bytes());
        ihdr.extend_from_slice(&1u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 3, 0, 0, 0]);
        chunk(&mut png, b"IHDR", &ihdr);
        chunk(&mut png, b"PLTE", &[255, 0, 0, 0, 0, 255]);
        // raw scanline: filter 0, indices [1, 0]; zlib stored block
        let raw = [0u8, 1, 0];
        let mut z = vec![0x78, 0x01, 0x01, 3, 0, !3u8, 0xff];
        z.extend_from_slice(&raw);
        z.extend_from_slice(&adler32(&raw).to_be_bytes());
        chunk(&mut png, b"IDAT", &z);
        chunk(&mut png, b"IEND", &[]);
        let d = decode_image(&png, Path::new("pal.png"), true).unwrap();
        assert_eq!(d.get_pixel(0, 0).0, [0, 0, 255]);
        assert_eq!(d.get_pixel(1, 0).0, [255, 0, 0]);
    }

    /// Insert an EXIF APP1 segment with the given orientation right after the JPEG SOI.
    fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut tiff = Vec::new();
        tiff.extend_from_slice(b"II*\0");
        tiff.extend_from_slice(&8u32.to_le_bytes());
        tiff.extend_from_slice(&1u16.to_le_bytes()); // one IFD entry
        tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
        tiff.extend_from_slice(&3u16.to_le_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_le_bytes());
        tiff.extend_from_slice(&orientation.to_le_bytes());
        tiff.extend_from_slice(&[0, 0]);
        tiff.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xff, 0xe1]);
        out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn exif_orientation_is_applied() {
        // 16x8 image: left half black, right half white.
        let img = RgbImage::from_fn(16, 8, |x, _| {
            if x < 8 {
                image::Rgb([0, 0, 0])
            } else {
                image::Rgb([255, 255, 255])
            }
        });
        let mut jpeg = Vec::new();
        DynamicImage::ImageRgb8(img)
            .write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
            .unwrap();
        let p = Path::new("exif.jpg");
        // Orientation 6 = rotate 90 degrees clockwise to display.
        let rotated = with_exif_orientation(&jpeg, 6);
        let d = decode_image(&rotated, p, true).unwrap();
        assert_eq!(d.dimensions(), (8, 16));
        // after a clockwise rotation, the left (black) half is on top
        assert!(d.get_pixel(4, 2).0[0] < 40);
        assert!(d.get_pixel(4, 13).0[0] > 215);
        let d = decode_image(&rotated, p, false).unwrap();
        assert_eq!(d.dimensions(), (16, 8));
    }

    #[test]
    fn bad_inputs_are_image_errors_naming_the_path() {
        let p = Path::new("dir/bad.jpg");
        let check = |bytes: &[u8], needle: &str| {
            let e = decode_image(bytes, p, true).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, Error::Image { .. }), "{msg}");
            assert!(msg.contains("dir/bad.jpg"), "{msg}");
            assert!(msg.contains(needle), "{msg}");
        };
        check(b"", "empty");
        check(
            b"this is a text file, not an image",
            "not a recognized image format",
        );
        let img = RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 4, y as u8 * 4, 7]));
        let png = encode_png(&DynamicImage::ImageRgb8(img.clone()));
        check(&png[..png.len() / 2], "truncated");
        let mut jpeg = Vec::new();
        DynamicImage::ImageRgb8(img)
            .write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
            .unwrap();
        check(&jpeg[..jpeg.len() / 3], "truncated");
        check(&jpeg[..jpeg.len() * 2 / 3], "truncated");
        check(&jpeg[..jpeg.len() - 2], "truncated");
        let missing = load_image(Path::new("/nonexistent/x.jpg"), true).unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/x.jpg"));
    }

    /// Every photo in `../shared/photos` decodes (EXIF on), and a keep-ratio run gives the
    /// planned tensor size.
    #[test]
    fn shared_photos_decode_and_preprocess() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/photos");
        if !dir.is_dir() {
            eprintln!("skipping: {} is absent", dir.display());
            return;
        }
        let mut pre = Preprocessor::new(&keep_ratio_spec());
        let mut n = 0;
        for sub in std::fs::read_dir(&dir).unwrap() {
            for f in std::fs::read_dir(sub.unwrap().path()).unwrap() {
                let p = f.unwrap().path();
                let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
                if !["jpg", "png"].contains(&ext) {
                    continue;
                }
                let img = load_image(&p, true).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
                if n > 3 {
                    continue; // the debug-build normalize loop is slow; decode all, run 3
                }
                let m = pre.run(&img).unwrap();
                assert_eq!(pre.tensor().len(), 3 * (m.input_w * m.input_h) as usize);
                assert!(
                    m.resized_w == 1333 || m.resized_h == 800,
                    "{}: {m:?}",
                    p.display()
                );
                n += 1;
            }
        }
        assert!(n >= 15, "only {n} photos found");
    }
}
