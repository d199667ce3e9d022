//! JPEG decoding with libjpeg-turbo, loaded at run time, so that decoded pixels equal
//! OpenCV's `cv2.imdecode(buf, cv2.IMREAD_COLOR)` (which mmcv `imfrombytes` calls; OpenCV
//! bundles libjpeg-turbo) byte for byte: accurate integer IDCT (`JDCT_ISLOW`) and fancy
//! (triangle-filter) chroma upsampling, the libjpeg defaults that OpenCV keeps
//! (`opencv/modules/imgcodecs/src/grfmt_jpeg.cpp`, `JpegDecoder::readData`).
//!
//! The pure-Rust decoder of the `image` crate (zune-jpeg) uses a different IDCT and
//! upsampling and differs from OpenCV by a few levels on 0.6-1.2% of the bytes of COCO photos;
//! libjpeg-turbo's SIMD decoder is also faster.
//!
//! # Which library
//! The libjpeg API (ABI version 62, the one libjpeg-turbo builds by default: Debian's
//! `libjpeg62-turbo`, Fedora's `libjpeg-turbo`, the copy inside Pillow's wheels) is opened with
//! `dlopen`, so the crate builds without C headers and runs without the library:
//! 1. `ANCHORKIT_LIBJPEG=PATH` opens that file; `ANCHORKIT_LIBJPEG=off` disables libjpeg;
//! 2. otherwise the soname `libjpeg.so.62` (the system library);
//! 3. otherwise the copy inside an installed Pillow (`pillow.libs/libjpeg-*.so.62*`): in
//!    `tools/.venv` of the repository the binary was built from or of the current directory,
//!    then in the `python3` on `PATH` (as the ONNX Runtime library is found, `runtime::locate`).
//!
//! Where none loads (or the library has another ABI version, e.g. Ubuntu's `libjpeg.so.8`,
//! whose `jpeg_CreateDecompress` rejects our struct size), JPEGs are decoded by the `image`
//! crate and a warning says so once. [`decoder_description`] names the decoder in use.
//!
//! # Errors without `setjmp`
//! libjpeg reports fatal errors through `err->error_exit`, which must not return. Ours formats
//! the message and unwinds (`extern "C-unwind"`) through the library's frames back to
//! [`decode`], which catches it, destroys the decompressor (freeing its memory pools) and
//! returns the message. Corrupt-data warnings (`emit_message(-1)`) are counted and the first
//! one is kept; like OpenCV, decoding goes on (a truncated file is rejected before decoding by
//! the caller, which also reads the EXIF orientation with the image crate).

