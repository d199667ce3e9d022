"""Train a compact detector on a VOC dataset (BCCD by default) on CPU.

Example (from the repo root):
    nice -n 10 tools/.venv/bin/python -m tools.anchorkit_train.train \
        --method atss --epochs 16 --out tools/runs/atss

Writes `<out>/last.pt` (checkpoint after every epoch, atomic), `<out>/log.jsonl` (one JSON
line per epoch: losses, lr, wall time, test AP/AP50 when evaluated, learned anchors), and
`<out>/args.json`. `--anchors FILE` (retina, freeanchor and their *_learned variants) replaces
the default RetinaNet anchors by the per-level shapes of an `anchorkit anchors --write-spec
FILE` fragment (fixed explicit anchors, centre offset 0; the init of learned anchors), e.g.
    anchorkit anchors --dataset ../shared/data/bccd/BCCD --split trainval \
        --resize keep-ratio --input-size 416x312 --strides 8,16,32 --layout fpn --k 9 \
        --method kmeans --write-spec models/anchors/bccd_kmeans9_fpn.json
The file name, its sha256 and its content go into the checkpoint (`anchors`) and, through
`export.py`, into the spec's provenance. `--resume` continues from `last.pt` with the same schedule and data
order (per-epoch RNG seeded from `(seed, epoch)`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .anchor_fragment import AnchorFragment, AnchorFragmentError, read_fragment
from .data import BCCD_CLASSES, AugConfig, TrainSet, load_voc
from .evaluate import coco_eval, detect_all
from .losses import compute_loss
from .methods import (
    EXPLICIT_ANCHOR_METHODS,
    METHODS,
    REGRESS_RANGES,
    ExportWrapper,
    ModelSize,
    TrainModel,
    num_anchors,
)
from .model import STRIDES
from .priors import LearnedAnchorPriors

log = logging.getLogger("anchorkit_train")


def torch_infer(model: TrainModel) -> Any:
    """Callable `[1,3,H,W]` numpy -> outputs by ONNX name, using the torch model in eval mode."""
    wrap = ExportWrapper(model).eval()
    cls_n, reg_n, ctr_n = model.output_names()
    names = cls_n + reg_n + ctr_n

    def infer(x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            outs = wrap(torch.from_numpy(x))
        return {n: o.numpy() for n, o in zip(names, outs, strict=True)}

    return infer


def lr_at(it: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up from 0.001*base over `warmup` iterations, then cosine to 0.01*base."""
    if it < warmup:
        return base * (0.001 + (1 - 0.001) * it / warmup)
    p = (it - warmup) / max(1, total - warmup)
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * p)))


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temp file then rename."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def param_groups(model: TrainModel, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: every parameter with `weight_decay`, except the learned anchor
    shapes (`priors.log_wh`, natural log of w, h in pixels), which get none.

    Decoupled weight decay (Loshchilov & Hutter, AdamW) multiplies a parameter by
    `1 - lr*wd` each step, i.e. pulls `ln w` towards 0 (a 1-pixel anchor): over the 12-epoch
    schedule (lr 2e-3 cosine, wd 0.05) that is a factor of about 0.957 on `ln w`, a 24-px
    anchor pulled to about 21 px regardless of the data. Zhong et al. (WACV 2020) update the
    anchors by the detection (and warm-up clustering) loss only."""
    anchors = [p for n, p in model.named_parameters() if n == "priors.log_wh"]
    ids = {id(p) for p in anchors}
    rest = [p for p in model.parameters() if id(p) not in ids]
    groups: list[dict[str, Any]] = [{"params": rest, "weight_decay": weight_decay}]
    if anchors:
        groups.append({"params": anchors, "weight_decay": 0.0})
    return groups


def train_step(
    model: TrainModel,
    opt: torch.optim.Optimizer,
    images: torch.Tensor,
    boxes: list[torch.Tensor],
    labels: list[torch.Tensor],
    cluster: tuple[float, float] | None = None,
    clip: float = 35.0,
) -> dict[str, float]:
    """One optimisation step; returns the loss components (floats). `cluster=(T, lambda)` adds
    the learned-anchor online-clustering warm-up term."""
    model.train()
    outs = model(images)
    losses = compute_loss(
        model.loss_kind,
        model.priors,
        outs,
        boxes,
        labels,
        model.num_classes,
        REGRESS_RANGES,
    )
    if cluster is not None and isinstance(model.priors, LearnedAnchorPriors):
        gt = torch.cat(boxes) if boxes else torch.zeros((0, 4))
        wh = torch.stack([gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]], 1)
        losses["loss_cluster"] = model.priors.clustering_loss(
            wh, cluster[0], cluster[1]
        )
    total = sum(losses.values())
    assert isinstance(total, torch.Tensor)
    opt.zero_grad(set_to_none=True)
    total.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    out = {k: float(v.detach()) for k, v in losses.items()}
    out["loss"] = float(total.detach())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--method", choices=METHODS, required=True)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/bccd/BCCD"))
    ap.add_argument("--train-split", default="trainval")
    ap.add_argument("--val-split", default="test")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--warmup-iters", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--scale",
        type=int,
        nargs=2,
        default=[416, 312],
        help="keep_ratio (long, short)",
    )
    ap.add_argument(
        "--canvas", type=int, nargs=2, default=[256, 192], help="train crop (w, h)"
    )
    ap.add_argument("--jitter", type=float, nargs=2, default=[0.4, 1.25])
    ap.add_argument("--eval-every", type=int, default=2)
    ap.add_argument(
        "--cluster-epochs", type=int, default=2, help="learned anchors: warm-up epochs"
    )
    ap.add_argument("--cluster-t", type=float, default=0.25)
    ap.add_argument("--cluster-lambda", type=float, default=1.0)
    ap.add_argument(
        "--max-iters",
        type=int,
        default=0,
        help="stop after this many iterations (smoke)",
    )
    ap.add_argument(
        "--no-shiftless-bn",
        action="store_true",
        help="learned anchors: ablate the batch norm without shift on dw, dh",
    )
    ap.add_argument(
        "--bn-gamma-init",
        type=float,
        default=0.01,
        help="learned anchors: initial scale (gamma) of the shiftless batch norm "
        "(0.01: the head starts with deltas about 0, like the head without it)",
    )
    ap.add_argument(
        "--anchors",
        type=Path,
        help="spec fragment of `anchorkit anchors --write-spec` with the anchor shapes "
        f"(methods {', '.join(EXPLICIT_ANCHOR_METHODS)}; strides {list(STRIDES)}, A = 9)",
    )
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    frag: AnchorFragment | None = None
    if a.anchors is not None:
        if a.method not in EXPLICIT_ANCHOR_METHODS:
            ap.error(
                f"--anchors {a.anchors}: method {a.method} has no anchor shapes to "
                f"replace (use one of {', '.join(EXPLICIT_ANCHOR_METHODS)})"
            )
        try:
            frag = read_fragment(a.anchors, STRIDES, num_anchors(a.method))
        except AnchorFragmentError as e:
            ap.error(str(e))
        if frag.center_offset != 0.0:
            log.info(
                "%s: centre offset %g in the file is not used: the trainer places "
                "anchors at (x*stride, y*stride) (offset 0, mmdet AnchorGenerator)",
                a.anchors,
                frag.center_offset,
            )
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "args.json").write_text(
        json.dumps({k: str(v) for k, v in vars(a).items()}, indent=1)
    )
    classes = BCCD_CLASSES
    train_recs = load_voc(a.data, a.train_split, classes)
    val_recs = load_voc(a.data, a.val_split, classes)
    aug = AugConfig(
        scale=(a.scale[0], a.scale[1]),
        jitter_lo=a.jitter[0],
        jitter_hi=a.jitter[1],
        canvas=(a.canvas[0], a.canvas[1]),
    )
    ds = TrainSet(train_recs, aug)
    model = TrainModel(
        a.method,
        len(classes),
        ModelSize(),
        shiftless_bn=not a.no_shiftless_bn,
        anchors_wh=frag.per_level if frag is not None else None,
        bn_gamma_init=a.bn_gamma_init,
    )
    anchors_rec = frag.record() if frag is not None else None
    opt = torch.optim.AdamW(param_groups(model, a.weight_decay), lr=a.lr)
    iters_per_epoch = len(ds.records) // a.batch
    total_iters = iters_per_epoch * a.epochs
    start_epoch, it = 0, 0
    ckpt = a.out / "last.pt"
    if a.resume and ckpt.is_file():
        st = torch.load(ckpt, weights_only=False)
        old = st.get("anchors")
        if (old or {}).get("fragment") != (anchors_rec or {}).get("fragment"):
            raise SystemExit(
                f"error: {ckpt} was trained with anchors "
                f"{old['file'] if old else 'default'}, resumed with "
                f"{a.anchors if a.anchors else 'default'} (content differs)"
            )
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        start_epoch, it = st["epoch"] + 1, st["iter"]
        torch.set_rng_state(st["torch_rng"])
        log.info("resumed from %s at epoch %d", ckpt, start_epoch)
    log.info(
        "method=%s params=%d seed=%d iters/epoch=%d",
        a.method,
        sum(p.numel() for p in model.parameters()),
        a.seed,
        iters_per_epoch,
    )
    t_start = time.time()
    for epoch in range(start_epoch, a.epochs):
        rng = np.random.default_rng([a.seed, epoch])
        order = rng.permutation(len(ds.records))
        sums: dict[str, float] = {}
        t0 = time.time()
        n = 0
        for b in range(iters_per_epoch):
            for g in opt.param_groups:
                g["lr"] = lr_at(it, total_iters, a.lr, a.warmup_iters)
            imgs, boxes, labels = ds.batch(
                list(order[b * a.batch : (b + 1) * a.batch]), rng
            )
            cl = (a.cluster_t, a.cluster_lambda) if epoch < a.cluster_epochs else None
            lv = train_step(model, opt, imgs, boxes, labels, cl)
            for k, v in lv.items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
            it += 1
            if a.max_iters and it >= a.max_iters:
                break
        rec: dict[str, Any] = {
            "epoch": epoch,
            "iter": it,
            "lr": opt.param_groups[0]["lr"],
            "train_s": round(time.time() - t0, 1),
        }
        rec.update({k: round(v / max(1, n), 5) for k, v in sums.items()})
        if isinstance(model.priors, LearnedAnchorPriors):
            rec["anchors_wh"] = model.priors.spec()["per_level"]
        if anchors_rec is not None and epoch == start_epoch:
            rec["anchors_file"] = anchors_rec
        last = epoch == a.epochs - 1 or bool(a.max_iters and it >= a.max_iters)
        if a.eval_every and ((epoch + 1) % a.eval_every == 0 or last):
            te = time.time()
            spec = model.spec(classes, a.method, (a.scale[0], a.scale[1]), None)
            m = coco_eval(
                val_recs,
                detect_all(spec, torch_infer(model), val_recs),
                classes,
            )
            rec.update(
                {
                    "val_AP": round(m["AP"], 4),
                    "val_AP50": round(m["AP50"], 4),
                    "val_AP50_per_class": {
                        k: round(v, 4) for k, v in m["per_class_AP50"].items()
                    },
                    "eval_s": round(time.time() - te, 1),
                }
            )
        rec["wall_s"] = round(time.time() - t_start, 1)
        log.info("%s", json.dumps(rec))
        with open(a.out / "log.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        atomic_save(
            {
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "epoch": epoch,
                "iter": it,
                "torch_rng": torch.get_rng_state(),
                "method": a.method,
                "seed": a.seed,
                "scale": list(a.scale),
                "shiftless_bn": not a.no_shiftless_bn,
                "anchors": anchors_rec,
            },
            ckpt,
        )
        if a.max_iters and it >= a.max_iters:
            break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
