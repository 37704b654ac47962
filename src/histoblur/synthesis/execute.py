"""The numpy/OpenCV executor: runs a blur plan on a float32 (H, W, C) image.

Convolution picks the fastest exact-enough route for the kernel: separable 1-D passes for a
Gaussian, a direct filter for small kernels, a low-rank separable expansion (SVD) for large
kernels when a few terms reproduce the kernel to within ``LOWRANK_L1``, and OpenCV's DFT-based
``filter2D`` otherwise. Borders are reflected (``BORDER_REFLECT_101``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import cv2
import numpy as np

from histoblur.synthesis.plans import BlurPlan, KernelPlan, LevelsPlan, WarpPlan, level_weights

BORDER = cv2.BORDER_REFLECT_101
DIRECT_MAX = 11
MAX_RANK = 4
# L1 norm of the dropped SVD terms; on an 8-bit image the worst-case error is 255 * LOWRANK_L1.
LOWRANK_L1 = 2e-3


def execute(plan: BlurPlan, image: np.ndarray) -> np.ndarray:
    """Apply ``plan`` to a float32 (H, W, C) image and return a new float32 image."""
    if isinstance(plan, KernelPlan):
        return convolve(image, plan.kernel, plan.separable)
    if isinstance(plan, LevelsPlan):
        return _blend_levels(image, plan)
    if isinstance(plan, WarpPlan):
        return _average_warps(image, plan)
    raise TypeError(f"Unknown plan type {type(plan).__name__}.")


def convolve(
    image: np.ndarray, kernel: np.ndarray, separable: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """True convolution (not correlation) of every channel with ``kernel``, reflected borders."""
    image = np.ascontiguousarray(image, dtype=np.float32)
    if kernel.shape == (1, 1):
        return image.copy()
    if separable is not None:
        col, row = separable
        return _sep(image, row[::-1], col[::-1])
    if max(kernel.shape) > DIRECT_MAX:
        terms = _low_rank(kernel.tobytes(), kernel.shape)
        if terms is not None:
            return _sum_separable(image, terms)
    flipped = np.ascontiguousarray(kernel[::-1, ::-1], dtype=np.float32)
    return _keep_channels(cv2.filter2D(image, cv2.CV_32F, flipped, borderType=BORDER), image)


def _sep(image: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
    out = cv2.sepFilter2D(
        image, cv2.CV_32F, row.astype(np.float32), col.astype(np.float32), borderType=BORDER
    )
    return _keep_channels(out, image)


def _keep_channels(out: np.ndarray, image: np.ndarray) -> np.ndarray:
    """OpenCV drops a trailing singleton channel axis; put it back."""
    return out.reshape(image.shape)


@lru_cache(maxsize=64)
def _low_rank(
    kernel_bytes: bytes, shape: tuple[int, int]
) -> tuple[tuple[np.ndarray, np.ndarray], ...] | None:
    """Separable terms (col, row) whose sum matches the kernel within LOWRANK_L1, or None."""
    kernel = np.frombuffer(kernel_bytes, dtype=np.float64).reshape(shape)
    u, s, vt = np.linalg.svd(kernel)
    for rank in range(1, MAX_RANK + 1):
        approx = (u[:, :rank] * s[:rank]) @ vt[:rank]
        if np.abs(kernel - approx).sum() <= LOWRANK_L1:
            root = np.sqrt(s[:rank])
            return tuple((u[:, i] * root[i], vt[i] * root[i]) for i in range(rank))
    return None


_POOL = ThreadPoolExecutor(max_workers=2)


def _sum_separable(
    image: np.ndarray, terms: tuple[tuple[np.ndarray, np.ndarray], ...]
) -> np.ndarray:
    """Sum of separable convolutions, the terms run on two threads (OpenCV releases the GIL)."""
    parts = _POOL.map(lambda t: _sep(image, t[1][::-1], t[0][::-1]), terms)
    out = None
    for part in parts:
        out = part if out is None else out + part
    return out


def _blend_levels(image: np.ndarray, plan: LevelsPlan) -> np.ndarray:
    weights = level_weights(plan.index, len(plan.kernels))
    out = np.zeros_like(image, dtype=np.float32)
    for kernel, w in zip(plan.kernels, weights, strict=True):
        if not w.any():
            continue
        level = convolve(image, kernel)
        out += level * (w[..., None] if image.ndim == 3 else w)
    return out


def _average_warps(image: np.ndarray, plan: WarpPlan) -> np.ndarray:
    out = np.zeros_like(image, dtype=np.float32)
    for map_x, map_y in plan.grids:
        warped = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=BORDER)
        out += _keep_channels(warped, image)
    return out / len(plan.grids)
