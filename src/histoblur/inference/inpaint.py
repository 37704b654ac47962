"""Classical fills of masked regions: Telea, Navier-Stokes, Laplace, ring harmonisation.

``telea`` and ``ns`` paint the region from its border and discard what it shows; ``laplace``
discards it too and solves Laplace's equation inside the region with the border as boundary
values (the smoothest surface through the surrounding pixels: the membrane fill). ``harmonise``
keeps what the region shows: an artifact that washes out, darkens or tints tissue (bubble, fold,
marker ink) still shows the tissue's structure, so each connected region's core is mapped channel
by channel, ``(x - mean_core) / std_core * std_ring + mean_ring``, onto the colour statistics of
the ring of unmasked pixels around it; its outer edge (a bubble's rim, an ink stroke's soft edge)
is painted by Telea, and a region with no structure left (a blank block) by the mean of the
Telea and Laplace fills (Telea carries the border's edges inwards, Laplace is the smoothest
guess; on held-out blocks their mean scores higher SSIM than Telea and higher FSIM than Laplace).
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
import scipy.sparse as sparse
import scipy.sparse.linalg as sparse_linalg

from histoblur.errors import InputError, ParameterError
from histoblur.io.images import check_image

METHODS = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}
FILLS = (*METHODS, "laplace", "harmonise")
Fill = Literal["telea", "ns", "laplace", "harmonise"]
EDGE, RING = 3, 12  # harmonise: edge band painted by Telea, ring whose statistics are matched
MIN_PIXELS = 16  # a core or ring smaller than this is not harmonised
MIN_STD = 1.0 / 255  # a core channel flatter than one grey level carries no structure


def inpaint(
    image: np.ndarray, mask: np.ndarray, method: Fill = "telea", radius: int = 5
) -> np.ndarray:
    """``image`` with its ``mask`` (H, W, bool) pixels filled (one of :data:`FILLS`).

    uint8 images are filled directly; other types go through 8 bits for OpenCV and only the
    masked pixels take the result, so pixels outside the mask are the input, bit for bit.

    Examples:
        >>> tile = np.tile(np.linspace(0, 200, 32, dtype=np.uint8), (32, 1))
        >>> hole = np.zeros((32, 32), bool); hole[10:20, 10:20] = True
        >>> filled = inpaint(tile, hole)
        >>> bool((filled[~hole] == tile[~hole]).all()), int(abs(int(filled[15, 15]) - 93)) < 20
        (True, True)

    Raises:
        InputError: a mask of another size.
        ParameterError: an unknown method.
    """
    check_image(image)
    if mask.shape != image.shape[:2]:
        raise InputError("The mask and the image differ in size.")
    if method not in FILLS:
        raise ParameterError(f"Unknown fill {method!r}; choose {', '.join(FILLS)}.")
    mask = np.asarray(mask, bool)
    if method == "harmonise":
        harmonised, done, blank = _harmonise(image, mask)
        if blank.any():
            smooth, edges = (inpaint(harmonised, blank, m, radius) for m in ("laplace", "telea"))
            mean = (smooth.astype(np.float64) + edges) / 2
            harmonised = _paste(harmonised, np.round(_colour(mean)).astype(image.dtype), blank)
        rest = mask & ~done & ~blank
        return inpaint(harmonised, rest, "telea", radius) if rest.any() else harmonised
    if method == "laplace":
        # a mask over the whole image leaves no boundary values: nothing to solve from
        return (
            _paste(image, _laplace(image, mask), mask)
            if 0 < mask.sum() < mask.size
            else image.copy()
        )
    grey = image.ndim == 2 or image.shape[2] == 1
    peak = _peak(image)
    work = np.round(image.astype(np.float64) / peak * 255).astype(np.uint8)
    plane = work.reshape(*work.shape[:2], -1)
    colour = np.ascontiguousarray(plane[..., 0] if grey else plane[..., :3])
    filled = cv2.inpaint(colour, mask.astype(np.uint8), radius, METHODS[method])
    filled = np.round(filled.astype(np.float64) / 255 * peak).astype(image.dtype)
    return _paste(image, filled, mask)


def _harmonise(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map each region's core onto its ring's colour statistics.

    Returns ``image`` with the cores mapped, the pixels done and the regions with no structure
    left.
    """
    values = _colour(image).astype(np.float64) / _peak(image)
    out, done, blank = values.copy(), np.zeros(mask.shape, bool), np.zeros(mask.shape, bool)
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    for label in range(1, count):
        region = (labels == label).astype(np.uint8)
        core = cv2.erode(region, _disk(EDGE)).astype(bool)
        ring = cv2.dilate(region, _disk(RING)).astype(bool) & ~mask
        if core.sum() < MIN_PIXELS or ring.sum() < MIN_PIXELS:
            continue
        inside, around = values[core], values[ring]
        spread = inside.std(axis=0)
        if (spread < MIN_STD).any():
            blank |= region.astype(bool)  # nothing of the tissue is left to keep
            continue
        out[core] = (inside - inside.mean(axis=0)) / spread * around.std(axis=0) + around.mean(
            axis=0
        )
        done |= core
    filled = np.round(np.clip(out, 0, 1) * _peak(image)).astype(image.dtype)
    return _paste(image, filled, done), done, blank


def _laplace(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The colour channels with the ``mask`` pixels solving Laplace's equation.

    A 4-neighbour stencil, the unmasked pixels as boundary values, no flux across the image
    border.
    """
    values = _colour(image).astype(np.float64)
    ys, xs = np.nonzero(mask)
    index = np.full(mask.shape, -1)
    index[ys, xs] = np.arange(len(ys))
    rows, cols, degree = [], [], np.zeros(len(ys))
    rhs = np.zeros((len(ys), values.shape[2]))
    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < mask.shape[0]) & (nx >= 0) & (nx < mask.shape[1])
        degree += inside
        me, ny, nx = np.nonzero(inside)[0], ny[inside], nx[inside]
        unknown = mask[ny, nx]
        rows.append(me[unknown])
        cols.append(index[ny[unknown], nx[unknown]])
        np.add.at(rhs, me[~unknown], values[ny[~unknown], nx[~unknown]])
    diagonal = np.arange(len(ys))
    system = sparse.csc_matrix(
        (
            np.concatenate([-np.ones(sum(map(len, rows))), degree]),
            (np.concatenate([*rows, diagonal]), np.concatenate([*cols, diagonal])),
        ),
        shape=(len(ys), len(ys)),
    )
    solved = sparse_linalg.spsolve(system + sparse.eye(len(ys)) * 1e-9, rhs)
    out = values.copy()
    out[ys, xs] = np.asarray(solved).reshape(len(ys), -1)
    peak = _peak(image)
    return np.round(np.clip(out, 0, peak)).astype(image.dtype)


def _colour(image: np.ndarray) -> np.ndarray:
    """The colour channels of ``image`` as (H, W, C): its grey plane or its first three."""
    planes = image.reshape(*image.shape[:2], -1)
    return planes[..., :1] if planes.shape[2] == 1 else planes[..., :3]


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _peak(image: np.ndarray) -> int:
    return 255 if image.dtype == np.uint8 else int(np.iinfo(image.dtype).max)


def _paste(image: np.ndarray, filled: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` with the colour channels ``filled`` (H, W[, C]) copied where ``mask`` is set."""
    grey = image.ndim == 2 or image.shape[2] == 1
    out = image.copy()
    target = out if image.ndim == 2 else out[..., 0] if grey else out[..., :3]
    target[mask] = filled.reshape(target.shape)[mask]  # a view of out: only masked pixels change
    return out
