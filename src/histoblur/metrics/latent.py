"""Geometry of latent codes along the focal axis: how linear a focal sweep is in code space.

A focal sequence is the codes ``z_0 .. z_N`` (rows, flattened) of planes at focal positions
``p_0 .. p_N``; its linear path ``z'_n`` runs straight from ``z_0`` to ``z_N``, placed by the
positions. The Linear Dependence Score (eq. 6 of the latent-interpolation paper) is the mean
cosine similarity of ``z'_n`` and ``z_n``; the Average Pairwise Distance (eq. 7) compares the
gaps between consecutive codes on both paths. Distances are root-mean-square differences per
code element, so the scores do not grow with the size of the code.

Examples:
    >>> codes = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 1.0]])  # a sweep that bends away
    >>> path = linear_path(codes, [0.0, 1.0, 2.0])
    >>> path.tolist()
    [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    >>> round(linear_dependence_score(codes, path), 3)  # mean cosine similarity, 1 best
    0.902
    >>> round(average_pairwise_distance(codes, path), 3)  # 0 best
    0.429
    >>> linear_dependence_score(path, path), average_pairwise_distance(path, path)  # straight
    (1.0, 0.0)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def linear_path(codes: np.ndarray, positions: Sequence[float]) -> np.ndarray:
    """``z'_n``: the straight line from the first to the last code, at the planes' positions.

    Args:
        codes: (N + 1, D) codes in focal order.
        positions: N + 1 focal positions (any unit, first and last distinct).
    """
    p = np.asarray(positions, np.float64)
    if len(p) != len(codes) or p[-1] == p[0]:
        raise ValueError("give one position per code, with distinct ends")
    t = ((p - p[0]) / (p[-1] - p[0]))[:, None]
    return (1 - t) * codes[0] + t * codes[-1]


def linear_dependence_score(codes: np.ndarray, path: np.ndarray) -> float:
    """Eq. 6 for one sequence: mean cosine similarity of codes and their linear path (1 best)."""
    a, b = np.asarray(codes, np.float64), np.asarray(path, np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.einsum("nd,nd->n", a, b) / np.maximum(norms, 1e-12)
    return float(cos.mean())


def _gaps(z: np.ndarray) -> np.ndarray:
    return np.sqrt(((z[1:] - z[:-1]) ** 2).mean(axis=1))


def average_pairwise_distance(codes: np.ndarray, path: np.ndarray) -> float:
    """Eq. 7 for one sequence: ``sum |d(z_n, z_n+1) - d(z'_n, z'_n+1)| / (N + 1)`` (0 best)."""
    a, b = np.asarray(codes, np.float64), np.asarray(path, np.float64)
    return float(np.abs(_gaps(a) - _gaps(b)).sum() / len(a))
