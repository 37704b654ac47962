"""DICOM whole-slide images: one ``.dcm`` file, or a folder of the ``.dcm`` instances of a slide.

:func:`open_dicom` tries wsidicom (:class:`DicomReader`) and falls back to
:class:`DicomFramesReader` for files whose frames simply tile each level but whose attributes
wsidicom refuses. wsidicom and pydicom are imported only when a DICOM slide is opened.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from histoblur.errors import InputError
from histoblur.io.images import to_rgb
from histoblur.wsi.readers import (
    SlideReader,
    _float,
    check_read,
    level_box,
    paste_tiles,
    plausible_mpp,
)

DICOM_SUFFIX = ".dcm"
WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy Image Storage
# transfer syntaxes DicomFramesReader decodes: native (implicit / explicit VR little endian),
# JPEG baseline / extended, JPEG 2000 (lossless / lossy)
_IMPLICIT_SYNTAX, _EXPLICIT_SYNTAX = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"
_JPEG_SYNTAXES = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51")
_J2K_SYNTAXES = ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91")
_SERIES_UID_TAG = 0x0020000E
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010), little endian


class _NotTiledError(Exception):
    """A DICOM instance that is not a plain tiled level (the message says why)."""


def has_dicom_marker(path: str | Path) -> bool:
    """Whether ``path`` starts like a DICOM file (``DICM`` after the 128-byte preamble).

    >>> has_dicom_marker(__file__)
    False
    """
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def dicom_files(folder: str | Path) -> list[Path]:
    """The ``.dcm`` files (any case, hidden ones left out) directly inside ``folder``, sorted."""
    return sorted(
        p
        for p in Path(folder).iterdir()
        if p.suffix.lower() == DICOM_SUFFIX and not p.name.startswith(".") and p.is_file()
    )


def _dicom_head(path: Path) -> Any:
    """The attributes of a DICOM file up to its series UID (None when it is not DICOM)."""
    from pydicom.filereader import read_partial

    # pydicom warns of every over-long value it reads (UIDs of 65 characters...): noise here
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\.valuerep")
    try:
        with open(path, "rb") as f:
            return read_partial(f, stop_when=lambda tag, vr, length: tag > _SERIES_UID_TAG)
    except Exception:  # pydicom's many ways of saying "not DICOM": none is worth more
        return None


def _wsi_series(files: Sequence[Path]) -> dict[str, list[Path]]:
    """The whole-slide instances among ``files``, by series UID."""
    series: dict[str, list[Path]] = {}
    for path in files:
        head = _dicom_head(path)
        if head is not None and str(head.get("SOPClassUID", "")) == WSI_SOP_CLASS:
            series.setdefault(str(head.get("SeriesInstanceUID", "")), []).append(path)
    return series


def _several_series(folder: Path, count: int) -> InputError:
    return InputError(
        f"Folder {folder} holds the DICOM instances of {count} whole-slide series; give each "
        "slide's instances a folder of its own."
    )


def is_dicom_slide_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds the instances of one DICOM whole-slide image, read as one slide.

    It does when two or more of its ``.dcm`` files are whole-slide instances of one series
    (pyramid levels, label, overview). A folder of single-file DICOM slides, one series each,
    does not: each file is a slide.

    Raises:
        InputError: the folder mixes a multi-file series with other whole-slide series.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     is_dicom_slide_folder(tmp)
    False
    """
    files = dicom_files(folder)
    if len(files) < 2:
        return False
    series = _wsi_series(files)
    if not any(len(members) > 1 for members in series.values()):
        return False
    if len(series) > 1:
        raise _several_series(Path(folder), len(series))
    return True


def _dicom_instances(path: Path) -> list[Path]:
    """The files of a DICOM slide: ``path`` itself, or a folder's ``.dcm`` files of one series."""
    if not path.is_dir():
        return [path]
    files = dicom_files(path)
    if not files:
        raise InputError(
            f"{path} is a folder without .dcm files; a folder is read as one DICOM whole-slide "
            "image, from the .dcm instances of its series."
        )
    series = _wsi_series(files)
    if len(series) > 1:
        raise _several_series(path, len(series))
    return next(iter(series.values()), files)


def _downsamples(dims: Sequence[tuple[int, int]]) -> tuple[float, ...]:
    """Each level's down-sample from level 0, the mean over both axes (as OpenSlide's)."""
    W, H = dims[0]
    return tuple(1.0 if i == 0 else (W / w + H / h) / 2 for i, (w, h) in enumerate(dims))


