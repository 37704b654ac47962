"""Linear motion blur: a uniform line segment, sub-pixel accurate, centred on the kernel."""

from __future__ import annotations

import math

import numpy as np

from histoblur.kernels.core import normalize


def motion_kernel(length: float, angle: float, samples_per_px: int = 32) -> np.ndarray:
    """Uniform line PSF of ``length`` pixels at ``angle`` degrees (0 = horizontal, CCW).

    The continuous segment from ``-length/2`` to ``+length/2`` through the kernel centre is
    integrated over pixels (each pixel receives the length of segment that crosses it), as a sensor
    does while the stage moves. Odd integer horizontal or vertical lengths give the classic box
    ``[1, ..., 1] / length``; even and fractional lengths give fractional end pixels (an even
    box cannot be centred). Sample points lie symmetrically about the centre, so the centre of
    mass is exactly the central pixel and the blur never shifts the image.

    Args:
        length: extent of the motion in pixels (> 0; 1 or less is the identity).
        angle: direction in degrees, counter-clockwise from the +x axis (image y points down).
        samples_per_px: integration points per pixel of length.

    Raises:
        ValueError: a length that is not positive.

    Examples:
        >>> k = motion_kernel(5, 0)
        >>> k.shape, k[2].round(3).tolist()  # the middle row holds the whole line
        ((5, 5), [0.2, 0.2, 0.2, 0.2, 0.2])
        >>> motion_kernel(4, 0)[2].round(3).tolist()  # even length: half-weight end pixels
        [0.125, 0.25, 0.25, 0.25, 0.125]
        >>> k = motion_kernel(7, 90)  # vertical
        >>> k.shape, int(np.count_nonzero(k[:, 3]))
        ((7, 7), 7)
        >>> motion_kernel(9, 45).shape  # a diagonal 9 px spans 6.4 px per axis
        (7, 7)
        >>> motion_kernel(1.0, 0)  # 1 px or less is the identity
        array([[1.]])
    """
    if not length > 0:
        raise ValueError(f"Motion length must be positive, got {length}.")
    if length <= 1.0:
        return np.ones((1, 1))
    theta = math.radians(angle)
    dx, dy = math.cos(theta), -math.sin(theta)
    half = int(math.floor(length / 2 + 0.5)) + 1
    count = int(math.ceil(length * samples_per_px))
    t = (np.arange(count) + 0.5) * (length / count) - length / 2
    # Snap round-off so mirrored points land in mirrored pixels (keeps the centroid exact).
    x = np.round(t * dx, 9)
    y = np.round(t * dy, 9)
    cols = np.floor(np.abs(x) + 0.5) * np.sign(x)
    rows = np.floor(np.abs(y) + 0.5) * np.sign(y)
    k = np.zeros((2 * half + 1, 2 * half + 1))
    np.add.at(k, (rows.astype(int) + half, cols.astype(int) + half), 1.0)
    return normalize(_trim(k))


def _trim(k: np.ndarray) -> np.ndarray:
    """Drop all-zero border rings while keeping the kernel square, odd and centred."""
    while k.shape[0] > 1 and not (k[0].any() or k[-1].any() or k[:, 0].any() or k[:, -1].any()):
        k = k[1:-1, 1:-1]
    return k
