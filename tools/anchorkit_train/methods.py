"""Method presets: head shape, priors, coder, post-processing and the anchorkit spec
(`src/spec.rs`, format `anchorkit.detector/1`) of each trainable detector."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from .data import MEAN_RGB, STD_RGB
from .losses import ATSS_STDS, FREEANCHOR_STDS, RETINA_STDS
from .model import STRIDES, Detector, HeadConfig
from .priors import (
    AnchorPriors,
    ExplicitAnchorPriors,
    LearnedAnchorPriors,
    PointPriors,
)

METHODS = (
    "atss",
    "freeanchor",
    "retina",
    "retina_learned",
    "freeanchor_learned",
    "piou",
    "fcos",
)
#: FCOS regress ranges for our three levels (max side distance in input pixels).
REGRESS_RANGES = [(-1.0, 64.0), (64.0, 128.0), (128.0, 1e8)]
#: Methods whose anchors `--anchors FILE` can replace (fixed, or the init of learned anchors).
EXPLICIT_ANCHOR_METHODS = (
    "retina",
    "freeanchor",
    "retina_learned",
    "freeanchor_learned",
)


def num_anchors(method: str) -> int:
    """Anchors (priors) per location A of a method's head."""
    return 9 if method in EXPLICIT_ANCHOR_METHODS else 1


@dataclass(frozen=True)
class ModelSize:
    """Backbone widths (strides 2..32), FPN/head channels, tower depth."""

    widths: tuple[int, ...] = (16, 24, 40, 80, 112)
    feat: int = 40
    stacked: int = 2


