"""Integration: `anchorkit detect` (Rust) on BCCD test images with the exported ATSS model gives
the same detections as the torch model itself followed by the reference post-processing
(`tools/reference`, mmdet rule) on the identical network input (`--dump-input`)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tools.anchorkit_train.export import load_checkpoint
from tools.anchorkit_train.train import torch_infer
from tools.reference.postprocess import Detections, flatten_levels, postprocess
from tools.reference.preprocess import ImageMeta
from tools.reference.spec import load_spec

REPO = Path(__file__).resolve().parents[3]
MODEL = REPO / "models" / "bccd_atss.onnx"
TORCH = REPO / "models" / "torch" / "bccd_atss.pt"


def find_binary() -> Path | None:
    dirs = [os.environ.get("CARGO_TARGET_DIR", ""), str(REPO / "target")]
    for d in dirs:
        for prof in ("debug", "release"):
            p = Path(d) / prof / "anchorkit" if d else None
            if p is not None and p.is_file():
                return p
    return None


def run_detect(
    exe: Path, model: Path, images: list[str], tmp_path: Path
) -> tuple[list[dict[str, Any]], Path]:
    """Runs `anchorkit detect --jsonl --dump-input` on `images`; returns the JSONL records
    (one per image, input order) and the folder holding the dumped network inputs."""
    out = tmp_path / "dets.jsonl"
    dump = tmp_path / "dump"
    env = dict(os.environ)
    ort_lib = list(
        (REPO / "tools" / ".venv").glob(
            "lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*"
        )
    )
    if ort_lib and "ORT_DYLIB_PATH" not in env:
        env["ORT_DYLIB_PATH"] = str(ort_lib[0])
    r = subprocess.run(
        [
            str(exe),
            "detect",
            "--model",
            str(model),
            "--jsonl",
            str(out),
            "--dump-input",
            str(dump),
            *images,
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    rust = [json.loads(line) for line in out.read_text().splitlines()]
    return rust, dump


def assert_same_detections(got: list[dict[str, Any]], d: Detections) -> None:
    """The Rust detections of one image equal the reference ones (scores to 1e-5, labels
    exactly, boxes to 1e-3 px), and the white cell is found with a high score."""
    assert len(got) > 10
    # only a score tie at the 100th could differ
    assert abs(len(got) - len(d.scores)) <= 1
    n = min(len(got), len(d.scores)) - 1
    rb = np.array([g["bbox"] for g in got[:n]], np.float64)
    rs = np.array([g["score"] for g in got[:n]], np.float64)
    rl = np.array([g["class_id"] for g in got[:n]])
    assert np.abs(rs - d.scores[:n]).max() < 1e-5
    assert (rl == d.labels[:n]).all()
    assert np.abs(rb - d.boxes[:n]).max() < 1e-3
    assert any(g["class_name"] == "WBC" and g["score"] > 0.5 for g in got)


def test_anchorkit_detect_matches_torch(bccd: Path, tmp_path: Path) -> None:
    exe = find_binary()
    if exe is None:
        pytest.skip(
            "no anchorkit binary under target/ (run cargo build or cargo test first)"
        )
    if not (MODEL.is_file() and TORCH.is_file()):
        pytest.skip(f"{MODEL} or {TORCH} missing")
    ids = ["BloodImage_00007", "BloodImage_00031"]
    for i in ids:
        assert i in (bccd / "ImageSets" / "Main" / "test.txt").read_text()
    images = [str(bccd / "JPEGImages" / f"{i}.jpg") for i in ids]
    rust, dump = run_detect(exe, MODEL, images, tmp_path)
    assert len(rust) == len(ids)
    torch.set_num_threads(2)
    model, _ = load_checkpoint(TORCH)
    infer = torch_infer(model)
    spec = load_spec(MODEL)
    for rec, i in zip(rust, ids, strict=True):
        assert Path(rec["image"]).stem == i
        x = np.load(dump / f"{i}.npy")
        meta = ImageMeta.from_json(json.loads((dump / f"{i}.meta.json").read_text()))
        assert (meta.orig_w, meta.orig_h, meta.resized_w, meta.resized_h) == (
            640,
            480,
            416,
            312,
        )
        d = postprocess(spec, flatten_levels(spec, infer(x), meta), meta)
        assert_same_detections(rec["detections"], d)


@pytest.mark.parametrize("name", ["bccd_fcos", "bccd_piou"])
def test_anchorkit_detect_point_head_matches_reference(
    bccd: Path, tmp_path: Path, name: str
) -> None:
    """FCOS-style point heads (points priors, `distance` coder scaled by stride, sigmoid
    centerness multiplied into the score): `anchorkit detect` equals onnxruntime + the
    reference post-processing on the identical network input."""
    from tools.anchorkit_train.evaluate import onnx_infer

    exe = find_binary()
    if exe is None:
        pytest.skip(
            "no anchorkit binary under target/ (run cargo build or cargo test first)"
        )
    model = REPO / "models" / f"{name}.onnx"
    if not model.is_file():
        pytest.skip(f"{model} missing")
    ids = ["BloodImage_00007", "BloodImage_00031"]
    images = [str(bccd / "JPEGImages" / f"{i}.jpg") for i in ids]
    rust, dump = run_detect(exe, model, images, tmp_path)
    infer, _ = onnx_infer(model)
    spec = load_spec(model)
    assert spec.head.kind == "fcos"
    for rec, i in zip(rust, ids, strict=True):
        x = np.load(dump / f"{i}.npy")
        meta = ImageMeta.from_json(json.loads((dump / f"{i}.meta.json").read_text()))
        d = postprocess(spec, flatten_levels(spec, infer(x), meta), meta)
        assert_same_detections(rec["detections"], d)
