//! Shape-only objectives over all dataset boxes (boxes and anchors centred at the origin), the
//! quantities the peers optimize (mmdet `tools/analysis_tools/optimize_anchors.py`, darknet
//! `src/detector.c` `calc_anchors`, yolov5 `utils/autoanchor.py`, martinzlocha/anchor-optimization
//! `anchor_optimization/optimize_anchors.py`):
//!
//! - centred IoU `min(w1,w2) min(h1,h2) / (w1 h1 + w2 h2 - min(w1,w2) min(h1,h2))` and the mean
//!   over boxes of the best IoU over anchors (YOLOv2 / darknet, mmdet `optimize_anchors.py`);
//! - the YOLOv5 shape-ratio metric `x = min(min(r, 1/r))` over w and h with `r = box / anchor`,
//!   BPR = share of boxes with best `x > 1/anchor_t`, AAT = mean count of anchors with `x > thr`,
//!   fitness = mean of `best * [best > thr]` (ultralytics/yolov5 `utils/autoanchor.py`);
//! - Zlocha et al.'s objectives on the best IoU `m`: focal `mean(-(1-m)^2 ln m)`, avg `1 - mean m`,
//!   ce `mean(-ln m)` (martinzlocha/anchor-optimization).
//!
//! In the [`Layout::Fpn`](super::Layout) layout a box is compared with `stride_l * shape` for every
//! level `l`; IoU and the ratio metric are scale invariant, so this is the box scaled by
//! `1 / stride_l` against the shape. The problem stores the boxes as f32 SoA and evaluates with a
//! dense kernel (per chunk of boxes: levels and shapes in the outer loops, boxes in the vectorized
//! inner loop; AVX2 when present) in parallel over fixed chunks, so sums are deterministic and
//! do not depend on the thread count.

use crate::simd::avx2_or_portable;
use rayon::prelude::*;

/// Boxes per rayon task; fixed so that sums do not depend on the thread count.
pub const CHUNK: usize = 2048;

/// Centred IoU of two `(w, h)` shapes.
#[inline(always)]
pub fn iou_wh(bw: f32, bh: f32, aw: f32, ah: f32) -> f32 {
    let inter = bw.min(aw) * bh.min(ah);
    inter / (bw * bh + aw * ah - inter)
}

/// YOLOv5 ratio metric `min(min(r, 1/r))` over w and h, `r = box / anchor`.
#[inline(always)]
pub fn ratio_wh(bw: f32, bh: f32, aw: f32, ah: f32) -> f32 {
    let rw = bw / aw;
    let rh = bh / ah;
    rw.min(1.0 / rw).min(rh.min(1.0 / rh))
}

/// Shapes in SoA form with reciprocals and areas, built once per evaluation.
struct ShapeTable {
    w: Vec<f32>,
    h: Vec<f32>,
    iw: Vec<f32>,
    ih: Vec<f32>,
    a: Vec<f32>,
    /// Smallest and largest shape area.
    amin: f32,
    amax: f32,
}

impl ShapeTable {
    fn new(shapes: &[[f32; 2]]) -> Self {
        let w: Vec<f32> = shapes.iter().map(|s| s[0]).collect();
        let h: Vec<f32> = shapes.iter().map(|s| s[1]).collect();
        ShapeTable {
            iw: w.iter().map(|v| 1.0 / v).collect(),
            ih: h.iter().map(|v| 1.0 / v).collect(),
            a: shapes.iter().map(|s| s[0] * s[1]).collect(),
            amin: shapes
                .iter()
                .map(|s| s[0] * s[1])
                .fold(f32::INFINITY, f32::min),
            amax: shapes.iter().map(|s| s[0] * s[1]).fold(0.0, f32::max),
            w,
            h,
        }
    }
}

avx2_or_portable! {
    /// Sum in f64 over 8 interleaved lanes (element `i` into lane `i % 8`), then the lanes in
    /// order: vectorizable (AVX2 when the CPU has it, see [`crate::simd`]), and fixed, so sums
    /// do not depend on the thread count.
    pub fn lane_sum(v: &[f32], f: impl Fn(f32) -> f64) -> f64 => lane_sum_body
}

#[inline(always)]
fn lane_sum_body(v: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut acc = [0f64; 8];
    let mut it = v.chunks_exact(8);
    for c in &mut it {
        for j in 0..8 {
            acc[j] += f(c[j]);
        }
    }
    for (a, &x) in acc.iter_mut().zip(it.remainder()) {
        *a += f(x);
    }
    acc.iter().sum()
}

/// Natural logarithm of a positive, finite, normal `x` from its exponent and a polynomial in
/// `t = (f - 1) / (f + 1)`, `f` in [sqrt(1/2), sqrt(2)) (the atanh series to `t^9`, truncation
/// below 4e-10): branch-free, so loops over it vectorize, and within 3e-7 relative of
/// `f64::ln` (tested). Used for Zlocha's focal / ce objectives inside differential evolution,
/// whose reported values are recomputed with `f64::ln`.
#[inline(always)]
pub fn fast_ln(x: f32) -> f32 {
    let bits = x.to_bits();
    // exponent relative to the mantissa range [sqrt(1/2), sqrt(2))
    let adj = bits.wrapping_sub(0x3f35_04f3); // bits of sqrt(1/2)
    let e = (adj as i32) >> 23;
    let f = f32::from_bits(bits.wrapping_sub((e as u32) << 23));
    let t = (f - 1.0) / (f + 1.0);
    let t2 = t * t;
    let p = 1.0 / 9.0;
    let p = p * t2 + 1.0 / 7.0;
    let p = p * t2 + 1.0 / 5.0;
    let p = p * t2 + 1.0 / 3.0;
    let p = p * t2 + 1.0;
    e as f32 * std::f32::consts::LN_2 + 2.0 * t * p
}

