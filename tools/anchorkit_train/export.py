"""Export a trained checkpoint to ONNX with the anchorkit spec embedded, verifying
onnxruntime against torch on real images.

Graph: input `input` `[N, 3, H, W]` (normalized RGB, H and W multiples of 32, dynamic),
outputs raw per-level head tensors `cls_p3..p5` `[N, A*C, h, w]`, `reg_p3..p5` `[N, A*4, h, w]`
and, for ATSS / FCOS heads, `ctr_p3..p5` `[N, A, h, w]` logits: the graph is
`bbox_head(extract_feat(x))` with named outputs and no post-processing, opset 17. The spec
JSON (`src/spec.rs`) is stored in `metadata_props` under `anchorkit.detector`.

CLI (repo root):
    tools/.venv/bin/python -m tools.anchorkit_train.export \
        --ckpt tools/runs/atss/last.pt --out models/bccd_atss.onnx --name bccd_atss

Fails (exit 1, no output file) if max |onnxruntime - torch| > --tol (1e-4) on any output of
any check image.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from ..reference.preprocess import preprocess
from ..reference.spec import parse_spec, set_spec
from .anchor_fragment import parse_fragment
from .data import BCCD_CLASSES, load_voc, read_bgr
from .evaluate import coco_eval, detect_all
from .methods import ExportWrapper, ModelSize, TrainModel, num_anchors
from .model import STRIDES


def export_onnx(
    model: TrainModel, path: Path, spec: dict[str, Any], opset: int = 17
) -> None:
    """Write `model` (eval mode) to `path` atomically with `spec` in the metadata."""
    model.eval()
    wrap = ExportWrapper(model).eval()
    cls_n, reg_n, ctr_n = model.output_names()
    names = cls_n + reg_n + ctr_n
    dyn: dict[str, dict[int, str]] = {"input": {0: "N", 2: "H", 3: "W"}}
    for n in names:
        dyn[n] = {0: "N", 2: f"{n}_h", 3: f"{n}_w"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as td:
        raw = Path(td) / "raw.onnx"
        torch.onnx.export(
            wrap,
            (torch.zeros(1, 3, 320, 416),),
            str(raw),
            input_names=["input"],
            output_names=names,
            dynamic_axes=dyn,
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )
        m = onnx.load(str(raw))
    onnx.checker.check_model(m)
    set_spec(m, spec)
    tmp = path.with_suffix(path.suffix + ".tmp")
    onnx.save(m, str(tmp))
    os.replace(tmp, path)


def parity(model: TrainModel, onnx_path: Path, inputs: list[np.ndarray]) -> float:
    """Max abs difference between torch and onnxruntime (CPU) over all outputs and inputs."""
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    wrap = ExportWrapper(model).eval()
    worst = 0.0
    for x in inputs:
        with torch.no_grad():
            ref = [t.numpy() for t in wrap(torch.from_numpy(x))]
        got = sess.run(names, {"input": x})
        for r, g, n in zip(ref, got, names, strict=True):
            if r.shape != g.shape:
                raise ValueError(
                    f"{onnx_path}: output {n} shape {g.shape} != torch {r.shape}"
                )
            worst = max(worst, float(np.abs(r - g).max()))
    return worst


def load_checkpoint(path: Path) -> tuple[TrainModel, dict[str, Any]]:
    """Rebuild the `TrainModel` of a `train.py` checkpoint (eval mode), with the explicit
    anchors of its `--anchors` fragment (`st["anchors"]`) when it was trained with one.

    Raises `ValueError` naming the file for a learned-anchor checkpoint of the old layout
    (one shiftless batch norm shared by all levels)."""
    st = torch.load(path, weights_only=False, map_location="cpu")
    if "detector.head.wh_bn.bn.weight" in st["model"]:
        raise ValueError(
            f"{path}: trained with one shiftless batch norm shared by the FPN levels, "
            "whose running statistics mix the levels (see models/MODELS.md); retrain it "
            "with the current trainer (one batch norm per level)"
        )
    rec = st.get("anchors")
    wh = None
    if rec is not None:
        wh = parse_fragment(
            rec["fragment"], str(rec["file"]), STRIDES, num_anchors(st["method"])
        ).per_level
    model = TrainModel(
        st["method"],
        len(BCCD_CLASSES),
        ModelSize(),
        shiftless_bn=bool(st.get("shiftless_bn", True)),
        anchors_wh=wh,
    )
    model.load_state_dict(st["model"])
    return model.eval(), st


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/bccd/BCCD"))
    ap.add_argument(
        "--check-images",
        type=int,
        default=4,
        help="BCCD test images for the parity check",
    )
    ap.add_argument(
        "--extra-image",
        type=Path,
        action="append",
        default=[],
        help="more images (other sizes) for the parity check",
    )
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument(
        "--provenance", type=Path, help="JSON object merged into spec.provenance"
    )
    ap.add_argument(
        "--save-torch",
        type=Path,
        help="also write the model-only torch checkpoint (state dict, method, scale) here",
    )
    ap.add_argument(
        "--no-eval",
        action="store_true",
        help="skip the COCO evaluation on the test split",
    )
    a = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("ANCHORKIT_THREADS", "2")))
    model, st = load_checkpoint(a.ckpt)
    scale = (int(st["scale"][0]), int(st["scale"][1]))
    test = load_voc(a.data, "test", BCCD_CLASSES)
    prov: dict[str, Any] = {
        "method": st["method"],
        "seed": st["seed"],
        "epochs": st["epoch"] + 1,
        "iterations": st["iter"],
        "params": sum(p.numel() for p in model.parameters()),
        "dataset": "BCCD trainval (292 images)",
        "anchors": model.priors.spec(),
    }
    if st.get("anchors") is not None:
        prov["anchors_file"] = st["anchors"]
    if a.provenance:
        prov.update(json.loads(a.provenance.read_text()))
    spec = model.spec(BCCD_CLASSES, a.name, scale, prov)
    tmp_out = a.out.with_suffix(".unverified.onnx")
    export_onnx(model, tmp_out, spec)
    imgs = [r.path for r in test[: a.check_images]] + list(a.extra_image)
    parsed = parse_spec(spec, str(a.out))
    inputs = [preprocess(parsed.input, read_bgr(p))[0] for p in imgs]
    diff = parity(model, tmp_out, inputs)
    sizes = sorted({x.shape[2:] for x in inputs})
    print(
        f"parity: max |ort - torch| = {diff:.3g} over {len(inputs)} images, input sizes {sizes}"
    )
    if not diff <= a.tol:
        tmp_out.unlink()
        print(
            f"error: {a.out}: parity {diff:.3g} exceeds tolerance {a.tol}",
            file=sys.stderr,
        )
        return 1
    if not a.no_eval:
        sess = ort.InferenceSession(str(tmp_out), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]

        def infer(x: np.ndarray) -> dict[str, np.ndarray]:
            return dict(zip(names, sess.run(names, {"input": x}), strict=True))

        metrics = coco_eval(test, detect_all(spec, infer, test), BCCD_CLASSES)
        prov["test_metrics"] = {
            "split": "BCCD test (72 images)",
            "evaluated_with": "onnxruntime + mmdet rule",
            **metrics,
        }
        print(json.dumps(metrics))
        spec["provenance"] = prov
        m = onnx.load(str(tmp_out))
        set_spec(m, spec)
        onnx.save(m, str(tmp_out))
    os.replace(tmp_out, a.out)
    if a.save_torch:
        slim = {k: st[k] for k in ("method", "seed", "epoch", "iter", "scale")}
        slim["shiftless_bn"] = bool(st.get("shiftless_bn", True))
        slim["anchors"] = st.get("anchors")
        slim["model"] = model.state_dict()
        a.save_torch.parent.mkdir(parents=True, exist_ok=True)
        tmp = a.save_torch.with_suffix(".tmp")
        torch.save(slim, tmp)
        os.replace(tmp, a.save_torch)
        print(f"wrote {a.save_torch}")
    print(f"wrote {a.out} ({a.out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
