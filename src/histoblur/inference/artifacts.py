"""Artifact regions to restore: thresholds (ArtiFusion's detector) or the blur segmenter.

:func:`threshold_artifacts` flags three kinds of pixel with fixed thresholds on smoothed maps
(images in [0, 1]; constants measured on 256 px crops of ``../shared/data/sharp`` against the
artifacts of :mod:`histoblur.synthesis.artifacts` and Gaussian blur):

- ``blur``: tissue whose local Laplacian energy ``sqrt(G_8 * lap(luma)^2)`` is below
  ``blur_energy`` or below ``blur_ratio`` times the image's median tissue energy (sharp H&E
  tissue: 1st percentile 0.018; after a Gaussian blur of sigma 2: 95th percentile 0.022; the
  relative test carries the rule over to paler stains such as IHC);
- ``dark``: folds and debris: smoothed luma below ``dark_luma``, or below ``fold_ratio`` times
  the image's median tissue luma while the smoothed saturation exceeds the median tissue
  saturation by ``fold_saturation`` (two layers of tissue are darker and more saturated than
  the same stain in one layer; relative to the image so dense or strongly stained sections
  are not flagged whole);
- ``pale``: washed-out, grey regions (bubbles) enclosed by tissue, grown by ``pale_rim``
  pixels to take in a bubble's dark refractive rim; pale regions touching the border are taken
  for glass.

Each kind is opened, small regions are dropped and the union is grown by ``grow`` pixels so a
restorer also replaces the artifact's soft edge. :mod:`histoblur.inference.detectors` registers
it beside the blur segmenter and the classical blur detectors.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from histoblur.config import Config
from histoblur.io.images import to_float, to_rgb
from histoblur.metrics.sharpness import local_laplacian_map
from histoblur.wsi.tissue import tissue_mask

Kind = Literal["blur", "dark", "pale"]
KINDS: tuple[Kind, ...] = ("blur", "dark", "pale")


class ThresholdConfig(Config):
    """Thresholds of :func:`threshold_artifacts` (images in [0, 1], lengths in pixels)."""

    kinds: tuple[Kind, ...] = KINDS
    sigma: float = Field(4.0, gt=0, le=64, description="smoothing of luma and saturation")
    energy_sigma: float = Field(8.0, gt=0, le=64, description="window of the Laplacian energy")
    blur_energy: float = Field(0.01, ge=0)
    blur_ratio: float = Field(0.5, ge=0, le=1)
    dark_luma: float = Field(0.15, ge=0, le=1)
    fold_ratio: float = Field(0.8, ge=0, le=1)
    fold_saturation: float = Field(0.1, ge=-1, le=1)
    pale_luma: float = Field(0.8, ge=0, le=1)
    pale_saturation: float = Field(0.15, ge=0, le=1)
    pale_rim: int = Field(3, ge=0, le=64)
    min_area: int = Field(64, ge=0)
    grow: int = Field(3, ge=0, le=64)


def artifact_maps(image: np.ndarray, config: ThresholdConfig) -> dict[Kind, np.ndarray]:
    """The raw (H, W) bool map of each kind in ``config.kinds``, before clean-up."""
    rgb = to_float(to_rgb(image)).astype(np.float32)
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    smooth_luma = cv2.GaussianBlur(luma, (0, 0), config.sigma)
    saturation = cv2.GaussianBlur(
        cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1], (0, 0), config.sigma
    )
    maps: dict[Kind, np.ndarray] = {}
    tissue = tissue_mask(image)
    if "blur" in config.kinds:
        energy = np.sqrt(local_laplacian_map(luma, config.energy_sigma))
        inside = cv2.GaussianBlur(tissue.astype(np.float32), (0, 0), config.sigma) > 0.5
        reference = float(np.median(energy[tissue])) if tissue.any() else 0.0
        low = np.maximum(config.blur_energy, config.blur_ratio * reference)
        maps["blur"] = inside & (energy < low)
    if "dark" in config.kinds:
        maps["dark"] = smooth_luma < config.dark_luma
        if tissue.any():
            luma_ref, saturation_ref = np.median(smooth_luma[tissue]), np.median(saturation[tissue])
            maps["dark"] |= (smooth_luma < config.fold_ratio * luma_ref) & (
                saturation > saturation_ref + config.fold_saturation
            )
    if "pale" in config.kinds:
        pale = (smooth_luma > config.pale_luma) & (saturation < config.pale_saturation)
        maps["pale"] = _enclosed(pale)
    return maps


def threshold_artifacts(image: np.ndarray, config: ThresholdConfig | None = None) -> np.ndarray:
    """(H, W) bool mask of the artifact regions ``image`` (grey, RGB or RGBA) shows."""
    config = config or ThresholdConfig()
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    mask = np.zeros(image.shape[:2], bool)
    for kind, raw in artifact_maps(image, config).items():
        opened = cv2.morphologyEx(raw.astype(np.uint8), cv2.MORPH_OPEN, kernel).astype(bool)
        found = _drop_small(opened, config.min_area)
        mask |= _grow(found, config.grow + (config.pale_rim if kind == "pale" else 0))
    return mask


def _grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` dilated by a disk of radius ``pixels``."""
    if not pixels or not mask.any():
        return mask
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(mask.astype(np.uint8), disk).astype(bool)


def _enclosed(mask: np.ndarray) -> np.ndarray:
    """The connected regions of ``mask`` that do not touch the image border."""
    _, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return mask & ~np.isin(labels, border)


def _drop_small(mask: np.ndarray, min_area: int) -> np.ndarray:
    """``mask`` without its connected regions smaller than ``min_area`` pixels."""
    if not min_area or not mask.any():
        return mask
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    keep = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= min_area)
    return np.isin(labels, keep[keep > 0])
