"""Dark-field (fluorescence) images are judged as their stretched negative; nothing else changes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from histoblur.inference.modality import as_bright_field, is_dark_field
from histoblur.inference.segment import Segmenter
from histoblur.io.images import read_image
from histoblur.synthesis import apply_blur, make_spec


def nuclei(seed: int = 0, size: int = 96) -> np.ndarray:
    """A 16-bit fluorescence-like image: bright sharp discs on a dark noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    image = rng.normal(300, 20, (size, size))
    for cy, cx, r in rng.uniform((8, 8, 3), (size - 8, size - 8, 7), (25, 3)):
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(1000, 1500)
    return np.clip(image, 0, 65535).astype(np.uint16)


def test_dark_single_channel_is_inverted_and_stretched() -> None:
    image = nuclei()
    assert is_dark_field(image)
    shown = as_bright_field(image)
    assert shown.dtype == np.uint8 and shown.shape == image.shape
    background, nucleus = image < 500, image > 900
    assert shown[background].mean() > 200 and shown[nucleus].mean() < 80
    assert as_bright_field(shown) is shown  # idempotent: the negative is bright


@pytest.mark.parametrize(
    "image",
    [
        np.full((16, 16, 3), 20, np.uint8),  # dark colour (dense tissue): never inverted
        np.full((16, 16), 200, np.uint8),  # bright grey (bright-field stack)
        np.full((16, 16), 0.1, np.float32),  # not an image type histoblur reads
        np.zeros((0, 4), np.uint8),
    ],
)
def test_everything_else_passes_through(image: np.ndarray) -> None:
    assert not is_dark_field(image)
    assert as_bright_field(image) is image


def test_segmenter_finds_blur_in_a_dark_field_image() -> None:
    segmenter = Segmenter.load("default", tile=96)
    sharp = nuclei(1)
    blurred = apply_blur(sharp, make_spec("gaussian", sigma=4.0))
    assert segmenter.focus_score(blurred) > segmenter.focus_score(sharp) + 0.3
    half = sharp.copy()
    half[:, 48:] = blurred[:, 48:]
    result = segmenter.segment(half)
    assert result.mask[:, 60:].mean() > result.mask[:, :36].mean() + 0.3


def test_real_fluorescence_in_focus_scores_below_defocused(data_dir: Path) -> None:
    """BBBC006 Hoechst nuclei: the median in-focus image scores below every defocused one."""
    folder = data_dir / "real_blur" / "bbbc006"
    with open(folder / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    segmenter = Segmenter.load("default")
    scores: dict[bool, list[float]] = {True: [], False: []}
    for row in rows[::3]:
        image = read_image(folder / row["file"])[:256, :256]
        scores["defocus" in row["focus_label"]].append(segmenter.focus_score(image))
    assert scores[True] and scores[False]
    assert np.median(scores[False]) < min(scores[True])
