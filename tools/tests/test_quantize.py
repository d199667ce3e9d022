"""tools.quantize on the project's own BCCD models (from `models/`) with BCCD images from
`../shared` (skipped without it): the INT8 and FP16 outputs keep a valid spec and their
detections match the FP32 parent's; calibration stays inside the listed split; bad input is
reported without writing anything; the committed INT8 twins are calibrated on trainval only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from tools.quantize import (
    QDQ_OPS,
    head_convs,
    main,
    read_spec_json,
    select,
    sha256,
    spec_outputs,
)
from tools.reference.detect import Detector
from tools.reference.postprocess import Detections
from tools.reference.preprocess import load_image
from tools.reference.spec import METADATA_KEY, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
BCCD = ROOT.parent / "shared" / "data" / "bccd" / "BCCD"
MODEL = ROOT / "models" / "bccd_atss.onnx"
TWINS = ("bccd_freeanchor_w24", "bccd_atss")

needs_bccd = pytest.mark.skipif(
    not (BCCD / "ImageSets" / "Main" / "test.txt").is_file(),
    reason=f"BCCD not found at {BCCD} (CI layout: a clone with ../shared beside it)",
)


def split(name: str) -> list[str]:
    return (BCCD / "ImageSets" / "Main" / f"{name}.txt").read_text().split()


def spec_json(model: Path) -> dict[str, object]:
    m = onnx.load(str(model))
    return dict(
        json.loads(next(p.value for p in m.metadata_props if p.key == METADATA_KEY))
    )


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of `[n, 4]` and `[m, 4]` xyxy boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return np.asarray(inter / (area_a[:, None] + area_b[None, :] - inter))


def bccd_calib_args(calib_list: Path) -> list[str]:
    """`quantize` arguments: the BCCD ATSS model, calibrated on the BCCD images named in
    `calib_list`."""
    return [
        "--model",
        str(MODEL),
        "--calib",
        str(BCCD / "JPEGImages"),
        "--calib-list",
        str(calib_list),
    ]


def matched_share(
    ref: Detections, got: Detections, thr: float = 0.3
) -> tuple[float, int]:
    """Share of `ref` detections scoring >= thr with a same-class `got` detection (score >=
    thr / 2) at IoU >= 0.5, and their number."""
    r = ref.scores >= thr
    g = got.scores >= thr / 2
    rb, rl = ref.boxes[r], ref.labels[r]
    gb, gl = got.boxes[g], got.labels[g]
    if len(rb) == 0:
        return 1.0, 0
    ious = iou(rb, gb) if len(gb) else np.zeros((len(rb), 0))
    same = rl[:, None] == gl[None, :]
    hit = ((ious >= 0.5) & same).any(axis=1)
    return float(hit.mean()), len(rb)


def detections_agree(
    parent: Path, child: Path, images: list[Path]
) -> tuple[float, int]:
    """Matched share of the parent's confident detections over `images`."""
    a, b = Detector(parent, threads=1), Detector(child, threads=1)
    hits = total = 0
    for p in images:
        t, meta = a.prepare(load_image(p))
        share, n = matched_share(a.detect_tensor(t, meta), b.detect_tensor(t, meta))
        hits += round(share * n)
        total += n
    return hits / max(total, 1), total


