"""Sharp training sources declared in the config, brought to one working resolution.

A detector trained at a known pixel size needs its sharp tissue at that size: a 40x tile is
halved to the 20x working resolution (down-sampling keeps sharp tissue sharp), a 10x pyramid
level stays as it is (never enlarged: enlarging blurs). Each :class:`Source` is a folder of
images, one image, or a slide (any file :func:`histoblur.wsi.readers.open_slide` opens, with the
pyramid levels to cut from). :func:`prepare_sources` writes the resampled images under one
folder, which the segmenter trainer then samples tiles from, so a run is reproducible from its
config alone.

Examples:
    >>> import tempfile
    >>> from histoblur.io.images import write_image
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = write_image(Path(tmp) / "a.png", np.full((400, 300, 3), 90, np.uint8))
    ...     folder = prepare_sources([Source(path=Path(tmp) / "a.png", mpp=0.25)], 0.5,
    ...                              Path(tmp) / "out")
    ...     [read_image(p).shape for p in sorted(folder.rglob("*.png"))]  # halved to 0.5 um/px
    [(200, 150, 3)]
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from pydantic import Field, model_validator

from histoblur.config import Config
from histoblur.errors import InputError
from histoblur.io.atomic import atomic_dir
from histoblur.io.images import read_image, write_image
from histoblur.synthesis.dataset import images_under
from histoblur.wsi.readers import open_slide
from histoblur.wsi.tissue import tissue_fraction

PIECE = 2048  # slide levels are cut into pieces of at most this many level pixels
log = logging.getLogger(__name__)


class Source(Config):
    """One sharp source and its resolution.

    Attributes:
        path: a folder of images (searched recursively), an image, or a slide file.
        mpp: microns per pixel of the images (level 0 for a slide); None: the slide's own
            metadata, or for plain images the working resolution.
        levels: pyramid levels to read (slides; plain images have level 0 only).
        box: keep only this part of each image, as fractions ``(x0, y0, x1, y1)`` of its
            width and height (to hold the rest out for validation).
        min_tissue: drop slide pieces with less tissue than this fraction.
    """

    path: Path
    mpp: float | None = Field(None, gt=0, le=50)
    levels: tuple[int, ...] = Field((0,), min_length=1)
    box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    min_tissue: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _box_inside(self) -> Source:
        x0, y0, x1, y1 = self.box
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise ValueError("box must be fractions (x0, y0, x1, y1) with 0 <= x0 < x1 <= 1")
        if min(self.levels) < 0:
            raise ValueError("levels must be pyramid level numbers (0 = full resolution)")
        return self


def source_files(source: Source) -> list[Path]:
    """The files a source names (a folder's images, recursively), sorted.

    Raises:
        InputError: the path does not exist or a folder holds no image.
    """
    path = Path(source.path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"Training source {path} does not exist.")
    files = images_under(path)
    if not files:
        raise InputError(f"Training source {path} holds no image.")
    return files


def _crop(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    return image[round(y0 * h) : round(y1 * h), round(x0 * w) : round(x1 * w)]


def to_resolution(image: np.ndarray, mpp: float, working: float) -> np.ndarray:
    """``image`` area-averaged down to ``working`` um/px when finer; coarser images unchanged.

    >>> to_resolution(np.zeros((100, 80), np.uint8), 0.25, 0.5).shape
    (50, 40)
    >>> to_resolution(np.zeros((100, 80), np.uint8), 1.0, 0.5).shape  # never enlarged
    (100, 80)
    """
    factor = mpp / working
    if factor >= 0.99:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _pieces(source: Source, file: Path, working: float) -> list[tuple[str, np.ndarray, float]]:
    """(name, image at <= working resolution, its mpp) for each level and piece of ``file``."""
    reader = open_slide(file)
    try:
        base = source.mpp or reader.mpp or working
        out = []
        for level in source.levels:
            if level >= len(reader.level_dimensions):
                log.info("%s has no level %d; skipped.", file, level)
                continue
            w, h = reader.level_dimensions[level]
            mpp = base * reader.level_downsamples[level]
            x0, y0, x1, y1 = source.box
            for y in range(round(y0 * h), round(y1 * h), PIECE):
                for x in range(round(x0 * w), round(x1 * w), PIECE):
                    pw, ph = min(PIECE, round(x1 * w) - x), min(PIECE, round(y1 * h) - y)
                    piece = reader.read_region(x, y, level, (pw, ph))
                    piece = to_resolution(piece, mpp, working)
                    if tissue_fraction(piece) < source.min_tissue:
                        continue
                    out.append((f"L{level}_y{y}_x{x}", piece, max(mpp, working)))
        return out
    finally:
        reader.close()


def _is_plain(file: Path) -> bool:
    return file.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp")


def fingerprint(sources: Sequence[Source], working: float) -> str:
    """A short hash of the source declarations (paths, sizes, settings) and working resolution."""
    items = []
    for source in sources:
        files = source_files(source)
        items.append([source.model_dump(mode="json"), [[str(f), f.stat().st_size] for f in files]])
    text = json.dumps([items, working], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prepare_sources(sources: Sequence[Source], working: float, folder: Path) -> Path:
    """Write every source's images at ``<= working`` um/px under ``folder``; returns ``folder``.

    The folder is reused when its ``sources.json`` fingerprint matches (same files and settings)
    and rebuilt otherwise; it is written whole or not at all.

    Raises:
        InputError: a source is missing, empty or unreadable.
    """
    folder = Path(folder)
    stamp = fingerprint(sources, working)
    index = folder / "sources.json"
    if index.is_file() and json.loads(index.read_text()).get("fingerprint") == stamp:
        return folder
    rows = []
    with atomic_dir(folder, overwrite=True) as tmp:
        for i, source in enumerate(sources):
            for file in source_files(source):
                sub = tmp / f"{i:02d}"
                if _is_plain(file):
                    image = _crop(read_image(file), source.box)
                    mpp = source.mpp or working
                    items = [("", to_resolution(image, mpp, working), max(mpp, working))]
                else:
                    items = _pieces(source, file, working)
                for name, image, mpp in items:
                    rel = Path(f"{i:02d}") / f"{file.stem}{'_' + name if name else ''}.png"
                    sub.mkdir(parents=True, exist_ok=True)
                    write_image(tmp / rel, image)
                    rows.append({"file": rel.as_posix(), "from": str(file), "mpp": round(mpp, 4)})
        summary = {"fingerprint": stamp, "working_mpp": working, "images": rows}
        (tmp / "sources.json").write_text(json.dumps(summary, indent=1) + "\n")
    log.info("Prepared %d source images at <= %g um/px in %s.", len(rows), working, folder)
    return folder


def coarsest_mpp(folder: Path) -> float:
    """The coarsest resolution among prepared sources (their ``sources.json``)."""
    rows = json.loads((Path(folder) / "sources.json").read_text())["images"]
    return max(r["mpp"] for r in rows)
