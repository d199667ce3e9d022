//! Class-aware non-maximum suppression, exactly as `mmcv.ops.batched_nms` computes it.
//!
//! Sources: mmcv `v1.7.2:mmcv/ops/nms.py` (`batched_nms`, `nms`) and
//! `mmcv/ops/csrc/pytorch/cpu/nms.cpp` (`nms_cpu`; the same in mmcv v2.1.0).
//!
//! mmcv makes NMS class-aware with the *offset trick*: every box is shifted by
//! `label * (max_coordinate + 1)` in f32, so boxes of different classes never overlap, and IoUs
//! are computed on the shifted boxes (the f32 rounding of the shift perturbs IoUs near the
//! threshold by ~1e-7, which is why the fast version below computes on the same shifted boxes).
//! A box is suppressed when `inter / (area_i + area_j - inter) > iou_thr` (strict) against an
//! earlier *kept* box; boxes are visited by score descending.
//!
//! Tie-break: torch's `sort(descending=True)` is not stable; here equal scores are visited in
//! ascending input index (a stable sort), and that choice is used consistently everywhere.
//!
//! Class-agnostic NMS: pass all-zero labels (the offset is then exactly 0).

/// mmcv `batched_nms` splits per class (still on the offset boxes) from this many boxes on.
pub const MMCV_SPLIT_THR: usize = 10_000;

/// Offset boxes (`box + label * (max_coord + 1)`, f32) and their areas, as mmcv computes them.
/// Returns `(boxes_for_nms, areas)`.
fn offset_boxes(boxes: &[[f32; 4]], labels: &[usize]) -> (Vec<[f32; 4]>, Vec<f32>) {
    let max_coord = boxes
        .iter()
        .flat_map(|b| b.iter().copied())
        .fold(f32::NEG_INFINITY, f32::max);
    let step = max_coord + 1.0;
    boxes
        .iter()
        .zip(labels)
        .map(|(b, &l)| offset_box(b, l, step))
        .unzip()
}

/// One box shifted by `label * step` (`step = max_coord + 1`, f32) and its area, as mmcv.
#[inline(always)]
fn offset_box(b: &[f32; 4], label: usize, step: f32) -> ([f32; 4], f32) {
    let off = label as f32 * step;
    let o = [b[0] + off, b[1] + off, b[2] + off, b[3] + off];
    (o, (o[2] - o[0]) * (o[3] - o[1]))
}

/// mmcv CPU kernel's overlap test between a kept box `i` and a later box `j`.
#[inline(always)]
fn suppresses(bi: &[f32; 4], ai: f32, bj: &[f32; 4], aj: f32, iou_thr: f32) -> bool {
    let w = (bi[2].min(bj[2]) - bi[0].max(bj[0])).max(0.0);
    let h = (bi[3].min(bj[3]) - bi[1].max(bj[1])).max(0.0);
    let inter = w * h;
    let ovr = inter / (ai + aj - inter);
    ovr > iou_thr
}

/// Score-descending order with ties by ascending index (a stable sort).
fn score_order(scores: &[f32], idx: &mut [usize]) {
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
}

/// Plain greedy NMS of mmcv's CPU kernel over `idx` (already in visiting order).
fn greedy(boxes: &[[f32; 4]], areas: &[f32], idx: &[usize], iou_thr: f32) -> Vec<usize> {
    let mut select = vec![true; idx.len()];
    let mut keep = Vec::new();
    for a in 0..idx.len() {
        if !select[a] {
            continue;
        }
        let i = idx[a];
        keep.push(i);
        for b in a + 1..idx.len() {
            if select[b] && suppresses(&boxes[i], areas[i], &boxes[idx[b]], areas[idx[b]], iou_thr)
            {
                select[b] = false;
            }
        }
    }
    keep
}

/// Class-aware NMS exactly as `mmcv.ops.batched_nms(boxes, scores, labels,
/// dict(iou_threshold=iou_thr))` with mmcv's CPU `nms` kernel.
///
/// * `boxes`: `[N][x1, y1, x2, y2]` (any units; no +1), `scores`: `[N]`, `labels`: `[N]`.
/// * Returns the kept indices into the inputs, by score descending (ties: ascending index).
/// * Below [`MMCV_SPLIT_THR`] boxes all boxes go through one NMS on the offset boxes; from
///   it on, NMS runs per class on the offset boxes and the kept set is re-sorted by score, as
///   mmcv does.
///
/// Complexity O(N^2) worst case: this is the reference; use [`batched_nms_fast`] in pipelines.
///
/// Panics if the three slices differ in length.
pub fn batched_nms_mmcv(
    boxes: &[[f32; 4]],
    scores: &[f32],
    labels: &[usize],
    iou_thr: f32,
) -> Vec<usize> {
    assert!(boxes.len() == scores.len() && boxes.len() == labels.len());
    if boxes.is_empty() {
        return Vec::new();
    }
    let (ob, areas) = offset_boxes(boxes, labels);
    let mut idx: Vec<usize> = (0..boxes.len()).collect();
    if boxes.len() < MMCV_SPLIT_THR {
        score_order(scores, &mut idx);
        return greedy(&ob, &areas, &idx, iou_thr);
    }
    let n_cls = labels.iter().copied().max().unwrap_or(0) + 1;
    let mut keep = Vec::new();
    for c in 0..n_cls {
        let mut ci: Vec<usize> = idx.iter().copied().filter(|&i| labels[i] == c).collect();
        score_order(scores, &mut ci);
        keep.extend(greedy(&ob, &areas, &ci, iou_thr));
    }
    score_order(scores, &mut keep);
    keep
}

