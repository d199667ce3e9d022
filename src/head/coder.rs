//! Box coders (decode only; all arithmetic f32, one rounding per elementwise op, no FMA).
//!
//! Sources: mmdet v2 `mmdet/core/bbox/coder/delta_xywh_bbox_coder.py` (`delta2bbox`),
//! `mmdet/core/bbox/transforms.py` (`distance2bbox`), `mmdet/models/dense_heads/gfl_head.py`
//! (`Integral`), NanoDet `nanodet/model/head/gfl_head.py` (`distribution_project`); v3
//! `mmdet/models/task_modules/coders/delta_xywh_bbox_coder.py` has the same numerics.

/// Constants of mmdet `DeltaXYWHBBoxCoder` in the f32 form torch uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeltaParams {
    pub means: [f32; 4],
    pub stds: [f32; 4],
    /// `|ln(wh_ratio_clip)|` computed in f64 and cast to f32 (4.1351666 for 16/1000).
    pub max_ratio: f32,
}

impl DeltaParams {
    /// From the spec values (f64 means/stds as `deltas.new_tensor(...)` casts them).
    pub fn new(means: [f64; 4], stds: [f64; 4], wh_ratio_clip: f64) -> Self {
        DeltaParams {
            means: means.map(|v| v as f32),
            stds: stds.map(|v| v as f32),
            max_ratio: wh_ratio_clip.ln().abs() as f32,
        }
    }
}

/// mmdet `delta2bbox` for one anchor (`add_ctr_clamp=False`).
///
/// `anchor` and the result are `[x1, y1, x2, y2]` in input pixels; `deltas` are the raw network
/// outputs `(dx, dy, dw, dh)`. Steps: `d*std + mean`; `px = (x1+x2)*0.5`, `pw = x2-x1` (no +1);
/// `dw, dh` clamped to `±max_ratio`; `gx = px + pw*dx`; `gw = pw*exp(dw)`;
/// corners `gx ∓ gw*0.5`; with `clip = Some([x0, y0, x1, y1])` x is clamped to `[x0, x1]`, y
/// to `[y0, y1]` (mmdet: `[0, 0, W, H]` with W/H the resized, unpadded image `img_shape`).
#[inline]
pub fn delta2bbox(
    anchor: [f32; 4],
    deltas: [f32; 4],
    p: &DeltaParams,
    clip: Option<[f32; 4]>,
) -> [f32; 4] {
    let dx = deltas[0] * p.stds[0] + p.means[0];
    let dy = deltas[1] * p.stds[1] + p.means[1];
    let dw = deltas[2] * p.stds[2] + p.means[2];
    let dh = deltas[3] * p.stds[3] + p.means[3];
    let px = (anchor[0] + anchor[2]) * 0.5;
    let py = (anchor[1] + anchor[3]) * 0.5;
    let pw = anchor[2] - anchor[0];
    let ph = anchor[3] - anchor[1];
    let dxw = pw * dx;
    let dyh = ph * dy;
    // torch clamp: NaN propagates; f32::clamp keeps NaN as well.
    let dw = dw.clamp(-p.max_ratio, p.max_ratio);
    let dh = dh.clamp(-p.max_ratio, p.max_ratio);
    let gx = px + dxw;
    let gy = py + dyh;
    let gw = pw * dw.exp();
    let gh = ph * dh.exp();
    let mut b = [gx - gw * 0.5, gy - gh * 0.5, gx + gw * 0.5, gy + gh * 0.5];
    if let Some(c) = clip {
        clip_box(&mut b, c);
    }
    b
}

/// Clamp x to `[c[0], c[2]]` and y to `[c[1], c[3]]` (torch `clamp_(min, max)`, elementwise).
#[inline]
pub fn clip_box(b: &mut [f32; 4], c: [f32; 4]) {
    b[0] = b[0].max(c[0]).min(c[2]);
    b[1] = b[1].max(c[1]).min(c[3]);
    b[2] = b[2].max(c[0]).min(c[2]);
    b[3] = b[3].max(c[1]).min(c[3]);
}

