//! Bit-exact `cv2.resize(img, (dw, dh), interpolation=cv2.INTER_LINEAR)` for 8-bit 3-channel
//! images, fused with mmdet's normalization into NCHW f32 planes.
//!
//! mmdet resizes with mmcv `imresize` (`mmcv/image/geometric.py`), i.e. OpenCV `INTER_LINEAR`.
//! OpenCV's 8-bit path (`modules/imgproc/src/resize.cpp`: `resizeGeneric_`,
//! `HResizeLinear`, `VResizeLinear` with `VResizeLinearVec_32s8u`) works in fixed point:
//!
//! * coefficients: `f = (float)((d + 0.5) * (1 / (dn / sn)) - 0.5)`, `s = floor(f)`,
//!   `f -= s`; weights `(cvRound((1 - f) * 2048), cvRound(f * 2048))` as i16 (round half to
//!   even). Columns are clamped (`s < 0` or `s >= sw - 1` gives `f = 0`); rows are not, their
//!   indices `s` and `s + 1` are clamped to the image instead.
//! * horizontal pass, per source row: `H[x] = S[sx] * a0 + S[sx + 1] * a1` (i32, exact);
//! * vertical pass, as the SIMD kernel computes it: `t = sat_i16(H >> 4)`,
//!   `m = (t * b) >> 16` per row (`v_mul_hi`), `out = sat_u8((m0 + m1 + 2) >> 2)`.
//!
//! Checked against `cv2.resize` of opencv-python 5.0 (the tools venv) by
//! `tests/cv2_resize.rs` on real images and random sizes: every byte equal, upscaling,
//! downscaling and the exact 2x case (where OpenCV switches to `INTER_AREA`, which gives the
//! same bytes) included.
//!
//! The normalization afterwards is mmdet v2 `imnormalize_` (`(x - mean) * (1 / std)` in f32,
//! see the parent module); it is computed arithmetically here (no FMA), which gives the same
//! bits as the lookup table of the other backend.

/// i16 weight scale of OpenCV's fixed-point bilinear resize (`INTER_RESIZE_COEF_SCALE`).
const COEF_SCALE: f32 = 2048.0;

/// Coefficients of one axis: source index (clamped for columns) and the two i16 weights.
fn axis_coefficients(dn: u32, sn: u32, clamp: bool) -> (Vec<i32>, Vec<[i16; 2]>) {
    // OpenCV: inv_scale = (double)dsize / ssize; scale = 1. / inv_scale
    let scale = 1.0 / (dn as f64 / sn as f64);
    let mut idx = Vec::with_capacity(dn as usize);
    let mut w = Vec::with_capacity(dn as usize);
    for d in 0..dn {
        let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
        let mut s = f.floor() as i32;
        let mut f = f - s as f32;
        if clamp {
            if s < 0 {
                s = 0;
                f = 0.0;
            }
            if s >= sn as i32 - 1 {
                s = sn as i32 - 1;
                f = 0.0;
            }
        }
        idx.push(s);
        w.push([
            ((1.0 - f) * COEF_SCALE).round_ties_even() as i16,
            (f * COEF_SCALE).round_ties_even() as i16,
        ]);
    }
    (idx, w)
}

/// Precomputed tables for one (source size, destination size) pair.
#[derive(Debug, Clone)]
pub struct LinearResize {
    sw: u32,
    sh: u32,
    dw: u32,
    dh: u32,
    /// Byte offset of source pixel `sx` in a row, per destination column.
    xofs: Vec<u32>,
    /// Byte offset of source pixel `min(sx + 1, sw - 1)`.
    xofs1: Vec<u32>,
    /// Per destination column `[a0, a1, a0, a1, a0, a1, 0, 0]`: the AVX2 `madd` operand.
    xw: Vec<[i16; 8]>,
    /// Unclamped source row `sy` per destination row.
    yofs: Vec<i32>,
    /// Row weights `[b0, b1]`.
    yw: Vec<[i16; 2]>,
    /// Horizontal pass output for two source rows, 4 i32 per destination pixel (RGBx).
    hbuf: [Vec<i32>; 2],
    /// Source row held by each `hbuf` (or -1).
    hrow: [i64; 2],
    /// One resized row, 4 bytes per pixel (RGBx).
    row8: Vec<u8>,
}

