"""Sanity tests of the pycocotools reference script used by anchorkit's eval parity test."""

from __future__ import annotations

import json
from pathlib import Path

from tools.coco_eval_ref import evaluate


def _write(p: Path, obj: object) -> str:
    p.write_text(json.dumps(obj))
    return str(p)


def _gt() -> dict[str, object]:
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100}],
        "categories": [{"id": 3, "name": "x"}, {"id": 4, "name": "y"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 3,
                "bbox": [10, 10, 50, 50],
                "area": 2500,
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 3,
                "bbox": [70, 70, 10, 10],
                "area": 100,
                "iscrowd": 0,
            },
        ],
    }


def test_one_hit_one_miss(tmp_path: Path) -> None:
    gt = _write(tmp_path / "gt.json", _gt())
    res = _write(
        tmp_path / "r.json",
        [{"image_id": 1, "category_id": 3, "bbox": [10, 10, 50, 50], "score": 0.9}],
    )
    out = evaluate(gt, res)
    assert abs(out["stats"]["AR100"] - 0.5) < 1e-12
    assert out["stats"]["APs"] == 0.0
    assert out["per_class"][1] == {"category_id": 4, "ap": -1.0}
    assert len(out["rec_thrs"]) == 101


def test_empty_results(tmp_path: Path) -> None:
    gt = _write(tmp_path / "gt.json", _gt())
    res = _write(tmp_path / "r.json", [])
    out = evaluate(gt, res)
    assert out["stats"]["AP"] == 0.0
