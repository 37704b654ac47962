"""Pixel-labelled training sets: synthetic blur pasted into sharp tiles under random polygons.

Every sample is drawn from its own generator ``default_rng([seed, index])`` and its exact parameters
are written to ``manifest.jsonl``, so any sample can be regenerated (:func:`regenerate`) and the
same seed always gives byte-identical files.

Examples:
    Build a three-sample set from one sharp image, then replay a sample from the manifest:

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     sharp = Path(tmp) / "sharp"
    ...     sharp.mkdir()
    ...     tissue = np.random.default_rng(0).integers(40, 200, (96, 96, 3), dtype=np.uint8)
    ...     _ = write_image(sharp / "tile.png", tissue)
    ...     config = DatasetConfig(n=3, tile=32, methods=("gaussian", "motion"), seed=0)
    ...     out = build_dataset(sharp, Path(tmp) / "dataset", config)
    ...     names = sorted(p.name for p in out.iterdir())
    ...     records = list(iter_manifest(out))
    ...     tile, mask = regenerate(records[0], sharp)
    ...     same = bool((tile == read_image(out / "images" / "000000.png")).all())
    >>> names
    ['config.json', 'images', 'manifest.jsonl', 'masks']
    >>> len(records), records[0]["id"], records[0]["blur"]["kind"] in ("gaussian", "motion")
    (3, '000000', True)
    >>> tile.shape, tile.dtype, mask.shape, mask.dtype, same
    ((32, 32, 3), dtype('uint8'), (32, 32), dtype('bool'), True)
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import Field, field_validator, model_validator

from histoblur.config import Config
from histoblur.errors import InputError
from histoblur.io.atomic import atomic_dir
from histoblur.io.images import (
    from_float,
    list_images,
    read_image,
    to_float,
    to_gray_float,
    to_rgb,
    write_image,
)
from histoblur.io.manifest import iter_jsonl
from histoblur.io.paths import check_output_folder
from histoblur.synthesis.artifacts import pen
from histoblur.synthesis.blur import apply_blur
from histoblur.synthesis.composite import composite
from histoblur.synthesis.degrade import MAX_PHOTONS, DegradeSpec, degrade
from histoblur.synthesis.masks import (
    Polygon,
    PolygonMaskSampler,
    mask_to_png,
    rasterize,
    soft_alpha,
)
from histoblur.synthesis.registry import parse_method, spec_from_dict
from histoblur.synthesis.spec import SEED_RANGE, Range, check_range
from histoblur.wsi.tissue import tissue_fraction

VISIBLE_SIGMA = 3.0  # px: the local mean of visible_change


class DegradeSampler(Config):
    """How often and how strongly tiles are degraded after compositing.

    Attributes:
        noise_p: probability of Poisson-Gaussian sensor noise.
        photons: range of the full-well photon count (lower is noisier).
        read_noise: range of the Gaussian read-noise sigma ([0, 1] units).
        jpeg_p: probability of a JPEG re-compression round trip.
        jpeg_quality: range of JPEG quality.

    Examples:
        >>> DegradeSampler().sample(np.random.default_rng(0)) is None  # both off by default
        True
        >>> spec = DegradeSampler(noise_p=1.0).sample(np.random.default_rng(0))
        >>> 300 <= spec.photons <= 3000, spec.jpeg_quality is None
        (True, True)
    """

    noise_p: float = Field(0.0, ge=0, le=1)
    photons: Range = (300.0, 3000.0)
    read_noise: Range = (0.0, 0.01)
    jpeg_p: float = Field(0.0, ge=0, le=1)
    jpeg_quality: tuple[int, int] = (60, 95)

    @model_validator(mode="after")
    def _bounded(self) -> DegradeSampler:
        check_range("photons", self.photons, 1e-6, MAX_PHOTONS)
        check_range("read_noise", self.read_noise, 0.0, 0.5)
        check_range("jpeg_quality", self.jpeg_quality, 1, 100)
        return self

    def sample(self, rng: np.random.Generator) -> DegradeSpec | None:
        """Draw the degradation of one tile, or None when neither step is drawn."""
        noise = rng.random() < self.noise_p
        jpeg = rng.random() < self.jpeg_p
        photons = float(rng.uniform(*self.photons))
        read = float(rng.uniform(*self.read_noise))
        quality = int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
        seed = int(rng.integers(*SEED_RANGE))
        if not (noise or jpeg):
            return None
        return DegradeSpec(
            photons=photons if noise else None,
            read_noise=read if noise else None,
            jpeg_quality=quality if jpeg else None,
            seed=seed,
        )


class DatasetConfig(Config):
    """Everything that defines a synthetic dataset; defaults live here only.

    Attributes:
        methods: blur kinds drawn uniformly per sample (registry names).
        n: number of samples.
        tile: tile side in pixels.
        seed: master seed.
        min_tissue: minimum tissue fraction of a tile (glass tiles are redrawn).
        context: pixels of real image kept around the tile while blurring, so tile borders see
            real neighbours instead of reflections.
        max_attempts: tile draws per sample before giving up on finding tissue.
        masks: random polygon ranges.
        degrade: post-composite noise / JPEG policy.
        sharp_fraction: share of samples left sharp (empty mask): negatives that teach a
            detector not to flag sharp tissue.
        blurred_fraction: share of samples blurred over the whole tile (full mask).
        scale: range of the source magnification: each sample's source region (sharp and
            blurred alike) is resized by a factor drawn from it (above 1: a smoother-looking but
            sharp image, as from a higher-magnification scan; below 1: finer detail). Blur
            parameters are in source pixels (the region is blurred, then resized), so the blur
            keeps its size relative to the tissue and a detector learns blur relative to the
            tissue, not to one scanner's pixel size.
        visible_threshold: when set, the mask keeps only the polygon pixels where the blur
            visibly changed the tile (local mean absolute luma difference, Gaussian sigma 3 px,
            above this value in [0, 1] units): blur over featureless glass or flat stain is not
            labelled blur. None labels every pixel of the polygons.
        visible_sigma: the Gaussian sigma (px) of that local mean: larger values keep flat
            patches inside blurred tissue labelled blurred when textured neighbours within
            about this distance show the blur (a detector must judge them from context), and
            clear only wide featureless areas.
        ink_p: probability of marker ink (:func:`histoblur.synthesis.artifacts.pen`) drawn over
            the tile after blurring: a hard negative, flat and sharp-edged; where the ink is
            dense (it hides the tissue) the mask is cleared.
        ranges: per-kind sampler overrides, e.g. ``{"gaussian": {"sigma": (2, 4)}}``.

    Examples:
        >>> config = DatasetConfig(n=10, tile=64, ranges={"gaussian": {"sigma": (2, 4)}})
        >>> config.methods, config.masks.count
        (('gaussian', 'lens', 'motion'), (1, 3))
        >>> config.model_dump(mode="json")["ranges"]
        {'gaussian': {'sigma': [2, 4]}}
    """

    methods: tuple[str, ...] = ("gaussian", "lens", "motion")
    n: int = Field(100, ge=1, le=10_000_000)
    tile: int = Field(256, ge=16, le=8192)
    seed: int = Field(0, ge=0)
    min_tissue: float = Field(0.5, ge=0, le=1)
    context: int = Field(32, ge=0, le=1024)
    max_attempts: int = Field(50, ge=1)
    masks: PolygonMaskSampler = PolygonMaskSampler()
    degrade: DegradeSampler = DegradeSampler()
    sharp_fraction: float = Field(0.0, ge=0, le=1)
    blurred_fraction: float = Field(0.0, ge=0, le=1)
    scale: tuple[float, float] = (1.0, 1.0)
    visible_threshold: float | None = Field(None, gt=0, lt=1)
    visible_sigma: float = Field(VISIBLE_SIGMA, gt=0, le=64)
    ink_p: float = Field(0.0, ge=0, le=1)
    ranges: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: tuple[str, ...]) -> tuple[str, ...]:
        if not methods:
            raise ValueError("at least one blur method is needed")
        for name in methods:
            parse_method(name)
        return methods

    @model_validator(mode="after")
    def _fractions_fit(self) -> DatasetConfig:
        if self.sharp_fraction + self.blurred_fraction > 1:
            raise ValueError("sharp_fraction + blurred_fraction must not exceed 1")
        if not 0.25 <= self.scale[0] <= self.scale[1] <= 4:
            raise ValueError("scale must be a range (low, high) within [0.25, 4]")
        return self


@lru_cache(maxsize=128)
def load_rgb(path: str) -> np.ndarray:
    """An image file as RGB (grey repeated, alpha dropped), cached: training reads sources often."""
    return to_rgb(read_image(path))


def _draw_tile(
    sources: list[Path], config: DatasetConfig, rng: np.random.Generator, t: int
) -> tuple[Path, tuple[int, int]]:
    """A source image and the corner of a ``t`` x ``t`` region of it with enough tissue."""
    for _ in range(config.max_attempts):
        path = sources[int(rng.integers(len(sources)))]
        image = load_rgb(str(path))
        h, w = image.shape[:2]
        if min(h, w) < t:
            continue
        y, x = int(rng.integers(0, h - t + 1)), int(rng.integers(0, w - t + 1))
        if tissue_fraction(image[y : y + t, x : x + t]) >= config.min_tissue:
            return path, (y, x)
    raise InputError(
        f"No tile of {t} px with at least {config.min_tissue:.0%} tissue was found in "
        f"{config.max_attempts} draws; lower --min-tissue or use tissue-rich images."
    )


def _rescale(image: np.ndarray, s: float) -> np.ndarray:
    """Resize by ``s`` (sides rounded up): cubic when enlarging, area-averaging when shrinking."""
    size = (math.ceil(image.shape[1] * s), math.ceil(image.shape[0] * s))
    return cv2.resize(image, size, interpolation=cv2.INTER_CUBIC if s > 1 else cv2.INTER_AREA)


def visible_change(
    sharp: np.ndarray, blurred: np.ndarray, threshold: float, sigma: float = VISIBLE_SIGMA
) -> np.ndarray:
    """Where blurring changed the image: local mean |sharp - blurred| of the luma > threshold.

    Featureless regions (glass, flat stain, ink) look the same blurred or not; a detector cannot
    and should not call them blurred.

    Examples:
        >>> flat = np.full((16, 16, 3), 128, np.uint8)
        >>> changed = flat.copy()
        >>> changed[4:8, 4:8] = 255
        >>> bool(visible_change(flat, flat, 0.01).any())
        False
        >>> bool(visible_change(flat, changed, 0.01)[6, 6])
        True
    """
    diff = np.abs(to_gray_float(sharp) - to_gray_float(blurred))
    return cv2.GaussianBlur(diff, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101) > threshold


def render(record: dict[str, Any], image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rebuild (tile, mask) from a manifest record and its source image (RGB)."""
    y, x = record["crop"][:2]
    t = record["tile"]
    y0, x0, y1, x1 = record["window"]
    window = image[y0:y1, x0:x1]
    mask = rasterize([[tuple(p) for p in poly] for poly in record["polygons"]], t, t)
    # blur in source pixels, then resize both: the blur keeps its size relative to the tissue
    blurred = apply_blur(window, spec_from_dict(record["blur"])) if mask.any() else None
    oy, ox = y - y0, x - x0
    s = record.get("scale", 1.0)
    if s != 1.0:
        window, blurred = (_rescale(a, s) if a is not None else None for a in (window, blurred))
        oy, ox = math.floor(oy * s), math.floor(ox * s)
    sharp_tile = window[oy : oy + t, ox : ox + t]
    if blurred is not None:
        blur_tile = blurred[oy : oy + t, ox : ox + t]
        tile = composite(sharp_tile, blur_tile, soft_alpha(mask, record["feather"]))
        if record.get("visible_threshold") is not None:
            sigma = record.get("visible_sigma", VISIBLE_SIGMA)
            mask &= visible_change(sharp_tile, blur_tile, record["visible_threshold"], sigma)
    else:
        tile = sharp_tile.copy()
    if record.get("ink") is not None:
        tile, mask = _ink(tile, mask, record["ink"])
    if record["degrade"] is not None:
        tile = degrade(tile, DegradeSpec.model_validate(record["degrade"]))
    return tile, mask


