"""Shared fixtures: BCCD from `../shared` (the CI layout), skipped with a message if absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
BCCD = REPO.parent / "shared" / "data" / "bccd" / "BCCD"


@pytest.fixture(scope="session")
def bccd() -> Path:
    if not (BCCD / "ImageSets" / "Main" / "test.txt").is_file():
        pytest.skip(f"BCCD not found at {BCCD} (expects ../shared beside the repo)")
    return BCCD
