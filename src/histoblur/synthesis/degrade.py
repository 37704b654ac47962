"""Degradations applied after blur: Poisson-Gaussian sensor noise, JPEG re-compression.

Examples:
    >>> image = np.full((16, 16, 3), 128, np.uint8)
    >>> spec = DegradeSpec(photons=300, read_noise=0.01, jpeg_quality=85, seed=0)
    >>> out = degrade(image, spec)
    >>> out.shape, out.dtype, bool((out != 128).any())
    ((16, 16, 3), dtype('uint8'), True)
    >>> bool((degrade(image, spec) == out).all())  # the seed makes the noise repeatable
    True
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import Field

from histoblur.config import Config
from histoblur.io.images import dtype_max

MAX_PHOTONS = 1e9  # above this, shot noise is far below one grey level of 16-bit data


class DegradeSpec(Config):
    """Exact parameters of the post-blur degradation (None disables a step).

    Attributes:
        photons: full-well photon count; shot noise has variance ``x / photons`` (x in [0, 1]).
        read_noise: standard deviation of additive Gaussian read noise, in [0, 1] units.
        jpeg_quality: JPEG quality of a re-compression round trip (8-bit images only).
        seed: seed of the noise.
    """

    photons: float | None = Field(None, gt=0, le=MAX_PHOTONS)
    read_noise: float | None = Field(None, ge=0, le=0.5)
    jpeg_quality: int | None = Field(None, ge=1, le=100)
    seed: int = Field(0, ge=0)

    @property
    def active(self) -> bool:
        """Whether any step is enabled.

        >>> DegradeSpec().active, DegradeSpec(jpeg_quality=90).active
        (False, True)
        """
        return any(v is not None for v in (self.photons, self.read_noise, self.jpeg_quality))


def add_sensor_noise(image: np.ndarray, spec: DegradeSpec) -> np.ndarray:
    """Poisson-Gaussian noise on a float [0, 1] image (returns a new array).

    >>> x = np.full((8, 8), 0.5, np.float32)
    >>> noisy = add_sensor_noise(x, DegradeSpec(photons=100, read_noise=0.01, seed=0))
    >>> noisy.dtype, bool(noisy.min() >= 0 and noisy.max() <= 1), bool((noisy != 0.5).any())
    (dtype('float32'), True, True)
    """
    rng = np.random.default_rng(spec.seed)
    out = image.astype(np.float32)
    if spec.photons is not None:
        out = rng.poisson(np.clip(out, 0, 1) * spec.photons).astype(np.float32) / spec.photons
    if spec.read_noise:
        out = out + rng.normal(0.0, spec.read_noise, size=out.shape).astype(np.float32)
    return np.clip(out, 0.0, 1.0)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode an 8-bit image as JPEG (16-bit images are returned unchanged).

    >>> jpeg_roundtrip(np.zeros((8, 8, 3), np.uint8), 75).shape
    (8, 8, 3)
    >>> deep = np.zeros((8, 8), np.uint16)
    >>> jpeg_roundtrip(deep, 75) is deep
    True
    """
    if image.dtype != np.uint8:
        return image
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        return image
    decoded = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return decoded.reshape(image.shape)


def degrade(image: np.ndarray, spec: DegradeSpec) -> np.ndarray:
    """Apply noise then JPEG to an integer image (same dtype out).

    An inactive spec returns the input array itself.

    >>> image = np.zeros((8, 8), np.uint16)
    >>> degrade(image, DegradeSpec()) is image
    True
    >>> degrade(image, DegradeSpec(read_noise=0.05, seed=1)).dtype
    dtype('uint16')
    """
    if not spec.active:
        return image
    out = image
    if spec.photons is not None or spec.read_noise:
        peak = dtype_max(image.dtype)
        noisy = add_sensor_noise(image.astype(np.float32) / peak, spec)
        out = np.clip(np.rint(noisy * peak), 0, peak).astype(image.dtype)
    if spec.jpeg_quality is not None:
        out = jpeg_roundtrip(out, spec.jpeg_quality)
    return out
