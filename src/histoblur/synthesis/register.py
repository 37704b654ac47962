"""Alignment of two images of the same field (focal planes, in-focus and out-of-focus scans).

The two images are centre-cropped to their common size, the translation between them is
estimated by phase correlation on the luma (Hann window against edge effects) at several
resolutions, checked by normalised correlation (:func:`estimate_shift`), and both are then
cropped to the region they share. The shift is a whole number of pixels, applied by cropping
only: the real pixels are never resampled, because interpolation would itself blur them, so a
sub-pixel residue (up to about half a pixel) remains.

Shift convention: ``shift = (dy, dx)`` means the content at ``(y, x)`` of the sharp image appears
at ``(y + dy, x + dx)`` of the blurred image (both in centre-crop coordinates).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from histoblur.config import Config
from histoblur.errors import InputError
from histoblur.io.images import check_image, to_gray_float

Box = tuple[int, int, int, int]

# Phase correlation is tried at these downsampling factors (see ``estimate_shift``).
PYRAMID_SCALES = (1, 2, 4)
# Gaussian sigma (px) applied to both lumas before the candidate shifts are scored.
SMOOTH_SIGMA = 2.0
# Smallest side (px) registered, and smallest side of a downsampled level that is used.
MIN_REGISTER_SIDE = 32


class ShiftEstimate(Config):
    """Result of :func:`estimate_shift`.

    Attributes:
        shift: whole-pixel ``(dy, dx)``.
        correlation: normalised correlation of the smoothed lumas at ``shift`` (1 is perfect).
        phase_correlation: ``(scale, dy, dx, response)`` of each phase-correlation estimate,
            in full-resolution pixels.
    """

    shift: tuple[int, int]
    correlation: float
    phase_correlation: tuple[tuple[int, float, float, float], ...]


class Registration(Config):
    """Where the aligned pair lies in each input image.

    Attributes:
        shift: integer ``(dy, dx)`` applied by cropping (see the module docstring for the sign).
        correlation: normalised correlation of the smoothed lumas at ``shift`` (1 is perfect;
            defocus and a changed background lower it).
        phase_correlation: the estimates ``(scale, dy, dx, response)`` the shift was chosen
            from (empty when registration was switched off).
        registered: whether the shift was estimated (False: the images were only centre-cropped).
        sharp_box: ``(y0, x0, y1, x1)`` of the aligned region in the sharp image.
        blurred_box: ``(y0, x0, y1, x1)`` of the aligned region in the blurred image.
    """

    shift: tuple[int, int]
    correlation: float
    phase_correlation: tuple[tuple[int, float, float, float], ...]
    registered: bool
    sharp_box: Box
    blurred_box: Box

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the aligned region."""
        y0, x0, y1, x1 = self.sharp_box
        return y1 - y0, x1 - x0


def centre_box(shape: tuple[int, ...], height: int, width: int) -> Box:
    """``(y0, x0, y1, x1)`` of the centred ``height x width`` window of an image of ``shape``."""
    y0 = (shape[0] - height) // 2
    x0 = (shape[1] - width) // 2
    return y0, x0, y0 + height, x0 + width


def crop(image: np.ndarray, box: Box) -> np.ndarray:
    """The ``(y0, x0, y1, x1)`` window of ``image`` (a view)."""
    y0, x0, y1, x1 = box
    return image[y0:y1, x0:x1]


def phase_correlate(reference: np.ndarray, moving: np.ndarray) -> tuple[float, float, float]:
    """Translation of ``moving`` relative to ``reference`` by Hann-windowed phase correlation.

    Args:
        reference: float luma ``(H, W)``.
        moving: float luma of the same size.

    Returns:
        ``(dy, dx, response)``: the content at ``(y, x)`` of ``reference`` is at
        ``(y + dy, x + dx)`` of ``moving``; ``response`` is the correlation peak.
    """
    height, width = reference.shape
    window = cv2.createHanningWindow((width, height), cv2.CV_64F)
    (dx, dy), response = cv2.phaseCorrelate(
        reference.astype(np.float64), moving.astype(np.float64), window
    )
    return float(dy), float(dx), float(response)


def correlation(reference: np.ndarray, moving: np.ndarray, shift: tuple[int, int]) -> float:
    """Zero-mean normalised correlation of two lumas over their overlap at an integer shift.

    Returns:
        A value in [-1, 1]; -1 when the overlap is flat or empty.
    """
    box_a, box_b = overlap_boxes(reference.shape[:2], shift)
    a = crop(reference, box_a).astype(np.float64)
    b = crop(moving, box_b).astype(np.float64)
    if a.size == 0:
        return -1.0
    a = a - a.mean()
    b = b - b.mean()
    norm = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / norm if norm > 0 else -1.0


