"""Side-by-side latency comparison: `anchorkit bench` against the Python baseline.

    python -m tools.bench_compare --anchorkit target/release/anchorkit --model M.onnx [--spec S]
        --images DIR --threads N [--rounds 3] [--iters 50] [--warmup 5] [--workers 1]
        [--out DIR] [--markdown FILE]

Runs, per round and interleaved so that load changes on a shared machine hit both alike:
`anchorkit bench` (sequential), `python -m tools.bench_baseline` (same model, images, thread
count, iterations) and `anchorkit bench --pipeline`. Prints the median over rounds of each
figure and of the per-round ratios (Python / anchorkit latency; pipeline throughput / bare
`Session::run` throughput), and writes all reports plus `summary.json` to `--out`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def _run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(
            f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr}"
        )


def _load(p: Path) -> dict[str, Any]:
    with open(p) as f:
        data: dict[str, Any] = json.load(f)
    return data


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    ap = argparse.ArgumentParser(
        prog="python -m tools.bench_compare", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--anchorkit", required=True, type=Path)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--spec", type=Path, default=None)
    ap.add_argument("--images", required=True, type=Path)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--markdown", type=Path, default=None, help="append the result table here"
    )
    args = ap.parse_args(argv)

    out = args.out or Path(tempfile.mkdtemp(prefix="bench_compare_"))
    out.mkdir(parents=True, exist_ok=True)
    spec = ["--spec", str(args.spec)] if args.spec else []
    common = [
        "--model",
        str(args.model),
        *spec,
        "--images",
        str(args.images),
        "--threads",
        str(args.threads),
    ]
    counts = ["--warmup", str(args.warmup), "--iters", str(args.iters)]
    rows: list[dict[str, float]] = []
    for r in range(args.rounds):
        rs, py, pl = (
            out / f"r{r}_anchorkit.json",
            out / f"r{r}_python.json",
            out / f"r{r}_pipeline.json",
        )
        _run(
            [
                str(args.anchorkit),
                "bench",
                *common,
                *counts,
                "--no-bare",
                "--json",
                str(rs),
            ]
        )
        _run(
            [
                sys.executable,
                "-m",
                "tools.bench_baseline",
                *common,
                *counts,
                "--json",
                str(py),
            ]
        )
        _run(
            [
                str(args.anchorkit),
                "bench",
                *common,
                *counts,
                "--pipeline",
                "--workers",
                str(args.workers),
                "--json",
                str(pl),
            ]
        )
        a, p, q = _load(rs), _load(py), _load(pl)
        row = {
            "rs_e2e_p50": a["stages"]["end_to_end"]["p50_ms"],
            "py_e2e_p50": p["stages"]["end_to_end"]["p50_ms"],
            "rs_e2e_mean": a["stages"]["end_to_end"]["mean_ms"],
            "py_e2e_mean": p["stages"]["end_to_end"]["mean_ms"],
            "rs_post_p50": a["stages"]["postprocess"]["p50_ms"],
            "py_post_p50": p["stages"]["postprocess"]["p50_ms"],
            "rs_post_mean": a["stages"]["postprocess"]["mean_ms"],
            "py_post_mean": p["stages"]["postprocess"]["mean_ms"],
            "rs_pre_p50": a["stages"]["preprocess"]["p50_ms"],
            "py_pre_p50": p["stages"]["preprocess"]["p50_ms"],
            "rs_decode_p50": a["stages"]["decode"]["p50_ms"],
            "py_decode_p50": p["stages"]["decode"]["p50_ms"],
            "rs_infer_p50": a["stages"]["inference"]["p50_ms"],
            "py_infer_p50": p["stages"]["inference"]["p50_ms"],
            "pipeline_ips": q["throughput_ips"],
            "bare_ips": q["bare_run"]["throughput_ips"],
        }
        row["e2e_ratio_p50"] = row["py_e2e_p50"] / row["rs_e2e_p50"]
        row["e2e_ratio_mean"] = row["py_e2e_mean"] / row["rs_e2e_mean"]
        row["post_ratio_p50"] = row["py_post_p50"] / row["rs_post_p50"]
        row["post_ratio_mean"] = row["py_post_mean"] / row["rs_post_mean"]
        row["pipeline_share"] = row["pipeline_ips"] / row["bare_ips"]
        rows.append(row)
        print(
            f"round {r}: e2e p50 {row['rs_e2e_p50']:.2f} vs {row['py_e2e_p50']:.2f} ms "
            f"({row['e2e_ratio_p50']:.2f}x), post p50 {row['rs_post_p50']:.3f} vs {row['py_post_p50']:.2f} ms "
            f"({row['post_ratio_p50']:.1f}x), pipeline {row['pipeline_ips']:.2f} / bare {row['bare_ips']:.2f} "
            f"images/s = {100 * row['pipeline_share']:.1f}%",
            flush=True,
        )
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    summary = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "rounds": rows,
        "median": med,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    table = (
        f"| {args.model.name} ({args.threads} threads, {args.iters} iters x {args.rounds} rounds) "
        f"| anchorkit | Python | ratio |\n|---|---|---|---|\n"
        f"| decode p50 ms | {med['rs_decode_p50']:.2f} | {med['py_decode_p50']:.2f} | "
        f"{med['py_decode_p50'] / med['rs_decode_p50']:.2f}x |\n"
        f"| preprocess p50 ms | {med['rs_pre_p50']:.2f} | {med['py_pre_p50']:.2f} | "
        f"{med['py_pre_p50'] / med['rs_pre_p50']:.2f}x |\n"
        f"| inference p50 ms | {med['rs_infer_p50']:.2f} | {med['py_infer_p50']:.2f} | "
        f"{med['py_infer_p50'] / med['rs_infer_p50']:.2f}x |\n"
        f"| postprocess p50 ms | {med['rs_post_p50']:.3f} | {med['py_post_p50']:.2f} | {med['post_ratio_p50']:.1f}x |\n"
        f"| postprocess mean ms | {med['rs_post_mean']:.3f} | {med['py_post_mean']:.2f} | {med['post_ratio_mean']:.1f}x |\n"
        f"| end-to-end p50 ms | {med['rs_e2e_p50']:.2f} | {med['py_e2e_p50']:.2f} | {med['e2e_ratio_p50']:.2f}x |\n"
        f"| end-to-end mean ms | {med['rs_e2e_mean']:.2f} | {med['py_e2e_mean']:.2f} | {med['e2e_ratio_mean']:.2f}x |\n"
        f"| `--pipeline` ({args.workers} worker) / bare `Session::run` images/s | {med['pipeline_ips']:.2f} / "
        f"{med['bare_ips']:.2f} | | {100 * med['pipeline_share']:.1f}% |\n"
    )
    print(table)
    if args.markdown is not None:
        with open(args.markdown, "a") as f:
            f.write(table + "\n")
    print(f"reports in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