class DicomReader:
    """A DICOM whole-slide image (a ``.dcm`` file, or a folder of one slide's) via wsidicom.

    Levels are the volume pyramid's, level 0 first; ``mpp`` is the level-0 Pixel Spacing in
    microns; reads outside the image are white. wsidicom reads each instance's frames under a
    lock of its own and guards its tile caches, so QC's reader threads share one reader (the
    tests read from threads and compare with serial reads). ``open_slide`` picks this reader
    for ``.dcm`` files and DICOM folders; the tests read a series that wsidicom writes.

    Raises:
        InputError: files wsidicom does not read as a whole-slide image (its reason in the
            sentence, its exception the cause).
    """

    kind = "wsidicom"

    def __init__(self, path: str | Path, files: Sequence[Path] | None = None) -> None:
        import wsidicom

        self.path = str(path)
        files = list(files) if files is not None else _dicom_instances(Path(path))
        try:
            self.slide = wsidicom.WsiDicom.open(files)
        except Exception as exc:  # wsidicom's and pydicom's errors: no level, no resolution...
            raise InputError(
                f"wsidicom does not read {path} as a whole-slide image "
                f"({type(exc).__name__}{': ' + str(exc) if str(exc) else ''})."
            ) from exc
        levels = self.slide.levels.levels
        self._levels = [level.level for level in levels]  # wsidicom's level numbers
        self.level_dimensions = tuple((lv.size.width, lv.size.height) for lv in levels)
        self.level_downsamples = _downsamples(self.level_dimensions)
        mpp = self.slide.mpp  # microns per pixel, from the Pixel Spacing
        self.mpp = plausible_mpp((float(mpp.width) + float(mpp.height)) / 2)

    def read_region(self, x: int, y: int, level: int, size: tuple[int, int]) -> np.ndarray:
        """Read a box of level pixels whose top-left is level-0 ``(x, y)``."""
        w, h = check_read(self, level, size)
        out, (lx, ly, x0, y0, x1, y1) = level_box(self, x, y, level, w, h)
        if x1 > x0 and y1 > y0:
            try:
                region = self.slide.read_region(
                    (x0, y0), self._levels[level], (x1 - x0, y1 - y0), as_array=True
                )
            except Exception as exc:  # a damaged frame, a codec wsidicom lacks
                raise InputError(f"Reading {self.path} failed: {exc}.") from exc
            out[y0 - ly : y1 - ly, x0 - lx : x1 - lx] = to_rgb(np.asarray(region))
        return out

    def close(self) -> None:
        """Close the instances."""
        self.slide.close()


