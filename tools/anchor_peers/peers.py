"""The anchor-optimization peers (mmdet `optimize_anchors.py`, YOLOv5 AutoAnchor, darknet
`calc_anchors`, martinzlocha/anchor-optimization), as functions
over box sizes `wh` (float array `[N, 2]`, pixels in each peer's own input space).

- `yolov5_kmean_anchors`: the real ultralytics/yolov5 `utils/autoanchor.py::kmean_anchors`
  from the `yolov5` PyPI package when its file is given (loaded with stubs for the logging
  helpers it imports), else `yolov5_kmean_anchors_reimpl`, a line-by-line reimplementation.
- `darknet_kmeans`: AlexeyAB/darknet `do_kmeans` (random distinct centres, IoU assignment,
  mean update keeping a coordinate that would become 0, <= 1000 iterations).
- `mmdet_kmeans` / `mmdet_de`: mmdetection `tools/analysis_tools/optimize_anchors.py`
  `YOLOKMeansAnchorOptimizer` (torch, random init with duplicates, empty cluster -> zero box)
  and `YOLODEAnchorOptimizer` (scipy DE, best1bin, popsize 15, tol 1e-4, mutation (0.5, 1),
  recombination 0.7, immediate updating, polish).
- `zlocha_de`: martinzlocha/anchor-optimization (RetinaNet ratios `[1, r, 1/r]` in (1, 4),
  scales in (0.4, 2) on base sizes 32..512, focal objective, scipy DE popsize 15, mutation
  0.5, recombination 0.7, tol 0.01, polish).

Objectives (`mean_iou`, `yolo_scores`, `zlocha_focal`) score any solution the way each peer
does, so every solution can be cross-scored.
"""

from __future__ import annotations

import importlib.util
import random
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.optimize import differential_evolution

from tools.anchorkit_train.anchors import box_iou

F = NDArray[np.float64]


# ----------------------------------------------------------------- objectives


def centred_iou(wh: F, anchors: F) -> F:
    """IoU `[N, K]` of boxes and anchors both centred at the origin."""
    inter = np.minimum(wh[:, None, 0], anchors[None, :, 0]) * np.minimum(
        wh[:, None, 1], anchors[None, :, 1]
    )
    union = (
        (wh[:, 0] * wh[:, 1])[:, None] + (anchors[:, 0] * anchors[:, 1])[None] - inter
    )
    return np.asarray(inter / union, dtype=np.float64)


def best_iou(wh: F, anchors: F, chunk: int = 8192) -> F:
    """Best centred IoU per box."""
    out = np.empty(len(wh))
    for s in range(0, len(wh), chunk):
        out[s : s + chunk] = centred_iou(wh[s : s + chunk], anchors).max(1)
    return out


def mean_iou(wh: F, anchors: F) -> float:
    """darknet / mmdet objective: mean over boxes of the best IoU (higher is better)."""
    return float(best_iou(wh, anchors).mean())


def yolo_scores(wh: F, anchors: F, thr: float = 4.0) -> dict[str, float]:
    """YOLOv5 `fitness` (on boxes with a side >= 2 px), `bpr` and `aat` (on all boxes)."""
    t = 1.0 / thr

    def metric(w: F) -> tuple[F, F]:
        r = w[:, None] / anchors[None]
        x = np.minimum(r, 1 / r).min(2)
        return x, x.max(1)

    x, best = metric(wh)
    filt = wh[(wh >= 2.0).any(1)]
    _, bf = metric(filt)
    return {
        "fitness": float((bf * (bf > t)).mean()),
        "bpr": float((best > t).mean()),
        "aat": float((x > t).sum(1).mean()),
    }


def retinanet_anchors(ratios: F, scales: F, base_sizes: list[int]) -> F:
    """keras-retinanet `generate_anchors` (w, h) for every base size (ratio-major, h/w)."""
    out = []
    for b in base_sizes:
        for r in ratios:
            for s in scales:
                area = (b * s) ** 2
                w = np.sqrt(area / r)
                out.append((w, w * r))
    return np.asarray(out, dtype=np.float64)


def zlocha_focal(wh: F, anchors: F) -> float:
    """Zlocha focal objective `mean(-(1 - m)^2 ln m)` (lower is better)."""
    m = np.maximum(best_iou(wh, anchors), 1e-12)
    return float(np.mean(-((1 - m) ** 2) * np.log(m)))