/// mmdet `distance2bbox`: box `(px - l, py - t, px + r, py + b)` from a point and distances
/// `[l, t, r, b]` (already in input pixels), then clamped like [`delta2bbox`].
#[inline]
pub fn distance2bbox(point: (f32, f32), d: [f32; 4], clip: Option<[f32; 4]>) -> [f32; 4] {
    let mut b = [
        point.0 - d[0],
        point.1 - d[1],
        point.0 + d[2],
        point.1 + d[3],
    ];
    if let Some(c) = clip {
        clip_box(&mut b, c);
    }
    b
}

/// GFL integral of one side: softmax over the `n = reg_max + 1` bin logits (max-subtracted),
/// then the expected bin index `sum_i p_i * i` (mmdet `Integral`, NanoDet
/// `distribution_project`). Output in bins (multiply by the stride for pixels).
///
/// With AVX2 + FMA (detected at run time) and at most 8 bins (NanoDet's reg_max 7), the 8 bins
/// are one vector and the exponentials come from [`exp8_avx2`] (Cephes polynomial, within
/// 2 ulp of `f32::exp` on `[-87, 0]`); the integral then differs from the scalar one by a few
/// ulp (tested), well inside the 1e-3 px box tolerance. torch's CPU softmax uses its own
/// vectorized exp, so neither path is bit-identical to it.
#[inline]
pub fn integral(bins: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if bins.len() <= 8 && !bins.is_empty() && crate::simd::avx2_fma() {
        // SAFETY: AVX2 and FMA are present (`simd::avx2_fma` checked them).
        return unsafe { integral_avx2(bins) };
    }
    integral_scalar(bins)
}

/// Portable [`integral`]: libm `exp`, sequential sums.
#[inline]
pub fn integral_scalar(bins: &[f32]) -> f32 {
    let m = bins.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    let mut acc = 0.0f32;
    for (i, &v) in bins.iter().enumerate() {
        let e = (v - m).exp();
        sum += e;
        acc += e * i as f32;
    }
    acc / sum
}

/// [`integral`] of 1..=8 bins in one AVX2 vector (padding lanes are -inf).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn integral_avx2(bins: &[f32]) -> f32 {
    let mut buf = [f32::NEG_INFINITY; 8];
    buf[..bins.len()].copy_from_slice(bins);
    // SAFETY: `buf` holds 8 f32.
    integral_v8(unsafe { std::arch::x86_64::_mm256_loadu_ps(buf.as_ptr()) })
}

/// The four side integrals of one prior with 8 bins per side (`dist[..32]`, side-major), each
/// exactly [`integral_avx2`]'s arithmetic, in one call.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn integral4x8_avx2(dist: &[f32]) -> [f32; 4] {
    assert!(dist.len() >= 32);
    // SAFETY: `dist` holds at least 32 values (asserted), so side `s` < 4 is in bounds.
    std::array::from_fn(|s| {
        integral_v8(unsafe { std::arch::x86_64::_mm256_loadu_ps(dist.as_ptr().add(8 * s)) })
    })
}

/// Softmax-weighted mean bin index of 8 bin logits in one vector; -inf lanes get weight 0
/// (as `exp(-inf) = 0` in the scalar path).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn integral_v8(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let m = _mm256_max_ps(v, _mm256_permute2f128_ps::<1>(v, v));
    let m = _mm256_max_ps(m, _mm256_permute_ps::<0b0100_1110>(m));
    let m = _mm256_max_ps(m, _mm256_permute_ps::<0b1011_0001>(m));
    let valid = _mm256_cmp_ps::<_CMP_GT_OQ>(v, _mm256_set1_ps(f32::NEG_INFINITY));
    let e = _mm256_and_ps(exp8_avx2(_mm256_sub_ps(v, m)), valid);
    let idx = _mm256_setr_ps(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0);
    let hsum = |x: __m256| {
        let t = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
        let t = _mm_add_ps(t, _mm_movehl_ps(t, t));
        _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps::<0b01>(t, t)))
    };
    hsum(_mm256_mul_ps(e, idx)) / hsum(e)
}

