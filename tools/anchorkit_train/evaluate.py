"""COCO-style evaluation (pycocotools) of a detector on a record list, using the
spec-driven mmdet post-processing of `postprocess.py`.

CLI: `python -m anchorkit_train.evaluate --onnx models/bccd_atss.onnx [--split test]`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..reference.postprocess import flatten_levels, postprocess
from ..reference.preprocess import preprocess
from ..reference.spec import parse_spec
from .data import Record, load_voc, read_bgr

Infer = Callable[[np.ndarray], dict[str, np.ndarray]]


def detect_all(
    spec: dict[str, Any], infer: Infer, records: list[Record]
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Run `infer` (`[1, 3, H, W]` float32 -> outputs by name) on every record with the
    project's reference pipeline (`tools/reference`: spec preprocessing, mmdet >= 2.18
    post-processing, mmcv NMS).
    Returns per image `(boxes [n, 4] original pixels, scores [n], labels [n])`."""
    parsed = parse_spec(spec, "training spec")
    out = []
    for r in records:
        tensor, meta = preprocess(parsed.input, read_bgr(r.path))
        d = postprocess(parsed, flatten_levels(parsed, infer(tensor), meta), meta)
        out.append((d.boxes, d.scores, d.labels))
    return out


def coco_eval(
    records: list[Record],
    dets: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    classes: tuple[str, ...],
) -> dict[str, Any]:
    """pycocotools bbox AP (AP, AP50, AP75, APs/m/l) and per-class AP50.

    Ground-truth area is the box area; boxes are converted to `[x, y, w, h]`.
    """
    images, anns, res = [], [], []
    aid = 1
    for i, (r, (b, s, lab)) in enumerate(zip(records, dets, strict=True)):
        images.append(
            {"id": i, "width": r.width, "height": r.height, "file_name": r.path.name}
        )
        for box, c in zip(r.boxes, r.labels, strict=True):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            anns.append(
                {
                    "id": aid,
                    "image_id": i,
                    "category_id": int(c) + 1,
                    "bbox": [float(box[0]), float(box[1]), w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
            aid += 1
        for box, sc, c in zip(b, s, lab, strict=True):
            res.append(
                {
                    "image_id": i,
                    "category_id": int(c) + 1,
                    "bbox": [
                        float(box[0]),
                        float(box[1]),
                        float(box[2] - box[0]),
                        float(box[3] - box[1]),
                    ],
                    "score": float(sc),
                }
            )
    gt = COCO()
    gt.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(classes)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    if not res:
        return {
            "AP": 0.0,
            "AP50": 0.0,
            "AP75": 0.0,
            "per_class_AP50": {n: 0.0 for n in classes},
            "num_dets": 0,
        }
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(res)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"]  # [T, R, K, A, M]
    per_class = {}
    for k, n in enumerate(classes):
        p = prec[0, :, k, 0, -1]
        p = p[p > -1]
        per_class[n] = float(p.mean()) if p.size else 0.0
    st = ev.stats
    return {
        "AP": float(st[0]),
        "AP50": float(st[1]),
        "AP75": float(st[2]),
        "APs": float(st[3]),
        "APm": float(st[4]),
        "APl": float(st[5]),
        "per_class_AP50": per_class,
        "num_dets": len(res),
    }


def onnx_infer(path: Path) -> tuple[Infer, dict[str, Any]]:
    """An onnxruntime CPU session for `path` and the spec read from its metadata."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    if "anchorkit.detector" not in meta:
        raise ValueError(f"{path}: no 'anchorkit.detector' metadata")
    spec = json.loads(meta["anchorkit.detector"])
    names = [o.name for o in sess.get_outputs()]

    def infer(x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(names, sess.run(None, {spec["input"]["name"]: x}), strict=True))

    return infer, spec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--onnx", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/bccd/BCCD"))
    ap.add_argument("--split", default="test")
    a = ap.parse_args(argv)
    infer, spec = onnx_infer(a.onnx)
    recs = load_voc(a.data, a.split, tuple(spec["classes"]))
    m = coco_eval(recs, detect_all(spec, infer, recs), tuple(spec["classes"]))
    json.dump(m, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
