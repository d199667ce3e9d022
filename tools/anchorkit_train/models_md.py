"""Print the `models/MODELS.md` table rows from the specs embedded in exported ONNX files, so
the documented numbers are exactly the ones measured at export time.

    tools/.venv/bin/python -m tools.anchorkit_train.models_md models/bccd_*.onnx

Models written by `tools.quantize` (`provenance.quantization`) go to a second table, their
metrics beside their FP32 parent's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import onnx

from ..reference.spec import METADATA_KEY

METHOD_TEXT = {
    "atss": "ATSS (k=9/level, mean+std), focal + GIoU + centerness",
    "freeanchor": "FreeAnchor (bags of 50, mean-max, t1=0.6)",
    "retina": "RetinaNet max-IoU 0.5/0.4, focal + L1",
    "retina_learned": "RetinaNet max-IoU 0.5/0.4 + learned anchors (Zhong et al.)",
    "freeanchor_learned": "FreeAnchor + learned anchors (Zhong et al.)",
    "piou": "FCOS points + Pseudo-IoU 0.4 (points inside the gt), focal + GIoU + centerness",
    "fcos": "FCOS points, centre sampling radius 1.5, focal + GIoU + centerness",
}


def anchors_text(pri: dict[str, Any], prov: dict[str, Any] | None = None) -> str:
    """Short description of a `PriorSpec`; fixed explicit anchors from an `--anchors` fragment
    (provenance `anchors_file`) are named by `anchors_command` (else the file) instead of
    "learned"."""
    if pri["type"] == "anchors":
        return (
            f"default: octave_base_scale {pri['octave_base_scale']:g}, "
            f"scales_per_octave {pri['scales_per_octave']}, ratios {pri['ratios']}"
        )
    if pri["type"] == "explicit_anchors":
        lv = [
            " ".join(f"{w:.0f}x{h:.0f}" for w, h in level) for level in pri["per_level"]
        ]
        af = (prov or {}).get("anchors_file")
        if af is not None and not str((prov or {}).get("method", "")).endswith(
            "learned"
        ):
            src = (prov or {}).get("anchors_command") or af["file"]
            label = f"fixed, from `{src}`, (w x h)"
        else:
            label = "learned (w x h)"
        return f"{label} P3: " + "; P4: ".join(lv[:2]) + "; P5: " + lv[2]
    return f"points, offset {pri['offset']}"


def row(path: Path) -> str:
    """One markdown table row for an exported model."""
    m = onnx.load(str(path))
    spec = json.loads(next(p.value for p in m.metadata_props if p.key == METADATA_KEY))
    pv = spec["provenance"]
    t = pv["test_metrics"]
    pc = t["per_class_AP50"]
    scale = spec["input"]["resize"]["scale"]
    method = METHOD_TEXT.get(pv["method"], pv["method"])
    if pv.get("shiftless_bn") is False:
        method += ", without the shiftless BN (ablation)"
    return (
        f"| `{path.name}` | {method} | "
        f"{anchors_text(spec['head']['priors'], pv)} | {pv['params'] / 1e6:.2f} M | "
        f"keep_ratio {scale[0]}x{scale[1]} | {pv['epochs']} ep / {pv['iterations']} it | "
        f"`{pv.get('train_command', '?')}` | {pv.get('train_wall_s', 0) / 60:.0f} min | "
        f"{t['AP']:.3f} | {t['AP50']:.3f} | {t['AP75']:.3f} | "
        + " | ".join(f"{pc[c]:.3f}" for c in spec["classes"])
        + " |"
    )


def quantization(path: Path) -> dict[str, Any] | None:
    """`provenance.quantization` of a model written by `tools.quantize`, else None."""
    m = onnx.load(str(path), load_external_data=False)
    spec = json.loads(next(p.value for p in m.metadata_props if p.key == METADATA_KEY))
    q = (spec.get("provenance") or {}).get("quantization")
    return dict(q) if isinstance(q, dict) else None


def twin_row(path: Path, q: dict[str, Any]) -> str:
    """One row of the quantized-models table: INT8 (or FP16) metrics next to the parent's,
    both as recorded in the specs (the child's by `tools.quantize --eval-voc`)."""
    parent = path.parent / q["parent"]
    pm = json.loads(
        next(
            p.value
            for p in onnx.load(str(parent)).metadata_props
            if p.key == METADATA_KEY
        )
    )["provenance"]["test_metrics"]
    t = q.get("test_metrics")
    cal = q.get("calibration") or {}

    def pair(a: float, b: float | None) -> str:
        return f"{a:.3f} / {b:.3f}" if b is not None else f"{a:.3f} / ?"

    cells = [
        pair(pm["AP"], t["AP"] if t else None),
        pair(pm["AP50"], t["AP50"] if t else None),
    ]
    for c, v in pm["per_class_AP50"].items():
        cells.append(pair(v, t["per_class_AP50"][c] if t else None))
    how = q.get("method", q.get("format", "?"))
    if cal:
        how += f", {cal['images']} of {cal['available']} images (seed {cal['seed']})"
    return (
        f"| `{path.name}` | `{parent.name}` | {q.get('format', '?')} | {how} | "
        f"{parent.stat().st_size / 1e6:.2f} / {path.stat().st_size / 1e6:.2f} MB | "
        + " | ".join(cells)
        + " |"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("models", type=Path, nargs="+")
    a = ap.parse_args(argv)
    twins = [(p, quantization(p)) for p in a.models]
    print(
        "| model | method | anchors | params | input | schedule | training command "
        "| wall | AP | AP50 | AP75 | AP50 RBC | AP50 WBC | AP50 Platelets |"
    )
    print("|" + "---|" * 14)
    for p, q in twins:
        if q is None:
            print(row(p))
    quantized = [(p, q) for p, q in twins if q is not None]
    if quantized:
        print()
        print(
            "| quantized model | parent | format | calibration | size parent / this "
            "| AP parent / this | AP50 | AP50 RBC | AP50 WBC | AP50 Platelets |"
        )
        print("|" + "---|" * 10)
        for p, q in quantized:
            print(twin_row(p, q))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
