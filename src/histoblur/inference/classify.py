"""Blur-type classification of whole images: in focus, defocus, motion or mixed, with probabilities.

An image of any size is cut into network-sized windows; the windows with the most structure
(standard deviation of luma at least half the image's best window) are classified, their logits
averaged, and the temperature fitted on held-out data turns them into calibrated probabilities.
Windows of glass or empty background carry no blur evidence and are left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from histoblur.errors import InputError
from histoblur.inference.segment import to_network_input
from histoblur.io.checkpoints import config_number
from histoblur.io.images import check_image, to_gray_float
from histoblur.metrics.calibration import softmax
from histoblur.models.classifier import BLUR_TYPES
from histoblur.models.hub import load_pretrained, select_device

TASK = "blur-type-classification"
MAX_WINDOWS = 64
# images with a side below this carry too little structure to tell a blur type from
MIN_SIDE = 32
TOO_SMALL = "too_small"


@dataclass(frozen=True)
class BlurType:
    """Classification of one image."""

    label: str
    probabilities: dict[str, float]
    windows: int

    def row(self) -> dict[str, Any]:
        """``label`` and ``p_<class>`` columns."""
        return {
            "label": self.label,
            **{f"p_{k}": round(v, 6) for k, v in self.probabilities.items()},
        }


def window_starts(size: int, tile: int) -> list[int]:
    """Non-overlapping window origins covering ``[0, size)``; the last one ends at ``size``."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, tile))
    if starts[-1] + tile < size:
        starts.append(size - tile)
    return starts


def select_windows(x: np.ndarray, tile: int, limit: int = MAX_WINDOWS) -> np.ndarray:
    """Up to ``limit`` (N, 3, t, t) windows of a (H, W, 3) float image, most structure first."""
    h, w = x.shape[:2]
    if h < tile or w < tile:
        pad = ((0, max(0, tile - h)), (0, max(0, tile - w)), (0, 0))
        x = np.pad(x, pad, mode="reflect" if h > 1 and w > 1 else "edge")
        h, w = x.shape[:2]
    windows = [
        x[y : y + tile, c : c + tile]
        for y in window_starts(h, tile)
        for c in window_starts(w, tile)
    ]
    spread = np.array([float(to_gray_float(v).std()) for v in windows])
    order = np.argsort(-spread, kind="stable")
    keep = [i for i in order if spread[i] >= 0.5 * spread[order[0]]][:limit]
    return np.stack([windows[i].transpose(2, 0, 1) for i in keep]).astype(np.float32)


class BlurClassifier:
    """A trained blur-type classifier ready for inference.

    Args:
        model: the network (logits out).
        config: its checkpoint config (classes, tile, calibration temperature).
        batch_size: windows per forward pass.
    """

    def __init__(
        self,
        model: nn.Module,
        config: Mapping[str, Any],
        batch_size: int = 32,
        device: str | torch.device = "cpu",
    ) -> None:
        self.device = select_device(device)
        self.model = model.to(self.device).eval()
        self.config = dict(config)
        self.classes = tuple(self.config.get("classes", BLUR_TYPES))
        self.tile = config_number(self.config.get("inference", {}), "tile", 128, int)
        calibration = self.config.get("calibration", {})
        self.temperature = config_number(calibration, "temperature", 1.0, float)
        if self.tile < MIN_SIDE or self.temperature <= 0:
            raise InputError(
                f"The classifier's config gives tile {self.tile} and temperature "
                f"{self.temperature}; expected a tile of at least {MIN_SIDE} px and a positive "
                "temperature."
            )
        self.batch_size = batch_size

    @classmethod
    def load(
        cls, model: str | Path = "default", batch_size: int = 32, device: str = "cpu"
    ) -> BlurClassifier:
        """Load a shipped classifier (``default``) or a checkpoint folder onto ``device``.

        Raises:
            InputError: missing or corrupt checkpoint, one that is not a blur-type classifier,
                or an unavailable device.
        """
        network, config, _ = load_pretrained(model, TASK, device)
        return cls(network, config, batch_size, device)

    @torch.no_grad()
    def logits(self, image: np.ndarray) -> tuple[np.ndarray, int]:
        """Mean logits over the selected windows of ``image``, and the number of windows."""
        windows = select_windows(to_network_input(image), self.tile)
        out = [
            self.model(torch.from_numpy(windows[i : i + self.batch_size]).to(self.device))
            .float()
            .cpu()
            .numpy()
            for i in range(0, len(windows), self.batch_size)
        ]
        return np.concatenate(out).mean(axis=0), len(windows)

    def classify(self, image: np.ndarray) -> BlurType:
        """Label and calibrated probabilities of one image.

        Raises:
            InputError: an image with a side below :data:`MIN_SIDE` px (too small to judge).
        """
        check_image(image)
        h, w = image.shape[:2]
        if min(h, w) < MIN_SIDE:
            raise InputError(
                f"A {w} x {h} px image is too small to judge its blur type; it needs at least "
                f"{MIN_SIDE} px on each side."
            )
        logits, n = self.logits(image)
        probs = softmax(logits[None], self.temperature)[0]
        named = {c: float(p) for c, p in zip(self.classes, probs, strict=True)}
        return BlurType(self.classes[int(np.argmax(probs))], named, n)
