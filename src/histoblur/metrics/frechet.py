"""Frechet distance between two sets of feature vectors (as FID, on histoblur's own features).

``FD = |mu_a - mu_b|^2 + Tr(C_a + C_b - 2 (C_a C_b)^(1/2))`` for the means and covariances of
the two sets. histoblur computes it on the penultimate layer of its blur-type classifier
(:meth:`histoblur.models.classifier.BlurTypeNet.embed`), a network trained to tell blur apart;
Inception weights are not used.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg

from histoblur.errors import InputError


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between feature sets ``a`` (N, D) and ``b`` (M, D); 0 for equal sets.

    Raises:
        InputError: fewer than two vectors in a set, or different feature sizes.

    Examples:
        >>> features = np.random.default_rng(0).normal(size=(200, 3))
        >>> frechet_distance(features, features)
        0.0
        >>> round(frechet_distance(features, features + 1.0), 3)  # mean shifted by 1 in 3-D
        3.0
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise InputError(f"Feature sets must be (N, D) with the same D, got {a.shape}, {b.shape}.")
    if len(a) < 2 or len(b) < 2:
        raise InputError("Each feature set needs at least two vectors.")
    mu = a.mean(0) - b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eps = np.eye(len(ca)) * 1e-6  # fewer vectors than features leaves C singular: regularise
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm((ca + eps) @ (cb + eps))
    return float(max(0.0, mu @ mu + np.trace(ca + cb - 2 * np.real(root))))
