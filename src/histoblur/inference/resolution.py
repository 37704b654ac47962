"""Scale as an input: blur is only defined at a known pixel size.

A sharp 5x scan looks like a blurred 40x one, so every detector takes the image's microns per
pixel (``mpp``) and resamples it to the model's *working resolution* (the ``mpp`` recorded in the
checkpoint's ``inference`` block, 0.5 um/px for the shipped models: a 20x scan). Maps come back
at the input's size. Without an ``mpp`` the image is taken to be at the working resolution, which
holds for the common 20x tiles (0.4-0.6 um/px); 40x tiles (0.25 um/px) should say so.

Examples:
    >>> image = np.zeros((100, 60, 3), np.uint8)
    >>> to_working(image, mpp=0.25, working=0.5).shape  # a 40x tile halves
    (50, 30, 3)
    >>> to_input_size(np.zeros((50, 30), np.float32), (100, 60)).shape
    (100, 60)
"""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np

from histoblur.errors import ParameterError

DEFAULT_WORKING_MPP = 0.5  # the shipped models' resolution (20x), and checkpoints without one
MAX_MPP = 50.0  # coarser than any pyramid level QC would judge blur at
UNRELIABLE_RATIO = 8.0  # resampling by more than this either way: results are unreliable
log = logging.getLogger(__name__)


def check_mpp(mpp: float | None, option: str = "--mpp") -> float | None:
    """``mpp`` when it is a plausible microns-per-pixel figure (None stays None).

    Raises:
        ParameterError: zero, negative, not finite, or above :data:`MAX_MPP`.

    Examples:
        >>> check_mpp(0.25), check_mpp(None)
        (0.25, None)
        >>> check_mpp(float("nan"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        histoblur.errors.ParameterError: --mpp must be a resolution ... at most 50, got nan.
    """
    if mpp is None:
        return None
    if not (isinstance(mpp, (int, float)) and math.isfinite(mpp) and 0 < mpp <= MAX_MPP):
        raise ParameterError(
            f"{option} must be a resolution in microns per pixel above 0 and at most "
            f"{MAX_MPP:g}, got {mpp}."
        )
    return float(mpp)


def working_mpp(config: dict) -> float:
    """The working resolution a checkpoint's config records (:data:`DEFAULT_WORKING_MPP` if none).

    >>> working_mpp({"inference": {"mpp": 1.0}}), working_mpp({})
    (1.0, 0.5)
    """
    value = config.get("inference", {}).get("mpp", DEFAULT_WORKING_MPP)
    return check_mpp(float(value), "the checkpoint's inference.mpp") or DEFAULT_WORKING_MPP


def scale_factor(mpp: float | None, working: float, warn: bool = True) -> float:
    """Working pixels per input pixel (1 without an ``mpp``); ``warn``s beyond 8x either way.

    >>> scale_factor(0.25, 0.5), scale_factor(None, 0.5)
    (0.5, 1.0)
    """
    mpp = check_mpp(mpp)
    if mpp is None:
        return 1.0
    factor = mpp / working
    if warn and max(factor, 1 / factor) > UNRELIABLE_RATIO:
        log.warning(
            "The image is at %g um/px, more than %gx from the model's %g um/px: the result is "
            "unreliable.",
            mpp,
            UNRELIABLE_RATIO,
            working,
        )
    return factor


def to_working(image: np.ndarray, mpp: float | None, working: float) -> np.ndarray:
    """``image`` resampled to the working resolution (area averaging down, bilinear up).

    An image already within 1 % of the working resolution is returned as is.
    """
    factor = scale_factor(mpp, working)
    if abs(factor - 1) < 0.01:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    out = cv2.resize(image, size, interpolation=interp)
    return out.reshape(size[1], size[0], *image.shape[2:])


def to_input_size(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A working-resolution map (h, w) back at the input's ``shape`` (H, W), bilinearly."""
    h, w = shape
    if values.shape[:2] == (h, w):
        return values
    return cv2.resize(values, (w, h), interpolation=cv2.INTER_LINEAR)
