"""Image metrics: full-reference, segmentation and no-reference sharpness.

Full-reference: PSNR, SSIM, MSE, regional L2, SRE, FSIM/FSIMc. Segmentation: Dice, IoU,
precision, recall, false-positive rate, per image and aggregated. Sharpness: variance of
Laplacian, Tenengrad, Brenner, high-frequency energy ratio.

Conventions shared by all of them: one numpy image ``(H, W)`` or ``(H, W, C)`` gives a Python
float; a torch batch ``(N, C, H, W)`` gives a tensor of ``N`` values on its device. Integer
images are scaled to [0, 1] by their dtype maximum; float images are taken as in [0, 1] unless a
``data_range`` is given. Ranges and directions are in each docstring and in ``docs/metrics.md``.
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
