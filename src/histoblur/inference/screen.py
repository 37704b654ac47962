"""A cheap focus screen for whole-slide QC: which tissue windows are surely sharp.

QC with the screen on (``QCConfig.screen``) first reads every tissue window at half the working
resolution (``SCREEN_FACTOR``; on a 40x scan that is the 10x pyramid level, 16 times fewer pixels
to decode than level 0) and measures its fine detail: the mean absolute difference between the
grey image and its Gaussian blur at sigma 1 px (the finest band), divided by the same between
sigma 1 and 2.5 px (a coarser band). Defocus removes the finest band first, so the ratio falls
with blur whatever the stain's contrast. A window whose ratio reaches the cutoff is taken as
sharp without reading it at full resolution or running the network; all others (unsure or
blurred) go through the full-resolution segmenter as without the screen.

Examples:
    >>> import cv2
    >>> import skimage.data
    >>> tissue = skimage.data.immunohistochemistry()[::2, ::2][:128, :128]
    >>> sharp, blurred = detail_ratio(tissue), detail_ratio(cv2.GaussianBlur(tissue, (0, 0), 1.5))
    >>> bool(sharp > 1.0 > blurred)
    True
    >>> detail_ratio(np.full((64, 64, 3), 245, np.uint8)) is None  # glass: nothing to judge
    True
"""

from __future__ import annotations

import cv2
import numpy as np

from histoblur.wsi.tissue import tissue_mask

# The screen reads windows this many times coarser than the working resolution.
SCREEN_FACTOR = 2
# Fewer tissue pixels than this share of a screened window: leave the judgement to the network.
MIN_SCREEN_TISSUE = 0.05


def detail_ratio(image: np.ndarray, tissue: np.ndarray | None = None) -> float | None:
    """Finest-band over coarser-band detail of an RGB uint8 window on its tissue pixels.

    Args:
        image: (H, W, 3) uint8 window at the screen resolution.
        tissue: its tissue mask (default: :func:`histoblur.wsi.tissue.tissue_mask`).

    Returns:
        The ratio (median 1.2, 10th percentile 0.9 on the sharp H&E tiles of the real data at
        half their resolution; 0.84 after a Gaussian blur of sigma 1 px at full resolution, 0.54
        at sigma 2), or None when under 5 % of the window is tissue.
    """
    tissue = tissue_mask(image) if tissue is None else tissue
    if tissue.mean() < MIN_SCREEN_TISSUE:
        return None
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    fine = cv2.GaussianBlur(grey, (0, 0), 1.0)
    coarse = cv2.GaussianBlur(grey, (0, 0), 2.5)
    finest = float(np.abs(grey - fine)[tissue].mean())
    middle = float(np.abs(fine - coarse)[tissue].mean())
    return finest / (middle + 1e-3)
