"""Real focal stacks as training and test data for the focal-axis autoencoder.

A :class:`FocalStackConfig` names the planes of one field (a folder, a glob and a regular
expression that reads each plane's focal position from its file name). :func:`load_stack`
registers the planes to the reference plane (whole-pixel shifts by phase correlation, then a
crop to the region all planes share; nothing is resampled) and orders them along focal
**axes**: from the in-focus plane outwards on each side, or, for a sweep with no single focus
(focus varies across the frame), in acquisition order.

Triplets follow section 4.1 of the latent-interpolation paper: on the first ``2**k + 1`` planes
of an axis, the ends and the midpoint, then recursively each half (planes 0..8 give (0, 4, 8),
(0, 2, 4), (4, 6, 8), (0, 1, 2), ...); a longer axis adds the same pattern on its last
``2**k + 1`` planes. Each triplet's ``alpha`` is where its middle plane lies
between its ends by focal position: 0.5 for equally spaced planes, the paper's setting.

The right ``test_fraction`` of every plane is held out: training crops come from the left
part only, test crops tile the right part.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import Field, field_validator
from torch.utils.data import IterableDataset

from histoblur.config import Config
from histoblur.errors import InputError
from histoblur.synthesis.dataset import load_rgb
from histoblur.synthesis.register import register_planes
from histoblur.training.loop import worker_batches

MIN_TEST_STD = 4.0  # grey levels (of 255)


class FocalStackConfig(Config):
    """One focal stack on disk.

    Attributes:
        name: label in reports.
        folder, glob: the planes.
        position: regular expression whose first group is a plane's focal position.
        focus: the in-focus position (axes run outwards from it on both sides), or None for a
            sweep whose focus varies across the frame (one axis in position order).
        exclude: file names to leave out.
        test_fraction: share of columns (the right side) held out for testing.
    """

    name: str
    folder: Path
    glob: str = "*.png"
    position: str = r"([+-]?\d+(?:\.\d+)?)"
    focus: float | None = 0.0
    exclude: tuple[str, ...] = ()
    test_fraction: float = Field(0.25, ge=0.05, le=0.9)

    @field_validator("position")
    @classmethod
    def _one_group(cls, position: str) -> str:
        try:
            groups = re.compile(position).groups
        except re.error as exc:
            raise ValueError(f"{position!r} is not a regular expression ({exc})") from exc
        if groups < 1:
            raise ValueError(
                f"{position!r} has no group; put the focal position in parentheses, "
                r"e.g. 'plane_([+-]?\d+)'"
            )
        return position


@dataclass(frozen=True)
class Triplet:
    """Indices (into the stack's planes) of a sharper, middle and blurrier plane."""

    sharp: int
    middle: int
    blurry: int
    alpha: float


@dataclass
class FocalStack:
    """Registered planes (uint8 RGB, one size) with their positions and focal axes."""

    name: str
    planes: list[np.ndarray]
    positions: list[float]
    axes: list[list[int]]
    test_x: int  # first held-out column

    def distance(self, index: int, axis: list[int]) -> float:
        """Focal distance of a plane from the start of ``axis``."""
        return abs(self.positions[index] - self.positions[axis[0]])

    def triplets(self) -> list[Triplet]:
        """The paper's dyadic triplets on every axis (its first and last ``2**k + 1`` planes)."""
        out: list[Triplet] = []
        for axis in self.axes:
            span = 2 ** int(np.log2(max(len(axis) - 1, 1)))
            for offset in sorted({0, len(axis) - 1 - span}):
                for a, m, b in dyadic_triplets(span):
                    ia, im, ib = (axis[offset + i] for i in (a, m, b))
                    d_a, d_m, d_b = (self.distance(i, axis) for i in (ia, im, ib))
                    triplet = Triplet(ia, im, ib, (d_m - d_a) / (d_b - d_a))
                    if triplet not in out:
                        out.append(triplet)
        return out


def dyadic_triplets(span: int) -> list[tuple[int, int, int]]:
    """(start, middle, end) over ``0..span`` and recursively its halves, widest first."""
    out, level = [], [(0, span)]
    while level:
        nxt = []
        for a, b in level:
            if b - a >= 2:
                m = (a + b) // 2
                out.append((a, m, b))
                nxt += [(a, m), (m, b)]
        level = nxt
    return out


def stack_files(config: FocalStackConfig) -> list[tuple[float, Path]]:
    """(position, path) of every plane, in position order.

    Raises:
        InputError: missing folder, fewer than three planes, or a name without a position.
    """
    if not config.folder.is_dir():
        raise InputError(f"Focal stack folder {config.folder} does not exist.")
    pattern = re.compile(config.position)
    found = []
    for path in sorted(config.folder.glob(config.glob)):
        if path.name in config.exclude:
            continue
        match = pattern.search(path.name)
        if match is None:
            raise InputError(f"{path.name}: no focal position matches {config.position!r}.")
        try:
            position = float(match.group(1))
        except (TypeError, ValueError):
            raise InputError(
                f"{path.name}: the first group of {config.position!r} matches "
                f"{match.group(1)!r}, which is not a number."
            ) from None
        found.append((position, path))
    if len(found) < 3:
        raise InputError(f"Focal stack {config.name} needs at least 3 planes, found {len(found)}.")
    return sorted(found, key=lambda item: item[0])


def load_stack(config: FocalStackConfig) -> FocalStack:
    """Read, register and order one focal stack.

    Raises:
        InputError: see :func:`stack_files`; no plane at ``focus``.
    """
    files = stack_files(config)
    positions = [p for p, _ in files]
    if config.focus is None:
        reference = 0
        axes = [list(range(len(files)))]
    else:
        reference = int(np.argmin([abs(p - config.focus) for p in positions]))
        above = [i for i, p in enumerate(positions) if p > positions[reference]]
        below = [i for i, p in enumerate(positions) if p < positions[reference]][::-1]
        axes = [[reference, *side] for side in (above, below) if len(side) >= 2]
        if not axes:
            raise InputError(f"Focal stack {config.name}: fewer than 2 planes on either side.")
    planes = register_planes([load_rgb(str(path)) for _, path in files], reference)
    test_x = int(round(planes[0].shape[1] * (1 - config.test_fraction)))
    return FocalStack(config.name, planes, positions, axes, test_x)


def paper_boxes(height: int, width: int, tile: int) -> list[tuple[int, int]]:
    """Top-left corners of the paper's crops: four corners and the centre."""
    ys, xs = (0, height - tile), (0, width - tile)
    return [(y, x) for y in ys for x in xs] + [((height - tile) // 2, (width - tile) // 2)]


def test_boxes(stack: FocalStack, tile: int, limit: int) -> list[tuple[int, int]]:
    """Non-overlapping crops of the held-out columns, evenly thinned to at most ``limit``.

    Featureless crops (grey-level standard deviation under ``MIN_TEST_STD`` in every plane:
    empty background, saturated glare) are skipped: all planes are equal there.
    """
    h, w = stack.planes[0].shape[:2]
    if w - stack.test_x < tile or h < tile:
        raise InputError(f"Focal stack {stack.name}: held-out part is narrower than {tile} px.")
    boxes = [
        (y, x)
        for y in range(0, h - tile + 1, tile)
        for x in range(stack.test_x, w - tile + 1, tile)
        if max(float(p[y : y + tile, x : x + tile].std()) for p in stack.planes) >= MIN_TEST_STD
    ]
    if not boxes:
        raise InputError(f"Focal stack {stack.name}: the held-out part has no textured crop.")
    keep = np.linspace(0, len(boxes) - 1, min(limit, len(boxes))).round().astype(int)
    return [boxes[i] for i in sorted(set(keep))]


def to_tensor(tiles: list[np.ndarray]) -> torch.Tensor:
    """uint8 (H, W, 3) tiles to a float (N, 3, H, W) batch in [0, 1]."""
    return torch.from_numpy(np.stack(tiles).transpose(0, 3, 1, 2).astype(np.float32) / 255.0)


class TripletBatches(IterableDataset):
    """Endless batches ``(sharper, middle, blurrier, alpha)`` of aligned training crops.

    Half the crops are the paper's five fixed crops of the training part (mirrored at random),
    half are random crops; each crop is flipped and rotated the same way on all three planes.
    Batch ``b`` is drawn with the generator ``[seed, b]``: the stream is the same with any number
    of loader workers and resumes at any batch (``start``).
    """

    def __init__(
        self,
        stacks: list[FocalStack],
        tile: int,
        batch_size: int,
        seed: int,
        fixed_share: float,
        start: int = 0,
    ) -> None:
        self.items = [(s, t) for s in stacks for t in s.triplets()]
        if not self.items:
            raise InputError("The focal stacks give no triplets.")
        for stack in stacks:
            if stack.test_x < tile or stack.planes[0].shape[0] < tile:
                raise InputError(f"Focal stack {stack.name}: training part is under {tile} px.")
        self.stacks = stacks
        self.tile, self.batch_size, self.seed = tile, batch_size, seed
        self.fixed_share, self.start = fixed_share, start

    def starting_at(self, start: int) -> TripletBatches:
        """The same stream from batch ``start`` on."""
        return TripletBatches(
            self.stacks, self.tile, self.batch_size, self.seed, self.fixed_share, start
        )

    def crop(self, rng: np.random.Generator) -> tuple[list[np.ndarray], float]:
        """One triplet of aligned crops and its alpha."""
        stack, triplet = self.items[int(rng.integers(len(self.items)))]
        h, t = stack.planes[0].shape[0], self.tile
        if rng.random() < self.fixed_share:
            boxes = paper_boxes(h, stack.test_x, t)
            y, x = boxes[int(rng.integers(len(boxes)))]
        else:
            y, x = int(rng.integers(h - t + 1)), int(rng.integers(stack.test_x - t + 1))
        k, flip = int(rng.integers(4)), bool(rng.random() < 0.5)
        tiles = []
        for index in (triplet.sharp, triplet.middle, triplet.blurry):
            tile = np.rot90(stack.planes[index][y : y + t, x : x + t], k)
            tiles.append(np.ascontiguousarray(tile[:, ::-1] if flip else tile))
        return tiles, triplet.alpha

    def batch(self, b: int) -> tuple[torch.Tensor, ...]:
        """Batch ``b``: ``batch_size`` triplets as float tensors, and their alphas."""
        rng = np.random.default_rng([self.seed, b])
        drawn = [self.crop(rng) for _ in range(self.batch_size)]
        planes = [to_tensor([d[0][j] for d in drawn]) for j in range(3)]
        return (*planes, torch.tensor([d[1] for d in drawn], dtype=torch.float32))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        return worker_batches(self.batch, self.start)
