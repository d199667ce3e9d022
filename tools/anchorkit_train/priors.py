"""Prior (anchor / point) providers, one per spec `PriorSpec` variant (see `src/spec.rs`).

- `AnchorPriors`: mmdet `AnchorGenerator` (`anchor_generator.py`) -> `{"type": "anchors"}`.
- `ExplicitAnchorPriors`: fixed per-level (w, h) shapes (e.g. from `anchorkit anchors
  --write-spec`) placed like mmdet `AnchorGenerator` (centre offset 0) -> `{"type":
  "explicit_anchors"}`.
- `LearnedAnchorPriors`: per-level (w, h) shapes as trainable log-space parameters (Zhong et
  al., "Anchor Box Optimization for Object Detection", WACV 2020) -> `{"type":
  "explicit_anchors"}`.
- `PointPriors`: FCOS / Pseudo-IoU points -> `{"type": "points"}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .anchors import base_anchors, explicit_base_anchors, grid_anchors, grid_points


class AnchorPriors(nn.Module):
    """Fixed mmdet anchors: base size = stride, `octave_base_scale`, `scales_per_octave`,
    `ratios` (h/w), centre offset 0."""

    def __init__(
        self,
        strides: tuple[int, ...],
        octave_base_scale: float,
        scales_per_octave: int,
        ratios: list[float],
    ) -> None:
        super().__init__()
        self.strides = strides
        self.octave_base_scale = octave_base_scale
        self.scales_per_octave = scales_per_octave
        self.ratios = list(ratios)
        self.num_anchors = len(ratios) * scales_per_octave

    def base(self, level: int) -> Tensor:
        """Base anchors `[A, 4]` of level `level`."""
        return base_anchors(
            self.strides[level],
            self.octave_base_scale,
            self.scales_per_octave,
            self.ratios,
        )

    def level(self, level: int, height: int, width: int) -> Tensor:
        """All anchors `[H*W*A, 4]` of a level."""
        return grid_anchors(self.base(level), self.strides[level], height, width)

    def spec(self) -> dict[str, Any]:
        """`PriorSpec::Anchors` JSON."""
        return {
            "type": "anchors",
            "octave_base_scale": float(self.octave_base_scale),
            "scales_per_octave": int(self.scales_per_octave),
            "ratios": [float(r) for r in self.ratios],
            "center_offset": 0.0,
        }


class ExplicitAnchorPriors(nn.Module):
    """Fixed explicit anchors: `wh[l, a] = (w, h)` in input pixels (float32, a persistent,
    non-trainable buffer), base anchors `[-w/2, -h/2, w/2, h/2]` at every location
    `(x*stride, y*stride)` (centre offset 0, mmdet `AnchorGenerator` with explicit base sizes).
    """

    wh: Tensor

    def __init__(
        self,
        strides: tuple[int, ...],
        per_level: Sequence[Sequence[tuple[float, float]]],
    ) -> None:
        super().__init__()
        if len(per_level) != len(strides):
            raise ValueError(
                f"{len(per_level)} anchor levels for {len(strides)} strides {strides}"
            )
        counts = {len(lvl) for lvl in per_level}
        if len(counts) != 1 or 0 in counts:
            raise ValueError(f"anchor levels must have the same A > 0, found {counts}")
        self.strides = strides
        self.num_anchors = counts.pop()
        wh = torch.tensor(
            [[list(s) for s in lvl] for lvl in per_level], dtype=torch.float32
        )
        self.register_buffer("wh", wh)

    def base(self, level: int) -> Tensor:
        """Base anchors `[A, 4]` of level `level`."""
        return explicit_base_anchors(self.wh[level])

    def level(self, level: int, height: int, width: int) -> Tensor:
        """All anchors `[H*W*A, 4]` of a level."""
        return grid_anchors(self.base(level), self.strides[level], height, width)

    def spec(self) -> dict[str, Any]:
        """`PriorSpec::ExplicitAnchors` JSON (the float32 shapes, centre offset 0)."""
        return {
            "type": "explicit_anchors",
            "per_level": [
                [[float(w), float(h)] for w, h in lvl] for lvl in self.wh.tolist()
            ],
            "center_offset": 0.0,
        }


class LearnedAnchorPriors(nn.Module):
    """Trainable anchor shapes: `log_wh` `[L, A, 2]` (natural log of w, h in pixels).

    Initialised from an `AnchorPriors` or `ExplicitAnchorPriors` set; gradients reach `log_wh` through the
    localization loss (targets `ln(gw / aw)` depend on the anchor) and, during warm-up,
    through the online-clustering term `clustering_loss`.
    """

    def __init__(self, init: AnchorPriors | ExplicitAnchorPriors) -> None:
        super().__init__()
        self.strides = init.strides
        self.num_anchors = init.num_anchors
        wh = []
        for lvl in range(len(init.strides)):
            b = init.base(lvl)
            wh.append(torch.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], dim=-1))
        self.log_wh = nn.Parameter(torch.stack(wh).log())

    def base(self, level: int) -> Tensor:
        """Base anchors `[A, 4]` (differentiable in `log_wh`)."""
        return explicit_base_anchors(self.log_wh[level].exp())

    def level(self, level: int, height: int, width: int) -> Tensor:
        """All anchors `[H*W*A, 4]` of a level (differentiable)."""
        return grid_anchors(self.base(level), self.strides[level], height, width)

    def clustering_loss(self, gt_wh: Tensor, temperature: float, lam: float) -> Tensor:
        """Online-clustering warm-up term `lam / (2N) * sum_ij delta_ij * T_ij` (Zhong et al.,
        Sec. 3.2), `T_ij = (ln w_i - ln aw_j)^2 + (ln h_i - ln ah_j)^2` over all gts i in the
        batch and all L*A anchor shapes j, soft assignment `delta = softmax_j(-T_ij / temperature)`.
        `gt_wh` is `[N, 2]` in pixels; returns a scalar (0 if N = 0)."""
        if gt_wh.shape[0] == 0:
            return self.log_wh.sum() * 0.0
        a = self.log_wh.reshape(-1, 2)
        t = ((gt_wh.log()[:, None, :] - a[None, :, :]) ** 2).sum(-1)  # [N, L*A]
        delta = torch.softmax(-t / temperature, dim=1)
        return lam / (2 * gt_wh.shape[0]) * (delta * t).sum()

    def spec(self) -> dict[str, Any]:
        """`PriorSpec::ExplicitAnchors` JSON with the current per-level (w, h)."""
        wh = self.log_wh.detach().exp()
        return {
            "type": "explicit_anchors",
            "per_level": [
                [[float(w), float(h)] for w, h in lvl.tolist()] for lvl in wh
            ],
            "center_offset": 0.0,
        }


class PointPriors(nn.Module):
    """One point per location at `((x + offset)*stride, (y + offset)*stride)`."""

    def __init__(self, strides: tuple[int, ...], offset: float = 0.5) -> None:
        super().__init__()
        self.strides = strides
        self.offset = offset
        self.num_anchors = 1

    def level(self, level: int, height: int, width: int) -> Tensor:
        """Points `[H*W, 2]`."""
        return grid_points(self.strides[level], height, width, self.offset)

    def spec(self) -> dict[str, Any]:
        """`PriorSpec::Points` JSON."""
        return {"type": "points", "offset": float(self.offset)}