use std::ffi::{CStr, c_char, c_int, c_long, c_uint, c_ulong, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::OnceLock;

use image::RgbImage;

/// `JPEG_LIB_VERSION` of the ABI these structs follow.
const JPEG_LIB_VERSION: c_int = 62;
/// `J_COLOR_SPACE` values (jpeglib.h).
const JCS_GRAYSCALE: c_int = 1;
const JCS_RGB: c_int = 2;
const JCS_YCBCR: c_int = 3;
/// `J_DCT_METHOD::JDCT_ISLOW`.
const JDCT_ISLOW: c_int = 0;
/// `JMSG_LENGTH_MAX`.
const JMSG_LENGTH_MAX: usize = 200;

type Boolean = c_int;
type CommonFn = unsafe extern "C-unwind" fn(*mut Decompress);

/// `struct jpeg_error_mgr` (jpeglib.h, 168 bytes on LP64).
#[repr(C)]
struct ErrorMgr {
    error_exit: Option<CommonFn>,
    emit_message: Option<unsafe extern "C-unwind" fn(*mut Decompress, c_int)>,
    output_message: Option<CommonFn>,
    format_message: Option<unsafe extern "C-unwind" fn(*mut Decompress, *mut c_char)>,
    reset_error_mgr: Option<CommonFn>,
    msg_code: c_int,
    /// `union { int i[8]; char s[JMSG_STR_PARM_MAX = 80]; }`
    msg_parm: [c_int; 20],
    trace_level: c_int,
    num_warnings: c_long,
    jpeg_message_table: *const *const c_char,
    last_jpeg_message: c_int,
    addon_message_table: *const *const c_char,
    first_addon_message: c_int,
    last_addon_message: c_int,
}

/// `struct jpeg_decompress_struct` for `JPEG_LIB_VERSION == 62` (jpeglib.h, 632 bytes on LP64).
/// Only the public parameters are read or written; the rest is the library's.
#[repr(C)]
struct Decompress {
    err: *mut ErrorMgr,
    mem: *mut c_void,
    progress: *mut c_void,
    client_data: *mut c_void,
    is_decompressor: Boolean,
    global_state: c_int,
    src: *mut c_void,
    image_width: c_uint,
    image_height: c_uint,
    num_components: c_int,
    jpeg_color_space: c_int,
    out_color_space: c_int,
    scale_num: c_uint,
    scale_denom: c_uint,
    output_gamma: f64,
    buffered_image: Boolean,
    raw_data_out: Boolean,
    dct_method: c_int,
    do_fancy_upsampling: Boolean,
    do_block_smoothing: Boolean,
    quantize_colors: Boolean,
    dither_mode: c_int,
    two_pass_quantize: Boolean,
    desired_number_of_colors: c_int,
    enable_1pass_quant: Boolean,
    enable_external_quant: Boolean,
    enable_2pass_quant: Boolean,
    output_width: c_uint,
    output_height: c_uint,
    out_color_components: c_int,
    output_components: c_int,
    rec_outbuf_height: c_int,
    actual_number_of_colors: c_int,
    colormap: *mut c_void,
    output_scanline: c_uint,
    input_scan_number: c_int,
    input_imcu_row: c_uint,
    output_scan_number: c_int,
    output_imcu_row: c_uint,
    coef_bits: *mut c_void,
    quant_tbl_ptrs: [*mut c_void; 4],
    dc_huff_tbl_ptrs: [*mut c_void; 4],
    ac_huff_tbl_ptrs: [*mut c_void; 4],
    data_precision: c_int,
    comp_info: *mut c_void,
    progressive_mode: Boolean,
    arith_code: Boolean,
    arith_dc_l: [u8; 16],
    arith_dc_u: [u8; 16],
    arith_ac_k: [u8; 16],
    restart_interval: c_uint,
    saw_jfif_marker: Boolean,
    jfif_major_version: u8,
    jfif_minor_version: u8,
    density_unit: u8,
    x_density: u16,
    y_density: u16,
    saw_adobe_marker: Boolean,
    adobe_transform: u8,
    ccir601_sampling: Boolean,
    marker_list: *mut c_void,
    max_h_samp_factor: c_int,
    max_v_samp_factor: c_int,
    min_dct_scaled_size: c_int,
    total_imcu_rows: c_uint,
    sample_range_limit: *mut u8,
    comps_in_scan: c_int,
    cur_comp_info: [*mut c_void; 4],
    mcus_per_row: c_uint,
    mcu_rows_in_scan: c_uint,
    blocks_in_mcu: c_int,
    mcu_membership: [c_int; 10],
    ss: c_int,
    se: c_int,
    ah: c_int,
    al: c_int,
    unread_marker: c_int,
    modules: [*mut c_void; 11],
}

/// The library's entry points (jpeglib.h), resolved once.
struct LibJpeg {
    _lib: libloading::Library,
    name: String,
    std_error: unsafe extern "C-unwind" fn(*mut ErrorMgr) -> *mut ErrorMgr,
    create: unsafe extern "C-unwind" fn(*mut Decompress, c_int, usize),
    destroy: CommonFn,
    mem_src: unsafe extern "C-unwind" fn(*mut Decompress, *const u8, c_ulong),
    read_header: unsafe extern "C-unwind" fn(*mut Decompress, Boolean) -> c_int,
    start: unsafe extern "C-unwind" fn(*mut Decompress) -> Boolean,
    read_scanlines: unsafe extern "C-unwind" fn(*mut Decompress, *mut *mut u8, c_uint) -> c_uint,
    finish: unsafe extern "C-unwind" fn(*mut Decompress) -> Boolean,
}

/// The payload our `error_exit` unwinds with.
struct JpegError(String);

/// Per-decode state reached through `client_data`.
#[derive(Default)]
struct Warnings {
    first: Option<String>,
}

fn message(cinfo: *mut Decompress) -> String {
    let mut buf = [0 as c_char; JMSG_LENGTH_MAX];
    // SAFETY: `err` was set by `decode` and `format_message` by `jpeg_std_error`; the buffer
    // has the JMSG_LENGTH_MAX bytes the library writes at most.
    unsafe {
        if let Some(f) = (*(*cinfo).err).format_message {
            f(cinfo, buf.as_mut_ptr());
            return CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned();
        }
    }
    "unknown libjpeg error".into()
}

unsafe extern "C-unwind" fn error_exit(cinfo: *mut Decompress) {
    resume_unwind(Box::new(JpegError(message(cinfo))));
}

unsafe extern "C-unwind" fn emit_message(cinfo: *mut Decompress, level: c_int) {
    if level >= 0 {
        return; // trace messages
    }
    // SAFETY: `err` and `client_data` (a `Warnings` living across the decode) were set by
    // `decode`; a validation probe leaves `client_data` null.
    unsafe {
        (*(*cinfo).err).num_warnings += 1;
        let w = (*cinfo).client_data as *mut Warnings;
        if !w.is_null() && (*w).first.is_none() {
            (*w).first = Some(message(cinfo));
        }
    }
}

unsafe extern "C-unwind" fn output_message(_cinfo: *mut Decompress) {}

impl LibJpeg {
    /// Open `name` and check that its ABI matches ours (`jpeg_CreateDecompress` validates the
    /// version and struct size).
    fn open(name: &str) -> std::result::Result<Self, String> {
        // SAFETY: loading a shared library runs its initializers; libjpeg has none of note.
        let lib = unsafe { libloading::Library::new(name) }.map_err(|e| e.to_string())?;
        macro_rules! sym {
            ($s:literal) => {
                // SAFETY: the signature is the one jpeglib.h declares for this symbol.
                *unsafe { lib.get(concat!($s, "\0").as_bytes()) }
                    .map_err(|e| format!("{name}: {e}"))?
            };
        }
        let this = LibJpeg {
            std_error: sym!("jpeg_std_error"),
            create: sym!("jpeg_CreateDecompress"),
            destroy: sym!("jpeg_destroy_decompress"),
            mem_src: sym!("jpeg_mem_src"),
            read_header: sym!("jpeg_read_header"),
            start: sym!("jpeg_start_decompress"),
            read_scanlines: sym!("jpeg_read_scanlines"),
            finish: sym!("jpeg_finish_decompress"),
            name: name.to_string(),
            _lib: lib,
        };
        this.with_decompressor(std::ptr::null_mut(), |_| Ok(()))
            .map_err(|e| format!("{name}: {e}"))?;
        Ok(this)
    }

    /// Create a decompressor with our error manager, run `body`, destroy it; a libjpeg fatal
    /// error inside `body` (or inside creation) becomes `Err(message)`.
    fn with_decompressor<T>(
        &self,
        warnings: *mut Warnings,
        body: impl FnOnce(*mut Decompress) -> std::result::Result<T, String>,
    ) -> std::result::Result<T, String> {
        // SAFETY: both structs are plain C data for which all-zero is a valid (empty) state;
        // `jpeg_std_error` fills the error manager before anything reads it.
        let mut err: Box<ErrorMgr> = Box::new(unsafe { std::mem::zeroed() });
        let mut cinfo: Box<Decompress> = Box::new(unsafe { std::mem::zeroed() });
        let cp: *mut Decompress = &mut *cinfo;
        unsafe {
            (self.std_error)(&mut *err);
        }
        err.error_exit = Some(error_exit);
        err.emit_message = Some(emit_message);
        err.output_message = Some(output_message);
        cinfo.err = &mut *err;
        cinfo.client_data = warnings as *mut c_void;
        let result = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: `cp` points to a zeroed struct of the size we pass; the library checks
            // version and size and fails through `error_exit` otherwise.
            unsafe { (self.create)(cp, JPEG_LIB_VERSION, std::mem::size_of::<Decompress>()) };
            body(cp)
        }));
        // `jpeg_CreateDecompress` re-zeroes the struct but keeps `err` and `client_data`.
        // SAFETY: destroying is valid after a successful or failed creation (a null `mem`
        // is skipped) and after an error at any later stage.
        let destroyed = catch_unwind(AssertUnwindSafe(|| unsafe { (self.destroy)(cp) }));
        drop(cinfo);
        drop(err);
        let out = match result {
            Ok(v) => v,
            Err(payload) => match payload.downcast::<JpegError>() {
                Ok(e) => Err(e.0),
                Err(other) => resume_unwind(other),
            },
        };
        if let Err(payload) = destroyed
            && let Ok(e) = payload.downcast::<JpegError>()
        {
            return Err(e.0);
        }
        out
    }
}

