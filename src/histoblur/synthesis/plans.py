"""Execution plans: what a blur kind asks the numpy or torch executor to do.

Every statistical blur kind reduces to one of three plans, so each executor implements three
operations and every kind runs on both CPU arrays and (GPU) tensors. Learned kinds (a trained
generator) reduce to a :class:`NetworkPlan`, which the numpy executor hands to
:func:`histoblur.synthesis.learned.run_network`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KernelPlan:
    """Convolve with one spatially invariant PSF.

    Attributes:
        kernel: normalised 2-D PSF, odd size, centred.
        separable: optional (column, row) 1-D factors with ``outer(col, row) == kernel``.
    """

    kernel: np.ndarray
    separable: tuple[np.ndarray, np.ndarray] | None = None


@dataclass(frozen=True)
class LevelsPlan:
    """Spatially variant blur: a few PSFs blended per pixel.

    Attributes:
        kernels: K PSFs of increasing strength (the first may be the 1x1 identity).
        index: float32 (H, W) map in [0, K-1]; pixel p takes the linear blend of levels
            ``floor(index[p])`` and ``ceil(index[p])``.
    """

    kernels: tuple[np.ndarray, ...]
    index: np.ndarray


@dataclass(frozen=True)
class WarpPlan:
    """Average of the image resampled at several warped coordinate grids (zoom, spin blur).

    Attributes:
        grids: T pairs (map_x, map_y) of float32 (H, W) source coordinates, averaged uniformly.
    """

    grids: tuple[tuple[np.ndarray, np.ndarray], ...]


@dataclass(frozen=True)
class NetworkPlan:
    """Run a trained blur network.

    Attributes:
        runner: which learned kind runs it (``gan``, ``unit-ddpm``).
        model: ``default`` or a checkpoint folder.
        seed: seed of the network's noise (the same seed replays the same blur).
        options: the kind's other settings as (name, value) pairs.
    """

    runner: str
    model: str
    seed: int
    options: tuple[tuple[str, float], ...] = ()


BlurPlan = KernelPlan | LevelsPlan | WarpPlan | NetworkPlan


def level_weights(index: np.ndarray, levels: int) -> list[np.ndarray]:
    """Per-level blend weights (each (H, W) float32) for a fractional level index map."""
    idx = np.clip(index, 0, levels - 1).astype(np.float32)
    low = np.floor(idx)
    frac = idx - low
    weights = []
    for k in range(levels):
        w = np.where(low == k, 1 - frac, 0) + np.where(low + 1 == k, frac, 0)
        weights.append(w.astype(np.float32))
    return weights