impl LinearResize {
    /// Tables for resizing `sw x sh` to `dw x dh` (all at least 1).
    pub fn new(sw: u32, sh: u32, dw: u32, dh: u32) -> Self {
        let (sx, a) = axis_coefficients(dw, sw, true);
        let (yofs, yw) = axis_coefficients(dh, sh, false);
        let xofs: Vec<u32> = sx.iter().map(|&s| s as u32 * 3).collect();
        let xofs1: Vec<u32> = sx.iter().map(|&s| (s as u32 + 1).min(sw - 1) * 3).collect();
        let xw = a
            .iter()
            .map(|&[a0, a1]| [a0, a1, a0, a1, a0, a1, 0, 0])
            .collect();
        let n = dw as usize * 4;
        LinearResize {
            sw,
            sh,
            dw,
            dh,
            xofs,
            xofs1,
            xw,
            yofs,
            yw,
            hbuf: [vec![0; n], vec![0; n]],
            hrow: [-1, -1],
            row8: vec![0; n],
        }
    }

    /// Whether these tables were built for this geometry.
    pub fn fits(&self, sw: u32, sh: u32, dw: u32, dh: u32) -> bool {
        (self.sw, self.sh, self.dw, self.dh) == (sw, sh, dw, dh)
    }

    /// Resize `src` (interleaved RGB8, `sw x sh`) and hand each destination row to `sink` as
    /// `(dy, rgbx)` with 4 bytes per pixel (the 4th byte is unspecified).
    ///
    /// Panics if `src.len() != sw * sh * 3` (callers pass an `RgbImage` of that size).
    pub fn run(&mut self, src: &[u8], mut sink: impl FnMut(usize, &[u8])) {
        let row_bytes = self.sw as usize * 3;
        assert_eq!(src.len(), row_bytes * self.sh as usize);
        self.hrow = [-1, -1];
        let last = self.sh as i64 - 1;
        for dy in 0..self.dh as usize {
            let sy = self.yofs[dy] as i64;
            let (y0, y1) = (sy.clamp(0, last), (sy + 1).clamp(0, last));
            // Keep rows already computed (OpenCV's ring buffer does the same; the values do
            // not depend on it): sy never decreases, so the previous second row may become
            // the first; at the clamped top and bottom both rows are the same one.
            if self.hrow[1] == y0 {
                self.hbuf.swap(0, 1);
                self.hrow.swap(0, 1);
            }
            if self.hrow[0] != y0 {
                self.horizontal(&src[y0 as usize * row_bytes..], 0);
                self.hrow[0] = y0;
            }
            let second = if y1 == y0 {
                0
            } else {
                if self.hrow[1] != y1 {
                    self.horizontal(&src[y1 as usize * row_bytes..], 1);
                    self.hrow[1] = y1;
                }
                1
            };
            let [b0, b1] = self.yw[dy];
            vertical(&self.hbuf[0], &self.hbuf[second], b0, b1, &mut self.row8);
            sink(dy, &self.row8);
        }
    }

    /// Horizontal pass of the row starting at `src[0]` (the slice runs to the image's end)
    /// into `hbuf[slot]`.
    fn horizontal(&mut self, src: &[u8], slot: usize) {
        let out = &mut self.hbuf[slot];
        // columns whose 8-byte load stays inside `src` (all but the last one or two of the
        // last row, in practice)
        let fits = |o: &u32| *o as usize + 8 <= src.len();
        let n_vec = if self.xofs.last().is_some_and(fits) {
            self.xofs.len()
        } else {
            self.xofs.partition_point(fits)
        };
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if crate::simd::avx2() {
            // SAFETY: AVX2 checked (`simd::avx2`); the 8-byte loads at xofs[i] for i < n_vec are
            // in bounds (rows below the last one are followed by more image bytes).
            done = unsafe { horizontal_avx2(src, &self.xofs[..n_vec], &self.xw, out) };
        }
        for i in done..self.dw as usize {
            let (o, o1) = (self.xofs[i] as usize, self.xofs1[i] as usize);
            let [a0, a1] = [self.xw[i][0] as i32, self.xw[i][1] as i32];
            for c in 0..3 {
                out[4 * i + c] = src[o + c] as i32 * a0 + src[o1 + c] as i32 * a1;
            }
        }
    }
}

