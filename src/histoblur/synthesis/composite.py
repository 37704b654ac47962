"""Compositing: sharp outside the mask, blurred inside."""

from __future__ import annotations

import numpy as np

from histoblur.errors import InputError
from histoblur.io.images import dtype_max


def composite(sharp: np.ndarray, blurred: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Blend ``blurred`` into ``sharp`` with per-pixel weight ``alpha`` (bool or float in [0, 1]).

    Raises:
        InputError: if shapes or dtypes differ.
    """
    if sharp.shape != blurred.shape or sharp.dtype != blurred.dtype:
        raise InputError(
            f"Sharp {sharp.shape} {sharp.dtype} and blurred {blurred.shape} {blurred.dtype} "
            "images must have the same shape and dtype."
        )
    if alpha.shape != sharp.shape[:2]:
        raise InputError(
            f"Mask of size {alpha.shape} does not match image of size {sharp.shape[:2]}."
        )
    if alpha.dtype == bool:
        out = sharp.copy()
        out[alpha] = blurred[alpha]
        return out
    a = alpha.astype(np.float32)
    if sharp.ndim == 3:
        a = a[..., None]
    mixed = sharp.astype(np.float32) * (1 - a) + blurred.astype(np.float32) * a
    peak = dtype_max(sharp.dtype)
    return np.clip(np.rint(mixed), 0, peak).astype(sharp.dtype)
