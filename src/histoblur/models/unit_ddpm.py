"""UNIT-DDPM: two coupled domain diffusion models (sharp A, blurred B) and two translators.

Each domain has a noise-predicting U-Net ``eps_X(x_t, c_t, t)`` conditioned on a noisy image
``c_t`` of the *other* domain (channels concatenated) and on the timestep (sinusoidal embedding
added inside every block). The translators ``A -> B`` and ``B -> A`` (small U-Nets predicting a
correction, identity at start) make the other-domain condition during training, when no pair
exists. :class:`UnitDDPM` holds the four networks so one checkpoint carries the whole model;
the diffusion schedule (linear betas) is part of its config.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from histoblur.diffusion.schedule import q_sample, to_signed
from histoblur.models.gan import BlurGenerator, BlurGeneratorConfig


class UnitDDPMConfig(BaseModel):
    """Architecture and schedule of a :class:`UnitDDPM`.

    Attributes:
        width: channels of the denoisers' first level (doubled per level).
        depth: down-sampling steps of the denoisers.
        translator_width: first-level channels of the translators (U-Nets of depth 3).
        timesteps: diffusion steps T of training.
        beta_start, beta_end: linear noise schedule.
        prediction: what the denoisers output: the noise (``epsilon``, as in DDPM) or the
            velocity ``v = sqrt(ab) eps - sqrt(1 - ab) x0`` (``v``), which stays well conditioned
            at high noise and gives usable translations after far fewer training steps.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    arch: Literal["unit-ddpm"] = "unit-ddpm"
    width: int = Field(32, ge=4, le=256)
    depth: int = Field(3, ge=1, le=5)
    translator_width: int = Field(16, ge=2, le=128)
    timesteps: int = Field(1000, ge=2, le=4000)
    beta_start: float = Field(1e-4, gt=0, lt=1)
    beta_end: float = Field(0.02, gt=0, lt=1)
    prediction: Literal["epsilon", "v"] = "v"

    def alphas_cumprod(self) -> torch.Tensor:
        """``prod_{s <= t} (1 - beta_s)`` for t = 0..T-1 (float64)."""
        betas = torch.linspace(self.beta_start, self.beta_end, self.timesteps, dtype=torch.float64)
        return torch.cumprod(1 - betas, dim=0)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding (N, dim) of integer timesteps (N,)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class _Block(nn.Module):
    """Residual block: GroupNorm, SiLU, 3 x 3 conv, plus a per-channel timestep shift."""

    def __init__(self, cin: int, cout: int, tdim: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = (
            nn.GroupNorm(math.gcd(8, cin), cin),
            nn.Conv2d(cin, cout, 3, padding=1),
        )
        self.time = nn.Linear(tdim, cout)
        self.norm2, self.conv2 = (
            nn.GroupNorm(math.gcd(8, cout), cout),
            nn.Conv2d(cout, cout, 3, padding=1),
        )
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.time(temb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class Denoiser(nn.Module):
    """``eps(x_t, c_t, t)``: a timestep-conditioned U-Net; any image size.

    ``inputs`` channels in (image and condition concatenated: 6 by default), ``outputs`` out.
    """

    def __init__(self, width: int, depth: int, inputs: int = 6, outputs: int = 3) -> None:
        super().__init__()
        self.depth, tdim = depth, 4 * width
        self.tdim = width
        self.time = nn.Sequential(nn.Linear(width, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        widths = [width * 2 ** min(k, 3) for k in range(depth + 1)]
        self.stem = nn.Conv2d(inputs, widths[0], 3, padding=1)
        self.down = nn.ModuleList(
            _Block(widths[max(k - 1, 0)], widths[k], tdim) for k in range(depth + 1)
        )
        self.up = nn.ModuleList(
            _Block(widths[k + 1] + widths[k], widths[k], tdim) for k in reversed(range(depth))
        )
        self.head = nn.Sequential(nn.GroupNorm(math.gcd(8, widths[0]), widths[0]), nn.SiLU(),
                                  nn.Conv2d(widths[0], outputs, 3, padding=1))  # fmt: skip

    def forward(
        self, x: torch.Tensor, condition: torch.Tensor | None, t: torch.Tensor
    ) -> torch.Tensor:
        """Predicted noise of ``x`` (N, C, H, W) at timesteps ``t`` (N,); no condition: None."""
        h, w = x.shape[-2:]
        m = 2**self.depth
        ph, pw = -h % m, -w % m
        y = x if condition is None else torch.cat([x, condition], dim=1)
        if ph or pw:
            y = F.pad(y, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate")
        temb = self.time(timestep_embedding(t, self.tdim))
        y = self.stem(y)
        skips = []
        for k, block in enumerate(self.down):
            y = block(y if k == 0 else F.avg_pool2d(y, 2), temb)
            skips.append(y)
        y = skips.pop()
        for block in self.up:
            skip = skips.pop()
            y = F.interpolate(y, size=skip.shape[-2:], mode="nearest")
            y = block(torch.cat([y, skip], dim=1), temb)
        return self.head(y)[..., :h, :w]


def translator(width: int) -> BlurGenerator:
    """A translator between the domains: ``x -> clamp(x + U-Net(x))``, the identity at start."""
    return BlurGenerator(BlurGeneratorConfig(width=width, depth=3, norm="group", noise_channels=0))


class UnitDDPM(nn.Module):
    """The four networks of UNIT-DDPM; images are in [0, 1] outside, [-1, 1] inside diffusion."""

    def __init__(self, config: UnitDDPMConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or UnitDDPMConfig()
        self.eps_a = Denoiser(config.width, config.depth)
        self.eps_b = Denoiser(config.width, config.depth)
        self.a_to_b = translator(config.translator_width)
        self.b_to_a = translator(config.translator_width)
        self.register_buffer("alpha_bar", config.alphas_cumprod().float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The A -> B translator (one pass; the diffusion translation is :func:`translate`)."""
        return self.a_to_b(x)


def denoising_loss(
    model: UnitDDPM,
    denoiser: Denoiser,
    x0: torch.Tensor,
    condition0: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DDPM loss ``|target - f_theta(x_t, c_t, t)|^2`` with ``x`` and its condition noised jointly.

    ``x0`` and ``condition0`` are [0, 1] images of the denoiser's domain and of the other one;
    the target is the noise or the velocity, as the model's ``prediction`` says.
    """
    n = x0.shape[0]
    device = x0.device
    t = torch.randint(0, model.config.timesteps, (n,), generator=generator).to(device)
    noise = torch.randn(x0.shape, generator=generator).to(device, x0.dtype)
    other = torch.randn(x0.shape, generator=generator).to(device, x0.dtype)
    signed = to_signed(x0)
    x_t = q_sample(model.alpha_bar, signed, t, noise)
    c_t = q_sample(model.alpha_bar, to_signed(condition0), t, other)
    target = noise
    if model.config.prediction == "v":
        ab = model.alpha_bar[t].to(x0.dtype)[:, None, None, None]
        target = ab.sqrt() * noise - (1 - ab).sqrt() * signed
    return F.mse_loss(denoiser(x_t, c_t, t), target)


def clean_estimate(
    prediction: str, x_t: torch.Tensor, output: torch.Tensor, ab_t: float
) -> torch.Tensor:
    """The denoiser's estimate of ``x0`` from its ``output`` at ``alpha_bar = ab_t``."""
    if prediction == "v":
        return math.sqrt(ab_t) * x_t - math.sqrt(1 - ab_t) * output
    return (x_t - math.sqrt(1 - ab_t) * output) / math.sqrt(ab_t)


def respaced(alpha_bar: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(timesteps, their alpha_bar) of a ``steps``-step sampling schedule (ascending)."""
    total = len(alpha_bar)
    ts = torch.linspace(0, total - 1, min(steps, total)).round().long().unique()
    return ts, alpha_bar[ts].double()


def reverse_step(
    x_t: torch.Tensor,
    x0: torch.Tensor,
    ab_t: float,
    ab_prev: float,
    z: torch.Tensor | None,
    eta: float = 1.0,
) -> torch.Tensor:
    """One step from ``ab_t`` to ``ab_prev``: ancestral DDPM at ``eta = 1``, DDIM at ``eta = 0``.

    The clean estimate ``x0`` is clamped to [-1, 1] and the noise estimate recomputed from it,
    so an imperfect denoiser cannot push the chain out of the image range.
    """
    x0 = x0.clamp(-1, 1)
    eps = (x_t - math.sqrt(ab_t) * x0) / math.sqrt(1 - ab_t)
    sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev))
    x_prev = math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * eps
    if z is None or sigma == 0:
        return x_prev
    return x_prev + sigma * z


@torch.no_grad()
def translate(
    model: UnitDDPM,
    x_a: torch.Tensor,
    release: float = 0.5,
    steps: int = 50,
    generator: torch.Generator | None = None,
    eta: float = 1.0,
    start: float = 1.0,
) -> torch.Tensor:
    """Translate sharp images ``x_a`` (N, 3, H, W) in [0, 1] to the blurred domain.

    The release-time procedure: ``x_B`` starts from noise at ``T``; while ``t > t_r`` the source
    is re-noised from ``x_A`` by the forward process, from ``t_r`` on both chains run the reverse
    process jointly, each denoiser conditioned on the other chain. ``release`` is ``t_r / T``;
    ``steps`` respaces the ``T`` training steps for sampling; ``eta`` is the share of fresh
    noise per reverse step (0: deterministic DDIM updates, 1: ancestral DDPM).

    ``start < 1`` is histoblur's shortcut for under-trained models: ``x_B`` starts at
    ``t_s = start * T`` from the source noised by the forward process instead of from pure noise
    at ``T`` (as SDEdit does), so the tissue layout comes from ``x_A`` and the denoisers only add
    the blurred domain's appearance.
    """
    device, dtype = x_a.device, x_a.dtype
    ts, abs_ = respaced(model.alpha_bar.cpu(), steps)
    if start < 1:
        keep = ts <= start * (model.config.timesteps - 1)
        keep[0] = True
        ts, abs_ = ts[keep], abs_[keep]
    source = to_signed(x_a)
    t_r = release * (model.config.timesteps - 1)
    prediction = model.config.prediction

    def noise() -> torch.Tensor:
        return torch.randn(x_a.shape, generator=generator).to(device, dtype)

    x_a_t = q_sample(model.alpha_bar, source, ts[-1:].expand(len(x_a)).to(device), noise())
    x_b = (
        noise()
        if start >= 1
        else q_sample(model.alpha_bar, source, ts[-1:].expand(len(x_a)).to(device), noise())
    )
    for i in reversed(range(len(ts))):
        t, ab_t = ts[i], float(abs_[i])
        ab_prev = float(abs_[i - 1]) if i > 0 else 1.0
        tt = t.expand(len(x_a)).to(device)
        if t > t_r:  # source chain is the forward process of x_A
            x_a_t = q_sample(model.alpha_bar, source, tt, noise())
        x0_b = clean_estimate(prediction, x_b, model.eps_b(x_b, x_a_t, tt), ab_t)
        next_a = None
        if t <= t_r:
            x0_a = clean_estimate(prediction, x_a_t, model.eps_a(x_a_t, x_b, tt), ab_t)
            next_a = reverse_step(x_a_t, x0_a, ab_t, ab_prev, noise() if i > 0 else None, eta)
        x_b = reverse_step(x_b, x0_b, ab_t, ab_prev, noise() if i > 0 else None, eta)
        if next_a is not None:
            x_a_t = next_a
    return ((x_b + 1) / 2).clamp(0, 1)
