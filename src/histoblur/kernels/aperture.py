"""Lens-aperture PSFs: the pillbox disk and the polygonal iris of a real lens.

Both are rendered by area sampling (``factor`` x ``factor`` sub-pixels), which gives an
anti-aliased edge and lets the radius vary continuously.
"""

from __future__ import annotations

import math

import numpy as np

from histoblur.kernels.core import area_average, normalize, supersample_grid

SUPERSAMPLE = 8


def disk_kernel(radius: float, factor: int = SUPERSAMPLE) -> np.ndarray:
    """Uniform disk (pillbox) of the given radius with an anti-aliased edge.

    Args:
        radius: radius in pixels (>= 0); 0 gives the identity kernel.
        factor: sub-pixel samples per axis used for the edge coverage.

    Raises:
        ValueError: a negative radius.

    Examples:
        >>> k = disk_kernel(3.0)
        >>> k.shape, round(float(k.sum()), 6), float(k[0, 0])  # corners lie outside the disk
        ((7, 7), 1.0, 0.0)
        >>> disk_kernel(0.0)  # the identity
        array([[1.]])
        >>> [disk_kernel(r).shape for r in (1.0, 2.5, 6.0)]
        [(3, 3), (5, 5), (13, 13)]
    """
    if radius < 0:
        raise ValueError(f"Disk radius must be >= 0, got {radius}.")
    if radius < 0.5 / factor:
        return np.ones((1, 1))
    half = int(math.ceil(radius - 0.5)) if radius > 0.5 else 1
    half = max(half, 1)
    yy, xx = supersample_grid(half, factor)
    inside = (xx**2 + yy**2) <= radius**2
    return normalize(area_average(inside, half, factor))


def polygon_kernel(
    radius: float, blades: int = 6, rotation: float = 0.0, factor: int = SUPERSAMPLE
) -> np.ndarray:
    """Regular polygonal aperture (an iris of ``blades`` straight blades).

    Args:
        radius: circumradius in pixels (>= 0).
        blades: number of polygon sides (>= 3).
        rotation: rotation of the polygon in degrees.
        factor: sub-pixel samples per axis.

    Raises:
        ValueError: a negative radius or fewer than 3 blades.

    Examples:
        >>> k = polygon_kernel(4.0, blades=5, rotation=18.0)
        >>> k.shape, round(float(k.sum()), 6), bool((k >= 0).all())
        ((9, 9), 1.0, True)
        >>> bool(polygon_kernel(4.0, blades=6).sum() > 0)
        True
    """
    if radius < 0:
        raise ValueError(f"Aperture radius must be >= 0, got {radius}.")
    if blades < 3:
        raise ValueError(f"A polygonal aperture needs at least 3 blades, got {blades}.")
    if radius < 0.5 / factor:
        return np.ones((1, 1))
    half = max(1, int(math.ceil(radius - 0.5)) if radius > 0.5 else 1)
    yy, xx = supersample_grid(half, factor)
    # A point is inside when it lies within every edge's half-plane; the apothem is r*cos(pi/n).
    apothem = radius * math.cos(math.pi / blades)
    inside = np.ones_like(xx, dtype=bool)
    for i in range(blades):
        theta = math.radians(rotation) + (2 * i + 1) * math.pi / blades
        inside &= xx * math.cos(theta) + yy * math.sin(theta) <= apothem
    return normalize(area_average(inside, half, factor))
