"""A classical no-reference blur detector: local Laplacian energy, thresholded.

This is the kind of rule whole-slide QC tools apply; histoblur keeps it as a transparent
baseline that every learned detector must beat.
"""

from __future__ import annotations

import numpy as np

from histoblur.io.images import to_gray_float
from histoblur.metrics.sharpness import local_laplacian_map

# Threshold of the smoothed absolute Laplacian (luma in [0, 1], sigma 7 px) below which
# ``histoqc_blur_mask`` calls a pixel blurred; chosen on synthetic blur (docs/segmentation.md).
HISTOQC_THRESHOLD = 0.02


def laplacian_energy_map(image: np.ndarray, window: int = 31) -> np.ndarray:
    """Local mean of the squared Laplacian (float32, same H x W); low values mean blur."""
    return local_laplacian_map(to_gray_float(image), window, "box", squared=True, ksize=3)


def laplacian_blur_mask(image: np.ndarray, window: int = 31, ratio: float = 0.25) -> np.ndarray:
    """Boolean blur mask from thresholded local Laplacian energy.

    A pixel is blurred when its energy is below ``ratio`` x the image's 90th percentile (a sharp
    reference level taken from the image itself).
    """
    energy = laplacian_energy_map(image, window)
    reference = float(np.percentile(energy, 90))
    return energy < ratio * reference


def smoothed_laplacian_map(image: np.ndarray, sigma: float = 7.0) -> np.ndarray:
    """Absolute 4-neighbour Laplacian of the luma in [0, 1], smoothed by a Gaussian (float32)."""
    return local_laplacian_map(to_gray_float(image), sigma, "gaussian", squared=False)


def histoqc_blur_mask(
    image: np.ndarray, sigma: float = 7.0, threshold: float = HISTOQC_THRESHOLD
) -> np.ndarray:
    """HistoQC-style blur mask: smoothed absolute Laplacian at or below a fixed threshold.

    Unlike :func:`laplacian_blur_mask` the threshold is absolute, so an all-sharp or all-blurred
    tile can be called entirely sharp or entirely blurred.
    """
    return smoothed_laplacian_map(image, sigma) <= threshold


# HistoQC's own slide-level defaults (BlurDetectionModule): 2.5x working size, radius 7, 0.1.
HISTOQC_SLIDE_MPP = 4.0
HISTOQC_SLIDE_THRESHOLD = 0.1


def histoqc_slide_blur(
    thumb: np.ndarray, tissue: np.ndarray, threshold: float = HISTOQC_SLIDE_THRESHOLD
) -> np.ndarray:
    """HistoQC-style slide blur module on a ~2.5x thumbnail: blurred tissue mask.

    Args:
        thumb: RGB slide thumbnail at about :data:`HISTOQC_SLIDE_MPP` microns per pixel.
        tissue: boolean tissue mask of the same size.
        threshold: smoothed-Laplacian level at or below which tissue is called blurred.
    """
    return histoqc_blur_mask(thumb, threshold=threshold) & tissue
