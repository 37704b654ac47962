"""Spatially variant blur: radial defocus, zoom and spin around a centre, random defocus maps.

Defocus that varies over the field is rendered as a small stack of disk blurs blended per pixel by
a radius map (a few convolutions, not one per pixel); zoom and spin average the image resampled
along radial lines or arcs.
"""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from histoblur.kernels import disk_kernel
from histoblur.synthesis.plans import LevelsPlan, WarpPlan
from histoblur.synthesis.spec import SEED_RANGE, BlurSpec, IntRange, Range, Sampler

DEFAULT_LEVELS = 5
MAX_WARP_TAPS = 48


def defocus_levels(radius: np.ndarray, levels: int = DEFAULT_LEVELS) -> LevelsPlan:
    """Blend plan for a per-pixel disk radius map (pixels).

    Level k is a disk of radius ``k * r_max / (levels - 1)`` (level 0 is the identity); a pixel's
    radius becomes a fractional level index.
    """
    r_max = float(radius.max())
    if r_max <= 0:
        return LevelsPlan(kernels=(np.ones((1, 1)),), index=np.zeros(radius.shape, np.float32))
    radii = np.linspace(0.0, r_max, levels)
    kernels = tuple(disk_kernel(r) for r in radii)
    index = (radius / r_max * (levels - 1)).astype(np.float32)
    return LevelsPlan(kernels=kernels, index=index)


def distance_map(height: int, width: int, cx: float, cy: float) -> np.ndarray:
    """Distance of every pixel from the centre, 1 at the farthest image corner.

    The centre (cx, cy) is given as fractions of the width and height.
    """
    x0, y0 = cx * (width - 1), cy * (height - 1)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    d = np.hypot(xs - x0, ys - y0)
    corners = [math.hypot(x - x0, y - y0) for x in (0, width - 1) for y in (0, height - 1)]
    return d / max(max(corners), 1e-6)


class RadialSpec(BlurSpec):
    """Defocus that grows with distance from (cx, cy): stage tilt or field curvature.

    The disk radius is ``min_radius + (max_radius - min_radius) * d**power`` where d is the
    distance from the centre, 1 at the farthest corner.
    """

    kind: Literal["radial"] = "radial"
    cx: float = Field(0.5, ge=0, le=1)
    cy: float = Field(0.5, ge=0, le=1)
    min_radius: float = Field(0.0, ge=0, le=64)
    max_radius: float = Field(8.0, gt=0, le=64)
    power: float = Field(1.0, gt=0, le=4)


class RadialSampler(Sampler):
    """Ranges for :class:`RadialSpec`."""

    spec_cls = RadialSpec
    cx: float | Range = (0.0, 1.0)
    cy: float | Range = (0.0, 1.0)
    min_radius: float | Range = (0.0, 1.0)
    max_radius: float | Range = (4.0, 12.0)
    power: float | Range = (1.0, 2.0)


def radial_plan(spec: RadialSpec, height: int, width: int) -> LevelsPlan:
    """Radius map from the distance to the centre, then a disk stack."""
    d = distance_map(height, width, spec.cx, spec.cy)
    top = max(spec.max_radius, spec.min_radius)
    return defocus_levels(spec.min_radius + (top - spec.min_radius) * d**spec.power)


class ZoomSpec(BlurSpec):
    """Radial (zoom) blur: streaks along lines through (cx, cy), ``amount`` x distance long."""

    kind: Literal["zoom"] = "zoom"
    cx: float = Field(0.5, ge=0, le=1)
    cy: float = Field(0.5, ge=0, le=1)
    amount: float = Field(0.05, gt=0, le=0.5)


class ZoomSampler(Sampler):
    """Ranges for :class:`ZoomSpec`."""

    spec_cls = ZoomSpec
    cx: float | Range = (0.2, 0.8)
    cy: float | Range = (0.2, 0.8)
    amount: float | Range = (0.02, 0.08)


class SpinSpec(BlurSpec):
    """Rotational blur: arcs of ``angle`` degrees around (cx, cy), a slight rotation in scanning."""

    kind: Literal["spin"] = "spin"
    cx: float = Field(0.5, ge=0, le=1)
    cy: float = Field(0.5, ge=0, le=1)
    angle: float = Field(2.0, gt=0, le=30)


