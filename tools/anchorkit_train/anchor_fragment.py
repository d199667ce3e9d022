"""Read the spec fragment written by `anchorkit anchors --write-spec FILE`.

The fragment is `{"priors": <PriorSpec>, "strides": [...]}` (`src/spec.rs` `PriorSpec`):
`{"type": "explicit_anchors", "per_level": [[[w, h], ...], ...], "center_offset": c}` (k-means,
evolve, learned) or `{"type": "anchors", "octave_base_scale": ..., "scales_per_octave": ...,
"ratios": [...], "center_offset": c}` (de). Either way the trainer turns it into fixed explicit
per-level `(w, h)` shapes in input pixels, placed like mmdet's `AnchorGenerator` (centre offset
0, the trainer's convention for every anchor head); `anchorkit anchors` writes centre offset
0.5 (mmdet `YOLOAnchorGenerator`) for free shapes, which is recorded but not used.

Every error is an `AnchorFragmentError` whose message starts with the file name.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .anchors import base_anchors


class AnchorFragmentError(ValueError):
    """A fragment that cannot be used by this trainer (message names the file)."""


@dataclass(frozen=True)
class AnchorFragment:
    """Validated anchors of a fragment.

    `per_level[l][a] = (w, h)` in input pixels; `source_type` is the fragment's prior type;
    `center_offset` the offset the fragment asked for (the trainer uses 0); `raw` the parsed
    JSON object, `sha256` of the file bytes (empty when parsed from an object)."""

    source: str
    strides: tuple[int, ...]
    per_level: tuple[tuple[tuple[float, float], ...], ...]
    source_type: str
    center_offset: float
    raw: dict[str, Any]
    sha256: str = ""

    def record(self) -> dict[str, Any]:
        """JSON-able record for checkpoints and provenance (file, hash, original content)."""
        return {
            "file": self.source,
            "sha256": self.sha256,
            "fragment": self.raw,
        }


def _num(v: Any, what: str, src: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise AnchorFragmentError(f"{src}: {what} must be a number, found {v!r}")
    return float(v)


def parse_fragment(
    obj: Any, source: str, strides: tuple[int, ...], num_anchors: int
) -> AnchorFragment:
    """Validate a parsed fragment against the trainer's `strides` and head `num_anchors` (A)."""
    if not isinstance(obj, dict):
        raise AnchorFragmentError(
            f"{source}: expected a JSON object {{'priors': ..., 'strides': [...]}}, "
            f"found {type(obj).__name__}"
        )
    for key in ("priors", "strides"):
        if key not in obj:
            raise AnchorFragmentError(
                f"{source}: missing key {key!r} (write it with "
                "`anchorkit anchors ... --write-spec FILE`)"
            )
    fs = obj["strides"]
    if not isinstance(fs, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) for s in fs
    ):
        raise AnchorFragmentError(
            f"{source}: 'strides' must be a list of integers, found {fs!r}"
        )
    if tuple(fs) != tuple(strides):
        raise AnchorFragmentError(
            f"{source}: strides {list(fs)} do not match the trainer's strides "
            f"{list(strides)}; rerun `anchorkit anchors` with "
            f"--strides {','.join(str(s) for s in strides)}"
        )
    pri = obj["priors"]
    if not isinstance(pri, dict) or "type" not in pri:
        raise AnchorFragmentError(
            f"{source}: 'priors' must be an object with a 'type', found {pri!r}"
        )
    kind = pri["type"]
    offset = _num(pri.get("center_offset", 0.0), "priors.center_offset", source)
    per_level: list[tuple[tuple[float, float], ...]] = []
    if kind == "explicit_anchors":
        pl = pri.get("per_level")
        if not isinstance(pl, list):
            raise AnchorFragmentError(
                f"{source}: priors.per_level must be a list of per-level (w, h) lists"
            )
        if len(pl) != len(strides):
            raise AnchorFragmentError(
                f"{source}: priors.per_level has {len(pl)} levels, the trainer has "
                f"{len(strides)} (strides {list(strides)})"
            )
        for li, level in enumerate(pl):
            if not isinstance(level, list):
                raise AnchorFragmentError(
                    f"{source}: priors.per_level[{li}] must be a list of [w, h] pairs"
                )
            shapes: list[tuple[float, float]] = []
            for ai, wh in enumerate(level):
                if not isinstance(wh, list) or len(wh) != 2:
                    raise AnchorFragmentError(
                        f"{source}: priors.per_level[{li}][{ai}] must be [w, h], "
                        f"found {wh!r}"
                    )
                w = _num(wh[0], f"priors.per_level[{li}][{ai}][0]", source)
                h = _num(wh[1], f"priors.per_level[{li}][{ai}][1]", source)
                if not (math.isfinite(w) and math.isfinite(h) and w > 0 and h > 0):
                    raise AnchorFragmentError(
                        f"{source}: priors.per_level[{li}][{ai}] = {wh!r}: "
                        "w and h must be finite and > 0"
                    )
                shapes.append((w, h))
            per_level.append(tuple(shapes))
    elif kind == "anchors":
        obs = _num(pri.get("octave_base_scale"), "priors.octave_base_scale", source)
        spo = pri.get("scales_per_octave")
        ratios = pri.get("ratios")
        if not isinstance(spo, int) or isinstance(spo, bool) or spo < 1:
            raise AnchorFragmentError(
                f"{source}: priors.scales_per_octave must be an integer >= 1, found {spo!r}"
            )
        if not isinstance(ratios, list) or not ratios:
            raise AnchorFragmentError(
                f"{source}: priors.ratios must be a non-empty list, found {ratios!r}"
            )
        rs = [_num(r, "priors.ratios[]", source) for r in ratios]
        for s in strides:
            b = base_anchors(s, obs, spo, rs)
            wh = (b[:, 2:] - b[:, :2]).tolist()
            per_level.append(tuple((float(w), float(h)) for w, h in wh))
    else:
        raise AnchorFragmentError(
            f"{source}: priors.type {kind!r} is not supported (expected "
            "'explicit_anchors' or 'anchors')"
        )
    for li, shapes_l in enumerate(per_level):
        if len(shapes_l) != num_anchors:
            raise AnchorFragmentError(
                f"{source}: level P{li + 3} (stride {strides[li]}) has {len(shapes_l)} "
                f"anchors, the head has A = {num_anchors} per location; rerun "
                f"`anchorkit anchors` with --layout fpn --k {num_anchors} (or "
                f"--layout free --k {num_anchors * len(strides)})"
            )
    return AnchorFragment(
        source=source,
        strides=tuple(fs),
        per_level=tuple(per_level),
        source_type=str(kind),
        center_offset=offset,
        raw=obj,
    )


def read_fragment(
    path: Path, strides: tuple[int, ...], num_anchors: int
) -> AnchorFragment:
    """Read and validate `path` (see `parse_fragment`)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise AnchorFragmentError(f"{path}: cannot read: {e.strerror or e}") from e
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AnchorFragmentError(f"{path}: not valid JSON: {e}") from e
    frag = parse_fragment(obj, str(path), strides, num_anchors)
    return replace(frag, sha256=hashlib.sha256(data).hexdigest())
