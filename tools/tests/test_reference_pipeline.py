"""End-to-end tests of the Python reference on real data from `../shared` (skipped without it):
COCO AP of NanoDet-m on the 198-image subset, the CLI (bad files, dumped inputs), the COCO
mapping of coco_ap, and the synthetic RetinaNet/ATSS heads built by make_synthetic_heads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tools.reference import coco_ap
from tools.reference.detect import Detector, main
from tools.reference.postprocess import flatten_levels, postprocess, sigmoid
from tools.reference.preprocess import load_image
from tools.reference.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
COCO = SHARED / "data" / "coco-val2017"
IMAGES = COCO / "images"
ANN = COCO / "instances_subset.json"
NANODET = SHARED / "models" / "nanodet-m-coco"
SPECS = ROOT / "models" / "specs"
SYNTH = ROOT / "target" / "synthetic-heads"

needs_shared = pytest.mark.skipif(
    not IMAGES.is_dir(),
    reason=f"{SHARED} is absent (CI layout: a clone with ../shared beside it)",
)


def nanodet(size: int) -> tuple[Path, Path]:
    model, spec = NANODET / f"nanodet-m-{size}.onnx", SPECS / f"nanodet-m-{size}.json"
    if not spec.is_file():
        pytest.skip(f"{spec} is not there yet")
    return model, spec


def detect_argv(model: Path, spec: Path, jsonl: Path, *rest: str) -> list[str]:
    """`tools.reference.detect` arguments: `model` with the sidecar `spec`, detections to
    `jsonl`, then `rest` (options and images)."""
    return ["--model", str(model), "--spec", str(spec), "--jsonl", str(jsonl), *rest]


def coco_images(n: int | None = None) -> list[Path]:
    imgs = sorted(IMAGES.glob("*.jpg"))
    return imgs if n is None else imgs[:n]


def synthetic_models() -> Path:
    """Builds (or reuses, when up to date) the seeded synthetic models in target/synthetic-heads."""
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "make_synthetic_heads.py"),
            "--out",
            str(SYNTH),
            "--if-stale",
        ],
        check=True,
        cwd=ROOT,
    )
    return SYNTH


# ---------------------------------------------------------------- COCO AP (reference numbers)


@needs_shared
@pytest.mark.parametrize(
    ("size", "ap", "ap50"), [(320, 0.194, 0.326), (416, 0.189, None)]
)
def test_nanodet_ap_on_subset(
    tmp_path: Path, size: int, ap: float, ap50: float | None
) -> None:
    model, spec = nanodet(size)
    out = tmp_path / "dets.jsonl"
    assert main(detect_argv(model, spec, out, str(IMAGES))) == 0
    assert len(out.read_text().splitlines()) == 198
    stats = coco_ap.evaluate(out, ANN)
    print(f"nanodet-m-{size}: {stats}")
    assert abs(stats["AP"] - ap) < 0.005
    if ap50 is not None:
        assert abs(stats["AP50"] - ap50) < 0.005


@needs_shared
def test_coco_ap_mapping_with_ground_truth(tmp_path: Path) -> None:
    """Ground-truth boxes written as detections score AP 1; shifted class ids score ~0."""
    gt = json.loads(ANN.read_text())
    cats = sorted(c["id"] for c in gt["categories"])
    names = {im["id"]: im["file_name"] for im in gt["images"]}
    per_image: dict[int, list[dict[str, object]]] = {i: [] for i in names}
    for a in gt["annotations"]:
        if a.get("iscrowd", 0):
            continue
        x, y, w, h = a["bbox"]
        per_image[a["image_id"]].append(
            {
                "bbox": [x, y, x + w, y + h],
                "score": 1.0,
                "class_id": cats.index(a["category_id"]),
            }
        )
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text(
        "".join(
            json.dumps({"image": f"x/{names[i]}", "detections": d}) + "\n"
            for i, d in per_image.items()
        )
    )
    shifted = {
        i: [dict(d, class_id=(int(d["class_id"]) + 1) % 80) for d in ds]
        for i, ds in per_image.items()
    }  # type: ignore[call-overload]
    bad.write_text(
        "".join(
            json.dumps({"image": names[i], "detections": d}) + "\n"
            for i, d in shifted.items()
        )
    )
    assert coco_ap.evaluate(good, ANN)["AP"] > 0.99
    assert coco_ap.evaluate(bad, ANN)["AP"] < 0.01


# ---------------------------------------------------------------- CLI behaviour


@needs_shared
def test_cli_bad_files_and_dumped_inputs(tmp_path: Path) -> None:
    model, spec = nanodet(320)
    imgs = [str(p) for p in coco_images(3)]
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(Path(imgs[0]).read_bytes()[:200])
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    dump = tmp_path / "dump"
    rc = main(
        detect_argv(
            model,
            spec,
            a,
            "--dump-input",
            str(dump),
            imgs[0],
            str(empty),
            imgs[1],
            str(trunc),
            str(text),
            str(tmp_path / "missing.jpg"),
            imgs[2],
        )
    )
    assert rc == 1  # failures reported, the rest written
    recs = [json.loads(line) for line in a.read_text().splitlines()]
    assert [r["image"] for r in recs] == imgs
    assert all(r["detections"] for r in recs)
    assert sorted(p.name for p in dump.iterdir()) == sorted(
        f"{Path(i).stem}{ext}" for i in imgs for ext in (".npy", ".meta.json")
    )
    # Feeding the dumped tensors back gives the identical JSONL.
    assert main(detect_argv(model, spec, b, "--input-from", str(dump), *imgs)) == 0
    assert b.read_text() == a.read_text()


def test_cli_model_without_spec(tmp_path: Path) -> None:
    m = tmp_path / "plain.onnx"
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    onnx.save(helper.make_model(g), str(m))
    with pytest.raises(ValueError, match="no detector spec"):
        load_spec(m)
    assert main(["--model", str(m), "--jsonl", str(tmp_path / "o.jsonl"), str(m)]) == 2


# ---------------------------------------------------------------- synthetic heads


@needs_shared
@pytest.mark.parametrize("kind", ["retina", "atss"])
def test_synthetic_heads_exercise_topk_and_nms(kind: str) -> None:
    path = synthetic_models() / f"{kind}_synth.onnx"
    det = Detector(path)  # the spec comes from the ONNX metadata
    assert det.spec.head.kind == kind and det.spec.input.resize.rule == "keep_ratio"
    a, ch_reg = (9, 36) if kind == "retina" else (1, 4)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for img in coco_images(4):
        tensor, meta = det.prepare(load_image(img))
        assert (
            max(meta.resized_w, meta.resized_h) <= 1333
            and min(meta.resized_w, meta.resized_h) <= 800
        )
        outs = det.infer(tensor)
        h3, w3 = meta.input_h // 8, meta.input_w // 8
        assert outs["cls_p3"].shape == (1, a * 80, h3, w3)
        assert outs["reg_p3"].shape == (1, ch_reg, h3, w3)
        assert outs["cls_p7"].shape[2:] == (-(-h3 // 16), -(-w3 // 16))
        if kind == "atss":
            assert outs["ctr_p3"].shape == (1, 1, h3, w3)
        levels = flatten_levels(det.spec, outs, meta)
        passing = [int((sigmoid(lv.cls) > 0.05).sum()) for lv in levels]
        dets = postprocess(det.spec, levels, meta)
        print(kind, img.name, passing, len(dets.scores))
        assert max(passing) > 1000  # nms_pre really cuts
        assert sum(min(p, 1000) for p in passing) > 3 * len(
            dets.scores
        )  # NMS really suppresses
        assert len(dets.scores) == 100 and len(set(dets.labels.tolist())) >= 3
        assert np.all(np.diff(dets.scores) <= 0)
    assert sess.get_modelmeta().custom_metadata_map["anchorkit.detector"]
