"""Scale as an input: blur is only defined at a known pixel size.

A sharp 5x scan looks like a blurred 40x one, so every detector takes the image's microns per
pixel (``mpp``). Images finer than the model's *working resolution* (the ``mpp`` recorded in the
checkpoint's ``inference`` block, 0.5 um/px for the shipped models: a 20x scan) are
area-averaged down to it; coarser images are judged at their own resolution, never enlarged
(enlarging blurs: a sharp 5x image enlarged to 20x would look out of focus). The models are
trained on sharp tissue from the working resolution down to the checkpoint's ``max_mpp``; an
image coarser than that gets a warning. Maps come back at the input's size. Without an ``mpp``
the image is taken to be at the working resolution or coarser, which holds for 20x tiles and
below; 40x tiles (0.25 um/px) should say so, or fine texture may be taken for sharp detail.

Examples:
    >>> image = np.zeros((100, 60, 3), np.uint8)
    >>> to_working(image, mpp=0.25, working=0.5).shape  # a 40x tile halves
    (50, 30, 3)
    >>> to_working(image, mpp=2.0, working=0.5).shape  # a 5x tile is judged as it is
    (100, 60, 3)
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
UNRELIABLE_RATIO = 8.0  # shrinking by more than this: fine blur is averaged away
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


def coarsest_mpp(config: dict) -> float:
    """The coarsest resolution of sharp tissue a checkpoint was trained on (``max_mpp``).

    Checkpoints without one are taken to hold up to 4x their working resolution.

    >>> coarsest_mpp({"inference": {"mpp": 0.5, "max_mpp": 2.5}}), coarsest_mpp({})
    (2.5, 2.0)
    """
    value = config.get("inference", {}).get("max_mpp")
    if value is None:
        return 4 * working_mpp(config)
    return float(check_mpp(float(value), "the checkpoint's inference.max_mpp"))


def scale_factor(
    mpp: float | None, working: float, warn: bool = True, coarsest: float | None = None
) -> float:
    """Working pixels per input pixel: below 1 for finer images, 1 otherwise (never enlarged).

    ``warn``s when the image is more than 8x finer than ``working`` or coarser than ``coarsest``.

    >>> scale_factor(0.25, 0.5), scale_factor(None, 0.5), scale_factor(2.0, 0.5)
    (0.5, 1.0, 1.0)
    """
    mpp = check_mpp(mpp)
    if mpp is None:
        return 1.0
    factor = mpp / working
    if warn and 1 / factor > UNRELIABLE_RATIO:
        log.warning(
            "The image is at %g um/px, more than %gx finer than the model's %g um/px: the "
            "result is unreliable.",
            mpp,
            UNRELIABLE_RATIO,
            working,
        )
    if warn and coarsest is not None and mpp > coarsest * 1.01:
        log.warning(
            "The image is at %g um/px, coarser than any sharp tissue the model was trained on "
            "(%g um/px): the result is unreliable.",
            mpp,
            coarsest,
        )
    return min(1.0, factor)


def to_working(
    image: np.ndarray, mpp: float | None, working: float, coarsest: float | None = None
) -> np.ndarray:
    """``image`` area-averaged down to the working resolution when finer, else unchanged.

    An image within 1 % of the working resolution is returned as is.
    """
    factor = scale_factor(mpp, working, coarsest=coarsest)
    if factor > 0.99:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    out = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return out.reshape(size[1], size[0], *image.shape[2:])


def to_input_size(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A working-resolution map (h, w) back at the input's ``shape`` (H, W), bilinearly."""
    h, w = shape
    if values.shape[:2] == (h, w):
        return values
    return cv2.resize(values, (w, h), interpolation=cv2.INTER_LINEAR)
