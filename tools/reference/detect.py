"""Reference detector and CLI: the same JSONL as `anchorkit detect --jsonl`.

    python -m tools.reference.detect --model M [--spec S] [--input-from DUMPDIR]
        [--dump-input DIR] [--score-thr X] [--rule mmdet|mmdeploy|legacy] [--threads N]
        --jsonl OUT INPUT...

INPUT is files, directories (their images, sorted) or globs. With `--input-from DIR` the network
input of each image is read from `DIR/<stem>.npy` (float32 `[1, 3, H, W]`) and its geometry from
`DIR/<stem>.meta.json`, as written by `anchorkit detect --dump-input DIR`, so both sides see the
identical tensor. A bad image is reported on stderr and skipped; the exit code is 1 if any
failed. The JSONL file is written atomically (temp file + rename).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from .postprocess import Detections, flatten_levels, postprocess
from .preprocess import ImageError, ImageMeta, check_fixed_size, load_image, preprocess
from .spec import DetectorSpec, load_spec

IMAGE_EXTS = {
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".gif",
    ".pnm",
    ".ppm",
    ".pgm",
}


class Detector:
    """Spec + onnxruntime session (CPU EP) + the reference stages."""

    def __init__(
        self,
        model: Path,
        spec_path: Path | None = None,
        threads: int = 0,
        spec: DetectorSpec | None = None,
    ):
        self.spec = spec if spec is not None else load_spec(model, spec_path)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads > 0:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(model), opts, providers=["CPUExecutionProvider"]
        )
        inputs = {i.name: i for i in self.session.get_inputs()}
        if self.spec.input.name not in inputs:
            raise ValueError(
                f"{model}: spec input {self.spec.input.name!r} is not a graph input ({sorted(inputs)})"
            )
        self.input_shape = inputs[self.spec.input.name].shape
        names = {o.name for o in self.session.get_outputs()}
        self.output_names: list[str] = []
        for lv in self.spec.head.levels:
            for nm in (lv.cls, lv.reg) + ((lv.centerness,) if lv.centerness else ()):
                if nm not in names:
                    raise ValueError(
                        f"{model}: spec names output {nm!r}, which the graph does not have"
                    )
                if nm not in self.output_names:
                    self.output_names.append(nm)

    def infer(
        self, tensor: npt.NDArray[np.float32]
    ) -> dict[str, npt.NDArray[np.float32]]:
        """Runs the graph on one `[1, 3, H, W]` tensor; returns the level outputs by name."""
        outs = self.session.run(self.output_names, {self.spec.input.name: tensor})
        return {
            n: np.asarray(o, dtype=np.float32)
            for n, o in zip(self.output_names, outs, strict=True)
        }

    def detect_tensor(
        self, tensor: npt.NDArray[np.float32], meta: ImageMeta
    ) -> Detections:
        """Network + post-processing for an already preprocessed tensor."""
        return postprocess(
            self.spec, flatten_levels(self.spec, self.infer(tensor), meta), meta
        )

    def prepare(
        self, bgr: npt.NDArray[np.uint8]
    ) -> tuple[npt.NDArray[np.float32], ImageMeta]:
        """Preprocesses a BGR u8 image; checks a fixed-size graph gets its size."""
        tensor, meta = preprocess(self.spec.input, bgr)
        if not self.spec.input.dynamic_hw and len(self.input_shape) == 4:
            check_fixed_size(
                self.spec.input, meta, (self.input_shape[2], self.input_shape[3])
            )
        return tensor, meta


def expand_inputs(items: list[str]) -> list[Path]:
    """Files as given, directories as their sorted image files, globs as their sorted matches."""
    out: list[Path] = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            out.extend(
                sorted(
                    q
                    for q in p.iterdir()
                    if q.is_file() and q.suffix.lower() in IMAGE_EXTS
                )
            )
        elif not p.exists() and any(ch in it for ch in "*?["):
            out.extend(Path(m) for m in sorted(glob.glob(it)))
        else:
            out.append(p)
    return out


def _f32(v: Any) -> float:
    """Shortest decimal of an f32 value, as Rust's serde_json prints an f32."""
    return float(str(np.float32(v)))


