"""Classical inpainting baselines for restoration: OpenCV's Telea and Navier-Stokes methods."""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from histoblur.errors import InputError
from histoblur.io.images import check_image

METHODS = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}


def inpaint(
    image: np.ndarray, mask: np.ndarray, method: Literal["telea", "ns"] = "telea", radius: int = 5
) -> np.ndarray:
    """``image`` with its ``mask`` (H, W, bool) pixels filled from their surroundings.

    uint8 images are inpainted directly; other types go through 8 bits and only the masked
    pixels take the result, so pixels outside the mask are the input, bit for bit.

    Raises:
        InputError: a mask of another size.
    """
    check_image(image)
    if mask.shape != image.shape[:2]:
        raise InputError("The mask and the image differ in size.")
    grey = image.ndim == 2 or image.shape[2] == 1
    peak = 255 if image.dtype == np.uint8 else np.iinfo(image.dtype).max
    work = np.round(image.astype(np.float64) / peak * 255).astype(np.uint8)
    plane = work.reshape(*work.shape[:2], -1)
    colour = np.ascontiguousarray(plane[..., 0] if grey else plane[..., :3])
    filled = cv2.inpaint(colour, mask.astype(np.uint8), radius, METHODS[method])
    filled = np.round(filled.astype(np.float64) / 255 * peak).astype(image.dtype)
    out = image.copy()
    target = out if image.ndim == 2 else out[..., 0] if grey else out[..., :3]
    target[mask] = filled[mask]  # a view of out: only masked pixels change
    return out