/// Which per-box best value a dense kernel computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Centred IoU [`iou_wh`].
    Iou,
    /// YOLOv5 ratio metric (the expression of [`ratio_wh`] with reciprocals precomputed).
    Ratio,
}

impl Metric {
    /// `Ratio` when `ratio`, else `Iou`.
    pub fn of(ratio: bool) -> Metric {
        if ratio { Metric::Ratio } else { Metric::Iou }
    }
}

/// The boxes of one chunk (at most [`CHUNK`]) and what they are matched against.
struct Chunk<'a> {
    w: &'a [f32],
    h: &'a [f32],
    inv_strides: &'a [f32],
    t: &'a ShapeTable,
}

avx2_or_portable! {
    /// Best value per box of one chunk over all levels and shapes, raised in place (`best`
    /// starts at -1); with `arg`, the code `level * K + shape` of the first best pair in
    /// (level, shape) order. Levels and shapes are the outer loops and the boxes the inner one,
    /// so the compiler vectorizes it (AVX2 when the CPU has it).
    fn best_chunk(metric: Metric, c: &Chunk, best: &mut [f32], arg: Option<&mut [u32]>)
        => best_chunk_dispatch
}

#[inline(always)]
fn best_chunk_dispatch(metric: Metric, c: &Chunk, best: &mut [f32], arg: Option<&mut [u32]>) {
    let (w, h, inv, t) = (c.w, c.h, c.inv_strides, c.t);
    match (metric, arg) {
        (Metric::Iou, None) => best_chunk_body::<false, false>(w, h, inv, t, best, &mut []),
        (Metric::Iou, Some(a)) => best_chunk_body::<false, true>(w, h, inv, t, best, a),
        (Metric::Ratio, None) => best_chunk_body::<true, false>(w, h, inv, t, best, &mut []),
        (Metric::Ratio, Some(a)) => best_chunk_body::<true, true>(w, h, inv, t, best, a),
    }
}

/// Box sizes of one level (`w * inv`, `h * inv`) and the per-box terms of the metric:
/// reciprocals for the ratio metric, the area for IoU.
#[inline(always)]
fn scaled_boxes<const RATIO: bool>(
    w: &[f32],
    h: &[f32],
    inv: f32,
    bw: &mut [f32],
    bh: &mut [f32],
    c1: &mut [f32],
    c2: &mut [f32],
) {
    for i in 0..w.len() {
        bw[i] = w[i] * inv;
        bh[i] = h[i] * inv;
        if RATIO {
            c1[i] = 1.0 / bw[i];
            c2[i] = 1.0 / bh[i];
        } else {
            c1[i] = bw[i] * bh[i];
        }
    }
}

/// The metric of one scaled box `(x, y)` (with its terms `c1`, `c2` from [`scaled_boxes`])
/// against one shape `(aw, ah)` with reciprocals `(iaw, iah)` and area `area`: the single
/// expression every kernel uses, so their values are bit-identical. `if a < b { a } else { b }`
/// is `f32::min` for the finite positive sizes here and maps to one vector instruction
/// (f32::min's NaN rule costs two more).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pair_metric<const RATIO: bool>(
    x: f32,
    y: f32,
    c1: f32,
    c2: f32,
    aw: f32,
    ah: f32,
    iaw: f32,
    iah: f32,
    area: f32,
) -> f32 {
    if RATIO {
        let (p, q) = (x * iaw, aw * c1);
        let (r, s) = (y * iah, ah * c2);
        let u = if p < q { p } else { q };
        let v = if r < s { r } else { s };
        if u < v { u } else { v }
    } else {
        let iw = if x < aw { x } else { aw };
        let ih = if y < ah { y } else { ah };
        let inter = iw * ih;
        inter / (c1 + area - inter)
    }
}

avx2_or_portable! {
    /// Best value per box of one chunk against each shape separately (over levels), keeping
    /// the largest and second-largest over shapes and the shape of the largest (first on
    /// ties): `b1`, `b2` start at -1. See [`Top2`].
    fn top2_chunk(metric: Metric, c: &Chunk, b1: &mut [f32], a1: &mut [u32], b2: &mut [f32])
        => top2_chunk_dispatch
}

#[inline(always)]
fn top2_chunk_dispatch(metric: Metric, c: &Chunk, b1: &mut [f32], a1: &mut [u32], b2: &mut [f32]) {
    match metric {
        Metric::Ratio => top2_chunk_body::<true>(c, b1, a1, b2),
        Metric::Iou => top2_chunk_body::<false>(c, b1, a1, b2),
    }
}

