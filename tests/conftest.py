"""Shared fixtures: small deterministic images and the optional real data folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def ihc() -> np.ndarray:
    """The 512 x 512 RGB IHC image shipped with scikit-image."""
    return skimage.data.immunohistochemistry()


@pytest.fixture()
def tile(ihc: np.ndarray) -> np.ndarray:
    """A 96 x 128 RGB crop with texture everywhere."""
    return ihc[100:196, 150:278].copy()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data folder; tests using it skip when it is absent."""
    if not DATA.is_dir():
        pytest.skip(f"real data folder {DATA} is absent")
    return DATA