class SpinSampler(Sampler):
    """Ranges for :class:`SpinSpec`."""

    spec_cls = SpinSpec
    cx: float | Range = (0.2, 0.8)
    cy: float | Range = (0.2, 0.8)
    angle: float | Range = (1.0, 4.0)


def _warp_taps(max_displacement: float) -> np.ndarray:
    taps = int(min(MAX_WARP_TAPS, max(3, math.ceil(max_displacement) + 1)))
    return np.linspace(-0.5, 0.5, taps)


def zoom_plan(spec: ZoomSpec, height: int, width: int) -> WarpPlan:
    """Sample along radial lines, symmetric about each pixel so nothing shifts."""
    x0, y0 = spec.cx * (width - 1), spec.cy * (height - 1)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    dmax = float(np.hypot(max(x0, width - 1 - x0), max(y0, height - 1 - y0)))
    grids = []
    for t in _warp_taps(spec.amount * dmax):
        s = 1.0 + spec.amount * t
        grids.append(
            ((x0 + (xs - x0) * s).astype(np.float32), (y0 + (ys - y0) * s).astype(np.float32))
        )
    return WarpPlan(grids=tuple(grids))


def spin_plan(spec: SpinSpec, height: int, width: int) -> WarpPlan:
    """Sample along arcs, symmetric about each pixel."""
    x0, y0 = spec.cx * (width - 1), spec.cy * (height - 1)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    dx, dy = xs - x0, ys - y0
    dmax = float(np.hypot(max(x0, width - 1 - x0), max(y0, height - 1 - y0)))
    span = math.radians(spec.angle)
    grids = []
    for t in _warp_taps(span * dmax):
        c, s = math.cos(span * t), math.sin(span * t)
        grids.append(
            ((x0 + c * dx - s * dy).astype(np.float32), (y0 + s * dx + c * dy).astype(np.float32))
        )
    return WarpPlan(grids=tuple(grids))


class VariableDefocusSpec(BlurSpec):
    """Defocus whose radius follows a smooth random map plus a tilted plane.

    ``smoothness`` is the correlation length of the random field as a fraction of the image side;
    ``tilt`` in [0, 1] mixes in a plane rising along ``tilt_angle`` (a tilted slide);
    ``seed`` fixes the random field.
    """

    kind: Literal["variable-defocus"] = "variable-defocus"
    min_radius: float = Field(0.0, ge=0, le=64)
    max_radius: float = Field(8.0, gt=0, le=64)
    smoothness: float = Field(0.4, ge=0.05, le=1)
    tilt: float = Field(0.3, ge=0, le=1)
    tilt_angle: float = Field(0.0, ge=0, lt=360)
    seed: int = Field(0, ge=0)


class VariableDefocusSampler(Sampler):
    """Ranges for :class:`VariableDefocusSpec`."""

    spec_cls = VariableDefocusSpec
    min_radius: float | Range = (0.0, 1.5)
    max_radius: float | Range = (4.0, 12.0)
    smoothness: float | Range = (0.2, 0.6)
    tilt: float | Range = (0.0, 1.0)
    tilt_angle: float | Range = (0.0, 359.0)
    seed: int | IntRange = SEED_RANGE


def defocus_map(spec: VariableDefocusSpec, height: int, width: int) -> np.ndarray:
    """Per-pixel disk radius (float32, pixels) of a :class:`VariableDefocusSpec`."""
    rng = np.random.default_rng(spec.seed)
    cells = max(2, round(1.0 / spec.smoothness)) + 1
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    field = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    field = _unit(field)
    theta = math.radians(spec.tilt_angle)
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    plane = _unit(xs * math.cos(theta) + ys * math.sin(theta))
    mix = (1 - spec.tilt) * field + spec.tilt * plane
    top = max(spec.max_radius, spec.min_radius)
    return (spec.min_radius + (top - spec.min_radius) * mix).astype(np.float32)


def _unit(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def variable_defocus_plan(spec: VariableDefocusSpec, height: int, width: int) -> LevelsPlan:
    """Disk stack blended by the random defocus map."""
    return defocus_levels(defocus_map(spec, height, width))