#[inline(always)]
fn top2_chunk_body<const RATIO: bool>(c: &Chunk, b1: &mut [f32], a1: &mut [u32], b2: &mut [f32]) {
    let n = b1.len();
    let t = c.t;
    let mut vs = [0f32; CHUNK];
    for k in 0..t.w.len() {
        let v = &mut vs[..n];
        shape_chunk::<RATIO>(c, [t.w[k], t.h[k], t.iw[k], t.ih[k], t.a[k]], v);
        for i in 0..n {
            let x = v[i];
            let top = x > b1[i];
            let sec = if top {
                b1[i]
            } else if x > b2[i] {
                x
            } else {
                b2[i]
            };
            b2[i] = sec;
            b1[i] = if top { x } else { b1[i] };
            a1[i] = if top { k as u32 } else { a1[i] };
        }
    }
}

/// Best value per box of one chunk against ONE shape `[w, h, 1/w, 1/h, w*h]` over levels.
#[inline(always)]
fn shape_chunk<const RATIO: bool>(c: &Chunk, s: [f32; 5], out: &mut [f32]) {
    let n = out.len();
    let (mut bw, mut bh, mut c1, mut c2) =
        ([0f32; CHUNK], [0f32; CHUNK], [0f32; CHUNK], [0f32; CHUNK]);
    let (bw, bh, c1, c2) = (&mut bw[..n], &mut bh[..n], &mut c1[..n], &mut c2[..n]);
    out.fill(-1.0);
    for &inv in c.inv_strides {
        scaled_boxes::<RATIO>(&c.w[..n], &c.h[..n], inv, bw, bh, c1, c2);
        for i in 0..n {
            let v = pair_metric::<RATIO>(bw[i], bh[i], c1[i], c2[i], s[0], s[1], s[2], s[3], s[4]);
            out[i] = if v > out[i] { v } else { out[i] };
        }
    }
}

avx2_or_portable! {
    /// [`replaced_chunk_body`] for the top's metric, AVX2 when the CPU has it.
    fn replaced_chunk(s: [f32; 5], ts: TopSlice, out: &mut [f32]) => replaced_chunk_dispatch
}

#[inline(always)]
fn replaced_chunk_dispatch(s: [f32; 5], ts: TopSlice, out: &mut [f32]) {
    match ts.top.metric {
        Metric::Ratio => replaced_chunk_body::<true>(s, ts, out),
        Metric::Iou => replaced_chunk_body::<false>(s, ts, out),
    }
}

/// The chunk's best values after replacing shape `ts.j` by `s` (`[w, h, 1/w, 1/h, w*h]`):
/// `max(best without j, best over levels against s)`.
#[inline(always)]
fn replaced_chunk_body<const RATIO: bool>(s: [f32; 5], ts: TopSlice, out: &mut [f32]) {
    let (t, lo, n) = (ts.top, ts.lo, out.len());
    let len = t.b1.len();
    out.fill(-1.0);
    for l in 0..t.bw.len() / len.max(1) {
        let r = l * len + lo..l * len + lo + n;
        let (bw, bh, c1, c2) = (
            &t.bw[r.clone()],
            &t.bh[r.clone()],
            &t.c1[r.clone()],
            &t.c2[r],
        );
        for i in 0..n {
            let v = pair_metric::<RATIO>(bw[i], bh[i], c1[i], c2[i], s[0], s[1], s[2], s[3], s[4]);
            out[i] = if v > out[i] { v } else { out[i] };
        }
    }
    let (b1, a1, b2) = (&t.b1[lo..lo + n], &t.a1[lo..lo + n], &t.b2[lo..lo + n]);
    for i in 0..n {
        let excl = if a1[i] == ts.j { b2[i] } else { b1[i] };
        out[i] = if out[i] > excl { out[i] } else { excl };
    }
}

/// One chunk's slice of a [`Top2`] and the shape being replaced.
#[derive(Clone, Copy)]
struct TopSlice<'a> {
    top: &'a Top2,
    lo: usize,
    j: u32,
}

/// Per box, the best and second-best value over shapes (each shape's best over levels) and
/// the shape of the best, for one set of shapes: with it, the objective after changing ONE
/// shape costs one shape's evaluation instead of all K ([`ShapeProblem::sum_best_replacing`]).
#[derive(Debug, Clone)]
pub struct Top2 {
    b1: Vec<f32>,
    a1: Vec<u32>,
    b2: Vec<f32>,
    metric: Metric,
    /// Per level `l`, boxes `l*n..(l+1)*n`: the scaled sizes and metric terms of
    /// [`scaled_boxes`], computed once so that each replacement costs no division.
    bw: Vec<f32>,
    bh: Vec<f32>,
    c1: Vec<f32>,
    c2: Vec<f32>,
}

