"""Post-training INT8 (static, QDQ) and FP16 versions of an anchorkit detector.

    tools/.venv/bin/python -m tools.quantize --model M.onnx --calib DIR [--calib-list FILE]
        [--num N] [--seed S] [--per-channel] [--exclude-heads]
        [--method minmax|entropy|percentile] [--percentile P] [--num-bins B] [--spec S]
        [--eval-voc ROOT [--eval-split test]] --out M.int8.onnx
    tools/.venv/bin/python -m tools.quantize --model M.onnx --fp16 --out M.fp16.onnx

INT8: ONNX Runtime's static quantization (`onnxruntime.quantization.quantize_static`,
QuantizeLinear/DequantizeLinear pairs, uint8 activations, int8 weights) after its
pre-processing (`quant_pre_process`: shape inference and graph optimization). The activation
ranges are calibrated on real images preprocessed exactly as anchorkit preprocesses them (the
spec's resize rule, normalization and padding, `tools/reference/preprocess.py`). `--calib DIR`
is a directory of images; `--calib-list FILE` keeps only the images whose stem is listed (one
per line, e.g. a VOC `ImageSets/Main/trainval.txt`), so a test split stays out of calibration.
When more than `--num` images remain, `--num` of them are drawn with `--seed` (printed and
recorded). `--exclude-heads` keeps the convolutions that produce the spec's head outputs in
FP32 (the usual remedy when INT8 hurts small objects).

FP16: `onnxruntime.transformers.float16.convert_float_to_float16` with `keep_io_types`, so the
graph's inputs and outputs stay float32 and the spec is unchanged; meant for GPU providers.

`--eval-voc ROOT` measures the output's COCO AP on a VOC split (`--eval-split`, default test)
with the project's reference pipeline and records it as `provenance.quantization.test_metrics`.

The output carries the spec (ONNX metadata key `anchorkit.detector`, taken from the model or
`--spec`) with `provenance.quantization` added (method, calibration images, seed, ONNX Runtime
version, parent file and SHA-256) and the parent's provenance under `provenance.parent`. It is
written atomically, only after it loaded in ONNX Runtime with every spec output present; the
input model is never overwritten. Exit codes: 0 ok, 1 bad calibration images (some skipped,
reported, output still written), 2 usage / model / spec error (nothing written).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shlex
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError
from onnx import version_converter
from onnxruntime.capi.onnxruntime_pybind11_state import (
    Fail,
    InvalidArgument,
    InvalidGraph,
    RuntimeException,
)
from onnxruntime.capi.onnxruntime_pybind11_state import (
    NotImplemented as OrtNotImplemented,
)
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
from onnxruntime.quantization.shape_inference import quant_pre_process

from .reference.detect import IMAGE_EXTS
from .reference.preprocess import ImageError, load_image, preprocess
from .reference.spec import (
    METADATA_KEY,
    DetectorSpec,
    SpecError,
    parse_spec,
    set_spec,
    spec_object,
)

# What onnxruntime raises for a model it cannot load or run.
ORT_ERRORS = (
    Fail,
    InvalidArgument,
    InvalidGraph,
    OrtNotImplemented,
    RuntimeException,
    RuntimeError,
)

METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}

# Ops that move, reshape, activate or rescale data: walking back from a head output through these
# finds the convolution that computes it (NanoDet's flat outputs end in Reshape/Transpose/Concat;
# ATSS/FCOS multiply the box regression by a learned per-level scale, mmdet `Scale`).
PASS_THROUGH = {
    "Reshape",
    "Transpose",
    "Concat",
    "Identity",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Slice",
    "Split",
    "Sigmoid",
    "Mul",
    "Div",
}

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")

# Target bins of the entropy (KL divergence) search: 128, as ONNX Runtime's default and
# TensorRT's calibrator (Migacz, "8-bit Inference with TensorRT", GTC 2017).
ENTROPY_QUANTIZED_BINS = 128

# QuantizeLinear/DequantizeLinear with per-channel `axis` exist from opset 13; older models
# are converted (`onnx.version_converter`) first.
MIN_QDQ_OPSET = 13


class QuantizeError(ValueError):
    """Bad arguments, model, spec or calibration set; the message names the file."""


@dataclass
class Calibration:
    """Preprocessed calibration tensors (`[1, 3, H, W]` float32 each) and what was skipped."""

    files: list[Path]
    tensors: list[npt.NDArray[np.float32]]
    skipped: list[str] = field(default_factory=list)
    available: int = 0


def read_spec_json(
    model: onnx.ModelProto, model_path: Path, spec_path: Path | None
) -> dict[str, Any]:
    """The spec as a JSON object: `spec_path` if given, else the model's metadata entry.

    Raises `QuantizeError` if there is none or it does not parse as an anchorkit spec.
    """
    if spec_path is not None:
        try:
            text = spec_path.read_text()
        except OSError as e:
            raise QuantizeError(
                f"{spec_path}: cannot read spec ({e.strerror})"
            ) from None
        src = str(spec_path)
    else:
        found = [p.value for p in model.metadata_props if p.key == METADATA_KEY]
        if not found:
            raise QuantizeError(
                f"{model_path}: no `{METADATA_KEY}` metadata; pass the sidecar spec with --spec"
            )
        text, src = found[0], f"{model_path} metadata `{METADATA_KEY}`"
    try:
        obj = spec_object(text, src)
        parse_spec(obj, src)
    except SpecError as e:
        raise QuantizeError(str(e)) from None
    return obj


def spec_outputs(spec: DetectorSpec) -> list[str]:
    """Names of the graph outputs the spec reads (class scores, box regression, centerness)."""
    names: list[str] = []
    for lv in spec.head.levels:
        for n in (lv.cls, lv.reg, lv.centerness):
            if n and n not in names:
                names.append(n)
    return names


def head_convs(model: onnx.ModelProto, outputs: list[str]) -> list[str]:
    """Names of the Conv nodes whose results reach `outputs` through `PASS_THROUGH` ops only
    (the final convolutions of the detection head). Unnamed nodes cannot be excluded and
    raise `QuantizeError`."""
    producer = {o: n for n in model.graph.node for o in n.output}
    found: list[str] = []
    seen: set[str] = set()
    stack = list(outputs)
    while stack:
        t = stack.pop()
        if t in seen or t not in producer:
            continue
        seen.add(t)
        n = producer[t]
        if n.op_type == "Conv":
            if not n.name:
                raise QuantizeError(
                    f"the head convolution producing {t!r} has no node name"
                )
            if n.name not in found:
                found.append(n.name)
        elif n.op_type in PASS_THROUGH:
            stack.extend(n.input)
    return sorted(found)


def image_files(calib_dir: Path, calib_list: Path | None) -> list[Path]:
    """Sorted image files of `calib_dir`, restricted to the stems listed in `calib_list`.

    Raises `QuantizeError` for a missing directory or list, or listed stems without an image.
    """
    if not calib_dir.is_dir():
        raise QuantizeError(f"{calib_dir}: not a directory of calibration images")
    files = sorted(
        p for p in calib_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS
    )
    if calib_list is None:
        return files
    try:
        wanted = [s.strip() for s in calib_list.read_text().splitlines() if s.strip()]
    except OSError as e:
        raise QuantizeError(f"{calib_list}: cannot read ({e.strerror})") from None
    by_stem = {p.stem: p for p in files}
    missing = [s for s in wanted if s not in by_stem]
    if missing:
        raise QuantizeError(
            f"{calib_list}: {len(missing)} listed images are not in {calib_dir} "
            f"(first: {missing[0]!r})"
        )
    return sorted(by_stem[s] for s in set(wanted))


def select(files: list[Path], num: int, seed: int) -> list[Path]:
    """All of `files` if there are at most `num`, else `num` drawn without replacement with
    `numpy.random.default_rng(seed)`, in sorted order."""
    if len(files) <= num:
        return list(files)
    idx = np.random.default_rng(seed).choice(len(files), size=num, replace=False)
    return sorted(files[int(i)] for i in idx)


def calibration_set(
    spec: DetectorSpec, files: list[Path], available: int
) -> Calibration:
    """Decodes and preprocesses `files` with the spec's input rule; bad images are reported
    in `skipped` (with the reason) and the rest go on."""
    cal = Calibration(files=[], tensors=[], available=available)
    for p in files:
        try:
            t, _ = preprocess(spec.input, load_image(p, spec.input.exif_orientation))
        except ImageError as e:
            cal.skipped.append(str(e))
            continue
        cal.files.append(p)
        cal.tensors.append(t)
    return cal


class _Reader(CalibrationDataReader):  # type: ignore[misc]
    """Feeds the calibration tensors one by one (batch 1, each at its own size)."""

    def __init__(self, input_name: str, tensors: list[npt.NDArray[np.float32]]):
        self.input_name = input_name
        self.tensors = tensors
        self.i = 0

    def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
        if self.i >= len(self.tensors):
            return None
        self.i += 1
        return {self.input_name: self.tensors[self.i - 1]}

    def rewind(self) -> None:
        self.i = 0


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Node count per op type of the main graph."""
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))


