"""Training smoke run on real BCCD images and ONNX export parity (torch vs onnxruntime)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from tools.anchorkit_train.data import (
    BCCD_CLASSES,
    AugConfig,
    TrainSet,
    load_voc,
)
from tools.anchorkit_train.export import export_onnx, parity
from tools.anchorkit_train.losses import compute_loss
from tools.anchorkit_train.methods import REGRESS_RANGES, ModelSize, TrainModel
from tools.anchorkit_train.priors import LearnedAnchorPriors
from tools.anchorkit_train.train import train_step
from tools.reference.spec import METADATA_KEY

SMALL = ModelSize(widths=(8, 16, 16, 32, 32), feat=16, stacked=1)


@pytest.mark.parametrize(
    "method", ["atss", "freeanchor", "retina_learned", "piou", "fcos"]
)
def test_two_steps_decrease_loss_on_fixed_batch(bccd: Path, method: str) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    recs = load_voc(bccd, "trainval")[:2]
    ds = TrainSet(recs, AugConfig(canvas=(160, 128)))
    imgs, boxes, labels = ds.batch([0, 1], np.random.default_rng(0))
    assert all(b.shape[0] > 0 for b in boxes)
    model = TrainModel(method, 3, SMALL)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def loss() -> float:
        with torch.no_grad():
            model.train()
            out = compute_loss(
                model.loss_kind,
                model.priors,
                model(imgs),
                boxes,
                labels,
                3,
                REGRESS_RANGES,
            )
        return float(sum(out.values()))

    before = loss()
    for _ in range(2):
        lv = train_step(
            model,
            opt,
            imgs,
            boxes,
            labels,
            cluster=(0.25, 1.0) if "learned" in method else None,
        )
        assert np.isfinite(lv["loss"])
    assert loss() < before


def test_learned_anchors_receive_gradient() -> None:
    model = TrainModel("retina_learned", 3, SMALL)
    imgs = torch.randn(1, 3, 64, 64)
    boxes = [torch.tensor([[10.0, 10.0, 40.0, 35.0]])]
    labels = [torch.tensor([1])]
    out = compute_loss(model.loss_kind, model.priors, model(imgs), boxes, labels, 3)
    out["loss_bbox"].backward()
    assert isinstance(model.priors, LearnedAnchorPriors)
    g = model.priors.log_wh.grad
    assert g is not None and float(g.abs().sum()) > 0


@pytest.mark.parametrize("method", ["atss", "retina_learned", "fcos"])
def test_export_parity_and_spec(
    bccd_test_inputs: Callable[[dict[str, Any], int], list[np.ndarray]],
    tmp_path: Path,
    method: str,
) -> None:
    torch.manual_seed(0)
    model = TrainModel(method, 3, SMALL).eval()
    with torch.no_grad():  # non-trivial outputs everywhere
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    spec = model.spec(BCCD_CLASSES, "t", (416, 312), {"note": "test"})
    path = tmp_path / "m.onnx"
    export_onnx(model, path, spec)
    (x1,) = bccd_test_inputs(spec, 1)
    x2 = np.ascontiguousarray(x1[:, :, :224, :288])  # another H, W (dynamic axes)
    assert x1.shape[2:] == (320, 416)
    assert parity(model, path, [x1, x2]) <= 1e-4
    m = onnx.load(str(path))
    meta = {p.key: p.value for p in m.metadata_props}
    got = json.loads(meta[METADATA_KEY])
    assert got == spec
    assert m.opset_import[0].version == 17
    kinds = {"atss": "atss", "retina_learned": "retina", "fcos": "fcos"}
    assert got["head"]["kind"] == kinds[method]
    if method == "fcos":
        assert got["head"]["priors"] == {"type": "points", "offset": 0.5}
        assert got["head"]["coder"]["type"] == "distance"
        assert got["head"]["coder"]["scale_by_stride"] is True
        assert got["head"]["centerness"] is True
        assert [lv["centerness"] for lv in got["head"]["levels"]] == [
            "ctr_p3",
            "ctr_p4",
            "ctr_p5",
        ]
    if method == "retina_learned":
        assert got["head"]["priors"]["type"] == "explicit_anchors"
        assert len(got["head"]["priors"]["per_level"]) == 3
        assert all(len(lvl) == 9 for lvl in got["head"]["priors"]["per_level"])
