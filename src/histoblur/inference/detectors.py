"""The one registry of detectors: ``image -> (H, W) bool`` mask of the pixels to flag.

``evaluate segmentation --model``, ``restore --detect`` and the benchmarks build their detector
here, by name: the blur segmentation network, ArtiFusion's artifact thresholds, or a classical
Laplacian blur rule. Given the image's microns per pixel (``mpp``) every detector judges it at
its working resolution (the segmenter's checkpoint's, 0.5 um/px for the classical rules) and
returns the mask at the input's size.

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
from histoblur.inference.resolution import (
    DEFAULT_WORKING_MPP,
    check_mpp,
    to_input_size,
    to_working,
)
from histoblur.inference.segment import Segmenter

Detector = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Options:
    """What a detector may be built from (each kind reads what it needs)."""

    model: str | Path = "default"  # segmenter checkpoint
    threshold: float | None = None  # segmenter probability threshold (None: the model's)
    device: str = "cpu"
    thresholds: ThresholdConfig | None = None  # the artifact thresholds
    mpp: float | None = None  # the images' microns per pixel (None: the working resolution)
    precision: str = "fp32"  # the segmenter's arithmetic: fp32, bf16 or auto


@dataclass(frozen=True)
class DetectorKind:
    """One registry entry: a one-line summary and how to build the detector."""

    summary: str
    build: Callable[[Options], Detector]


def _segmenter(options: Options) -> Detector:
    segmenter = Segmenter.load(options.model, options.device, precision=options.precision)
    return lambda image: segmenter.segment(image, options.threshold, mpp=options.mpp).mask


def at_resolution(detect: Detector, mpp: float | None, working: float) -> Detector:
    """``detect`` run on images resampled from ``mpp`` to ``working`` um/px, masks sized back.

    >>> detect = at_resolution(lambda image: image[..., 0] > 0, 0.25, 0.5)
    >>> detect(np.ones((10, 8, 3), np.uint8)).shape
    (10, 8)
    """
    if check_mpp(mpp) is None or abs(mpp / working - 1) < 0.01:
        return detect

    def resampled(image: np.ndarray) -> np.ndarray:
        mask = detect(to_working(image, mpp, working)).astype(np.float32)
        return to_input_size(mask, image.shape[:2]) >= 0.5

    return resampled


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
    mpp: float | None = None,
    precision: str = "fp32",
) -> Detector:
    """The detector registered as ``name``, built from the options it uses.

    ``mpp``: the microns per pixel of the images it will see (None: the working resolution);
    ``precision``: the segmenter's arithmetic (``fp32``, ``bf16`` or ``auto``, see
    :class:`~histoblur.inference.segment.Segmenter`; the classical rules have none).

    Raises:
        ParameterError: an unknown name or an absurd ``mpp``.
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
    options = Options(model, threshold, device, thresholds, check_mpp(mpp), precision)
    detect = DETECTORS[name].build(options)
    # the segmenter resamples itself; the classical rules were set at the default resolution
    return detect if name == "segmenter" else at_resolution(detect, mpp, DEFAULT_WORKING_MPP)