def default_opset(model: onnx.ModelProto) -> int:
    """The model's opset of the default (`ai.onnx`) domain."""
    return max(
        (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        default=0,
    )


def drop_unused_opsets(model: onnx.ModelProto) -> None:
    """Removes opset imports of domains no node uses (graph optimization lists every domain
    ONNX Runtime knows); the default domain always stays."""
    used = {n.domain for n in model.graph.node} | {""}
    keep = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def derived_spec(spec: dict[str, Any], note: dict[str, Any]) -> dict[str, Any]:
    """The parent's spec with `provenance = {"quantization": note, "parent": <parent
    provenance>}`: the parent's measured metrics stay recorded as the parent's, not as this
    model's."""
    out = json.loads(json.dumps(spec))
    parent = out.pop("provenance", None)
    out["provenance"] = {"quantization": note}
    if parent is not None:
        out["provenance"]["parent"] = parent
    return out


def check_loads(
    path: Path, spec: dict[str, Any], probe: npt.NDArray[np.float32] | None
) -> None:
    """Loads `path` in ONNX Runtime (CPU), checks every spec output is a graph output and, with
    `probe`, runs it once and checks the outputs are finite. Raises `QuantizeError`."""
    parsed = parse_spec(spec, str(path))
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except ORT_ERRORS as e:
        raise QuantizeError(
            f"the converted model does not load in ONNX Runtime: {e}"
        ) from None
    names = {o.name for o in sess.get_outputs()}
    missing = [n for n in spec_outputs(parsed) if n not in names]
    if missing:
        raise QuantizeError(
            f"{path}: the converted graph lost the spec outputs {missing}"
        )
    if parsed.input.name not in {i.name for i in sess.get_inputs()}:
        raise QuantizeError(
            f"{path}: the converted graph lost the input {parsed.input.name!r}"
        )
    if probe is not None:
        outs = sess.run(spec_outputs(parsed), {parsed.input.name: probe})
        for n, o in zip(spec_outputs(parsed), outs, strict=True):
            if not np.all(np.isfinite(o)):
                raise QuantizeError(
                    f"{path}: output {n!r} is not finite on a calibration image"
                )


def save_atomic(model: onnx.ModelProto, out: Path) -> None:
    """Writes `model` to `out` via a temp file in the same directory and a rename."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".onnx", dir=out.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        onnx.save(model, tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give a normal file's mode
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Int8Options:
    """Static INT8 settings; `percentile` applies to `method == "percentile"`, `num_bins`
    (histogram bins) to entropy and percentile."""

    method: str = "minmax"
    per_channel: bool = False
    exclude_heads: bool = False
    percentile: float = 99.999
    num_bins: int = 512


def quantize_int8(
    model_path: Path,
    spec: dict[str, Any],
    cal: Calibration,
    opts: Int8Options,
    workdir: Path,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Static QDQ quantization of `model_path` calibrated on `cal`; returns the model (spec not
    yet attached) and the provenance note's technical part (excluded nodes, op counts)."""
    parsed = parse_spec(spec, str(model_path))
    src = onnx.load(str(model_path))
    opset = default_opset(src)
    if opset < MIN_QDQ_OPSET:
        # Per-channel DequantizeLinear (`axis`) needs opset 13.
        src = version_converter.convert_version(src, MIN_QDQ_OPSET)
        model_path = workdir / "opset.onnx"
        onnx.save(src, str(model_path))
    pre = workdir / "pre.onnx"
    quant_pre_process(str(model_path), str(pre))
    excluded = (
        head_convs(onnx.load(str(pre)), spec_outputs(parsed))
        if opts.exclude_heads
        else []
    )
    reader = _Reader(parsed.input.name, cal.tensors)
    cache = None
    if opts.method != "minmax":
        cache = workdir / "ranges.json"
        calibrate_histogram(pre, reader, opts, workdir, cache)
    q = workdir / "q.onnx"
    with contextlib.redirect_stdout(sys.stderr):  # ORT prints progress on stdout
        quantize_static(
            str(pre),
            str(q),
            None if cache else reader,
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=opts.per_channel,
            calibrate_method=METHODS[opts.method],
            nodes_to_exclude=excluded,
            calibration_cache_path=cache,
        )
    m = onnx.load(str(q))
    drop_unused_opsets(m)
    counts = op_counts(m)
    tech = {
        "format": "QDQ",
        "activations": "uint8 (asymmetric, per tensor)",
        "weights": "int8 (symmetric, "
        + ("per channel)" if opts.per_channel else "per tensor)"),
        "method": opts.method,
        "fp32_nodes": excluded,
        "opset": f"{opset} -> {max(opset, MIN_QDQ_OPSET)}",
        "qdq_nodes": sum(counts.get(k, 0) for k in QDQ_OPS),
    }
    if opts.method != "minmax":
        tech["histogram_bins"] = opts.num_bins
    if opts.method == "percentile":
        tech["percentile"] = opts.percentile
    if opts.method == "entropy":
        tech["quantized_bins"] = ENTROPY_QUANTIZED_BINS
    return m, tech


def calibrate_histogram(
    pre: Path,
    reader: CalibrationDataReader,
    opts: Int8Options,
    workdir: Path,
    cache: Path,
) -> None:
    """Entropy / percentile activation ranges written as an ONNX Runtime calibration cache.

    `quantize_static` builds these calibrators with `num_bins = num_quantized_bins = 128` for
    entropy, which leaves a single candidate threshold (the full range, i.e. min/max), so they
    are built here with `opts.num_bins` histogram bins (`calibrate.py` `create_calibrator`,
    `HistogramCollector`). Both methods search a threshold symmetric around 0; each range is
    clipped to the observed [min, max] (as ONNX Runtime's percentile method does), so a
    post-ReLU tensor keeps its lower bound 0 and the whole uint8 range.
    """
    extra: dict[str, Any] = {"num_bins": opts.num_bins, "symmetric": True}
    if opts.method == "entropy":
        extra["num_quantized_bins"] = ENTROPY_QUANTIZED_BINS
    else:
        extra["percentile"] = opts.percentile
    calibrator = create_calibrator(
        pre,
        augmented_model_path=str(workdir / "augmented.onnx"),
        calibrate_method=METHODS[opts.method],
        extra_options=extra,
    )
    with contextlib.redirect_stdout(sys.stderr):
        calibrator.collect_data(reader)
        ranges = calibrator.compute_data()
    for name, hist in calibrator.collector.histogram_dict.items():
        d = ranges.data[name]
        lo, hi = hist[2], hist[3]
        d.lowest = np.asarray(max(d.lowest, lo), dtype=d.lowest.dtype)
        d.highest = np.asarray(min(d.highest, hi), dtype=d.highest.dtype)
    save_tensors_data(ranges, cache)


def convert_fp16(model_path: Path) -> onnx.ModelProto:
    """FP16 weights and compute with float32 graph inputs/outputs (`keep_io_types`)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    m = onnx.load(str(model_path))
    out: onnx.ModelProto = convert_float_to_float16(m, keep_io_types=True)
    return out


def evaluate_voc(
    model: Path, spec: dict[str, Any], root: Path, split: str
) -> dict[str, Any]:
    """pycocotools AP of `model` on a VOC split with the project's reference pipeline
    (`tools.anchorkit_train.evaluate`: spec preprocessing, mmdet post-processing), ONNX
    Runtime CPU. Raises `QuantizeError` for a missing split or annotation."""
    from .anchorkit_train.data import load_voc
    from .anchorkit_train.evaluate import coco_eval, detect_all

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    inp = spec["input"]["name"]

    def infer(x: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
        return dict(zip(names, sess.run(None, {inp: x}), strict=True))

    classes = tuple(spec["classes"])
    try:
        recs = load_voc(root, split, classes)
    except (OSError, ValueError) as e:
        raise QuantizeError(f"--eval-voc: {e}") from None
    return coco_eval(recs, detect_all(spec, infer, recs), classes)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m tools.quantize",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    ap.add_argument("--model", type=Path, required=True, help="FP32 ONNX model")
    ap.add_argument(
        "--spec", type=Path, help="sidecar spec JSON (default: the model's metadata)"
    )
    ap.add_argument("--out", type=Path, required=True, help="output ONNX file")
    ap.add_argument(
        "--fp16", action="store_true", help="FP16 conversion instead of INT8"
    )
    ap.add_argument("--calib", type=Path, help="directory of calibration images (INT8)")
    ap.add_argument(
        "--calib-list",
        type=Path,
        help="keep only the images whose stem is listed (e.g. ImageSets/Main/trainval.txt)",
    )
    ap.add_argument(
        "--num", type=int, default=64, help="calibration images (default 64)"
    )
    ap.add_argument(
        "--seed", type=int, default=0, help="seed of the calibration sample"
    )
    ap.add_argument(
        "--per-channel", action="store_true", help="per-channel weight scales"
    )
    ap.add_argument(
        "--exclude-heads",
        action="store_true",
        help="keep the convolutions producing the head outputs in FP32",
    )
    ap.add_argument("--method", choices=sorted(METHODS), default="minmax")
    ap.add_argument(
        "--percentile", type=float, default=99.999, help="for --method percentile"
    )
    ap.add_argument(
        "--eval-voc",
        type=Path,
        help="VOC root: measure the output's AP on --eval-split and record it",
    )
    ap.add_argument("--eval-split", default="test", help="VOC split for --eval-voc")
    ap.add_argument(
        "--num-bins",
        type=int,
        default=512,
        help="histogram bins for entropy / percentile (default 512)",
    )
    return ap


def run(a: argparse.Namespace, argv: list[str]) -> int:
    """Does the work of `main`; raises `QuantizeError` for usage / input errors."""
    if a.out.resolve() == a.model.resolve():
        raise QuantizeError(f"{a.out}: refusing to overwrite the input model")
    if a.spec is not None and a.out.resolve() == a.spec.resolve():
        raise QuantizeError(f"{a.out}: refusing to overwrite the spec")
    try:
        parent = onnx.load(str(a.model))
    except (OSError, DecodeError) as e:
        raise QuantizeError(f"{a.model}: cannot load as ONNX ({e})") from None
    spec = read_spec_json(parent, a.model, a.spec)
    parsed = parse_spec(spec, str(a.model))
    note: dict[str, Any] = {
        "parent": a.model.name,
        "parent_sha256": sha256(a.model),
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
        "command": "python -m tools.quantize " + shlex.join(argv),
    }
    status = 0
    probe: npt.NDArray[np.float32] | None = None
    if a.fp16:
        if a.calib is not None:
            raise QuantizeError("--fp16 takes no calibration set (--calib is for INT8)")
        m = convert_fp16(a.model)
        note["format"] = "FP16 (float32 inputs/outputs, keep_io_types)"
        note["converter"] = "onnxruntime.transformers.float16.convert_float_to_float16"
    else:
        if a.calib is None:
            raise QuantizeError("INT8 needs --calib DIR (or pass --fp16)")
        if a.num < 1:
            raise QuantizeError("--num must be at least 1")
        if a.num_bins < 2 * ENTROPY_QUANTIZED_BINS:
            raise QuantizeError(
                f"--num-bins must be at least {2 * ENTROPY_QUANTIZED_BINS}"
            )
        if not 0.0 < a.percentile <= 100.0:
            raise QuantizeError("--percentile must be in (0, 100]")
        files = image_files(a.calib, a.calib_list)
        if not files:
            raise QuantizeError(f"{a.calib}: no images")
        chosen = select(files, a.num, a.seed)
        cal = calibration_set(parsed, chosen, len(files))
        for s in cal.skipped:
            print(f"error: {s} (skipped)", file=sys.stderr)
        if cal.skipped:
            status = 1
        if not cal.tensors:
            raise QuantizeError(
                f"{a.calib}: none of the {len(chosen)} chosen images decodes"
            )
        print(
            f"calibration: {len(cal.tensors)} of {len(files)} images in {a.calib}"
            + (f" listed in {a.calib_list}" if a.calib_list else "")
            + f", seed {a.seed}, method {a.method}",
            file=sys.stderr,
        )
        with tempfile.TemporaryDirectory(prefix="anchorkit-quantize-") as td:
            m, tech = quantize_int8(
                a.model,
                spec,
                cal,
                Int8Options(
                    a.method, a.per_channel, a.exclude_heads, a.percentile, a.num_bins
                ),
                Path(td),
            )
        note.update(tech)
        note["calibration"] = {
            "dir": str(a.calib),
            "list": str(a.calib_list) if a.calib_list else None,
            "images": len(cal.tensors),
            "available": len(files),
            "seed": a.seed,
            "files": [p.name for p in cal.files],
        }
        probe = cal.tensors[0]
    out_spec = derived_spec(spec, note)
    set_spec(m, out_spec)
    with tempfile.TemporaryDirectory(prefix="anchorkit-quantize-") as td:
        trial = Path(td) / "check.onnx"
        onnx.save(m, str(trial))
        check_loads(trial, out_spec, probe)
        if a.eval_voc is not None:
            metrics = evaluate_voc(trial, out_spec, a.eval_voc, a.eval_split)
            note["test_metrics"] = metrics
            note["test_split"] = f"{a.eval_voc} {a.eval_split}"
            out_spec = derived_spec(spec, note)
            set_spec(m, out_spec)
            print(
                f"{a.eval_split}: AP {metrics['AP']:.4f}, AP50 {metrics['AP50']:.4f}, per-class "
                f"AP50 {json.dumps(metrics['per_class_AP50'])}",
                file=sys.stderr,
            )
    save_atomic(m, a.out)
    counts = op_counts(m)
    print(
        f"wrote {a.out} ({a.out.stat().st_size / 1e6:.2f} MB, parent "
        f"{a.model.stat().st_size / 1e6:.2f} MB; QuantizeLinear {counts.get('QuantizeLinear', 0)}, "
        f"DequantizeLinear {counts.get('DequantizeLinear', 0)}"
        + (
            f"; FP32 head convs: {', '.join(note['fp32_nodes'])}"
            if note.get("fp32_nodes")
            else ""
        )
        + ")",
        file=sys.stderr,
    )
    return status


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code (0 ok, 1 some calibration images skipped,
    2 error with nothing written)."""
    args = list(sys.argv[1:] if argv is None else argv)
    a = _parser().parse_args(args)
    try:
        return run(a, args)
    except (QuantizeError, SpecError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
