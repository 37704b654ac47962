"""Helpers shared by every kernel generator."""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def normalize(kernel: np.ndarray) -> np.ndarray:
    """Clip negatives from round-off and scale to unit sum (float64).

    Raises:
        ValueError: a kernel without positive mass.

    Examples:
        >>> normalize(np.array([[1.0, 3.0], [-1e-17, 4.0]]))
        array([[0.125, 0.375],
               [0.   , 0.5  ]])
    """
    k = np.clip(np.asarray(kernel, dtype=np.float64), 0.0, None)
    total = k.sum()
    if total <= 0:
        raise ValueError("A kernel must have positive mass.")
    return k / total


def centroid_offset(kernel: np.ndarray) -> tuple[float, float]:
    """Centre of mass of a kernel relative to its central pixel, as (dy, dx) in pixels.

    A PSF with a non-zero offset shifts the image it blurs.

    Examples:
        >>> centroid_offset(np.array([[0.0, 0.0, 1.0]]))
        (0.0, 1.0)
        >>> from histoblur.kernels import motion_kernel
        >>> [round(v, 6) + 0.0 for v in centroid_offset(motion_kernel(10, 30))]
        [0.0, 0.0]
    """
    k = np.asarray(kernel, dtype=np.float64)
    h, w = k.shape
    ys, xs = np.mgrid[0:h, 0:w]
    total = k.sum()
    return (
        float((k * ys).sum() / total - (h - 1) / 2),
        float((k * xs).sum() / total - (w - 1) / 2),
    )


def combine(*kernels: np.ndarray) -> np.ndarray:
    """Convolve kernels into one (the PSF of applying them in sequence).

    The result's side is the sum of the sides minus one per extra kernel, and it sums to 1.

    Examples:
        >>> from histoblur.kernels import disk_kernel, motion_kernel
        >>> k = combine(disk_kernel(2.0), motion_kernel(7, 0))
        >>> k.shape, round(float(k.sum()), 6)
        ((11, 11), 1.0)
    """
    from scipy.signal import fftconvolve  # here: importing scipy.signal takes ~0.7 s

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


# A kernel is exactly separable when its second singular value is below this fraction of the first
# (float32 round-off is about 6e-8).
RANK_ONE_TOL = 1e-7


@lru_cache(maxsize=64)
def _rank_one(kernel_bytes: bytes, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
    kernel = np.frombuffer(kernel_bytes, dtype=np.float64).reshape(shape)
    if shape[1] == 1:
        return kernel[:, 0].copy(), np.ones(1)
    if shape[0] == 1:
        return np.ones(1), kernel[0].copy()
    u, s, vt = np.linalg.svd(kernel)
    if s[1] > RANK_ONE_TOL * s[0]:
        return None
    sign = 1.0 if u[:, 0].sum() >= 0 else -1.0
    root = np.sqrt(s[0])
    return sign * u[:, 0] * root, sign * vt[0] * root


def separable_factors(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(column, row) factors of a kernel that is exactly an outer product, else None (cached).

    Examples:
        >>> from histoblur.kernels import disk_kernel, gaussian_kernel
        >>> col, row = separable_factors(gaussian_kernel(1.0))
        >>> col.shape, row.shape, bool(np.allclose(np.outer(col, row), gaussian_kernel(1.0)))
        ((9,), (9,), True)
        >>> separable_factors(disk_kernel(3.0)) is None
        True
    """
    k = np.ascontiguousarray(kernel, dtype=np.float64)
    return _rank_one(k.tobytes(), k.shape)


def trim_zeros_1d(f: np.ndarray) -> np.ndarray:
    """Drop zero taps from both ends of an odd, centred 1-D factor, keeping it centred."""
    peak = np.abs(f).max()
    while f.size > 1 and abs(f[0]) <= 1e-12 * peak and abs(f[-1]) <= 1e-12 * peak:
        f = f[1:-1]
    return f
