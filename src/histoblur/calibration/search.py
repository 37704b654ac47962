"""Search spaces of the blur families, the FFT scorer, and the grid-then-refine search."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Protocol

import cv2
import numpy as np

from histoblur.calibration.config import CalibrationConfig
from histoblur.errors import ParameterError
from histoblur.synthesis.plans import KernelPlan
from histoblur.synthesis.registry import get_kind, make_spec

# ---------------------------------------------------------------------------------------------
# Search spaces


@dataclass(frozen=True)
class Param:
    """One continuous parameter of a search.

    Attributes:
        name: the spec field.
        low: lower bound (inclusive).
        high: upper bound; for a periodic parameter the period starts at ``low``.
        grid: coarse grid points tried before refining.
        period: the parameter wraps with this period (angles); ``None`` for bounded ones.
    """

    name: str
    low: float
    high: float
    grid: int
    period: float | None = None

    def grid_values(self) -> np.ndarray:
        """Coarse grid: geometric for positive sizes, uniform over one period for angles."""
        if self.period is not None:
            return self.low + np.arange(self.grid) * (self.period / self.grid)
        if self.low > 0:
            return np.geomspace(self.low, self.high, self.grid)
        return np.linspace(self.low, self.high, self.grid)


@dataclass(frozen=True)
class SearchSpace:
    """How one registry kind is fitted.

    Attributes:
        kind: registry name.
        params: continuous parameters searched.
        choices: discrete parameters: one fit per combination, the best is kept.
        fixed: parameters held at a value.
    """

    kind: str
    params: tuple[Param, ...]
    choices: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)

    def spec_values(self, x: np.ndarray, choice: dict[str, Any]) -> dict[str, Any]:
        """Spec fields for a point ``x`` of the continuous parameters and one discrete choice."""
        values: dict[str, Any] = {**self.fixed, **choice}
        for p, v in zip(self.params, x, strict=True):
            if p.period is not None:
                v = p.low + (float(v) - p.low) % p.period
            else:
                v = min(max(float(v), p.low), p.high)
            values[p.name] = float(v)
        return values

    def kernel(self, x: np.ndarray, choice: dict[str, Any]) -> np.ndarray:
        """The PSF at ``x`` through the registry plan.

        Raises:
            ParameterError: if the kind does not produce a single spatially invariant PSF.
        """
        plan = _kernel_plan(self.kind, self.spec_values(x, choice))
        return np.asarray(plan.kernel, dtype=np.float64)

    def combos(self) -> list[dict[str, Any]]:
        """Every combination of the discrete choices (one empty dict when there are none)."""
        names = list(self.choices)
        return [dict(zip(names, c, strict=True)) for c in itertools.product(*self.choices.values())]


def _kernel_plan(kind: str, values: dict[str, Any]) -> KernelPlan:
    """The registry plan of ``kind`` (small image size: kernels do not depend on it).

    Raises:
        ParameterError: if the kind does not produce a single spatially invariant PSF.
    """
    plan = get_kind(kind).plan(make_spec(kind, **values), 32, 32)
    if not isinstance(plan, KernelPlan):
        raise ParameterError(
            f"Blur kind {kind!r} is spatially variant and cannot be calibrated from one pair; "
            "choose among gaussian, lens, aperture, motion, mixed."
        )
    return plan


def search_space(kind: str, config: CalibrationConfig) -> SearchSpace:
    """The search space of a registry kind.

    The five spatially invariant kinds have hand-set spaces bounded by ``config``; any other kind
    is searched over its default sampler: ranges of float fields become continuous parameters,
    integer ranges and lists become discrete choices, and fixed values stay fixed.

    Raises:
        ParameterError: for an unknown kind, one that is spatially variant, or a sampler with
            more than 64 discrete choices.
    """
    _kernel_plan(kind, {})  # unknown or spatially variant kinds fail here
    r, length = config.max_radius, config.max_length
    if kind == "gaussian":
        space = SearchSpace(kind, (Param("sigma", 0.2, r / 2, 10),))
    elif kind == "lens":
        space = SearchSpace(kind, (Param("radius", 0.3, r, 10),))
    elif kind == "aperture":
        space = SearchSpace(
            kind,
            # A regular n-gon repeats every 360/n degrees: ``fit_space`` sets the period per n.
            (Param("radius", 0.3, r, 8), Param("rotation", 0.0, 360.0, 4, period=360.0)),
            choices={"blades": tuple(config.aperture_blades)},
        )
    elif kind == "motion":
        space = SearchSpace(
            kind, (Param("length", 1.01, length, 8), Param("angle", 0.0, 180.0, 12, 180.0))
        )
    elif kind == "mixed":
        space = SearchSpace(
            kind,
            (
                Param("size", 0.3, r, 5),
                Param("length", 1.01, length, 5),
                Param("angle", 0.0, 180.0, 6, 180.0),
            ),
            choices={"defocus": tuple(config.mixed_defocus)},
        )
    else:
        space = _space_from_sampler(kind)
    return space


def _space_from_sampler(kind: str) -> SearchSpace:
    entry = get_kind(kind)
    sampler = entry.sampler()
    spec_fields = entry.spec.model_fields
    params: list[Param] = []
    choices: dict[str, tuple[Any, ...]] = {}
    fixed: dict[str, Any] = {}
    for name in type(sampler).model_fields:
        value = getattr(sampler, name)
        is_int = spec_fields[name].annotation is int
        if isinstance(value, tuple) and len(value) == 2 and is_int:
            choices[name] = tuple(range(int(value[0]), int(value[1]) + 1))
        elif isinstance(value, tuple) and len(value) == 2:
            params.append(Param(name, float(value[0]), float(value[1]), 6))
        elif isinstance(value, list):
            choices[name] = tuple(value)
        else:
            fixed[name] = value
        if len(choices.get(name, ())) > 64:
            raise ParameterError(
                f"Blur kind {kind!r} has {len(choices[name])} values of {name!r} to try; "
                "give it a hand-set search space in histoblur.calibration.search."
            )
    return SearchSpace(kind, tuple(params), choices, fixed)


# ---------------------------------------------------------------------------------------------
# Scoring


class Scorer:
    """Scores PSFs against a prepared pair: FFT convolution, per-channel affine map, residual.

    The sharp image is reflect-padded by ``pad`` pixels and transformed once (single precision);
    each PSF costs one forward transform of the kernel and one inverse transform per channel.
    Residuals are taken inside ``border`` pixels of every side; their statistics are accumulated
    in double precision.
    """

    def __init__(self, sharp: np.ndarray, blurred: np.ndarray, border: int, pad: int) -> None:
        """Transform the padded sharp image (float32 (H, W, C)) once."""
        self.h, self.w, self.c = sharp.shape
        self.border, self.pad = border, pad
        padded = cv2.copyMakeBorder(sharp, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
        padded = padded.reshape(self.h + 2 * pad, self.w + 2 * pad, self.c).transpose(2, 0, 1)
        import scipy.fft  # here: scipy.fft and scipy.optimize take ~0.3 s to import

        self.shape = tuple(scipy.fft.next_fast_len(n, real=True) for n in padded.shape[1:])
        self.spectrum = scipy.fft.rfft2(
            np.ascontiguousarray(padded, np.float32), s=self.shape, workers=-1
        )
        bd = border
        target = blurred[bd : self.h - bd, bd : self.w - bd].astype(np.float64)
        self.target = target
        y = target.transpose(2, 0, 1).reshape(self.c, -1)
        self.yc = y - y.mean(1, keepdims=True)
        self.var_y = np.einsum("ij,ij->i", self.yc, self.yc) / self.yc.shape[1]
        self.evaluations = 0

    def _convolve(self, kernel: np.ndarray) -> np.ndarray:
        """Channel-first (C, H, W) float32 convolution of the sharp image with ``kernel``."""
        kh, kw = kernel.shape
        if kh // 2 > self.pad or kw // 2 > self.pad:
            kernel = crop_centre(kernel, 2 * self.pad + 1)
            kh, kw = kernel.shape
        k = np.zeros(self.shape, dtype=np.float32)
        k[:kh, :kw] = kernel
        k = np.roll(k, (-(kh // 2), -(kw // 2)), axis=(0, 1))
        import scipy.fft

        ks = scipy.fft.rfft2(k, workers=-1)
        out = scipy.fft.irfft2(self.spectrum * ks, s=self.shape, workers=-1)
        p = self.pad
        return out[:, p : p + self.h, p : p + self.w]

    def blur(self, kernel: np.ndarray) -> np.ndarray:
        """The sharp image convolved with ``kernel`` as (H, W, C) float32 (reflected borders)."""
        return np.ascontiguousarray(self._convolve(kernel).transpose(1, 2, 0))

    def _stats(self, model: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Gain, offset and residual MSE for a channel-first (C, H, W) model."""
        bd = self.border
        x = model[:, bd : self.h - bd, bd : self.w - bd].astype(np.float64).reshape(self.c, -1)
        n = x.shape[1]
        mx = x.sum(1) / n
        var = np.einsum("ij,ij->i", x, x) / n - mx * mx
        cov = np.einsum("ij,ij->i", x, self.yc) / n
        gain = np.where(var > 1e-12, cov / np.maximum(var, 1e-12), 0.0)
        offset = self.target.reshape(-1, self.c).mean(0) - gain * mx
        mse = float(np.mean(self.var_y - gain * cov))
        return gain, offset, max(mse, 0.0)

    def affine(self, model: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Least-squares per-channel gain and offset mapping ``model`` onto the blurred image.

        Args:
            model: (H, W, C) blurred model of the sharp image.

        Returns:
            ``(gain, offset, mse)``: arrays of C values and the residual mean squared error
            inside the scoring border.
        """
        return self._stats(np.asarray(model).transpose(2, 0, 1))

    def loss(self, kernel: np.ndarray) -> float:
        """Residual MSE of one PSF after the affine map."""
        self.evaluations += 1
        return self._stats(self._convolve(kernel))[2]


def crop_centre(kernel: np.ndarray, size: int) -> np.ndarray:
    """Centre ``size`` x ``size`` window of an odd kernel, zero-padded if smaller; unit sum."""
    out = np.zeros((size, size), dtype=np.float64)
    kh, kw = kernel.shape
    h, w = min(kh, size), min(kw, size)
    oy, ox = (kh - h) // 2, (kw - w) // 2
    ty, tx = (size - h) // 2, (size - w) // 2
    out[ty : ty + h, tx : tx + w] = kernel[oy : oy + h, ox : ox + w]
    return out / out.sum() if out.sum() > 0 else out


# ---------------------------------------------------------------------------------------------
# Search


def fit_space(space: SearchSpace, scorer: Loss) -> tuple[np.ndarray, dict[str, Any], float]:
    """Grid then refine, for each discrete choice; returns the best (x, choice, loss)."""
    best: tuple[np.ndarray, dict[str, Any], float] | None = None
    for choice in space.combos():
        params = space.params
        if space.kind == "aperture":  # a regular n-gon repeats every 360/n degrees
            period = 360.0 / int(choice["blades"])
            params = (params[0], Param("rotation", 0.0, period, params[1].grid, period))
        sub = SearchSpace(space.kind, params, {}, {**space.fixed, **choice})
        x, loss = fit_continuous(sub, scorer)
        if best is None or loss < best[2]:
            best = (x, {**choice}, loss)
    assert best is not None
    return best


class Loss(Protocol):
    """Anything that scores a PSF (lower is better), like :class:`Scorer`."""

    def loss(self, kernel: np.ndarray) -> float:
        """Residual of one PSF."""
        ...


def fit_continuous(space: SearchSpace, scorer: Loss) -> tuple[np.ndarray, float]:
    """Best point and loss of the continuous parameters of ``space``.

    A coarse grid first, then a bounded Brent search between the best grid point's neighbours
    (one parameter) or Nelder-Mead from it (several; angles wrap, other parameters are bounded).
    """
    cache: dict[tuple[float, ...], float] = {}

    def objective(x: np.ndarray) -> float:
        values = space.spec_values(np.atleast_1d(x), {})
        key = tuple(round(float(values[p.name]), 4) for p in space.params)
        if key not in cache:
            cache[key] = scorer.loss(space.kernel(np.atleast_1d(x), {}))
        return cache[key]

    if not space.params:
        return np.zeros(0), objective(np.zeros(0))
    grids = [p.grid_values() for p in space.params]
    points = [np.array(c, dtype=np.float64) for c in itertools.product(*grids)]
    losses = [objective(x) for x in points]
    start = points[int(np.argmin(losses))]
    if len(space.params) == 1:
        p, g = space.params[0], grids[0]
        i = int(np.argmin(np.abs(g - start[0])))
        lo, hi = g[max(0, i - 1)], g[min(len(g) - 1, i + 1)]
        from scipy.optimize import minimize_scalar

        res = minimize_scalar(
            lambda v: objective(np.array([v])),
            bounds=(lo, hi),
            method="bounded",
            options={"xatol": 1e-3},
        )
        x = np.array([res.x]) if res.fun <= objective(start) else start
        return x, objective(x)
    steps = []
    for p, g in zip(space.params, grids, strict=True):
        spacing = p.period / p.grid if p.period is not None else float(np.diff(g).max())
        steps.append(0.5 * spacing)
    simplex = [start]
    for j, step in enumerate(steps):
        v = start.copy()
        p = space.params[j]
        v[j] = v[j] + step if p.period is not None or v[j] + step <= p.high else v[j] - step
        simplex.append(v)
    bounds = [(None, None) if p.period else (p.low, p.high) for p in space.params]
    from scipy.optimize import minimize

    res = minimize(
        objective,
        start,
        method="Nelder-Mead",
        bounds=bounds,
        options={
            "initial_simplex": np.array(simplex),
            "xatol": 1e-3,
            "fatol": 1e-10,
            "maxfev": 150 * len(space.params),
        },
    )
    x = res.x if res.fun <= objective(start) else start
    return np.asarray(x, dtype=np.float64), objective(x)


def max_half(spaces: list[SearchSpace]) -> int:
    """Largest kernel half-size the searches can produce (their kernels at the upper bounds)."""
    half = 1
    for space in spaces:
        for choice in space.combos():
            x = np.array(
                [p.high if p.period is None else p.low + p.period / 8 for p in space.params]
            )
            k = space.kernel(x, choice)
            half = max(half, k.shape[0] // 2, k.shape[1] // 2)
    return half