class TrainModel(nn.Module):
    """Detector plus its priors (learned anchor shapes live in the state dict).

    `loss_kind` is the loss used by `losses.compute_loss`; `stds` the DeltaXYWH stds (None for
    point heads). `shiftless_bn` (learned-anchor methods only) adds the batch norm without
    shift on the predicted dw, dh (Zhong et al.); False is the ablation without it.
    `anchors_wh` (per-level `(w, h)` lists, A = 9 each; `EXPLICIT_ANCHOR_METHODS` only)
    replaces the default RetinaNet anchors by fixed explicit anchors, or initialises the
    learned ones."""

    def __init__(
        self,
        method: str,
        num_classes: int,
        size: ModelSize = ModelSize(),
        shiftless_bn: bool = True,
        anchors_wh: Sequence[Sequence[tuple[float, float]]] | None = None,
        bn_gamma_init: float = 0.01,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
        self.method = method
        self.num_classes = num_classes
        retina_anchors: AnchorPriors | ExplicitAnchorPriors
        if anchors_wh is None:
            retina_anchors = AnchorPriors(STRIDES, 3.0, 3, [0.5, 1.0, 2.0])
        elif method not in EXPLICIT_ANCHOR_METHODS:
            raise ValueError(
                f"method {method!r} takes no explicit anchors "
                f"(only {', '.join(EXPLICIT_ANCHOR_METHODS)})"
            )
        else:
            retina_anchors = ExplicitAnchorPriors(STRIDES, anchors_wh)
            if retina_anchors.num_anchors != num_anchors(method):
                raise ValueError(
                    f"{retina_anchors.num_anchors} anchors per level, the {method} head "
                    f"has A = {num_anchors(method)}"
                )
        self.priors: (
            AnchorPriors | ExplicitAnchorPriors | LearnedAnchorPriors | PointPriors
        )
        self.stds: tuple[float, ...] | None
        if method == "atss":
            head = HeadConfig(
                num_classes,
                1,
                centerness=True,
                scales=True,
                feat=size.feat,
                stacked=size.stacked,
            )
            self.priors = AnchorPriors(STRIDES, 4.0, 1, [1.0])
            self.loss_kind, self.stds, self.iou_thr = "atss", ATSS_STDS, 0.6
        elif method in ("freeanchor", "freeanchor_learned", "retina", "retina_learned"):
            learned = method.endswith("learned")
            head = HeadConfig(
                num_classes,
                9,
                shiftless_bn_wh=learned and shiftless_bn,
                bn_gamma_init=bn_gamma_init,
                feat=size.feat,
                stacked=size.stacked,
            )
            self.priors = (
                LearnedAnchorPriors(retina_anchors) if learned else retina_anchors
            )
            kind = method.removesuffix("_learned")
            stds = FREEANCHOR_STDS if kind == "freeanchor" else RETINA_STDS
            self.loss_kind, self.stds, self.iou_thr = kind, stds, 0.5
        else:
            head = HeadConfig(
                num_classes,
                1,
                centerness=True,
                scales=True,
                reg_relu=True,
                feat=size.feat,
                stacked=size.stacked,
            )
            self.priors = PointPriors(STRIDES, 0.5)
            self.loss_kind, self.stds, self.iou_thr = method, None, 0.5
        self.detector = Detector(head, fpn_ch=size.feat, widths=size.widths)

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        return self.detector(x)

    def output_names(self) -> tuple[list[str], list[str], list[str]]:
        """ONNX output names per level: `cls_p3..`, `reg_p3..`, `ctr_p3..` (if centerness)."""
        lv = [f"p{i + 3}" for i in range(len(STRIDES))]
        has_ctr = self.detector.head.cfg.centerness
        return (
            [f"cls_{p}" for p in lv],
            [f"reg_{p}" for p in lv],
            [f"ctr_{p}" for p in lv] if has_ctr else [],
        )

    def spec(
        self,
        classes: tuple[str, ...],
        name: str,
        scale: tuple[int, int],
        provenance: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """The `anchorkit.detector/1` spec JSON (serde names of `src/spec.rs`)."""
        cls_n, reg_n, ctr_n = self.output_names()
        levels: list[dict[str, Any]] = []
        for i, s in enumerate(STRIDES):
            lvl: dict[str, Any] = {"stride": s, "cls": cls_n[i], "reg": reg_n[i]}
            if ctr_n:
                lvl["centerness"] = ctr_n[i]
            levels.append(lvl)
        if self.stds is not None:
            coder: dict[str, Any] = {
                "type": "delta_xywh",
                "means": [0.0, 0.0, 0.0, 0.0],
                "stds": list(self.stds),
                "wh_ratio_clip": 16.0 / 1000.0,
                "clip_border": True,
            }
        else:
            coder = {"type": "distance", "scale_by_stride": True, "clip_border": True}
        kind = {
            "atss": "atss",
            "freeanchor": "retina",
            "retina": "retina",
            "piou": "fcos",
            "fcos": "fcos",
        }[self.loss_kind]
        spec: dict[str, Any] = {
            "format": "anchorkit.detector/1",
            "name": name,
            "classes": list(classes),
            "input": {
                "name": "input",
                "channel_order": "rgb",
                "mean": list(MEAN_RGB),
                "std": list(STD_RGB),
                "resize": {
                    "rule": "keep_ratio",
                    "scale": [int(scale[0]), int(scale[1])],
                },
                "pad": {"size_divisor": 32, "value": 0.0},
                "dynamic_hw": True,
                "exif_orientation": True,
            },
            "head": {
                "kind": kind,
                "layout": "nchw",
                "levels": levels,
                "priors": self.priors.spec(),
                "coder": coder,
                "score": "sigmoid",
                "centerness": bool(ctr_n),
            },
            "postprocess": {
                "nms_pre": 1000,
                "score_thr": 0.05,
                "iou_thr": self.iou_thr,
                "max_per_img": 100,
                # mmdet 3.x test_cfg of these heads: drop boxes of zero width or height
                # (BaseDenseHead._bbox_post_process with min_bbox_size >= 0)
                "min_bbox_size": 0.0,
                "class_agnostic": False,
                "rule": "mmdet",
            },
        }
        if provenance is not None:
            spec["provenance"] = provenance
        return spec


class ExportWrapper(nn.Module):
    """`forward(x)` returns the flat tuple cls levels, reg levels, ctr levels (ONNX order)."""

    def __init__(self, model: TrainModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        cls, reg, ctr = self.model(x)
        return tuple(cls) + tuple(reg) + tuple(ctr)
