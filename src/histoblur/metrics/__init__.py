"""Image metrics: full-reference, segmentation and no-reference sharpness.

Full-reference: PSNR, SSIM, MSE, regional L2, SRE, FSIM/FSIMc. Segmentation: Dice, IoU,
precision, recall, false-positive rate, per image and aggregated. Sharpness: variance of
Laplacian, Tenengrad, Brenner, high-frequency energy ratio.

Conventions shared by all of them: one numpy image ``(H, W)`` or ``(H, W, C)`` gives a Python
float; a torch batch ``(N, C, H, W)`` gives a tensor of ``N`` values on its device. Integer
images are scaled to [0, 1] by their dtype maximum; float images are taken as in [0, 1] unless a
``data_range`` is given. Ranges and directions are in each docstring and in ``docs/metrics.md``.

Examples:
    >>> import numpy as np
    >>> import torch
    >>> from histoblur.metrics import dice, psnr, ssim, variance_of_laplacian
    >>> a = np.full((8, 8), 100, np.uint8)
    >>> round(psnr(a, a + 10), 3)  # 20 log10(255 / 10)
    28.131
    >>> x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    >>> ssim(x, x)  # a batch gives one value per image
    tensor([1., 1.])
    >>> dice(np.eye(4, dtype=bool), np.eye(4, dtype=bool))
    1.0
    >>> variance_of_laplacian(np.zeros((8, 8), np.uint8))  # flat: no focus evidence
    0.0
"""

from histoblur.metrics.fsim import fsim
from histoblur.metrics.full_reference import as_image_batch, masked_l2, mse, psnr, sre, ssim
from histoblur.metrics.segmentation import (
    MaskPairing,
    SegmentationScores,
    SegmentationSummary,
    aggregate_segmentation,
    binarize_mask,
    confusion_counts,
    dice,
    evaluate_mask_folders,
    evaluate_mask_pairs,
    iou,
    pair_mask_files,
)
from histoblur.metrics.sharpness import (
    SHARPNESS,
    brenner,
    hf_energy_ratio,
    tenengrad,
    variance_of_laplacian,
)

__all__ = [
    "MaskPairing",
    "SHARPNESS",
    "SegmentationScores",
    "SegmentationSummary",
    "aggregate_segmentation",
    "as_image_batch",
    "binarize_mask",
    "brenner",
    "confusion_counts",
    "dice",
    "evaluate_mask_folders",
    "evaluate_mask_pairs",
    "fsim",
    "hf_energy_ratio",
    "iou",
    "masked_l2",
    "sre",
    "mse",
    "pair_mask_files",
    "psnr",
    "ssim",
    "tenengrad",
    "variance_of_laplacian",
]
