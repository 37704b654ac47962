"""The one registry of detectors: ``image -> (H, W) bool`` mask of the pixels to flag.

``evaluate segmentation --model``, ``restore --detect`` and the benchmarks build their detector
here, by name: the blur segmentation network, ArtiFusion's artifact thresholds, or a classical
Laplacian blur rule.

Examples:
    >>> import numpy as np
    >>> list(DETECTORS), CLASSICAL
    (['segmenter', 'threshold', 'laplacian', 'histoqc'], ('threshold', 'laplacian', 'histoqc'))
    >>> detect = make_detector("laplacian")
    >>> detect(np.zeros((32, 32, 3), np.uint8)).shape
    (32, 32)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from histoblur.errors import ParameterError
from histoblur.inference.artifacts import ThresholdConfig, threshold_artifacts
from histoblur.inference.baseline import histoqc_blur_mask, laplacian_blur_mask
from histoblur.inference.segment import Segmenter

Detector = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Options:
    """What a detector may be built from (each kind reads what it needs)."""

    model: str | Path = "default"  # segmenter checkpoint
    threshold: float | None = None  # segmenter probability threshold (None: the model's)
    device: str = "cpu"
    thresholds: ThresholdConfig | None = None  # the artifact thresholds


@dataclass(frozen=True)
class DetectorKind:
    """One registry entry: a one-line summary and how to build the detector."""

    summary: str
    build: Callable[[Options], Detector]


def _segmenter(options: Options) -> Detector:
    segmenter = Segmenter.load(options.model, options.device)
    return lambda image: segmenter.segment(image, options.threshold).mask


DETECTORS: dict[str, DetectorKind] = {
    "segmenter": DetectorKind("the blur segmentation network", _segmenter),
    "threshold": DetectorKind(
        "blur, fold and bubble thresholds (ArtiFusion's detector)",
        lambda o: partial(threshold_artifacts, config=o.thresholds or ThresholdConfig()),
    ),
    "laplacian": DetectorKind(
        "local Laplacian energy below a quarter of the image's own 90th percentile",
        lambda o: laplacian_blur_mask,
    ),
    "histoqc": DetectorKind(
        "HistoQC-style smoothed Laplacian at or below a fixed level", lambda o: histoqc_blur_mask
    ),
}
# detectors that need no network (the others take a checkpoint)
CLASSICAL = tuple(name for name in DETECTORS if name != "segmenter")


def make_detector(
    name: str,
    model: str | Path = "default",
    threshold: float | None = None,
    device: str = "cpu",
    thresholds: ThresholdConfig | None = None,
) -> Detector:
    """The detector registered as ``name``, built from the options it uses.

    Raises:
        ParameterError: an unknown name.
        InputError: a segmenter checkpoint that cannot be loaded.

    Examples:
        >>> image = np.full((64, 64, 3), 200, np.uint8)
        >>> for name in DETECTORS:
        ...     mask = make_detector(name, threshold=0.5)(image)
        ...     print(name, mask.shape, mask.dtype)
        segmenter (64, 64) bool
        threshold (64, 64) bool
        laplacian (64, 64) bool
        histoqc (64, 64) bool
        >>> make_detector("otsu")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        histoblur.errors.ParameterError: Unknown detector 'otsu'; choose one of segmenter, ...
    """
    if name not in DETECTORS:
        raise ParameterError(f"Unknown detector {name!r}; choose one of {', '.join(DETECTORS)}.")
    return DETECTORS[name].build(Options(model, threshold, device, thresholds))
