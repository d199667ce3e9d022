"""Builds small, seeded, randomly initialised detectors with the exact head shapes of
mmdetection's RetinaNet/FreeAnchor and ATSS, and exports them to ONNX with the detector spec
embedded in `metadata_props` (key `anchorkit.detector`). They are test fixtures for the
post-processing paths (anchors, DeltaXYWH decode, top-k, NMS) on real images.

    python tools/make_synthetic_heads.py [--out target/synthetic-heads] [--seed 0]

- `retina_synth.onnx`: tiny conv backbone + FPN (P3..P7, strides 8..128, P6 from C5 as
  `add_extra_convs='on_input'`), RetinaHead-shaped outputs `cls_p{3..7}` [N, 720, H, W]
  (A=9, C=80) and `reg_p{3..7}` [N, 36, H, W]; anchors octave_base_scale 4, scales_per_octave 3,
  ratios (0.5, 1, 2); DeltaXYWH stds (0.1, 0.1, 0.2, 0.2); NMS IoU 0.5
  (mmdet `retinanet_r50_fpn.py`).
- `atss_synth.onnx`: same backbone (P6 from P5, `on_output`), GroupNorm towers, outputs
  `cls_p*` [N, 80, H, W], `reg_p*` [N, 4, H, W] (times a per-level Scale), `ctr_p*` [N, 1, H, W];
  one anchor per location (octave_base_scale 8, ratio 1); NMS IoU 0.6
  (mmdet `atss_r50_fpn_1x_coco.py`).

Both take `input` [N, 3, H, W] with dynamic N/H/W, mmdet keep-ratio (1333, 800) resizing,
RGB mean/std normalisation and padding to 32. The cls output bias is calibrated (on a seeded
synthetic image) so that about `--target-pairs` (anchor, class) pairs per image score above 0.05,
so that score threshold, per-level top-k (nms_pre 1000) and NMS all have real work to do.
Weights are a few hundred kB. Files are written atomically; the seed is printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

COCO_CLASSES: tuple[str, ...] = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)
assert len(COCO_CLASSES) == 80

STRIDES = (8, 16, 32, 64, 128)
SCORE_THR = 0.05
METADATA_KEY = "anchorkit.detector"


class TinyFpnBackbone(nn.Module):
    """C3..C5 from stride-2 convs, FPN laterals + top-down (nearest), P6/P7 by stride-2 convs."""

    def __init__(self, ch: int, extra_on_input: bool) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, ch, 3, 2, 1), nn.ReLU()
        )  # stride 4
        self.c3 = nn.Sequential(nn.Conv2d(ch, ch, 3, 2, 1), nn.ReLU())
        self.c4 = nn.Sequential(nn.Conv2d(ch, ch, 3, 2, 1), nn.ReLU())
        self.c5 = nn.Sequential(nn.Conv2d(ch, ch, 3, 2, 1), nn.ReLU())
        self.lat = nn.ModuleList(nn.Conv2d(ch, ch, 1) for _ in range(3))
        self.p6 = nn.Conv2d(ch, ch, 3, 2, 1)
        self.p7 = nn.Conv2d(ch, ch, 3, 2, 1)
        self.extra_on_input = extra_on_input

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c3 = self.c3(self.stem(x))
        c4 = self.c4(c3)
        c5 = self.c5(c4)
        p5 = self.lat[2](c5)
        p4 = self.lat[1](c4) + F.interpolate(p5, size=c4.shape[-2:], mode="nearest")
        p3 = self.lat[0](c3) + F.interpolate(p4, size=c3.shape[-2:], mode="nearest")
        p6 = self.p6(c5 if self.extra_on_input else p5)
        p7 = self.p7(p6)
        return [p3, p4, p5, p6, p7]


class SynthHead(nn.Module):
    """Shared-weight head over the 5 levels: cls [N, A*C], reg [N, A*4], optional ctr [N, A]."""

    def __init__(
        self, ch: int, num_anchors: int, num_classes: int, centerness: bool
    ) -> None:
        super().__init__()
        self.cls_tower = nn.Sequential(
            nn.Conv2d(ch, ch, 3, 1, 1), nn.GroupNorm(4, ch), nn.ReLU()
        )
        self.reg_tower = nn.Sequential(
            nn.Conv2d(ch, ch, 3, 1, 1), nn.GroupNorm(4, ch), nn.ReLU()
        )
        self.cls_out = nn.Conv2d(ch, num_anchors * num_classes, 3, 1, 1)
        self.reg_out = nn.Conv2d(ch, num_anchors * 4, 3, 1, 1)
        self.ctr_out = nn.Conv2d(ch, num_anchors, 3, 1, 1) if centerness else None
        self.scales = nn.Parameter(torch.linspace(0.8, 1.2, len(STRIDES)))

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        cls, reg, ctr = [], [], []
        for i, f in enumerate(feats):
            ct, rt = self.cls_tower(f), self.reg_tower(f)
            cls.append(self.cls_out(ct))
            reg.append(self.reg_out(rt) * self.scales[i])
            if self.ctr_out is not None:
                ctr.append(self.ctr_out(rt))
        return tuple(cls + reg + ctr)


class SynthDetector(nn.Module):
    def __init__(
        self, ch: int, num_anchors: int, centerness: bool, extra_on_input: bool
    ) -> None:
        super().__init__()
        self.backbone = TinyFpnBackbone(ch, extra_on_input)
        self.head = SynthHead(ch, num_anchors, len(COCO_CLASSES), centerness)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.head(self.backbone(x))


def spec_for(kind: str) -> dict[str, Any]:
    """The anchorkit.detector/1 spec of a synthetic model (`kind` is `retina` or `atss`)."""
    atss = kind == "atss"
    levels: list[dict[str, Any]] = []
    for i, s in enumerate(STRIDES):
        lv: dict[str, Any] = {
            "stride": s,
            "cls": f"cls_p{i + 3}",
            "reg": f"reg_p{i + 3}",
        }
        if atss:
            lv["centerness"] = f"ctr_p{i + 3}"
        levels.append(lv)
    priors = (
        {
            "type": "anchors",
            "octave_base_scale": 8.0,
            "scales_per_octave": 1,
            "ratios": [1.0],
            "center_offset": 0.0,
        }
        if atss
        else {
            "type": "anchors",
            "octave_base_scale": 4.0,
            "scales_per_octave": 3,
            "ratios": [0.5, 1.0, 2.0],
            "center_offset": 0.0,
        }
    )
    return {
        "format": "anchorkit.detector/1",
        "name": f"{kind}-synthetic",
        "classes": list(COCO_CLASSES),
        "input": {
            "name": "input",
            "channel_order": "rgb",
            "mean": [123.675, 116.28, 103.53],
            "std": [58.395, 57.12, 57.375],
            "resize": {"rule": "keep_ratio", "scale": [1333, 800]},
            "pad": {"size_divisor": 32, "value": 0.0},
            "dynamic_hw": True,
            "exif_orientation": True,
        },
        "head": {
            "kind": kind,
            "layout": "nchw",
            "levels": levels,
            "priors": priors,
            "coder": {
                "type": "delta_xywh",
                "means": [0.0, 0.0, 0.0, 0.0],
                "stds": [0.1, 0.1, 0.2, 0.2],
                "wh_ratio_clip": 0.016,
                "clip_border": True,
            },
            "score": "sigmoid",
            "centerness": atss,
        },
        "postprocess": {
            "nms_pre": 1000,
            "score_thr": SCORE_THR,
            "iou_thr": 0.6 if atss else 0.5,
            "max_per_img": 100,
            "class_agnostic": False,
            "rule": "mmdet",
        },
        "provenance": {
            "note": "synthetic test fixture: random weights, NOT a trained detector",
            "generator": "tools/make_synthetic_heads.py",
        },
    }


def calibration_input(seed: int, h: int = 800, w: int = 1088) -> torch.Tensor:
    """A seeded, photo-like normalised image: smooth colour blobs plus fine noise."""
    g = torch.Generator().manual_seed(seed + 1)
    coarse = torch.rand(1, 3, h // 32, w // 32, generator=g) * 255
    img = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    img = (img + torch.randn(1, 3, h, w, generator=g) * 12).clamp(0, 255)
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    return (img - mean) / std


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    assert conv.bias is not None
    return conv.bias


def _spatial_std(outs: tuple[torch.Tensor, ...]) -> float:
    """Mean over levels and channels of the spatial std of the outputs (image 0)."""
    return float(torch.stack([o[0].flatten(1).std(dim=1).mean() for o in outs]).mean())


def build(
    kind: str, seed: int, ch: int, target_pairs: int
) -> tuple[SynthDetector, int]:
    """Seeded model with the cls bias shifted so ~`target_pairs` pairs exceed the threshold."""
    torch.manual_seed(seed)
    atss = kind == "atss"
    model = SynthDetector(
        ch, 1 if atss else 9, centerness=atss, extra_on_input=not atss
    ).eval()
    x = calibration_input(seed)
    n = len(STRIDES)
    with torch.no_grad():
        # Random init gives nearly constant outputs; rescale the output convs so that the
        # input-dependent part dominates (spatial std ~1.5 for cls/ctr logits, ~0.5 per
        # delta channel),
        # with a small per-class bias spread for class structure.
        head = model.head
        cls_bias, reg_bias = _bias(head.cls_out), _bias(head.reg_out)
        outs = model(x)
        head.cls_out.weight.mul_(1.5 / _spatial_std(outs[:n]))
        head.reg_out.weight.mul_(0.5 / _spatial_std(outs[n : 2 * n]))
        reg_bias.zero_()
        if head.ctr_out is not None:
            head.ctr_out.weight.mul_(1.5 / _spatial_std(outs[2 * n :]))
            ctr_mean = torch.cat([o.flatten() for o in model(x)[2 * n :]]).mean()
            _bias(head.ctr_out).sub_(ctr_mean - 1.0)  # centerness mostly 0.3..0.95
        cls_bias.normal_(0.0, 0.3)
        logits = torch.cat([o.flatten() for o in model(x)[:n]])
        want = math.log(SCORE_THR / (1 - SCORE_THR))  # logit of the threshold
        kth = torch.topk(logits, target_pairs).values[-1].item()
        cls_bias.add_(want - kth)
        passing = int(
            sum((torch.sigmoid(o) > SCORE_THR).sum().item() for o in model(x)[:n])
        )
    return model, passing


def export(model: SynthDetector, kind: str, path: Path) -> None:
    """ONNX export (opset 17, dynamic N/H/W) with the spec in metadata_props; atomic write."""
    atss = kind == "atss"
    names = [f"cls_p{i + 3}" for i in range(5)] + [f"reg_p{i + 3}" for i in range(5)]
    if atss:
        names += [f"ctr_p{i + 3}" for i in range(5)]
    axes = {n: {0: "batch", 2: f"h{n[-1]}", 3: f"w{n[-1]}"} for n in names}
    axes["input"] = {0: "batch", 2: "height", 3: "width"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as td, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # GroupNorm's traced shape checks warn; the export is checked against torch below.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        raw = Path(td) / "raw.onnx"
        torch.onnx.export(  # the TorchScript exporter: no onnxscript needed
            model,
            (torch.zeros(1, 3, 320, 448),),
            str(raw),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=names,
            dynamic_axes=axes,
        )
        m = onnx.load(str(raw))
        prop = m.metadata_props.add()
        prop.key = METADATA_KEY
        prop.value = json.dumps(spec_for(kind))
        onnx.checker.check_model(m)
        tmp = Path(td) / "final.onnx"
        onnx.save(m, str(tmp))
        os.replace(tmp, path)


def check_export(model: SynthDetector, path: Path, seed: int) -> float:
    """Max |torch - onnxruntime| over all outputs on a non-export size (dynamic H/W works)."""
    import onnxruntime as ort

    x = calibration_input(seed + 7, 416, 608)
    with torch.no_grad():
        ref = [o.numpy() for o in model(x)]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})
    return float(max(np.abs(a - b).max() for a, b in zip(ref, got, strict=True)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("target/synthetic-heads"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument(
        "--target-pairs",
        type=int,
        default=6000,
        help="pairs above 0.05 on the calibration image",
    )
    ap.add_argument("--kinds", default="retina,atss")
    ap.add_argument(
        "--if-stale",
        action="store_true",
        help="do nothing when --out already holds models made by this exact script with these arguments",
    )
    args = ap.parse_args(argv)
    stamp_path = args.out / "stamp.json"
    stamp = {
        "script_sha256": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        "seed": args.seed,
        "channels": args.channels,
        "target_pairs": args.target_pairs,
        "kinds": args.kinds,
        "torch": torch.__version__,
    }
    if args.if_stale and stamp_path.is_file():
        try:
            fresh = json.loads(stamp_path.read_text()) == stamp
        except ValueError:
            fresh = False
        if fresh and all(
            (args.out / f"{k}_synth.onnx").is_file() for k in args.kinds.split(",")
        ):
            print(f"{args.out}: up to date (seed {args.seed})", file=sys.stderr)
            return 0
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    print(f"seed {args.seed}", file=sys.stderr)
    for kind in args.kinds.split(","):
        if kind not in ("retina", "atss"):
            print(f"error: unknown kind {kind!r} (retina, atss)", file=sys.stderr)
            return 2
        model, passing = build(kind, args.seed, args.channels, args.target_pairs)
        path = args.out / f"{kind}_synth.onnx"
        export(model, kind, path)
        err = check_export(model, path, args.seed)
        if err > 1e-3:
            print(
                f"error: {path}: onnxruntime differs from torch by {err}",
                file=sys.stderr,
            )
            return 1
        print(
            f"{path}: {path.stat().st_size} bytes, {passing} pairs > {SCORE_THR} on the calibration "
            f"image, max |torch - ort| {err:.2e}",
            file=sys.stderr,
        )
    tmp = stamp_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stamp))
    os.replace(tmp, stamp_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