/// Boxes `b0..b0 + B` of a chunk (scaled sizes and terms in `bc`) against every shape of
/// level `l`: raises `best` (and sets `arg` to `l * ns + k` when `ARG`) where a shape is
/// strictly better, shapes in order. `B` boxes stay in registers while the shapes pass.
#[inline(always)]
fn block<const RATIO: bool, const ARG: bool, const B: usize>(
    b0: usize,
    l: usize,
    ns: usize,
    t: &ShapeTable,
    bc: [&[f32]; 4],
    best: &mut [f32],
    arg: &mut [u32],
) {
    let (tw, th, tiw, tih, ta) = (&t.w[..ns], &t.h[..ns], &t.iw[..ns], &t.ih[..ns], &t.a[..ns]);
    let x: &[f32; B] = bc[0][b0..b0 + B].try_into().expect("B boxes");
    let y: &[f32; B] = bc[1][b0..b0 + B].try_into().expect("B boxes");
    let p: &[f32; B] = bc[2][b0..b0 + B].try_into().expect("B boxes");
    let q: &[f32; B] = bc[3][b0..b0 + B].try_into().expect("B boxes");
    let mut bb = [0f32; B];
    bb.copy_from_slice(&best[b0..b0 + B]);
    let mut aa = [0u32; B];
    if ARG {
        aa.copy_from_slice(&arg[b0..b0 + B]);
    }
    for k in 0..ns {
        let (aw, ah, iaw, iah, ar) = (tw[k], th[k], tiw[k], tih[k], ta[k]);
        let code = (l * ns + k) as u32;
        for j in 0..B {
            let v = pair_metric::<RATIO>(x[j], y[j], p[j], q[j], aw, ah, iaw, iah, ar);
            let better = v > bb[j];
            bb[j] = if better { v } else { bb[j] };
            if ARG {
                aa[j] = if better { code } else { aa[j] };
            }
        }
    }
    best[b0..b0 + B].copy_from_slice(&bb);
    if ARG {
        arg[b0..b0 + B].copy_from_slice(&aa);
    }
}

#[inline(always)]
fn best_chunk_body<const RATIO: bool, const ARG: bool>(
    w: &[f32],
    h: &[f32],
    inv_strides: &[f32],
    t: &ShapeTable,
    best: &mut [f32],
    arg: &mut [u32],
) {
    // the scaled sizes of one chunk live on the stack
    let n = best.len();
    debug_assert!(n <= CHUNK && w.len() == n && h.len() == n);
    debug_assert!(!ARG || arg.len() == n);
    let (mut bw, mut bh, mut c1, mut c2) =
        ([0f32; CHUNK], [0f32; CHUNK], [0f32; CHUNK], [0f32; CHUNK]);
    let (bw, bh, c1, c2) = (&mut bw[..n], &mut bh[..n], &mut c1[..n], &mut c2[..n]);
    let (w, h) = (&w[..n], &h[..n]);
    let ns = t.w.len();
    let nl = inv_strides.len();
    // Without argmax (sums only) the best values do not depend on the level order, and a
    // level can be skipped when no box of the chunk can improve there: IoU <= min(a, A) /
    // max(a, A) for box area a and shape area A (the ratio metric <= its square root). Levels
    // are visited by descending bound of the chunk's middle box (chunks of boxes sorted by
    // area, see [`ShapeProblem::sorted_by_area`], are nearly homogeneous, so most levels are
    // skipped). With argmax, every pair is visited in (level, shape) order.
    let prune = !ARG && nl > 1;
    let bound = |a: f32| -> f32 {
        let b = a.min(t.amax) / a.max(t.amin);
        if RATIO { b.sqrt() } else { b }
    };
    let mut order: Vec<usize> = (0..nl).collect();
    if prune {
        let am = w[n / 2] * h[n / 2];
        let key: Vec<f32> = inv_strides.iter().map(|&v| bound(am * v * v)).collect();
        order.sort_by(|&x, &y| key[y].total_cmp(&key[x]));
    }
    for (step, &l) in order.iter().enumerate() {
        let inv = inv_strides[l];
        if prune && step > 0 {
            // a margin of 1e-5 covers the rounding of the bound against the computed metric
            let mut any = false;
            for ((&x, &y), &b) in w.iter().zip(h.iter()).zip(best.iter()) {
                any |= bound(x * y * inv * inv) * (1.0 + 1e-5) > b;
            }
            if !any {
                continue;
            }
        }
        scaled_boxes::<RATIO>(w, h, inv, bw, bh, c1, c2);
        // blocks of 16 boxes held in registers while every shape passes over them (the
        // shape's terms are loaded once per 16 boxes), then blocks of 8, then box by box:
        // one block kernel, so the same expressions in the same order for every box
        let bc = [&bw[..], &bh[..], &c1[..], &c2[..]];
        let mut b0 = 0;
        while b0 + 16 <= n {
            block::<RATIO, ARG, 16>(b0, l, ns, t, bc, best, arg);
            b0 += 16;
        }
        if b0 + 8 <= n {
            block::<RATIO, ARG, 8>(b0, l, ns, t, bc, best, arg);
            b0 += 8;
        }
        for i in b0..n {
            block::<RATIO, ARG, 1>(i, l, ns, t, bc, best, arg);
        }
    }
}

/// The boxes of a shape-optimization problem.
#[derive(Debug, Clone)]
pub struct ShapeProblem {
    /// Box widths in input pixels.
    pub w: Vec<f32>,
    /// Box heights in input pixels.
    pub h: Vec<f32>,
    /// `1 / stride` per level (`[1.0]` for the free layout).
    pub inv_strides: Vec<f32>,
}

/// Best match of one box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Match {
    /// Shape index.
    pub shape: u32,
    /// Level index.
    pub level: u8,
    /// Best value (IoU or ratio metric).
    pub value: f32,
}

impl ShapeProblem {
    /// A problem over `(w, h)` with one level per stride (`Fpn`), or a single unit level
    /// (`strides = None`, the free layout).
    pub fn new(w: Vec<f32>, h: Vec<f32>, strides: Option<&[u32]>) -> ShapeProblem {
        let inv_strides = match strides {
            Some(s) => s.iter().map(|&s| 1.0 / s as f32).collect(),
            None => vec![1.0],
        };
        ShapeProblem { w, h, inv_strides }
    }

