"""Slide readers on every real format in ../shared/data/wsi and on generated pyramids."""

from pathlib import Path

import numpy as np
import pytest

from histoblur.errors import InputError
from histoblur.io.images import write_image
from histoblur.wsi.pyramid import write_pyramidal_tiff
from histoblur.wsi.readers import (
    ArrayReader,
    SlideReader,
    best_level,
    open_slide,
    read_scaled,
    thumbnail,
)
from histoblur.wsi.tissue import detect_tissue, ink_mask

WSI = Path(__file__).resolve().parents[2] / "shared" / "data" / "wsi"
needs_wsi = pytest.mark.skipif(not WSI.is_dir(), reason="../shared/data/wsi is absent")


def gradient(h, w):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)


def test_generated_pyramid_reads_back_exactly(tmp_path):
    image = gradient(700, 900)
    path = write_pyramidal_tiff(tmp_path / "p.tif", image, mpp=0.25, tile=256)
    reader = open_slide(path)
    assert isinstance(reader, SlideReader) and reader.kind == "openslide"
    assert reader.level_dimensions[0] == (900, 700) and len(reader.level_dimensions) == 3
    assert reader.mpp == pytest.approx(0.25)
    np.testing.assert_array_equal(
        reader.read_region(130, 250, 0, (40, 30)), image[250:280, 130:170]
    )
    # a 4x down-sampled read comes from level 2 and matches area averaging
    assert best_level(reader, 4.0) == 2 and best_level(reader, 3.0) == 1
    small = read_scaled(reader, (0, 0, 900, 700), (225, 175))
    assert small.shape == (175, 225, 3)
    thumb = thumbnail(reader, 8, strip=16)  # many strips
    assert thumb.shape == (88, 112, 3)
    reader.close()


def test_array_reader_pads_outside_with_white():
    reader = ArrayReader(gradient(50, 60), mpp=0.5, downsamples=(1, 2))
    region = reader.read_region(40, 30, 0, (40, 40))
    assert (region[20:, :] == 255).all() and (region[:, 20:] == 255).all()
    assert reader.level_dimensions == ((60, 50), (30, 25))
    assert ArrayReader(gradient(8, 8), mpp=352.0).mpp is None  # implausible resolution


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_slide(tmp_path / "nope.svs")
    (tmp_path / "junk.svs").write_bytes(b"not a slide")
    with pytest.raises(InputError, match="not a slide"):
        open_slide(tmp_path / "junk.svs")
    write_image(tmp_path / "plain.png", gradient(20, 30))
    reader = open_slide(tmp_path / "plain.png")
    assert reader.kind == "image" and reader.level_dimensions == ((30, 20),) and reader.mpp is None


@needs_wsi
@pytest.mark.parametrize(
    ("name", "kind", "size", "mpp"),
    [
        ("cmu-1-small-region.svs", "openslide", (2220, 2967), 0.499),
        ("tcga-cr-7395-01a-01-ts1.svs", "openslide", (4443, 3567), None),
        ("small_HE_levels.tiff", "openslide", (300, 250), None),  # states 352 um/px
        ("kidney-48-5.tif", "image", (1493, 901), None),
        ("smalltif.tif", "image", (640, 480), None),
    ],
)
def test_real_slides_open(name, kind, size, mpp):
    reader = open_slide(WSI / name)
    assert reader.kind == kind and reader.level_dimensions[0] == size
    assert reader.mpp == (pytest.approx(mpp) if mpp else None)
    region = reader.read_region(0, 0, len(reader.level_dimensions) - 1, (64, 48))
    assert region.shape == (48, 64, 3) and region.dtype == np.uint8
    reader.close()


@needs_wsi
@pytest.mark.parametrize(
    ("name", "words"),
    [("broken.svs", "not a slide"), ("small_dicom.dcm", "DICOM"), ("small_vectra.qptiff", "not")],
)
def test_unreadable_real_files_give_one_sentence(name, words):
    with pytest.raises(InputError, match=words):
        open_slide(WSI / name)


def test_tissue_detection_drops_glass_and_pen():
    rng = np.random.default_rng(0)
    thumb = np.full((200, 300, 3), 242, np.uint8)  # glass
    pink = np.array([200, 120, 170], np.uint8)
    thumb[40:160, 30:150] = (pink + rng.integers(-10, 10, (120, 120, 3))).clip(0, 255)
    thumb[40:160, 200:215] = (30, 140, 60)  # a green pen stroke
    tissue = detect_tissue(thumb, um_per_px=8.0)
    assert tissue[60:140, 50:130].all()
    assert not tissue[:, 160:].any() and not tissue[:20].any()
    assert ink_mask(thumb)[40:160, 200:215].all() and not ink_mask(thumb)[60:140, 50:130].any()
