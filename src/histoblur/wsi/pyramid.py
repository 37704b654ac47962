"""Write tiled pyramidal TIFFs that OpenSlide opens (tests, demos, benchmarks, exports).

Levels are separate tiled pages shrinking by a factor (2, or 4 as Aperio writes), deflate- or
JPEG-compressed, with the resolution tags
from which OpenSlide reads ``openslide.mpp-x``/``mpp-y``. Pages are written tile by tile from a
function, so a 40,000 x 40,000 slide never exists in memory.

Examples:
    >>> import tempfile
    >>> from histoblur.wsi.readers import open_slide
    >>> slide = np.full((600, 800, 3), 240, np.uint8)
    >>> slide[100:500, 100:700] = (180, 90, 160)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = write_pyramidal_tiff(Path(tmp) / "slide.tif", slide, mpp=0.5, tile=256)
    ...     reader = open_slide(path)
    ...     region = reader.read_region(200, 200, 0, (4, 4))
    ...     reader.close()
    >>> reader.kind, reader.level_dimensions, reader.mpp
    ('tifffile', ((800, 600), (400, 300), (200, 150)), 0.5)
    >>> region.shape, bool((region == (180, 90, 160)).all())
    ((4, 4, 3), True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from histoblur.errors import ParameterError
from histoblur.io.atomic import atomic_path

# (downsample, x, y, width, height) in that level's pixels -> (height, width, 3) uint8
TileSource = Callable[[int, int, int, int, int], np.ndarray]


def array_source(image: np.ndarray) -> TileSource:
    """A :data:`TileSource` over an in-memory RGB uint8 image (levels by area averaging).

    >>> source = array_source(np.zeros((64, 96, 3), np.uint8))
    >>> source(2, 0, 0, 16, 8).shape  # down-sample 2, x, y, width, height
    (8, 16, 3)
    """
    cache: dict[int, np.ndarray] = {1: image}

    def source(d: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        if d not in cache:
            H, W = image.shape[:2]
            size = (max(1, W // d), max(1, H // d))
            cache[d] = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        return cache[d][y : y + h, x : x + w]

    return source


def _tiles(source: TileSource, d: int, size: tuple[int, int], tile: int) -> Iterator[np.ndarray]:
    w, h = size
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            block = np.full((tile, tile, 3), 255, np.uint8)
            part = source(d, x, y, min(tile, w - x), min(tile, h - y))
            block[: part.shape[0], : part.shape[1]] = part
            yield block


def write_pyramidal_tiff(
    path: str | Path,
    source: TileSource | np.ndarray,
    size: tuple[int, int] | None = None,
    mpp: float = 0.25,
    levels: int | None = None,
    tile: int = 256,
    factor: int = 2,
    compression: str = "zlib",
    quality: int = 85,
) -> Path:
    """Write a pyramidal tiled TIFF atomically and return its path.

    Args:
        path: output file (``.tif``/``.tiff``).
        source: an RGB uint8 image, or a :data:`TileSource` together with ``size``.
        size: level-0 ``(width, height)`` (taken from the image when ``source`` is one).
        mpp: level-0 microns per pixel written into the resolution tags.
        levels: pyramid levels (default: shrink until the image fits in one tile).
        tile: tile side (multiple of 16).
        factor: down-sample between levels (2; 4 as in Aperio 40x scans).
        compression: ``zlib`` (lossless) or ``jpeg`` (as scanners write, at ``quality``).
        quality: JPEG quality (1-100).

    Returns:
        ``path``.

    Raises:
        ParameterError: a tile source without ``size``, a tile side that is not a multiple
            of 16, a level factor below 2 or an unknown compression.

    Examples:
        A slide larger than memory is written from a function of (down-sample, x, y, w, h):

        >>> import tempfile
        >>> from histoblur.wsi.readers import open_slide
        >>> def pink(d, x, y, w, h):
        ...     return np.full((h, w, 3), (200, 120, 180), np.uint8)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = write_pyramidal_tiff(Path(tmp) / "big.tif", pink, size=(1000, 700))
        ...     reader = open_slide(path)
        ...     reader.level_dimensions, reader.mpp
        ...     reader.close()
        (((1000, 700), (500, 350), (250, 175)), 0.25)
    """
    import tifffile

    if isinstance(source, np.ndarray):
        size = (source.shape[1], source.shape[0])
        source = array_source(source)
    if size is None:
        raise ParameterError("Pass size=(width, height) with a tile source.")
    if tile % 16 or tile < 16:
        raise ParameterError(f"TIFF tile side must be a multiple of 16, got {tile}.")
    if factor < 2:
        raise ParameterError(f"Levels must shrink by a factor of at least 2, got {factor}.")
    if compression not in ("zlib", "jpeg"):
        raise ParameterError(f"compression must be zlib or jpeg, got {compression!r}.")
    codec_args = {"level": quality} if compression == "jpeg" else None
    w, h = size
    if levels is None:
        levels = 1
        while max(w, h) // factor ** (levels - 1) > tile:
            levels += 1
    with atomic_path(Path(path)) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as tw:
        for level in range(levels):
            d = factor**level
            lw, lh = max(1, w // d), max(1, h // d)
            res = 1e4 / (mpp * d)  # pixels per centimetre
            tw.write(
                _tiles(source, d, (lw, lh), tile),
                shape=(lh, lw, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                compression=compression,
                compressionargs=codec_args,
                photometric="rgb",
                resolution=(res, res),
                resolutionunit="CENTIMETER",
                subfiletype=0 if level == 0 else 1,
            )
    return Path(path)
