"""A classical no-reference blur detector: local Laplacian energy, thresholded.

This is the kind of rule whole-slide QC tools apply; histoblur keeps it as a transparent
baseline that every learned detector must beat.
"""

from __future__ import annotations

import cv2
import numpy as np

from histoblur.io.images import to_gray_float


def laplacian_energy_map(image: np.ndarray, window: int = 31) -> np.ndarray:
    """Local mean of the squared Laplacian (float32, same H x W); low values mean blur."""
    grey = to_gray_float(image)
    lap = cv2.Laplacian(grey, cv2.CV_32F, ksize=3, borderType=cv2.BORDER_REFLECT_101)
    return cv2.boxFilter(lap * lap, cv2.CV_32F, (window, window), borderType=cv2.BORDER_REFLECT_101)


def laplacian_blur_mask(image: np.ndarray, window: int = 31, ratio: float = 0.25) -> np.ndarray:
    """Boolean blur mask from thresholded local Laplacian energy.

    A pixel is blurred when its energy is below ``ratio`` x the image's 90th percentile (a sharp
    reference level taken from the image itself).
    """
    energy = laplacian_energy_map(image, window)
    reference = float(np.percentile(energy, 90))
    return energy < ratio * reference