/// Fast class-aware NMS with the same result as [`batched_nms_mmcv`], truncated to `max_keep`.
///
/// Boxes are visited by score descending (ties: ascending index); each is compared only with
/// the already kept boxes *of its own class*, on the same f32 offset boxes and with the same
/// IoU expression as mmcv, and the loop stops once `max_keep` boxes are kept (mmdet's
/// `max_per_img`). The order is produced lazily (partial selection of chunks), so with an
/// early exit most candidates are never sorted.
///
/// Equivalence with mmcv: a box is kept by mmcv's greedy kernel iff no earlier kept box
/// suppresses it, which is what this loop tests. With all coordinates >= 0, offset boxes of
/// different classes never intersect (the class ranges `[l*(M+1), l*(M+1)+M]` are disjoint,
/// and f32 rounding is monotone), so skipping other classes changes nothing. If some
/// coordinate is negative (no border clip), cross-class suppression is possible in mmcv and
/// this function falls back to [`batched_nms_mmcv`] (below the split threshold).
///
/// Returns kept indices by score descending, at most `max_keep`. Panics if the slices differ
/// in length.
pub fn batched_nms_fast(
    boxes: &[[f32; 4]],
    scores: &[f32],
    labels: &[usize],
    iou_thr: f32,
    max_keep: usize,
) -> Vec<usize> {
    assert!(boxes.len() == scores.len() && boxes.len() == labels.len());
    let n = boxes.len();
    if n == 0 || max_keep == 0 {
        return Vec::new();
    }
    // one pass for both extremes (mmcv's offset uses the max; the fallback test the min)
    let (mut min_coord, mut max_coord) = (f32::INFINITY, f32::NEG_INFINITY);
    for b in boxes {
        for &v in b {
            min_coord = min_coord.min(v);
            max_coord = max_coord.max(v);
        }
    }
    if min_coord < 0.0 && n < MMCV_SPLIT_THR {
        let mut k = batched_nms_mmcv(boxes, scores, labels, iou_thr);
        k.truncate(max_keep);
        return k;
    }
    // Offset boxes are computed lazily, only for visited boxes (`offset_box`, the expression
    // `offset_boxes` uses, so the values are bit-identical to mmcv's).
    let step = max_coord + 1.0;
    let n_cls = labels.iter().copied().max().unwrap_or(0) + 1;
    // kept (box, area) per class
    let mut kept_by_class: Vec<Vec<([f32; 4], f32)>> = vec![Vec::new(); n_cls];
    let mut keep = Vec::with_capacity(max_keep.min(n));

    // Sort keys: descending score, then ascending index, as one u64 (total order, so an
    // unstable selection/sort gives the same order as a stable sort by score).
    let mut keys: Vec<u64> = scores
        .iter()
        .enumerate()
        .map(|(i, &s)| ((desc_key(s) as u64) << 32) | i as u64)
        .collect();
    let mut start = 0usize;
    let mut chunk = max_keep.saturating_mul(4).clamp(256, 4096);
    while start < n {
        let end = (start + chunk).min(n);
        let rest = &mut keys[start..];
        if end < n {
            rest.select_nth_unstable(end - start - 1);
        }
        rest[..end - start].sort_unstable();
        for &k in &keys[start..end] {
            let i = (k & 0xffff_ffff) as usize;
            let l = labels[i];
            let (b, a) = offset_box(&boxes[i], l, step);
            let kc = &mut kept_by_class[l];
            if kc
                .iter()
                .any(|(kb, ka)| suppresses(kb, *ka, &b, a, iou_thr))
            {
                continue;
            }
            kc.push((b, a));
            keep.push(i);
            if keep.len() == max_keep {
                return keep;
            }
        }
        start = end;
        chunk = chunk.saturating_mul(4);
    }
    keep
}

