"""Paired latency of two ONNX models on the same inputs: one `Session::run` of each in turn,
per iteration, so load changes on a shared machine hit both alike. Reports per model the
median wall time and, with `--threads 1` (ONNX Runtime then runs the kernels on the calling
thread), the median thread CPU time, which excludes time spent descheduled; and the median of
the per-iteration ratios A / B.

    tools/.venv/bin/python -m tools.bench_paired --a models/m.onnx --b models/m.int8.onnx
        --images DIR [--num 24] [--threads 1] [--iters 300]

Inputs are the first `--num` images of DIR (sorted), preprocessed by the reference pipeline
with the spec of `--a`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from .reference.detect import expand_inputs
from .reference.preprocess import load_image, preprocess
from .reference.spec import load_spec


def session(model: Path, threads: int) -> ort.InferenceSession:
    """A CPU session with `threads` intra-op threads and 1 inter-op thread."""
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.log_severity_level = 3
    return ort.InferenceSession(str(model), o, providers=["CPUExecutionProvider"])


def timed(
    s: ort.InferenceSession, name: str, x: npt.NDArray[np.float32]
) -> tuple[float, float]:
    """(wall ms, thread CPU ms) of one run."""
    w, c = time.perf_counter(), time.thread_time()
    s.run(None, {name: x})
    return 1e3 * (time.perf_counter() - w), 1e3 * (time.thread_time() - c)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", type=Path, required=True, help="reference model (e.g. FP32)")
    ap.add_argument("--b", type=Path, required=True, help="compared model (e.g. INT8)")
    ap.add_argument("--images", required=True)
    ap.add_argument("--num", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=300)
    a = ap.parse_args(argv)
    spec = load_spec(a.a)
    files = expand_inputs([a.images])[: a.num]
    if not files:
        print(f"error: {a.images}: no images", file=sys.stderr)
        return 2
    xs = [preprocess(spec.input, load_image(p))[0] for p in files]
    sa, sb = session(a.a, a.threads), session(a.b, a.threads)
    name = spec.input.name
    for x in xs[:5]:
        sa.run(None, {name: x})
        sb.run(None, {name: x})
    wa, wb, ca, cb = [], [], [], []
    for i in range(a.iters):
        x = xs[i % len(xs)]
        first, second = (sa, sb) if i % 2 == 0 else (sb, sa)
        r1, r2 = timed(first, name, x), timed(second, name, x)
        (ra, rb) = (r1, r2) if i % 2 == 0 else (r2, r1)
        wa.append(ra[0])
        wb.append(rb[0])
        ca.append(ra[1])
        cb.append(rb[1])
    med = statistics.median
    print(
        f"{a.a.name} vs {a.b.name}, {len(xs)} images, threads {a.threads}, {a.iters} pairs"
    )
    print(
        f"wall p50 ms: {med(wa):.2f} / {med(wb):.2f}; "
        f"median paired ratio {med(x / y for x, y in zip(wa, wb, strict=True)):.2f}x"
    )
    if a.threads == 1:
        print(
            f"thread CPU p50 ms: {med(ca):.2f} / {med(cb):.2f}; "
            f"median paired ratio {med(x / y for x, y in zip(ca, cb, strict=True)):.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
