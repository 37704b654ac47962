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