def _frame_index(f: Any, ds: Any) -> tuple[list[tuple[tuple[int, int], ...]], Any]:
    """Each frame's ``(offset, length)`` parts in the file, and the frame decoder.

    ``f`` is at the Pixel Data element of a tiled-full whole-slide instance.

    Raises:
        _NotTiledError: the instance is not a tiled-full 8-bit level this module decodes.
    """
    import imagecodecs
    from pydicom.encaps import parse_basic_offsets, parse_fragments

    image_type = list(ds.get("ImageType") or [])
    if len(image_type) > 2 and image_type[2] != "VOLUME":
        raise _NotTiledError(f"it is a {str(image_type[2]).lower()} image, not a pyramid level")
    if (
        ds.get("DimensionOrganizationType", "TILED_FULL") != "TILED_FULL"
        or "PerFrameFunctionalGroupsSequence" in ds
    ):
        raise _NotTiledError("its frames are placed one by one (TILED_SPARSE)")
    W, H = int(ds.TotalPixelMatrixColumns), int(ds.TotalPixelMatrixRows)
    tw, th, count = int(ds.Columns), int(ds.Rows), int(ds.get("NumberOfFrames") or 1)
    if count != -(-W // tw) * -(-H // th):
        raise _NotTiledError(f"its {count} frames of {tw} x {th} do not tile {W} x {H} pixels once")
    spp = int(ds.SamplesPerPixel)
    if int(ds.BitsAllocated) != 8 or spp not in (1, 3) or int(ds.get("PlanarConfiguration", 0)):
        raise _NotTiledError("its pixels are not 8-bit grey or RGB")
    syntax = str(ds.file_meta.TransferSyntaxUID)
    if f.read(4) != _PIXEL_DATA_TAG:
        raise _NotTiledError("it has no pixel data")
    if syntax in (_IMPLICIT_SYNTAX, _EXPLICIT_SYNTAX):
        if ds.PhotometricInterpretation not in ("RGB", "MONOCHROME2"):
            raise _NotTiledError(f"its pixels are {ds.PhotometricInterpretation}")
        if syntax == _EXPLICIT_SYNTAX:
            f.read(4)  # VR (OB or OW) and two reserved bytes
        length, start, size = int.from_bytes(f.read(4), "little"), f.tell(), tw * th * spp
        if length < count * size:
            raise _NotTiledError("its pixel data is shorter than its frames")
        frames = [((start + i * size, size),) for i in range(count)]
        return frames, lambda data: np.frombuffer(data, np.uint8).reshape(th, tw, spp)
    if syntax not in _JPEG_SYNTAXES + _J2K_SYNTAXES:
        raise _NotTiledError(f"its transfer syntax {syntax} is not one decoded here")
    f.read(8)  # VR OB, two reserved bytes, undefined length
    try:
        offsets = parse_basic_offsets(f)
        n, positions = parse_fragments(f)
        lengths = []
        for p in positions:
            f.seek(p + 4)
            lengths.append(int.from_bytes(f.read(4), "little"))
    except Exception as exc:  # pydicom on encapsulated data that ends early
        raise _NotTiledError(f"its pixel data is damaged ({exc})") from exc
    fragments = [(p + 8, length) for p, length in zip(positions, lengths, strict=True)]
    if n == count:
        frames = [(fragment,) for fragment in fragments]
    elif len(offsets) == count and n:
        starts = [positions[0] + o for o in offsets] + [2**63]
        frames = [
            tuple(fr for p, fr in zip(positions, fragments, strict=True) if a <= p < b)
            for a, b in zip(starts, starts[1:], strict=False)
        ]
    else:
        raise _NotTiledError(f"its {n} fragments cannot be told apart into {count} frames")
    jpeg = syntax in _JPEG_SYNTAXES
    return frames, imagecodecs.jpeg8_decode if jpeg else imagecodecs.jpeg2k_decode


class DicomFramesReader:
    """A tiled-full DICOM whole-slide image that wsidicom does not open, read frame by frame.

    Some writers leave out attributes wsidicom needs (Image Type, Dimension Organization Type,
    Pixel Spacing) although the frames are plain row-major tiles of the total pixel matrix.
    This reader takes such instances (one per level, largest first), finds every frame in the
    pixel data once, and decodes frames with imagecodecs (native, JPEG, JPEG 2000; JPEG
    colours as the stream's own markers say, as pydicom decodes them). Reads use
    ``os.pread`` and share no state, so they are thread-safe. ``mpp`` is the stated Pixel
    Spacing, else the Imaged Volume's size over the pixel matrix where both axes agree on
    square pixels (within 2 %), else None. ``open_slide`` falls back to it where wsidicom
    refuses a whole-slide instance; the tests read a real one.

    Raises:
        InputError: no instance is a tiled-full level (the reasons in the sentence), or a
            frame does not decode.
    """

    kind = "dicom-frames"

    def __init__(self, path: str | Path, files: Sequence[Path] | None = None) -> None:
        import pydicom

        self.path = str(path)
        found, reasons = [], []
        for file in files if files is not None else _dicom_instances(Path(path)):
            try:
                with open(file, "rb") as f:
                    ds = pydicom.dcmread(f, stop_before_pixels=True)
                    if str(ds.get("SOPClassUID", "")) != WSI_SOP_CLASS:
                        raise _NotTiledError("it is not a whole-slide image")
                    frames, decode = _frame_index(f, ds)
                    end = os.fstat(f.fileno()).st_size
                    if any(not parts or sum(parts[-1]) > end for parts in frames):
                        raise _NotTiledError("its pixel data ends before its last frame")
                    found.append((ds, file, frames, decode))
            except _NotTiledError as exc:
                reasons.append(f"{Path(file).name}: {exc}")
            except Exception as exc:  # pydicom on a damaged header
                reasons.append(f"{Path(file).name} cannot be parsed ({exc})")
        if not found:
            raise InputError(
                f"{path} has no whole-slide level that is read frame by frame "
                f"({'; '.join(reasons)})."
            )
        found.sort(key=lambda item: -int(item[0].TotalPixelMatrixColumns))
        self._levels: list[tuple[tuple[int, int], tuple[int, int], int, Any, Any]] = []
        for ds, file, frames, decode in found:  # one level per size, of level 0's aspect
            W, H = int(ds.TotalPixelMatrixColumns), int(ds.TotalPixelMatrixRows)
            if self._levels:
                (w0, h0), (last, _) = self._levels[0][0], self._levels[-1][0]
                if last <= W or abs(w0 / W - h0 / H) > 0.05 * w0 / W:
                    continue  # a copy, another focal plane, a label
            fd = os.open(file, os.O_RDONLY)
            self._levels.append(((W, H), (int(ds.Columns), int(ds.Rows)), fd, frames, decode))
        self.level_dimensions = tuple(level[0] for level in self._levels)
        self.level_downsamples = _downsamples(self.level_dimensions)
        spacing = _spacing_mm(found[0][0], *self.level_dimensions[0])
        self.mpp = plausible_mpp(spacing * 1000) if spacing else None

    def read_region(self, x: int, y: int, level: int, size: tuple[int, int]) -> np.ndarray:
        """Read a box of level pixels whose top-left is level-0 ``(x, y)``."""
        w, h = check_read(self, level, size)
        out, box = level_box(self, x, y, level, w, h)
        (width, _), (tw, th), fd, frames, decode = self._levels[level]

        def tile(index: int) -> np.ndarray:
            data = b"".join(os.pread(fd, n, offset) for offset, n in frames[index])
            return self._decode(decode, data, index, tw, th)

        paste_tiles(out, box, width, (tw, th), tile)
        return out

    def _decode(self, decode: Any, data: bytes, index: int, tw: int, th: int) -> np.ndarray:
        """RGB uint8 (th, tw, 3) of one frame."""
        try:
            tile = to_rgb(np.asarray(decode(data)))
        except Exception as exc:  # a damaged or truncated frame
            raise InputError(
                f"Frame {index} of {self.path} cannot be decoded ({exc}); check that the file "
                "copied completely."
            ) from exc
        if tile.shape[:2] != (th, tw) or tile.dtype != np.uint8:
            raise InputError(
                f"Frame {index} of {self.path} decodes to {tile.shape[1]} x {tile.shape[0]} "
                f"{tile.dtype} pixels, not the {tw} x {th} 8-bit ones its header states."
            )
        return tile

    def close(self) -> None:
        """Close the files."""
        for level in self._levels:
            os.close(level[2])
        self._levels = []


def _spacing_mm(ds: Any, width: int, height: int) -> float | None:
    """Level-0 pixel spacing in mm: the stated one, else the Imaged Volume's size per pixel.

    The Imaged Volume counts only when its width and height agree on square pixels (2 %).
    """
    try:
        spacing = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        return float(np.mean([float(s) for s in spacing]))
    except (AttributeError, IndexError, TypeError, ValueError):
        pass
    sx, sy = _float(ds.get("ImagedVolumeWidth")), _float(ds.get("ImagedVolumeHeight"))
    if not sx or not sy:
        return None
    sx, sy = sx / width, sy / height
    return (sx + sy) / 2 if abs(sx - sy) <= 0.02 * max(sx, sy) else None


def _sop_name(head: Any) -> str:
    uid = head.get("SOPClassUID")
    return getattr(uid, "name", None) or str(uid or "no SOP class")


def open_dicom(path: str | Path) -> SlideReader:
    """A DICOM whole-slide image: a ``.dcm`` file or a folder of one slide's ``.dcm`` instances.

    Read with wsidicom (:class:`DicomReader`); whole-slide instances that wsidicom refuses
    for missing attributes but whose frames tile the image are read by
    :class:`DicomFramesReader`.

    Raises:
        InputError: a folder without ``.dcm`` files or with several series, a file that is not
            DICOM, DICOM that is not a whole-slide image, or one neither reader reads.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     open_dicom(tmp)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    histoblur.errors.InputError: ... is a folder without .dcm files; a folder is read as one ...
    """
    path = Path(path)
    files = _dicom_instances(path)
    if not _wsi_series(files):
        heads = [head for head in map(_dicom_head, files) if head is not None]
        if not heads and path.is_file() and not has_dicom_marker(path):
            raise InputError(
                f"{path} is named .dcm but is not a DICOM file (no DICM marker); check that it "
                "copied completely."
            )
        if not heads:
            raise InputError(
                f"{path} holds no readable DICOM file (damaged headers or no DICM marker); "
                "check that it copied completely."
            )
        kinds = ", ".join(sorted({_sop_name(head) for head in heads}))
        raise InputError(
            f"{path} is DICOM but not a whole-slide image ({kinds}); histoblur reads VL Whole "
            "Slide Microscopy images."
        )
    try:
        return DicomReader(path, files)
    except InputError as exc:
        try:
            return DicomFramesReader(path, files)
        except InputError as frames:
            raise InputError(f"{str(exc).rstrip('.')}; {frames}") from exc.__cause__
