//! Per-level candidate selection on raw head outputs (the score scan).
//!
//! mmdet >= 2.18 `filter_scores_and_topk` (`mmdet/core/utils/misc.py` v2,
//! `mmdet/models/utils/misc.py` v3): pairs `(prior, class)` with `score > score_thr` (strict),
//! then the top `nms_pre` pairs by score. Done here without activating the whole tensor:
//! raw logits are compared against `logit(score_thr)` (see [`raw_threshold`]), and the sigmoid
//! is applied only to the survivors.
//!
//! Tie-break (documented choice): torch's `sort(descending=True)` is not stable; here equal
//! scores are ordered by ascending flat pair index `prior * C + class` (a stable sort of the
//! `nonzero` order), which is deterministic. Scores are compared *after* the activation, so two
//! logits that saturate to the same sigmoid value tie exactly as they do in torch.

use crate::nms::desc_key;
use crate::spec::{ScoreActivation, TensorLayout};

/// The f32 sigmoid used everywhere in anchorkit: `1 / (1 + exp(-x))`, monotone
/// non-decreasing in f32; within ~1 ulp of torch's.
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Map f32 to u32 preserving the total order ascending (-inf < ... < -0 < +0 < ... < +inf).
fn asc_key(x: f32) -> u32 {
    let b = x.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

fn from_asc_key(k: u32) -> f32 {
    f32::from_bits(if k & 0x8000_0000 != 0 {
        k & 0x7fff_ffff
    } else {
        !k
    })
}

/// Threshold `t` on raw head values such that `raw > t` <=> `activated(raw) > score_thr`.
///
/// * `Activated`: `t = score_thr`.
/// * `Sigmoid`: the largest f32 `t` with `sigmoid(t) <= score_thr` under [`sigmoid`] (found by
///   bisection over the ordered f32 bit patterns, 32 steps), so the logit comparison selects
///   exactly the pairs whose f32 sigmoid passes, with no boundary error. `score_thr >= 1`
///   gives `+inf` (nothing passes), `score_thr < 0` gives `-inf`.
///   For 0.05: `logit(0.05) = -2.944439`.
pub fn raw_threshold(act: ScoreActivation, score_thr: f32) -> f32 {
    match act {
        ScoreActivation::Activated => score_thr,
        ScoreActivation::Sigmoid => {
            if score_thr.is_nan() || score_thr >= 1.0 {
                return f32::INFINITY;
            }
            if score_thr < 0.0 {
                return f32::NEG_INFINITY;
            }
            let pass = |k: u32| sigmoid(from_asc_key(k)) > score_thr;
            let (mut lo, mut hi) = (asc_key(f32::NEG_INFINITY), asc_key(f32::INFINITY));
            // invariant: !pass(lo), pass(hi)
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if pass(mid) {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            from_asc_key(lo)
        }
    }
}

/// Call `f(index, value)` for every element of `buf` with `value > t`, in index order
/// (`>` as in IEEE: NaN never passes).
///
/// This is the hot loop of post-processing (16.1 M logits for a FreeAnchor head at 800x1344):
/// it must run at memory speed. On x86_64 with AVX2 (detected at run time) blocks of 64 values
/// are compared with eight 8-wide compares and a block is opened only when one of its values
/// passes (the common case at `score_thr = 0.05` is that none does); elsewhere a portable
/// 16-wide version the compiler vectorizes with SSE2/NEON.
#[inline]
pub fn scan_above(buf: &[f32], t: f32, mut f: impl FnMut(usize, f32)) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2() {
        // SAFETY: the CPU supports AVX2 (`simd::avx2` checked it).
        unsafe { scan_above_avx2(buf, t, &mut f) };
        return;
    }
    scan_above_portable(buf, t, &mut f)
}

fn scan_above_portable(buf: &[f32], t: f32, f: &mut impl FnMut(usize, f32)) {
    const B: usize = 16;
    let chunks = buf.chunks_exact(B);
    let tail = chunks.remainder();
    for (ci, chunk) in chunks.enumerate() {
        let mut any = false;
        for &v in chunk {
            any |= v > t;
        }
        if any {
            for (j, &v) in chunk.iter().enumerate() {
                if v > t {
                    f(ci * B + j, v);
                }
            }
        }
    }
    let base = buf.len() - tail.len();
    for (j, &v) in tail.iter().enumerate() {
        if v > t {
            f(base + j, v);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn scan_above_avx2(buf: &[f32], t: f32, f: &mut impl FnMut(usize, f32)) {
    use std::arch::x86_64::*;
    const B: usize = 64;
    let tv = _mm256_set1_ps(t);
    let full = buf.len() / B * B;
    let mut i = 0;
    while i < full {
        let blk = &buf[i..i + B];
        let p = blk.as_ptr();
        // SAFETY: `blk` holds 64 f32, so each unaligned 8-wide load at offset 8*g (g < 8)
        // stays inside it.
        let m =
            |g: usize| unsafe { _mm256_cmp_ps::<_CMP_GT_OQ>(_mm256_loadu_ps(p.add(8 * g)), tv) };
        let ms = [m(0), m(1), m(2), m(3), m(4), m(5), m(6), m(7)];
        let any = _mm256_or_ps(
            _mm256_or_ps(_mm256_or_ps(ms[0], ms[1]), _mm256_or_ps(ms[2], ms[3])),
            _mm256_or_ps(_mm256_or_ps(ms[4], ms[5]), _mm256_or_ps(ms[6], ms[7])),
        );
        if _mm256_movemask_ps(any) != 0 {
            // open the block: visit only the set bits of the 64-bit pass mask, in index order
            let mut bits = 0u64;
            for (g, mg) in ms.iter().enumerate() {
                bits |= (_mm256_movemask_ps(*mg) as u32 as u64) << (8 * g);
            }
            while bits != 0 {
                let j = bits.trailing_zeros() as usize;
                f(i + j, blk[j]);
                bits &= bits - 1;
            }
        }
        i += B;
    }
    for (j, &v) in buf[full..].iter().enumerate() {
        if v > t {
            f(full + j, v);
        }
    }
}

/// One selected `(prior, class)` pair with its activated class score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    /// Flat prior index `(y*W + x)*A + a` within the level.
    pub prior: u32,
    pub class: u32,
    /// Activated class score (before any centerness factor).
    pub score: f32,
}

/// Reusable scratch space for [`select_pairs`].
#[derive(Debug, Default)]
pub struct SelectScratch {
    keys: Vec<u64>,
}

/// Pair-wise selection of one level (mmdet >= 2.18 rule): every `(prior, class)` with
/// `activated score > score_thr`, top `nms_pre` by score (descending; ties by ascending
/// `prior*C + class`). `nms_pre == 0` keeps all.
///
/// `cls` is the level's class tensor of one image: NCHW `[A*C, H, W]` (channel `a*C + c`,
/// element `((a*C + c)*H + y)*W + x`) or Flat `[H*W*A, C]`; `hw = H*W`.
/// Appends to `out` (cleared first) in selection order.
#[allow(clippy::too_many_arguments)]
pub fn select_pairs(
    cls: &[f32],
    layout: TensorLayout,
    hw: usize,
    num_priors_per_loc: usize,
    num_classes: usize,
    act: ScoreActivation,
    score_thr: f32,
    nms_pre: usize,
    scratch: &mut SelectScratch,
    out: &mut Vec<Pair>,
) {
    out.clear();
    let keys = &mut scratch.keys;
    keys.clear();
    let t = raw_threshold(act, score_thr);
    let (a_n, c_n) = (num_priors_per_loc, num_classes);
    let activate = |v: f32| match act {
        ScoreActivation::Sigmoid => sigmoid(v),
        ScoreActivation::Activated => v,
    };
    match layout {
        TensorLayout::Nchw => {
            // plane p = a*C + c, position loc = y*W + x
            for (p, plane) in cls.chunks_exact(hw.max(1)).enumerate() {
                let (a, c) = (p / c_n, p % c_n);
                scan_above(plane, t, |loc, v| {
                    let pair = ((loc * a_n + a) * c_n + c) as u64;
                    keys.push(((desc_key(activate(v)) as u64) << 32) | pair);
                });
            }
        }
        TensorLayout::Flat => {
            scan_above(cls, t, |i, v| {
                keys.push(((desc_key(activate(v)) as u64) << 32) | i as u64);
            });
        }
    }
    keep_smallest_sorted(keys, nms_pre);
    out.extend(keys.iter().map(|&key| {
        let pair = (key & 0xffff_ffff) as usize;
        let score = from_desc_key((key >> 32) as u32);
        Pair {
            prior: (pair / c_n) as u32,
            class: (pair % c_n) as u32,
            score,
        }
    }));
}

/// Keeps the `k` smallest keys (all when `k == 0`), sorted ascending.
fn keep_smallest_sorted(keys: &mut Vec<u64>, k: usize) {
    let k = if k == 0 {
        keys.len()
    } else {
        k.min(keys.len())
    };
    if k < keys.len() {
        keys.select_nth_unstable(k);
        keys.truncate(k);
    }
    keys.sort_unstable();
}

/// Inverse of [`desc_key`].
#[inline]
fn from_desc_key(k: u32) -> f32 {
    from_asc_key(!k)
}

/// Per-prior maximum over classes of the *raw* class values, for the anchor-wise rules
/// (mmdet <= 2.17 and mmdeploy). Output `[H*W*A]` in flat prior order. Since the activation
/// is monotone, `activate(max raw) == max activate(raw)`.
pub fn max_over_classes(
    cls: &[f32],
    layout: TensorLayout,
    hw: usize,
    num_priors_per_loc: usize,
    num_classes: usize,
    out: &mut Vec<f32>,
) {
    let (a_n, c_n) = (num_priors_per_loc, num_classes);
    out.clear();
    match layout {
        TensorLayout::Nchw => {
            // m[a][loc] over planes, then transpose to loc*A + a
            let mut m = vec![f32::NEG_INFINITY; a_n * hw];
            for (p, plane) in cls.chunks_exact(hw.max(1)).enumerate() {
                let a = p / c_n;
                let row = &mut m[a * hw..(a + 1) * hw];
                for (d, &v) in row.iter_mut().zip(plane) {
                    if v > *d {
                        *d = v;
                    }
                }
            }
            out.resize(hw * a_n, 0.0);
            for a in 0..a_n {
                for loc in 0..hw {
                    out[loc * a_n + a] = m[a * hw + loc];
                }
            }
        }
        TensorLayout::Flat => {
            out.extend(cls.chunks_exact(c_n.max(1)).map(|row| {
                row.iter()
                    .copied()
                    .fold(f32::NEG_INFINITY, |m, v| if v > m { v } else { m })
            }));
        }
    }
}

/// Indices of the top `k` values by descending value, ties by ascending index
/// (`k == 0` keeps all). Used for the anchor-wise top-k of the legacy and mmdeploy rules.
pub fn topk_desc(values: &[f32], k: usize) -> Vec<usize> {
    let mut keys: Vec<u64> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| ((desc_key(v) as u64) << 32) | i as u64)
        .collect();
    keep_smallest_sorted(&mut keys, k);
    keys.into_iter()
        .map(|key| (key & 0xffff_ffff) as usize)
        .collect()
}

#[cfg(test)]
#[allow(clippy::excessive_precision)] // reference values are quoted as published
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn logit_threshold_is_exact_boundary() {
        for thr in [0.05f32, 0.3, 0.5, 0.001, 0.999, 1e-6] {
            let t = raw_threshold(ScoreActivation::Sigmoid, thr);
            assert!(sigmoid(t) <= thr, "{thr}");
            assert!(sigmoid(t.next_up()) > thr, "{thr}");
            let l = (thr as f64 / (1.0 - thr as f64)).ln() as f32;
            assert!((t - l).abs() < 1e-3 * l.abs().max(1.0), "{thr}: {t} vs {l}");
        }
        assert!((raw_threshold(ScoreActivation::Sigmoid, 0.05) + 2.944439).abs() < 1e-5);
        assert_eq!(raw_threshold(ScoreActivation::Sigmoid, 1.0), f32::INFINITY);
        assert_eq!(raw_threshold(ScoreActivation::Activated, 0.05), 0.05);
        let t0 = raw_threshold(ScoreActivation::Sigmoid, 0.0);
        assert_eq!(sigmoid(t0), 0.0);
        assert!(sigmoid(t0.next_up()) > 0.0);
    }

    #[test]
    fn scan_matches_naive() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        // lengths around the 16- and 64-blocks, densities from none to all, NaN and +-inf
        for len in [0usize, 1, 15, 16, 63, 64, 65, 127, 1037, 4100] {
            for density in [0.0f32, 0.002, 0.05, 0.5, 1.0] {
                let v: Vec<f32> = (0..len)
                    .map(|i| {
                        let r: f32 = rng.random_range(0.0..1.0);
                        match i % 97 {
                            13 => f32::NAN,
                            41 => f32::NEG_INFINITY,
                            _ if r < density => rng.random_range(-2.8f32..40.0),
                            _ => rng.random_range(-6.0f32..-2.9),
                        }
                    })
                    .collect();
                let want: Vec<(usize, u32)> = v
                    .iter()
                    .enumerate()
                    .filter(|&(_, x)| *x > -2.9)
                    .map(|(i, x)| (i, x.to_bits()))
                    .collect();
                let mut got = vec![];
                scan_above(&v, -2.9, |i, x| got.push((i, x.to_bits())));
                assert_eq!(got, want, "dispatch, len {len}, density {density}");
                let mut got = vec![];
                scan_above_portable(&v, -2.9, &mut |i, x| got.push((i, x.to_bits())));
                assert_eq!(got, want, "portable, len {len}, density {density}");
                if density == 1.0 && len > 0 {
                    assert!(!want.is_empty());
                }
            }
        }
    }

    /// Selection vs a direct implementation of mmdet's rule on the activated tensor.
    #[test]
    fn select_matches_direct_rule_nchw_and_flat() {
        let seed = 11u64;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (h, w, a_n, c_n) = (7usize, 9usize, 3usize, 5usize);
        let hw = h * w;
        for case in 0..40 {
            // NCHW tensor with some saturated logits (ties after sigmoid) and quantized values
            let nchw: Vec<f32> = (0..a_n * c_n * hw)
                .map(|_| {
                    let r: f32 = rng.random_range(0.0..1.0);
                    if r < 0.05 {
                        30.0 + rng.random_range(0.0f32..5.0)
                    } else {
                        (rng.random_range(-6.0f32..2.0) * 8.0).round() / 8.0
                    }
                })
                .collect();
            // the same data in Flat layout
            let mut flat = vec![0f32; nchw.len()];
            for a in 0..a_n {
                for c in 0..c_n {
                    for loc in 0..hw {
                        flat[(loc * a_n + a) * c_n + c] = nchw[(a * c_n + c) * hw + loc];
                    }
                }
            }
            let thr = [0.05f32, 0.3, 0.5][case % 3];
            let nms_pre = [1000usize, 50, 7, 0][case % 4];
            // direct rule: activate all, nonzero order, stable sort desc, take k
            let mut pairs: Vec<(usize, usize, f32)> = vec![];
            for p in 0..a_n * hw {
                for c in 0..c_n {
                    let s = sigmoid(flat[p * c_n + c]);
                    if s > thr {
                        pairs.push((p, c, s));
                    }
                }
            }
            pairs.sort_by(|x, y| y.2.partial_cmp(&x.2).unwrap());
            if nms_pre > 0 {
                pairs.truncate(nms_pre);
            }
            let mut scratch = SelectScratch::default();
            for (layout, buf) in [(TensorLayout::Nchw, &nchw), (TensorLayout::Flat, &flat)] {
                let mut out = vec![];
                select_pairs(
                    buf,
                    layout,
                    hw,
                    a_n,
                    c_n,
                    ScoreActivation::Sigmoid,
                    thr,
                    nms_pre,
                    &mut scratch,
                    &mut out,
                );
                let got: Vec<(usize, usize, f32)> = out
                    .iter()
                    .map(|p| (p.prior as usize, p.class as usize, p.score))
                    .collect();
                assert_eq!(got, pairs, "seed {seed} case {case} {layout:?}");
            }
        }
    }

    #[test]
    fn max_and_topk() {
        // NCHW [A*C, H, W] with A=2, C=2, HW=3
        let cls = [
            1.0, 5.0, 0.0, // a0 c0
            2.0, 4.0, 9.0, // a0 c1
            3.0, 3.0, 3.0, // a1 c0
            -1.0, 8.0, 3.0, // a1 c1
        ];
        let mut m = vec![];
        max_over_classes(&cls, TensorLayout::Nchw, 3, 2, 2, &mut m);
        assert_eq!(m, vec![2.0, 3.0, 5.0, 8.0, 9.0, 3.0]);
        assert_eq!(topk_desc(&m, 3), vec![4, 3, 2]);
        assert_eq!(topk_desc(&m, 0), vec![4, 3, 2, 1, 5, 0]);
    }
}