    /// Number of boxes.
    pub fn len(&self) -> usize {
        self.w.len()
    }

    /// Whether there are no boxes.
    pub fn is_empty(&self) -> bool {
        self.w.is_empty()
    }

    /// The same boxes ordered by area (ties by index): sums over boxes then visit chunks of
    /// similar size, which lets the dense kernel skip levels (see `best_chunk_body`). Sums
    /// change only by the order of f64 additions.
    pub fn sorted_by_area(&self) -> ShapeProblem {
        let mut idx: Vec<usize> = (0..self.len()).collect();
        idx.sort_by(|&a, &b| {
            (self.w[a] * self.h[a])
                .total_cmp(&(self.w[b] * self.h[b]))
                .then(a.cmp(&b))
        });
        ShapeProblem {
            w: idx.iter().map(|&i| self.w[i]).collect(),
            h: idx.iter().map(|&i| self.h[i]).collect(),
            inv_strides: self.inv_strides.clone(),
        }
    }

    /// Keep only boxes with `keep(w, h)` true.
    pub fn filtered(&self, keep: impl Fn(f32, f32) -> bool) -> ShapeProblem {
        let (mut w, mut h) = (Vec::new(), Vec::new());
        for i in 0..self.len() {
            if keep(self.w[i], self.h[i]) {
                w.push(self.w[i]);
                h.push(self.h[i]);
            }
        }
        ShapeProblem {
            w,
            h,
            inv_strides: self.inv_strides.clone(),
        }
    }

    /// Boxes `lo..hi` as a kernel input.
    fn chunk<'a>(&'a self, t: &'a ShapeTable, lo: usize, hi: usize) -> Chunk<'a> {
        Chunk {
            w: &self.w[lo..hi],
            h: &self.h[lo..hi],
            inv_strides: &self.inv_strides,
            t,
        }
    }

    /// Best match of every box over shapes and levels: IoU (`ratio = false`, values equal to
    /// the maximum of [`iou_wh`] over the pairs) or the YOLOv5 ratio metric (`ratio = true`).
    /// Ties go to the first pair in (level, shape) order. Dense kernel, parallel over chunks.
    pub fn assign(&self, shapes: &[[f32; 2]], ratio: bool) -> Vec<Match> {
        self.assign_sum(shapes, ratio, |_| 0.0).0
    }

    /// [`Self::assign`] together with the sum of `f(best value)` over boxes, bit-identical to
    /// [`Self::sum_best`] (the same per-chunk [`lane_sum`]s added in chunk order): one pass
    /// where an assignment and its objective are both needed (the k-means polish).
    pub fn assign_sum(
        &self,
        shapes: &[[f32; 2]],
        ratio: bool,
        f: impl Fn(f32) -> f64 + Sync,
    ) -> (Vec<Match>, f64) {
        let t = ShapeTable::new(shapes);
        let metric = Metric::of(ratio);
        let ns = shapes.len().max(1) as u32;
        let mut out = vec![
            Match {
                shape: 0,
                level: 0,
                value: 0.0
            };
            self.len()
        ];
        let parts: Vec<f64> = out
            .par_chunks_mut(CHUNK)
            .enumerate()
            .map(|(c, o)| {
                let lo = c * CHUNK;
                let n = o.len();
                let (mut best, mut arg) = ([-1.0f32; CHUNK], [0u32; CHUNK]);
                let (best, arg) = (&mut best[..n], &mut arg[..n]);
                best_chunk(metric, &self.chunk(&t, lo, lo + n), best, Some(arg));
                for ((m, &v), &a) in o.iter_mut().zip(best.iter()).zip(arg.iter()) {
                    *m = Match {
                        shape: a % ns,
                        level: (a / ns) as u8,
                        value: v,
                    };
                }
                lane_sum(best, &f)
            })
            .collect();
        (out, parts.iter().sum())
    }

    /// Best value (and with `arg`, the code `level * K + shape`, see [`Self::assign`]) of every
    /// box into caller buffers of length [`Self::len`], on the calling thread: the allocation-free
    /// inner step of k-means restarts that already run in parallel.
    pub fn best_into(
        &self,
        shapes: &[[f32; 2]],
        ratio: bool,
        best: &mut [f32],
        mut arg: Option<&mut [u32]>,
    ) {
        let t = ShapeTable::new(shapes);
        let metric = Metric::of(ratio);
        best.fill(-1.0);
        for (c, b) in best.chunks_mut(CHUNK).enumerate() {
            let (lo, hi) = (c * CHUNK, c * CHUNK + b.len());
            let a = arg.as_deref_mut().map(|a| &mut a[lo..hi]);
            best_chunk(metric, &self.chunk(&t, lo, hi), b, a);
        }
    }

    /// Raise `best[i]` to the metric of box `i` against each of `shapes` where that is higher
    /// (no argmax): after [`Self::best_into`] with shapes `S`, this with shapes `T` leaves the
    /// same values as `best_into` with `S ++ T` (max is exact).
    pub fn best_update(&self, shapes: &[[f32; 2]], ratio: bool, best: &mut [f32]) {
        let t = ShapeTable::new(shapes);
        let metric = Metric::of(ratio);
        for (c, b) in best.chunks_mut(CHUNK).enumerate() {
            let (lo, hi) = (c * CHUNK, c * CHUNK + b.len());
            best_chunk(metric, &self.chunk(&t, lo, hi), b, None);
        }
    }

