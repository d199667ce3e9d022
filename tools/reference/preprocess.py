"""Decode, resize, normalize and pad, as mmdet's test pipeline does.

Sources: mmdet `mmdet/datasets/pipelines/transforms.py` (v2 `Resize`, `Normalize`, `Pad`),
mmcv `mmcv/image/geometric.py` and `mmcv/image/photometric.py`.

- decode: `cv2.imdecode(IMREAD_COLOR)` (BGR u8; OpenCV >= 4 applies the EXIF orientation, as
  mmcv's `imfrombytes(flag='color')` does; `IMREAD_IGNORE_ORIENTATION` turns it off);
- resize: `cv2.resize(INTER_LINEAR)` to a size planned with mmcv's rounding
  (`mmcv/image/geometric.py` `rescale_size`: `int(w * s + 0.5)`);
- normalize: `(x - mean) * (1 / std)` in float32 with `1/std` taken in float64, as mmcv
  `imnormalize_` (`mmcv/image/photometric.py`);
- pad: bottom/right to a multiple of `size_divisor` with the pad value in normalized space
  (mmdet `Pad`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from .spec import InputSpec


class ImageError(ValueError):
    """A file that cannot be read or decoded; the message names the path."""


@dataclass(frozen=True)
class ImageMeta:
    """Geometry of one preprocessed image (same fields as the Rust `ImageMeta`).

    `orig_*`: decoded size (after EXIF); `resized_*`: resized content (mmdet `img_shape`);
    `input_*`: tensor size after padding (mmdet `pad_shape`); `pad_left/top`: content offset
    (letterbox only); `scale_w/h` = resized / orig (mmdet `scale_factor`, float64).
    """

    orig_w: int
    orig_h: int
    resized_w: int
    resized_h: int
    input_w: int
    input_h: int
    pad_left: int
    pad_top: int
    scale_w: float
    scale_h: float

    def to_json(self) -> dict[str, Any]:
        """The JSON object written next to a dumped tensor (`<stem>.meta.json`)."""
        return asdict(self)

    @staticmethod
    def from_json(obj: dict[str, Any]) -> ImageMeta:
        """Reads a `<stem>.meta.json` object as written by `anchorkit detect --dump-input`."""
        return ImageMeta(
            orig_w=int(obj["orig_w"]),
            orig_h=int(obj["orig_h"]),
            resized_w=int(obj["resized_w"]),
            resized_h=int(obj["resized_h"]),
            input_w=int(obj["input_w"]),
            input_h=int(obj["input_h"]),
            pad_left=int(obj.get("pad_left", 0)),
            pad_top=int(obj.get("pad_top", 0)),
            scale_w=float(obj["scale_w"]),
            scale_h=float(obj["scale_h"]),
        )


def decode_image(
    data: bytes, path: Path, exif_orientation: bool = True
) -> npt.NDArray[np.uint8]:
    """Decodes image bytes to BGR u8 `[H, W, 3]` (any colour type -> 3 channels, 8 bits).

    Raises `ImageError` for empty or undecodable data.
    """
    if len(data) == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    flags = cv2.IMREAD_COLOR
    if not exif_orientation:
        flags |= cv2.IMREAD_IGNORE_ORIENTATION
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if img is None or img.ndim != 3 or img.shape[0] == 0 or img.shape[1] == 0:
        raise ImageError(f"{path}: not a decodable image (or truncated)")
    return np.ascontiguousarray(img, dtype=np.uint8)


def load_image(path: Path, exif_orientation: bool = True) -> npt.NDArray[np.uint8]:
    """Reads and decodes a file to BGR u8 `[H, W, 3]`; `ImageError` names the path."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror})") from None
    return decode_image(data, path, exif_orientation)


