"""Dark-field images (fluorescence) shown to the detectors as bright-field.

The detectors learned focus from bright-field tissue: stain absorbing light on bright glass.
A fluorescence image is the reverse, bright structures on a dark background, and usually a
single 16-bit channel with most of its range unused (BBBC006's Hoechst nuclei fill ~2 % of it).
Focus is a property of the image's structure, not of its polarity, so such an image is judged
as its stretched negative: background white, nuclei dark, as a hematoxylin-only grey section.

The rule is deliberately narrow: only a single-channel image whose median (its background) is
below ``DARK_MEDIAN`` of its type's range is converted. Colour images (every slide and every
stained tile) and bright grey images (bright-field focal stacks) pass through unchanged, so a
dark, dense H&E section is never inverted.

Examples:
    >>> nuclei = np.full((32, 32), 200, np.uint16)  # dark background, 16 bit
    >>> nuclei[8:24, 8:24] = 1400
    >>> is_dark_field(nuclei)
    True
    >>> shown = as_bright_field(nuclei)
    >>> shown.dtype, int(shown[0, 0]), int(shown[16, 16])  # background white, nuclei dark
    (dtype('uint8'), 255, 0)
    >>> tile = np.full((8, 8, 3), 30, np.uint8)  # dark colour tissue: unchanged
    >>> as_bright_field(tile) is tile
    True
"""

from __future__ import annotations

import numpy as np

from histoblur.io.images import dtype_max

DARK_MEDIAN = 0.2  # median below this share of the range: a dark-field image
STRETCH = (0.5, 99.9)  # percentiles mapped to black and white before inverting


def is_dark_field(image: np.ndarray) -> bool:
    """True for a single-channel image whose median is below ``DARK_MEDIAN`` of its range.

    >>> is_dark_field(np.full((4, 4), 250, np.uint8)), is_dark_field(np.zeros((4, 4), np.uint8))
    (False, True)
    """
    grey = image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
    if grey.ndim != 2 or grey.size == 0 or grey.dtype not in (np.uint8, np.uint16):
        return False  # not an image histoblur reads: check_image names the problem
    return float(np.median(grey)) < DARK_MEDIAN * dtype_max(grey.dtype)


def as_bright_field(image: np.ndarray) -> np.ndarray:
    """``image`` unchanged, or for a dark-field image its stretched negative (uint8 grey).

    Idempotent: the negative is bright, so converting it again returns it unchanged.

    >>> flat = np.zeros((4, 4), np.uint8)  # no structure: white
    >>> int(as_bright_field(flat).min())
    255
    """
    if not is_dark_field(image):
        return image
    grey = (image[..., 0] if image.ndim == 3 else image).astype(np.float32)
    low, high = np.percentile(grey, STRETCH)
    stretched = np.clip((grey - low) / max(float(high - low), 1e-6), 0.0, 1.0)
    return np.rint(255.0 * (1.0 - stretched)).astype(np.uint8)
