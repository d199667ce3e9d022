"""The INT8 benchmark helpers: `tools.bench_int8_summary` (medians and paired ratios of
`anchorkit bench` reports) and `tools.bench_paired` (real sessions, a few iterations)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools import bench_int8_summary, bench_paired

ROOT = Path(__file__).resolve().parents[2]
BCCD = ROOT.parent / "shared" / "data" / "bccd" / "BCCD"


def report(inference: float, bare: float, e2e: float) -> dict[str, object]:
    st = {"p50_ms": 0.0}
    return {
        "stages": {
            "inference": {**st, "p50_ms": inference},
            "end_to_end": {**st, "p50_ms": e2e},
        },
        "bare_run": {"latency": {"p50_ms": bare}},
    }


def test_summary_takes_medians_and_per_round_ratios(tmp_path: Path) -> None:
    # Round 2 is loaded for both runs: the per-round ratio stays 2.
    rounds = {1: (10.0, 5.0), 2: (40.0, 20.0), 3: (12.0, 4.0)}
    for r, (f, i) in rounds.items():
        (tmp_path / f"m.fp32.t1.r{r}.json").write_text(json.dumps(report(f, f, f)))
        (tmp_path / f"m.int8.t1.r{r}.json").write_text(json.dumps(report(i, i, i)))
    (tmp_path / "m.fp32.t2.r1.json").write_text(json.dumps(report(1, 1, 1)))  # unpaired
    (tmp_path / "notes.json").write_text("{}")
    rows = bench_int8_summary.summarize(tmp_path)
    assert len(rows) == 3, rows
    assert rows[2].startswith("| `m` | 1 | 3 | 12.00 / 5.00 | **2.00x** |"), rows[2]
    assert bench_int8_summary.main([str(tmp_path / "empty")]) == 2


@pytest.mark.skipif(not BCCD.is_dir(), reason=f"{BCCD} is absent")
def test_paired_runs_real_sessions(capsys: pytest.CaptureFixture[str]) -> None:
    m = ROOT / "models" / "bccd_atss.onnx"
    q = ROOT / "models" / "bccd_atss.int8.onnx"
    rc = bench_paired.main(
        [
            "--a",
            str(m),
            "--b",
            str(q),
            "--images",
            str(BCCD / "JPEGImages"),
            "--num",
            "2",
        ]
        + ["--iters", "4"]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "4 pairs" in out and "thread CPU p50 ms" in out, out