    /// `f(best value)` summed over chunk `c` with [`lane_sum`].
    fn chunk_sum(&self, t: &ShapeTable, metric: Metric, c: usize, f: &impl Fn(f32) -> f64) -> f64 {
        let (lo, hi) = (c * CHUNK, ((c + 1) * CHUNK).min(self.len()));
        let mut best = [-1.0f32; CHUNK];
        let best = &mut best[..hi - lo];
        best_chunk(metric, &self.chunk(t, lo, hi), best, None);
        lane_sum(best, f)
    }

    /// Sum over boxes of `f(best value)` in f64 (IoU or ratio metric, see [`Self::assign`]),
    /// deterministic: fixed chunks of [`CHUNK`] boxes summed in order, then the chunk sums in
    /// order, so the result does not depend on the thread count. This is the fitness of
    /// [`super::evolve::evolve`] (YOLOv5 `anchor_fitness`) and the mean IoU of k-means.
    pub fn sum_best(&self, shapes: &[[f32; 2]], ratio: bool, f: impl Fn(f32) -> f64 + Sync) -> f64 {
        let t = ShapeTable::new(shapes);
        let metric = Metric::of(ratio);
        let parts: Vec<f64> = (0..self.len().div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| self.chunk_sum(&t, metric, c, &f))
            .collect();
        parts.iter().sum()
    }

    /// [`Self::sum_best`] on the calling thread (bit-identical), for callers that parallelize
    /// over candidates instead (differential evolution).
    pub fn sum_best_seq(&self, shapes: &[[f32; 2]], ratio: bool, f: impl Fn(f32) -> f64) -> f64 {
        let t = ShapeTable::new(shapes);
        let metric = Metric::of(ratio);
        let mut total = 0.0f64;
        for c in 0..self.len().div_ceil(CHUNK) {
            total += self.chunk_sum(&t, metric, c, &f);
        }
        total
    }

    /// [`Top2`] of `shapes` (parallel over chunks).
    pub fn top2(&self, shapes: &[[f32; 2]], ratio: bool) -> Top2 {
        let t = ShapeTable::new(shapes);
        let metric = Metric::of(ratio);
        let n = self.len();
        let (mut b1, mut a1, mut b2) = (vec![-1.0f32; n], vec![0u32; n], vec![-1.0f32; n]);
        b1.par_chunks_mut(CHUNK)
            .zip(a1.par_chunks_mut(CHUNK))
            .zip(b2.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(c, ((x, a), y))| {
                let lo = c * CHUNK;
                top2_chunk(metric, &self.chunk(&t, lo, lo + x.len()), x, a, y);
            });
        let nl = self.inv_strides.len();
        let mut bw = vec![0f32; n * nl];
        let (mut bh, mut c1, mut c2) = (bw.clone(), bw.clone(), bw.clone());
        for (l, &inv) in self.inv_strides.iter().enumerate() {
            let r = l * n..(l + 1) * n;
            let (x, y) = (&mut bw[r.clone()], &mut bh[r.clone()]);
            let (p, q) = (&mut c1[r.clone()], &mut c2[r]);
            if ratio {
                scaled_boxes::<true>(&self.w, &self.h, inv, x, y, p, q);
            } else {
                scaled_boxes::<false>(&self.w, &self.h, inv, x, y, p, q);
            }
        }
        Top2 {
            b1,
            a1,
            b2,
            metric,
            bw,
            bh,
            c1,
            c2,
        }
    }

    /// [`Self::sum_best_seq`] of the shapes `top` was built from with shape `j` replaced by
    /// `s`, bit-identical to it (the best value per box is `max(best without j, value of s)`,
    /// and max is exact; the sum runs over the same chunks and lanes), at the cost of one
    /// shape instead of K. Panics if `top` belongs to a problem of another size.
    pub fn sum_best_replacing(
        &self,
        top: &Top2,
        j: usize,
        s: [f32; 2],
        f: impl Fn(f32) -> f64,
    ) -> f64 {
        assert_eq!(top.b1.len(), self.len());
        let t = ShapeTable::new(&[s]);
        let sv = [t.w[0], t.h[0], t.iw[0], t.ih[0], t.a[0]];
        let mut total = 0.0f64;
        let mut out = [0f32; CHUNK];
        for c in 0..self.len().div_ceil(CHUNK) {
            let (lo, hi) = (c * CHUNK, ((c + 1) * CHUNK).min(self.len()));
            let ts = TopSlice {
                top,
                lo,
                j: j as u32,
            };
            let o = &mut out[..hi - lo];
            replaced_chunk(sv, ts, o);
            total += lane_sum(o, &f);
        }
        total
    }

    /// Mean over boxes of the best centred IoU.
    pub fn mean_best_iou(&self, shapes: &[[f32; 2]]) -> f64 {
        self.sum_best(shapes, false, |v| v as f64) / self.len().max(1) as f64
    }