def _ink(tile: np.ndarray, mask: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Marker ink over a tile (seeded); the mask is cleared where the ink hides the tissue."""
    inked, _ = pen(to_float(tile), np.random.default_rng(seed))
    dense = inked.max(axis=2) < 0.25
    return from_float(inked, tile.dtype), mask & ~dense


def _draw_polygons(index: int, config: DatasetConfig, rng: np.random.Generator) -> list[Polygon]:
    """Random polygons; none (all sharp) or the whole tile (all blurred) at the set fractions.

    The sample kind comes from its own stream ``default_rng([seed, index, 1])``, so datasets built
    with both fractions at 0 are unchanged by their existence.
    """
    polygons = config.masks.sample(rng, config.tile, config.tile)
    if config.sharp_fraction == 0 and config.blurred_fraction == 0:
        return polygons
    u = np.random.default_rng([config.seed, index, 1]).random()
    if u < config.sharp_fraction:
        return []
    if u < config.sharp_fraction + config.blurred_fraction:
        t = float(config.tile)
        return [[(0.0, 0.0), (t, 0.0), (t, t), (0.0, t)]]
    return polygons


def _draw_scale(index: int, config: DatasetConfig) -> float:
    """Source magnification of sample ``index``, from its own stream (1 when fixed)."""
    lo, hi = config.scale
    if lo == hi:
        return float(lo)
    return round(float(np.random.default_rng([config.seed, index, 4]).uniform(lo, hi)), 4)


def draw_sample(
    index: int, sources: list[Path], root: Path, config: DatasetConfig
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Draw and render sample ``index``: (manifest record, RGB tile, boolean mask).

    The sample depends only on ``config``, ``index`` and the sources (its generator is
    ``default_rng([config.seed, index])``), so samples can be drawn in any order or in parallel.
    """
    rng = np.random.default_rng([config.seed, index])
    s = _draw_scale(index, config)
    t = config.tile
    ts, c = math.ceil(t / s), math.ceil(config.context / s)  # source pixels
    path, (y, x) = _draw_tile(sources, config, rng, ts)
    image = load_rgb(str(path))
    h, w = image.shape[:2]
    method = config.methods[int(rng.integers(len(config.methods)))]
    kind, fixed = parse_method(method)
    spec = kind.sampler.build(**{**config.ranges.get(method, {}), **fixed}).sample(rng)
    polygons = _draw_polygons(index, config, rng)
    post = config.degrade.sample(rng)
    record = {
        "id": f"{index:06d}",
        "source": path.relative_to(root).as_posix(),
        "crop": [y, x, ts, ts],
        "tile": t,
        "scale": s,
        "window": [max(0, y - c), max(0, x - c), min(h, y + ts + c), min(w, x + ts + c)],
        "method": method,
        "blur": spec.model_dump(),
        "polygons": [[list(p) for p in poly] for poly in polygons],
        "feather": config.masks.feather,
        "visible_threshold": config.visible_threshold,
        "degrade": post.model_dump() if post is not None else None,
    }
    if config.visible_sigma != VISIBLE_SIGMA:  # older manifests keep their records
        record["visible_sigma"] = config.visible_sigma
    if config.ink_p > 0:  # its own stream: datasets without ink are unchanged
        ink = np.random.default_rng([config.seed, index, 5])
        if ink.random() < config.ink_p:
            record["ink"] = int(ink.integers(2**31))
    tile, mask = render(record, image)
    record["blurred_fraction"] = round(float(mask.mean()), 6)
    return record, tile, mask


def build_dataset(
    sharp_dir: Path,
    out_dir: Path,
    config: DatasetConfig,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
    inputs: Sequence[Path] = (),
) -> Path:
    """Write ``images/``, ``masks/``, ``manifest.jsonl`` and ``config.json`` into ``out_dir``.

    The folder is built under a temporary name and renamed when complete; an ``out_dir`` that
    is or holds ``sharp_dir`` (or one of ``inputs``) is refused, as replacing it would delete
    the sources.

    Args:
        sharp_dir: folder of sharp tiles or images (searched recursively).
        out_dir: output folder (must not exist or be empty unless ``overwrite``).
        config: the dataset definition.
        overwrite: replace a non-empty ``out_dir``.
        progress: called with 1 after each sample.
        inputs: other files the run reads (a config file).

    Returns:
        ``out_dir``.

    Raises:
        InputError: no usable image in ``sharp_dir``.
        OutputError: ``out_dir`` holds an input, or is not empty and ``overwrite`` is false.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     (Path(tmp) / "sharp").mkdir()
        ...     image = np.random.default_rng(0).integers(40, 200, (64, 64, 3), dtype=np.uint8)
        ...     _ = write_image(Path(tmp) / "sharp" / "a.png", image)
        ...     config = DatasetConfig(n=2, tile=32)
        ...     out = build_dataset(Path(tmp) / "sharp", Path(tmp) / "ds", config)
        ...     sorted(p.name for p in (out / "masks").iterdir())
        ['000000.png', '000001.png']
    """
    sharp_dir = Path(sharp_dir)
    check_output_folder(Path(out_dir), [sharp_dir, *inputs], overwrite)  # before any work
    sources = usable_sources(sharp_dir, config.tile)
    with atomic_dir(Path(out_dir), overwrite, (sharp_dir, *inputs)) as tmp:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        with open(tmp / "manifest.jsonl", "w", encoding="utf-8") as manifest:
            for i in range(config.n):
                record, tile, mask = draw_sample(i, sources, sharp_dir, config)
                write_image(tmp / "images" / f"{record['id']}.png", tile)
                write_image(tmp / "masks" / f"{record['id']}.png", mask_to_png(mask))
                manifest.write(json.dumps(record, sort_keys=True) + "\n")
                if progress is not None:
                    progress(1)
        (tmp / "config.json").write_text(
            json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
        )
    return Path(out_dir)


def usable_sources(sharp_dir: Path, tile: int) -> list[Path]:
    """Images under ``sharp_dir`` (recursive) at least ``tile`` px on each side.

    Raises:
        InputError: the folder is missing, empty, or holds no image that large.
    """
    if not sharp_dir.is_dir():
        raise InputError(f"Sharp-image folder {sharp_dir} does not exist.")
    files = images_under(sharp_dir)
    if not files:
        raise InputError(f"Folder {sharp_dir} holds no image.")
    usable = [f for f in files if min(load_rgb(str(f)).shape[:2]) >= tile]
    if not usable:
        raise InputError(f"No image in {sharp_dir} is at least {tile} x {tile} px; lower --tile.")
    return usable


def images_under(folder: Path) -> list[Path]:
    """Images in ``folder`` and every sub-folder (folder by folder, sorted); may be empty."""
    folders = [folder, *sorted(p for p in folder.rglob("*") if p.is_dir())]
    return [f for d in folders for f in _images_or_empty(d)]


def _images_or_empty(folder: Path) -> list[Path]:
    try:
        return list_images(folder)
    except InputError:
        return []


def iter_manifest(dataset_dir: Path) -> Iterator[dict[str, Any]]:
    """Records of a dataset's ``manifest.jsonl`` (one dict per sample; see :func:`build_dataset`).

    Each record holds the sample ``id``, its ``source`` image and ``crop``, the ``method`` and
    exact ``blur`` spec, the mask ``polygons`` and ``degrade`` spec, and the ``blurred_fraction``.
    """
    return iter_jsonl(Path(dataset_dir), "histoblur dataset")


def regenerate(record: dict[str, Any], sharp_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Re-render one manifest record from the sharp source folder: (tile, boolean mask).

    The tile equals the one :func:`build_dataset` wrote (see the module example).
    """
    return render(record, load_rgb(str(Path(sharp_dir) / record["source"])))
