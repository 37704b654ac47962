"""Pixel-labelled training sets: synthetic blur pasted into sharp tiles under random polygons.

Every sample is drawn from its own generator ``default_rng([seed, index])`` and its exact parameters
are written to ``manifest.jsonl``, so any sample can be regenerated (:func:`regenerate`) and the
same seed always gives byte-identical files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from histoblur.errors import InputError
from histoblur.io.atomic import atomic_dir
from histoblur.io.images import list_images, read_image, to_rgb, write_image
from histoblur.io.manifest import iter_jsonl
from histoblur.synthesis.blur import apply_blur
from histoblur.synthesis.composite import composite
from histoblur.synthesis.degrade import DegradeSpec, degrade
from histoblur.synthesis.masks import PolygonMaskSampler, mask_to_png, rasterize, soft_alpha
from histoblur.synthesis.registry import get_kind, spec_from_dict
from histoblur.synthesis.spec import SEED_RANGE, Range
from histoblur.wsi.tissue import tissue_fraction


class DegradeSampler(BaseModel):
    """How often and how strongly tiles are degraded after compositing.

    Attributes:
        noise_p: probability of Poisson-Gaussian sensor noise.
        photons: range of the full-well photon count (lower is noisier).
        read_noise: range of the Gaussian read-noise sigma ([0, 1] units).
        jpeg_p: probability of a JPEG re-compression round trip.
        jpeg_quality: range of JPEG quality.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    noise_p: float = Field(0.0, ge=0, le=1)
    photons: Range = (300.0, 3000.0)
    read_noise: Range = (0.0, 0.01)
    jpeg_p: float = Field(0.0, ge=0, le=1)
    jpeg_quality: tuple[int, int] = (60, 95)

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


class DatasetConfig(BaseModel):
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
        ranges: per-kind sampler overrides, e.g. ``{"gaussian": {"sigma": (2, 4)}}``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    methods: tuple[str, ...] = ("gaussian", "lens", "motion")
    n: int = Field(100, ge=1, le=10_000_000)
    tile: int = Field(256, ge=16, le=8192)
    seed: int = Field(0, ge=0)
    min_tissue: float = Field(0.5, ge=0, le=1)
    context: int = Field(32, ge=0, le=1024)
    max_attempts: int = Field(50, ge=1)
    masks: PolygonMaskSampler = PolygonMaskSampler()
    degrade: DegradeSampler = DegradeSampler()
    ranges: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: tuple[str, ...]) -> tuple[str, ...]:
        if not methods:
            raise ValueError("at least one blur method is needed")
        for name in methods:
            get_kind(name)
        return methods


@lru_cache(maxsize=64)
def _load_rgb(path: str) -> np.ndarray:
    return to_rgb(read_image(path))


def _draw_tile(
    sources: list[Path], config: DatasetConfig, rng: np.random.Generator
) -> tuple[Path, tuple[int, int]]:
    t = config.tile
    for _ in range(config.max_attempts):
        path = sources[int(rng.integers(len(sources)))]
        image = _load_rgb(str(path))
        h, w = image.shape[:2]
        y, x = int(rng.integers(0, h - t + 1)), int(rng.integers(0, w - t + 1))
        if tissue_fraction(image[y : y + t, x : x + t]) >= config.min_tissue:
            return path, (y, x)
    raise InputError(
        f"No tile of {t} px with at least {config.min_tissue:.0%} tissue was found in "
        f"{config.max_attempts} draws; lower --min-tissue or use tissue-rich images."
    )


def render(record: dict[str, Any], image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rebuild (tile, mask) from a manifest record and its source image (RGB)."""
    y, x = record["crop"][:2]
    t = record["tile"]
    y0, x0, y1, x1 = record["window"]
    window = image[y0:y1, x0:x1]
    blurred = apply_blur(window, spec_from_dict(record["blur"]))
    oy, ox = y - y0, x - x0
    sharp_tile = window[oy : oy + t, ox : ox + t]
    blur_tile = blurred[oy : oy + t, ox : ox + t]
    mask = rasterize([[tuple(p) for p in poly] for poly in record["polygons"]], t, t)
    tile = composite(sharp_tile, blur_tile, soft_alpha(mask, record["feather"]))
    if record["degrade"] is not None:
        tile = degrade(tile, DegradeSpec.model_validate(record["degrade"]))
    return tile, mask


def draw_sample(
    index: int, sources: list[Path], root: Path, config: DatasetConfig
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Draw and render sample ``index``: (manifest record, RGB tile, boolean mask)."""
    rng = np.random.default_rng([config.seed, index])
    path, (y, x) = _draw_tile(sources, config, rng)
    image = _load_rgb(str(path))
    h, w = image.shape[:2]
    t, c = config.tile, config.context
    method = config.methods[int(rng.integers(len(config.methods)))]
    spec = get_kind(method).sampler.build(**config.ranges.get(method, {})).sample(rng)
    polygons = config.masks.sample(rng, t, t)
    post = config.degrade.sample(rng)
    record = {
        "id": f"{index:06d}",
        "source": path.relative_to(root).as_posix(),
        "crop": [y, x, t, t],
        "tile": t,
        "window": [max(0, y - c), max(0, x - c), min(h, y + t + c), min(w, x + t + c)],
        "method": method,
        "blur": spec.model_dump(),
        "polygons": [[list(p) for p in poly] for poly in polygons],
        "feather": config.masks.feather,
        "degrade": post.model_dump() if post is not None else None,
    }
    tile, mask = render(record, image)
    record["blurred_fraction"] = round(float(mask.mean()), 6)
    return record, tile, mask


def build_dataset(
    sharp_dir: Path,
    out_dir: Path,
    config: DatasetConfig,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write ``images/``, ``masks/``, ``manifest.jsonl`` and ``config.json`` into ``out_dir``.

    The folder is built under a temporary name and renamed when complete.

    Args:
        sharp_dir: folder of sharp tiles or images (searched recursively).
        out_dir: output folder (must not exist or be empty unless ``overwrite``).
        config: the dataset definition.
        overwrite: replace a non-empty ``out_dir``.
        progress: called with 1 after each sample.

    Raises:
        InputError: no usable image in ``sharp_dir``.
    """
    sharp_dir = Path(sharp_dir)
    sources = _usable_sources(sharp_dir, config.tile)
    with atomic_dir(Path(out_dir), overwrite=overwrite) as tmp:
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


def _usable_sources(sharp_dir: Path, tile: int) -> list[Path]:
    if not sharp_dir.is_dir():
        raise InputError(f"Sharp-image folder {sharp_dir} does not exist.")
    folders = [sharp_dir, *sorted(p for p in sharp_dir.rglob("*") if p.is_dir())]
    files = [f for d in folders for f in _images_or_empty(d)]
    if not files:
        raise InputError(f"Folder {sharp_dir} holds no image.")
    usable = [f for f in files if min(_load_rgb(str(f)).shape[:2]) >= tile]
    if not usable:
        raise InputError(f"No image in {sharp_dir} is at least {tile} x {tile} px; lower --tile.")
    return usable


def _images_or_empty(folder: Path) -> list[Path]:
    try:
        return list_images(folder)
    except InputError:
        return []


def iter_manifest(dataset_dir: Path) -> Iterator[dict[str, Any]]:
    """Records of a dataset's ``manifest.jsonl``."""
    return iter_jsonl(Path(dataset_dir), "histoblur dataset")


def regenerate(record: dict[str, Any], sharp_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Re-render one manifest record from the sharp source folder: (tile, boolean mask)."""
    return render(record, _load_rgb(str(Path(sharp_dir) / record["source"])))
