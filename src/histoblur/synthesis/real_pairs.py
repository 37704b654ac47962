"""Benchmarks of REAL optical blur: in-focus pixels with out-of-focus pixels pasted under masks.

Two images of the same field, one in focus and one out of focus (a re-scan, or two planes of a
focal stack), are aligned (:mod:`histoblur.synthesis.register`). Each sample is a tile of the
aligned pair: inside random polygons it shows the real blurred pixels, outside the real sharp
ones, so the mask is exact pixel ground truth for real defocus. A fraction of the samples is
entirely sharp (empty mask) and a fraction entirely blurred (full mask).

Every sample is drawn from its own generator ``default_rng([seed, index])``; its parameters and
where its pixels came from are written to ``manifest.jsonl``, so :func:`replay` rebuilds it from
the two source images and the same seed always gives byte-identical files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import Field, model_validator

from histoblur import __version__
from histoblur.config import Config
from histoblur.errors import InputError, ParameterError
from histoblur.io.atomic import atomic_dir
from histoblur.io.images import read_image, read_mask, to_gray_float, write_image
from histoblur.io.manifest import iter_jsonl
from histoblur.io.paths import check_output_folder
from histoblur.synthesis.composite import composite
from histoblur.synthesis.masks import PolygonMaskSampler, mask_to_png, rasterize, soft_alpha
from histoblur.synthesis.register import Registration, align_pair

KIND_MIXED = "mixed-region"
KIND_SHARP = "all-sharp"
KIND_BLURRED = "all-blurred"
SAMPLE_KINDS = (KIND_MIXED, KIND_SHARP, KIND_BLURRED)

# A mixed-region sample keeps at least this fraction of its pixels on each side of the mask.
MIN_SIDE_FRACTION = 0.01
MAX_MASK_DRAWS = 100
# Pixels next to the mask edge (either side) are left out of the inside/outside sharpness.
EDGE_MARGIN = 2
# Sharpness is the variance of the Laplacian of the luma, measured at two scales: "raw" on the
# pixels as they are, "sigma1" after a Gaussian of 1 px, which removes pixel noise and JPEG
# texture (the same in both images) and so shows the loss of tissue detail more clearly.
SHARPNESS_SCALES = {"raw": 0.0, "sigma1": 1.0}
RATIO_SCALE = "sigma1"


class RealPairConfig(Config):
    """Everything that defines a real-blur benchmark; defaults live here only.

    Attributes:
        n: number of samples.
        tile: tile side in pixels.
        seed: master seed.
        sharp_fraction: probability that a sample is entirely sharp (empty mask).
        blurred_fraction: probability that a sample is entirely blurred (full mask).
        align: estimate and remove the translation between the two images (``--register``).
        min_sharpness_ratio: keep a tile position only when the ``sigma1`` sharpness (variance
            of the Laplacian after a 1 px Gaussian) of its sharp tile is at least this many
            times that of its blurred tile (0 keeps every position); skips empty background,
            where the two images look alike.
        max_attempts: tile positions drawn per sample before giving up on the ratio.
        masks: random polygon ranges of the mixed-region samples.
    """

    n: int = Field(100, ge=1, le=10_000_000)
    tile: int = Field(256, ge=16, le=8192)
    seed: int = Field(0, ge=0)
    sharp_fraction: float = Field(0.1, ge=0, le=1)
    blurred_fraction: float = Field(0.1, ge=0, le=1)
    align: bool = True
    min_sharpness_ratio: float = Field(0.0, ge=0)
    max_attempts: int = Field(50, ge=1)
    masks: PolygonMaskSampler = PolygonMaskSampler()

    @model_validator(mode="after")
    def _fractions_fit(self) -> RealPairConfig:
        if self.sharp_fraction + self.blurred_fraction > 1:
            raise ValueError("sharp_fraction + blurred_fraction must not exceed 1")
        return self


def laplacian(image: np.ndarray, sigma: float = 0.0) -> np.ndarray:
    """4-neighbour Laplacian of the luma in [0, 1] units (float32, same size; border reflected).

    Args:
        image: the image.
        sigma: Gaussian pre-smoothing in px (0: none).
    """
    gray = to_gray_float(image)
    if sigma > 0:
        gray = cv2.GaussianBlur(gray, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    return cv2.Laplacian(gray, cv2.CV_32F, ksize=1, borderType=cv2.BORDER_REFLECT_101)


def sharpness(image: np.ndarray, sigma: float = 0.0) -> float:
    """Variance of the Laplacian of a whole image (border pixels left out), [0, 1] luma units."""
    lap = laplacian(image, sigma)
    return _round(float(lap[1:-1, 1:-1].var()))


def region_sharpness(
    image: np.ndarray, mask: np.ndarray, sigma: float = 0.0
) -> tuple[float | None, float | None]:
    """Variance of the Laplacian inside and outside ``mask``, away from the mask edge.

    The Laplacian is computed on the whole image; pixels within ``EDGE_MARGIN`` px of the mask
    edge or of the image border are left out, so each value sees one side only.

    Returns:
        ``(inside, outside)``; ``None`` for a side with no pixel left.
    """
    lap = laplacian(image, sigma)
    kernel = np.ones((2 * EDGE_MARGIN + 1, 2 * EDGE_MARGIN + 1), np.uint8)
    m = mask.astype(np.uint8)
    inside = cv2.erode(m, kernel, borderType=cv2.BORDER_REPLICATE).astype(bool)
    outside = cv2.erode(1 - m, kernel, borderType=cv2.BORDER_REPLICATE).astype(bool)
    border = np.zeros(mask.shape, bool)
    border[EDGE_MARGIN:-EDGE_MARGIN, EDGE_MARGIN:-EDGE_MARGIN] = True
    values = []
    for region in (inside & border, outside & border):
        values.append(_round(float(lap[region].var())) if region.any() else None)
    return values[0], values[1]


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def _tile_boxes(registration: Registration, y: int, x: int, t: int) -> tuple[list[int], list[int]]:
    sy, sx = registration.sharp_box[:2]
    by, bx = registration.blurred_box[:2]
    return [sy + y, sx + x, sy + y + t, sx + x + t], [by + y, bx + x, by + y + t, bx + x + t]


def render(
    record: dict[str, Any], sharp: np.ndarray, blurred: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Build (tile, boolean mask) of a manifest record from the two full source images."""
    sy0, sx0, sy1, sx1 = record["sharp_tile_box"]
    by0, bx0, by1, bx1 = record["blurred_tile_box"]
    sharp_tile = sharp[sy0:sy1, sx0:sx1]
    blurred_tile = blurred[by0:by1, bx0:bx1]
    height, width = sharp_tile.shape[:2]
    if sharp_tile.shape != blurred_tile.shape or (height, width) != (record["tile"],) * 2:
        raise InputError(
            f"Sample {record['id']} does not fit these source images; "
            "replay it with the images the benchmark was built from."
        )
    if record["kind"] == KIND_BLURRED:
        mask = np.ones((height, width), bool)
    else:
        polygons = [[(float(p[0]), float(p[1])) for p in poly] for poly in record["polygons"]]
        mask = rasterize(polygons, height, width)
    alpha = soft_alpha(mask, record["feather"]) if record["feather"] > 0 else mask
    return composite(sharp_tile, blurred_tile, alpha), mask


