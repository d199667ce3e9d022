"""The `anchorkit.detector/1` spec, read exactly as `src/spec.rs` defines it (serde names/tags).

A spec is stored in the ONNX `metadata_props` under the key `anchorkit.detector`, or in a sidecar
JSON file (`--spec PATH`, or `<model>.json` / `<model stem>.json` beside the model).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

METADATA_KEY = "anchorkit.detector"
FORMAT_V1 = "anchorkit.detector/1"


class SpecError(ValueError):
    """A spec that cannot be found or parsed; the message names the source and the problem."""


def _check_keys(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(obj) - allowed
    if unknown:
        raise SpecError(f"{where}: unknown field(s) {sorted(unknown)}")


def _req(obj: dict[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise SpecError(f"{where}: missing field `{key}`")
    return obj[key]


@dataclass(frozen=True)
class ResizeRule:
    """`rule`: keep_ratio (`scale` = [long, short] as mmdet's (1333, 800)), stretch, letterbox."""

    rule: str
    scale: tuple[int, int] = (0, 0)
    width: int = 0
    height: int = 0
    pad_value: float = 0.0


@dataclass(frozen=True)
class InputSpec:
    """Input tensor and preprocessing (mmdet Resize / Normalize / Pad)."""

    name: str
    channel_order: str  # "rgb" | "bgr"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: ResizeRule
    size_divisor: int = 1
    pad_value: float = 0.0
    dynamic_hw: bool = False
    exif_orientation: bool = True


@dataclass(frozen=True)
class LevelSpec:
    """One FPN level: stride and output tensor names."""

    stride: int
    cls: str
    reg: str
    centerness: str | None = None


@dataclass(frozen=True)
class PriorSpec:
    """`type`: anchors | explicit_anchors | points."""

    type: str
    octave_base_scale: float = 0.0
    scales_per_octave: int = 0
    ratios: tuple[float, ...] = ()
    per_level: tuple[tuple[tuple[float, float], ...], ...] = ()
    center_offset: float = 0.0
    offset: float = 0.0

    def num_anchors(self) -> int:
        """A, the number of priors per location."""
        if self.type == "anchors":
            return len(self.ratios) * self.scales_per_octave
        if self.type == "explicit_anchors":
            return len(self.per_level[0])
        return 1


@dataclass(frozen=True)
class CoderSpec:
    """`type`: delta_xywh | distance | distribution."""

    type: str
    means: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    stds: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    wh_ratio_clip: float = 16.0 / 1000.0
    clip_border: bool = True
    scale_by_stride: bool = False
    reg_max: int = 0


@dataclass(frozen=True)
class HeadSpec:
    """Head: kind (retina | atss | gfl | fcos), layout (nchw | flat), levels, priors, coder."""

    kind: str
    layout: str
    levels: tuple[LevelSpec, ...]
    priors: PriorSpec
    coder: CoderSpec
    score: str  # "sigmoid" | "activated"
    centerness: bool = False


@dataclass(frozen=True)
class PostprocessSpec:
    """mmdet `test_cfg`; `rule` is mmdet | mmdeploy | legacy."""

    nms_pre: int
    score_thr: float
    iou_thr: float
    max_per_img: int
    class_agnostic: bool = False
    rule: str = "mmdet"
    min_bbox_size: float | None = None


@dataclass(frozen=True)
class DetectorSpec:
    """A complete detector spec (`format` must be `anchorkit.detector/1`)."""

    format: str
    classes: tuple[str, ...]
    input: InputSpec
    head: HeadSpec
    postprocess: PostprocessSpec
    name: str = ""
    provenance: dict[str, Any] | None = field(default=None)


def _one_of(value: Any, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise SpecError(f"{where}: {value!r} is not one of {list(allowed)}")
    return str(value)


def _parse_resize(obj: dict[str, Any], where: str) -> ResizeRule:
    rule = _one_of(
        _req(obj, "rule", where), ("keep_ratio", "stretch", "letterbox"), where
    )
    if rule == "keep_ratio":
        _check_keys(obj, {"rule", "scale"}, where)
        a, b = _req(obj, "scale", where)
        return ResizeRule(rule=rule, scale=(int(a), int(b)))
    if rule == "stretch":
        _check_keys(obj, {"rule", "width", "height"}, where)
        return ResizeRule(
            rule=rule,
            width=int(_req(obj, "width", where)),
            height=int(_req(obj, "height", where)),
        )
    _check_keys(obj, {"rule", "width", "height", "pad_value"}, where)
    return ResizeRule(
        rule=rule,
        width=int(_req(obj, "width", where)),
        height=int(_req(obj, "height", where)),
        pad_value=float(obj.get("pad_value", 0.0)),
    )


def _parse_input(obj: dict[str, Any]) -> InputSpec:
    w = "input"
    _check_keys(
        obj,
        {
            "name",
            "channel_order",
            "mean",
            "std",
            "resize",
            "pad",
            "dynamic_hw",
            "exif_orientation",
            "resize_backend",
        },
        w,
    )
    # The reference always resizes with cv2 (mmcv's default backend); a spec asking for the
    # fast_image_resize kernel is still read, and the tensors then differ by +-1..3 levels.
    _one_of(
        obj.get("resize_backend", "cv2"),
        ("cv2", "fast_image_resize"),
        "input.resize_backend",
    )
    pad = obj.get("pad", {"size_divisor": 1, "value": 0.0})
    _check_keys(pad, {"size_divisor", "value"}, "input.pad")
    mean = tuple(float(v) for v in _req(obj, "mean", w))
    std = tuple(float(v) for v in _req(obj, "std", w))
    if len(mean) != 3 or len(std) != 3:
        raise SpecError("input: mean and std need 3 values")
    return InputSpec(
        name=str(_req(obj, "name", w)),
        channel_order=_one_of(
            _req(obj, "channel_order", w), ("rgb", "bgr"), "input.channel_order"
        ),
        mean=(mean[0], mean[1], mean[2]),
        std=(std[0], std[1], std[2]),
        resize=_parse_resize(_req(obj, "resize", w), "input.resize"),
        size_divisor=int(_req(pad, "size_divisor", "input.pad")),
        pad_value=float(pad.get("value", 0.0)),
        dynamic_hw=bool(obj.get("dynamic_hw", False)),
        exif_orientation=bool(obj.get("exif_orientation", True)),
    )


def _parse_priors(obj: dict[str, Any]) -> PriorSpec:
    w = "head.priors"
    kind = _one_of(_req(obj, "type", w), ("anchors", "explicit_anchors", "points"), w)
    if kind == "anchors":
        _check_keys(
            obj,
            {
                "type",
                "octave_base_scale",
                "scales_per_octave",
                "ratios",
                "center_offset",
            },
            w,
        )
        return PriorSpec(
            type=kind,
            octave_base_scale=float(_req(obj, "octave_base_scale", w)),
            scales_per_octave=int(_req(obj, "scales_per_octave", w)),
            ratios=tuple(float(r) for r in _req(obj, "ratios", w)),
            center_offset=float(obj.get("center_offset", 0.0)),
        )
    if kind == "explicit_anchors":
        _check_keys(obj, {"type", "per_level", "center_offset"}, w)
        per_level = tuple(
            tuple((float(a), float(b)) for a, b in lvl)
            for lvl in _req(obj, "per_level", w)
        )
        if not per_level or any(
            len(lvl) != len(per_level[0]) or not lvl for lvl in per_level
        ):
            raise SpecError(
                f"{w}: per_level must list the same non-zero number of (w, h) on every level"
            )
        return PriorSpec(
            type=kind,
            per_level=per_level,
            center_offset=float(obj.get("center_offset", 0.0)),
        )
    _check_keys(obj, {"type", "offset"}, w)
    return PriorSpec(type=kind, offset=float(_req(obj, "offset", w)))


def _parse_coder(obj: dict[str, Any]) -> CoderSpec:
    w = "head.coder"
    kind = _one_of(_req(obj, "type", w), ("delta_xywh", "distance", "distribution"), w)
    if kind == "delta_xywh":
        _check_keys(obj, {"type", "means", "stds", "wh_ratio_clip", "clip_border"}, w)
        m = [float(v) for v in _req(obj, "means", w)]
        s = [float(v) for v in _req(obj, "stds", w)]
        return CoderSpec(
            type=kind,
            means=(m[0], m[1], m[2], m[3]),
            stds=(s[0], s[1], s[2], s[3]),
            wh_ratio_clip=float(obj.get("wh_ratio_clip", 16.0 / 1000.0)),
            clip_border=bool(obj.get("clip_border", True)),
        )
    if kind == "distance":
        _check_keys(obj, {"type", "scale_by_stride", "clip_border"}, w)
        return CoderSpec(
            type=kind,
            scale_by_stride=bool(obj.get("scale_by_stride", False)),
            clip_border=bool(obj.get("clip_border", True)),
        )
    _check_keys(obj, {"type", "reg_max", "scale_by_stride", "clip_border"}, w)
    return CoderSpec(
        type=kind,
        reg_max=int(_req(obj, "reg_max", w)),
        scale_by_stride=bool(obj.get("scale_by_stride", True)),
        clip_border=bool(obj.get("clip_border", True)),
    )


def _parse_head(obj: dict[str, Any]) -> HeadSpec:
    w = "head"
    _check_keys(
        obj, {"kind", "layout", "levels", "priors", "coder", "score", "centerness"}, w
    )
    levels = []
    for i, lv in enumerate(_req(obj, "levels", w)):
        lw = f"head.levels[{i}]"
        _check_keys(lv, {"stride", "cls", "reg", "centerness"}, lw)
        levels.append(
            LevelSpec(
                stride=int(_req(lv, "stride", lw)),
                cls=str(_req(lv, "cls", lw)),
                reg=str(_req(lv, "reg", lw)),
                centerness=None
                if lv.get("centerness") is None
                else str(lv["centerness"]),
            )
        )
    if not levels:
        raise SpecError("head.levels: at least one level is needed")
    return HeadSpec(
        kind=_one_of(
            _req(obj, "kind", w), ("retina", "atss", "gfl", "fcos"), "head.kind"
        ),
        layout=_one_of(_req(obj, "layout", w), ("nchw", "flat"), "head.layout"),
        levels=tuple(levels),
        priors=_parse_priors(_req(obj, "priors", w)),
        coder=_parse_coder(_req(obj, "coder", w)),
        score=_one_of(_req(obj, "score", w), ("sigmoid", "activated"), "head.score"),
        centerness=bool(obj.get("centerness", False)),
    )


def _parse_post(obj: dict[str, Any]) -> PostprocessSpec:
    w = "postprocess"
    _check_keys(
        obj,
        {
            "nms_pre",
            "score_thr",
            "iou_thr",
            "max_per_img",
            "class_agnostic",
            "rule",
            "min_bbox_size",
        },
        w,
    )
    mbs = obj.get("min_bbox_size")
    return PostprocessSpec(
        nms_pre=int(_req(obj, "nms_pre", w)),
        score_thr=float(_req(obj, "score_thr", w)),
        iou_thr=float(_req(obj, "iou_thr", w)),
        max_per_img=int(_req(obj, "max_per_img", w)),
        class_agnostic=bool(obj.get("class_agnostic", False)),
        rule=_one_of(
            obj.get("rule", "mmdet"),
            ("mmdet", "mmdeploy", "legacy"),
            "postprocess.rule",
        ),
        min_bbox_size=None if mbs is None else float(mbs),
    )


def parse_spec(obj: dict[str, Any], source: str = "spec") -> DetectorSpec:
    """Parses a spec JSON object; raises `SpecError` naming `source` and the bad field."""
    try:
        _check_keys(
            obj,
            {"format", "name", "classes", "input", "head", "postprocess", "provenance"},
            "spec",
        )
        fmt = str(_req(obj, "format", "spec"))
        if fmt != FORMAT_V1:
            raise SpecError(f"spec: format {fmt!r} is not {FORMAT_V1!r}")
        spec = DetectorSpec(
            format=fmt,
            name=str(obj.get("name", "")),
            classes=tuple(str(c) for c in _req(obj, "classes", "spec")),
            input=_parse_input(_req(obj, "input", "spec")),
            head=_parse_head(_req(obj, "head", "spec")),
            postprocess=_parse_post(_req(obj, "postprocess", "spec")),
            provenance=obj.get("provenance"),
        )
    except SpecError as e:
        raise SpecError(f"{source}: {e}") from None
    except (TypeError, ValueError, KeyError) as e:
        raise SpecError(f"{source}: malformed spec ({e})") from None
    if spec.head.centerness and any(lv.centerness is None for lv in spec.head.levels):
        raise SpecError(
            f"{source}: head.centerness is set but a level names no centerness tensor"
        )
    return spec


def read_metadata_spec(model: Path) -> str | None:
    """Returns the raw spec JSON stored under `anchorkit.detector` in the ONNX metadata, if any."""
    m = onnx.load(str(model), load_external_data=False)
    for prop in m.metadata_props:
        if prop.key == METADATA_KEY:
            return str(prop.value)
    return None


def set_spec(model: onnx.ModelProto, spec: dict[str, Any]) -> None:
    """Replaces (or adds) the `anchorkit.detector` metadata entry of `model` with `spec` as
    JSON; any other metadata entries stay."""
    for p in list(model.metadata_props):
        if p.key == METADATA_KEY:
            model.metadata_props.remove(p)
    e = model.metadata_props.add()
    e.key = METADATA_KEY
    e.value = json.dumps(spec)


def load_spec(model: Path, spec_path: Path | None = None) -> DetectorSpec:
    """Finds and parses the spec of `model`: `spec_path`, else ONNX metadata, else a sidecar.

    Sidecars tried: `<model>.json` (e.g. `m.onnx.json`) and `<model without .onnx>.json`.
    Raises `SpecError` when none is found or it does not parse.
    """
    if spec_path is not None:
        try:
            text = spec_path.read_text()
        except OSError as e:
            raise SpecError(f"{spec_path}: cannot read spec ({e.strerror})") from None
        return parse_spec(spec_object(text, str(spec_path)), str(spec_path))
    raw = read_metadata_spec(model)
    if raw is not None:
        src = f"{model} metadata `{METADATA_KEY}`"
        return parse_spec(spec_object(raw, src), src)
    for cand in (model.with_name(model.name + ".json"), model.with_suffix(".json")):
        if cand.is_file():
            return parse_spec(spec_object(cand.read_text(), str(cand)), str(cand))
    raise SpecError(
        f"{model}: no detector spec (no `{METADATA_KEY}` metadata and no sidecar JSON); pass --spec PATH"
    )


def spec_object(text: str, source: str) -> dict[str, Any]:
    """Parses spec JSON `text` (from `source`, named in errors) into a JSON object, not yet
    checked against the contract (`parse_spec` does that). Raises `SpecError` if it is not
    valid JSON or not an object."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(f"{source}: invalid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise SpecError(f"{source}: the spec must be a JSON object")
    return obj
