"""Learned anchors (Zhong et al., WACV 2020): the shiftless batch norm behaves the same in train
and eval mode on every FPN level, the exported ONNX equals the torch model in eval mode on real
BCCD images, and the anchor shapes are updated by the loss only (no weight decay)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from tools.anchorkit_train.data import (
    BCCD_CLASSES,
    AugConfig,
    TrainSet,
    load_voc,
)
from tools.anchorkit_train.export import export_onnx, parity
from tools.anchorkit_train.methods import ModelSize, TrainModel
from tools.anchorkit_train.model import ShiftlessBN
from tools.anchorkit_train.priors import LearnedAnchorPriors
from tools.anchorkit_train.train import param_groups, train_step
from tools.reference.spec import METADATA_KEY

SMALL = ModelSize(widths=(8, 16, 16, 32, 32), feat=16, stacked=1)


def wh_channels(reg: torch.Tensor) -> torch.Tensor:
    """dw, dh channels `[N, A, 2, H, W]` of a `[N, A*4, H, W]` regression map."""
    n, c, h, w = reg.shape
    return reg.reshape(n, c // 4, 4, h, w)[:, :, 2:]


def test_shiftless_bn_eval_equals_train_on_every_level() -> None:
    # The head is shared over levels; each level's dw/dh have their own statistics (here:
    # different offsets and spreads per level). After one train-mode pass with momentum 1 the
    # running statistics are the batch statistics, so eval mode must reproduce train mode on
    # every level. A single BatchNorm shared by the levels keeps only the last level's
    # statistics and fails on P3 and P4 by about |mu_l - mu_P5| / sigma.
    torch.manual_seed(0)
    bn = ShiftlessBN(num_anchors=9, num_levels=3)
    for m in bn.bns:
        assert isinstance(m, torch.nn.BatchNorm2d)
        m.momentum = 1.0
    xs = [
        torch.randn(4, 36, 24, 32) * s + o
        for s, o in ((0.3, -0.5), (0.6, 0.2), (1.2, 0.9))
    ]
    bn.train()
    train_out = [bn(x, lvl) for lvl, x in enumerate(xs)]
    bn.eval()
    with torch.no_grad():
        eval_out = [bn(x, lvl) for lvl, x in enumerate(xs)]
    for lvl in range(3):
        a, b = wh_channels(train_out[lvl].detach()), wh_channels(eval_out[lvl])
        # running_var is unbiased (n - 1), the train-mode normalisation biased: n = 3072
        assert float((a - b).abs().max()) < 2e-3, lvl
        # train mode: zero mean per channel over the batch (no shift), unit variance
        assert float(a.mean(dim=(0, 3, 4)).abs().max()) < 1e-5
        # dx, dy pass through
        n, c, h, w = xs[lvl].shape
        xy_in = xs[lvl].reshape(n, c // 4, 4, h, w)[:, :, :2]
        xy_out = eval_out[lvl].reshape(n, c // 4, 4, h, w)[:, :, :2]
        assert torch.equal(xy_in, xy_out)
    means = [m.running_mean for m in bn.bns if isinstance(m, torch.nn.BatchNorm2d)]
    assert float((means[0] - means[2]).abs().min()) > 1.0


def test_learned_anchor_onnx_equals_torch_eval_on_bccd(
    bccd: Path,
    tmp_path: Path,
    bccd_test_inputs: Callable[[dict[str, Any], int], list[np.ndarray]],
) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    recs = load_voc(bccd, "trainval", BCCD_CLASSES)[:4]
    ds = TrainSet(recs, AugConfig(canvas=(160, 128)))
    model = TrainModel("retina_learned", 3, SMALL)
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-2)
    rng = np.random.default_rng(0)
    for _ in range(3):  # non-trivial weights, anchors and per-level running statistics
        imgs, boxes, labels = ds.batch([0, 1, 2, 3], rng)
        train_step(model, opt, imgs, boxes, labels, cluster=(0.25, 1.0))
    model.eval()
    head_bn = model.detector.head.wh_bn
    assert head_bn is not None
    running = [
        m.running_mean.clone()
        for m in head_bn.bns
        if isinstance(m, torch.nn.BatchNorm2d)
    ]
    assert len(running) == 3
    assert all(float(r.abs().max()) > 1e-4 for r in running)
    assert float((running[0] - running[1]).abs().max()) > 1e-5

    spec = model.spec(BCCD_CLASSES, "t", (416, 312), {"note": "test"})
    path = tmp_path / "learned.onnx"
    export_onnx(model, path, spec)
    inputs = bccd_test_inputs(spec, 2)
    assert all(x.shape[2:] == (320, 416) for x in inputs)
    inputs.append(np.ascontiguousarray(inputs[0][:, :, :192, :288]))  # another H, W
    assert parity(model, path, inputs) <= 1e-4

    m = onnx.load(str(path))
    # one BatchNormalization per level, each with that level's running statistics
    bn_nodes = [n for n in m.graph.node if n.op_type == "BatchNormalization"]
    assert len(bn_nodes) == 3
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    got_means = sorted(tuple(inits[n.input[3]].round(6).tolist()) for n in bn_nodes)
    want_means = sorted(tuple(r.numpy().round(6).tolist()) for r in running)
    assert got_means == want_means
    # the spec carries the learned shapes, exactly the float32 values the torch model uses
    got = json.loads(next(p.value for p in m.metadata_props if p.key == METADATA_KEY))
    assert isinstance(model.priors, LearnedAnchorPriors)
    wh = model.priors.log_wh.detach().exp()
    spec_wh = torch.tensor(got["head"]["priors"]["per_level"], dtype=torch.float32)
    assert torch.equal(spec_wh, wh)
    init = torch.tensor([24.0, 24.0])  # the P3 1:1 default anchor moved
    assert not torch.equal(wh[0, 3], init)


def test_anchor_shapes_get_no_weight_decay() -> None:
    model = TrainModel("retina_learned", 3, SMALL)
    groups = param_groups(model, 0.05)
    assert isinstance(model.priors, LearnedAnchorPriors)
    log_wh = model.priors.log_wh
    by_decay = {g["weight_decay"]: g["params"] for g in groups}
    assert any(p is log_wh for p in by_decay[0.0])
    assert not any(p is log_wh for p in by_decay[0.05])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    # zero gradients: AdamW's update is the decoupled decay alone
    opt = torch.optim.AdamW(groups, lr=0.1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    before = log_wh.detach().clone()
    conv = model.detector.head.reg_out.weight
    conv_before = conv.detach().clone()
    opt.step()
    assert torch.equal(log_wh.detach(), before)
    assert torch.allclose(conv.detach(), conv_before * (1 - 0.1 * 0.05))
    # methods without learned anchors: a single group with decay
    assert len(param_groups(TrainModel("retina", 3, SMALL), 0.05)) == 1


def test_anchor_shapes_learn_through_dw_dh_only() -> None:
    from tools.anchorkit_train.anchors import bbox2delta
    from tools.anchorkit_train.losses import anchor_delta_targets

    log_wh = torch.tensor([[20.0, 30.0]]).log().requires_grad_(True)
    wh = log_wh.exp()
    anchors = torch.cat([torch.tensor([[50.0, 50.0]]) - wh / 2, 50.0 + wh / 2], 1)
    gts = torch.tensor([[45.0, 40.0, 75.0, 70.0]])  # centre (60, 55), 30 x 30
    t = anchor_delta_targets(anchors, gts, (1.0, 1.0, 1.0, 1.0))
    assert torch.allclose(t, bbox2delta(anchors, gts, (1.0, 1.0, 1.0, 1.0)))
    assert torch.allclose(
        t.detach(), torch.tensor([[10 / 20, 5 / 30, float(np.log(1.5)), 0.0]])
    )
    # an under-predicted centre offset (prediction 0) gives no anchor gradient ...
    (t[:, :2].abs().sum()).backward(retain_graph=True)
    assert log_wh.grad is None or float(log_wh.grad.abs().max()) == 0.0
    # ... while the size terms do: d|0 - ln(gw / aw)| / d ln aw = -sign(ln(gw / aw))
    (t[:, 2:].abs().sum()).backward()
    assert log_wh.grad is not None
    assert abs(float(log_wh.grad[0, 0]) + 1.0) < 1e-5


def test_shiftless_bn_starts_with_deltas_near_zero() -> None:
    # mmdet initialises the regression conv with std 0.01 so the first boxes are the anchors;
    # the batch norm must not blow those outputs up to unit variance (gamma 1).
    torch.manual_seed(0)
    x = torch.randn(2, 3, 128, 160)
    spread = {}
    for g in (0.01, 1.0):
        model = TrainModel("retina_learned", 3, SMALL, bn_gamma_init=g).train()
        _, reg, _ = model(x)
        spread[g] = max(float(wh_channels(r).std()) for r in reg)
    assert spread[0.01] < 0.012
    assert spread[1.0] > 0.9
    default = TrainModel("retina_learned", 3, SMALL).detector.head.wh_bn
    assert default is not None
    assert all(
        float(m.weight.max()) == float(np.float32(0.01))
        for m in default.bns
        if isinstance(m, torch.nn.BatchNorm2d)
    )


def test_old_shared_bn_checkpoint_is_refused(tmp_path: Path) -> None:
    import pytest

    from tools.anchorkit_train.export import load_checkpoint

    model = TrainModel("retina_learned", 3, ModelSize())
    sd = {
        k.replace("wh_bn.bns.0.", "wh_bn.bn."): v
        for k, v in model.state_dict().items()
        if "wh_bn.bns.1." not in k and "wh_bn.bns.2." not in k
    }
    ckpt = tmp_path / "old.pt"
    torch.save({"model": sd, "method": "retina_learned"}, ckpt)
    with pytest.raises(
        ValueError, match="old.pt: trained with one shiftless batch norm"
    ):
        load_checkpoint(ckpt)
