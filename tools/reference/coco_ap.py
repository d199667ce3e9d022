"""pycocotools box AP of an anchorkit detect JSONL file against a COCO annotation file.

    python -m tools.reference.coco_ap --jsonl OUT.jsonl [--ann ../shared/data/coco-val2017/instances_subset.json]
        [--json SUMMARY.json]

Images are matched to annotation ids by file name (the JSONL `image` path's basename);
`class_id` i maps to the i-th COCO category id in ascending id order (the 80 classes in their
usual order). Boxes are converted from xyxy to COCO xywh. All annotated images are evaluated,
so an image missing from the JSONL counts as one without detections.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Any

from pycocotools.coco import COCO

from tools.coco_eval_ref import STAT_NAMES, cocoeval, stats_by_name

DEFAULT_ANN = Path("../shared/data/coco-val2017/instances_subset.json")


def coco_results(jsonl: Path, gt: COCO) -> tuple[list[dict[str, Any]], list[str]]:
    """COCO result dicts for every detection of `jsonl`, and the image names not in `gt`."""
    by_name = {img["file_name"]: img["id"] for img in gt.dataset["images"]}
    cat_ids = sorted(gt.getCatIds())
    results: list[dict[str, Any]] = []
    unknown: list[str] = []
    for ln, line in enumerate(jsonl.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            name = Path(rec["image"]).name
            dets = rec["detections"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(
                f"{jsonl}:{ln}: not an anchorkit detect record ({e})"
            ) from None
        if name not in by_name:
            unknown.append(name)
            continue
        for d in dets:
            x1, y1, x2, y2 = (float(v) for v in d["bbox"])
            cid = int(d["class_id"])
            if not 0 <= cid < len(cat_ids):
                raise ValueError(
                    f"{jsonl}:{ln}: class_id {cid} outside the {len(cat_ids)} categories"
                )
            results.append(
                {
                    "image_id": by_name[name],
                    "category_id": cat_ids[cid],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(d["score"]),
                }
            )
    return results, unknown


def evaluate(
    jsonl: Path, ann: Path = DEFAULT_ANN, quiet: bool = True
) -> dict[str, float]:
    """Runs COCOeval (bbox) and returns the 12 standard stats by name (AP, AP50, ...)."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
        gt = COCO(str(ann))
        results, unknown = coco_results(jsonl, gt)
        if unknown:
            print(
                f"warning: {len(unknown)} images not in {ann} (e.g. {unknown[0]}) ignored",
                file=sys.stderr,
            )
        if not results:
            return dict.fromkeys(STAT_NAMES, 0.0)
        ev = cocoeval(gt, results)
    return stats_by_name(ev)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: prints the stats as JSON; exit code 2 on bad input."""
    ap = argparse.ArgumentParser(
        prog="python -m tools.reference.coco_ap", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--jsonl", required=True, type=Path)
    ap.add_argument("--ann", type=Path, default=DEFAULT_ANN)
    ap.add_argument("--json", type=Path, default=None, help="also write the stats here")
    args = ap.parse_args(argv)
    try:
        stats = evaluate(args.jsonl, args.ann)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(stats, indent=1)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
