"""Summary of `scripts/bench-int8.sh`: per model and thread count, the median over rounds of
the FP32 and INT8 p50 latencies (inference, bare `Session::run`, end to end) and the median
of the per-round FP32 / INT8 ratios (each round's two runs were back to back).

    tools/.venv/bin/python -m tools.bench_int8_summary target/bench-int8

Reads `<model>.<fp32|int8>.t<threads>.r<round>.json` (`anchorkit bench --json` reports);
prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

NAME = re.compile(
    r"^(?P<model>.+)\.(?P<prec>fp32|int8)\.t(?P<t>\d+)\.r(?P<r>\d+)\.json$"
)


def p50s(report: dict[str, Any]) -> dict[str, float]:
    """p50 (ms) of inference, bare `Session::run` and end to end of one report."""
    st = report["stages"]
    out = {
        "inference": float(st["inference"]["p50_ms"]),
        "end_to_end": float(st["end_to_end"]["p50_ms"]),
    }
    bare = report.get("bare_run")
    if bare:
        out["bare"] = float(bare["latency"]["p50_ms"])
    return out


def summarize(directory: Path) -> list[str]:
    """Markdown rows (with header) for the reports in `directory`."""
    runs: dict[tuple[str, int], dict[int, dict[str, dict[str, float]]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for p in sorted(directory.glob("*.json")):
        m = NAME.match(p.name)
        if not m:
            continue
        rep = json.loads(p.read_text())
        runs[(m["model"], int(m["t"]))][int(m["r"])][m["prec"]] = p50s(rep)
    header = (
        "| model | threads | rounds | inference p50 FP32 / INT8 (ms) | ratio | "
        "bare Session::run p50 FP32 / INT8 | ratio | end-to-end p50 FP32 / INT8 | ratio |"
    )
    rows = [header, "|---|---|---|---|---|---|---|---|---|"]
    for (model, t), per_round in sorted(runs.items()):
        pairs = [v for v in per_round.values() if "fp32" in v and "int8" in v]
        if not pairs:
            continue
        cells = []
        for k in ("inference", "bare", "end_to_end"):
            if not all(k in v["fp32"] and k in v["int8"] for v in pairs):
                cells += ["-", "-"]
                continue
            f = statistics.median(v["fp32"][k] for v in pairs)
            i = statistics.median(v["int8"][k] for v in pairs)
            ratio = statistics.median(v["fp32"][k] / v["int8"][k] for v in pairs)
            cells += [f"{f:.2f} / {i:.2f}", f"**{ratio:.2f}x**"]
        rows.append(f"| `{model}` | {t} | {len(pairs)} | " + " | ".join(cells) + " |")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", type=Path)
    a = ap.parse_args(argv)
    rows = summarize(a.dir)
    if len(rows) <= 2:
        print(f"error: {a.dir}: no paired FP32/INT8 reports", file=sys.stderr)
        return 2
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
