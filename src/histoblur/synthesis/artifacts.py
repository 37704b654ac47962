"""Artifacts to restore, for evaluating restoration: tissue folds and air bubbles.

Each function takes a float (H, W, 3) image in [0, 1] and a ``numpy.random.Generator`` and
returns ``(image with the artifact, mask)``: the mask (H, W, bool) is exactly the pixels the
artifact changed, so a restorer can be scored where the truth (the input) is known.

- :func:`fold`: a band where the section folded onto itself: two layers of tissue absorb twice,
  so the band is the product of the tissue with a shifted copy of itself (darker, more
  saturated), as folds look in bright-field.
- :func:`bubble`: an air bubble under the coverslip: inside an ellipse the tissue is washed
  out towards white with a dark refractive rim.
- :func:`pen`: marker ink drawn over the slide: thick smooth strokes of a dye that multiplies
  the transmitted light (blue, green, black or red), dense enough in places to hide the tissue.
  Flat, sharp-edged and texture-poor, it is a hard negative for blur detectors.
- :func:`blur_region`: out-of-focus polygons drawn by the project's statistical blur synthesis
  (:class:`histoblur.synthesis.augment.RandomBlurRegion`, Gaussian, lens or motion, hard edge).
"""

from __future__ import annotations

import cv2
import numpy as np

ARTIFACTS = ("fold", "bubble", "pen", "blur")
# transmittance of marker dyes in R, G, B (per unit density)
PEN_COLOURS = np.array(
    [[0.25, 0.40, 0.80], [0.30, 0.65, 0.40], [0.22, 0.22, 0.25], [0.80, 0.25, 0.30]], np.float32
)


def fold(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A straight band (10-25 % of the side wide, any angle) of doubled tissue."""
    h, w = image.shape[:2]
    angle = rng.uniform(0, np.pi)
    normal = np.array([np.cos(angle), np.sin(angle)])
    yy, xx = np.mgrid[0:h, 0:w]
    distance = (xx - rng.uniform(0.3, 0.7) * w) * normal[0] + (
        yy - rng.uniform(0.3, 0.7) * h
    ) * normal[1]
    mask = np.abs(distance) < rng.uniform(0.05, 0.125) * min(h, w)
    shift = rng.integers(5, 20, size=2)
    doubled = image * np.roll(image, tuple(int(s) for s in shift), axis=(0, 1))
    out = image.copy()
    out[mask] = doubled[mask]
    return out, mask


def bubble(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An ellipse (radii 10-30 % of the side) washed out to 70-90 % white, dark rim."""
    h, w = image.shape[:2]
    centre = (int(rng.uniform(0.3, 0.7) * w), int(rng.uniform(0.3, 0.7) * h))
    axes = tuple(int(rng.uniform(0.1, 0.3) * min(h, w)) for _ in range(2))
    canvas = np.zeros((h, w), np.uint8)
    cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    mask = canvas > 0
    rim = mask & ~cv2.erode(canvas, np.ones((5, 5), np.uint8)).astype(bool)
    white = rng.uniform(0.7, 0.9)
    out = image.copy()
    out[mask] = image[mask] * (1 - white) + white
    out[rim] = image[rim] * 0.45
    return out, mask


def pen(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One to three marker strokes (5-25 % of the side thick) of one dye; mask: where inked.

    Examples:
        >>> tile = np.full((64, 64, 3), 0.8, np.float32)
        >>> inked, mask = pen(tile, np.random.default_rng(0))
        >>> bool(mask.any()), bool((inked[mask] < tile[mask]).all())
        (True, True)
    """
    h, w = image.shape[:2]
    canvas = np.zeros((h, w), np.float32)
    side = min(h, w)
    for _ in range(int(rng.integers(1, 4))):
        start = rng.uniform(0, 1, 2) * (w, h)
        points = [start]
        heading = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(2, 6))):
            heading += rng.normal(0, 0.6)
            step = rng.uniform(0.2, 0.6) * side
            points.append(points[-1] + step * np.array([np.cos(heading), np.sin(heading)]))
        line = np.round(np.array(points)).astype(np.int32).reshape(-1, 1, 2)
        thickness = max(2, int(rng.uniform(0.05, 0.25) * side))
        cv2.polylines(canvas, [line], False, 1.0, thickness, lineType=cv2.LINE_AA)
    alpha = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.5, 2.5)) * rng.uniform(0.6, 2.0)
    dye = PEN_COLOURS[int(rng.integers(len(PEN_COLOURS)))]
    out = image.astype(np.float32) * np.power(dye, alpha[..., None])
    return out.astype(image.dtype), alpha > 0.05


def blur_region(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One to two polygons (radius 15-35 % of the side) blurred by a random blur kind."""
    from histoblur.synthesis.augment import RandomBlurRegion
    from histoblur.synthesis.masks import PolygonMaskSampler

    masks = PolygonMaskSampler(count=(1, 2), size=(0.15, 0.35), feather=0.0)
    single = image.astype(np.float32)
    out = RandomBlurRegion(masks=masks, rng=rng)(image=single)["image"]
    mask = np.any(np.abs(out - single) > 1e-6, axis=-1)
    return np.where(mask[..., None], out.astype(image.dtype), image), mask


def add_artifact(
    image: np.ndarray, kind: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One artifact of ``kind`` (``fold``, ``bubble``, ``pen`` or ``blur``).

    Raises:
        ValueError: an unknown kind.
    """
    if kind not in ARTIFACTS:
        raise ValueError(f"unknown artifact {kind!r}; known: {', '.join(ARTIFACTS)}")
    return {"fold": fold, "bubble": bubble, "pen": pen, "blur": blur_region}[kind](image, rng)