/// Map an f32 to a u32 whose ascending order is the f32's *descending* total order.
#[inline]
pub(crate) fn desc_key(s: f32) -> u32 {
    let b = s.to_bits();
    let asc = if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    };
    !asc
}

/// Brute-force reference used by tests: O(N^2) per kept box, written directly from the
/// definition (visit by score desc / index asc; keep unless a kept box of the same offset
/// space has IoU > thr), sharing no code with the two implementations above except the
/// offset computation formula.
#[cfg(test)]
pub(crate) fn brute_force_nms(
    boxes: &[[f32; 4]],
    scores: &[f32],
    labels: &[usize],
    iou_thr: f32,
) -> Vec<usize> {
    let n = boxes.len();
    if n == 0 {
        return vec![];
    }
    let mut m = f32::NEG_INFINITY;
    for b in boxes {
        for &v in b {
            if v > m {
                m = v;
            }
        }
    }
    let shifted: Vec<[f32; 4]> = boxes
        .iter()
        .zip(labels)
        .map(|(b, &l)| {
            let o = l as f32 * (m + 1.0);
            [b[0] + o, b[1] + o, b[2] + o, b[3] + o]
        })
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    use std::cmp::Ordering;
    order.sort_by(|&a, &b| match scores[b].partial_cmp(&scores[a]) {
        Some(Ordering::Equal) | None => a.cmp(&b),
        Some(o) => o,
    });
    let mut kept: Vec<usize> = Vec::new();
    for &j in &order {
        let bj = shifted[j];
        let ok = kept.iter().all(|&i| {
            let bi = shifted[i];
            let ai = (bi[2] - bi[0]) * (bi[3] - bi[1]);
            let aj = (bj[2] - bj[0]) * (bj[3] - bj[1]);
            let iw = f32::max(0.0, f32::min(bi[2], bj[2]) - f32::max(bi[0], bj[0]));
            let ih = f32::max(0.0, f32::min(bi[3], bj[3]) - f32::max(bi[1], bj[1]));
            let inter = iw * ih;
            let suppressed = inter / (ai + aj - inter) > iou_thr;
            !suppressed
        });
        if ok {
            kept.push(j);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Clustered random boxes: `objects` objects, jittered copies, labels mostly shared per
    /// cluster; optional ties in scores and duplicate boxes.
    pub(crate) fn clustered(
        rng: &mut ChaCha8Rng,
        n: usize,
        objects: usize,
        classes: usize,
        w: f32,
        h: f32,
    ) -> (Vec<[f32; 4]>, Vec<f32>, Vec<usize>) {
        let objs: Vec<([f32; 4], usize)> = (0..objects)
            .map(|_| {
                let bw = rng.random_range(4.0..w / 3.0);
                let bh = rng.random_range(4.0..h / 3.0);
                let x = rng.random_range(0.0..w - bw);
                let y = rng.random_range(0.0..h - bh);
                ([x, y, x + bw, y + bh], rng.random_range(0..classes))
            })
            .collect();
        let mut boxes = Vec::with_capacity(n);
        let mut scores = Vec::with_capacity(n);
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let (b, l) = objs[rng.random_range(0..objects)];
            let j = |r: &mut ChaCha8Rng, s: f32| r.random_range(-0.15..0.15) * s;
            let bw = b[2] - b[0];
            let bh = b[3] - b[1];
            let x1 = (b[0] + j(rng, bw)).clamp(0.0, w);
            let y1 = (b[1] + j(rng, bh)).clamp(0.0, h);
            let x2 = (b[2] + j(rng, bw)).clamp(0.0, w);
            let y2 = (b[3] + j(rng, bh)).clamp(0.0, h);
            boxes.push([x1, y1, x2.max(x1), y2.max(y1)]);
            // quantized scores create exact ties
            scores.push((rng.random_range(0.05f32..1.0) * 64.0).round() / 64.0);
            labels.push(if rng.random_bool(0.9) {
                l
            } else {
                rng.random_range(0..classes)
            });
        }
        (boxes, scores, labels)
    }

    #[test]
    fn desc_key_orders_descending() {
        let v = [
            -3.0f32,
            -0.0,
            0.0,
            1e-30,
            0.5,
            1.0,
            f32::INFINITY,
            -f32::INFINITY,
        ];
        for &a in &v {
            for &b in &v {
                assert_eq!(desc_key(a).cmp(&desc_key(b)), b.total_cmp(&a), "{a} {b}");
            }
        }
    }

    #[test]
    fn hand_example() {
        // two overlapping boxes of class 0 (IoU 0.6), one of class 1 on top of them
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 10.0, 6.0],
            [0.0, 0.0, 10.0, 10.0],
            [20.0, 20.0, 30.0, 30.0],
        ];
        let scores = [0.9, 0.8, 0.7, 0.6];
        let labels = [0, 0, 1, 0];
        assert_eq!(
            batched_nms_mmcv(&boxes, &scores, &labels, 0.5),
            vec![0, 2, 3]
        );
        // IoU exactly 0.6 is not > 0.6: kept
        assert_eq!(
            batched_nms_mmcv(&boxes, &scores, &labels, 0.6),
            vec![0, 1, 2, 3]
        );
        assert_eq!(
            batched_nms_fast(&boxes, &scores, &labels, 0.5, 100),
            vec![0, 2, 3]
        );
        assert_eq!(
            batched_nms_fast(&boxes, &scores, &labels, 0.5, 2),
            vec![0, 2]
        );
        // class-agnostic via zero labels
        assert_eq!(batched_nms_mmcv(&boxes, &scores, &[0; 4], 0.5), vec![0, 3]);
        // ties: equal scores are visited by ascending index
        let b2 = [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]];
        assert_eq!(batched_nms_mmcv(&b2, &[0.5, 0.5], &[0, 0], 0.5), vec![0]);
        assert_eq!(
            batched_nms_fast(&b2, &[0.5, 0.5], &[0, 0], 0.5, 10),
            vec![0]
        );
    }

    #[test]
    fn mmcv_and_fast_match_brute_force_on_random_cases() {
        let seed = 20261122u64;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut total_kept = 0usize;
        for case in 0..300 {
            let n = rng.random_range(0..1500);
            let objects = rng.random_range(1..60);
            let classes = rng.random_range(1..81);
            let thr = [0.3f32, 0.5, 0.6, 0.7][case % 4];
            let (boxes, scores, labels) = if case % 3 == 0 {
                // uniform random boxes
                let mut b = Vec::new();
                for _ in 0..n {
                    let x = rng.random_range(0.0f32..1300.0);
                    let y = rng.random_range(0.0f32..780.0);
                    let w = rng.random_range(0.0f32..200.0);
                    let h = rng.random_range(0.0f32..200.0);
                    b.push([x, y, x + w, y + h]);
                }
                let s = (0..n).map(|_| rng.random_range(0.0f32..1.0)).collect();
                let l = (0..n).map(|_| rng.random_range(0..classes)).collect();
                (b, s, l)
            } else {
                clustered(&mut rng, n, objects, classes, 1333.0, 800.0)
            };
            let bf = brute_force_nms(&boxes, &scores, &labels, thr);
            let mm = batched_nms_mmcv(&boxes, &scores, &labels, thr);
            assert_eq!(mm, bf, "seed {seed} case {case}: mmcv vs brute force");
            let fast = batched_nms_fast(&boxes, &scores, &labels, thr, usize::MAX);
            assert_eq!(fast, bf, "seed {seed} case {case}: fast vs brute force");
            let cap = rng.random_range(1..200);
            let fast_k = batched_nms_fast(&boxes, &scores, &labels, thr, cap);
            assert_eq!(
                fast_k,
                bf[..bf.len().min(cap)],
                "seed {seed} case {case} cap {cap}"
            );
            total_kept += bf.len();
        }
        assert!(total_kept > 1000, "test cases too easy: {total_kept}");
    }

    #[test]
    fn negative_coordinates_fall_back_to_exact_mmcv() {
        // With negative coordinates the offset trick can make classes interact; fast must
        // still equal mmcv.
        let seed = 7u64;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for case in 0..50 {
            let (mut boxes, scores, labels) = clustered(&mut rng, 400, 10, 3, 200.0, 200.0);
            for b in &mut boxes {
                for v in b.iter_mut() {
                    *v -= 150.0;
                }
            }
            let mm = batched_nms_mmcv(&boxes, &scores, &labels, 0.5);
            assert_eq!(
                mm,
                brute_force_nms(&boxes, &scores, &labels, 0.5),
                "case {case}"
            );
            assert_eq!(batched_nms_fast(&boxes, &scores, &labels, 0.5, 1000), mm);
        }
    }

    #[test]
    fn split_path_above_10k_matches() {
        let seed = 99u64;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (boxes, scores, labels) = clustered(&mut rng, 12_000, 150, 80, 1333.0, 800.0);
        let mm = batched_nms_mmcv(&boxes, &scores, &labels, 0.5);
        assert_eq!(mm, brute_force_nms(&boxes, &scores, &labels, 0.5));
        assert_eq!(
            batched_nms_fast(&boxes, &scores, &labels, 0.5, usize::MAX),
            mm
        );
        assert_eq!(
            batched_nms_fast(&boxes, &scores, &labels, 0.5, 100),
            mm[..100.min(mm.len())]
        );
    }
}