    /// All shape-only scores of an anchor set (every peer's objective), see [`ShapeScores`].
    pub fn scores(&self, shapes: &[[f32; 2]], anchor_t: f32) -> ShapeScores {
        let n = self.len().max(1) as f64;
        let best = self.assign(shapes, false);
        let mut mean_iou = 0.0;
        let mut focal = 0.0;
        let mut ce = 0.0;
        let mut below = 0usize;
        for m in &best {
            let v = m.value.max(1e-12) as f64;
            mean_iou += v;
            focal += -(1.0 - v).powi(2) * v.ln();
            ce += -v.ln();
            if m.value < 0.5 {
                below += 1;
            }
        }
        let thr = 1.0 / anchor_t;
        let (bpr, aat, fitness) = self.yolo_scores(shapes, thr);
        ShapeScores {
            mean_iou: mean_iou / n,
            focal: focal / n,
            ce: ce / n,
            not_matched: below,
            bpr,
            aat,
            fitness,
        }
    }

    /// YOLOv5 `(BPR, AAT, fitness)` with threshold `thr = 1 / anchor_t`; AAT counts anchors
    /// over all levels.
    pub fn yolo_scores(&self, shapes: &[[f32; 2]], thr: f32) -> (f64, f64, f64) {
        let n = self.len();
        let parts: Vec<(f64, f64, f64)> = (0..n.div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| {
                let (mut bpr, mut aat, mut fit) = (0.0, 0.0, 0.0);
                for i in c * CHUNK..((c + 1) * CHUNK).min(n) {
                    let mut best = 0f32;
                    let mut cnt = 0u32;
                    for &inv in &self.inv_strides {
                        let (bw, bh) = (self.w[i] * inv, self.h[i] * inv);
                        for s in shapes {
                            let x = ratio_wh(bw, bh, s[0], s[1]);
                            best = best.max(x);
                            cnt += (x > thr) as u32;
                        }
                    }
                    if best > thr {
                        bpr += 1.0;
                        fit += best as f64;
                    }
                    aat += cnt as f64;
                }
                (bpr, aat, fit)
            })
            .collect();
        let nf = n.max(1) as f64;
        let (b, a, f) = parts
            .iter()
            .fold((0.0, 0.0, 0.0), |s, p| (s.0 + p.0, s.1 + p.1, s.2 + p.2));
        (b / nf, a / nf, f / nf)
    }
}