@needs_bccd
def test_int8_keeps_the_spec_and_the_detections(tmp_path: Path) -> None:
    out = tmp_path / "atss.int8.onnx"
    rc = main(
        [
            *bccd_calib_args(BCCD / "ImageSets" / "Main" / "trainval.txt"),
            "--num",
            "4",
            "--seed",
            "3",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    parent, child = spec_json(MODEL), spec_json(out)
    # Everything but the provenance is the parent's spec, and it is valid for the graph.
    assert {k: v for k, v in child.items() if k != "provenance"} == {
        k: v for k, v in parent.items() if k != "provenance"
    }
    load_spec(out)
    prov = child["provenance"]
    assert isinstance(prov, dict)
    q = prov["quantization"]
    assert prov["parent"] == parent["provenance"]
    assert q["format"] == "QDQ" and q["method"] == "minmax" and q["onnxruntime"]
    cal = q["calibration"]
    assert cal["images"] == 4 and cal["seed"] == 3 and cal["available"] == 292
    assert {Path(f).stem for f in cal["files"]} <= set(split("trainval"))
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert q["qdq_nodes"] == sum(ops.count(o) for o in QDQ_OPS) > 50
    assert out.stat().st_size < 0.5 * MODEL.stat().st_size
    share, n = detections_agree(
        MODEL, out, [BCCD / "JPEGImages" / f"{s}.jpg" for s in split("test")[:3]]
    )
    print(f"INT8 matches {share:.3f} of {n} FP32 detections")
    assert n >= 30, n
    assert share >= 0.9, (share, n)


@needs_bccd
def test_exclude_heads_keeps_the_head_convolutions_in_fp32(tmp_path: Path) -> None:
    out = tmp_path / "atss.xh.int8.onnx"
    calib = tmp_path / "calib"
    calib.mkdir()
    for s in split("trainval")[:2]:
        (calib / f"{s}.jpg").write_bytes(
            (BCCD / "JPEGImages" / f"{s}.jpg").read_bytes()
        )
    rc = main(
        [
            "--model",
            str(MODEL),
            "--calib",
            str(calib),
            "--exclude-heads",
            "--per-channel",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    q = spec_json(out)["provenance"]["quantization"]  # type: ignore[index]
    # ATSS: class, box and centerness convs of 3 levels.
    assert len(q["fp32_nodes"]) == 9, q["fp32_nodes"]
    g = onnx.load(str(out)).graph
    producer = {o: n for n in g.node for o in n.output}
    for n in g.node:
        if n.name in q["fp32_nodes"]:
            # The weight input is a float initializer, not a DequantizeLinear output.
            w = producer.get(n.input[1])
            assert w is None or w.op_type != "DequantizeLinear", n.name
    assert "per channel" in q["weights"]


def test_head_convs_follow_reshapes_and_scales() -> None:
    m = onnx.load(str(MODEL))
    spec = parse_spec(read_spec_json(m, MODEL, None))
    convs = head_convs(m, spec_outputs(spec))
    assert len(convs) == 9
    assert all(c.endswith("/Conv") for c in convs)


@needs_bccd
def test_fp16_keeps_float32_io_and_the_detections(tmp_path: Path) -> None:
    out = tmp_path / "atss.fp16.onnx"
    assert main(["--model", str(MODEL), "--fp16", "--out", str(out)]) == 0
    m = onnx.load(str(out))
    f32 = onnx.TensorProto.FLOAT
    assert all(
        v.type.tensor_type.elem_type == f32
        for v in list(m.graph.input) + list(m.graph.output)
    )
    types = [t.data_type for t in m.graph.initializer]
    assert types.count(onnx.TensorProto.FLOAT16) > types.count(f32)
    assert spec_json(out)["provenance"]["quantization"]["format"].startswith("FP16")  # type: ignore[index]
    load_spec(out)
    share, n = detections_agree(
        MODEL, out, [BCCD / "JPEGImages" / f"{split('test')[0]}.jpg"]
    )
    assert n >= 10 and share >= 0.95, (share, n)


def test_selection_is_seeded() -> None:
    files = [Path(f"{i:03}.jpg") for i in range(50)]
    a, b, c = select(files, 8, 0), select(files, 8, 0), select(files, 8, 1)
    assert a == b and a != c and len(a) == 8 and a == sorted(a)
    assert select(files, 80, 0) == files


@needs_bccd
def test_bad_input_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.onnx"
    # The input model is never overwritten.
    assert main(["--model", str(MODEL), "--fp16", "--out", str(MODEL)]) == 2
    # A list naming images the directory lacks.
    lst = tmp_path / "ids.txt"
    lst.write_text("BloodImage_00000\nno_such_image\n")
    rc = main(
        [
            *bccd_calib_args(lst),
            "--out",
            str(out),
        ]
    )
    assert rc == 2 and not out.exists()
    assert "no_such_image" in capsys.readouterr().err
    # A model without a spec.
    bare = tmp_path / "bare.onnx"
    m = onnx.load(str(MODEL))
    del m.metadata_props[:]
    onnx.save(m, str(bare))
    assert main(["--model", str(bare), "--fp16", "--out", str(out)]) == 2
    assert "--spec" in capsys.readouterr().err and not out.exists()
    # One undecodable calibration image is reported and skipped; the rest are used.
    calib = tmp_path / "calib"
    calib.mkdir()
    (calib / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    s = split("trainval")[0]
    (calib / f"{s}.jpg").write_bytes((BCCD / "JPEGImages" / f"{s}.jpg").read_bytes())
    assert main(["--model", str(MODEL), "--calib", str(calib), "--out", str(out)]) == 1
    assert "broken.jpg" in capsys.readouterr().err
    cal = spec_json(out)["provenance"]["quantization"]["calibration"]  # type: ignore[index]
    assert cal["files"] == [f"{s}.jpg"]


@needs_bccd
@pytest.mark.parametrize("name", TWINS)
def test_committed_int8_twins_are_calibrated_on_trainval_only(name: str) -> None:
    twin, parent = (
        ROOT / "models" / f"{name}.int8.onnx",
        ROOT / "models" / f"{name}.onnx",
    )
    if not twin.is_file():
        pytest.skip(f"{twin} not committed")
    spec = spec_json(twin)
    q = spec["provenance"]["quantization"]  # type: ignore[index]
    stems = {Path(f).stem for f in q["calibration"]["files"]}
    assert stems and stems <= set(split("trainval")) and not stems & set(split("test"))
    assert q["parent"] == parent.name and q["parent_sha256"] == sha256(parent)
    load_spec(twin)


def test_models_md_lists_twins_beside_their_parents(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tools.anchorkit_train import models_md

    twin = ROOT / "models" / "bccd_atss.int8.onnx"
    if not twin.is_file():
        pytest.skip(f"{twin} not committed")
    assert models_md.main([str(MODEL), str(twin)]) == 0
    out = capsys.readouterr().out.splitlines()
    main_rows = [r for r in out if r.startswith("| `bccd_atss.onnx`")]
    twin_rows = [r for r in out if r.startswith("| `bccd_atss.int8.onnx`")]
    assert len(main_rows) == 1 and len(twin_rows) == 1, out
    # Parent AP50 / INT8 AP50, both as recorded in the specs.
    assert "| 0.869 / 0.874 |" in twin_rows[0], twin_rows[0]
    assert "64 of 292 images (seed 0)" in twin_rows[0]
