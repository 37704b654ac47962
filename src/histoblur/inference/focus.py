"""One answer per image: the blur map decides *whether* it is out of focus, the classifier *how*.

The segmenter's blur map, pooled over the tissue (:meth:`Segmenter.focus_score`), is the
image's out-of-focus probability ``f``; the blur-type classifier only splits that mass between
the blur types. The combined probabilities are ``p(in_focus) = 1 - f`` and, for each blur type
``k``, ``p(k) = f * q(k) / (1 - q(in_focus))`` with ``q`` the classifier's own calibrated
probabilities. So a tile called "defocus" with high confidence always has a blurred map, and a
tile whose map is empty is always in focus: the detectors cannot disagree.
(docs/segmentation.md, "One focus model", gives the measurements behind this design.)

Examples:
    >>> combine(0.9, {"in_focus": 0.5, "defocus": 0.4, "motion": 0.1})
    {'in_focus': 0.1, 'defocus': 0.72, 'motion': 0.18}
    >>> combine(0.0, {"in_focus": 0.01, "defocus": 0.99})  # an empty map: in focus
    {'in_focus': 1.0, 'defocus': 0.0}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from histoblur.inference.classify import BlurClassifier, BlurType
from histoblur.inference.modality import as_bright_field
from histoblur.inference.segment import Segmenter, pooled_focus
from histoblur.wsi.tissue import tissue_mask

IN_FOCUS = "in_focus"


def combine(focus: float, probabilities: Mapping[str, float]) -> dict[str, float]:
    """Class probabilities with ``p(in_focus) = 1 - focus``, the rest split as the classifier's.

    When the classifier puts (almost) all its mass on ``in_focus`` the blurred share goes to
    the blur types evenly.
    """
    blur_types = [k for k in probabilities if k != IN_FOCUS]
    rest = sum(probabilities[k] for k in blur_types)
    out = {IN_FOCUS: round(1.0 - focus, 6)}
    for k in blur_types:
        share = probabilities[k] / rest if rest > 1e-9 else 1.0 / len(blur_types)
        out[k] = round(focus * share, 6)
    return {k: out[k] for k in probabilities}


@dataclass(frozen=True)
class FocusJudgement:
    """The focus score, the blurred share of the tissue and the combined blur type."""

    focus_score: float
    blurred_fraction: float
    blur_type: BlurType

    def row(self) -> dict[str, Any]:
        """CSV columns: label, p_<class>, focus_score, blurred_fraction, windows."""
        return {
            **self.blur_type.row(),
            "focus_score": self.focus_score,
            "blurred_fraction": self.blurred_fraction,
            "windows": self.blur_type.windows,
        }


class FocusModel:
    """The segmenter and the blur-type classifier, answering together.

    Examples:
        >>> model = FocusModel.load(tile=64)
        >>> tissue = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
        >>> judgement = model.judge(tissue)
        >>> judgement.blur_type.label in model.classifier.classes
        True
        >>> judgement.blur_type.probabilities["in_focus"] == round(1 - judgement.focus_score, 6)
        True
    """

    def __init__(self, segmenter: Segmenter, classifier: BlurClassifier) -> None:
        self.segmenter = segmenter
        self.classifier = classifier

    @classmethod
    def load(
        cls,
        segmenter: str | Path = "default",
        classifier: str | Path = "default",
        device: str = "cpu",
        tile: int | None = None,
        precision: str = "fp32",
    ) -> FocusModel:
        """Both models by shipped name or checkpoint path, on ``device``, in ``precision``.

        ``precision``: ``fp32``, ``bf16`` or ``auto``, as for
        :class:`~histoblur.inference.segment.Segmenter`.
        """
        return cls(
            Segmenter.load(segmenter, device, tile=tile, precision=precision),
            BlurClassifier.load(classifier, device=device, precision=precision),
        )

    def judge(self, image: np.ndarray, mpp: float | None = None) -> FocusJudgement:
        """Focus score, blurred share of the tissue and combined blur type of one image.

        Raises:
            InputError: an image too small for the classifier (see :data:`MIN_SIDE`).
        """
        image = as_bright_field(image)
        own = self.classifier.classify(image, mpp)
        result = self.segmenter.segment(image, mpp=mpp)
        tissue = tissue_mask(image)
        focus = pooled_focus(result.probability, tissue)
        share = float(result.mask[tissue].mean()) if tissue.any() else 0.0
        probabilities = combine(focus, own.probabilities)
        label = (
            IN_FOCUS
            if focus < 0.5
            else max((k for k in probabilities if k != IN_FOCUS), key=probabilities.__getitem__)
        )
        return FocusJudgement(focus, round(share, 6), BlurType(label, probabilities, own.windows))
