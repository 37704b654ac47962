"""Fitting every family to a prepared pair, the free-form kernel, and the result tables."""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from histoblur import __version__
from histoblur.calibration.align import PreparedPair, align_pair, estimate_scale, luma
from histoblur.calibration.config import FREEFORM, IDENTITY, CalibrationConfig
from histoblur.calibration.search import Scorer, crop_centre, fit_space, max_half, search_space
from histoblur.errors import ParameterError
from histoblur.kernels import centroid_offset, gaussian_kernel
from histoblur.metrics import psnr, ssim


@dataclass(frozen=True)
class FamilyFit:
    """The best fit of one family.

    Attributes:
        family: registry kind, ``"identity"`` or ``"free-form"``.
        params: fitted spec fields; for the free-form kernel its size, its centre of mass
            ``centroid`` as (dy, dx) px from the centre, and ``spread``, the RMS radius over
            sqrt(2) (equal to sigma for a Gaussian).
        gain: per-channel gain of the affine intensity map.
        offset: per-channel offset of the affine intensity map.
        mse: residual mean squared error (model clipped to [0, 1]) inside the border.
        psnr: residual PSNR in dB (data range 1).
        ssim: residual SSIM (7 x 7 uniform window, data range 1).
        kernel: the fitted PSF.
        n_params: free parameters (discrete ones with more than one choice count as one).
        at_bound: parameters that ended within 1% of a search bound: at the upper bound,
            widen it (``max_radius``, ``max_length``); a ``mixed`` length or size at its lower
            bound means that component is absent.
        evaluations: PSFs scored.
        seconds: wall time of the fit.
    """

    family: str
    params: dict[str, Any]
    gain: tuple[float, ...]
    offset: tuple[float, ...]
    mse: float
    psnr: float
    ssim: float
    kernel: np.ndarray
    n_params: int = 0
    at_bound: tuple[str, ...] = ()
    evaluations: int = 0
    seconds: float = 0.0

    def describe(self) -> str:
        """Parameters as ``name=value`` text."""
        return ", ".join(f"{k}={_fmt(v)}" for k, v in self.params.items()) or "-"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready record (without the kernel array)."""
        return {
            "family": self.family,
            "params": self.params,
            "gain": list(self.gain),
            "offset": list(self.offset),
            "mse": self.mse,
            "psnr": self.psnr,
            "ssim": self.ssim,
            "n_params": self.n_params,
            "kernel_shape": list(self.kernel.shape),
            "at_bound": list(self.at_bound),
            "evaluations": self.evaluations,
            "seconds": round(self.seconds, 3),
        }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_fmt(v) for v in value) + ")"
    return str(value)


def _finish_fit(
    family: str,
    params: dict[str, Any],
    kernel: np.ndarray,
    full: Scorer,
    n_params: int,
    at_bound: tuple[str, ...],
    evaluations: int,
    seconds: float,
) -> FamilyFit:
    """Affine map on every channel and the reported scores for one fitted PSF."""
    model = full.blur(kernel)
    gain, offset, _ = full.affine(model)
    mapped = np.clip(model * gain.astype(np.float32) + offset.astype(np.float32), 0.0, 1.0)
    bd = full.border
    a = mapped[bd : full.h - bd, bd : full.w - bd].astype(np.float64)
    b = full.target
    if a.shape[2] == 1:
        a, b = a[..., 0], b[..., 0]
    return FamilyFit(
        family=family,
        params=params,
        gain=tuple(round(float(v), 5) for v in gain),
        offset=tuple(round(float(v), 5) for v in offset),
        mse=float(np.mean((a - b) ** 2)),
        psnr=float(psnr(a, b, data_range=1.0)),
        ssim=float(ssim(a, b, data_range=1.0)),
        kernel=kernel,
        n_params=n_params,
        at_bound=at_bound,
        evaluations=evaluations,
        seconds=seconds,
    )


def fit_family(kind: str, scorer: Scorer, full: Scorer, config: CalibrationConfig) -> FamilyFit:
    """Fit one registry kind: search on ``scorer``, report on ``full`` (every channel)."""
    t0 = time.perf_counter()
    space = search_space(kind, config)
    before = scorer.evaluations
    x, choice, _ = fit_space(space, scorer)
    values = space.spec_values(x, choice)
    if kind == "aperture":
        values["rotation"] = float(values["rotation"] % (360.0 / int(values["blades"])))
    kernel = space.kernel(x, choice)
    at_bound = tuple(
        p.name
        for p, v in zip(space.params, x, strict=True)
        if p.period is None and (v <= p.low + 0.01 * (p.high - p.low) or v >= 0.99 * p.high)
    )
    params = {k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()}
    n_params = len(space.params) + sum(len(v) > 1 for v in space.choices.values())
    return _finish_fit(
        kind, params, kernel, full, n_params, at_bound, scorer.evaluations - before,
        time.perf_counter() - t0,
    )  # fmt: skip


def fit_freeform(
    pair: PreparedPair, config: CalibrationConfig, init: np.ndarray | None = None
) -> FamilyFit:
    """Fit a free-form non-negative, unit-sum PSF by projected Adam with FFT convolution.

    The loss is the residual mean squared error after the closed-form per-channel affine map
    (differentiable), plus ``config.freeform_tv`` times the kernel's total variation. After each
    step the kernel is clamped to be non-negative and renormalised to unit sum.

    Args:
        pair: the prepared pair.
        config: settings (``freeform_size``, ``freeform_steps``, ``freeform_lr``, ``freeform_tv``).
        init: starting PSF (any odd size, cropped or padded to ``freeform_size``); default a
            Gaussian of sigma 1.
    """
    t0 = time.perf_counter()
    size, border = config.freeform_size, config.scoring_border()
    pad = max(size // 2, 1)
    sharp = pair.sharp if config.channels == "all" else luma(pair.sharp)[..., None]
    blurred = pair.blurred if config.channels == "all" else luma(pair.blurred)[..., None]
    h, w, c = sharp.shape
    padded = cv2.copyMakeBorder(sharp, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    x = torch.from_numpy(padded.reshape(h + 2 * pad, w + 2 * pad, c)).permute(2, 0, 1)
    shape = (x.shape[1], x.shape[2])
    spectrum = torch.fft.rfft2(x)
    target = torch.from_numpy(blurred[border : h - border, border : w - border])
    target = target.permute(2, 0, 1).reshape(c, -1)
    tc = target - target.mean(1, keepdim=True)
    start = gaussian_kernel(1.0) if init is None else init
    k = torch.from_numpy(crop_centre(np.asarray(start, np.float64), size)).float()
    k = (k + 1e-3 * k.max()) / (k + 1e-3 * k.max()).sum()
    k.requires_grad_(True)
    opt = torch.optim.Adam([k], lr=config.freeform_lr / size**2)
    steps = config.freeform_steps
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=0.0)

    def loss_of(kernel: torch.Tensor) -> torch.Tensor:
        full = torch.nn.functional.pad(kernel, (0, shape[1] - size, 0, shape[0] - size))
        full = torch.roll(full, (-(size // 2), -(size // 2)), dims=(0, 1))
        model = torch.fft.irfft2(spectrum * torch.fft.rfft2(full), s=shape)
        model = model[:, pad + border : pad + h - border, pad + border : pad + w - border]
        m = model.reshape(c, -1)
        mc = m - m.mean(1, keepdim=True)
        var = (mc * mc).mean(1)
        cov = (mc * tc).mean(1)
        mse = ((tc * tc).mean(1) - cov * cov / var.clamp_min(1e-12)).mean()
        if config.freeform_tv > 0:
            tv = (kernel[1:] - kernel[:-1]).abs().sum() + (
                kernel[:, 1:] - kernel[:, :-1]
            ).abs().sum()
            mse = mse + config.freeform_tv * tv
        return mse

    for _ in range(steps):
        opt.zero_grad()
        loss = loss_of(k)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            k.clamp_(min=0.0)
            k /= k.sum().clamp_min(1e-12)
    kernel = k.detach().double().numpy()
    kernel /= kernel.sum()
    full = Scorer(pair.sharp, pair.blurred, border, pad)
    cy, cx = centroid_offset(kernel)
    yy, xx = np.mgrid[0:size, 0:size] - size // 2
    spread = math.sqrt(float((kernel * ((yy - cy) ** 2 + (xx - cx) ** 2)).sum()) / 2)
    params = {"size": size, "centroid": [round(cy, 3), round(cx, 3)], "spread": round(spread, 3)}
    return _finish_fit(
        FREEFORM, params, kernel, full, size * size - 1, (), steps, time.perf_counter() - t0
    )


@dataclass(frozen=True)
class CalibrationResult:
    """Every family's best fit on one pair, best first (identity included).

    Attributes:
        fits: per-family fits sorted by residual PSNR, highest first.
        pair_shape: (H, W) of the fitted window.
        shift: integer translation removed by registration.
        scale: magnification of the blurred image relative to the sharp one that was removed
            (``config.scale``, or the estimate when ``config.scale_search`` is set).
        sharp_origin: top-left of the fitted window in the sharp input.
        blurred_origin: top-left of the fitted window in the blurred input.
        border: pixels left out on each side when scoring.
        notes: what was done to the inputs.
        config: the settings used.
        seconds: wall time of the whole calibration.
    """

    fits: tuple[FamilyFit, ...]
    pair_shape: tuple[int, int]
    shift: tuple[int, int]
    scale: float
    sharp_origin: tuple[int, int]
    blurred_origin: tuple[int, int]
    border: int
    notes: tuple[str, ...]
    config: CalibrationConfig
    seconds: float

    def fit(self, family: str) -> FamilyFit:
        """The fit of one family by name.

        Raises:
            ParameterError: if that family was not fitted.
        """
        for f in self.fits:
            if f.family == family:
                return f
        raise ParameterError(f"Family {family!r} was not fitted in this calibration.")

    @property
    def best_family(self) -> str:
        """The parametric family that explains the pair best.

        Among the registry families (not identity, not free-form), those whose residual MSE is
        within ``config.tie_tolerance`` times the identity's residual MSE of the lowest are tied;
        the tied family with the fewest parameters wins, then the lower MSE.
        """
        families = [f for f in self.fits if f.family not in (IDENTITY, FREEFORM)]
        if not families:
            return IDENTITY
        low = min(f.mse for f in families)
        tol = self.config.tie_tolerance * self.fit(IDENTITY).mse
        tied = [f for f in families if f.mse <= low + tol]
        return min(tied, key=lambda f: (f.n_params, f.mse)).family

    def as_dict(self, inputs: dict[str, str] | None = None) -> dict[str, Any]:
        """JSON-ready summary (kernels are written separately)."""
        identity = self.fit(IDENTITY)
        return {
            "histoblur_version": __version__,
            "inputs": inputs or {},
            "pair_shape": list(self.pair_shape),
            "shift": list(self.shift),
            "scale": self.scale,
            "sharp_origin": list(self.sharp_origin),
            "blurred_origin": list(self.blurred_origin),
            "border": self.border,
            "notes": list(self.notes),
            "best_family": self.best_family,
            "identity_psnr": identity.psnr,
            "seconds": round(self.seconds, 3),
            "config": self.config.model_dump(mode="json"),
            "fits": [f.as_dict() for f in self.fits],
        }

    def to_csv(self) -> str:
        """One row per family, best first."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(
            ["rank", "family", "params", "gain", "offset", "psnr", "ssim", "mse",
             "psnr_gain_over_identity", "at_bound", "evaluations", "seconds"]
        )  # fmt: skip
        base = self.fit(IDENTITY).psnr
        for i, f in enumerate(self.fits, 1):
            writer.writerow(
                [i, f.family, f.describe(), ";".join(f"{v:.4f}" for v in f.gain),
                 ";".join(f"{v:.4f}" for v in f.offset), f"{f.psnr:.4f}", f"{f.ssim:.5f}",
                 f"{f.mse:.4e}", f"{f.psnr - base:.4f}", ";".join(f.at_bound), f.evaluations,
                 f"{f.seconds:.2f}"]
            )  # fmt: skip
        return buf.getvalue()