def _round_up(v: int, d: int) -> int:
    return v if d <= 1 else ((v + d - 1) // d) * d


def plan(inp: InputSpec, orig_w: int, orig_h: int) -> ImageMeta:
    """Geometry for an original size under the spec's resize rule.

    keep_ratio (mmcv `rescale_size`): `s = min(max(scale) / max(w, h), min(scale) / min(w, h))`
    in float64, `new = int(x * s + 0.5)`, `scale_factor = new / orig` per axis.
    stretch: exactly `width x height`. letterbox: keep ratio to fit `width x height`
    (`s = min(W / w, H / h)`, same rounding, clamped to the box), content centred with
    `pad_left = (W - new_w) // 2`, `pad_top = (H - new_h) // 2`.
    Then bottom/right padding to a multiple of `size_divisor`.
    """
    rr = inp.resize
    pad_left = pad_top = 0
    if rr.rule == "keep_ratio":
        long_e, short_e = max(rr.scale), min(rr.scale)
        s = min(long_e / max(orig_w, orig_h), short_e / min(orig_w, orig_h))
        new_w, new_h = int(orig_w * s + 0.5), int(orig_h * s + 0.5)
        box_w, box_h = new_w, new_h
    elif rr.rule == "stretch":
        new_w, new_h = rr.width, rr.height
        box_w, box_h = new_w, new_h
    else:
        s = min(rr.width / orig_w, rr.height / orig_h)
        new_w = min(int(orig_w * s + 0.5), rr.width)
        new_h = min(int(orig_h * s + 0.5), rr.height)
        pad_left, pad_top = (rr.width - new_w) // 2, (rr.height - new_h) // 2
        box_w, box_h = rr.width, rr.height
    return ImageMeta(
        orig_w=orig_w,
        orig_h=orig_h,
        resized_w=new_w,
        resized_h=new_h,
        input_w=_round_up(box_w, inp.size_divisor),
        input_h=_round_up(box_h, inp.size_divisor),
        pad_left=pad_left,
        pad_top=pad_top,
        scale_w=new_w / orig_w,
        scale_h=new_h / orig_h,
    )


def preprocess(
    inp: InputSpec, bgr: npt.NDArray[np.uint8]
) -> tuple[npt.NDArray[np.float32], ImageMeta]:
    """Resize + normalize + pad one BGR u8 image into an NCHW float32 `[1, 3, H, W]` tensor.

    Channel order, mean and std follow the spec (mean/std are given in the spec's channel order).
    """
    h, w = bgr.shape[:2]
    meta = plan(inp, w, h)
    img = bgr if inp.channel_order == "bgr" else bgr[:, :, ::-1]
    resized = cv2.resize(
        np.ascontiguousarray(img),
        (meta.resized_w, meta.resized_h),
        interpolation=cv2.INTER_LINEAR,
    )
    mean = np.asarray(inp.mean, dtype=np.float32)
    stdinv = (1.0 / np.asarray(inp.std, dtype=np.float64)).astype(np.float32)
    if inp.resize.rule == "letterbox":
        box_w, box_h = inp.resize.width, inp.resize.height
        canvas = np.full(
            (box_h, box_w, 3), np.float32(inp.resize.pad_value), dtype=np.float32
        )
        canvas[
            meta.pad_top : meta.pad_top + meta.resized_h,
            meta.pad_left : meta.pad_left + meta.resized_w,
        ] = resized.astype(np.float32)
    else:
        canvas = resized.astype(np.float32)
    norm = (canvas - mean) * stdinv
    out = np.full(
        (meta.input_h, meta.input_w, 3), np.float32(inp.pad_value), dtype=np.float32
    )
    out[: norm.shape[0], : norm.shape[1]] = norm
    return np.ascontiguousarray(out.transpose(2, 0, 1)[None]), meta


def check_fixed_size(
    inp: InputSpec, meta: ImageMeta, expect_hw: tuple[Any, Any]
) -> None:
    """For a graph with a fixed H/W, checks the planned tensor size equals it."""
    eh, ew = expect_hw
    if (
        isinstance(eh, int)
        and isinstance(ew, int)
        and (eh, ew) != (meta.input_h, meta.input_w)
    ):
        raise ValueError(
            f"input {inp.name!r}: the resize rule gives {meta.input_w}x{meta.input_h} but the graph "
            f"expects {ew}x{eh}"
        )


def level_hw(meta: ImageMeta, stride: int) -> tuple[int, int]:
    """(H, W) of a level for flat-layout outputs: `ceil(input / stride)` (FPN with padding 1)."""
    return math.ceil(meta.input_h / stride), math.ceil(meta.input_w / stride)
