"""Training batches for blur segmentation: synthesized on the fly, or read from built datasets.

Batch ``b`` is a pure function of ``(seed, b)``: sample ``i = b * batch_size + j`` is drawn with the
dataset builder's own generator ``default_rng([seed, i])`` (new blur kind, strength, polygons,
position and degradation every time) and augmented with ``default_rng([seed, i, 2])``. Training is
therefore reproducible, resumes at any step, and gives the same batches with any number of
loader workers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
import torch
from pydantic import AfterValidator
from torch.utils.data import IterableDataset

from histoblur.errors import InputError
from histoblur.io.images import list_images, read_image, read_mask, to_float
from histoblur.synthesis.dataset import DatasetConfig, draw_sample, load_rgb, usable_sources
from histoblur.training.augment import AugmentConfig, augment_pair
from histoblur.training.loop import worker_batches


@dataclass(frozen=True)
class BuiltDataset:
    """(image, mask) file pairs of folders written by ``histoblur synth dataset``."""

    pairs: tuple[tuple[Path, Path], ...]

    @classmethod
    def open(cls, folders: tuple[Path, ...]) -> BuiltDataset:
        """Pair ``images/X.png`` with ``masks/X.png`` in each folder.

        Raises:
            InputError: a folder lacks ``images/`` or ``masks/``, or a mask is missing.
        """
        pairs = []
        for folder in folders:
            images = list_images(Path(folder) / "images")
            for image in images:
                mask = Path(folder) / "masks" / f"{image.stem}.png"
                if not mask.is_file():
                    raise InputError(f"Dataset {folder} has no mask for {image.name}.")
                pairs.append((image, mask))
        return cls(tuple(pairs))


def random_crop(
    image: np.ndarray, mask: np.ndarray, tile: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A ``tile`` x ``tile`` crop at a random position (reflect-padded when smaller)."""
    h, w = mask.shape
    if h < tile or w < tile:
        ph, pw = max(0, tile - h), max(0, tile - w)
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="reflect")
        mask = np.pad(mask, ((0, ph), (0, pw)), mode="reflect")
        h, w = mask.shape
    y, x = int(rng.integers(0, h - tile + 1)), int(rng.integers(0, w - tile + 1))
    return image[y : y + tile, x : x + tile], mask[y : y + tile, x : x + tile]


HOLDOUT_EVERY = 6  # every sixth sharp source image (sorted) is held out for validation


def holdout_split(sources: list[Path]) -> tuple[list[Path], list[Path]]:
    """(training, held-out) source images: every sixth of the sorted list is held out."""
    ordered = sorted(sources)
    held = ordered[::HOLDOUT_EVERY]
    return [s for s in ordered if s not in held], held


MIN_BOX_SIDE = 32  # least pixels a training box keeps on each side (or the tile, if smaller)