static LIB: OnceLock<Option<LibJpeg>> = OnceLock::new();

fn lib() -> Option<&'static LibJpeg> {
    LIB.get_or_init(|| {
        let explicit = match std::env::var("ANCHORKIT_LIBJPEG") {
            Ok(v) if v.eq_ignore_ascii_case("off") || v.eq_ignore_ascii_case("none") => {
                return None;
            }
            Ok(v) if !v.is_empty() => Some(v),
            _ => None,
        };
        let first = explicit.clone().unwrap_or_else(|| "libjpeg.so.62".into());
        let opened = LibJpeg::open(&first).or_else(|e| {
            if explicit.is_some() {
                return Err(e);
            }
            pillow_libjpeg()
                .ok_or(e)
                .and_then(|p| LibJpeg::open(&p.to_string_lossy()))
        });
        match opened {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(
                    "libjpeg-turbo unavailable ({e}); decoding JPEG with the image crate, \
                     which differs from OpenCV by a few levels on ~1% of the pixels \
                     (install libjpeg62-turbo or set ANCHORKIT_LIBJPEG to a libjpeg.so.62)"
                );
                None
            }
        }
    })
    .as_ref()
}

/// The libjpeg (ABI 62) bundled with Pillow, searched as the module docs say.
fn pillow_libjpeg() -> Option<std::path::PathBuf> {
    let mut venvs = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/.venv")];
    if let Ok(cwd) = std::env::current_dir() {
        venvs.push(cwd.join("tools/.venv"));
    }
    for venv in venvs {
        let Ok(rd) = std::fs::read_dir(venv.join("lib")) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("python")
                && let Some(p) = libjpeg_in(&e.path().join("site-packages/pillow.libs"))
            {
                return Some(p);
            }
        }
    }
    // where the `PIL` package of the `python3` on PATH lives, without importing it
    let pil = crate::runtime::locate::python_package_dir("python3", "PIL")?;
    let dir = pil.parent()?.join("pillow.libs");
    libjpeg_in(&dir)
}

