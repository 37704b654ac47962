"""How far a classifier's confidence can be trusted: expected calibration error, temperature.

Examples:
    Always 90 % sure and right 70 % of the time: over-confident by 0.2, fixed by a temperature.

    >>> probs = np.array([[0.9, 0.1]] * 10)
    >>> labels = np.array([0] * 7 + [1] * 3)
    >>> round(expected_calibration_error(probs, labels), 3)
    0.2
    >>> logits = np.log(probs)
    >>> t = fit_temperature(logits, labels)
    >>> t > 1, round(expected_calibration_error(softmax(logits, t), labels), 3)
    (True, 0.0)
"""

from __future__ import annotations

import numpy as np
import torch

from histoblur.errors import ParameterError


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` (float64).

    Examples:
        >>> softmax(np.array([[2.0, 0.0], [0.0, 0.0]])).round(3)
        array([[0.881, 0.119],
               [0.5  , 0.5  ]])
        >>> softmax(np.array([[2.0, 0.0]]), temperature=2.0).round(3)  # softer
        array([[0.731, 0.269]])
    """
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size.

    Args:
        probs: (N, K) class probabilities.
        labels: (N,) true class indices.
        bins: number of confidence bins on [0, 1].

    Raises:
        ParameterError: probabilities that are not (N, K) with N > 0, or labels not (N,).

    Examples:
        >>> expected_calibration_error(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1]))
        0.0
        >>> probs = np.array([[0.9, 0.1]] * 10)  # 90 % sure, right half of the time
        >>> round(expected_calibration_error(probs, np.array([0] * 5 + [1] * 5)), 3)
        0.4
    """
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    if probs.ndim != 2 or labels.shape != (probs.shape[0],) or probs.shape[0] == 0:
        raise ParameterError("ECE needs (N, K) probabilities and N labels, N > 0.")
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T > 0 minimising the negative log-likelihood of ``softmax(logits / T)``.

    The result is clipped to [0.05, 20].

    Examples:
        Logits (4, 0) for four images of which three are class 0: the best probability is
        3/4, so ``T = 4 / ln 3 = 3.64``.

        >>> logits = np.array([[4.0, 0.0]] * 4)
        >>> round(fit_temperature(logits, np.array([0, 0, 0, 1])), 2)
        3.64
    """
    x = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(np.clip(log_t.exp().item(), 0.05, 20.0))