def _ordered_box(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise ValueError(
            "must be [x0, y0, x1, y1], fractions of the image with "
            "0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1"
        )
    return box


TrainBox = Annotated[tuple[float, float, float, float], AfterValidator(_ordered_box)]
"""(x0, y0, x1, y1) as fractions of an image, a non-empty box inside it."""


def box_pixels(
    size: tuple[int, int], box: tuple[float, float, float, float]
) -> tuple[int, int, int, int]:
    """The pixel bounds ``(x0, y0, x1, y1)`` of a fractional box in an image of ``size`` (h, w)."""
    h, w = size
    x0, y0, x1, y1 = box
    return int(x0 * w), int(y0 * h), int(x1 * w), int(y1 * h)


def check_box(paths: Sequence[Path], box: tuple[float, float, float, float], tile: int) -> None:
    """Refuse a training box too small to crop from in an image (or aligned images).

    The box must keep at least ``min(tile, MIN_BOX_SIDE)`` pixels on each side of the
    smallest of ``paths`` (aligned images are cropped together).

    Raises:
        InputError: naming the file(s), the box and the sizes.
    """
    shapes = [load_rgb(str(p)).shape[:2] for p in paths]
    size = (min(s[0] for s in shapes), min(s[1] for s in shapes))
    x0, y0, x1, y1 = box_pixels(size, box)
    need = min(tile, MIN_BOX_SIDE)
    if min(x1 - x0, y1 - y0) < need:
        names = " and ".join(str(p) for p in paths)
        raise InputError(
            f"{names}: train_box {list(box)} covers {x1 - x0} x {y1 - y0} px of the "
            f"{size[1]} x {size[0]} px image; it needs at least {need} x {need} px "
            "(use a larger image or box)."
        )


def check_real(
    paths: Sequence[Path],
    box: tuple[float, float, float, float],
    tile: int,
    what: str = "Real image",
) -> None:
    """Refuse real (aligned) images that are missing or whose training box is too small.

    Raises:
        InputError: ``what`` and the path of a missing file, or as :func:`check_box`.
    """
    for path in paths:
        if not Path(path).is_file():
            raise InputError(f"{what} {path} does not exist.")
    check_box(paths, box, tile)


def window_in_box(
    size: tuple[int, int],
    box: tuple[float, float, float, float],
    tile: int,
    rng: np.random.Generator,
) -> tuple[int, int, int]:
    """A random square window ``(y, x, side)`` inside a box given as fractions of an image.

    Args:
        size: the image's (height, width).
        box: (x0, y0, x1, y1) as fractions of the image.
        tile: wanted side; the window is smaller when the box is (the caller resizes).
        rng: draws y, then x.
    """
    bx0, by0, bx1, by1 = box_pixels(size, box)
    t = min(tile, bx1 - bx0, by1 - by0)
    y = int(rng.integers(by0, by1 - t + 1))
    x = int(rng.integers(bx0, bx1 - t + 1))
    return y, x, t


def crop_in_box(
    path: Path, box: tuple[float, float, float, float], tile: int, rng: np.random.Generator
) -> np.ndarray:
    """A random ``tile`` crop (RGB, the file's dtype) of an image inside ``box`` (fractions).

    A box smaller than ``tile`` gives its largest square, resized up to ``tile``.
    """
    rgb = load_rgb(str(path))
    y, x, t = window_in_box(rgb.shape[:2], box, tile, rng)
    crop = rgb[y : y + t, x : x + t]
    if t < tile:
        crop = cv2.resize(crop, (tile, tile), interpolation=cv2.INTER_LINEAR)
    return crop


class SegmentationBatches(IterableDataset):
    """Endless stream of ``(images (B, 3, t, t), masks (B, 1, t, t))`` float32 batches.

    Args:
        synthesis: how tiles are synthesized (blur kinds, ranges, masks, degradation, tile size).
        augment: augmentation policy.
        batch_size: samples per batch.
        seed: master seed.
        sharp_dir: folder of sharp images for on-the-fly synthesis (None: built datasets only).
        built: pre-built datasets.
        built_share: probability that a sample comes from ``built`` when both are given.
        start: first batch index (for resuming).
    """

    def __init__(
        self,
        synthesis: DatasetConfig,
        augment: AugmentConfig,
        batch_size: int,
        seed: int,
        sharp_dir: Path | None = None,
        built: BuiltDataset | None = None,
        built_share: float = 0.5,
        start: int = 0,
    ) -> None:
        super().__init__()
        if sharp_dir is None and (built is None or not built.pairs):
            raise InputError("Training needs sharp images (sharp_dir) or built datasets.")
        self.synthesis = synthesis.model_copy(update={"seed": seed})
        self.augment = augment
        self.batch_size = batch_size
        self.seed = seed
        self.sharp_dir = Path(sharp_dir) if sharp_dir is not None else None
        self.sources = usable_sources(self.sharp_dir, synthesis.tile) if self.sharp_dir else []
        self.built = built
        share = built_share if self.sources else 1.0
        self.built_share = share if built is not None and built.pairs else 0.0
        self.start = start

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``index``: (3, t, t) float32 image in [0, 1] and (1, t, t) float32 mask."""
        pick = np.random.default_rng([self.seed, index, 3])
        if self.built_share > 0 and pick.random() < self.built_share:
            rng = np.random.default_rng([self.seed, index])
            assert self.built is not None
            image_path, mask_path = self.built.pairs[int(rng.integers(len(self.built.pairs)))]
            tile, mask = random_crop(
                read_image(image_path)[..., :3], read_mask(mask_path), self.synthesis.tile, rng
            )
        else:
            assert self.sharp_dir is not None
            _, tile, mask = draw_sample(index, self.sources, self.sharp_dir, self.synthesis)
        x = to_float(tile)
        if x.ndim == 2:
            x = np.repeat(x[..., None], 3, axis=2)
        x, m = augment_pair(x, mask, self.augment, np.random.default_rng([self.seed, index, 2]))
        return x.transpose(2, 0, 1), m[None].astype(np.float32)

    def batch(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``b`` as tensors."""
        first = b * self.batch_size
        samples = [self.sample(first + j) for j in range(self.batch_size)]
        images = np.stack([s[0] for s in samples])
        masks = np.stack([s[1] for s in samples])
        return torch.from_numpy(images), torch.from_numpy(masks)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``start, start + 1, ...``; worker ``w`` of ``W`` makes every W-th batch."""
        return worker_batches(self.batch, self.start)
