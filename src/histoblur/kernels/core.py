"""Helpers shared by every kernel generator."""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve


def normalize(kernel: np.ndarray) -> np.ndarray:
    """Clip negatives from round-off and scale to unit sum (float64)."""
    k = np.clip(np.asarray(kernel, dtype=np.float64), 0.0, None)
    total = k.sum()
    if total <= 0:
        raise ValueError("A kernel must have positive mass.")
    return k / total


def centroid_offset(kernel: np.ndarray) -> tuple[float, float]:
    """Centre of mass of a kernel relative to its central pixel, as (dy, dx) in pixels."""
    k = np.asarray(kernel, dtype=np.float64)
    h, w = k.shape
    ys, xs = np.mgrid[0:h, 0:w]
    total = k.sum()
    return (
        float((k * ys).sum() / total - (h - 1) / 2),
        float((k * xs).sum() / total - (w - 1) / 2),
    )


def combine(*kernels: np.ndarray) -> np.ndarray:
    """Convolve kernels into one (the PSF of applying them in sequence)."""
    out = np.ones((1, 1))
    for k in kernels:
        out = fftconvolve(out, k, mode="full")
    return normalize(out)


def supersample_grid(half: int, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel sample coordinates for a (2*half+1)^2 kernel, ``factor`` samples per pixel axis."""
    n = 2 * half + 1
    c = (np.arange(n * factor) + 0.5) / factor - n / 2
    return np.meshgrid(c, c, indexing="ij")


def area_average(inside: np.ndarray, half: int, factor: int) -> np.ndarray:
    """Average a supersampled boolean coverage map back to pixel resolution."""
    n = 2 * half + 1
    return inside.reshape(n, factor, n, factor).mean(axis=(1, 3))
