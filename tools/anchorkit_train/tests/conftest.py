"""Shared fixtures: BCCD from `../shared` (the CI layout), skipped with a message if absent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tools.anchorkit_train.data import load_voc, read_bgr
from tools.reference.preprocess import preprocess
from tools.reference.spec import parse_spec

REPO = Path(__file__).resolve().parents[3]
BCCD = REPO.parent / "shared" / "data" / "bccd" / "BCCD"


@pytest.fixture(scope="session")
def bccd() -> Path:
    if not (BCCD / "ImageSets" / "Main" / "test.txt").is_file():
        pytest.skip(f"BCCD not found at {BCCD} (expects ../shared beside the repo)")
    return BCCD


@pytest.fixture
def bccd_test_inputs(
    bccd: Path,
) -> Callable[[dict[str, Any], int], list[np.ndarray]]:
    """`make(spec, n)`: the network inputs `[1, 3, H, W]` of the first `n` BCCD test images,
    preprocessed as the spec JSON object `spec` says."""

    def make(spec: dict[str, Any], n: int) -> list[np.ndarray]:
        recs = load_voc(bccd, "test")[:n]
        return [preprocess(parse_spec(spec).input, read_bgr(r.path))[0] for r in recs]

    return make
