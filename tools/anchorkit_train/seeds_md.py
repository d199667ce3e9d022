"""Print a `models/MODELS.md` table of test metrics over training seeds: mean, sample standard
deviation and the per-seed values, for groups of runs of the same method.

Each source is an exported ONNX model (the `test_metrics` of its embedded spec, measured with
onnxruntime at export time) or a `train.py` output directory (the last epoch of its `log.jsonl`,
measured with the torch model in eval mode on the same 72 BCCD test images and the same
reference post-processing; it equals onnxruntime within the export parity tolerance).

    tools/.venv/bin/python -m tools.anchorkit_train.seeds_md \
        "FCOS=models/bccd_fcos.onnx,tools/runs/fcos_s1,tools/runs/fcos_s2" \
        "Pseudo-IoU=models/bccd_piou.onnx,tools/runs/piou_s1"
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import onnx

from ..reference.spec import METADATA_KEY
from .data import BCCD_CLASSES


@dataclass(frozen=True)
class SeedResult:
    """Test metrics of one training run: seed, AP, AP50, per-class AP50, where it was read."""

    seed: int
    ap: float
    ap50: float
    per_class_ap50: dict[str, float]
    source: str


def read_result(path: Path) -> SeedResult:
    """Metrics of an exported model (`.onnx`) or a run directory (`log.jsonl` last line with
    `val_AP`). Raises `ValueError` naming the path if it has none."""
    if path.suffix == ".onnx":
        m = onnx.load(str(path), load_external_data=False)
        meta = {p.key: p.value for p in m.metadata_props}
        if METADATA_KEY not in meta:
            raise ValueError(f"{path}: no '{METADATA_KEY}' metadata")
        pv = json.loads(meta[METADATA_KEY]).get("provenance", {})
        t = pv.get("test_metrics")
        if t is None:
            raise ValueError(f"{path}: spec provenance has no test_metrics")
        return SeedResult(
            int(pv["seed"]), t["AP"], t["AP50"], dict(t["per_class_AP50"]), str(path)
        )
    log = path / "log.jsonl"
    if not log.is_file():
        raise ValueError(
            f"{path}: neither an .onnx file nor a run directory with log.jsonl"
        )
    last = None
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        if "val_AP" in rec:
            last = rec
    if last is None:
        raise ValueError(f"{log}: no evaluated epoch")
    args = json.loads((path / "args.json").read_text())
    epochs = int(args["epochs"])
    if int(last["epoch"]) != epochs - 1:
        raise ValueError(
            f"{log}: last evaluated epoch {last['epoch'] + 1} of {epochs} (run unfinished)"
        )
    return SeedResult(
        int(args["seed"]),
        float(last["val_AP"]),
        float(last["val_AP50"]),
        {k: float(v) for k, v in last["val_AP50_per_class"].items()},
        str(path),
    )


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for a single value)."""
    n = len(values)
    mu = sum(values) / n
    sd = math.sqrt(sum((v - mu) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mu, sd


def cell(values: list[float]) -> str:
    """`mean ± sd (v0 / v1 / ...)`, or the single value marked single-seed."""
    mu, sd = mean_std(values)
    if len(values) == 1:
        return f"{mu:.3f} (1 seed)"
    per = " / ".join(f"{v:.3f}" for v in values)
    return f"{mu:.3f} ± {sd:.3f} ({per})"


def group_row(label: str, results: list[SeedResult]) -> str:
    """One markdown row for a group of runs of one method, seeds in ascending order."""
    rs = sorted(results, key=lambda r: r.seed)
    seeds = ", ".join(str(r.seed) for r in rs)
    cols = [cell([r.ap for r in rs]), cell([r.ap50 for r in rs])]
    cols += [cell([r.per_class_ap50[c] for r in rs]) for c in BCCD_CLASSES]
    return f"| {label} | {seeds} | " + " | ".join(cols) + " |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("groups", nargs="+", help="LABEL=SOURCE[,SOURCE...]")
    a = ap.parse_args(argv)
    print(
        "| method | seeds | AP | AP50 | AP50 RBC | AP50 WBC | AP50 Platelets |\n"
        "|---|---|---|---|---|---|---|"
    )
    for g in a.groups:
        label, _, srcs = g.partition("=")
        if not srcs:
            ap.error(f"{g!r}: expected LABEL=SOURCE[,SOURCE...]")
        try:
            results = [read_result(Path(s)) for s in srcs.split(",")]
        except ValueError as e:
            ap.error(str(e))
        print(group_row(label, results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