/// One output value of OpenCV's SIMD vertical pass (`VResizeLinearVec_32s8u`).
#[inline(always)]
fn vertical_one(h0: i32, h1: i32, b0: i16, b1: i16) -> u8 {
    let t0 = (h0 >> 4).clamp(i16::MIN as i32, i16::MAX as i32);
    let t1 = (h1 >> 4).clamp(i16::MIN as i32, i16::MAX as i32);
    let m0 = ((t0 * b0 as i32) >> 16) as i16;
    let m1 = ((t1 * b1 as i32) >> 16) as i16;
    let s = m0.wrapping_add(m1).wrapping_add(2) >> 2;
    s.clamp(0, 255) as u8
}

/// Vertical pass over two RGBx i32 rows into one RGBx u8 row.
fn vertical(h0: &[i32], h1: &[i32], b0: i16, b1: i16, out: &mut [u8]) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2() {
        // SAFETY: AVX2 checked (`simd::avx2`); slices are equally long.
        done = unsafe { vertical_avx2(h0, h1, b0, b1, out) };
    }
    for i in done..out.len() {
        out[i] = vertical_one(h0[i], h1[i], b0, b1);
    }
}

/// AVX2 horizontal pass, two destination pixels per step; returns the pixels done (even).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn horizontal_avx2(src: &[u8], xofs: &[u32], xw: &[[i16; 8]], out: &mut [i32]) -> usize {
    use std::arch::x86_64::*;
    // [p0 p3 p1 p4 p2 p5 - -] for each of the two pixels (bytes 0..8 and 8..16)
    let shuf = _mm_setr_epi8(0, 3, 1, 4, 2, 5, -1, -1, 8, 11, 9, 12, 10, 13, -1, -1);
    let pairs = xofs.len() / 2;
    let sp = src.as_ptr();
    for k in 0..pairs {
        let (oa, ob) = (xofs[2 * k] as usize, xofs[2 * k + 1] as usize);
        debug_assert!(ob + 8 <= src.len() && oa + 8 <= src.len());
        // SAFETY: in bounds per the caller; unaligned 8-byte loads.
        unsafe {
            let lo = _mm_loadl_epi64(sp.add(oa) as *const __m128i);
            let hi = _mm_loadl_epi64(sp.add(ob) as *const __m128i);
            let v = _mm_shuffle_epi8(_mm_unpacklo_epi64(lo, hi), shuf);
            let w = _mm256_loadu_si256(xw.as_ptr().add(2 * k) as *const __m256i);
            let prod = _mm256_madd_epi16(_mm256_cvtepu8_epi16(v), w);
            _mm256_storeu_si256(out.as_mut_ptr().add(8 * k) as *mut __m256i, prod);
        }
    }
    pairs * 2
}

/// AVX2 vertical pass, 8 pixels (32 values) per step; returns the values done.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn vertical_avx2(h0: &[i32], h1: &[i32], b0: i16, b1: i16, out: &mut [u8]) -> usize {
    use std::arch::x86_64::*;
    let n = out.len().min(h0.len()).min(h1.len()) / 32 * 32;
    let vb0 = _mm256_set1_epi16(b0);
    let vb1 = _mm256_set1_epi16(b1);
    let two = _mm256_set1_epi16(2);
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let mut i = 0;
    while i < n {
        // SAFETY: i + 32 <= n <= every length.
        unsafe {
            let ld = |p: &[i32], o: usize| {
                _mm256_srai_epi32::<4>(_mm256_loadu_si256(p.as_ptr().add(i + o) as *const __m256i))
            };
            let p0a = _mm256_packs_epi32(ld(h0, 0), ld(h0, 8));
            let p0b = _mm256_packs_epi32(ld(h0, 16), ld(h0, 24));
            let p1a = _mm256_packs_epi32(ld(h1, 0), ld(h1, 8));
            let p1b = _mm256_packs_epi32(ld(h1, 16), ld(h1, 24));
            let ra = _mm256_srai_epi16::<2>(_mm256_add_epi16(
                _mm256_add_epi16(_mm256_mulhi_epi16(p0a, vb0), _mm256_mulhi_epi16(p1a, vb1)),
                two,
            ));
            let rb = _mm256_srai_epi16::<2>(_mm256_add_epi16(
                _mm256_add_epi16(_mm256_mulhi_epi16(p0b, vb0), _mm256_mulhi_epi16(p1b, vb1)),
                two,
            ));
            // packs/packus interleave 128-bit lanes: dwords come out as pixels 0 2 4 6 1 3 5 7
            let r = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ra, rb), order);
            _mm256_storeu_si256(out.as_mut_ptr().add(i) as *mut __m256i, r);
        }
        i += 32;
    }
    n
}