/// `exp` of 8 lanes (Cephes `expf`: `2^n * p(r)` with a Cody-Waite split of `ln 2` and a
/// degree-5 polynomial; the argument is clamped to `[-87.3, 88.7]`, so very negative inputs
/// give ~1e-38 instead of 0). Within 2 ulp of `f32::exp` (tested in [`tests`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp8_avx2(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let x = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(-87.336_54)),
        _mm256_set1_ps(88.722_83),
    );
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let p = _mm256_fmadd_ps(
        p,
        _mm256_mul_ps(r, r),
        _mm256_add_ps(r, _mm256_set1_ps(1.0)),
    );
    let pow2n = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    _mm256_mul_ps(p, _mm256_castsi256_ps(pow2n))
}

/// GFL distribution decode: 4 sides (l, t, r, b) of `reg_max + 1` bins each, laid out
/// side-major (`dist[s*(reg_max+1) + k]`), each integrated with [`integral`] and multiplied by
/// `scale` (the stride, or 1), then [`distance2bbox`].
#[inline]
pub fn distribution2bbox(
    point: (f32, f32),
    dist: &[f32],
    reg_max: usize,
    scale: f32,
    clip: Option<[f32; 4]>,
) -> [f32; 4] {
    let n = reg_max + 1;
    let mut d = [0f32; 4];
    #[cfg(target_arch = "x86_64")]
    if n == 8 && dist.len() >= 32 && crate::simd::avx2_fma() {
        // SAFETY: AVX2 and FMA are present (`simd::avx2_fma` checked them); `dist` holds 32 values.
        let v = unsafe { integral4x8_avx2(dist) };
        for (slot, x) in d.iter_mut().zip(v) {
            *slot = x * scale;
        }
        return distance2bbox(point, d, clip);
    }
    for (s, slot) in d.iter_mut().enumerate() {
        *slot = integral(&dist[s * n..(s + 1) * n]) * scale;
    }
    distance2bbox(point, d, clip)
}

#[cfg(test)]
#[allow(clippy::excessive_precision)] // reference values are quoted as published
mod tests {
    use super::*;

    fn params() -> DeltaParams {
        DeltaParams::new([0.0; 4], [0.1, 0.1, 0.2, 0.2], 16.0 / 1000.0)
    }

    fn ulps(a: f32, b: f32) -> u32 {
        if a == b {
            return 0;
        }
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn max_ratio_bits() {
        assert_eq!(params().max_ratio.to_bits(), 0x40845349);
    }

    /// Four test vectors computed with mmdet 2.28.2's own `delta2bbox` under torch (CPU),
    /// max_shape (800, 1199).
    #[test]
    fn decode_vectors() {
        let p = params();
        let clip = Some([0.0, 0.0, 1199.0f32, 800.0f32]);
        let a = [-14.627417f32, -11.313708, 30.627417, 11.313708];
        let cases: [([f32; 4], [f32; 4], [f32; 4]); 4] = [
            (a, [0.5, -0.3, 0.2, -0.1], [0.0, 0.0, 33.813602, 10.410859]),
            (a, [0.0, 0.0, 30.0, -30.0], [0.0, 0.0, 1199.0, 0.181019]),
            (
                [1176.0, 776.0, 1240.0, 840.0],
                [1.0, 1.0, 1.0, 1.0],
                [1175.315186, 775.315125, 1199.0, 800.0],
            ),
            (
                [100.0, 100.0, 132.0, 132.0],
                [0.0; 4],
                [100.0, 100.0, 132.0, 132.0],
            ),
        ];
        for (i, (anchor, d, want)) in cases.iter().enumerate() {
            let got = delta2bbox(*anchor, *d, &p, clip);
            for k in 0..4 {
                assert!(
                    (got[k] - want[k]).abs() <= 1e-4,
                    "case {i}: {got:?} vs {want:?}"
                );
            }
        }
        // bit patterns of row 1, within 1 ulp (f32::exp vs torch's vectorised exp)
        let r = delta2bbox(a, [0.5, -0.3, 0.2, -0.1], &p, clip);
        assert!(
            ulps(r[2], f32::from_bits(0x42074121)) <= 1,
            "{:x}",
            r[2].to_bits()
        );
        assert!(
            ulps(r[3], f32::from_bits(0x412692e1)) <= 1,
            "{:x}",
            r[3].to_bits()
        );
        // without clip the box keeps its negative corner
        let r = delta2bbox(a, [0.5, -0.3, 0.2, -0.1], &p, None);
        assert!(r[0] < 0.0);
    }

    #[test]
    fn distance_and_gfl() {
        let b = distance2bbox(
            (100.0, 50.0),
            [10.0, 20.0, 30.0, 60.0],
            Some([0.0, 0.0, 120.0, 100.0]),
        );
        assert_eq!(b, [90.0, 30.0, 120.0, 100.0]);
        // GFL vs a direct formula in f64
        let dist: Vec<f32> = (0..32)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.7)
            .collect();
        let got = distribution2bbox((64.0, 32.0), &dist, 7, 8.0, None);
        let mut want = [0f64; 4];
        for s in 0..4 {
            let v = &dist[s * 8..s * 8 + 8];
            let z: f64 = v.iter().map(|&x| (x as f64).exp()).sum();
            want[s] = v
                .iter()
                .enumerate()
                .map(|(i, &x)| (x as f64).exp() / z * i as f64)
                .sum::<f64>()
                * 8.0;
        }
        let want = [
            64.0 - want[0],
            32.0 - want[1],
            64.0 + want[2],
            32.0 + want[3],
        ];
        for k in 0..4 {
            assert!(
                (got[k] as f64 - want[k]).abs() < 1e-4,
                "{got:?} vs {want:?}"
            );
        }
        // the 4-side vector path equals the per-side dispatched integral, bit for bit
        let mut rng_state = 12345u32;
        for _ in 0..500 {
            let dist: Vec<f32> = (0..32)
                .map(|_| {
                    rng_state = rng_state.wrapping_mul(1664525).wrapping_add(1013904223);
                    (rng_state >> 8) as f32 / (1u32 << 24) as f32 * 40.0 - 20.0
                })
                .collect();
            let got = distribution2bbox((0.0, 0.0), &dist, 7, 1.0, None);
            let per_side: Vec<f32> = (0..4).map(|s| integral(&dist[s * 8..s * 8 + 8])).collect();
            assert_eq!(
                [-got[0], -got[1], got[2], got[3]].map(f32::to_bits),
                [per_side[0], per_side[1], per_side[2], per_side[3]].map(f32::to_bits)
            );
        }
        // a one-hot distribution (huge logit on bin 3) decodes to exactly 3 bins
        let mut one = vec![-50.0f32; 8];
        one[3] = 50.0;
        assert_eq!(integral(&one), 3.0);
        assert_eq!(integral_scalar(&one), 3.0);
    }

