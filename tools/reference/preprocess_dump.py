"""Writes OpenCV's decode, resize and full preprocessing of images for the Rust exactness
test (`tests/cv2_resize.rs`).

    python -m tools.reference.preprocess_dump OUT_DIR --sizes WxH,... [--spec JSON ...] IMAGE...

For each image `<stem>`: `<stem>.rgb` (the `cv2.imdecode` pixels as RGB u8, `H x W x 3`),
`<stem>.<W>x<H>.rgb` (`cv2.resize(..., INTER_LINEAR)` of those pixels, RGB u8) for each size,
and per spec `k` (0-based) `<stem>.spec<k>.f32` (the reference `preprocess` tensor, NCHW f32,
little endian).
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
    ap.add_argument("images", type=Path, nargs="+")
    a = ap.parse_args(argv)
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
