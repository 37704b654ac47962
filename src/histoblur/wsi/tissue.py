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

    Examples:
        >>> pixels = np.array([[[240, 240, 240], [180, 90, 160], [0, 0, 0]]], np.uint8)
        >>> tissue_mask(pixels)  # glass, eosin-pink tissue, black border
        array([[False,  True, False]])
    """
    rgb = to_rgb(image).astype(np.float32) / dtype_max(image.dtype)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    luma = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    glass = (luma > GLASS_MIN_LUMA) & (hsv[..., 1] < GLASS_MAX_SATURATION)
    return ~glass & (luma > 0.05)


def tissue_fraction(image: np.ndarray) -> float:
    """Fraction of pixels in ``image`` that are tissue (see :func:`tissue_mask`).

    >>> image = np.full((10, 10, 3), 240, np.uint8)
    >>> image[:, :3] = (180, 90, 160)
    >>> round(tissue_fraction(image), 3)
    0.3
    """
    return float(tissue_mask(image).mean())


# Pen ink at thumbnail scale (hue in degrees, HSV saturation and value in [0, 1]). Measured on
# the HistoQC pen-marking images with hand-drawn masks: green ink hue 168-176, red ink hue
# 337-355 with saturation 0.4-0.9 (eosin: hue 308-335, saturation 0.15-0.3), black ink value
# below 0.26. Blue ink (histolab's blue-pen thumbnail) has hue 213-217 and median saturation
# 0.38, while IHC haematoxylin has hue 218-234 and saturation 0.20-0.30: blue needs more colour.
PEN_GREEN_HUE = (90.0, 190.0)
PEN_GREEN_MIN_SATURATION = 0.2
PEN_BLUE_HUE = (190.0, 230.0)
PEN_BLUE_MIN_SATURATION = 0.32
PEN_RED_HUE = (337.0, 10.0)
PEN_RED_MIN_SATURATION = 0.5
DARK_MAX_VALUE = 0.25


def ink_mask(image: np.ndarray) -> np.ndarray:
    """Boolean mask of pen ink and dark debris: blue/green ink, saturated red ink, near-black.

    >>> pixels = np.array([[[20, 160, 60], [30, 60, 200], [180, 90, 160], [240, 240, 240]]])
    >>> ink_mask(pixels.astype(np.uint8))  # green ink, blue ink, eosin, glass
    array([[ True,  True, False, False]])
    """
    rgb = to_rgb(image).astype(np.float32) / dtype_max(image.dtype)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    green = (hue > PEN_GREEN_HUE[0]) & (hue <= PEN_GREEN_HUE[1]) & (sat > PEN_GREEN_MIN_SATURATION)
    blue = (hue > PEN_BLUE_HUE[0]) & (hue < PEN_BLUE_HUE[1]) & (sat > PEN_BLUE_MIN_SATURATION)
    red = ((hue > PEN_RED_HUE[0]) | (hue < PEN_RED_HUE[1])) & (sat > PEN_RED_MIN_SATURATION)
    return green | blue | red | (val < DARK_MAX_VALUE)


def detect_tissue(thumb: np.ndarray, um_per_px: float, min_area_mm2: float = 0.01) -> np.ndarray:
    """Tissue mask of a slide thumbnail: stained tissue, without glass, pen ink and debris.

    Pixel rules (:func:`tissue_mask`, :func:`ink_mask`) on a lightly smoothed thumbnail, then
    ink grown by ~20 um (its halo), closing of small gaps, holes smaller than ``min_area_mm2``
    filled and tissue pieces smaller than it dropped.

    Args:
        thumb: RGB thumbnail.
        um_per_px: its resolution (microns per pixel), to express sizes physically.
        min_area_mm2: smallest tissue piece (and largest hole filled) kept.

    Raises:
        ValueError: a resolution that is not positive.

    Examples:
        >>> thumb = np.full((100, 100, 3), 240, np.uint8)
        >>> thumb[20:80, 20:80] = (180, 90, 160)  # 0.48 x 0.48 mm of tissue at 8 um/px
        >>> thumb[2:4, 2:4] = (180, 90, 160)  # a speck, below min_area_mm2
        >>> tissue = detect_tissue(thumb, um_per_px=8.0)
        >>> tissue.shape, bool(tissue[50, 50]), bool(tissue[3, 3])
        ((100, 100), True, False)
    """
    if um_per_px <= 0:
        raise ValueError(f"Thumbnail resolution must be positive, got {um_per_px}.")
    smooth = cv2.GaussianBlur(to_rgb(thumb), (0, 0), 1.0)
    min_px = min_area_mm2 * 1e6 / um_per_px**2
    ink = _drop_small(ink_mask(smooth), min_px / 10) > 0  # specks are stain, not ink
    grow = max(1, round(20.0 / um_per_px))
    ink = cv2.dilate(ink.astype(np.uint8), np.ones((2 * grow + 1,) * 2, np.uint8)) > 0
    tissue = (tissue_mask(smooth) & ~ink).astype(np.uint8)
    tissue = cv2.morphologyEx(tissue, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    tissue = _drop_small(tissue, min_px)
    holes = _drop_small(1 - tissue, min_px)  # keep only large holes
    return (holes == 0) & ~ink


def _drop_small(mask: np.ndarray, min_px: float) -> np.ndarray:
    """Remove 8-connected components of ``mask`` smaller than ``min_px`` pixels."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, np.uint8)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_px
    return keep[labels]
