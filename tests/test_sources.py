"""Training sources with resolutions, marker-ink negatives, gamma augmentation, focus score."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from histoblur.errors import InputError
from histoblur.inference.segment import Segmenter, pooled_focus
from histoblur.io.images import read_image, write_image
from histoblur.synthesis.artifacts import pen
from histoblur.synthesis.dataset import DatasetConfig, draw_sample
from histoblur.training.augment import AugmentConfig, augment_pair
from histoblur.training.sources import Source, coarsest_mpp, prepare_sources
from histoblur.wsi.pyramid import write_pyramidal_tiff


def _tissue(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(40, 200, shape, dtype=np.uint8)


def test_sources_reach_the_working_resolution_and_are_never_enlarged(tmp_path):
    write_image(tmp_path / "fine.png", _tissue((400, 300, 3)))
    (tmp_path / "folder").mkdir()
    write_image(tmp_path / "folder" / "coarse.png", _tissue((100, 80, 3)))
    sources = [
        Source(path=tmp_path / "fine.png", mpp=0.25, box=(0.0, 0.0, 0.5, 1.0)),
        Source(path=tmp_path / "folder", mpp=2.0),
    ]
    out = prepare_sources(sources, 0.5, tmp_path / "prepared")
    rows = {r["from"]: r for r in json.loads((out / "sources.json").read_text())["images"]}
    fine = read_image(out / rows[str(tmp_path / "fine.png")]["file"])
    coarse = read_image(out / rows[str(tmp_path / "folder" / "coarse.png")]["file"])
    assert fine.shape == (200, 75, 3)  # left half, halved
    assert coarse.shape == (100, 80, 3)  # 2 um/px stays as it is
    assert coarsest_mpp(out) == 2.0


def test_slide_levels_are_read_with_the_slides_resolution(tmp_path):
    slide = write_pyramidal_tiff(tmp_path / "s.tif", _tissue((512, 512, 3)), mpp=0.25)
    out = prepare_sources([Source(path=slide, levels=(0, 1), min_tissue=0.0)], 0.5, tmp_path / "p")
    rows = json.loads((out / "sources.json").read_text())["images"]
    shapes = sorted(read_image(out / r["file"]).shape for r in rows)
    assert [r["mpp"] for r in sorted(rows, key=lambda r: r["mpp"])] == [0.5, 0.5]
    assert shapes == [(256, 256, 3), (256, 256, 3)]  # level 0 halved; level 1 as it is


def test_prepared_sources_are_reused_until_the_declaration_changes(tmp_path):
    write_image(tmp_path / "a.png", _tissue((64, 64, 3)))
    folder = prepare_sources([Source(path=tmp_path / "a.png")], 0.5, tmp_path / "p")
    stamp = (folder / "sources.json").stat().st_mtime_ns
    prepare_sources([Source(path=tmp_path / "a.png")], 0.5, tmp_path / "p")
    assert (folder / "sources.json").stat().st_mtime_ns == stamp
    prepare_sources([Source(path=tmp_path / "a.png", mpp=0.25)], 0.5, tmp_path / "p")
    assert read_image(next((folder / "00").glob("*.png"))).shape == (32, 32, 3)


def test_bad_sources_are_refused(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        prepare_sources([Source(path=tmp_path / "missing")], 0.5, tmp_path / "p")
    with pytest.raises(ValidationError):
        Source(path=tmp_path, box=(0.5, 0, 0.4, 1))
    with pytest.raises(ValidationError):
        Source(path=tmp_path, mpp=0)


def test_pen_ink_darkens_only_where_it_is_drawn():
    tile = np.full((96, 96, 3), 0.85, np.float32)
    inked, mask = pen(tile, np.random.default_rng(3))
    assert mask.any() and not mask.all()
    assert np.allclose(inked[~mask].max(), 0.85, atol=0.02)
    assert (inked[mask] <= tile[mask] + 1e-6).all()


def test_ink_samples_are_seeded_and_leave_other_samples_unchanged(tmp_path):
    write_image(tmp_path / "t.png", _tissue((128, 128, 3)))
    sources, base = [tmp_path / "t.png"], DatasetConfig(n=8, tile=32, min_tissue=0.0)
    half = base.model_copy(update={"ink_p": 0.5})
    inked = 0
    for i in range(8):
        plain, mixed = (
            draw_sample(i, sources, tmp_path, base),
            draw_sample(i, sources, tmp_path, half),
        )
        if "ink" in mixed[0]:
            inked += 1
            assert not np.array_equal(plain[1], mixed[1])
            assert np.array_equal(mixed[1], draw_sample(i, sources, tmp_path, half)[1])
        else:
            assert np.array_equal(plain[1], mixed[1]) and np.array_equal(plain[2], mixed[2])
    assert 0 < inked < 8


def test_gamma_is_drawn_only_when_set():
    tile, mask = np.full((8, 8, 3), 0.5, np.float32), np.zeros((8, 8), bool)
    config = AugmentConfig(
        flip=False, stain_p=0, colour_p=1.0, grey_p=0, brightness=0, contrast=0, saturation=0
    )
    same, _ = augment_pair(tile, mask, config, np.random.default_rng(0))
    assert np.allclose(same, 0.5)
    dark, _ = augment_pair(
        tile, mask, config.model_copy(update={"gamma": 1.0}), np.random.default_rng(0)
    )
    assert not np.allclose(dark, 0.5) and np.allclose(dark, dark[0, 0, 0])


def test_focus_score_pools_the_map_over_tissue():
    prob = np.zeros((10, 10), np.float32)
    prob[:, :5] = 1.0
    tissue = np.zeros((10, 10), bool)
    tissue[:, :5] = True
    assert pooled_focus(prob, tissue) == 1.0
    assert pooled_focus(prob, np.ones((10, 10), bool)) == 0.5
    segmenter = Segmenter.load("default", tile=64)
    image = _tissue((64, 64, 3))
    score = segmenter.focus_score(image)
    assert score == pooled_focus(segmenter.predict_proba(image), np.ones((64, 64), bool))