/// `libjpeg-*.so.62*` in `dir` (the first by name), if any.
fn libjpeg_in(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let mut found: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy())
                .is_some_and(|n| n.starts_with("libjpeg") && n.contains(".so.62"))
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

/// True when libjpeg-turbo is loaded and [`decode`] will be used for JPEG files.
pub fn available() -> bool {
    lib().is_some()
}

/// The JPEG decoder in use, for `inspect` and benchmark reports.
pub fn decoder_description() -> String {
    match lib() {
        Some(l) => format!("libjpeg-turbo ({}, OpenCV-exact)", l.name),
        None => "image crate / zune-jpeg (libjpeg not loaded; not OpenCV-exact)".into(),
    }
}

/// Outcome of [`decode`].
pub enum Decoded {
    /// The image as RGB8, with the first corrupt-data warning if there was one.
    Rgb(RgbImage, Option<String>),
    /// libjpeg is not loaded or the colour space needs another converter (CMYK, YCCK).
    Unsupported,
}

/// Decode a JPEG stream to RGB8 with libjpeg-turbo (no EXIF orientation applied).
///
/// Output: `width * height * 3` bytes, rows top to bottom, equal to `cv2.imdecode`
/// (`IMREAD_COLOR`, channels reversed) for grayscale, YCbCr and RGB JPEGs.
///
/// The frame size in the header is checked against `max_pixels` before the output buffer is
/// allocated (a SOF claiming 65000 x 65000 is an error, not a 12.7 GB allocation).
///
/// Errors: the libjpeg message (e.g. "Not a JPEG file: starts with 0x89 0x50", "Unsupported
/// JPEG data precision 12") for data libjpeg cannot decode; the size and the limit for an
/// image of more than `max_pixels` pixels.
pub fn decode(bytes: &[u8], max_pixels: u64) -> std::result::Result<Decoded, String> {
    let Some(lib) = lib() else {
        return Ok(Decoded::Unsupported);
    };
    let mut warnings = Warnings::default();
    let img = lib.with_decompressor(&mut warnings, |cp| {
        // SAFETY: `cp` is a created decompressor; `bytes` outlives it; every field we touch
        // is part of the public v62 layout.
        unsafe {
            (lib.mem_src)(cp, bytes.as_ptr(), bytes.len() as c_ulong);
            (lib.read_header)(cp, 1);
            super::check_pixels((*cp).image_width, (*cp).image_height, max_pixels)?;
            if !matches!((*cp).jpeg_color_space, JCS_GRAYSCALE | JCS_RGB | JCS_YCBCR) {
                return Ok(None);
            }
            (*cp).out_color_space = JCS_RGB;
            (*cp).dct_method = JDCT_ISLOW;
            (*cp).do_fancy_upsampling = 1;
            (lib.start)(cp);
            let (w, h) = ((*cp).output_width, (*cp).output_height);
            let components = (*cp).output_components;
            if components != 3 || w == 0 || h == 0 {
                return Err(format!(
                    "unexpected output {w}x{h} with {components} components"
                ));
            }
            let stride = w as usize * 3;
            let len = stride * h as usize;
            // not zero-filled: libjpeg writes every byte below before `set_len`
            let mut buf: Vec<u8> = Vec::with_capacity(len);
            let base = buf.as_mut_ptr();
            let group = ((*cp).rec_outbuf_height.max(1) as usize).min(16);
            let mut rows = [std::ptr::null_mut::<u8>(); 16];
            let mut y = 0usize;
            while y < h as usize {
                let n = group.min(h as usize - y);
                for (i, r) in rows[..n].iter_mut().enumerate() {
                    *r = base.add((y + i) * stride);
                }
                let got = (lib.read_scanlines)(cp, rows.as_mut_ptr(), n as c_uint) as usize;
                if got == 0 {
                    return Err("libjpeg returned no scanlines (suspended input)".into());
                }
                y += got;
            }
            // SAFETY: rows 0..h, `stride` bytes each, were written by `jpeg_read_scanlines`
            buf.set_len(len);
            (lib.finish)(cp);
            Ok(Some(
                RgbImage::from_raw(w, h, buf).expect("buffer of w * h * 3 bytes"),
            ))
        }
    })?;
    Ok(match img {
        Some(img) => Decoded::Rgb(img, warnings.first),
        None => Decoded::Unsupported,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_layout_matches_jpeglib_v62_lp64() {
        // offsets and sizes printed by gcc for libjpeg-turbo 2.1.5's jpeglib.h (v62), x86_64
        if cfg!(target_pointer_width = "64") {
            assert_eq!(std::mem::size_of::<Decompress>(), 632);
            assert_eq!(std::mem::size_of::<ErrorMgr>(), 168);
            assert_eq!(std::mem::offset_of!(Decompress, image_width), 48);
            assert_eq!(std::mem::offset_of!(Decompress, out_color_space), 64);
            assert_eq!(std::mem::offset_of!(Decompress, output_gamma), 80);
            assert_eq!(std::mem::offset_of!(Decompress, dct_method), 96);
            assert_eq!(std::mem::offset_of!(Decompress, output_width), 136);
            assert_eq!(std::mem::offset_of!(Decompress, output_components), 148);
            assert_eq!(std::mem::offset_of!(Decompress, rec_outbuf_height), 152);
            assert_eq!(std::mem::offset_of!(Decompress, output_scanline), 168);
            assert_eq!(std::mem::offset_of!(Decompress, data_precision), 296);
            assert_eq!(std::mem::offset_of!(Decompress, marker_list), 400);
            assert_eq!(std::mem::offset_of!(Decompress, unread_marker), 540);
            assert_eq!(std::mem::offset_of!(ErrorMgr, trace_level), 124);
            assert_eq!(std::mem::offset_of!(ErrorMgr, num_warnings), 128);
            assert_eq!(std::mem::offset_of!(ErrorMgr, last_addon_message), 164);
        }
    }

    #[test]
    fn pillow_bundled_libjpeg_is_found_and_has_our_abi() {
        // the tools venv (installed by scripts/test-all.sh) carries Pillow's libjpeg-turbo
        let site = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/.venv/lib");
        if !site.is_dir() {
            eprintln!("SKIP: no tools/.venv");
            assert!(std::env::var("CI").is_err(), "CI must have tools/.venv");
            return;
        }
        let p = pillow_libjpeg().expect("Pillow's libjpeg in tools/.venv");
        let lib = LibJpeg::open(&p.to_string_lossy()).expect("ABI 62");
        assert!(lib.name.contains("pillow.libs"), "{}", lib.name);
        assert_eq!(libjpeg_in(std::path::Path::new("/nonexistent")), None);
    }

    #[test]
    fn libjpeg_errors_are_messages_not_panics() {
        if std::env::var("ANCHORKIT_LIBJPEG").is_ok_and(|v| v == "off") {
            return; // the user asked for the image crate's decoder
        }
        assert!(
            available(),
            "libjpeg.so.62 did not load: install libjpeg62-turbo (scripts/test-all.sh does)"
        );
        let e = decode(b"\x89PNG\r\n\x1a\nxxxxxxxx", u64::MAX)
            .err()
            .unwrap();
        assert!(e.contains("Not a JPEG file"), "{e}");
        let e = decode(&[0xff, 0xd8, 0xff, 0xc0, 0, 3], u64::MAX)
            .err()
            .unwrap();
        assert!(!e.is_empty());
        // decoding still works after errors (the unwinding left no state behind)
        let mut enc = Vec::new();
        let src = RgbImage::from_fn(40, 24, |x, y| image::Rgb([x as u8 * 6, y as u8 * 10, 99]));
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut enc, 95)
            .encode_image(&src)
            .unwrap();
        let Decoded::Rgb(img, warn) = decode(&enc, u64::MAX).unwrap() else {
            panic!("unsupported")
        };
        assert_eq!((img.width(), img.height(), warn), (40, 24, None));
        let max_diff = img
            .as_raw()
            .iter()
            .zip(src.as_raw())
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(max_diff <= 12, "{max_diff}");
        // a frame header claiming 65000 x 65000 is refused before the output buffer exists
        let mut bomb = enc.clone();
        let sof = bomb.windows(2).position(|x| x == [0xff, 0xc0]).unwrap();
        bomb[sof + 5..sof + 9].copy_from_slice(&[0xfd, 0xe8, 0xfd, 0xe8]);
        let e = decode(&bomb, 100_000_000).err().unwrap();
        assert!(e.contains("65000x65000") && e.contains("limit"), "{e}");
        assert!(matches!(decode(&enc, 960), Ok(Decoded::Rgb(..))));
        assert!(decode(&enc, 959).is_err());
    }
}