def _draw_kind(rng: np.random.Generator, config: RealPairConfig) -> str:
    u = float(rng.random())
    if u < config.sharp_fraction:
        return KIND_SHARP
    if u < config.sharp_fraction + config.blurred_fraction:
        return KIND_BLURRED
    return KIND_MIXED


def _draw_position(
    rng: np.random.Generator,
    sharp: np.ndarray,
    blurred: np.ndarray,
    config: RealPairConfig,
) -> tuple[int, int]:
    t = config.tile
    height, width = sharp.shape[:2]
    sigma = SHARPNESS_SCALES[RATIO_SCALE]
    for _ in range(config.max_attempts):
        y = int(rng.integers(0, height - t + 1))
        x = int(rng.integers(0, width - t + 1))
        if config.min_sharpness_ratio <= 0:
            return y, x
        vol_sharp = sharpness(sharp[y : y + t, x : x + t], sigma)
        vol_blurred = sharpness(blurred[y : y + t, x : x + t], sigma)
        if vol_sharp >= config.min_sharpness_ratio * vol_blurred:
            return y, x
    raise InputError(
        f"No {t} px tile whose sharp side is {config.min_sharpness_ratio} times sharper than its "
        f"blurred side was found in {config.max_attempts} draws; lower --min-sharpness-ratio."
    )


def _draw_polygons(
    rng: np.random.Generator, config: RealPairConfig
) -> list[list[tuple[float, float]]]:
    t = config.tile
    for _ in range(MAX_MASK_DRAWS):
        polygons = config.masks.sample(rng, t, t)
        fraction = rasterize(polygons, t, t).mean()
        if MIN_SIDE_FRACTION <= fraction <= 1 - MIN_SIDE_FRACTION:
            return polygons
    raise ParameterError(
        f"The mask ranges never gave a mask covering between {MIN_SIDE_FRACTION:.0%} and "
        f"{1 - MIN_SIDE_FRACTION:.0%} of a tile in {MAX_MASK_DRAWS} draws; widen the polygon sizes."
    )


