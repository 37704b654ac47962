"""Contract tests over every slide reader backend in :mod:`histoblur.wsi.readers`, and over the
image files :func:`histoblur.io.images.read_image` reads.

The backends are the classes of ``histoblur.wsi.readers`` that carry a ``kind`` and a
``read_region``; each one needs an opener in :data:`OPENERS` (a new backend without one fails
:func:`test_every_backend_has_an_opener`, which says what to add). Slides are tiny pyramidal TIFFs
written by histoblur's own :func:`~histoblur.wsi.pyramid.write_pyramidal_tiff`. Cases a backend
is known to fail are marked ``xfail`` (strict) with what it does instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from histoblur.errors import HistoblurError, InputError
from histoblur.io.images import read_image, write_image
from histoblur.wsi import dicom, readers
from histoblur.wsi.pyramid import write_pyramidal_tiff
from histoblur.wsi.readers import (
    ArrayReader,
    ImageReader,
    OpenSlideReader,
    SlideReader,
    TiffTileReader,
    open_slide,
)

W, H = 192, 144  # every level of the pyramid has an integral down-sample (1, 2, 4)
MPP = 0.5
TILE = 64  # three levels: 192, 96, 48 px wide
GLASS = 255


def slide_image() -> np.ndarray:
    """Random RGB pixels: any offset error or channel swap shows."""
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


def level_image(image: np.ndarray, d: int) -> np.ndarray:
    """Level ``d`` as the writer and the array reader make it (area averaging)."""
    if d == 1:
        return image
    return cv2.resize(image, (W // d, H // d), interpolation=cv2.INTER_AREA)


# kind -> (opener(tmp_path, image) -> reader, level count, stated mpp)
Opener = Callable[[Path, np.ndarray], SlideReader]


def _openslide(tmp: Path, image: np.ndarray) -> SlideReader:
    return OpenSlideReader(write_pyramidal_tiff(tmp / "slide.tif", image, mpp=MPP, tile=TILE))


def _tifffile(tmp: Path, image: np.ndarray) -> SlideReader:
    return TiffTileReader(write_pyramidal_tiff(tmp / "slide.tif", image, mpp=MPP, tile=TILE))


def _image(tmp: Path, image: np.ndarray) -> SlideReader:
    return ImageReader(write_image(tmp / "slide.png", image), mpp=MPP)


def _array(tmp: Path, image: np.ndarray) -> SlideReader:
    return ArrayReader(image, mpp=MPP, downsamples=(1, 2, 4))


def _dicom_series(tmp: Path, image: np.ndarray, legacy: bool) -> Path:
    """A folder of one DICOM whole-slide instance per level (uncompressed, one series)."""
    from test_wsi_dicom import slide_uids, write_wsi_dicom

    folder, uids = tmp / "dicom_slide", slide_uids()
    folder.mkdir()
    for i, d in enumerate((1, 2, 4)):
        level = level_image(image, d)
        write_wsi_dicom(folder / f"{i}.dcm", level, TILE, MPP * d, legacy=legacy, uids=uids)
    return folder


def _wsidicom(tmp: Path, image: np.ndarray) -> SlideReader:
    return dicom.DicomReader(_dicom_series(tmp, image, legacy=False))


def _dicom_frames(tmp: Path, image: np.ndarray) -> SlideReader:
    return dicom.DicomFramesReader(_dicom_series(tmp, image, legacy=True))


OPENERS: dict[str, tuple[Opener, int]] = {
    "openslide": (_openslide, 3),
    "tifffile": (_tifffile, 3),
    "image": (_image, 1),
    "array": (_array, 3),
    "wsidicom": (_wsidicom, 3),
    "dicom-frames": (_dicom_frames, 3),
}


def backends() -> dict[str, type]:
    """The reader classes of ``histoblur.wsi.readers`` and ``.dicom``, by their ``kind``."""
    found = {}
    for module in (readers, dicom):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            kind = getattr(cls, "kind", None)
            if (
                cls.__module__ == module.__name__
                and isinstance(kind, str)
                and "read_region" in dir(cls)
            ):
                found[kind] = cls
    return found


KINDS = sorted(backends())


def test_every_backend_has_an_opener():
    assert KINDS, "no reader backend found"
    missing = set(KINDS) - set(OPENERS)
    assert not missing, f"add an opener for the new reader backend(s) {missing} to OPENERS"


@pytest.fixture()
def opened(request, tmp_path):
    image = slide_image()
    opener, levels = OPENERS[request.param]
    reader = opener(tmp_path, image)
    yield reader, image, levels
    reader.close()


def params(known: dict[str, str] | None = None):
    known = known or {}
    return [
        pytest.param(
            k, marks=[pytest.mark.xfail(strict=True, reason=known[k])] if k in known else []
        )
        for k in KINDS
    ]


@pytest.mark.parametrize("opened", params(), indirect=True)
def test_pyramid_geometry_and_resolution(opened):
    reader, image, levels = opened
    assert isinstance(reader, SlideReader)
    assert isinstance(reader, backends()[reader.kind])
    assert len(reader.level_dimensions) == len(reader.level_downsamples) == levels
    assert reader.level_dimensions[0] == (W, H)
    assert reader.level_downsamples[0] == 1
    for (w, h), d in zip(reader.level_dimensions, reader.level_downsamples, strict=True):
        assert (w, h) == (W // round(d), H // round(d))
    assert list(reader.level_downsamples) == sorted(reader.level_downsamples)
    assert reader.mpp == pytest.approx(MPP)


@pytest.mark.parametrize("opened", params(), indirect=True)
def test_windows_equal_the_level_image(opened):
    reader, image, _ = opened
    for level, d in enumerate(reader.level_downsamples):
        d = round(d)
        expected = level_image(image, d)
        lw, lh = reader.level_dimensions[level]
        whole = reader.read_region(0, 0, level, (lw, lh))
        assert whole.dtype == np.uint8 and whole.shape == (lh, lw, 3)
        np.testing.assert_array_equal(whole, expected)
        for lx, ly, w, h in ((0, 0, 5, 4), (3, 2, 7, 5), (lw - 9, lh - 6, 9, 6), (1, 5, 1, 1)):
            region = reader.read_region(lx * d, ly * d, level, (w, h))
            assert region.shape == (h, w, 3), (level, lx, ly)
            np.testing.assert_array_equal(region, expected[ly : ly + h, lx : lx + w])


@pytest.mark.parametrize("opened", params(), indirect=True)
def test_boxes_outside_the_slide_read_as_glass(opened):
    reader, image, _ = opened
    top = len(reader.level_dimensions) - 1
    for level in (0, top):
        d = round(reader.level_downsamples[level])
        lw, lh = reader.level_dimensions[level]
        # straddling the bottom-right corner: the inside part is the slide, the rest glass
        region = reader.read_region((lw - 4) * d, (lh - 3) * d, level, (10, 8))
        np.testing.assert_array_equal(region[:3, :4], level_image(image, d)[-3:, -4:])
        assert (region[3:] == GLASS).all() and (region[:, 4:] == GLASS).all()
        # straddling the top-left corner from negative coordinates
        region = reader.read_region(-5 * d, -2 * d, level, (8, 6))
        np.testing.assert_array_equal(region[2:, 5:], level_image(image, d)[:4, :3])
        assert (region[:2] == GLASS).all() and (region[:, :5] == GLASS).all()
        # wholly outside
        assert (reader.read_region(lw * d + 50, 0, level, (6, 6)) == GLASS).all()


@pytest.mark.parametrize("opened", params(), indirect=True)
def test_a_level_that_does_not_exist_is_refused(opened):
    reader, _, levels = opened
    for level in (levels, -1):
        with pytest.raises(HistoblurError):
            reader.read_region(0, 0, level, (4, 4))


@pytest.mark.parametrize("opened", params(), indirect=True)
def test_a_negative_size_is_refused(opened):
    reader, _, _ = opened
    with pytest.raises(HistoblurError):
        reader.read_region(0, 0, 0, (-5, 10))


@pytest.mark.parametrize("opened", params(), indirect=True)
def test_an_empty_read_is_empty_or_refused(opened):
    reader, _, _ = opened
    for size in ((0, 10), (10, 0)):
        try:
            region = reader.read_region(0, 0, 0, size)
        except HistoblurError:
            continue
        assert region.shape == (size[1], size[0], 3) and region.dtype == np.uint8


@pytest.mark.parametrize(
    ("suffix", "kind"),
    [(".png", "image"), (".jpg", "image"), (".tif", "image"), (".pyramid.tif", "tifffile")],
)
def test_open_slide_picks_the_backend(tmp_path, suffix, kind):
    image = slide_image()
    path = tmp_path / f"slide{suffix}"
    if suffix == ".pyramid.tif":
        write_pyramidal_tiff(path, image, mpp=MPP, tile=TILE)
    else:
        write_image(path, image)  # a plain (untiled) TIFF falls back to the image reader
    reader = open_slide(path)
    assert reader.kind == kind and reader.level_dimensions[0] == (W, H)
    if suffix != ".jpg":
        np.testing.assert_array_equal(reader.read_region(0, 0, 0, (W, H)), image)
    reader.close()


def test_missing_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_slide(tmp_path / "absent.tif")
    with pytest.raises(InputError, match="folder"):
        open_slide(tmp_path)
    (tmp_path / "junk.svs").write_bytes(b"not a slide at all")
    with pytest.raises(InputError):
        open_slide(tmp_path / "junk.svs")


# ---------------------------------------------------------------------------------------------
# io.images.read_image over PNG, JPEG and TIFF


def smooth(h: int, w: int, channels: int | None, dtype: type = np.uint8) -> np.ndarray:
    """A smooth image (JPEG keeps it within a few grey levels)."""
    peak = np.iinfo(dtype).max
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    planes = [x / (w - 1), y / (h - 1), (x + y) / (w + h - 2), 1 - x / (w - 1)]
    if channels is None:
        return np.rint(planes[0] * peak).astype(dtype)
    return np.rint(np.stack(planes[:channels], -1) * peak).astype(dtype)


LOSSLESS = [
    (suffix, channels, dtype)
    for suffix in (".png", ".tif")
    for channels in (None, 3, 4)
    for dtype in (np.uint8, np.uint16)
]


@pytest.mark.parametrize(("suffix", "channels", "dtype"), LOSSLESS)
def test_lossless_files_round_trip_exactly(tmp_path, suffix, channels, dtype):
    image = smooth(24, 40, channels, dtype)
    back = read_image(write_image(tmp_path / f"im{suffix}", image))
    assert back.dtype == image.dtype and back.shape == image.shape
    np.testing.assert_array_equal(back, image)


@pytest.mark.parametrize("channels", [None, 3])
def test_jpeg_round_trips_within_a_few_levels(tmp_path, channels):
    image = smooth(48, 64, channels)
    back = read_image(write_image(tmp_path / "im.jpg", image))
    assert back.dtype == np.uint8 and back.shape == image.shape
    error = np.abs(back.astype(int) - image.astype(int))
    assert error.mean() < 2 and error.max() <= 16
    # channel order is kept: the red ramp stays red
    if channels == 3:
        assert np.corrcoef(back[..., 0].ravel(), image[..., 0].ravel())[0, 1] > 0.99


def test_read_image_reads_level_zero_of_a_pyramid(tmp_path):
    image = slide_image()
    path = write_pyramidal_tiff(tmp_path / "p.tif", image, mpp=MPP, tile=TILE)
    np.testing.assert_array_equal(read_image(path), image)


def test_read_image_refuses_what_is_not_an_image(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_image(tmp_path / "absent.png")
    with pytest.raises(InputError, match="folder"):
        read_image(tmp_path)
    for name in ("junk.png", "junk.jpg", "junk.tif"):
        (tmp_path / name).write_bytes(b"\x00" * 64)
        with pytest.raises(InputError):
            read_image(tmp_path / name)


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    channels=st.sampled_from([None, 3, 4]),
    dtype=st.sampled_from([np.uint8, np.uint16]),
    suffix=st.sampled_from([".png", ".tif"]),
    seed=st.integers(0, 2**16),
)
def test_any_small_image_round_trips_losslessly(tmp_path, h, w, channels, dtype, suffix, seed):
    shape = (h, w) if channels is None else (h, w, channels)
    image = np.random.default_rng(seed).integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    back = read_image(write_image(tmp_path / f"im{suffix}", image))
    assert back.dtype == image.dtype
    np.testing.assert_array_equal(back, image)
