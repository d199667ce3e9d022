"""The committed models: valid embedded specs, and the recorded test AP reproduces."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from tools.anchorkit_train.data import BCCD_CLASSES, load_voc
from tools.anchorkit_train.evaluate import coco_eval, detect_all, onnx_infer
from tools.reference.spec import METADATA_KEY, parse_spec

MODELS = Path(__file__).resolve().parents[3] / "models"
ONNX = sorted(MODELS.glob("bccd_*.onnx"))


@pytest.mark.parametrize("path", ONNX, ids=[p.name for p in ONNX])
def test_embedded_spec_is_valid(path: Path) -> None:
    m = onnx.load(str(path))
    meta = {p.key: p.value for p in m.metadata_props}
    spec = json.loads(meta[METADATA_KEY])
    parsed = parse_spec(spec, str(path))
    assert tuple(parsed.classes) == BCCD_CLASSES
    outputs = {o.name for o in m.graph.output}
    for lv in spec["head"]["levels"]:
        assert lv["cls"] in outputs and lv["reg"] in outputs
    assert m.opset_import[0].version == 17
    assert path.stat().st_size < 5_000_000
    prov = spec["provenance"]
    # INT8 twins record their own test metrics with the quantization provenance
    t = (
        prov["quantization"]["test_metrics"]
        if "quantization" in prov
        else prov["test_metrics"]
    )
    assert set(t["per_class_AP50"]) == set(BCCD_CLASSES)


def test_recorded_ap_reproduces(bccd: Path) -> None:
    path = MODELS / "bccd_atss.onnx"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    infer, spec = onnx_infer(path)
    recs = load_voc(bccd, "test", BCCD_CLASSES)
    got = coco_eval(recs, detect_all(spec, infer, recs), BCCD_CLASSES)
    want = spec["provenance"]["test_metrics"]
    assert got["AP50"] == pytest.approx(want["AP50"], abs=1e-9)
    assert got["AP"] == pytest.approx(want["AP"], abs=1e-9)
    assert got["AP50"] > 0.85