    /// The dispatched integral (AVX2 for <= 8 bins) against the scalar one and against f64,
    /// for 1..=8 and 17 bins (mmdet GFL's reg_max 16), logits up to +-30.
    #[test]
    fn integral_vector_matches_scalar() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for n in [1usize, 2, 5, 7, 8, 17] {
            for _ in 0..2000 {
                let spread = [0.5f32, 3.0, 30.0][rng.random_range(0..3)];
                let bins: Vec<f32> = (0..n).map(|_| rng.random_range(-spread..spread)).collect();
                let (got, sc) = (integral(&bins), integral_scalar(&bins));
                let m = bins.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let z: f64 = bins.iter().map(|&x| (x as f64 - m).exp()).sum();
                let want: f64 = bins
                    .iter()
                    .enumerate()
                    .map(|(i, &x)| (x as f64 - m).exp() / z * i as f64)
                    .sum();
                assert!(
                    (got - sc).abs() <= 4e-6 * n as f32,
                    "{bins:?}: {got} vs {sc}"
                );
                assert!(
                    (got as f64 - want).abs() <= 4e-6 * n as f64,
                    "{bins:?}: {got} vs {want}"
                );
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exp8_within_2_ulp() {
        if crate::simd::cpu_level() < crate::simd::Level::Avx2Fma {
            return;
        }
        use std::arch::x86_64::*;
        let mut worst = 0u32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let xs: [f32; 8] = std::array::from_fn(|k| x + k as f32 * 1.37e-3);
            let mut out = [0f32; 8];
            // SAFETY: AVX2 + FMA checked above; both arrays hold 8 f32.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), exp8_avx2(_mm256_loadu_ps(xs.as_ptr()))) };
            for k in 0..8 {
                let want = xs[k].exp();
                worst = worst.max(out[k].to_bits().abs_diff(want.to_bits()));
            }
            x += 0.0113;
        }
        assert!(worst <= 2, "worst {worst} ulp");
    }
}
