"""Random polygon masks: where synthetic blur is pasted, and hence pixel ground truth.

Examples:
    >>> sampler = PolygonMaskSampler(count=(2, 2), feather=2.0)
    >>> polygons = sampler.sample(np.random.default_rng(0), 64, 64)
    >>> len(polygons)
    2
    >>> mask = rasterize(polygons, 64, 64)
    >>> mask.shape, mask.dtype, bool(mask.any())
    ((64, 64), dtype('bool'), True)
    >>> alpha = soft_alpha(mask, sampler.feather)  # blend weight for compositing
    >>> alpha.dtype, bool(((alpha > 0) & (alpha < 1)).any())
    (dtype('float32'), True)
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from pydantic import Field, model_validator

from histoblur.config import Config
from histoblur.synthesis.spec import IntRange, Range, check_range

# Vertex coordinates are stored rounded to this many decimals, so a manifest replays exactly.
COORD_DECIMALS = 2
Polygon = list[tuple[float, float]]
MAX_POLYGONS, MAX_VERTICES = 64, 256  # per mask, per polygon


class PolygonMaskSampler(Config):
    """Ranges of the random polygons.

    Attributes:
        count: how many polygons (inclusive range).
        size: polygon radius as a fraction of the shorter image side.
        vertices: vertices per polygon (inclusive range).
        jitter: irregularity in [0, 1): 0 is a regular polygon, larger is spikier.
        feather: edge softness in pixels (Gaussian sigma) used when compositing; 0 is a hard edge.
    """

    count: IntRange = (1, 3)
    size: Range = (0.15, 0.45)
    vertices: IntRange = (5, 12)
    jitter: Range = (0.1, 0.5)
    feather: float = Field(0.0, ge=0, le=32)

    @model_validator(mode="after")
    def _bounded(self) -> PolygonMaskSampler:
        check_range("count", self.count, 1, MAX_POLYGONS)
        check_range("size", self.size, 0.0, 1.0)
        check_range("vertices", self.vertices, 3, MAX_VERTICES)
        check_range("jitter", self.jitter, 0.0, 0.99)
        return self

    def sample(self, rng: np.random.Generator, height: int, width: int) -> list[Polygon]:
        """Draw polygons in pixel coordinates (centres anywhere in the image).

        Vertices may fall outside the image; a polygon can then cover few or no pixels.

        Examples:
            >>> sampler = PolygonMaskSampler(vertices=(6, 6))
            >>> polygons = sampler.sample(np.random.default_rng(0), 32, 48)
            >>> 1 <= len(polygons) <= 3, {len(p) for p in polygons}
            (True, {6})
            >>> x, y = polygons[0][0]  # (x, y) pixel coordinates, rounded to 0.01 px
            >>> bool(round(x, 2) == x)
            True
        """
        side = min(height, width)
        polygons = []
        for _ in range(int(rng.integers(self.count[0], self.count[1] + 1))):
            n = int(rng.integers(self.vertices[0], self.vertices[1] + 1))
            radius = float(rng.uniform(*self.size)) * side
            jitter = float(rng.uniform(*self.jitter))
            cx, cy = float(rng.uniform(0, width)), float(rng.uniform(0, height))
            angles = np.sort(rng.uniform(0, 2 * math.pi, n))
            radii = radius * (1 + jitter * rng.uniform(-1, 1, n))
            pts = [
                (
                    round(cx + r * math.cos(a), COORD_DECIMALS),
                    round(cy + r * math.sin(a), COORD_DECIMALS),
                )
                for a, r in zip(angles, radii, strict=True)
            ]
            polygons.append(pts)
        return polygons


def rasterize(polygons: list[Polygon], height: int, width: int) -> np.ndarray:
    """Boolean (H, W) mask of the union of polygons (sub-pixel vertices, 1/16 px precision).

    Integer vertex coordinates are pixel centres, and pixels on the boundary are inside.

    Examples:
        >>> mask = rasterize([[(2.0, 2.0), (10.0, 2.0), (10.0, 6.0), (2.0, 6.0)]], 8, 12)
        >>> mask.shape, int(mask.sum())  # columns 2-10, rows 2-6
        ((8, 12), 45)
        >>> bool(rasterize([], 4, 4).any())
        False
    """
    canvas = np.zeros((height, width), np.uint8)
    shift = 4
    pts = [np.round(np.asarray(p, np.float64) * (1 << shift)).astype(np.int32) for p in polygons]
    for poly in pts:  # one call per polygon: a single call would XOR overlapping polygons
        cv2.fillPoly(canvas, [poly], 1, lineType=cv2.LINE_8, shift=shift)
    return canvas.astype(bool)


def soft_alpha(mask: np.ndarray, feather: float) -> np.ndarray:
    """Blend weight in [0, 1] (float32): the mask, softened by a Gaussian of sigma ``feather``.

    Examples:
        >>> mask = np.zeros((16, 16), bool)
        >>> mask[4:12, 4:12] = True
        >>> hard = soft_alpha(mask, 0.0)
        >>> hard.dtype, float(hard.sum())
        (dtype('float32'), 64.0)
        >>> soft = soft_alpha(mask, 2.0)
        >>> bool(0 < soft[4, 4] < 1), round(float(soft.max()), 3) <= 1.0
        (True, True)
    """
    alpha = mask.astype(np.float32)
    if feather > 0:
        alpha = cv2.GaussianBlur(alpha, (0, 0), feather, borderType=cv2.BORDER_REFLECT_101)
    return alpha


def mask_to_png(mask: np.ndarray) -> np.ndarray:
    """uint8 0/255 image of a boolean mask.

    >>> mask_to_png(np.array([[True, False]]))
    array([[255,   0]], dtype=uint8)
    """
    return np.where(mask, 255, 0).astype(np.uint8)
