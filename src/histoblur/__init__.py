"""histoblur: out-of-focus blur for digital pathology.

Synthesize realistic blur, build pixel-labelled training sets, detect, remove and measure it.
The most used entry points are re-exported here and imported on first use, so
``import histoblur`` stays cheap (it does not import torch, OpenCV or the networks).

Examples:
    Blur an image (uint8/uint16, grey/RGB/RGBA in, same shape and dtype out):

    >>> import numpy as np
    >>> import histoblur
    >>> image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    >>> blurred = histoblur.apply_blur(image, histoblur.make_spec("lens", radius=3))
    >>> blurred.shape, blurred.dtype
    ((64, 64, 3), dtype('uint8'))

    Segment an image with the shipped network (no download): a probability map and a mask of
    the image's height and width (``tile=64`` only keeps this tiny example quick; the default
    window is the checkpoint's, 256 px).

    >>> segmenter = histoblur.Segmenter.load("default", "cpu", tile=64)
    >>> result = segmenter.segment(image)
    >>> result.probability.shape, result.probability.dtype, result.mask.dtype
    ((64, 64), dtype('float32'), dtype('bool'))
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from histoblur.errors import HistoblurError, InputError, OutputError, ParameterError

# a library logs, an application shows: the histoblur command prints these records itself
logging.getLogger("histoblur").addHandler(logging.NullHandler())

__version__ = "0.1.0"

# public name -> module that defines it; imported by ``__getattr__`` on first access
_LAZY: dict[str, str] = {
    # synthesis
    "apply_blur": "histoblur.synthesis.blur",
    "sample_and_blur": "histoblur.synthesis.blur",
    "make_spec": "histoblur.synthesis.registry",
    "get_kind": "histoblur.synthesis.registry",
    "kind_names": "histoblur.synthesis.registry",
    "DegradeSpec": "histoblur.synthesis.degrade",
    "DatasetConfig": "histoblur.synthesis.dataset",
    "build_dataset": "histoblur.synthesis.dataset",
    # input and output
    "read_image": "histoblur.io.images",
    "write_image": "histoblur.io.images",
    "mask_to_geojson": "histoblur.io.geojson",
    "write_geojson": "histoblur.io.geojson",
    "open_slide": "histoblur.wsi.readers",
    # detection and restoration
    "Segmenter": "histoblur.inference.segment",
    "BlurClassifier": "histoblur.inference.classify",
    "deblur_image": "histoblur.inference.deblur",
    "QCConfig": "histoblur.inference.qc",
    "qc_slide": "histoblur.inference.qc",
    "make_detector": "histoblur.inference.detectors",
    "load_pretrained": "histoblur.models.hub",
    "select_device": "histoblur.models.hub",
    # metrics
    "psnr": "histoblur.metrics.full_reference",
    "ssim": "histoblur.metrics.full_reference",
    "dice": "histoblur.metrics.segmentation",
    "iou": "histoblur.metrics.segmentation",
    "variance_of_laplacian": "histoblur.metrics.sharpness",
}

# the errors, the version and every lazy name, spelled out so linters and IDEs see them
__all__ = [
    "BlurClassifier",
    "DatasetConfig",
    "DegradeSpec",
    "HistoblurError",
    "InputError",
    "OutputError",
    "ParameterError",
    "QCConfig",
    "Segmenter",
    "apply_blur",
    "build_dataset",
    "deblur_image",
    "dice",
    "get_kind",
    "iou",
    "kind_names",
    "load_pretrained",
    "make_detector",
    "make_spec",
    "mask_to_geojson",
    "open_slide",
    "psnr",
    "qc_slide",
    "read_image",
    "sample_and_blur",
    "select_device",
    "ssim",
    "variance_of_laplacian",
    "write_geojson",
    "write_image",
    "__version__",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time ``__getattr__`` imports on use
    from histoblur.inference.classify import BlurClassifier
    from histoblur.inference.deblur import deblur_image
    from histoblur.inference.detectors import make_detector
    from histoblur.inference.qc import QCConfig, qc_slide
    from histoblur.inference.segment import Segmenter
    from histoblur.io.geojson import mask_to_geojson, write_geojson
    from histoblur.io.images import read_image, write_image
    from histoblur.metrics.full_reference import psnr, ssim
    from histoblur.metrics.segmentation import dice, iou
    from histoblur.metrics.sharpness import variance_of_laplacian
    from histoblur.models.hub import load_pretrained, select_device
    from histoblur.synthesis.blur import apply_blur, sample_and_blur
    from histoblur.synthesis.dataset import DatasetConfig, build_dataset
    from histoblur.synthesis.degrade import DegradeSpec
    from histoblur.synthesis.registry import get_kind, kind_names, make_spec
    from histoblur.wsi.readers import open_slide


def __getattr__(name: str) -> Any:
    """Import a re-exported entry point on first access (PEP 562) and cache it."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'histoblur' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """Module attributes including the not yet imported entry points."""
    return sorted({*globals(), *_LAZY})
