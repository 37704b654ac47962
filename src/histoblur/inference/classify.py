"""Blur-type classification of whole images: in focus, defocus, motion or mixed, with probabilities.

An image of any size is cut into network-sized windows; the windows with the most structure
(standard deviation of luma at least half the image's best window) are classified, their logits
averaged, and the temperature fitted on held-out data turns them into calibrated probabilities.
Windows of glass or empty background carry no blur evidence and are left out.

Examples:
    >>> import skimage.data
    >>> from histoblur.synthesis import apply_blur, make_spec
    >>> tissue = skimage.data.immunohistochemistry()[100:196, 150:278]
    >>> classifier = BlurClassifier.load("default", device="cpu")
    >>> classifier.classes
    ('in_focus', 'defocus', 'motion', 'mixed')
    >>> [classifier.classify(image).label for image in (
    ...     tissue,
    ...     apply_blur(tissue, make_spec("lens", radius=4)),
    ...     apply_blur(tissue, make_spec("motion", length=15, angle=0)),
    ... )]
    ['in_focus', 'defocus', 'motion']
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
from histoblur.inference.modality import as_bright_field
from histoblur.inference.resolution import coarsest_mpp, to_working, working_mpp
from histoblur.inference.segment import to_network_input
from histoblur.io.checkpoints import config_number
from histoblur.io.images import check_image, to_gray_float
from histoblur.metrics.calibration import softmax
from histoblur.models.classifier import BLUR_TYPES
from histoblur.models.hub import autocast, load_pretrained, select_device, select_precision

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
        """``label`` and ``p_<class>`` columns.

        >>> BlurType("motion", {"in_focus": 0.1, "motion": 0.9}, windows=3).row()
        {'label': 'motion', 'p_in_focus': 0.1, 'p_motion': 0.9}
        """
        return {
            "label": self.label,
            **{f"p_{k}": round(v, 6) for k, v in self.probabilities.items()},
        }


def window_starts(size: int, tile: int) -> list[int]:
    """Non-overlapping window origins covering ``[0, size)``; the last one ends at ``size``.

    >>> window_starts(300, 128), window_starts(100, 128)
    ([0, 128, 172], [0])
    """
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, tile))
    if starts[-1] + tile < size:
        starts.append(size - tile)
    return starts


def select_windows(x: np.ndarray, tile: int, limit: int = MAX_WINDOWS) -> np.ndarray:
    """Up to ``limit`` (N, 3, t, t) windows of a (H, W, 3) float image, most structure first.

    Windows with less than half the luma spread of the best one are left out; an image smaller
    than one window is reflect-padded.

    Examples:
        >>> x = np.zeros((64, 96, 3), np.float32)  # flat, except for a textured corner
        >>> x[:32, :32] = np.random.default_rng(0).random((32, 32, 3))
        >>> select_windows(x, 32).shape
        (1, 3, 32, 32)
        >>> select_windows(np.zeros((20, 20, 3), np.float32), 32).shape  # padded
        (1, 3, 32, 32)
    """
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
        device: where the network runs (``auto``, ``cpu``, ``cuda``).
        precision: ``fp32`` (the reference), ``bf16`` (autocast) or ``auto`` (bf16 where the
            hardware runs it natively, see :func:`histoblur.models.hub.select_precision`), as
            for :class:`~histoblur.inference.segment.Segmenter`.

    Raises:
        InputError: a config with a tile under :data:`MIN_SIDE` or a non-positive temperature.

    Examples:
        >>> from histoblur.models.hub import load_pretrained
        >>> network, config, _ = load_pretrained("default", TASK)
        >>> classifier = BlurClassifier(network, config, batch_size=8)
        >>> classifier.tile, classifier.temperature > 0
        (128, True)
    """

    def __init__(
        self,
        model: nn.Module,
        config: Mapping[str, Any],
        batch_size: int = 32,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
    ) -> None:
        self.device = select_device(device)
        self.autocast = select_precision(precision, self.device)
        self.model = model.to(self.device).eval()
        self.config = dict(config)
        self.classes = tuple(self.config.get("classes", BLUR_TYPES))
        self.tile = config_number(self.config.get("inference", {}), "tile", 128, int)
        self.mpp = working_mpp(self.config)  # microns per pixel the network judges blur at
        self.max_mpp = coarsest_mpp(self.config)  # the coarsest sharp tissue it was trained on
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
        cls,
        model: str | Path = "default",
        batch_size: int = 32,
        device: str = "cpu",
        precision: str = "fp32",
    ) -> BlurClassifier:
        """Load a shipped classifier (``default``) or a checkpoint folder onto ``device``.

        Raises:
            InputError: missing or corrupt checkpoint, one that is not a blur-type classifier,
                or an unavailable device.

        Examples:
            >>> BlurClassifier.load("default", batch_size=16).batch_size
            16
        """
        network, config, _ = load_pretrained(model, TASK, device)
        return cls(network, config, batch_size, device, precision)

    @torch.no_grad()
    def logits(self, image: np.ndarray, mpp: float | None = None) -> tuple[np.ndarray, int]:
        """Mean logits over the selected windows of ``image``, and the number of windows.

        ``mpp`` (the image's microns per pixel) resamples it to the model's working resolution
        first (see :mod:`histoblur.inference.resolution`); None: already at it.

        >>> classifier = BlurClassifier.load()
        >>> image = np.random.default_rng(0).integers(0, 256, (128, 256, 3), dtype=np.uint8)
        >>> logits, windows = classifier.logits(image)
        >>> logits.shape, logits.dtype, windows
        ((4,), dtype('float32'), 2)
        """
        windows = select_windows(
            to_network_input(to_working(as_bright_field(image), mpp, self.mpp, self.max_mpp)),
            self.tile,
        )
        with autocast(self.device, self.autocast):
            out = [
                self.model(torch.from_numpy(windows[i : i + self.batch_size]).to(self.device))
                .float()
                .cpu()
                .numpy()
                for i in range(0, len(windows), self.batch_size)
            ]
        return np.concatenate(out).mean(axis=0), len(windows)

    def classify(self, image: np.ndarray, mpp: float | None = None) -> BlurType:
        """Label and calibrated probabilities of one image (at ``mpp`` microns per pixel).

        Raises:
            InputError: an image with a side below :data:`MIN_SIDE` px (too small to judge).

        Examples:
            >>> classifier = BlurClassifier.load()
            >>> image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
            >>> result = classifier.classify(image)
            >>> result.label in classifier.classes, result.windows
            (True, 1)
            >>> list(result.probabilities), round(sum(result.probabilities.values()), 3)
            (['in_focus', 'defocus', 'motion', 'mixed'], 1.0)
            >>> classifier.classify(np.zeros((16, 64, 3), np.uint8))  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            histoblur.errors.InputError: A 64 x 16 px image is too small to judge its blur type; ...
        """
        check_image(image)
        h, w = image.shape[:2]
        if min(h, w) < MIN_SIDE:
            raise InputError(
                f"A {w} x {h} px image is too small to judge its blur type; it needs at least "
                f"{MIN_SIDE} px on each side."
            )
        logits, n = self.logits(image, mpp)
        probs = softmax(logits[None], self.temperature)[0]
        named = {c: float(p) for c, p in zip(self.classes, probs, strict=True)}
        return BlurType(self.classes[int(np.argmax(probs))], named, n)
