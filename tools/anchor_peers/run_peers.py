"""Side-by-side benchmark of anchorkit's anchor optimizers against the peers of
mmdet `tools/analysis_tools/optimize_anchors.py`, YOLOv5 `utils/autoanchor.py`, darknet
`calc_anchors` and martinzlocha/anchor-optimization on the same boxes (default: all 36,335
COCO val2017 boxes), each peer scored by its own objective.

Every peer gets the boxes in its own input space (mmdet: long side -> 608 per axis; YOLOv5:
long side -> 640; darknet: stretch to 416x416; Zlocha: keras-retinanet 800/1333 keep-ratio and
rows with x1 == 0 or y1 == 0 dropped, as it does). anchorkit is run by its CLI on exactly those
box sizes (a list file with one box per line, `--resize none`), and its solution is scored with
the peer's objective code. Times are the optimizer's own time (data loading excluded on both
sides). The quick peers (darknet, mmdet k-means, YOLOv5) run `--peer-repeats` times and
anchorkit `--repeats` times per peer, interleaved (peer, anchorkit, peer, ...) so that a busy
phase of a shared host slows both; medians are compared, and the speed-up against anchorkit's
slowest run is given too. Peers that would run for more than `--budget` seconds are run for a
fixed number of generations and their full time is extrapolated (marked "extrapolated").

Usage: python -m tools.anchor_peers.run_peers --anchorkit target/release/anchorkit \
    --yolov5-autoanchor DIR/yolov5/utils/autoanchor.py --out peers.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import peers
from .peers import F


def load_coco(path: Path) -> tuple[F, F]:
    """(boxes xywh `[N, 4]`, image sizes `[N, 2]` of each box's image), non-crowd only."""
    d = json.loads(path.read_text())
    sizes = {im["id"]: (im["width"], im["height"]) for im in d["images"]}
    b, s = [], []
    for a in d["annotations"]:
        if a.get("iscrowd", 0):
            continue
        x, y, w, h = a["bbox"]
        if w <= 0 or h <= 0:
            continue
        b.append((x, y, w, h))
        s.append(sizes[a["image_id"]])
    return np.asarray(b, dtype=np.float64), np.asarray(s, dtype=np.float64)


def anchorkit_runner(
    exe: Path, wh: F, args: list[str], tmp: Path, name: str
) -> Callable[[], dict[str, Any]]:
    """Write box sizes `wh` as a list file once; the returned function runs `anchorkit
    anchors` on it and returns its json report."""
    lst = tmp / f"{name}.txt"
    lst.write_text(
        "".join(
            f"b{i} 0,0,{float(w)!r},{float(h)!r},0\n" for i, (w, h) in enumerate(wh)
        )
    )
    out = tmp / f"{name}.json"
    cmd = [
        str(exe), "anchors", "--dataset", str(lst), "--format", "list", "--resize", "none",
        "--orig-size", "100000x100000", "--quiet", "--json", str(out), *args,
    ]  # fmt: skip

    def run() -> dict[str, Any]:
        subprocess.run(cmd, check=True, capture_output=True)
        return json.loads(out.read_text())

    return run


def interleaved(
    peer: Callable[[], Any],
    ak: Callable[[], dict[str, Any]],
    n_peer: int,
    n_ak: int,
) -> tuple[Any, list[float], dict[str, Any], list[float]]:
    """Alternate peer and anchorkit runs (peer, anchorkit, peer, ...) so that a busy phase of a
    shared host slows both sides; returns (peer result, peer seconds per run, anchorkit report,
    anchorkit optimizer seconds per run). anchorkit is seeded: every run must give the same
    anchors, which is checked."""
    res: Any = None
    rep: dict[str, Any] = {}
    t_peer: list[float] = []
    t_ak: list[float] = []
    for i in range(max(n_peer, n_ak)):
        if i < n_peer:
            res, t = peers.timed(peer)
            t_peer.append(t)
        if i < n_ak:
            r = ak()
            if rep and r["optimized"]["prior"] != rep["optimized"]["prior"]:
                raise SystemExit("anchorkit gave different anchors for the same seed")
            rep = r
            t_ak.append(float(r["optimized"]["seconds"]))
    return res, t_peer, rep, t_ak


def all_anchors(rep: dict[str, Any]) -> F:
    """Every (w, h) of every level of the optimized prior."""
    pri = rep["optimized"]["prior"]
    return np.asarray([wh for lvl in pri["per_level"] for wh in lvl], dtype=np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--boxes",
        type=Path,
        default=Path("../shared/data/coco-val2017/instances_val2017_boxes.json"),
    )
    ap.add_argument("--anchorkit", type=Path, default=Path("target/release/anchorkit"))
    ap.add_argument("--yolov5-autoanchor", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--budget",
        type=float,
        default=300.0,
        help="seconds per peer before extrapolating",
    )
    ap.add_argument("--mmdet-de-generations", type=int, default=3)
    ap.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="anchorkit runs per peer (median time reported)",
    )
    ap.add_argument(
        "--peer-repeats",
        type=int,
        default=3,
        help="runs of the darknet, mmdet k-means and YOLOv5 peers (median time reported)",
    )
    ap.add_argument("--out", type=Path, default=None, help="markdown table")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()

    xywh, size = load_coco(a.boxes)
    wh = xywh[:, 2:4]
    maxside = size.max(1, keepdims=True)
    rows: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="anchor_peers_"))
    seed = a.seed

    def row(peer: str, n: int, t_peer: float, how: str, method: str, t_ak: list[float],
            objective: str, v_peer: float, v_ak: float, higher: bool,
            peer_runs: list[float] | None = None) -> None:  # fmt: skip
        better = v_ak >= v_peer - 1e-12 if higher else v_ak <= v_peer + 1e-12
        med = float(np.median(t_ak))
        rows.append({
            "peer": peer, "boxes": n, "peer_s": t_peer, "peer_timing": how,
            "peer_runs_s": peer_runs or [t_peer],
            "anchorkit": method, "anchorkit_s": med, "anchorkit_runs_s": t_ak,
            "speedup": t_peer / med, "speedup_min_over_runs": t_peer / max(t_ak),
            "objective": objective, "peer_value": v_peer, "anchorkit_value": v_ak,
            "anchorkit_equal_or_better": bool(better),
        })  # fmt: skip
        print(rows[-1], flush=True)

    def median_how(ts: list[float]) -> str:
        return f"median of {len(ts)} runs" if len(ts) > 1 else "measured"

    def free9(method: str) -> list[str]:
        """anchorkit arguments for 9 free shapes on P3-P5 (the peers' setting)."""
        strides = ["--k", "9", "--strides", "8,16,32", "--seed", str(seed)]
        return ["--method", method, "--layout", "free", *strides]

    # darknet: stretch to 416x416, k = 9
    wh_d = wh * (416.0 / size)
    (c, _), tp, rep, ta = interleaved(
        lambda: peers.darknet_kmeans(wh_d, 9, seed),
        anchorkit_runner(
            a.anchorkit,
            wh_d,
            free9("kmeans"),
            tmp,
            "darknet",
        ),
        a.peer_repeats,
        a.repeats,
    )
    ak = np.asarray(rep["optimized"]["shapes"])
    row("darknet calc_anchors (numpy reimpl.)", len(wh_d), float(np.median(tp)), median_how(tp),
        "kmeans --layout free", ta, "mean IoU", peers.mean_iou(wh_d, c), peers.mean_iou(wh_d, ak),
        True, tp)  # fmt: skip

    # mmdet: long side -> 608 per axis
    wh_m = wh / (maxside / 608.0)
    (c, _), tp, rep, t_ak = interleaved(
        lambda: peers.mmdet_kmeans(wh_m, 9, 1000, seed),
        anchorkit_runner(
            a.anchorkit,
            wh_m,
            free9("kmeans"),
            tmp,
            "mmdet",
        ),
        a.peer_repeats,
        a.repeats,
    )
    ak = np.asarray(rep["optimized"]["shapes"])
    v_ak = peers.mean_iou(wh_m, ak)
    row("mmdet optimize_anchors k-means (torch reimpl.)", len(wh_m), float(np.median(tp)),
        median_how(tp), "kmeans --layout free", t_ak, "mean IoU", peers.mean_iou(wh_m, c), v_ak,
        True, tp)  # fmt: skip
    g = a.mmdet_de_generations
    (c, res), t = peers.timed(
        lambda: peers.mmdet_de(wh_m, 9, (608, 608), g, seed, polish=False, tol=0.0)
    )
    # scipy: init population (270 evaluations) + g generations of 270 -> scale to 1000 gens
    per_eval = t / res.nfev
    t_full = per_eval * 270 * 1001
    row(f"mmdet optimize_anchors DE (scipy, {g} of 1000 generations run)", len(wh_m), t_full,
        f"extrapolated from {res.nfev} evaluations in {t:.1f} s", "kmeans --layout free", t_ak,
        f"mean IoU (peer after {g} generations)", peers.mean_iou(wh_m, c), v_ak, True)  # fmt: skip

    # YOLOv5: long side -> 640, real package code
    labels = [
        np.array([[0, 0.5, 0.5, w / s[0], h / s[1]]]) for (w, h), s in zip(wh, size)
    ]
    wh_y = wh * (640.0 / maxside)
    (k5, src), tp, rep, ta = interleaved(
        lambda: peers.yolov5_kmean_anchors(
            size, labels, 9, 640, seed, a.yolov5_autoanchor
        ),
        anchorkit_runner(
            a.anchorkit,
            wh_y,
            free9("evolve"),
            tmp,
            "yolov5",
        ),
        a.peer_repeats,
        a.repeats,
    )
    ak = np.asarray(rep["optimized"]["shapes"])
    sp, sa = peers.yolo_scores(wh_y, k5), peers.yolo_scores(wh_y, ak)
    row(f"YOLOv5 kmean_anchors ({src.split(' (')[0]})", len(wh_y), float(np.median(tp)),
        median_how(tp), "evolve --layout free", ta, "YOLOv5 fitness", sp["fitness"],
        sa["fitness"], True, tp)  # fmt: skip
    rows[-1]["bpr"] = {"peer": sp["bpr"], "anchorkit": sa["bpr"]}

    # Zlocha: keras-retinanet keep-ratio 800/1333, drop rows with x1 == 0 or y1 == 0
    keep = (xywh[:, 0] != 0) & (xywh[:, 1] != 0)
    sc = np.minimum(800.0 / size.min(1), 1333.0 / size.max(1))[:, None]
    wh_z = (wh * sc)[keep]
    start = time.perf_counter()
    gens = [0]

    def cb(*_: Any, **__: Any) -> bool:
        gens[0] += 1
        return time.perf_counter() - start > a.budget

    (r, s, res), tp, rep, ta = interleaved(
        lambda: peers.zlocha_de(wh_z, seed, callback=cb),
        anchorkit_runner(
            a.anchorkit,
            wh_z,
            ["--method", "de", "--layout", "fpn", "--k", "9", "--seed", str(seed)],
            tmp,
            "zlocha",
        ),
        1,
        a.repeats,
    )
    t = tp[0]
    stopped = t > a.budget
    ak = all_anchors(rep)
    v_peer = peers.zlocha_focal(
        wh_z, peers.retinanet_anchors(r, s, [32, 64, 128, 256, 512])
    )
    how = (f"stopped at the {a.budget:.0f} s budget after {gens[0]} generations"
           if stopped else f"measured, converged in {gens[0]} generations")  # fmt: skip
    row("Zlocha anchor-optimization DE (numpy reimpl.)", len(wh_z), t, how, "de --layout fpn",
        ta, "focal (lower better)", v_peer, peers.zlocha_focal(wh_z, ak), False)  # fmt: skip

    lines = [
        "| peer | boxes | peer time | anchorkit | anchorkit time (median; runs) | speed-up (median; vs slowest run) | objective | peer | anchorkit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for x in rows:
        runs = ", ".join(f"{v:.3f}" for v in x["anchorkit_runs_s"])
        lines.append(
            f"| {x['peer']} | {x['boxes']} | {x['peer_s']:.2f} s ({x['peer_timing']}) | "
            f"`{x['anchorkit']}` | {x['anchorkit_s']:.3f} s ({runs}) | "
            f"{x['speedup']:.0f}x; {x['speedup_min_over_runs']:.0f}x | "
            f"{x['objective']} | {x['peer_value']:.5f} | {x['anchorkit_value']:.5f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
