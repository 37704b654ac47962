"""Calibration settings and the names every calibration module shares."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from histoblur.config import Config
from histoblur.errors import ParameterError, describe_validation
from histoblur.synthesis.registry import BLUR_KINDS

IDENTITY = "identity"
FREEFORM = "free-form"
DEFAULT_FAMILIES = ("gaussian", "lens", "aperture", "motion", "mixed")


class CalibrationConfig(Config):
    """What to fit and how to prepare the pair.

    Attributes:
        families: registry kinds to fit (each must produce a single spatially invariant PSF).
        freeform: also fit a free-form non-negative kernel.
        freeform_size: side of the free-form kernel in pixels (odd).
        freeform_steps: Adam steps of the free-form fit.
        freeform_lr: Adam learning rate, relative to the uniform kernel value ``1 / size**2``.
        freeform_tv: weight of a total-variation smoothness penalty on the free-form kernel.
        aperture_blades: blade counts tried for ``aperture`` (one fit each, the best is kept).
        mixed_defocus: defocus models tried for ``mixed`` (one fit each, the best is kept).
        max_radius: upper bound of defocus sizes searched (lens/aperture radius, mixed size) in
            pixels; the Gaussian sigma is searched up to half of it (a disk of radius r has a
            standard deviation of r / 2).
        max_length: upper bound of motion lengths searched, in pixels.
        border: pixels left out on each side when scoring; default half the largest kernel the
            search can produce: ``ceil(max(max_radius, max_length / 2, freeform_size // 2))``.
        max_size: centre-crop the aligned pair to at most this many pixels per side before fitting
            (keeps a run on a large pair to seconds; the blur scale is unchanged by a crop);
            ``None`` fits the whole pair.
        crop: centre-crop a pair of different sizes to their common size (otherwise an error).
        registration: find the integer translation between the pair by phase correlation, refine
            it (see ``register_search``) and fit on the overlap.
        register_search: after phase correlation, integer shifts up to this many pixels either
            way are tried with a fitted Gaussian PSF and the best one kept (0: no refinement).
        scale: magnification of the blurred image relative to the sharp one (an object L px
            long in the sharp image is ``scale * L`` px long in the blurred one); the blurred
            image is resampled by ``1 / scale`` before anything else.
        scale_search: search the scale within ``[1 - scale_search, 1 + scale_search]`` around
            ``scale`` (focal-stack planes often differ in magnification by a few percent):
            a coarse grid then a bounded Brent search on the residual of a registered Gaussian
            fit. Needs ``registration``; 0 keeps ``scale`` fixed.
        channels: ``"all"`` fits every colour channel (each with its own gain and offset);
            ``"luma"`` searches parameters on the luma only (about twice as fast) and then
            fits the gains and offsets and reports the scores on every channel.
        tie_tolerance: fits whose residual MSE lies within this fraction of the identity's
            residual MSE of the lowest one count as equally good; the one with the fewest
            parameters is named best (a richer family such as ``mixed`` contains ``lens`` and can
            only tie or beat it).
    """

    families: tuple[str, ...] = DEFAULT_FAMILIES
    freeform: bool = True
    freeform_size: int = Field(21, ge=3, le=63)
    freeform_steps: int = Field(300, ge=1, le=20000)
    freeform_lr: float = Field(2.0, gt=0, le=100)
    freeform_tv: float = Field(0.0, ge=0)
    aperture_blades: tuple[int, ...] = (5, 6, 7, 8)
    mixed_defocus: tuple[Literal["lens", "gaussian"], ...] = ("lens", "gaussian")
    max_radius: float = Field(12.0, gt=1, le=64)
    max_length: float = Field(30.0, gt=2, le=200)
    border: int | None = Field(None, ge=0)
    max_size: int | None = Field(512, ge=32)
    crop: bool = False
    registration: bool = False
    register_search: int = Field(4, ge=0, le=32)
    scale: float = Field(1.0, ge=0.5, le=2.0)
    scale_search: float = Field(0.0, ge=0.0, le=0.3)
    channels: Literal["all", "luma"] = "all"
    tie_tolerance: float = Field(0.002, ge=0, le=1)

    @field_validator("freeform_size")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("must be odd")
        return value

    @field_validator("aperture_blades")
    @classmethod
    def _blades(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(not 3 <= b <= 16 for b in value):
            raise ValueError("needs one or more blade counts between 3 and 16")
        return value

    @field_validator("mixed_defocus", "families")
    @classmethod
    def _not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) != len(set(value)):
            raise ValueError("lists a value twice")
        unknown = [v for v in value if v not in BLUR_KINDS]
        if unknown:
            raise ValueError(
                f"{unknown[0]!r} is not a statistical blur kind; choose from "
                + ", ".join(BLUR_KINDS)
            )
        return value

    @model_validator(mode="after")
    def _search_needs_registration(self) -> CalibrationConfig:
        if self.scale_search > 0 and not self.registration:
            raise ValueError("scale_search needs registration (--register)")
        return self

    def scoring_border(self) -> int:
        """Pixels left out on each side when scoring (see ``border``)."""
        if self.border is not None:
            return self.border
        half_free = self.freeform_size // 2 if self.freeform else 0
        return int(math.ceil(max(self.max_radius, self.max_length / 2, half_free)))


def build_config(**values: Any) -> CalibrationConfig:
    """A :class:`CalibrationConfig`, pydantic's report turned into one sentence.

    Raises:
        ParameterError: for an unknown field or a value out of range.
    """
    try:
        return CalibrationConfig(**values)
    except ValidationError as exc:
        raise ParameterError(describe_validation(exc, "calibration settings", every=True)) from None