# ----------------------------------------------------------------- darknet


def darknet_kmeans(wh: F, k: int, seed: int) -> tuple[F, int]:
    """AlexeyAB/darknet `do_kmeans` with `random_centers`; returns (centres, iterations)."""
    rng = np.random.default_rng(seed)
    centres = wh[rng.choice(len(wh), k, replace=False)].copy()
    assign = np.full(len(wh), -1)
    it = 0
    for it in range(1, 1001):
        new = np.concatenate(
            [
                centred_iou(wh[s : s + 8192], centres).argmax(1)
                for s in range(0, len(wh), 8192)
            ]
        )
        if (new == assign).all():
            break
        assign = new
        for c in range(k):
            m = wh[assign == c]
            if len(m):
                mean = m.mean(0)
                centres[c] = np.where(mean == 0, centres[c], mean)
    return centres[np.argsort(centres.prod(1))], it


# ----------------------------------------------------------------- mmdet


def _centred_xyxy(wh: torch.Tensor) -> torch.Tensor:
    return torch.cat([-wh / 2, wh / 2], dim=1)


def mmdet_kmeans(wh: F, k: int, iters: int, seed: int) -> tuple[F, int]:
    """`YOLOKMeansAnchorOptimizer.kmeans_anchors` (torch, CPU)."""
    torch.manual_seed(seed)
    bboxes = _centred_xyxy(torch.tensor(wh, dtype=torch.float32))
    n = len(bboxes)
    cluster_center_idx = torch.randint(0, n, (k,))
    assignments = torch.zeros((n,), dtype=torch.long)
    cluster_centers = bboxes[cluster_center_idx]
    i = 0
    for i in range(iters):
        converged, assignments = _mmdet_expectation(
            bboxes, assignments, cluster_centers
        )
        if converged:
            break
        cluster_centers = _mmdet_maximization(bboxes, assignments, cluster_centers)
    c = cluster_centers
    out = (
        torch.stack([c[:, 2] - c[:, 0], c[:, 3] - c[:, 1]], dim=1)
        .numpy()
        .astype(np.float64)
    )
    return out[np.argsort(out.prod(1))], i


def _mmdet_maximization(
    b: torch.Tensor, a: torch.Tensor, c: torch.Tensor
) -> torch.Tensor:
    new = torch.zeros_like(c)
    for i in range(len(c)):
        mask = a == i
        if mask.sum():
            new[i, :] = b[mask].mean(0)
    return new


def _mmdet_expectation(
    b: torch.Tensor, a: torch.Tensor, c: torch.Tensor
) -> tuple[bool, torch.Tensor]:
    ious = box_iou(b, c)
    closest = ious.argmax(dim=1)
    converged = bool((closest == a).all())
    return converged, closest


def mmdet_de(
    wh: F,
    k: int,
    input_shape: tuple[int, int],
    maxiter: int,
    seed: int,
    polish: bool = True,
    tol: float = 1e-4,
) -> tuple[F, Any]:
    """`YOLODEAnchorOptimizer.differential_evolution` (scipy DE on 2k parameters)."""
    bboxes = _centred_xyxy(torch.tensor(wh, dtype=torch.float32))
    bounds = []
    for _ in range(k):
        bounds.extend([(0, input_shape[0]), (0, input_shape[1])])

    def avg_iou_cost(x: F) -> float:
        anchors = torch.tensor(np.asarray(x), dtype=torch.float32).reshape(-1, 2)
        ious = box_iou(bboxes, _centred_xyxy(anchors))
        return float(1 - ious.max(dim=1)[0].mean().item())

    res = differential_evolution(
        func=avg_iou_cost,
        bounds=bounds,
        strategy="best1bin",
        maxiter=maxiter,
        popsize=15,
        tol=tol,
        mutation=(0.5, 1),
        recombination=0.7,
        updating="immediate",
        disp=False,
        polish=polish,
        rng=seed,
    )
    a = np.asarray(res.x, dtype=np.float64).reshape(-1, 2)
    return a[np.argsort(a.prod(1))], res


# ----------------------------------------------------------------- Zlocha


