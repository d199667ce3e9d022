"""Datasets (VOC XML, COCO JSON) and training augmentation.

Test-time preprocessing is the project's reference (`tools/reference/preprocess.py`,
mmdet `Resize` / `Normalize` / `Pad`); training uses the same keep-ratio factor
(`keep_ratio_size`), RGB order, mean/std normalisation and zero padding.
"""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

BCCD_CLASSES = ("RBC", "WBC", "Platelets")
MEAN_RGB = (123.675, 116.28, 103.53)
STD_RGB = (58.395, 57.12, 57.375)


@dataclass
class Record:
    """One annotated image: `boxes` `[G, 4]` float32 (x1, y1, x2, y2, pixels), `labels` `[G]`."""

    path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray


def load_voc(
    root: Path, split: str, classes: tuple[str, ...] = BCCD_CLASSES
) -> list[Record]:
    """Load a VOC-style dataset (`Annotations/*.xml`, `JPEGImages/`, `ImageSets/Main/<split>.txt`).

    Coordinates are taken as written (mmdet v2 `XMLDataset` convention, no -1), clipped to
    the image; degenerate boxes (w or h <= 1 after clipping) are dropped with a warning.
    Raises `FileNotFoundError` / `ValueError` naming the file on missing or malformed input.
    """
    ids_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not ids_file.is_file():
        raise FileNotFoundError(f"{ids_file}: split file not found")
    ids = [s.strip() for s in ids_file.read_text().splitlines() if s.strip()]
    out = []
    for i in ids:
        xml = root / "Annotations" / f"{i}.xml"
        try:
            tree = ET.parse(xml).getroot()
            size = tree.find("size")
            if size is None:
                raise ValueError("no <size>")
            w = int(float(size.findtext("width", "0")))
            h = int(float(size.findtext("height", "0")))
            boxes, labels = [], []
            for obj in tree.iter("object"):
                name = (obj.findtext("name") or "").strip()
                if name not in classes:
                    raise ValueError(f"unknown class {name!r}")
                bb = obj.find("bndbox")
                if bb is None:
                    raise ValueError("object without <bndbox>")
                x1, y1, x2, y2 = (
                    float(bb.findtext(k, "nan"))
                    for k in ("xmin", "ymin", "xmax", "ymax")
                )
                x1, x2 = np.clip([x1, x2], 0, w)
                y1, y2 = np.clip([y1, y2], 0, h)
                if not (x2 - x1 > 1 and y2 - y1 > 1):
                    log.warning("%s: dropping degenerate box %s", xml, (x1, y1, x2, y2))
                    continue
                boxes.append([x1, y1, x2, y2])
                labels.append(classes.index(name))
        except (ET.ParseError, ValueError) as e:
            raise ValueError(f"{xml}: {e}") from e
        out.append(
            Record(
                root / "JPEGImages" / f"{i}.jpg",
                w,
                h,
                np.array(boxes, dtype=np.float32).reshape(-1, 4),
                np.array(labels, dtype=np.int64),
            )
        )
    return out


def load_coco(ann_file: Path, image_dir: Path) -> tuple[list[Record], tuple[str, ...]]:
    """Load a COCO-JSON detection file (bbox `[x, y, w, h]` -> x1y1x2y2, crowd boxes skipped).

    Returns records and the class names in category-id order.
    """
    data = json.loads(ann_file.read_text())
    cats = sorted(data["categories"], key=lambda c: c["id"])
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    per: dict[int, list[tuple[list[float], int]]] = {
        im["id"]: [] for im in data["images"]
    }
    for a in data["annotations"]:
        if a.get("iscrowd", 0):
            continue
        x, y, w, h = a["bbox"]
        if w > 1 and h > 1:
            per[a["image_id"]].append(
                ([x, y, x + w, y + h], cat_index[a["category_id"]])
            )
    recs = []
    for im in data["images"]:
        anns = per[im["id"]]
        recs.append(
            Record(
                image_dir / im["file_name"],
                int(im["width"]),
                int(im["height"]),
                np.array([b for b, _ in anns], dtype=np.float32).reshape(-1, 4),
                np.array([c for _, c in anns], dtype=np.int64),
            )
        )
    return recs, tuple(c["name"] for c in cats)


def read_bgr(path: Path) -> np.ndarray:
    """Decode an image as BGR uint8 with `cv2.imdecode(IMREAD_COLOR)` (applies EXIF orientation).

    Raises `ValueError` naming the file if it cannot be decoded."""
    buf = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{path}: cannot decode image")
    return img


def keep_ratio_size(w: int, h: int, scale: tuple[int, int]) -> tuple[int, int, float]:
    """mmcv `rescale_size`: `s = min(long/max(w,h), short/min(w,h))`; returns (new_w, new_h, s)."""
    long_, short = max(scale), min(scale)
    s = min(long_ / max(w, h), short / min(w, h))
    return int(w * s + 0.5), int(h * s + 0.5), s