def jsonl_record(
    spec: DetectorSpec, image: Path, meta: ImageMeta, dets: Detections
) -> dict[str, Any]:
    """One JSONL line: image, original width/height and the detections in original pixels."""
    return {
        "image": str(image),
        "width": meta.orig_w,
        "height": meta.orig_h,
        "detections": [
            {
                "bbox": [_f32(v) for v in dets.boxes[i]],
                "score": _f32(dets.scores[i]),
                "class_id": int(dets.labels[i]),
                "class_name": spec.classes[int(dets.labels[i])],
            }
            for i in range(dets.scores.shape[0])
        ],
    }


def write_atomic(path: Path, text: str) -> None:
    """Writes `text` to `path` via a temp file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_dumped(
    dump_dir: Path, image: Path
) -> tuple[npt.NDArray[np.float32], ImageMeta]:
    """Reads `<stem>.npy` and `<stem>.meta.json` of `image` from an `--dump-input` directory."""
    npy, mj = dump_dir / f"{image.stem}.npy", dump_dir / f"{image.stem}.meta.json"
    try:
        tensor = np.load(npy).astype(np.float32)
        meta = ImageMeta.from_json(json.loads(mj.read_text()))
    except (OSError, ValueError, KeyError) as e:
        raise ImageError(
            f"{image}: no usable dumped input in {dump_dir} ({e})"
        ) from None
    if tensor.shape != (1, 3, meta.input_h, meta.input_w):
        raise ImageError(
            f"{npy}: shape {list(tensor.shape)} disagrees with {mj} ({meta.input_w}x{meta.input_h})"
        )
    return np.ascontiguousarray(tensor), meta


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    ap = argparse.ArgumentParser(
        prog="python -m tools.reference.detect", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument(
        "--spec",
        type=Path,
        default=None,
        help="sidecar spec JSON (overrides the ONNX metadata)",
    )
    ap.add_argument(
        "--input-from",
        type=Path,
        default=None,
        help="read network inputs dumped by anchorkit",
    )
    ap.add_argument(
        "--dump-input",
        type=Path,
        default=None,
        help="write <stem>.npy + <stem>.meta.json here",
    )
    ap.add_argument("--score-thr", type=float, default=None)
    ap.add_argument("--rule", choices=["mmdet", "mmdeploy", "legacy"], default=None)
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="onnxruntime intra-op threads (0 = default)",
    )
    ap.add_argument("--jsonl", required=True, type=Path)
    ap.add_argument("inputs", nargs="+")
    args = ap.parse_args(argv)

    try:
        spec = load_spec(args.model, args.spec)
        if args.score_thr is not None:
            spec = dataclasses.replace(
                spec,
                postprocess=dataclasses.replace(
                    spec.postprocess, score_thr=args.score_thr
                ),
            )
        if args.rule is not None:
            spec = dataclasses.replace(
                spec, postprocess=dataclasses.replace(spec.postprocess, rule=args.rule)
            )
        det = Detector(args.model, spec=spec, threads=args.threads)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    images = expand_inputs(args.inputs)
    if not images:
        print("error: no input images", file=sys.stderr)
        return 2
    lines: list[str] = []
    failed = 0
    for img in images:
        try:
            if args.input_from is not None:
                tensor, meta = read_dumped(args.input_from, img)
            else:
                tensor, meta = det.prepare(load_image(img, spec.input.exif_orientation))
            if args.dump_input is not None:
                args.dump_input.mkdir(parents=True, exist_ok=True)
                np.save(args.dump_input / f"{img.stem}.npy", tensor)
                write_atomic(
                    args.dump_input / f"{img.stem}.meta.json",
                    json.dumps(meta.to_json()),
                )
            dets = det.detect_tensor(tensor, meta)
        except (ImageError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        lines.append(json.dumps(jsonl_record(spec, img, meta, dets)))
    write_atomic(args.jsonl, "".join(line + "\n" for line in lines))
    if failed:
        print(f"{failed} of {len(images)} images failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
