"""Motion blur (stage or camera movement during exposure) and defocus followed by motion."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from histoblur.kernels import combine, motion_kernel
from histoblur.synthesis.lens import defocus_kernel
from histoblur.synthesis.plans import KernelPlan
from histoblur.synthesis.spec import BlurSpec, Range, Sampler

DBMID_LENGTHS = [5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0]


class MotionSpec(BlurSpec):
    """Uniform linear motion of ``length`` pixels at ``angle`` degrees (0 = horizontal)."""

    kind: Literal["motion"] = "motion"
    length: float = Field(15.0, gt=1, le=200)
    angle: float = Field(0.0, ge=0, lt=360)


class MotionSampler(Sampler):
    """Ranges for :class:`MotionSpec`: 5-40 px at any angle."""

    spec_cls = MotionSpec
    length: float | Range | list[float] = (5.0, 40.0)
    angle: float | Range | list[float] = (0.0, 180.0)


class HorizontalMotionSampler(MotionSampler):
    """DBMID preset: horizontal motion, 5 to 40 px in steps of 5."""

    length: float | Range | list[float] = DBMID_LENGTHS
    angle: float | Range | list[float] = 0.0


class VerticalMotionSampler(MotionSampler):
    """DBMID preset: vertical motion, 5 to 40 px in steps of 5."""

    length: float | Range | list[float] = DBMID_LENGTHS
    angle: float | Range | list[float] = 90.0


def motion_plan(spec: MotionSpec, height: int, width: int) -> KernelPlan:
    """Line-kernel convolution."""
    return KernelPlan(kernel=motion_kernel(spec.length, spec.angle))


class MixedSpec(BlurSpec):
    """Defocus (``lens`` radius or ``gaussian`` sigma) followed by linear motion."""

    kind: Literal["mixed"] = "mixed"
    defocus: Literal["lens", "gaussian"] = "lens"
    size: float = Field(3.0, gt=0, le=64)
    length: float = Field(15.0, gt=1, le=200)
    angle: float = Field(0.0, ge=0, lt=360)


class MixedSampler(Sampler):
    """Ranges for :class:`MixedSpec`."""

    spec_cls = MixedSpec
    defocus: str | list[str] = ["lens", "gaussian"]
    size: float | Range = (1.5, 6.0)
    length: float | Range = (5.0, 30.0)
    angle: float | Range = (0.0, 180.0)


def mixed_plan(spec: MixedSpec, height: int, width: int) -> KernelPlan:
    """One convolution with the combined PSF (defocus * motion)."""
    kernel = combine(
        defocus_kernel(spec.defocus, spec.size), motion_kernel(spec.length, spec.angle)
    )
    return KernelPlan(kernel=kernel)
