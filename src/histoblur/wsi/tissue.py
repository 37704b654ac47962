"""Tissue versus glass: a simple colour test used to skip background tiles."""

from __future__ import annotations

import cv2
import numpy as np

from histoblur.io.images import dtype_max, to_rgb

# Glass is bright and unsaturated; stained tissue is darker or coloured.
GLASS_MIN_LUMA = 0.82
GLASS_MAX_SATURATION = 0.08


def tissue_mask(image: np.ndarray) -> np.ndarray:
    """Boolean (H, W) mask of pixels that look like stained tissue rather than glass.

    A pixel is glass when it is bright (luma > 0.82) and nearly grey (HSV saturation < 0.08); very
    dark pixels (luma < 0.05, e.g. scanner borders) are not tissue either.
    """
    rgb = to_rgb(image).astype(np.float32) / dtype_max(image.dtype)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    luma = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    glass = (luma > GLASS_MIN_LUMA) & (hsv[..., 1] < GLASS_MAX_SATURATION)
    return ~glass & (luma > 0.05)


def tissue_fraction(image: np.ndarray) -> float:
    """Fraction of pixels in ``image`` that are tissue (see :func:`tissue_mask`)."""
    return float(tissue_mask(image).mean())
