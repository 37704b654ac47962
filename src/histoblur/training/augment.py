"""Augmentations for (tile, mask) training pairs: geometry, stain and colour, grey conversion.

Blur-preserving by construction: no resampling (flips and 90-degree rotations only), and colour
changes act per pixel, so the sharpness that defines the label is untouched. Noise and JPEG
artifacts are drawn by the dataset's degradation sampler (:class:`DegradeSampler`), after
compositing, so they cover sharp and blurred pixels alike.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from histoblur.config import Config

# Ruifrok & Johnston stain vectors (haematoxylin, eosin, DAB): rows are optical densities of
# each stain in R, G, B.
_STAIN_OD = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
RGB_FROM_HED = _STAIN_OD / np.linalg.norm(_STAIN_OD, axis=1, keepdims=True)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)


class AugmentConfig(Config):
    """Probabilities and strengths of the training augmentations.

    Attributes:
        flip: random horizontal and vertical flips and 90-degree rotations (the 8 symmetries).
        stain_p: probability of a stain jitter in HED optical-density space.
        stain_scale: each stain's concentration is scaled by ``1 + U(-s, s)``.
        stain_shift: and shifted by ``U(-s, s)`` optical density.
        brightness: ``U(-b, b)`` added to [0, 1] values (probability ``colour_p``).
        contrast: values scaled about their mean by ``1 + U(-c, c)`` (probability ``colour_p``).
        saturation: colour saturation scaled by ``1 + U(-s, s)`` (probability ``colour_p``).
        colour_p: probability of the brightness/contrast/saturation step.
        gamma: values raised to ``exp(U(-g, g))`` (probability ``colour_p``): above 1 darkens
            mid-tones as thick or heavily stained sections do.
        grey_p: probability of converting the tile to grey (for brightfield and grey stacks).
    """

    flip: bool = True
    stain_p: float = Field(0.5, ge=0, le=1)
    stain_scale: float = Field(0.3, ge=0, le=1)
    stain_shift: float = Field(0.05, ge=0, le=1)
    brightness: float = Field(0.08, ge=0, le=1)
    contrast: float = Field(0.2, ge=0, le=1)
    saturation: float = Field(0.3, ge=0, le=1)
    colour_p: float = Field(0.5, ge=0, le=1)
    gamma: float = Field(0.0, ge=0, le=1.5)
    grey_p: float = Field(0.1, ge=0, le=1)


def stain_jitter(rgb: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Scale and shift the H, E, D concentrations of a float [0, 1] RGB image."""
    od = -np.log(np.clip(rgb, 1 / 255, 1.0)).reshape(-1, 3) @ HED_FROM_RGB
    od = od * scale + shift
    out = np.exp(-np.clip(od @ RGB_FROM_HED, 0, None))
    return out.reshape(rgb.shape).astype(np.float32)


def augment_pair(
    tile: np.ndarray, mask: np.ndarray, config: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Augment one (H, W, 3) float32 [0, 1] tile and its (H, W) mask; returns new arrays."""
    x, m = tile, mask
    if config.flip:
        k = int(rng.integers(4))
        x, m = np.rot90(x, k), np.rot90(m, k)
        if rng.random() < 0.5:
            x, m = x[:, ::-1], m[:, ::-1]
    if rng.random() < config.stain_p:
        scale = 1 + rng.uniform(-config.stain_scale, config.stain_scale, 3)
        shift = rng.uniform(-config.stain_shift, config.stain_shift, 3)
        x = stain_jitter(x, scale, shift)
    if rng.random() < config.colour_p:
        grey = x.mean(axis=2, keepdims=True)
        x = grey + (x - grey) * (1 + rng.uniform(-config.saturation, config.saturation))
        mean = float(x.mean())
        x = mean + (x - mean) * (1 + rng.uniform(-config.contrast, config.contrast))
        x = x + rng.uniform(-config.brightness, config.brightness)
        if config.gamma > 0:  # drawn only when set: earlier runs keep their augmentations
            x = np.clip(x, 0.0, 1.0) ** np.exp(rng.uniform(-config.gamma, config.gamma))
    if rng.random() < config.grey_p:
        luma = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
        x = np.repeat(luma[..., None], 3, axis=2)
    x = np.clip(x, 0.0, 1.0).astype(np.float32)
    return np.ascontiguousarray(x), np.ascontiguousarray(m)