def estimate_shift(reference: np.ndarray, moving: np.ndarray) -> ShiftEstimate:
    """Whole-pixel translation of ``moving`` relative to ``reference``.

    Phase correlation whitens the spectrum, so at full resolution it can lock onto fine
    patterns the two images share but the tissue does not (JPEG 8 x 8 block grids, fixed sensor
    patterns), where the defocused image has no tissue detail left. It is therefore run at
    full, half and quarter resolution (area-averaged luma, Hann window); each estimate, rounded,
    and its eight neighbours are scored by the normalised correlation of the two lumas (both
    smoothed with a Gaussian of sigma ``SMOOTH_SIGMA`` px) over their overlap, and the best
    scoring shift wins.

    Args:
        reference: image ``(H, W)`` or ``(H, W, C)``.
        moving: image of the same height and width.

    Returns:
        The chosen shift, its correlation and every phase-correlation estimate.

    Raises:
        InputError: if the sizes differ or the images carry no structure to correlate.
    """
    if reference.shape[:2] != moving.shape[:2]:
        raise InputError(
            f"Images of size {reference.shape[:2]} and {moving.shape[:2]} cannot be "
            "registered; crop them to a common size first."
        )
    a = to_gray_float(reference).astype(np.float64)
    b = to_gray_float(moving).astype(np.float64)
    height, width = a.shape
    if min(height, width) < MIN_REGISTER_SIDE:
        raise InputError(
            f"Images of {height} x {width} px are too small to register "
            f"(at least {MIN_REGISTER_SIDE} px a side)."
        )
    estimates = []
    for scale in PYRAMID_SCALES:
        if min(height, width) // scale < MIN_REGISTER_SIDE:
            continue
        size = (width // scale, height // scale)
        a_s = a if scale == 1 else cv2.resize(a, size, interpolation=cv2.INTER_AREA)
        b_s = b if scale == 1 else cv2.resize(b, size, interpolation=cv2.INTER_AREA)
        dy, dx, response = phase_correlate(a_s, b_s)
        if all(math.isfinite(v) for v in (dy, dx, response)):
            estimates.append(
                (scale, round(dy * scale, 3), round(dx * scale, 3), round(response, 4))
            )
    smooth_a = cv2.GaussianBlur(a, (0, 0), SMOOTH_SIGMA)
    smooth_b = cv2.GaussianBlur(b, (0, 0), SMOOTH_SIGMA)
    candidates = sorted(
        {
            (int(round(dy)) + ey, int(round(dx)) + ex)
            for _, dy, dx, _ in estimates
            for ey in (-1, 0, 1)
            for ex in (-1, 0, 1)
        }
    )
    candidates = [c for c in candidates if abs(c[0]) <= height // 2 and abs(c[1]) <= width // 2]
    if not candidates:
        raise InputError(
            "Registration failed: the images carry no structure to correlate (if they are "
            "already aligned, skip registration: bench real-pairs --no-register)."
        )
    scores = [(correlation(smooth_a, smooth_b, c), c) for c in candidates]
    best_score, best = max(scores, key=lambda sc: sc[0])  # first of equals: candidates sorted
    if best_score <= 0:
        raise InputError(
            "Registration failed: no shift makes the two images correlate; check that they "
            "show the same field (if they are already aligned, skip registration: bench "
            "real-pairs --no-register)."
        )
    return ShiftEstimate(
        shift=best, correlation=round(best_score, 4), phase_correlation=tuple(estimates)
    )


def overlap_boxes(size: tuple[int, int], shift: tuple[int, int]) -> tuple[Box, Box]:
    """Boxes of the shared region in two ``size`` images related by the integer ``shift``.

    Returns:
        ``(box_in_first, box_in_second)`` in the images' own coordinates; empty boxes (zero
        height or width) when the shift is larger than the image.
    """
    height, width = size
    dy, dx = shift
    y0, y1 = max(0, -dy), min(height, height - dy)
    x0, x1 = max(0, -dx), min(width, width - dx)
    y1, x1 = max(y0, y1), max(x0, x1)
    return (y0, x0, y1, x1), (y0 + dy, x0 + dx, y1 + dy, x1 + dx)


def align_pair(
    sharp: np.ndarray, blurred: np.ndarray, register: bool = True
) -> tuple[np.ndarray, np.ndarray, Registration]:
    """Crop two images of one field to their common, aligned region.

    Args:
        sharp: the in-focus image.
        blurred: the out-of-focus image of the same field (may differ in size by a few pixels).
        register: estimate and remove the translation; otherwise only centre-crop to the
            common size (use for pairs known to be pixel-aligned).

    Returns:
        ``(sharp_aligned, blurred_aligned, registration)``; the two arrays have the same shape.

    Raises:
        InputError: if the channel counts or dtypes differ, or the images do not overlap.
    """
    check_image(sharp, "sharp image")
    check_image(blurred, "blurred image")
    sc = 1 if sharp.ndim == 2 else sharp.shape[2]
    bc = 1 if blurred.ndim == 2 else blurred.shape[2]
    if sc != bc:
        raise InputError(
            f"The sharp image has {sc} channel(s) and the blurred image {bc}; "
            "convert both to the same colour mode first."
        )
    if sharp.dtype != blurred.dtype:
        raise InputError(
            f"The sharp image is {sharp.dtype} and the blurred image {blurred.dtype}; "
            "use the same bit depth for both."
        )
    height = min(sharp.shape[0], blurred.shape[0])
    width = min(sharp.shape[1], blurred.shape[1])
    s_centre = centre_box(sharp.shape, height, width)
    b_centre = centre_box(blurred.shape, height, width)
    if register:
        estimate = estimate_shift(crop(sharp, s_centre), crop(blurred, b_centre))
    else:
        gray_s = to_gray_float(crop(sharp, s_centre))
        gray_b = to_gray_float(crop(blurred, b_centre))
        smooth = [cv2.GaussianBlur(g, (0, 0), SMOOTH_SIGMA) for g in (gray_s, gray_b)]
        score = correlation(smooth[0], smooth[1], (0, 0))
        estimate = ShiftEstimate(shift=(0, 0), correlation=round(score, 4), phase_correlation=())
    shift = estimate.shift
    s_box, b_box = overlap_boxes((height, width), shift)
    s_box = _offset(s_box, s_centre)
    b_box = _offset(b_box, b_centre)
    if s_box[2] <= s_box[0] or s_box[3] <= s_box[1]:
        raise InputError(
            f"The estimated shift {shift} leaves no overlap between the images; "
            "check that they show the same field."
        )
    registration = Registration(
        shift=shift,
        correlation=estimate.correlation,
        phase_correlation=estimate.phase_correlation,
        registered=register,
        sharp_box=s_box,
        blurred_box=b_box,
    )
    return crop(sharp, s_box), crop(blurred, b_box), registration


def _offset(box: Box, origin: Box) -> Box:
    y0, x0, y1, x1 = box
    return y0 + origin[0], x0 + origin[1], y1 + origin[0], x1 + origin[1]


def register_planes(planes: list[np.ndarray], reference: int) -> list[np.ndarray]:
    """Centre-crop to the common size, shift each plane onto ``reference``, crop the overlap."""
    return register_planes_box(planes, reference)[0]


def register_planes_box(planes: list[np.ndarray], reference: int) -> tuple[list[np.ndarray], Box]:
    """:func:`register_planes` and the ``(y0, x0, y1, x1)`` box of the overlap in ``reference``.

    >>> rng = np.random.default_rng(0)
    >>> field = cv2.GaussianBlur(rng.random((80, 80)).astype(np.float32), (0, 0), 2)
    >>> a, b = field[10:60, 10:70], field[13:63, 8:68]  # b is a, moved 3 down and 2 left
    >>> (ra, rb), box = register_planes_box([a, b], reference=0)
    >>> ra.shape, box, bool(np.allclose(ra, rb))
    ((47, 58), (3, 0, 50, 58), True)
    """
    h = min(p.shape[0] for p in planes)
    w = min(p.shape[1] for p in planes)
    cy, cx = centre_box(planes[reference].shape, h, w)[:2]
    planes = [crop(p, centre_box(p.shape, h, w)) for p in planes]
    ref = to_gray_float(planes[reference])
    shifts = [
        (0, 0) if i == reference else estimate_shift(ref, to_gray_float(p)).shift
        for i, p in enumerate(planes)
    ]
    dy = [s[0] for s in shifts]
    dx = [s[1] for s in shifts]
    y0, x0 = -min(dy), -min(dx)
    hh, ww = h - (max(dy) - min(dy)), w - (max(dx) - min(dx))
    crops = [
        np.ascontiguousarray(p[y0 + sy : y0 + sy + hh, x0 + sx : x0 + sx + ww])
        for p, (sy, sx) in zip(planes, shifts, strict=True)
    ]
    return crops, (cy + y0, cx + x0, cy + y0 + hh, cx + x0 + ww)
    dy = [s[0] for s in shifts]
    dx = [s[1] for s in shifts]
    y0, x0 = -min(dy), -min(dx)
    hh, ww = h - (max(dy) - min(dy)), w - (max(dx) - min(dx))
    return [
        np.ascontiguousarray(p[y0 + sy : y0 + sy + hh, x0 + sx : x0 + sx + ww])
        for p, (sy, sx) in zip(planes, shifts, strict=True)
    ]
