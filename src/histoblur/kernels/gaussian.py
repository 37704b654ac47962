"""Gaussian PSF: the most common model of isotropic defocus."""

from __future__ import annotations

import math

import numpy as np


def gaussian_radius(sigma: float, truncate: float = 4.0) -> int:
    """Half-size of a Gaussian kernel truncated at ``truncate`` standard deviations.

    >>> gaussian_radius(2.0), gaussian_radius(0.1)
    (8, 1)
    """
    return max(1, int(math.ceil(truncate * sigma)))


def gaussian_kernel_1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Sampled, normalised 1-D Gaussian of odd length ``2*ceil(truncate*sigma)+1``.

    Args:
        sigma: standard deviation in pixels (> 0).
        truncate: half-width in standard deviations.

    Raises:
        ValueError: a sigma that is not positive.

    Examples:
        >>> k = gaussian_kernel_1d(1.0)
        >>> k.shape, k.dtype, round(float(k.sum()), 6), int(k.argmax())
        ((9,), dtype('float64'), 1.0, 4)
        >>> gaussian_kernel_1d(1.0, truncate=2.0).shape
        (5,)
    """
    if not sigma > 0:
        raise ValueError(f"Gaussian sigma must be positive, got {sigma}.")
    r = gaussian_radius(sigma, truncate)
    x = np.arange(-r, r + 1, dtype=np.float64)
    with np.errstate(over="ignore"):  # a tiny sigma: the side taps underflow to 0
        k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Isotropic 2-D Gaussian kernel, the outer product of :func:`gaussian_kernel_1d`.

    Examples:
        >>> k = gaussian_kernel(1.5)
        >>> k.shape, round(float(k.sum()), 6), bool((k == k.T).all())
        ((13, 13), 1.0, True)
        >>> bool(k[6, 6] == k.max())  # peak at the centre
        True
    """
    k = gaussian_kernel_1d(sigma, truncate)
    return np.outer(k, k)
