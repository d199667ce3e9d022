#!/usr/bin/env python3
"""Agreement of two anchorkit JSONL detection files (`detect --jsonl`), image by image.

    python3 scripts/compare_dets.py REF.jsonl OTHER.jsonl [--json]

Per image, detections are compared rank by rank (both lists are sorted by score): a pair
"agrees" when the class is the same at the same rank. Reports the share of the reference's
detections that agree, the largest score and box-coordinate differences over agreeing pairs,
the share with |score diff| <= 1e-4, and how many images have identical detection counts.
Rank agreement is fragile among the many low-score detections (a 1e-3 score change reorders
them), so confident detections (reference score >= 0.3) are also matched by content: the
same-class detection of the other file with the highest IoU; reported: the share matched at
IoU >= 0.9, and the largest score difference of those.
Standard library only (runs on the GPU machine's bare python3).
"""

from __future__ import annotations

import json
import sys


def load(path: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                out[r["image"]] = r["detections"]
    return out


def iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def agreement(ref: dict[str, list[dict]], other: dict[str, list[dict]]) -> dict:
    n_ref = n_other = same = within = same_count_images = 0
    max_score = max_box = 0.0
    conf = conf_matched = 0
    conf_max_score = 0.0
    for img, a in ref.items():
        b = other.get(img, [])
        for x in a:
            if x["score"] < 0.3:
                continue
            conf += 1
            cands = [y for y in b if y["class_id"] == x["class_id"]]
            if not cands:
                continue
            y = max(cands, key=lambda y: iou(x["bbox"], y["bbox"]))
            if iou(x["bbox"], y["bbox"]) >= 0.9:
                conf_matched += 1
                conf_max_score = max(conf_max_score, abs(x["score"] - y["score"]))
        n_ref += len(a)
        n_other += len(b)
        same_count_images += len(a) == len(b)
        for x, y in zip(a, b):
            if x["class_id"] != y["class_id"]:
                continue
            same += 1
            d = abs(x["score"] - y["score"])
            max_score = max(max_score, d)
            within += d <= 1e-4
            max_box = max(max_box, *(abs(p - q) for p, q in zip(x["bbox"], y["bbox"])))
    return {
        "images": len(ref),
        "images_missing": sum(1 for i in ref if i not in other),
        "ref_detections": n_ref,
        "detections": n_other,
        "images_with_same_count": same_count_images,
        "same_class_and_rank": same,
        "same_class_and_rank_share": same / max(n_ref, 1),
        "score_within_1e-4_share": within / max(n_ref, 1),
        "max_score_diff": max_score,
        "max_box_diff_px": max_box,
        "confident_ref_detections": conf,
        "confident_matched_iou_0.9_share": conf_matched / max(conf, 1),
        "confident_max_score_diff": conf_max_score,
    }


def main(argv: list[str]) -> int:
    args = [a for a in argv if a != "--json"]
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    r = agreement(load(args[0]), load(args[1]))
    if "--json" in argv:
        print(json.dumps(r))
    else:
        for k, v in r.items():
            print(f"{k:28} {v:.6g}" if isinstance(v, float) else f"{k:28} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
