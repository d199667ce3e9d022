"""Priors: mmdet `AnchorGenerator` anchors (`anchor_generator.py`), explicit anchors and points.

All arithmetic is float32 with the same operation order as mmdet
(`mmdet/core/anchor/anchor_generator.py`: `gen_single_level_base_anchors`, `_meshgrid`,
`single_level_grid_priors`; `mmdet/core/anchor/point_generator.py` `MlvlPointGenerator`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .spec import PriorSpec

F32 = np.float32


def base_anchors(
    stride: int,
    octave_base_scale: float,
    scales_per_octave: int,
    ratios: tuple[float, ...],
    center_offset: float = 0.0,
) -> npt.NDArray[np.float32]:
    """Base anchors `[A, 4]` (x1, y1, x2, y2) of one level, centred at `center_offset * stride`.

    Octave scales `2**(i/spo)` in float64 times `octave_base_scale`, cast to f32;
    `h_ratios = sqrt(ratios)`, `w_ratios = 1 / h_ratios` (f32); `ws = (base * w_ratios) * scales`
    with ratios as the outer loop (`scale_major=True`); corners `c -/+ 0.5 * ws`. No rounding, no -1.
    """
    octave = np.array(
        [2 ** (i / scales_per_octave) for i in range(scales_per_octave)],
        dtype=np.float64,
    )
    scales = (octave * octave_base_scale).astype(F32)
    r = np.asarray(ratios, dtype=F32)
    h_ratios = np.sqrt(r)
    w_ratios = F32(1) / h_ratios
    ws = ((F32(stride) * w_ratios[:, None]) * scales[None, :]).reshape(-1).astype(F32)
    hs = ((F32(stride) * h_ratios[:, None]) * scales[None, :]).reshape(-1).astype(F32)
    return _centred(ws, hs, stride, center_offset)


def _centred(
    ws: npt.NDArray[np.float32],
    hs: npt.NDArray[np.float32],
    stride: int,
    center_offset: float,
) -> npt.NDArray[np.float32]:
    c = F32(center_offset * stride)
    half_w, half_h = F32(0.5) * ws, F32(0.5) * hs
    return np.stack([c - half_w, c - half_h, c + half_w, c + half_h], axis=-1).astype(
        F32
    )


def explicit_base_anchors(
    shapes: tuple[tuple[float, float], ...], stride: int, center_offset: float = 0.0
) -> npt.NDArray[np.float32]:
    """Base anchors `[A, 4]` from explicit `(w, h)` shapes in input pixels (cast to f32)."""
    ws = np.array([s[0] for s in shapes], dtype=F32)
    hs = np.array([s[1] for s in shapes], dtype=F32)
    return _centred(ws, hs, stride, center_offset)


def grid_anchors(
    base: npt.NDArray[np.float32], h: int, w: int, stride: int
) -> npt.NDArray[np.float32]:
    """All anchors `[H*W*A, 4]` of a level: row `(y*W + x)*A + a` = `base[a] + (x, y, x, y)*stride`."""
    sx = np.arange(w, dtype=F32) * F32(stride)
    sy = np.arange(h, dtype=F32) * F32(stride)
    xx = np.tile(sx, h)
    yy = np.repeat(sy, w)
    shifts = np.stack([xx, yy, xx, yy], axis=-1)
    return (base[None, :, :] + shifts[:, None, :]).reshape(-1, 4)


def grid_points(h: int, w: int, stride: int, offset: float) -> npt.NDArray[np.float32]:
    """Points `[H*W, 2]` at `((x + offset) * stride, (y + offset) * stride)`, row-major `y*W + x`."""
    sx = (np.arange(w, dtype=F32) + F32(offset)) * F32(stride)
    sy = (np.arange(h, dtype=F32) + F32(offset)) * F32(stride)
    return np.stack([np.tile(sx, h), np.repeat(sy, w)], axis=-1)


def level_priors(
    priors: PriorSpec, level: int, stride: int, h: int, w: int
) -> npt.NDArray[np.float32]:
    """Priors of one level: anchors `[H*W*A, 4]` or points `[H*W, 2]`."""
    if priors.type == "anchors":
        base = base_anchors(
            stride,
            priors.octave_base_scale,
            priors.scales_per_octave,
            priors.ratios,
            priors.center_offset,
        )
        return grid_anchors(base, h, w, stride)
    if priors.type == "explicit_anchors":
        base = explicit_base_anchors(
            priors.per_level[level], stride, priors.center_offset
        )
        return grid_anchors(base, h, w, stride)
    return grid_points(h, w, stride, priors.offset)