def normalize(rgb: np.ndarray) -> np.ndarray:
    """`(x - mean) / std` in float32 on an RGB HWC image -> CHW float32."""
    x = (rgb.astype(np.float32) - np.array(MEAN_RGB, np.float32)) / np.array(
        STD_RGB, np.float32
    )
    return np.ascontiguousarray(x.transpose(2, 0, 1))


@dataclass
class AugConfig:
    """Training augmentation. Scale factor = keep-ratio factor of `scale` times a log-uniform
    jitter in `[jitter_lo, jitter_hi]`; then flips, a random crop/pad to `canvas` (w, h),
    and HSV colour jitter."""

    scale: tuple[int, int] = (416, 312)
    jitter_lo: float = 0.4
    jitter_hi: float = 1.25
    canvas: tuple[int, int] = (256, 192)
    hue: float = 8.0
    sat: float = 0.4
    val: float = 0.3
    min_visible: float = 0.4


def color_jitter(
    bgr: np.ndarray, rng: np.random.Generator, cfg: AugConfig
) -> np.ndarray:
    """Random hue shift (+-cfg.hue, OpenCV hue units of 2 deg), saturation and value gains."""
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-cfg.hue, cfg.hue)) % 180
    hsv[..., 1] *= rng.uniform(1 - cfg.sat, 1 + cfg.sat)
    hsv[..., 2] *= rng.uniform(1 - cfg.val, 1 + cfg.val)
    hsv[..., 1:] = np.clip(hsv[..., 1:], 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)


def augment(
    bgr: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    cfg: AugConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply colour jitter, scale jitter, h/v flips and crop/pad; returns
    (`[3, ch, cw]` normalized float32, boxes `[G', 4]`, labels `[G']`). Boxes are scaled,
    flipped and shifted with the image; a box is kept if at least `min_visible` of its area
    stays in the crop (clipped to the crop)."""
    h, w = bgr.shape[:2]
    _, _, s0 = keep_ratio_size(w, h, cfg.scale)
    s = s0 * float(np.exp(rng.uniform(np.log(cfg.jitter_lo), np.log(cfg.jitter_hi))))
    nw, nh = max(1, int(w * s + 0.5)), max(1, int(h * s + 0.5))
    img = color_jitter(bgr, rng, cfg)
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    b = boxes * np.array([nw / w, nh / h, nw / w, nh / h], np.float32)
    if rng.random() < 0.5:
        img = img[:, ::-1]
        b = np.stack([nw - b[:, 2], b[:, 1], nw - b[:, 0], b[:, 3]], 1)
    if rng.random() < 0.5:
        img = img[::-1]
        b = np.stack([b[:, 0], nh - b[:, 3], b[:, 2], nh - b[:, 1]], 1)
    cw, ch = cfg.canvas
    ox = int(rng.integers(0, nw - cw + 1)) if nw > cw else 0
    oy = int(rng.integers(0, nh - ch + 1)) if nh > ch else 0
    crop = img[oy : oy + ch, ox : ox + cw]
    chw = normalize(np.ascontiguousarray(crop[:, :, ::-1]))
    out = np.zeros((3, ch, cw), np.float32)
    out[:, : chw.shape[1], : chw.shape[2]] = chw
    b = b - np.array([ox, oy, ox, oy], np.float32)
    vw, vh = min(cw, nw - ox), min(ch, nh - oy)
    cb = np.stack(
        [
            b[:, 0].clip(0, vw),
            b[:, 1].clip(0, vh),
            b[:, 2].clip(0, vw),
            b[:, 3].clip(0, vh),
        ],
        1,
    )
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    carea = (cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1])
    keep = (
        (carea >= cfg.min_visible * area)
        & (cb[:, 2] - cb[:, 0] > 2)
        & (cb[:, 3] - cb[:, 1] > 2)
    )
    return out, cb[keep].astype(np.float32), labels[keep]


class TrainSet:
    """Records with decoded images cached in memory (BCCD: 292 x 640x480x3 = 270 MB)."""

    def __init__(self, records: list[Record], cfg: AugConfig) -> None:
        self.records = records
        self.cfg = cfg
        self.images = [read_bgr(r.path) for r in records]

    def batch(
        self, idx: list[int], rng: np.random.Generator
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Augmented batch: images `[B, 3, ch, cw]`, per-image boxes and labels."""
        ims, bs, ls = [], [], []
        for i in idx:
            r = self.records[i]
            im, b, lab = augment(self.images[i], r.boxes, r.labels, rng, self.cfg)
            ims.append(torch.from_numpy(im))
            bs.append(torch.from_numpy(b))
            ls.append(torch.from_numpy(lab))
        return torch.stack(ims), bs, ls
