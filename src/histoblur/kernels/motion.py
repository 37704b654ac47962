"""Linear motion blur: a uniform line segment, sub-pixel accurate, centred on the kernel."""

from __future__ import annotations

import math

import numpy as np

from histoblur.kernels.core import normalize


def motion_kernel(length: float, angle: float, samples_per_px: int = 16) -> np.ndarray:
    """Uniform line PSF of ``length`` pixels at ``angle`` degrees (0 = horizontal, CCW).

    The segment runs from ``-length/2`` to ``+length/2`` through the kernel centre and is drawn by
    bilinear splatting of points placed symmetrically about the centre, so the centre of mass is
    exactly the central pixel: the blur never shifts the image.

    Args:
        length: extent of the motion in pixels (> 0; 1 is the identity).
        angle: direction in degrees, counter-clockwise from the +x axis (image y points down).
        samples_per_px: points per pixel of length used for the splat.
    """
    if not length > 0:
        raise ValueError(f"Motion length must be positive, got {length}.")
    if length <= 1.0:
        return np.ones((1, 1))
    theta = math.radians(angle)
    dx, dy = math.cos(theta), -math.sin(theta)
    half_extent = (length - 1) / 2  # a segment of n pixels spans n-1 between its end centres
    half = int(math.ceil(half_extent)) + 1
    n = 2 * half + 1
    count = max(2, int(math.ceil(length * samples_per_px)))
    t = np.linspace(-half_extent, half_extent, count)
    x, y = half + t * dx, half + t * dy
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    k = np.zeros((n, n))
    np.add.at(k, (y0, x0), (1 - fx) * (1 - fy))
    np.add.at(k, (y0, x0 + 1), fx * (1 - fy))
    np.add.at(k, (y0 + 1, x0), (1 - fx) * fy)
    np.add.at(k, (y0 + 1, x0 + 1), fx * fy)
    return normalize(_trim(k))


def _trim(k: np.ndarray) -> np.ndarray:
    """Drop all-zero border rings while keeping the kernel square, odd and centred."""
    while k.shape[0] > 1 and not (k[0].any() or k[-1].any() or k[:, 0].any() or k[:, -1].any()):
        k = k[1:-1, 1:-1]
    return k
