"""pycocotools reference for `anchorkit eval`: the 12 COCO numbers and per-class AP as JSON.

Usage: python tools/coco_eval_ref.py GT.json RESULTS.json [--out FILE]

Runs `COCOeval(gt, dt, "bbox")` unchanged (evaluate, accumulate, summarize) and writes
`{"stats": {AP, AP50, ...}, "per_class": [{category_id, ap}], "iou_thrs": [...], "rec_thrs":
[...]}` to stdout or FILE; pycocotools' own prints go to stderr. Per-class AP is the mean of
`precision[:, :, k, 0, -1]` over entries > -1 (-1 if none), as anchorkit computes it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

import numpy as np
from pycocotools.coco import COCO  # type: ignore[import-untyped]
from pycocotools.cocoeval import COCOeval  # type: ignore[import-untyped]

STAT_NAMES = [
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
]


def cocoeval(gt: COCO, results: list[dict[str, Any]]) -> COCOeval:
    """`COCOeval(gt, dt, "bbox")` of COCO result dicts, evaluated, accumulated and summarized
    (the summary is printed to stdout). An empty `results` is an empty result set."""
    if results:
        dt = gt.loadRes(results)
    else:
        # loadRes cannot take an empty list (it reads anns[0]); build the empty result set.
        dt = COCO()
        dt.dataset = {
            "images": list(gt.dataset["images"]),
            "categories": gt.dataset["categories"],
            "annotations": [],
        }
        dt.createIndex()
    ev = COCOeval(gt, dt, "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev


def stats_by_name(ev: COCOeval) -> dict[str, float]:
    """The 12 summary numbers of a summarized `COCOeval`, by name (AP, AP50, ...)."""
    return {n: float(v) for n, v in zip(STAT_NAMES, ev.stats, strict=True)}


def evaluate(gt_path: str, results_path: str) -> dict[str, Any]:
    """Evaluate a COCO results file against a COCO ground truth file with pycocotools."""
    with contextlib.redirect_stdout(sys.stderr):
        gt = COCO(gt_path)
        with open(results_path) as f:
            results = json.load(f)
        ev = cocoeval(gt, results)
    precision = ev.eval["precision"]
    per_class = []
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        per_class.append(
            {"category_id": int(cat_id), "ap": float(np.mean(p)) if p.size else -1.0}
        )
    return {
        "stats": stats_by_name(ev),
        "per_class": per_class,
        "iou_thrs": [float(x) for x in ev.params.iouThrs],
        "rec_thrs": [float(x) for x in ev.params.recThrs],
    }


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gt", help="COCO instances JSON")
    ap.add_argument("results", help="COCO results JSON array")
    ap.add_argument("--out", help="write the JSON here instead of stdout")
    args = ap.parse_args(argv)
    out = json.dumps(evaluate(args.gt, args.results))
    if args.out:
        with open(args.out, "w") as f:
            f.write(out)
    else:
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