/// Normalize one RGBx u8 row into three f32 plane rows: tensor channel `c` reads source
/// channel `src_ch[c]`, value `(x - mean[c]) * inv_std[c]` in f32 (mmdet v2 `imnormalize_`).
pub fn normalize_row(
    rgbx: &[u8],
    src_ch: [usize; 3],
    mean: [f32; 3],
    inv_std: [f32; 3],
    mut d: [&mut [f32]; 3],
) {
    let w = d[0].len();
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2() {
        // SAFETY: AVX2 checked (`simd::avx2`); rgbx holds 4 * w bytes, each plane row w values.
        done = unsafe { normalize_row_avx2(rgbx, src_ch, mean, inv_std, &mut d) };
    }
    let [d0, d1, d2] = d;
    for x in done..w {
        let px = &rgbx[4 * x..4 * x + 3];
        d0[x] = (px[src_ch[0]] as f32 - mean[0]) * inv_std[0];
        d1[x] = (px[src_ch[1]] as f32 - mean[1]) * inv_std[1];
        d2[x] = (px[src_ch[2]] as f32 - mean[2]) * inv_std[2];
    }
}

/// AVX2 normalize, 8 pixels per step; returns the pixels done.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn normalize_row_avx2(
    rgbx: &[u8],
    src_ch: [usize; 3],
    mean: [f32; 3],
    inv_std: [f32; 3],
    d: &mut [&mut [f32]; 3],
) -> usize {
    use std::arch::x86_64::*;
    let w = d[0]
        .len()
        .min(d[1].len())
        .min(d[2].len())
        .min(rgbx.len() / 4);
    let n = w / 8 * 8;
    // per 128-bit lane (4 pixels): bytes [c0 x4 | c1 x4 | c2 x4 | -], then the two lanes'
    // dwords are interleaved so each channel's 8 bytes are contiguous
    let shuf = _mm256_setr_epi8(
        0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, -1, -1, -1, -1, 0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10,
        14, -1, -1, -1, -1,
    );
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let vm = [
        _mm256_set1_ps(mean[0]),
        _mm256_set1_ps(mean[1]),
        _mm256_set1_ps(mean[2]),
    ];
    let vs = [
        _mm256_set1_ps(inv_std[0]),
        _mm256_set1_ps(inv_std[1]),
        _mm256_set1_ps(inv_std[2]),
    ];
    let mut x = 0;
    while x < n {
        // SAFETY: x + 8 <= n <= w, so 32 bytes of rgbx and 8 floats per plane are in bounds.
        unsafe {
            let v = _mm256_loadu_si256(rgbx.as_ptr().add(4 * x) as *const __m256i);
            let g = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(v, shuf), order);
            // 64-bit group s of g holds source channel s of the 8 pixels
            let lo = _mm256_castsi256_si128(g);
            let hi = _mm256_extracti128_si256::<1>(g);
            let groups = [lo, _mm_unpackhi_epi64(lo, lo), hi];
            for c in 0..3 {
                let bytes = groups[src_ch[c]];
                let f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
                let r = _mm256_mul_ps(_mm256_sub_ps(f, vm[c]), vs[c]);
                _mm256_storeu_ps(d[c].as_mut_ptr().add(x), r);
            }
        }
        x += 8;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain scalar version of the whole resize (no row cache, no SIMD).
    fn reference(src: &[u8], sw: u32, sh: u32, dw: u32, dh: u32) -> Vec<u8> {
        let (sx, a) = axis_coefficients(dw, sw, true);
        let (sy, b) = axis_coefficients(dh, sh, false);
        let h = |y: i32, x: usize, c: usize| -> i32 {
            let y = y.clamp(0, sh as i32 - 1) as usize;
            let s0 = sx[x] as usize;
            let s1 = (s0 + 1).min(sw as usize - 1);
            let row = &src[y * sw as usize * 3..];
            row[s0 * 3 + c] as i32 * a[x][0] as i32 + row[s1 * 3 + c] as i32 * a[x][1] as i32
        };
        let mut out = Vec::new();
        for y in 0..dh as usize {
            for x in 0..dw as usize {
                for c in 0..3 {
                    let v = vertical_one(h(sy[y], x, c), h(sy[y] + 1, x, c), b[y][0], b[y][1]);
                    out.push(v);
                }
            }
        }
        out
    }

    fn lcg_bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 56) as u8
            })
            .collect()
    }

    #[test]
    fn fast_path_equals_scalar_reference() {
        let sizes = [
            (1, 1, 5, 3),
            (7, 5, 1, 1),
            (2, 2, 17, 9),
            (31, 17, 16, 8),
            (64, 48, 32, 24),
            (100, 75, 333, 211),
            (333, 211, 100, 75),
            (640, 480, 320, 320),
        ];
        for (k, &(sw, sh, dw, dh)) in sizes.iter().enumerate() {
            let src = lcg_bytes((sw * sh * 3) as usize, k as u64 + 1);
            let want = reference(&src, sw, sh, dw, dh);
            let mut r = LinearResize::new(sw, sh, dw, dh);
            let mut got = vec![0u8; want.len()];
            r.run(&src, |y, row| {
                for x in 0..dw as usize {
                    let o = (y * dw as usize + x) * 3;
                    got[o..o + 3].copy_from_slice(&row[4 * x..4 * x + 3]);
                }
            });
            assert_eq!(got, want, "{sw}x{sh} -> {dw}x{dh}");
        }
    }

    #[test]
    fn coefficients_match_opencv_worked_values() {
        // 8 -> 16 (2x up): dst 3 -> f = 3.5 * 0.5 - 0.5 = 1.25 -> s 1, weights 0.75 / 0.25
        let (s, w) = axis_coefficients(16, 8, true);
        assert_eq!((s[3], w[3]), (1, [1536, 512]));
        // dst 0 -> f = -0.25 -> clamped to s 0, f 0; last column clamped to s 7
        assert_eq!((s[0], w[0]), (0, [2048, 0]));
        assert_eq!((s[15], w[15]), (7, [2048, 0]));
        // rows are not clamped: the invoker clamps the row indices instead
        let (s, w) = axis_coefficients(16, 8, false);
        assert_eq!((s[0], w[0]), (-1, [512, 1536]));
        // identity keeps every pixel
        let src = lcg_bytes(5 * 4 * 3, 9);
        assert_eq!(reference(&src, 5, 4, 5, 4), src);
    }

    #[test]
    fn normalize_row_fast_equals_scalar_formula() {
        let w = 37;
        let rgbx = lcg_bytes(4 * w, 3);
        let (mean, inv_std) = ([103.53, 116.28, 123.675], [0.0174292, 0.017507, 0.0171248]);
        for src_ch in [[0, 1, 2], [2, 1, 0]] {
            let mut p = vec![vec![0f32; w]; 3];
            let [a, b, c] = &mut p[..] else {
                unreachable!()
            };
            normalize_row(&rgbx, src_ch, mean, inv_std, [a, b, c]);
            for x in 0..w {
                for ch in 0..3 {
                    let want = (rgbx[4 * x + src_ch[ch]] as f32 - mean[ch]) * inv_std[ch];
                    assert_eq!(p[ch][x].to_bits(), want.to_bits(), "x {x} c {ch}");
                }
            }
        }
    }
}
