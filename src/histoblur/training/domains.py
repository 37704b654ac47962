"""The two domains of learned blur synthesis: sharp tissue and real blurred tissue, unpaired.

The GAN and UNIT-DDPM trainers share this: a :class:`DomainConfig` names a folder of sharp
images, real blurred images and aligned pairs, each real image trained on inside its
``train_box`` only; :class:`DomainBatches` streams crops of both domains; the pairs' held-out
rows (below the training box) measure how close a generator's blur is to the real one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import IterableDataset

from histoblur.config import Config
from histoblur.errors import InputError
from histoblur.io.images import to_float
from histoblur.metrics.full_reference import focal_frequency_loss, psnr, ssim
from histoblur.synthesis.dataset import load_rgb, usable_sources
from histoblur.training.data import TrainBox, check_box, crop_in_box
from histoblur.training.deblur import RealPair, real_pair_crop
from histoblur.training.loop import MAX_BATCH, loss_means, worker_batches
from histoblur.training.runs import RunFolder
from histoblur.wsi.tissue import tissue_fraction

Box = tuple[float, float, float, float]
FULL: Box = (0.0, 0.0, 1.0, 1.0)


class BlurredImage(Config):
    """A real blurred image; only crops inside ``train_box`` (fractions) are trained on."""

    path: Path
    train_box: TrainBox = (0.0, 0.0, 1.0, 0.5)


class DomainConfig(Config):
    """The data of a learned-synthesis run (the trainers' configs extend it).

    Attributes:
        sharp_dir: the sharp domain (searched recursively).
        blurred: real blurred images (the blurred domain).
        pairs: aligned (sharp, blurred) pairs: their blurred side joins the blurred domain and
            the rows below their training box validate.
        tile, batch_size: crop side and crops per domain per step.
        min_tissue: least tissue share of a sharp crop.
        seed: master seed.
    """

    sharp_dir: Path | None = None
    blurred: tuple[BlurredImage, ...] = ()
    pairs: tuple[RealPair, ...] = ()
    tile: int = Field(128, ge=32, le=1024)
    batch_size: int = Field(8, ge=1, le=MAX_BATCH)
    min_tissue: float = Field(0.3, ge=0, le=1)
    seed: int = Field(0, ge=0)


def domain_sources(config: DomainConfig) -> list[Path]:
    """The usable sharp sources, after checking that every named file exists.

    Raises:
        InputError: no sharp folder, no blurred data, a missing file, a training box too
            small to crop from (:func:`~histoblur.training.data.check_box`) or no usable
            source.
    """
    if config.sharp_dir is None:
        raise InputError("Set sharp_dir (the sharp domain) in the config.")
    if not config.blurred and not config.pairs:
        raise InputError("Give real blurred images (blurred) or aligned pairs (pairs).")
    named = [b.path for b in config.blurred] + [
        q for p in config.pairs for q in (p.sharp, p.blurred)
    ]
    for path in named:
        if not Path(path).is_file():
            raise InputError(f"Real image {path} does not exist.")
    for image in config.blurred:
        check_box((image.path,), image.train_box, config.tile)
    for pair in config.pairs:
        check_box((pair.sharp, pair.blurred), pair.train_box, config.tile)
    sources = usable_sources(Path(config.sharp_dir), config.tile)
    if not sources:
        raise InputError(f"{config.sharp_dir} has no image of at least {config.tile} px.")
    return sources


def sharp_crop(
    sources: list[Path], tile: int, min_tissue: float, rng: np.random.Generator
) -> np.ndarray:
    """A ``tile`` crop of a random sharp source with at least ``min_tissue`` tissue (RGB)."""
    for _ in range(20):
        path = sources[int(rng.integers(len(sources)))]
        crop = crop_in_box(path, FULL, tile, rng)
        if tissue_fraction(crop) >= min_tissue:
            break
    return crop


class DomainBatches(IterableDataset):
    """Batches ``(sharp, blurred, pair_sharp, pair_blurred)`` of (B, 3, t, t) float32 tensors.

    ``blurred`` mixes the ``blurred`` images and the blurred side of the pairs; the pair tensors
    are aligned crops of the pairs' training regions (empty unless ``paired``). Batch ``b`` uses
    the generator ``[seed, b]``; iteration starts at batch ``start`` (for resuming).
    """

    def __init__(
        self, config: DomainConfig, sources: list[Path], paired: bool = False, start: int = 0
    ) -> None:
        super().__init__()
        self.config, self.sources, self.paired, self.start = config, sources, paired, start
        self.domain = [(b.path, b.train_box) for b in config.blurred]
        self.domain += [(p.blurred, p.train_box) for p in config.pairs]

    def batch(self, b: int) -> tuple[torch.Tensor, ...]:
        """Batch ``b``."""
        c, rng = self.config, np.random.default_rng([self.config.seed, b])
        sharp = [
            to_float(sharp_crop(self.sources, c.tile, c.min_tissue, rng))
            for _ in range(c.batch_size)
        ]
        blurred = []
        for _ in range(c.batch_size):
            path, box = self.domain[int(rng.integers(len(self.domain)))]
            blurred.append(to_float(flip(crop_in_box(path, box, c.tile, rng), rng)))
        pairs = [real_pair_crop(p, c.tile, rng) for p in self._pick_pairs(rng)]
        return (
            stack(sharp),
            stack(blurred),
            stack([p[1] for p in pairs], c.tile),
            stack([p[0] for p in pairs], c.tile),
        )

    def _pick_pairs(self, rng: np.random.Generator) -> list[RealPair]:
        if not self.config.pairs or not self.paired:
            return []
        pairs = self.config.pairs
        return [pairs[int(rng.integers(len(pairs)))] for _ in range(self.config.batch_size)]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        return worker_batches(self.batch, self.start)


def flip(tile: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random rotation by a multiple of 90 degrees."""
    return np.ascontiguousarray(np.rot90(tile, int(rng.integers(4))))


def stack(tiles: list[np.ndarray], tile: int = 0) -> torch.Tensor:
    """(H, W, 3) float tiles as one (B, 3, H, W) tensor (an empty batch when none)."""
    if not tiles:
        return torch.zeros((0, 3, tile, tile))
    return torch.from_numpy(np.stack(tiles).transpose(0, 3, 1, 2).copy())


def validation_pairs(pairs: tuple[RealPair, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(sharp, blurred) float images of each pair below its training box (empty when none)."""
    out = []
    for pair in pairs:
        sharp, blurred = load_rgb(str(pair.sharp)), load_rgb(str(pair.blurred))
        h = min(sharp.shape[0], blurred.shape[0])
        w = min(sharp.shape[1], blurred.shape[1])
        y0 = int(pair.train_box[3] * h)
        if h - y0 >= 32:
            out.append((to_float(sharp[y0:h, :w]), to_float(blurred[y0:h, :w])))
    return out


def realism(
    blur: Callable[[np.ndarray], np.ndarray], pairs: list[tuple[np.ndarray, np.ndarray]]
) -> dict[str, float]:
    """Mean PSNR / SSIM / FFL of ``blur(sharp)`` against the real blurred side of each pair.

    No pairs, no scores (an empty dict).
    """
    if not pairs:
        return {}
    rows = []
    for sharp, blurred in pairs:
        fake = blur(sharp)
        rows.append((psnr(blurred, fake), ssim(blurred, fake), focal_frequency_loss(blurred, fake)))
    m = np.mean(rows, axis=0)
    return {"val_psnr": float(m[0]), "val_ssim": float(m[1]), "val_ffl": float(m[2])}


def history_row(
    run: RunFolder,
    losses: list[dict[str, float]],
    base: dict[str, float],
    scores: dict[str, float],
) -> dict[str, Any]:
    """The epoch's ``history.csv`` row: mean losses, validation scores (sharp input, model).

    ``losses`` holds each step's (:func:`~histoblur.training.loop.train_updates`).
    """
    columns = {
        **{k: round(v, 5) for k, v in loss_means(losses).items()},
        **{f"{k}_sharp": round(v, 4) for k, v in base.items()},
        **{k: round(v, 4) for k, v in scores.items()},
    }
    return run.row(**columns)
