"""A classical no-reference blur detector: local Laplacian energy, thresholded.

This is the kind of rule whole-slide QC tools apply; histoblur keeps it as a transparent
baseline that every learned detector must beat.

Examples:
    Real tissue with its right half out of focus:

    >>> import skimage.data
    >>> from histoblur.synthesis import apply_blur, make_spec
    >>> tissue = skimage.data.immunohistochemistry()[100:196, 150:278]
    >>> image = tissue.copy()
    >>> image[:, 64:] = apply_blur(tissue, make_spec("lens", radius=4))[:, 64:]
    >>> for detect in (laplacian_blur_mask, histoqc_blur_mask):
    ...     mask = detect(image)
    ...     print(mask.shape, mask.dtype, bool(mask[:, :48].any()), bool(mask[:, 80:].all()))
    (96, 128) bool False True
    (96, 128) bool False True
"""

from __future__ import annotations

import numpy as np

from histoblur.io.images import to_gray_float
from histoblur.metrics.sharpness import local_laplacian_map

# Threshold of the smoothed absolute Laplacian (luma in [0, 1], sigma 7 px) below which
# ``histoqc_blur_mask`` calls a pixel blurred; chosen on synthetic blur (docs/segmentation.md).
HISTOQC_THRESHOLD = 0.02


def laplacian_energy_map(image: np.ndarray, window: int = 31) -> np.ndarray:
    """Local mean of the squared Laplacian (float32, same H x W); low values mean blur.

    >>> energy = laplacian_energy_map(np.zeros((40, 60, 3), np.uint8), window=15)
    >>> energy.shape, energy.dtype, float(energy.max())
    ((40, 60), dtype('float32'), 0.0)
    """
    return local_laplacian_map(to_gray_float(image), window, "box", squared=True, ksize=3)


def laplacian_blur_mask(image: np.ndarray, window: int = 31, ratio: float = 0.25) -> np.ndarray:
    """Boolean blur mask from thresholded local Laplacian energy.

    A pixel is blurred when its energy is below ``ratio`` x the image's 90th percentile (a sharp
    reference level taken from the image itself), so a tile blurred all over is called sharp.

    Examples:
        >>> import skimage.data
        >>> from histoblur.synthesis import apply_blur, make_spec
        >>> tissue = skimage.data.immunohistochemistry()[100:196, 150:278]
        >>> image = tissue.copy()
        >>> image[:, 64:] = apply_blur(tissue, make_spec("lens", radius=4))[:, 64:]
        >>> mask = laplacian_blur_mask(image)
        >>> bool(mask[:, :48].any()), bool(mask[:, 80:].all())
        (False, True)
        >>> bool(laplacian_blur_mask(apply_blur(tissue, make_spec("lens", radius=4))).any())
        False
    """
    energy = laplacian_energy_map(image, window)
    reference = float(np.percentile(energy, 90))
    return energy < ratio * reference


def smoothed_laplacian_map(image: np.ndarray, sigma: float = 7.0) -> np.ndarray:
    """Absolute 4-neighbour Laplacian of the luma in [0, 1], smoothed by a Gaussian (float32).

    >>> smooth = smoothed_laplacian_map(np.full((32, 32), 128, np.uint8))
    >>> smooth.shape, smooth.dtype, float(smooth.max())  # flat: no edges
    ((32, 32), dtype('float32'), 0.0)
    """
    return local_laplacian_map(to_gray_float(image), sigma, "gaussian", squared=False)


def histoqc_blur_mask(
    image: np.ndarray, sigma: float = 7.0, threshold: float = HISTOQC_THRESHOLD
) -> np.ndarray:
    """HistoQC-style blur mask: smoothed absolute Laplacian at or below a fixed threshold.

    Unlike :func:`laplacian_blur_mask` the threshold is absolute, so an all-sharp or all-blurred
    tile can be called entirely sharp or entirely blurred.

    Examples:
        >>> import skimage.data
        >>> from histoblur.synthesis import apply_blur, make_spec
        >>> tissue = skimage.data.immunohistochemistry()[100:196, 150:278]
        >>> bool(histoqc_blur_mask(tissue).any())
        False
        >>> bool(histoqc_blur_mask(apply_blur(tissue, make_spec("lens", radius=4))).all())
        True
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

    Examples:
        >>> thumb = np.full((64, 64, 3), 200, np.uint8)  # featureless: blurred wherever tissue
        >>> tissue = np.zeros((64, 64), bool)
        >>> tissue[:, 32:] = True
        >>> blurred = histoqc_slide_blur(thumb, tissue)
        >>> bool(blurred[:, :32].any()), bool(blurred[:, 32:].all())
        (False, True)
    """
    return histoqc_blur_mask(thumb, threshold=threshold) & tissue
