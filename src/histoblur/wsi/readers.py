"""Whole-slide readers behind one small protocol: OpenSlide, DICOM, plain images, arrays.

Every reader exposes a pyramid (level sizes and down-sample factors relative to level 0), the
level-0 microns per pixel when the file states a plausible one, and ``read_region`` returning RGB
uint8. Resolution-aware reading (a level-0 box resampled to any output size from the best
pyramid level) and thumbnails are pure functions over that protocol, so every backend gets them.

Examples:
    >>> reader = ArrayReader(np.full((400, 600, 3), 200, np.uint8), mpp=0.5, downsamples=(1, 4))
    >>> isinstance(reader, SlideReader), reader.level_dimensions
    (True, ((600, 400), (150, 100)))
    >>> read_scaled(reader, (0, 0, 200, 200), (50, 50)).shape  # a level-0 box at 2 um/px
    (50, 50, 3)
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from histoblur.errors import InputError, ParameterError
from histoblur.io.images import read_header, read_image, to_rgb
from histoblur.io.paths import existing_file

# a stated level-0 resolution outside this range is treated as missing (e.g. 352 um/px)
PLAUSIBLE_MPP = (0.05, 20.0)
# plain (non-pyramidal) images are read whole: refuse sizes that would not fit comfortably
MAX_PLAIN_PIXELS = 2**28
PLAIN_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")
TILED_TIFF_SUFFIXES = (*TIFF_SUFFIXES, ".svs")  # tried with TiffTileReader first


@runtime_checkable
class SlideReader(Protocol):
    """What the QC pipeline needs from a slide."""

    path: str
    kind: str
    level_dimensions: tuple[tuple[int, int], ...]  # (width, height) per level
    level_downsamples: tuple[float, ...]
    mpp: float | None  # level-0 microns per pixel, None when unknown

    def read_region(self, x: int, y: int, level: int, size: tuple[int, int]) -> np.ndarray:
        """RGB uint8 (h, w, 3) of ``size=(w, h)`` level pixels whose top-left is level-0 (x, y)."""
        ...

    def close(self) -> None:
        """Release the file."""
        ...


def check_read(reader: SlideReader, level: int, size: tuple[int, int]) -> tuple[int, int]:
    """``size`` as (w, h) ints, refusing a level the slide lacks or a negative size.

    >>> check_read(ArrayReader(np.zeros((8, 8, 3), np.uint8)), 1, (4, 4))
    Traceback (most recent call last):
    histoblur.errors.InputError: Level 1 does not exist in <array>: it has levels 0 to 0.
    """
    levels = len(reader.level_dimensions)
    if not 0 <= int(level) < levels:
        raise InputError(
            f"Level {level} does not exist in {reader.path}: it has levels 0 to {levels - 1}."
        )
    w, h = (int(v) for v in size)
    if w < 0 or h < 0:
        raise InputError(f"A read of {reader.path} needs a non-negative size, got {w} x {h}.")
    return w, h


def plausible_mpp(value: float | None) -> float | None:
    """``value`` when it is a believable microns-per-pixel figure, else None.

    >>> plausible_mpp(0.25), plausible_mpp(352.0), plausible_mpp(None)
    (0.25, None, None)
    """
    if value is None or not np.isfinite(value):
        return None
    return float(value) if PLAUSIBLE_MPP[0] <= value <= PLAUSIBLE_MPP[1] else None


class ArrayReader:
    """An in-memory RGB image as a slide; extra levels are down-sampled copies (tests, demos).

    Args:
        image: grey, RGB or RGBA, 8 or 16 bit (kept as RGB uint8).
        mpp: level-0 microns per pixel (kept only when plausible).
        downsamples: integer down-sample of each level, starting at 1.
        path: the name reports show.

    Raises:
        ParameterError: levels that do not start at down-sample 1.

    Examples:
        >>> reader = ArrayReader(np.full((60, 80, 3), 200, np.uint8), mpp=0.5, downsamples=(1, 4))
        >>> reader.kind, reader.level_dimensions, reader.level_downsamples, reader.mpp
        ('array', ((80, 60), (20, 15)), (1.0, 4.0), 0.5)
        >>> box = reader.read_region(-10, -10, 0, (20, 20))  # outside the image is white glass
        >>> box[0, 0].tolist(), box[15, 15].tolist()
        ([255, 255, 255], [200, 200, 200])
    """

    kind = "array"

    def __init__(
        self,
        image: np.ndarray,
        mpp: float | None = None,
        downsamples: Sequence[int] = (1,),
        path: str = "<array>",
    ) -> None:
        rgb = to_rgb(image)
        if rgb.dtype != np.uint8:
            rgb = (rgb.astype(np.float32) / np.iinfo(rgb.dtype).max * 255).round().astype(np.uint8)
        if list(downsamples)[:1] != [1] or any(int(d) < 1 for d in downsamples):
            raise ParameterError("Array reader levels must start at down-sample 1.")
        h, w = rgb.shape[:2]
        self.levels = [rgb] + [
            cv2.resize(rgb, (max(1, w // d), max(1, h // d)), interpolation=cv2.INTER_AREA)
            for d in downsamples[1:]
        ]
        self.path = path
        self.mpp = plausible_mpp(mpp)
        self.level_dimensions = tuple((im.shape[1], im.shape[0]) for im in self.levels)
        self.level_downsamples = tuple(w / im.shape[1] for im in self.levels)

    def read_region(self, x: int, y: int, level: int, size: tuple[int, int]) -> np.ndarray:
        """Read a box; pixels outside the image are white, as glass."""
        w, h = check_read(self, level, size)
        image, d = self.levels[level], self.level_downsamples[level]
        lx, ly = int(round(x / d)), int(round(y / d))
        out = np.full((h, w, 3), 255, np.uint8)
        H, W = image.shape[:2]
        x0, y0, x1, y1 = max(lx, 0), max(ly, 0), min(lx + w, W), min(ly + h, H)
        if x1 > x0 and y1 > y0:
            out[y0 - ly : y1 - ly, x0 - lx : x1 - lx] = image[y0:y1, x0:x1]
        return out

    def close(self) -> None:
        """Nothing to release."""


class ImageReader(ArrayReader):
    """A plain PNG/JPEG/TIFF image read whole (refused above :data:`MAX_PLAIN_PIXELS`).

    Examples:
        >>> import tempfile
        >>> from histoblur.io.images import write_image
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = write_image(Path(tmp) / "tile.png", np.zeros((30, 40, 3), np.uint8))
        ...     reader = ImageReader(path, mpp=0.5)
        >>> reader.kind, reader.level_dimensions, reader.mpp
        ('image', ((40, 30),), 0.5)
    """

    kind = "image"

    def __init__(self, path: str | Path, mpp: float | None = None) -> None:
        path = Path(path)
        _check_plain_size(path)
        super().__init__(read_image(path, MAX_PLAIN_PIXELS), mpp=mpp, path=str(path))


def _check_plain_size(path: Path) -> None:
    """Refuse a plain image too large to read whole, before decoding it."""
    header = read_header(path)
    if header is not None and header.pixels > MAX_PLAIN_PIXELS:
        raise InputError(
            f"{path} is a {header.width} x {header.height} plain image, too large to read whole; "
            "convert it to a tiled pyramidal TIFF (e.g. with vips tiffsave --tile --pyramid)."
        )


class OpenSlideReader:
    """SVS, NDPI, MRXS, SCN, DICOM, tiled TIFF and the other formats OpenSlide reads.

    Raises:
        InputError: a file OpenSlide does not read.

    Examples:
        >>> import tempfile
        >>> from histoblur.wsi.pyramid import write_pyramidal_tiff
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = write_pyramidal_tiff(Path(tmp) / "s.tif", np.zeros((64, 64, 3), np.uint8))
        ...     reader = OpenSlideReader(path)
        ...     reader.read_region(0, 0, 0, (16, 8)).shape
        ...     reader.close()
        (8, 16, 3)
    """

    kind = "openslide"

    def __init__(self, path: str | Path) -> None:
        import openslide

        self.path = str(path)
        try:
            self.slide = openslide.OpenSlide(self.path)
        except openslide.OpenSlideUnsupportedFormatError as exc:
            raise InputError(
                f"{path} is not a slide OpenSlide reads (unsupported format or damaged file)."
            ) from exc
        except openslide.OpenSlideError as exc:
            raise InputError(f"OpenSlide cannot read {path}: {exc}.") from exc
        props = self.slide.properties
        mpps = [_float(props.get(k)) for k in ("openslide.mpp-x", "openslide.mpp-y")]
        known = [m for m in mpps if m is not None]
        self.mpp = plausible_mpp(float(np.mean(known))) if known else None
        self.level_dimensions = tuple(self.slide.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in self.slide.level_downsamples)

    def read_region(self, x: int, y: int, level: int, size: tuple[int, int]) -> np.ndarray:
        """Read a box; transparent pixels (outside scanned areas) become white."""
        import openslide

        w, h = check_read(self, level, size)
        if w == 0 or h == 0:
            return np.full((h, w, 3), 255, np.uint8)
        try:
            rgba = np.asarray(self.slide.read_region((int(x), int(y)), level, (w, h)))
        except openslide.OpenSlideError as exc:
            raise InputError(f"Reading {self.path} failed: {exc}.") from exc
        alpha = rgba[..., 3:4]
        if alpha.min() == 255:
            return np.ascontiguousarray(rgba[..., :3])
        a = alpha.astype(np.float32) / 255  # openslide-python un-premultiplies: blend on white
        return (rgba[..., :3] * a + 255 * (1 - a)).round().astype(np.uint8)

    def close(self) -> None:
        """Close the slide."""
        self.slide.close()


def level_box(
    reader: SlideReader, x: int, y: int, level: int, w: int, h: int
) -> tuple[np.ndarray, tuple[int, int, int, int, int, int]]:
    """A white (h, w) box, its level-pixel origin and the part of it inside the level.

    The level-0 ``(x, y)`` maps to the nearest level pixel, as :class:`ArrayReader` does.
    Returns the box and ``(lx, ly, x0, y0, x1, y1)``: its origin, then the corners of its part
    inside the level, all in level pixels.
    """
    d = reader.level_downsamples[level]
    lx, ly = int(round(x / d)), int(round(y / d))
    W, H = reader.level_dimensions[level]
    box = (lx, ly, max(lx, 0), max(ly, 0), min(lx + w, W), min(ly + h, H))
    return np.full((h, w, 3), 255, np.uint8), box


def paste_tiles(
    out: np.ndarray,
    box: tuple[int, int, int, int, int, int],
    width: int,
    tile_size: tuple[int, int],
    tile: Any,
) -> bool:
    """Fill ``out`` (see :func:`level_box`) from a level's row-major tiles.

    ``tile(index)`` gives the RGB (th, tw, 3) tile of that index in a level ``width`` px
    wide, or None when it cannot (then this stops and returns False).

    >>> level = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    >>> tiles = [level[r : r + 4, c : c + 4] for r in (0, 4) for c in (0, 4)]
    >>> out = np.zeros((3, 5, 3), np.uint8)
    >>> paste_tiles(out, (2, 1, 2, 1, 7, 4), 8, (4, 4), lambda i: np.pad(
    ...     tiles[i], ((0, 4 - tiles[i].shape[0]), (0, 0), (0, 0))))
    True
    >>> bool((out == level[1:4, 2:7]).all())
    True
    """
    lx, ly, x0, y0, x1, y1 = box
    tw, th = tile_size
    across = -(-width // tw)
    for ty in range(y0 // th, (y1 - 1) // th + 1 if y1 > y0 else 0):
        for tx in range(x0 // tw, (x1 - 1) // tw + 1 if x1 > x0 else 0):
            pixels = tile(ty * across + tx)
            if pixels is None:
                return False
            # the part of this tile inside the box, in level coordinates
            a0, b0 = max(x0, tx * tw), max(y0, ty * th)
            a1, b1 = min(x1, (tx + 1) * tw), min(y1, (ty + 1) * th)
            out[b0 - ly : b1 - ly, a0 - lx : a1 - lx] = pixels[
                b0 - ty * th : b1 - ty * th, a0 - tx * tw : a1 - tx * tw
            ]
    return True


# Decoded tiles kept by TiffTileReader: windows straddle tile borders and overlap their
# neighbours, so most tiles are asked for 2-4 times, by the next window or the next row of
# windows. 384 MB holds ~2,000 tiles of 256 x 256 RGB: several tile rows of a 100,000 px slide.
TILE_CACHE_BYTES = 384 << 20


class TileCache:
    """A thread-safe least-recently-used store of decoded tiles, bounded in bytes.

    >>> cache = TileCache(max_bytes=2 * 48)
    >>> for key in "abc":
    ...     cache.put(key, np.zeros((4, 4, 3), np.uint8))  # 48 bytes each
    >>> cache.get("a") is None, cache.get("c") is not None  # "a" was the least recent
    (True, True)
    """

    def __init__(self, max_bytes: int = TILE_CACHE_BYTES) -> None:
        self.max_bytes, self.bytes = max_bytes, 0
        self._items: OrderedDict[Any, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> np.ndarray | None:
        """The tile stored under ``key`` (now the most recent), or None."""
        with self._lock:
            tile = self._items.get(key)
            if tile is not None:
                self._items.move_to_end(key)
            return tile

    def put(self, key: Any, tile: np.ndarray) -> None:
        """Store ``tile``, dropping the least recently used tiles beyond ``max_bytes``."""
        with self._lock:
            if key in self._items:
                return
            self._items[key] = tile
            self.bytes += tile.nbytes
            while self.bytes > self.max_bytes and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self.bytes -= old.nbytes


class TiffTileReader(OpenSlideReader):
    """OpenSlide's geometry and metadata; pixels decoded straight from the TIFF's tiles.

    For TIFF-based slides (Aperio SVS, generic pyramidal TIFF) the tiles of each pyramid level
    are read with ``os.pread`` (thread-safe, no shared file position) and decoded by tifffile
    and imagecodecs (libjpeg-turbo, OpenJPEG, zlib...), several times faster per pixel than
    OpenSlide's ``read_region``, with the same pixels at level 0 (tests compare both on real
    slides). At a level whose down-sample is not a whole number (4443 / 2221 px) a level-0
    position falls between level pixels: OpenSlide resamples the level by that fraction of a
    pixel, this reader starts at the nearest stored pixel.
    Levels without a matching tiled 8-bit page, and any tile whose codec is missing, are read
    through OpenSlide. Reads outside the image are white, as OpenSlide's transparent pixels.

    Raises:
        InputError: a file OpenSlide does not read, or one with no tiled level to decode.

    Examples:
        >>> import tempfile
        >>> from histoblur.wsi.pyramid import write_pyramidal_tiff
        >>> image = np.random.default_rng(0).integers(0, 255, (300, 200, 3), dtype=np.uint8)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = write_pyramidal_tiff(Path(tmp) / "s.tif", image)
        ...     fast, reference = TiffTileReader(path), OpenSlideReader(path)
        ...     same = np.array_equal(
        ...         fast.read_region(40, 30, 0, (150, 260)),
        ...         reference.read_region(40, 30, 0, (150, 260)),
        ...     )
        ...     for reader in (fast, reference):
        ...         reader.close()
        >>> fast.kind, same
        ('tifffile', True)
    """

    kind = "tifffile"

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        import tifffile

        try:
            self._tiff = tifffile.TiffFile(self.path)
        except (tifffile.TiffFileError, ValueError, OSError) as exc:
            self.slide.close()
            raise InputError(f"{path} is not a TIFF tifffile reads: {exc}.") from exc
        tiled = {
            (page.imagewidth, page.imagelength): page
            for page in self._tiff.pages
            if page.is_tiled
            and page.planarconfig == 1  # contiguous samples
            and page.samplesperpixel in (3, 4)
            and page.bitspersample == 8
            and page.imagedepth == 1
        }
        self._pages = [tiled.get(tuple(dims)) for dims in self.level_dimensions]
        if not any(self._pages):
            self.close()
            raise InputError(f"{path} has no tiled 8-bit RGB level to decode directly.")
        self._fd = os.open(self.path, os.O_RDONLY)
        self._cache = TileCache()

    def read_region(self, x: int, y: int, level: int, size: tuple[int, int]) -> np.ndarray:
        """Read a box of level pixels whose top-left is level-0 ``(x, y)``."""
        w, h = check_read(self, level, size)
        page = self._pages[level]
        if page is None:
            return super().read_region(x, y, level, size)
        out, box = level_box(self, x, y, level, w, h)  # see the class notes
        th, tw = page.tilelength, page.tilewidth

        def tile(index: int) -> np.ndarray | None:
            return self._cached_tile(level, page, index, th, tw)

        if not paste_tiles(out, box, page.imagewidth, (tw, th), tile):
            return super().read_region(x, y, level, size)  # this read goes through OpenSlide
        return out

    def _cached_tile(
        self, level: int, page: Any, index: int, th: int, tw: int
    ) -> np.ndarray | None:
        """A tile from the cache, else decoded (and kept; read-only, as it is shared)."""
        tile = self._cache.get((level, index))
        if tile is None:
            tile = self._tile(page, index, th, tw)
            if tile is not None:
                tile.setflags(write=False)
                self._cache.put((level, index), tile)
        return tile

    def _tile(self, page: Any, index: int, th: int, tw: int) -> np.ndarray | None:
        """RGB uint8 (th, tw, 3) of one tile (white when the file stores none)."""
        offset, count = page.dataoffsets[index], page.databytecounts[index]
        if count == 0:
            return np.full((th, tw, 3), 255, np.uint8)
        data = os.pread(self._fd, count, offset)
        try:
            segment, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
        except Exception:  # a codec imagecodecs lacks, or a damaged tile: OpenSlide decides
            return None
        return np.ascontiguousarray(np.asarray(segment).reshape(th, tw, -1)[..., :3])

    def close(self) -> None:
        """Close the slide and the TIFF."""
        super().close()
        if getattr(self, "_tiff", None) is not None:
            self._tiff.close()
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None


def _float(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def open_slide(path: str | Path) -> SlideReader:
    """Open a slide or image with the right backend.

    Plain PNG/JPEG/BMP go to :class:`ImageReader`; tiled TIFF and SVS to :class:`TiffTileReader`
    (tiles decoded by tifffile + imagecodecs); ``.dcm`` files and folders (the ``.dcm``
    instances of one DICOM whole-slide image) to :func:`histoblur.wsi.dicom.open_dicom`;
    everything else to OpenSlide, and TIFFs that OpenSlide does not take (untiled, no pyramid)
    fall back to :class:`ImageReader`.

    Raises:
        InputError: missing path, a folder that is no DICOM slide, or a file no backend reads
            (one sentence).

    Examples:
        >>> import tempfile
        >>> from histoblur.io.images import write_image
        >>> from histoblur.wsi.pyramid import write_pyramidal_tiff
        >>> image = np.full((300, 400, 3), 200, np.uint8)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     slide = open_slide(write_pyramidal_tiff(Path(tmp) / "s.tif", image, mpp=0.5))
        ...     plain = open_slide(write_image(Path(tmp) / "s.png", image))
        ...     slide.close()
        >>> slide.kind, slide.mpp, len(slide.level_dimensions)
        ('tifffile', 0.5, 2)
        >>> plain.kind, plain.mpp  # a PNG states no resolution
        ('image', None)
        >>> open_slide("missing.svs")
        Traceback (most recent call last):
        ...
        histoblur.errors.InputError: Slide missing.svs does not exist.
    """
    from histoblur.wsi.dicom import DICOM_SUFFIX, open_dicom  # dicom imports this module

    if Path(path).is_dir():
        return open_dicom(path)
    path = existing_file(path, "Slide")
    suffix = path.suffix.lower()
    if suffix == DICOM_SUFFIX:
        return open_dicom(path)
    if suffix in PLAIN_SUFFIXES:
        return ImageReader(path)
    if suffix in TILED_TIFF_SUFFIXES:
        try:
            return TiffTileReader(path)
        except InputError:
            pass  # not a tiled TIFF tifffile decodes: OpenSlide alone
    try:
        return OpenSlideReader(path)
    except InputError:
        if suffix in TIFF_SUFFIXES:
            return ImageReader(path)
        raise


def best_level(reader: SlideReader, downsample: float) -> int:
    """The coarsest level whose down-sample does not exceed ``downsample`` (1 % slack).

    >>> reader = ArrayReader(np.zeros((64, 64, 3), np.uint8), downsamples=(1, 2, 4))
    >>> best_level(reader, 1.0), best_level(reader, 3.0), best_level(reader, 16.0)
    (0, 1, 2)
    """
    ok = [i for i, d in enumerate(reader.level_downsamples) if d <= downsample * 1.01]
    return max(ok, key=lambda i: reader.level_downsamples[i]) if ok else 0


def read_scaled(
    reader: SlideReader,
    box: tuple[float, float, float, float],
    out_size: tuple[int, int],
    level: int | None = None,
) -> np.ndarray:
    """Read the level-0 ``box=(x, y, w, h)`` resampled to ``out_size=(w, h)`` RGB uint8.

    Reads from ``level`` (default: the best level for the implied down-sample) and resizes with
    area averaging (or bilinear when enlarging).

    Examples:
        >>> reader = ArrayReader(np.zeros((400, 600, 3), np.uint8), downsamples=(1, 2))
        >>> read_scaled(reader, (100, 50, 300, 200), (75, 50)).shape  # 4x down, from level 1
        (50, 75, 3)
        >>> read_scaled(reader, (0, 0, 10, 10), (40, 40)).shape  # enlarged
        (40, 40, 3)
    """
    x, y, w, h = box
    ow, oh = out_size
    if level is None:
        level = best_level(reader, min(w / ow, h / oh))
    d = reader.level_downsamples[level]
    lw, lh = max(1, int(np.ceil(w / d))), max(1, int(np.ceil(h / d)))
    region = reader.read_region(int(round(x)), int(round(y)), level, (lw, lh))
    if (lw, lh) == (ow, oh):
        return region
    shrink = lw >= ow and lh >= oh
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(region, (ow, oh), interpolation=interp)


def thumbnail(reader: SlideReader, downsample: float, strip: int = 1024) -> np.ndarray:
    """The whole slide at ``downsample`` (relative to level 0), read in strips (memory bounded).

    Raises:
        ParameterError: a down-sample that is not positive.

    Examples:
        >>> reader = ArrayReader(np.zeros((600, 800, 3), np.uint8), downsamples=(1, 4))
        >>> thumbnail(reader, 16).shape
        (38, 50, 3)
    """
    if downsample <= 0:
        raise ParameterError(f"Thumbnail down-sample must be positive, got {downsample}.")
    W, H = reader.level_dimensions[0]
    tw, th = max(1, round(W / downsample)), max(1, round(H / downsample))
    level = best_level(reader, downsample)
    out = np.empty((th, tw, 3), np.uint8)
    rows_per_strip = max(1, int(strip * reader.level_downsamples[level] / downsample))
    for r0 in range(0, th, rows_per_strip):
        r1 = min(th, r0 + rows_per_strip)
        box = (0.0, r0 * H / th, float(W), (r1 - r0) * H / th)
        out[r0:r1] = read_scaled(reader, box, (tw, r1 - r0), level)
    return out
