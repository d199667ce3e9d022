"""Python baseline for `anchorkit bench`: onnxruntime (Python) + OpenCV + numpy post-processing.

    python -m tools.bench_baseline --model M.onnx [--spec S.json] (--images DIR | --synthetic WxH)
        [--threads N] [--warmup N] [--iters N] [--nms cv2|numpy] [--json FILE]

Same stages, same rule and the same JSON report layout as `anchorkit bench`, so that
`anchorkit bench --baseline FILE` prints the ratio per figure:
- decode: `cv2.imdecode` of the file bytes held in memory (EXIF orientation as the spec says);
- preprocess: `cv2.resize` (INTER_LINEAR) + numpy normalize/pad to NCHW f32
  (`tools.reference.preprocess`, the spec's resize rule);
- inference: `InferenceSession.run` (CPU EP, intra-op threads = `--threads`, inter 1, graph
  optimization ALL, like anchorkit);
- postprocess: the spec's rule in numpy (`tools.reference.postprocess`: sigmoid, threshold,
  per-level top-k, decode, rescale), with NMS by OpenCV's C++ `cv2.dnn.NMSBoxesBatched`
  (`--nms cv2`, default: the fastest Python option) or the numpy mmcv loop (`--nms numpy`);
- end_to_end: wall time of the four.

Percentiles are computed from the raw samples (numpy `percentile`, linear). Images cycle in
sorted order; the synthetic image is a fixed pattern encoded once as JPEG (quality 90).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort  # type: ignore[import-untyped]

from tools.reference import postprocess as pp_mod
from tools.reference.detect import expand_inputs
from tools.reference.postprocess import flatten_levels, postprocess
from tools.reference.preprocess import decode_image, preprocess
from tools.reference.spec import load_spec

STAGES = ("decode", "preprocess", "inference", "postprocess", "end_to_end")


def synthetic_image(w: int, h: int) -> npt.NDArray[np.uint8]:
    """The fixed pattern anchorkit uses for `--synthetic WxH` (BGR u8)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    r = (x * 255) // max(w - 1, 1)
    g = (y * 255) // max(h - 1, 1)
    b = ((x // 32 + y // 32) % 2) * 200 + 25
    rgb = np.stack([r, g, b], axis=-1).astype(np.uint8)
    return np.ascontiguousarray(rgb[:, :, ::-1])


def nms_cv2(
    boxes: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    iou_thr: float,
    class_agnostic: bool = False,
) -> npt.NDArray[np.int64]:
    """Class-aware NMS with OpenCV's C++ `NMSBoxesBatched` (boxes xyxy -> xywh)."""
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).astype(
        np.float64
    )
    lab = np.zeros_like(labels) if class_agnostic else labels
    keep = cv2.dnn.NMSBoxesBatched(
        xywh.tolist(),
        scores.astype(np.float64).tolist(),
        lab.astype(np.int32).tolist(),
        0.0,
        iou_thr,
    )
    return np.asarray(keep, dtype=np.int64).reshape(-1)


def stats(samples_ns: list[int]) -> dict[str, float]:
    """Summary of one stage in milliseconds."""
    a = np.asarray(samples_ns, dtype=np.float64) / 1e6
    return {
        "count": int(a.size),
        "mean_ms": float(a.mean()),
        "p50_ms": float(np.percentile(a, 50)),
        "p90_ms": float(np.percentile(a, 90)),
        "p99_ms": float(np.percentile(a, 99)),
        "p999_ms": float(np.percentile(a, 99.9)),
        "max_ms": float(a.max()),
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    ap = argparse.ArgumentParser(
        prog="python -m tools.bench_baseline", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--spec", type=Path, default=None)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=Path)
    src.add_argument("--synthetic", help="WxH")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--nms", choices=["cv2", "numpy"], default="cv2")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    if args.nms == "cv2":
        pp_mod.batched_nms_mmcv = nms_cv2  # type: ignore[assignment]
    if args.threads > 0:
        cv2.setNumThreads(args.threads)

    t0 = time.perf_counter_ns()
    spec = load_spec(args.model, args.spec)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.inter_op_num_threads = 1
    if args.threads > 0:
        opts.intra_op_num_threads = args.threads
    sess = ort.InferenceSession(
        str(args.model), opts, providers=["CPUExecutionProvider"]
    )
    session_ms = (time.perf_counter_ns() - t0) / 1e6
    out_names = []
    for lv in spec.head.levels:
        for nm in (lv.cls, lv.reg) + ((lv.centerness,) if lv.centerness else ()):
            if nm not in out_names:
                out_names.append(nm)

    if args.images is not None:
        files = expand_inputs([str(args.images)])
        if not files:
            print(f"error: {args.images}: no images", file=sys.stderr)
            return 2
        blobs = [(f, f.read_bytes()) for f in files]
        source = str(args.images)
    else:
        w, h = (int(v) for v in args.synthetic.lower().split("x"))
        ok, enc = cv2.imencode(
            ".jpg", synthetic_image(w, h), [cv2.IMWRITE_JPEG_QUALITY, 90]
        )
        assert ok
        blobs = [(Path(f"synthetic_{w}x{h}.jpg"), enc.tobytes())]
        source = f"synthetic {w}x{h}"

    samples: dict[str, list[int]] = {s: [] for s in STAGES}
    n_dets = 0
    first_ms = 0.0
    total = args.warmup + args.iters
    wall0 = 0
    for i in range(total):
        if i == args.warmup:
            wall0 = time.perf_counter_ns()
        path, data = blobs[i % len(blobs)]
        a = time.perf_counter_ns()
        bgr = decode_image(data, path, spec.input.exif_orientation)
        b = time.perf_counter_ns()
        tensor, meta = preprocess(spec.input, bgr)
        c = time.perf_counter_ns()
        outs = sess.run(out_names, {spec.input.name: tensor})
        d = time.perf_counter_ns()
        outputs = {
            n: np.asarray(o, dtype=np.float32)
            for n, o in zip(out_names, outs, strict=True)
        }
        dets = postprocess(spec, flatten_levels(spec, outputs, meta), meta)
        e = time.perf_counter_ns()
        if i == 0:
            first_ms = (e - a) / 1e6
        if i >= args.warmup:
            for s, v in zip(STAGES, (b - a, c - b, d - c, e - d, e - a), strict=True):
                samples[s].append(v)
            n_dets += int(dets.scores.shape[0])
    wall_s = (time.perf_counter_ns() - wall0) / 1e9

    report: dict[str, Any] = {
        "tool": f"python baseline (onnxruntime {ort.__version__}, opencv {cv2.__version__}, numpy {np.__version__}, nms {args.nms})",
        "model": str(args.model),
        "source": source,
        "ep": "cpu",
        "threads": args.threads,
        "batch": 1,
        "mode": "sequential",
        "warmup": args.warmup,
        "iters": args.iters,
        "one_time": {"session_create_ms": session_ms, "first_iteration_ms": first_ms},
        "stages": {s: stats(v) for s, v in samples.items()},
        "throughput_ips": args.iters / wall_s if wall_s > 0 else 0.0,
        "detections_per_image": n_dets / max(args.iters, 1),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    text = json.dumps(report, indent=2)
    if args.json is not None:
        out_dir = args.json.parent if str(args.json.parent) else Path(".")
        with tempfile.NamedTemporaryFile(
            "w", dir=out_dir, delete=False, suffix=".tmp"
        ) as f:
            f.write(text)
        os.replace(f.name, args.json)
    print(f"{'stage':<12} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    for s in STAGES:
        st = report["stages"][s]
        print(
            f"{s:<12} {st['p50_ms']:>9.3f} {st['p90_ms']:>9.3f} {st['p99_ms']:>9.3f} {st['max_ms']:>9.3f}"
        )
    print(
        f"throughput {report['throughput_ips']:.2f} images/s, {report['detections_per_image']:.1f} detections/image"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
