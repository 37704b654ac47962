"""Slide readers on every real format in ../shared/data/wsi and on generated pyramids."""

from pathlib import Path

import numpy as np
import pytest

from histoblur.errors import InputError
from histoblur.io.images import write_image
from histoblur.wsi.pyramid import write_pyramidal_tiff
from histoblur.wsi.readers import (
    ArrayReader,
    OpenSlideReader,
    SlideReader,
    TiffTileReader,
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
    assert isinstance(reader, SlideReader) and reader.kind == "tifffile"
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
        ("cmu-1-small-region.svs", "tifffile", (2220, 2967), 0.499),
        ("tcga-cr-7395-01a-01-ts1.svs", "tifffile", (4443, 3567), None),
        ("small_HE_levels.tiff", "tifffile", (300, 250), None),  # states 352 um/px
        ("kidney-48-5.tif", "image", (1493, 901), None),
        ("smalltif.tif", "image", (640, 480), None),
        ("small_dicom.dcm", "dicom-frames", (3236, 2638), None),  # wsidicom finds no level
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
    [("broken.svs", "not a slide"), ("small_vectra.qptiff", "not")],
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


@needs_wsi
@pytest.mark.parametrize(
    "name", ["cmu-1-small-region.svs", "tcga-cr-7395-01a-01-ts1.svs", "small_HE_levels.tiff"]
)
def test_tile_decoder_matches_openslide_on_real_slides(name):
    """JPEG, Aperio JPEG 2000 and deflate tiles: OpenSlide's pixels at level 0, the stored
    pixels at every level (OpenSlide shifts by a fraction of a pixel where a level's
    down-sample is not whole), for any box, inside or across the edge."""
    import tifffile

    fast, reference = TiffTileReader(WSI / name), OpenSlideReader(WSI / name)
    rng = np.random.default_rng(0)
    try:
        assert fast.level_dimensions == reference.level_dimensions and fast.mpp == reference.mpp
        for level, (w, h) in enumerate(fast.level_dimensions):
            d = fast.level_downsamples[level]
            stored = np.full((h + 600, w + 600, 3), 255, np.uint8)  # white margin of 300
            with tifffile.TiffFile(WSI / name) as tif:
                page = next(p for p in tif.pages if (p.imagewidth, p.imagelength) == (w, h))
                stored[300 : 300 + h, 300 : 300 + w] = page.asarray()[..., :3]
            for _ in range(4):
                size = (int(rng.integers(1, min(w, 300))), int(rng.integers(1, min(h, 300))))
                lx, ly = int(rng.integers(-size[0] // 2, w)), int(rng.integers(-20, h))
                x, y = int(round(lx * d)), int(round(ly * d))
                region = fast.read_region(x, y, level, size)
                ox, oy = int(round(x / d)) + 300, int(round(y / d)) + 300
                np.testing.assert_array_equal(region, stored[oy : oy + size[1], ox : ox + size[0]])
                if level == 0:
                    np.testing.assert_array_equal(region, reference.read_region(x, y, 0, size))
    finally:
        fast.close()
        reference.close()


def test_tile_decoder_is_thread_safe_and_falls_back(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    image = np.random.default_rng(1).integers(0, 255, (600, 500, 3), dtype=np.uint8)
    path = write_pyramidal_tiff(tmp_path / "p.tif", image, tile=128)
    reader = TiffTileReader(path)
    boxes = [(int(x), int(y)) for x, y in np.random.default_rng(2).integers(0, 400, (32, 2))]
    with ThreadPoolExecutor(4) as pool:
        reads = list(pool.map(lambda b: reader.read_region(*b, 0, (90, 70)), boxes))
    for (x, y), region in zip(boxes, reads, strict=True):
        np.testing.assert_array_equal(region, image[y : y + 70, x : x + 90])
    reader._pages[1] = None  # a level without a decodable page is read through OpenSlide
    assert reader.read_region(0, 0, 1, (50, 40)).shape == (40, 50, 3)
    reader.close()
    with pytest.raises(InputError):
        TiffTileReader(write_image(tmp_path / "plain.png", image))


def test_tiff_tiles_are_decoded_once_and_the_cache_stays_bounded(tmp_path):
    from histoblur.wsi.pyramid import write_pyramidal_tiff
    from histoblur.wsi.readers import TiffTileReader, TileCache

    image = np.random.default_rng(0).integers(0, 255, (600, 700, 3), dtype=np.uint8)
    reader = TiffTileReader(write_pyramidal_tiff(tmp_path / "s.tif", image, tile=128))
    decoded = []
    decode = reader._tile

    def counting(page, index, th, tw):
        decoded.append(index)
        return decode(page, index, th, tw)

    reader._tile = counting
    first = reader.read_region(100, 50, 0, (300, 200))
    again = reader.read_region(100, 50, 0, (300, 200))
    assert np.array_equal(first, image[50:250, 100:400]) and np.array_equal(first, again)
    assert len(decoded) == len(set(decoded)) == 4 * 2  # 4 x 2 tiles of 128 px, each once
    reader._cache = TileCache(max_bytes=2 * 128 * 128 * 3)  # room for two tiles
    reader.read_region(0, 0, 0, (700, 600))
    assert reader._cache.bytes <= 2 * 128 * 128 * 3
    reader.close()