def calibrate(
    sharp: np.ndarray,
    blurred: np.ndarray,
    config: CalibrationConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> CalibrationResult:
    """Fit every configured family (plus identity and free-form) to a (sharp, blurred) pair.

    Args:
        sharp: in-focus image, (H, W) / (H, W, C), uint8 or uint16.
        blurred: the same field out of focus; same size unless ``config.crop`` or
            ``config.registration``.
        config: settings (defaults: :class:`CalibrationConfig`).
        progress: called with each family name once its fit is done.

    Returns:
        The fits, best residual PSNR first.

    Raises:
        InputError: for unusable or mismatched images.
        ParameterError: for an unknown or spatially variant family.
    """
    config = config or CalibrationConfig()
    t0 = time.perf_counter()
    spaces = [search_space(kind, config) for kind in config.families]
    scale = estimate_scale(sharp, blurred, config)
    pair, _ = align_pair(sharp, blurred, config, scale)
    border = config.scoring_border()
    pad = max(max_half(spaces), config.freeform_size // 2, border)
    full = Scorer(pair.sharp, pair.blurred, border, pad)
    if config.channels == "luma" and pair.sharp.shape[2] > 1:
        search = Scorer(luma(pair.sharp)[..., None], luma(pair.blurred)[..., None], border, pad)
    else:
        search = full
    fits = [_finish_fit(IDENTITY, {}, np.ones((1, 1)), full, 0, (), 1, 0.0)]
    for kind in config.families:
        fits.append(fit_family(kind, search, full, config))
        if progress is not None:
            progress(kind)
    if config.freeform:
        parametric = [f for f in fits if f.family != IDENTITY]
        init = max(parametric, key=lambda f: f.psnr).kernel if parametric else None
        fits.append(fit_freeform(pair, config, init))
        if progress is not None:
            progress(FREEFORM)
    fits.sort(key=lambda f: -f.psnr)
    return CalibrationResult(
        fits=tuple(fits),
        pair_shape=(pair.sharp.shape[0], pair.sharp.shape[1]),
        shift=pair.shift,
        scale=scale,
        sharp_origin=pair.sharp_origin,
        blurred_origin=pair.blurred_origin,
        border=border,
        notes=pair.notes,
        config=config,
        seconds=time.perf_counter() - t0,
    )