def draw_sample(
    index: int,
    sharp: np.ndarray,
    blurred: np.ndarray,
    registration: Registration,
    names: tuple[str, str],
    config: RealPairConfig,
) -> dict[str, Any]:
    """Draw the manifest record of sample ``index`` (pixels are rendered by :func:`render`).

    Args:
        index: sample number; its generator is ``default_rng([config.seed, index])``.
        sharp: the aligned sharp image (as returned by ``align_pair``).
        blurred: the aligned blurred image.
        registration: where the aligned images lie in the source images.
        names: file names of the sharp and blurred sources, recorded in the manifest.
        config: the benchmark definition.
    """
    rng = np.random.default_rng([config.seed, index])
    kind = _draw_kind(rng, config)
    y, x = _draw_position(rng, sharp, blurred, config)
    polygons = _draw_polygons(rng, config) if kind == KIND_MIXED else []
    t = config.tile
    tiles = (sharp[y : y + t, x : x + t], blurred[y : y + t, x : x + t])
    sharp_box, blurred_box = _tile_boxes(registration, y, x, t)
    return {
        "id": f"{index:06d}",
        "kind": kind,
        "sharp": names[0],
        "blurred": names[1],
        "shift": list(registration.shift),
        "crop": [y, x, t, t],
        "sharp_tile_box": sharp_box,
        "blurred_tile_box": blurred_box,
        "tile": t,
        "polygons": [[list(p) for p in poly] for poly in polygons],
        "feather": config.masks.feather,
        "sharpness": {
            name: {
                "sharp_tile": sharpness(tiles[0], sigma),
                "blurred_tile": sharpness(tiles[1], sigma),
            }
            for name, sigma in SHARPNESS_SCALES.items()
        },
    }


