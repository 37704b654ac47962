"""Pair preparation: conversion, cropping, registration and magnification of the blurred image.

The generic steps (centre-crop boxes, cropping, the phase-correlation estimate and the overlap of
two images at an integer shift) come from :mod:`histoblur.synthesis.register`, whose shift
convention this module shares: ``(dy, dx)`` means the content at ``(y, x)`` of the sharp image is
at ``(y + dy, x + dx)`` of the blurred image. What is specific to calibration stays here: the
refinement of the shift by the residual of a fitted PSF, and the magnification search.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from histoblur.calibration.config import CalibrationConfig
from histoblur.calibration.search import Param, Scorer, SearchSpace, fit_continuous, max_half
from histoblur.errors import InputError
from histoblur.io.images import check_image, split_alpha, to_float, to_gray_float
from histoblur.synthesis.register import centre_box, crop, overlap_boxes, phase_correlate


@dataclass(frozen=True)
class PreparedPair:
    """A pair ready for fitting: float32 ``(H, W, C)`` arrays in [0, 1] of the same shape.

    Attributes:
        sharp: the in-focus image.
        blurred: the out-of-focus image.
        shift: integer (dy, dx) displacement of the blurred content relative to the sharp one,
            removed by cropping (0, 0 without registration).
        sharp_origin: (row, col) of the fitted window's top-left corner in the sharp input.
        blurred_origin: the same in the blurred input.
        notes: sentences about what was done to the inputs.
    """

    sharp: np.ndarray
    blurred: np.ndarray
    shift: tuple[int, int]
    sharp_origin: tuple[int, int]
    blurred_origin: tuple[int, int]
    notes: tuple[str, ...]


def _as_float_channels(image: np.ndarray, name: str) -> np.ndarray:
    check_image(image, name=name)
    colour, _ = split_alpha(image)
    f = to_float(colour)
    return f[..., None] if f.ndim == 2 else f


def luma(f: np.ndarray) -> np.ndarray:
    """Luma (BT.601) of a float (H, W, C) image as float32 (H, W)."""
    return to_gray_float(f)


def phase_shift(sharp: np.ndarray, blurred: np.ndarray) -> tuple[int, int]:
    """Integer (dy, dx) by which the blurred content is displaced relative to the sharp one.

    Phase correlation of the luma with a Hann window; both arrays are float (H, W) or
    (H, W, C) of the same size.
    """
    a = (luma(sharp) if sharp.ndim == 3 else sharp).astype(np.float64)
    b = (luma(blurred) if blurred.ndim == 3 else blurred).astype(np.float64)
    dy, dx, _ = phase_correlate(a - a.mean(), b - b.mean())
    return int(round(dy)), int(round(dx))


def prepare_pair(
    sharp: np.ndarray,
    blurred: np.ndarray,
    config: CalibrationConfig,
    shift: tuple[int, int] | None = None,
    scale: float | None = None,
) -> PreparedPair:
    """Convert, align and crop a (sharp, blurred) pair for fitting.

    Integer images are scaled to [0, 1] and alpha is dropped; if one image is grey and the other
    colour, both are fitted as luma. The blurred image is first resampled by ``1 / scale``
    (default ``config.scale``) when that is not 1. Images of different sizes are centre-cropped
    to their common size when ``config.crop`` or ``config.registration`` is set; registration
    then removes an integer translation (``shift`` if given, else the phase-correlation
    estimate). Finally the pair is centre-cropped to ``config.max_size``.

    Raises:
        InputError: for unusable images, different sizes without crop or registration, or a pair
            too small for the scoring border.
    """
    s = _as_float_channels(sharp, "sharp image")
    b = _as_float_channels(blurred, "blurred image")
    notes: list[str] = []
    if s.shape[2] != b.shape[2]:
        s, b = luma(s)[..., None], luma(b)[..., None]
        notes.append("one image is grey and the other colour: both fitted as luma")
    scale = config.scale if scale is None else scale
    if abs(scale - 1.0) > 1e-6:
        size = (max(1, round(b.shape[1] / scale)), max(1, round(b.shape[0] / scale)))
        interpolation = cv2.INTER_AREA if scale > 1 else cv2.INTER_CUBIC
        resampled = cv2.resize(b, size, interpolation=interpolation)
        b = np.clip(resampled.reshape(size[1], size[0], -1), 0.0, 1.0)
        notes.append(f"resampled the blurred image by 1/{scale:.4f} to {size[1]}x{size[0]}")
    if s.shape[:2] != b.shape[:2] and not (config.crop or config.registration):
        raise InputError(
            f"The sharp image is {s.shape[0]} x {s.shape[1]} px and the blurred image is "
            f"{b.shape[0]} x {b.shape[1]} px; use --crop to centre-crop both to the common size "
            "or --register to align them by phase correlation."
        )
    common = (min(s.shape[0], b.shape[0]), min(s.shape[1], b.shape[1]))
    s_box, b_box = centre_box(s.shape, *common), centre_box(b.shape, *common)
    if s.shape[:2] != b.shape[:2]:
        notes.append(
            f"centre-cropped {s.shape[0]}x{s.shape[1]} and {b.shape[0]}x{b.shape[1]} "
            f"to {common[0]}x{common[1]}"
        )
    s, b = crop(s, s_box), crop(b, b_box)
    so, bo = s_box[:2], b_box[:2]
    dy, dx = 0, 0
    if config.registration:
        dy, dx = shift if shift is not None else phase_shift(s, b)
        s_box, b_box = overlap_boxes(common, (dy, dx))
        h, w = s_box[2] - s_box[0], s_box[3] - s_box[1]
        if h < common[0] // 2 or w < common[1] // 2:
            raise InputError(
                f"Registration found a shift of ({dy}, {dx}) px, more than half the image; "
                "the two images do not show the same field."
            )
        s, b = crop(s, s_box), crop(b, b_box)
        so = (so[0] + s_box[0], so[1] + s_box[1])
        bo = (bo[0] + b_box[0], bo[1] + b_box[1])
    if config.max_size is not None and max(s.shape[:2]) > config.max_size:
        size = (min(s.shape[0], config.max_size), min(s.shape[1], config.max_size))
        c = centre_box(s.shape, *size)
        s, b = crop(s, c), crop(b, c)
        so, bo = (so[0] + c[0], so[1] + c[1]), (bo[0] + c[0], bo[1] + c[1])
        notes.append(f"centre-cropped to {size[0]}x{size[1]} (max size {config.max_size})")
    border = config.scoring_border() + (config.register_search if config.registration else 0)
    if min(s.shape[:2]) - 2 * border < 16:
        raise InputError(
            f"The aligned pair is {s.shape[0]} x {s.shape[1]} px, too small to score with a "
            f"{border} px border; use larger images or a smaller --max-radius / --max-length."
        )
    return PreparedPair(
        np.ascontiguousarray(s, np.float32),
        np.ascontiguousarray(b, np.float32),
        (int(dy), int(dx)),
        so,
        bo,
        tuple(notes),
    )


class _ShiftedScorer:
    """Scores kernels displaced by an integer (dy, dx): the model content moves by that much."""

    def __init__(self, scorer: Scorer, dy: int, dx: int, reach: int) -> None:
        self.scorer, self.dy, self.dx, self.reach = scorer, dy, dx, reach

    def loss(self, kernel: np.ndarray) -> float:
        """Residual MSE of ``kernel`` moved by (dy, dx)."""
        r = self.reach
        k = np.pad(kernel, r)
        return self.scorer.loss(np.roll(k, (self.dy, self.dx), axis=(0, 1)))


def refine_shift(pair: PreparedPair, config: CalibrationConfig) -> tuple[tuple[int, int], float]:
    """Integer correction to a pair's registration that best explains it with a Gaussian PSF.

    Phase correlation whitens the spectra, so on a strongly defocused image (little energy
    left at high frequencies) its peak can be off by a few pixels. This step fits a Gaussian
    (symmetric, so it cannot absorb a shift), then tries every integer displacement of it within
    ``config.register_search`` pixels and keeps the one with the lowest residual; the fit and the
    search alternate until the displacement stops changing (at most three rounds).

    Returns:
        ``((dy, dx), mse)``: the correction to add to ``pair.shift`` and the residual of the
        Gaussian fit there (luma).
    """
    reach = config.register_search
    space = SearchSpace("gaussian", (Param("sigma", 0.2, config.max_radius / 2, 10),))
    half = max_half([space])
    scorer = Scorer(
        luma(pair.sharp)[..., None],
        luma(pair.blurred)[..., None],
        config.scoring_border() + reach,
        half + reach,
    )
    best = (0, 0)
    for _ in range(3):
        x, _ = fit_continuous(space, _ShiftedScorer(scorer, *best, reach))
        kernel = space.kernel(x, {})
        shifts = itertools.product(range(-reach, reach + 1), repeat=2)
        losses = {d: _ShiftedScorer(scorer, *d, reach).loss(kernel) for d in shifts}
        found = min(losses, key=lambda d: losses[d])
        if found == best:
            break
        best = found
    return best, losses[best]


def align_pair(
    sharp: np.ndarray, blurred: np.ndarray, config: CalibrationConfig, scale: float | None = None
) -> tuple[PreparedPair, float]:
    """:func:`prepare_pair`, then (with ``config.registration``) :func:`refine_shift`.

    The pair is re-cropped at the refined shift and refined again until the shift stops moving
    (at most four moves), so a phase-correlation estimate that is off by more than
    ``config.register_search`` pixels is still corrected.

    Returns:
        The pair and the residual MSE of a Gaussian fit to it (luma; NaN without registration).
    """
    pair = prepare_pair(sharp, blurred, config, scale=scale)
    if not config.registration:
        return pair, math.nan
    coarse = pair.shift
    delta, loss = refine_shift(pair, config)
    visited = {pair.shift}
    for _ in range(4):
        target = (pair.shift[0] + delta[0], pair.shift[1] + delta[1])
        if target in visited:
            break
        visited.add(target)
        pair = prepare_pair(sharp, blurred, config, target, scale)
        delta, loss = refine_shift(pair, config)
    note = (
        f"registered: phase correlation ({coarse[0]}, {coarse[1]}) px, refined to "
        f"({pair.shift[0]}, {pair.shift[1]}) px (blurred content displacement dy, dx)"
    )
    return replace(pair, notes=(*pair.notes, note)), loss


def estimate_scale(sharp: np.ndarray, blurred: np.ndarray, config: CalibrationConfig) -> float:
    """Magnification of the blurred image relative to the sharp one, by fit quality.

    Tries scales in ``config.scale * [1 - scale_search, 1 + scale_search]`` on a grid of steps
    of at most 0.01, then refines between the best point's neighbours with a bounded Brent
    search; each scale is scored by the residual of a Gaussian PSF fitted after registration.
    """
    r = config.scale_search
    if r == 0:
        return config.scale
    cache: dict[float, float] = {}

    def objective(scale: float) -> float:
        key = round(float(scale), 5)
        if key not in cache:
            try:
                cache[key] = align_pair(sharp, blurred, config, key)[1]
            except InputError:
                cache[key] = math.inf
        return cache[key]

    grid = config.scale * np.linspace(1 - r, 1 + r, 2 * math.ceil(r / 0.01) + 1)
    losses = [objective(g) for g in grid]
    i = int(np.argmin(losses))
    lo, hi = grid[max(0, i - 1)], grid[min(len(grid) - 1, i + 1)]
    from scipy.optimize import minimize_scalar  # here: scipy.optimize takes ~0.3 s to import

    res = minimize_scalar(objective, bounds=(lo, hi), method="bounded", options={"xatol": 2e-4})
    return round(float(res.x), 5) if res.fun <= losses[i] else round(float(grid[i]), 5)
