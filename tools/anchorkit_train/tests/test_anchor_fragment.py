"""`--anchors FILE`: `anchorkit anchors --write-spec` fragments -> fixed explicit anchors in
training and in the exported spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from tools.anchorkit_train.anchor_fragment import (
    AnchorFragmentError,
    parse_fragment,
    read_fragment,
)
from tools.anchorkit_train.data import BCCD_CLASSES
from tools.anchorkit_train.export import export_onnx, load_checkpoint
from tools.anchorkit_train.methods import ModelSize, TrainModel
from tools.anchorkit_train.model import STRIDES
from tools.anchorkit_train.models_md import anchors_text
from tools.anchorkit_train.priors import AnchorPriors, ExplicitAnchorPriors
from tools.anchorkit_train.train import main as train_main
from tools.reference.priors import level_priors
from tools.reference.spec import METADATA_KEY, parse_spec

REPO = Path(__file__).resolve().parents[3]
KMEANS = REPO / "models" / "anchors" / "bccd_kmeans9_fpn.json"
SMALL = ModelSize(widths=(8, 16, 16, 32, 32), feat=16, stacked=1)


def fragment(
    strides: tuple[int, ...] = (8, 16, 32), a: int = 9, offset: float = 0.5
) -> dict[str, Any]:
    """A fragment like `anchorkit anchors --layout fpn --k A` writes (odd, non-integer sizes)."""
    per_level = [
        [[s * (2.1 + 0.37 * i), s * (1.7 + 0.41 * i)] for i in range(a)]
        for s in strides
    ]
    return {
        "priors": {
            "type": "explicit_anchors",
            "per_level": per_level,
            "center_offset": offset,
        },
        "strides": list(strides),
    }


def write(tmp_path: Path, obj: Any, name: str = "frag.json") -> Path:
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def test_good_fragment(tmp_path: Path) -> None:
    obj = fragment()
    p = write(tmp_path, obj)
    f = read_fragment(p, STRIDES, 9)
    assert f.strides == STRIDES
    assert f.source == str(p) and len(f.sha256) == 64
    assert f.center_offset == 0.5 and f.source_type == "explicit_anchors"
    assert [[list(s) for s in lvl] for lvl in f.per_level] == obj["priors"]["per_level"]
    assert f.record()["fragment"] == obj


def test_committed_kmeans_fragment_parses() -> None:
    f = read_fragment(KMEANS, STRIDES, 9)
    assert [len(lvl) for lvl in f.per_level] == [9, 9, 9]
    # fpn layout: the same shapes x stride on every level
    p3 = np.array(f.per_level[0]) / 8
    for li, s in enumerate(STRIDES):
        np.testing.assert_allclose(np.array(f.per_level[li]) / s, p3, rtol=1e-5)


@pytest.mark.parametrize(
    ("obj", "needle"),
    [
        (fragment(strides=(8, 16, 32, 64, 128)), "do not match the trainer's strides"),
        (fragment(strides=(8, 16, 64)), "--strides 8,16,32"),
        (fragment(a=3), "has 3 anchors, the head has A = 9"),
        ('{"priors": {"type": "explicit_anchors", ', "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ({"priors": fragment()["priors"]}, "missing key 'strides'"),
        (
            {"priors": {"type": "points", "offset": 0.5}, "strides": [8, 16, 32]},
            "points",
        ),
    ],
)
def test_bad_fragment_names_file(tmp_path: Path, obj: Any, needle: str) -> None:
    p = write(tmp_path, obj, "my_anchors.json")
    with pytest.raises(AnchorFragmentError) as e:
        read_fragment(p, STRIDES, 9)
    msg = str(e.value)
    assert msg.startswith(str(p)), msg
    assert needle in msg, msg


def test_ragged_and_nonpositive_levels(tmp_path: Path) -> None:
    obj = fragment()
    obj["priors"]["per_level"][1] = obj["priors"]["per_level"][1][:8]
    with pytest.raises(AnchorFragmentError, match=r"level P4 \(stride 16\) has 8"):
        parse_fragment(obj, "x.json", STRIDES, 9)
    obj = fragment()
    obj["priors"]["per_level"][2][4] = [10.0, -1.0]
    with pytest.raises(AnchorFragmentError, match=r"x.json: .*\[2\]\[4\]"):
        parse_fragment(obj, "x.json", STRIDES, 9)


def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.json"
    with pytest.raises(AnchorFragmentError, match="nope.json: cannot read"):
        read_fragment(p, STRIDES, 9)


def test_train_cli_rejects_bad_fragment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = write(tmp_path, fragment(a=1), "one.json")
    args = ["--method", "freeanchor", "--anchors", str(p), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as e:
        train_main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert str(p) in err and "A = 9" in err
    with pytest.raises(SystemExit):
        train_main(["--method", "atss", *args[2:]])
    assert "atss has no anchor shapes" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_anchors_type_fragment_equals_default_generator() -> None:
    obj = {
        "priors": {
            "type": "anchors",
            "octave_base_scale": 3.0,
            "scales_per_octave": 3,
            "ratios": [0.5, 1.0, 2.0],
            "center_offset": 0.0,
        },
        "strides": [8, 16, 32],
    }
    f = parse_fragment(obj, "de.json", STRIDES, 9)
    exp = ExplicitAnchorPriors(STRIDES, f.per_level)
    ref = AnchorPriors(STRIDES, 3.0, 3, [0.5, 1.0, 2.0])
    for li in range(3):
        assert torch.equal(exp.level(li, 3, 5), ref.level(li, 3, 5))


def test_explicit_anchors_equal_direct_computation() -> None:
    f = parse_fragment(fragment(), "f.json", STRIDES, 9)
    pri = ExplicitAnchorPriors(STRIDES, f.per_level)
    assert not any(p.requires_grad for p in pri.parameters())
    assert pri.num_anchors == 9
    spec = parse_spec(
        TrainModel("freeanchor", 3, SMALL, anchors_wh=f.per_level).spec(
            BCCD_CLASSES, "t", (416, 312), None
        )
    )
    for li, s in enumerate(STRIDES):
        h, w = 4, 6
        got = pri.level(li, h, w).numpy()
        wh = np.array(f.per_level[li], dtype=np.float32)
        direct = np.zeros((h, w, 9, 4), dtype=np.float32)
        for y in range(h):
            for x in range(w):
                cx, cy = np.float32(x * s), np.float32(y * s)
                direct[y, x, :, 0] = cx - np.float32(0.5) * wh[:, 0]
                direct[y, x, :, 1] = cy - np.float32(0.5) * wh[:, 1]
                direct[y, x, :, 2] = cx + np.float32(0.5) * wh[:, 0]
                direct[y, x, :, 3] = cy + np.float32(0.5) * wh[:, 1]
        np.testing.assert_array_equal(got, direct.reshape(-1, 4))
        # the reference decoder (what `anchorkit detect` mirrors) builds the same anchors
        ref = level_priors(spec.head.priors, li, s, h, w)
        np.testing.assert_array_equal(got, ref)


def test_learned_init_from_fragment() -> None:
    f = parse_fragment(fragment(), "f.json", STRIDES, 9)
    m = TrainModel("retina_learned", 3, SMALL, anchors_wh=f.per_level)
    got = m.priors.spec()["per_level"]
    np.testing.assert_allclose(np.array(got), np.array(f.per_level), rtol=1e-6)
    with pytest.raises(ValueError, match="takes no explicit anchors"):
        TrainModel("atss", 3, SMALL, anchors_wh=f.per_level)


def test_exported_spec_round_trips_shapes(tmp_path: Path) -> None:
    obj = fragment()
    f = read_fragment(write(tmp_path, obj), STRIDES, 9)
    torch.manual_seed(0)
    model = TrainModel("freeanchor", 3, SMALL, anchors_wh=f.per_level)
    f32 = np.array(obj["priors"]["per_level"], dtype=np.float32)
    assert torch.equal(model.state_dict()["priors.wh"], torch.from_numpy(f32))
    out = tmp_path / "m.onnx"
    spec = model.spec(BCCD_CLASSES, "t", (416, 312), {"anchors_file": f.record()})
    export_onnx(model, out, spec)
    m = onnx.load(str(out))
    got = json.loads(next(p.value for p in m.metadata_props if p.key == METADATA_KEY))
    pri = got["head"]["priors"]
    assert pri["type"] == "explicit_anchors" and pri["center_offset"] == 0.0
    np.testing.assert_array_equal(np.array(pri["per_level"], dtype=np.float32), f32)
    # float32 values survive JSON exactly
    assert (
        np.array(pri["per_level"]).astype(np.float32).astype(np.float64).tolist()
        == (pri["per_level"])
    )
    assert got["provenance"]["anchors_file"]["fragment"] == obj
    parsed = parse_spec(got, str(out))
    assert parsed.head.priors.num_anchors() == 9


def test_load_checkpoint_rebuilds_explicit_anchors(tmp_path: Path) -> None:
    f = read_fragment(KMEANS, STRIDES, 9)
    model = TrainModel("freeanchor", 3, anchors_wh=f.per_level)
    ckpt = tmp_path / "last.pt"
    torch.save(
        {
            "model": model.state_dict(),
            "method": "freeanchor",
            "seed": 0,
            "epoch": 0,
            "iter": 1,
            "scale": [416, 312],
            "anchors": f.record(),
        },
        ckpt,
    )
    loaded, st = load_checkpoint(ckpt)
    assert isinstance(loaded.priors, ExplicitAnchorPriors)
    assert loaded.priors.spec() == model.priors.spec()
    st.pop("anchors")
    torch.save(st, ckpt)
    with pytest.raises(RuntimeError, match="priors.wh"):
        load_checkpoint(ckpt)


def test_models_md_names_fixed_anchors() -> None:
    pri = {"type": "explicit_anchors", "per_level": [[[20.4, 30.6]]] * 3}
    prov = {"method": "freeanchor", "anchors_file": {"file": "a.json"}}
    assert anchors_text(pri, prov).startswith("fixed, from `a.json`, (w x h) P3: 20x31")
    prov["anchors_command"] = "anchorkit anchors --method kmeans"
    assert "`anchorkit anchors --method kmeans`" in anchors_text(pri, prov)
    assert anchors_text(pri, {"method": "retina_learned"}).startswith("learned")
