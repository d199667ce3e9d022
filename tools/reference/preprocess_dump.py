"""Writes OpenCV's decode, resize and full preprocessing of images for the Rust exactness
test (`tests/cv2_resize.rs`).

    python -m tools.reference.preprocess_dump OUT_DIR --sizes WxH,... [--spec JSON ...] IMAGE...

For each image `<stem>`: `<stem>.rgb` (the `cv2.imdecode` pixels as RGB u8, `H x W x 3`),
`<stem>.<W>x<H>.rgb` (`cv2.resize(..., INTER_LINEAR)` of those pixels, RGB u8) for each size,
and per spec `k` (0-based) `<stem>.spec<k>.f32` (the reference `preprocess` tensor, NCHW f32,
little endian).

With `--jpeg-variants SRC`, SRC is also re-encoded by `cv2.imencode` into JPEG variants that
cameras and datasets produce (grayscale, progressive, 4:4:4, 4:2:2, restart markers, low
quality), written as `<variant>.jpg` with `<variant>.jpg.rgb`, their `cv2.imdecode`
(`IMREAD_COLOR`) pixels as RGB u8.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from tools.reference.preprocess import load_image, preprocess
from tools.reference.spec import parse_spec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--sizes", default="", help="comma-separated WxH resize targets")
    ap.add_argument("--spec", type=Path, action="append", default=[])
    ap.add_argument("--jpeg-variants", type=Path, default=None)
    ap.add_argument("images", type=Path, nargs="*")
    a = ap.parse_intermixed_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    sizes = [tuple(int(v) for v in s.split("x")) for s in a.sizes.split(",") if s]
    specs = [parse_spec(json.loads(p.read_text()), str(p)) for p in a.spec]
    for path in a.images:
        bgr = load_image(path)
        stem = path.stem
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        (a.out / f"{stem}.rgb").write_bytes(rgb.tobytes())
        for dw, dh in sizes:
            r = cv2.resize(rgb, (dw, dh), interpolation=cv2.INTER_LINEAR)
            (a.out / f"{stem}.{dw}x{dh}.rgb").write_bytes(r.tobytes())
        for k, spec in enumerate(specs):
            t, _meta = preprocess(spec.input, bgr)
            (a.out / f"{stem}.spec{k}.f32").write_bytes(t.astype("<f4").tobytes())
    if a.jpeg_variants is not None:
        write_jpeg_variants(a.jpeg_variants, a.out)
    return 0


def write_jpeg_variants(src: Path, out: Path) -> None:
    """Re-encode `src` into JPEG variants and write each with OpenCV's decode of it."""
    bgr = load_image(src)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    variants: dict[str, tuple[np.ndarray, list[int]]] = {
        "gray": (gray, [cv2.IMWRITE_JPEG_QUALITY, 90]),
        "progressive": (bgr, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        "s444": (
            bgr,
            [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444],
        ),
        "s422": (
            bgr,
            [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422],
        ),
        "restart": (bgr, [cv2.IMWRITE_JPEG_RST_INTERVAL, 4]),
        "q30_odd_size": (bgr[:-3, :-5], [cv2.IMWRITE_JPEG_QUALITY, 30]),
    }
    for name, (img, params) in variants.items():
        ok, buf = cv2.imencode(".jpg", img, params)
        if not ok:
            raise SystemExit(f"cv2.imencode failed for the {name} variant")
        (out / f"{name}.jpg").write_bytes(buf.tobytes())
        dec = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        rgb = np.ascontiguousarray(dec[:, :, ::-1])
        (out / f"{name}.jpg.rgb").write_bytes(rgb.tobytes())


if __name__ == "__main__":
    raise SystemExit(main())
