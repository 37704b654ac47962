"""PSF calibration: fit every blur family to a pixel-aligned (sharp, blurred) pair of real images.

Given the same field imaged in focus and out of focus, each spatially invariant blur kind of the
registry (``gaussian``, ``lens``, ``aperture``, ``motion``, ``mixed``, and any later kind whose plan
is a :class:`~histoblur.synthesis.plans.KernelPlan`) is fitted by searching its parameters, and a
free-form non-negative kernel is fitted by gradient descent. Every model is scored the same way:

1. the sharp image is convolved with the candidate PSF (FFT, reflected borders);
2. a per-channel affine intensity map ``gain * blurred_model + offset`` is fitted by closed-form
   least squares, because a refocused scan rarely keeps exact brightness and contrast;
3. the mean squared residual against the real blurred image is measured, leaving out a fixed
   border (half the largest kernel the search can produce) on every side.

The identity (no blur, affine map only) is scored too, so a user sees how much each family
explains. Parameters are searched with a coarse grid, then refined with bounded Brent search (one
parameter) or Nelder-Mead (several); discrete parameters (aperture blades, the defocus model of
``mixed``) get one fit per value.
"""

from histoblur.calibration.align import (
    PreparedPair,
    align_pair,
    estimate_scale,
    phase_shift,
    prepare_pair,
    refine_shift,
)
from histoblur.calibration.config import (
    DEFAULT_FAMILIES,
    FREEFORM,
    IDENTITY,
    CalibrationConfig,
    build_config,
)
from histoblur.calibration.fit import (
    CalibrationResult,
    FamilyFit,
    calibrate,
    fit_family,
    fit_freeform,
)
from histoblur.calibration.picture import kernel_montage
from histoblur.calibration.search import Param, Scorer, SearchSpace, search_space

__all__ = [
    "DEFAULT_FAMILIES",
    "FREEFORM",
    "IDENTITY",
    "CalibrationConfig",
    "CalibrationResult",
    "FamilyFit",
    "Param",
    "PreparedPair",
    "Scorer",
    "SearchSpace",
    "align_pair",
    "build_config",
    "calibrate",
    "estimate_scale",
    "fit_family",
    "fit_freeform",
    "kernel_montage",
    "phase_shift",
    "prepare_pair",
    "refine_shift",
    "search_space",
]