/// Every peer's shape-only objective for one anchor set.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ShapeScores {
    /// Mean best centred IoU (darknet / mmdet k-means and DE; higher is better).
    pub mean_iou: f64,
    /// Zlocha focal objective `mean(-(1-m)^2 ln m)` (lower is better).
    pub focal: f64,
    /// Zlocha ce objective `mean(-ln m)` (lower is better).
    pub ce: f64,
    /// Boxes with best IoU < 0.5 (Zlocha "not matched").
    pub not_matched: usize,
    /// YOLOv5 best possible recall (share of boxes with best ratio metric > 1/anchor_t).
    pub bpr: f64,
    /// YOLOv5 anchors above threshold per box.
    pub aat: f64,
    /// YOLOv5 fitness `mean(best * [best > thr])` (higher is better).
    pub fitness: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// `fast_ln` against `f64::ln` over the IoU range and beyond.
    #[test]
    fn fast_ln_is_within_3e7_relative() {
        let mut worst = 0f64;
        let mut x = 1e-12f32;
        while x < 1e6 {
            let want = (x as f64).ln();
            let got = fast_ln(x) as f64;
            let err = (got - want).abs() / want.abs().max(1.0);
            worst = worst.max(err);
            assert!(err < 3e-7, "ln({x}) = {got}, want {want}");
            x *= 1.0007;
        }
        assert!(worst > 0.0);
        assert_eq!(fast_ln(1.0), 0.0);
    }

    /// Brute-force best match: every (level, shape) pair in order with the scalar metric
    /// expressions, first strict maximum wins.
    fn brute(p: &ShapeProblem, shapes: &[[f32; 2]], ratio: bool) -> Vec<Match> {
        (0..p.len())
            .map(|i| {
                let mut m = Match {
                    shape: 0,
                    level: 0,
                    value: -1.0,
                };
                for (l, &inv) in p.inv_strides.iter().enumerate() {
                    let (bw, bh) = (p.w[i] * inv, p.h[i] * inv);
                    for (k, s) in shapes.iter().enumerate() {
                        let v = if ratio {
                            let (rw, rh) = (bw * (1.0 / s[0]), bh * (1.0 / s[1]));
                            rw.min(s[0] * (1.0 / bw)).min(rh.min(s[1] * (1.0 / bh)))
                        } else {
                            iou_wh(bw, bh, s[0], s[1])
                        };
                        if v > m.value {
                            m = Match {
                                shape: k as u32,
                                level: l as u8,
                                value: v,
                            };
                        }
                    }
                }
                m
            })
            .collect()
    }

    /// `n` boxes and 9 shapes with sides spread log-uniformly (boxes 1..512, shapes 1..64).
    fn random_problem(rng: &mut ChaCha8Rng, n: usize) -> (Vec<f32>, Vec<f32>, Vec<[f32; 2]>) {
        let mut side = |hi: f32| 2f32.powf(rng.random_range(0.0..hi));
        let w: Vec<f32> = (0..n).map(|_| side(9.0)).collect();
        let h: Vec<f32> = (0..n).map(|_| side(9.0)).collect();
        let shapes = (0..9).map(|_| [side(6.0), side(6.0)]).collect();
        (w, h, shapes)
    }

    /// `sum_best_replacing` (one shape changed, from the per-box top two) equals a full
    /// `sum_best_seq` bit for bit, free and FPN, both metrics, with exact ties between shapes.
    #[test]
    fn replacing_one_shape_equals_full_evaluation() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for n in [5usize, CHUNK + 3, 2 * CHUNK + 101] {
            let (w, h, mut shapes) = random_problem(&mut rng, n);
            shapes.push(shapes[2]); // exact ties between shapes 2 and 9
            for strides in [None, Some(&[8u32, 16, 32][..])] {
                let p = ShapeProblem::new(w.clone(), h.clone(), strides).sorted_by_area();
                for ratio in [true, false] {
                    let f = |v: f32| if v > 0.25 { v as f64 } else { 0.0 };
                    let top = p.top2(&shapes, ratio);
                    for j in [0usize, 2, 9] {
                        for scale in [0.5f32, 0.97, 1.0, 1.6] {
                            let s = [shapes[j][0] * scale, shapes[j][1] / scale.sqrt()];
                            let mut c = shapes.clone();
                            c[j] = s;
                            let want = p.sum_best_seq(&c, ratio, f);
                            let got = p.sum_best_replacing(&top, j, s, f);
                            assert_eq!(
                                got.to_bits(),
                                want.to_bits(),
                                "n {n} ratio {ratio} j {j} scale {scale} fpn {}",
                                strides.is_some()
                            );
                        }
                    }
                }
            }
        }
    }

    /// `assign_sum` gives `assign`'s matches and `sum_best`'s sum bit for bit; `best_update`
    /// with new shapes after `best_into` equals `best_into` with all shapes (blocks of 16, 8
    /// and single boxes all covered by the sizes).
    #[test]
    fn assign_sum_and_best_update_equal_the_full_passes() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for n in [3usize, 29, CHUNK + 21, 2 * CHUNK + 7] {
            let (w, h, shapes) = random_problem(&mut rng, n);
            for strides in [None, Some(&[8u32, 16, 32][..])] {
                let p = ShapeProblem::new(w.clone(), h.clone(), strides);
                for ratio in [false, true] {
                    let f = |v: f32| v as f64;
                    let (m, s) = p.assign_sum(&shapes, ratio, f);
                    assert_eq!(m, p.assign(&shapes, ratio));
                    assert_eq!(s.to_bits(), p.sum_best(&shapes, ratio, f).to_bits());
                    let mut full = vec![0f32; n];
                    p.best_into(&shapes, ratio, &mut full, None);
                    let mut inc = vec![0f32; n];
                    p.best_into(&shapes[..4], ratio, &mut inc, None);
                    p.best_update(&shapes[4..7], ratio, &mut inc);
                    p.best_update(&shapes[7..], ratio, &mut inc);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&inc), bits(&full), "n {n} ratio {ratio}");
                }
            }
        }
    }

    /// The dense kernels give bit-identical best values, the same (level, shape) argmax and
    /// bit-identical chunked sums as the brute-force search, for both metrics, in the free and
    /// the FPN layout, for boxes spanning tiny to huge and several chunk sizes; the ratio
    /// expression equals `ratio_wh` to rounding.
    #[test]
    fn dense_kernels_equal_brute_force() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for n in [1usize, 7, CHUNK - 1, CHUNK + 3, 3 * CHUNK + 17] {
            let (w, h, mut shapes) = random_problem(&mut rng, n);
            shapes.push(shapes[3]); // an exact tie: the first one must win
            for strides in [None, Some(&[8u32, 16, 32, 64, 128][..])] {
                let unsorted = ShapeProblem::new(w.clone(), h.clone(), strides);
                for (p, ratio) in [
                    (&unsorted, false),
                    (&unsorted, true),
                    (&unsorted.sorted_by_area(), false),
                    (&unsorted.sorted_by_area(), true),
                ] {
                    let want = brute(p, &shapes, ratio);
                    let got = p.assign(&shapes, ratio);
                    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(
                            (a.shape, a.level, a.value.to_bits()),
                            (b.shape, b.level, b.value.to_bits()),
                            "box {i}, n {n}, ratio {ratio}, fpn {}",
                            strides.is_some()
                        );
                        if ratio {
                            let inv = p.inv_strides[b.level as usize];
                            let s = shapes[b.shape as usize];
                            let r = ratio_wh(p.w[i] * inv, p.h[i] * inv, s[0], s[1]);
                            assert!((r - b.value).abs() <= 1e-6 * r.max(1.0));
                        }
                    }
                    assert!(got.iter().all(|m| m.shape != 9), "tie went to the copy");
                    for thr in [0.0f32, 0.25] {
                        let f = |v: f32| if v > thr { v as f64 } else { 0.0 };
                        let mut want_sum = 0.0f64;
                        for ch in want.chunks(CHUNK) {
                            let mut lanes = [0f64; 8];
                            for (i, m) in ch.iter().enumerate() {
                                lanes[i % 8] += f(m.value);
                            }
                            want_sum += lanes.iter().sum::<f64>();
                        }
                        let a = p.sum_best(&shapes, ratio, f);
                        let b = p.sum_best_seq(&shapes, ratio, f);
                        assert_eq!(a.to_bits(), want_sum.to_bits(), "n {n} ratio {ratio}");
                        assert_eq!(b.to_bits(), want_sum.to_bits(), "n {n} ratio {ratio}");
                        assert!(a > 0.0 || n < 10, "n {n}: a sum of zero tests nothing");
                    }
                }
            }
        }
    }
}
