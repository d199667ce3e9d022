"""Compact from-scratch detector: residual backbone (C3..C5, strides 8/16/32), FPN (P3..P5)
and dense heads (RetinaNet-style anchor head, ATSS head, FCOS-style point head).

Head numerics follow mmdet `retina_head.py`, `atss_head.py` and `fcos_head.py` and the
configs `retinanet_r50_fpn.py` / `atss_r50_fpn_1x_coco.py`: cls bias initialised to prior
0.01, ATSS `Scale` per level on the regression, centerness logits on the regression tower.
Outputs are raw per-level NCHW tensors: cls `[N, A*C, H, W]`, reg `[N, A*4, H, W]`,
ctr `[N, A, H, W]`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

STRIDES = (8, 16, 32)


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv + BatchNorm + ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs, identity shortcut), He et al. 2016."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.c1 = conv_bn(ch, ch)
        self.c2 = nn.Sequential(
            nn.Conv2d(ch, ch, 3, 1, 1, bias=False), nn.BatchNorm2d(ch)
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.c2(self.c1(x)))


class Backbone(nn.Module):
    """Compact residual backbone; returns C3, C4, C5 (strides 8, 16, 32).

    Widths `(w0, w1, w2, w3, w4)` for strides 2, 4, 8, 16, 32; `blocks` basic blocks per
    stage from stride 8 on.
    """

    def __init__(
        self, widths: tuple[int, ...] = (16, 24, 40, 80, 112), blocks: int = 1
    ) -> None:
        super().__init__()
        w0, w1, w2, w3, w4 = widths
        self.stem = nn.Sequential(conv_bn(3, w0, 2), conv_bn(w0, w1, 2))
        self.s3 = nn.Sequential(
            conv_bn(w1, w2, 2), *[BasicBlock(w2) for _ in range(blocks)]
        )
        self.s4 = nn.Sequential(
            conv_bn(w2, w3, 2), *[BasicBlock(w3) for _ in range(blocks)]
        )
        self.s5 = nn.Sequential(
            conv_bn(w3, w4, 2), *[BasicBlock(w4) for _ in range(blocks)]
        )
        self.out_channels = (w2, w3, w4)

    def forward(self, x: Tensor) -> list[Tensor]:
        c3 = self.s3(self.stem(x))
        c4 = self.s4(c3)
        c5 = self.s5(c4)
        return [c3, c4, c5]


class FPN(nn.Module):
    """FPN (Lin et al. 2017): 1x1 laterals, nearest top-down, 3x3 outputs; P3..P5."""

    def __init__(self, in_channels: tuple[int, ...], out: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, out, 1) for c in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(out, out, 3, 1, 1) for _ in in_channels)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        lat = [m(f) for m, f in zip(self.lateral, feats, strict=True)]
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + F.interpolate(
                lat[i], size=lat[i - 1].shape[-2:], mode="nearest"
            )
        return [m(x) for m, x in zip(self.output, lat, strict=True)]


class Scale(nn.Module):
    """Learnable scalar multiplier (mmcv `Scale`, init 1.0)."""

    def __init__(self, init: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(init, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


@dataclass(frozen=True)
class HeadConfig:
    """Dense head shape.

    `num_anchors` A (1 for ATSS / points), `centerness` adds a ctr branch on the reg tower,
    `scales` adds a per-level `Scale` on reg, `reg_relu` applies ReLU after the scale (FCOS
    `norm_on_bbox`: distances in stride units), `shiftless_bn_wh` adds the learned-anchor
    batch norm without shift on the dw/dh channels (Zhong et al.).
    """

    num_classes: int
    num_anchors: int
    feat: int = 64
    stacked: int = 2
    centerness: bool = False
    scales: bool = False
    reg_relu: bool = False
    shiftless_bn_wh: bool = False
    bn_gamma_init: float = 0.01
    gn_groups: int = 8


class ShiftlessBN(nn.Module):
    """Batch norm without shift (no beta) on the dw, dh channels of an `[N, A*4, H, W]`
    regression map (Zhong et al., "Anchor Box Optimization for Object Detection", WACV 2020,
    Sec. 3.3): `dw' = gamma * (dw - mu_B) / sqrt(var_B + eps)`, so the mean log-size must be
    carried by the (learned) anchors. dx, dy pass through unchanged.

    One `BatchNorm2d(2*A)` per FPN level (`num_levels`), because the head is shared over levels
    but each level has its own anchors: in train mode every call normalises one level with that
    level's batch statistics (over all N*H*W locations of the batch, background included), so
    the running statistics used in eval mode (and frozen into the exported graph) must be that
    level's too. A single BatchNorm shared by the levels would update one running mean/var with
    all levels in turn, and at test time shift each level's dw/dh by
    `gamma * (mu_level - mu_running) / sigma`.

    `gamma_init` (default 0.01): the regression conv starts with weights of std 0.01 (mmdet
    `normal_init`) so that the initial deltas are about 0 (boxes = anchors); a unit gamma would
    blow those tiny outputs up to unit-variance random log-size offsets (boxes = anchors times
    `e^N(0,1)`): on BCCD at init that makes the L1 box loss 1.81 instead of 0.77 and the
    box-loss gradient on the shared backbone/FPN 42x the classification one instead of 6x.
    With 0.01 the head starts like the one without the batch norm (0.75, 4x)."""

    def __init__(
        self, num_anchors: int, num_levels: int, gamma_init: float = 0.01
    ) -> None:
        super().__init__()
        self.a = num_anchors
        self.bns = nn.ModuleList(
            nn.BatchNorm2d(2 * num_anchors, affine=True) for _ in range(num_levels)
        )
        for bn in self.bns:
            assert isinstance(bn, nn.BatchNorm2d)
            nn.init.zeros_(bn.bias)
            bn.bias.requires_grad_(False)
            nn.init.constant_(bn.weight, gamma_init)

    def forward(self, x: Tensor, level: int) -> Tensor:
        """`x` `[N, A*4, H, W]` of FPN level index `level` -> same shape, dw/dh normalised."""
        n, _, h, w = x.shape
        r = x.reshape(n, self.a, 4, h, w)
        xy = r[:, :, :2]
        wh = self.bns[level](r[:, :, 2:].reshape(n, 2 * self.a, h, w)).reshape(
            n, self.a, 2, h, w
        )
        return torch.cat([xy, wh], dim=2).reshape(n, 4 * self.a, h, w)


class DenseHead(nn.Module):
    """Shared-over-levels head with GroupNorm towers (mmdet `ATSSHead`-style towers)."""

    def __init__(self, cfg: HeadConfig, in_ch: int, num_levels: int) -> None:
        super().__init__()
        self.cfg = cfg

        def tower() -> nn.Sequential:
            layers: list[nn.Module] = []
            for i in range(cfg.stacked):
                layers += [
                    nn.Conv2d(
                        in_ch if i == 0 else cfg.feat, cfg.feat, 3, 1, 1, bias=False
                    ),
                    nn.GroupNorm(cfg.gn_groups, cfg.feat),
                    nn.ReLU(inplace=True),
                ]
            return nn.Sequential(*layers)

        self.cls_tower = tower()
        self.reg_tower = tower()
        a, c = cfg.num_anchors, cfg.num_classes
        self.cls_out = nn.Conv2d(cfg.feat, a * c, 3, 1, 1)
        self.reg_out = nn.Conv2d(cfg.feat, a * 4, 3, 1, 1)
        self.ctr_out = nn.Conv2d(cfg.feat, a, 3, 1, 1) if cfg.centerness else None
        self.scales = (
            nn.ModuleList(Scale() for _ in range(num_levels)) if cfg.scales else None
        )
        self.wh_bn = (
            ShiftlessBN(a, num_levels, cfg.bn_gamma_init)
            if cfg.shiftless_bn_wh
            else None
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        assert self.cls_out.bias is not None
        nn.init.constant_(self.cls_out.bias, -math.log((1 - 0.01) / 0.01))

    def forward(
        self, feats: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        cls, reg, ctr = [], [], []
        for lvl, f in enumerate(feats):
            ct = self.cls_tower(f)
            rt = self.reg_tower(f)
            cls.append(self.cls_out(ct))
            r = self.reg_out(rt)
            if self.scales is not None:
                r = self.scales[lvl](r)
            if self.cfg.reg_relu:
                r = F.relu(r)
            if self.wh_bn is not None:
                r = self.wh_bn(r, lvl)
            reg.append(r)
            if self.ctr_out is not None:
                ctr.append(self.ctr_out(rt))
        return cls, reg, ctr


class Detector(nn.Module):
    """Backbone + FPN + dense head. `forward(x)` returns `(cls, reg, ctr)`, lists over P3..P5.

    Input: `[N, 3, H, W]` normalized RGB, H and W multiples of 32.
    """

    def __init__(
        self,
        head: HeadConfig,
        fpn_ch: int = 64,
        widths: tuple[int, ...] = (16, 32, 48, 96, 160),
    ) -> None:
        super().__init__()
        self.backbone = Backbone(widths)
        self.fpn = FPN(self.backbone.out_channels, fpn_ch)
        self.head = DenseHead(head, fpn_ch, len(STRIDES))
        self.strides = STRIDES

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        return self.head(self.fpn(self.backbone(x)))


def count_params(m: nn.Module) -> int:
    """Number of parameters (trainable and frozen)."""
    return sum(p.numel() for p in m.parameters())
