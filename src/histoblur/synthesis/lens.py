"""Spatially invariant defocus: Gaussian, lens (pillbox disk) and polygonal aperture."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from histoblur.kernels import disk_kernel, gaussian_kernel, gaussian_kernel_1d, polygon_kernel
from histoblur.synthesis.plans import KernelPlan
from histoblur.synthesis.spec import BlurSpec, IntRange, Range, Sampler


class GaussianSpec(BlurSpec):
    """Isotropic Gaussian PSF of standard deviation ``sigma`` pixels."""

    kind: Literal["gaussian"] = "gaussian"
    sigma: float = Field(2.0, gt=0, le=64)


class GaussianSampler(Sampler):
    """Ranges for :class:`GaussianSpec`."""

    spec_cls = GaussianSpec
    sigma: float | Range = (1.0, 5.0)


def gaussian_plan(spec: GaussianSpec, height: int, width: int) -> KernelPlan:
    """Separable Gaussian convolution."""
    k1 = gaussian_kernel_1d(spec.sigma)
    return KernelPlan(kernel=gaussian_kernel(spec.sigma), separable=(k1, k1))


class LensSpec(BlurSpec):
    """Uniform disk (pillbox) PSF of ``radius`` pixels: an ideal circular aperture."""

    kind: Literal["lens"] = "lens"
    radius: float = Field(4.0, gt=0, le=64)


class LensSampler(Sampler):
    """Ranges for :class:`LensSpec`."""

    spec_cls = LensSpec
    radius: float | Range = (2.0, 10.0)


def lens_plan(spec: LensSpec, height: int, width: int) -> KernelPlan:
    """Disk convolution."""
    return KernelPlan(kernel=disk_kernel(spec.radius))


class ApertureSpec(BlurSpec):
    """Regular polygonal aperture: ``blades`` iris blades, circumradius ``radius``, rotated."""

    kind: Literal["aperture"] = "aperture"
    radius: float = Field(4.0, gt=0, le=64)
    blades: int = Field(6, ge=3, le=16)
    rotation: float = Field(0.0, ge=0, lt=360)


class ApertureSampler(Sampler):
    """Ranges for :class:`ApertureSpec`."""

    spec_cls = ApertureSpec
    radius: float | Range = (2.0, 10.0)
    blades: int | IntRange | list[int] = (5, 9)
    rotation: float | Range = (0.0, 359.0)


def aperture_plan(spec: ApertureSpec, height: int, width: int) -> KernelPlan:
    """Polygon convolution."""
    return KernelPlan(kernel=polygon_kernel(spec.radius, spec.blades, spec.rotation))


def defocus_kernel(family: str, size: float) -> np.ndarray:
    """A defocus PSF by family name: ``lens`` (radius) or ``gaussian`` (sigma)."""
    return disk_kernel(size) if family == "lens" else gaussian_kernel(size)