def build_real_pairs(
    sharp_path: Path,
    blurred_path: Path,
    out_dir: Path,
    config: RealPairConfig,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write ``images/``, ``masks/``, ``manifest.jsonl`` and ``summary.json`` into ``out_dir``.

    The folder is built under a temporary name beside ``out_dir`` and renamed when complete;
    an ``out_dir`` that is or holds one of the two images is refused.

    Args:
        sharp_path: the in-focus image.
        blurred_path: the out-of-focus image of the same field.
        out_dir: output folder (must not exist or be empty unless ``overwrite``).
        config: the benchmark definition.
        overwrite: replace a non-empty ``out_dir``.
        progress: called with 1 after each sample.

    Returns:
        The summary (also written to ``summary.json``).

    Raises:
        InputError: unreadable images, different channel counts or bit depths, or an aligned
            overlap smaller than the tile.
        OutputError: ``out_dir`` holds an input, is not empty and ``overwrite`` is false, or
            cannot be written.
    """
    sharp_path, blurred_path = Path(sharp_path), Path(blurred_path)
    check_output_folder(Path(out_dir), (sharp_path, blurred_path), overwrite)  # before work
    sharp_src = read_image(sharp_path)
    blurred_src = read_image(blurred_path)
    sharp, blurred, registration = align_pair(sharp_src, blurred_src, config.align)
    height, width = registration.size
    if min(height, width) < config.tile:
        raise InputError(
            f"The aligned overlap of the two images is {height} x {width} px, smaller than the "
            f"{config.tile} px tile; lower --tile."
        )
    names = (sharp_path.name, blurred_path.name)
    records = []
    with atomic_dir(Path(out_dir), overwrite, (sharp_path, blurred_path)) as tmp:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        with open(tmp / "manifest.jsonl", "w", encoding="utf-8") as manifest:
            for i in range(config.n):
                record = draw_sample(i, sharp, blurred, registration, names, config)
                tile, mask = render(record, sharp_src, blurred_src)
                record["blurred_fraction"] = _round(float(mask.mean()))
                for name, sigma in SHARPNESS_SCALES.items():
                    inside, outside = region_sharpness(tile, mask, sigma)
                    record["sharpness"][name].update(inside=inside, outside=outside)
                write_image(tmp / "images" / f"{record['id']}.png", tile)
                write_image(tmp / "masks" / f"{record['id']}.png", mask_to_png(mask))
                manifest.write(json.dumps(record, sort_keys=True) + "\n")
                records.append(record)
                if progress is not None:
                    progress(1)
        summary = _summary(records, sharp, blurred, registration, config, sharp_path, blurred_path)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def _mean(values: list[float]) -> float | None:
    return _round(float(np.mean(values))) if values else None


def _summary(
    records: list[dict[str, Any]],
    sharp: np.ndarray,
    blurred: np.ndarray,
    registration: Registration,
    config: RealPairConfig,
    sharp_path: Path,
    blurred_path: Path,
) -> dict[str, Any]:
    counts = {kind: sum(r["kind"] == kind for r in records) for kind in SAMPLE_KINDS}
    return {
        "version": __version__,
        "config": config.model_dump(mode="json"),
        "sharp": str(sharp_path.resolve()),
        "blurred": str(blurred_path.resolve()),
        "registration": registration.model_dump(mode="json"),
        "aligned_size": list(registration.size),
        "n": len(records),
        "counts": counts,
        "blurred_fraction_mean": _mean([r["blurred_fraction"] for r in records]),
        "sharpness": {
            "measure": "variance of the 4-neighbour Laplacian of the luma in [0, 1] units; "
            "raw: on the pixels, sigma1: after a 1 px Gaussian",
            **{
                name: _sharpness_summary(records, sharp, blurred, name, sigma)
                for name, sigma in SHARPNESS_SCALES.items()
            },
        },
    }


def _sharpness_summary(
    records: list[dict[str, Any]], sharp: np.ndarray, blurred: np.ndarray, name: str, sigma: float
) -> dict[str, Any]:
    """Sharp versus blurred side at one scale: whole pair, same tile, and inside/outside masks."""
    values = [r["sharpness"][name] for r in records]
    tiles = [(v["sharp_tile"], v["blurred_tile"]) for v in values]
    mixed = [
        (v["outside"], v["inside"])
        for v, r in zip(values, records, strict=True)
        if r["kind"] == KIND_MIXED and v["outside"] and v["inside"]
    ]
    pair_sharp, pair_blurred = sharpness(sharp, sigma), sharpness(blurred, sigma)
    return {
        "pair": {
            "sharp": pair_sharp,
            "blurred": pair_blurred,
            "ratio": _round(pair_sharp / pair_blurred) if pair_blurred > 0 else None,
        },
        "tiles": {
            "sharp_mean": _mean([s for s, _ in tiles]),
            "blurred_mean": _mean([b for _, b in tiles]),
            "sharp_wins": _round(float(np.mean([s > b for s, b in tiles]))),
        },
        "mixed_regions": {
            "n": len(mixed),
            "outside_mean": _mean([o for o, _ in mixed]),
            "inside_mean": _mean([i for _, i in mixed]),
            "ratio_median": _round(float(np.median([o / i for o, i in mixed]))) if mixed else None,
            "outside_wins": _round(float(np.mean([o > i for o, i in mixed]))) if mixed else None,
        },
    }


def read_summary(bench_dir: Path) -> dict[str, Any]:
    """The ``summary.json`` of a real-blur benchmark.

    Raises:
        InputError: if the folder holds no summary.
    """
    path = Path(bench_dir) / "summary.json"
    if not path.is_file():
        raise InputError(f"{bench_dir} has no summary.json; is it a histoblur real-blur benchmark?")
    return json.loads(path.read_text(encoding="utf-8"))


def iter_records(bench_dir: Path) -> Iterator[dict[str, Any]]:
    """Records of a benchmark's ``manifest.jsonl``, in sample order.

    Raises:
        InputError: if the folder holds no manifest.
    """
    return iter_jsonl(Path(bench_dir), "histoblur benchmark")


def iter_benchmark(bench_dir: Path) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, Any]]]:
    """Iterate ``(image, mask, record)`` over a benchmark, in sample order.

    ``image`` is the tile as written, ``mask`` its boolean blur mask (True = real blur) and
    ``record`` its manifest line.

    Raises:
        InputError: if the manifest is missing or a listed file is missing or mismatched.
    """
    bench_dir = Path(bench_dir)
    for record in iter_records(bench_dir):
        image = read_image(bench_dir / "images" / f"{record['id']}.png")
        mask = read_mask(bench_dir / "masks" / f"{record['id']}.png")
        if mask.shape != image.shape[:2]:
            raise InputError(
                f"Mask of sample {record['id']} is {mask.shape}, its image {image.shape[:2]}; "
                "rebuild the benchmark."
            )
        yield image, mask, record


def replay(
    record: dict[str, Any], sharp_path: Path, blurred_path: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Rebuild one sample (tile, boolean mask) from the two source images it was cut from."""
    return render(record, read_image(sharp_path), read_image(blurred_path))