def zlocha_de(
    wh: F,
    seed: int,
    maxiter: int = 1000,
    ratios_count: int = 3,
    scales_count: int = 3,
    callback: Callable[..., bool] | None = None,
) -> tuple[F, F, Any]:
    """martinzlocha/anchor-optimization `optimize_anchors` (focal objective, no strides)."""
    base_sizes = [32, 64, 128, 256, 512]
    m = (ratios_count - 1) // 2
    bounds = [(1.0, 4.0)] * m + [(0.4, 2.0)] * scales_count

    def unpack(x: F) -> tuple[F, F]:
        rs = [1.0]
        for r in x[:m]:
            rs += [float(r), 1.0 / float(r)]
        return np.asarray(rs), np.asarray(x[m:], dtype=np.float64)

    def cost(x: F) -> float:
        r, s = unpack(x)
        return zlocha_focal(wh, retinanet_anchors(r, s, base_sizes))

    res = differential_evolution(
        cost,
        bounds=bounds,
        popsize=15,
        mutation=0.5,
        recombination=0.7,
        tol=0.01,
        maxiter=maxiter,
        polish=True,
        rng=seed,
        callback=callback,
    )
    r, s = unpack(res.x)
    return r, s, res


# ----------------------------------------------------------------- YOLOv5


class _Shapes:
    """The minimal `dataset` object `kmean_anchors` reads: `shapes` and `labels`."""

    def __init__(self, shapes: F, labels: list[F]) -> None:
        self.shapes = shapes
        self.labels = labels


def load_yolov5_kmean_anchors(autoanchor_py: Path) -> Callable[..., Any]:
    """Load `kmean_anchors` from the yolov5 package's `utils/autoanchor.py` without importing
    the package (whose `__init__` needs pandas, cv2, ...): its imports of logging helpers are
    satisfied by small stubs; the function body runs unchanged."""
    import logging

    pkg = types.ModuleType("yolov5")
    utils = types.ModuleType("yolov5.utils")
    general = types.ModuleType("yolov5.utils.general")

    class TryExcept:
        def __init__(self, msg: str = "") -> None:
            self.msg = msg

        def __call__(self, f: Callable[..., Any]) -> Callable[..., Any]:
            return f

    utils.TryExcept = TryExcept  # type: ignore[attr-defined]
    general.LOGGER = logging.getLogger("yolov5")  # type: ignore[attr-defined]
    general.TQDM_BAR_FORMAT = "{l_bar}{bar:10}{r_bar}"  # type: ignore[attr-defined]
    general.colorstr = lambda *a: str(a[-1])  # type: ignore[attr-defined]
    sys.modules.setdefault("yolov5", pkg)
    sys.modules["yolov5.utils"] = utils
    sys.modules["yolov5.utils.general"] = general
    if "tqdm" not in sys.modules:
        try:
            import tqdm  # noqa: F401
        except ImportError:
            tq = types.ModuleType("tqdm")

            def _tqdm(it: Any, **_: Any) -> Any:
                class _It:
                    desc = ""

                    def __iter__(self) -> Any:
                        return iter(it)

                return _It()

            tq.tqdm = _tqdm  # type: ignore[attr-defined]
            sys.modules["tqdm"] = tq
    if "yaml" not in sys.modules:
        try:
            import yaml  # noqa: F401
        except ImportError:
            sys.modules["yaml"] = types.ModuleType("yaml")
    spec = importlib.util.spec_from_file_location("yolov5_autoanchor", autoanchor_py)
    if spec is None or spec.loader is None:
        raise ImportError(f"{autoanchor_py}: cannot load")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.kmean_anchors  # type: ignore[no-any-return]


def yolov5_kmean_anchors(
    shapes: F,
    labels: list[F],
    n: int,
    img_size: int,
    seed: int,
    autoanchor_py: Path | None,
) -> tuple[F, str]:
    """Run YOLOv5 `kmean_anchors` (package code when available); returns (anchors, source)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    ds = _Shapes(shapes, labels)
    if autoanchor_py is not None and autoanchor_py.is_file():
        f = load_yolov5_kmean_anchors(autoanchor_py)
        k = f(ds, n=n, img_size=img_size, thr=4.0, gen=1000, verbose=False)
        return np.asarray(k, dtype=np.float64), f"yolov5 package ({autoanchor_py})"
    raise FileNotFoundError(
        "yolov5 autoanchor.py not given; install with "
        "`pip install --no-deps --target DIR yolov5==7.0.14` and pass --yolov5-autoanchor"
    )


def timed(f: Callable[[], Any]) -> tuple[Any, float]:
    """Run `f` and return (result, seconds)."""
    t = time.perf_counter()
    r = f()
    return r, time.perf_counter() - t
