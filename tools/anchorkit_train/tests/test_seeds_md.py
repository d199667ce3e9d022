"""The seeds table: metrics from exported specs and run logs, mean and sample std."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.anchorkit_train.seeds_md import group_row, mean_std, read_result

MODELS = Path(__file__).resolve().parents[3] / "models"


def write_run(d: Path, seed: int, epochs: int, ap: float, last_epoch: int) -> Path:
    d.mkdir()
    (d / "args.json").write_text(json.dumps({"seed": str(seed), "epochs": str(epochs)}))
    pc = {"RBC": 0.8, "WBC": 0.9, "Platelets": ap}
    lines = [
        {"epoch": 0, "val_AP": 0.1, "val_AP50": 0.2, "val_AP50_per_class": pc},
        {"epoch": last_epoch, "val_AP": ap, "val_AP50": 0.8, "val_AP50_per_class": pc},
    ]
    (d / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return d


def test_mean_and_sample_std() -> None:
    assert mean_std([0.5]) == (0.5, 0.0)
    mu, sd = mean_std([0.4, 0.5, 0.6])
    assert mu == pytest.approx(0.5)
    assert sd == pytest.approx(0.1)


def test_rows_from_runs_and_unfinished_run_is_an_error(tmp_path: Path) -> None:
    a = read_result(write_run(tmp_path / "a", 1, 12, 0.4, 11))
    b = read_result(write_run(tmp_path / "b", 2, 12, 0.6, 11))
    assert (a.seed, a.ap) == (1, 0.4)
    row = group_row("X", [b, a])
    assert row.startswith("| X | 1, 2 | 0.500 ± 0.141 (0.400 / 0.600) | 0.800 ± 0.000")
    with pytest.raises(ValueError, match="unfinished"):
        read_result(write_run(tmp_path / "c", 3, 12, 0.5, 7))
    with pytest.raises(ValueError, match="neither"):
        read_result(tmp_path / "missing")


def test_reads_an_exported_model() -> None:
    path = MODELS / "bccd_atss.onnx"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    r = read_result(path)
    assert r.seed == 0
    assert 0.3 < r.ap < r.ap50 < 1.0
    assert "(1 seed)" in group_row("ATSS", [r])
