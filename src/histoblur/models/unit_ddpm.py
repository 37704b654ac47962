"""UNIT-DDPM: two coupled domain diffusion models (sharp A, blurred B) and two translators.

Each domain has a noise-predicting U-Net ``eps_X(x_t, c_t, t)`` conditioned on a noisy image
``c_t`` of the *other* domain (channels concatenated) and on the timestep (sinusoidal embedding
added inside every block). The translators ``A -> B`` and ``B -> A`` (small U-Nets predicting a
correction, identity at start) make the other-domain condition during training, when no pair
exists. :class:`UnitDDPM` holds the four networks so one checkpoint carries the whole model;
the diffusion schedule (linear betas) is part of its config. Translation (sampling) is
:func:`histoblur.diffusion.translation.translate`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from pydantic import Field, model_validator
from torch import nn

from histoblur.config import Config
from histoblur.diffusion.schedule import ScheduleConfig, q_sample, to_signed
from histoblur.models.gan import BlurGenerator, BlurGeneratorConfig


class UnitDDPMConfig(Config):
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

    arch: Literal["unit-ddpm"] = "unit-ddpm"
    width: int = Field(32, ge=4, le=256, multiple_of=2)  # even: the timestep embedding halves it
    depth: int = Field(3, ge=1, le=5)
    translator_width: int = Field(16, ge=2, le=128)
    timesteps: int = Field(1000, ge=2, le=4000)
    beta_start: float = Field(1e-4, gt=0, lt=1)
    beta_end: float = Field(0.02, gt=0, lt=1)
    prediction: Literal["epsilon", "v"] = "v"

    @model_validator(mode="after")
    def _ordered(self) -> UnitDDPMConfig:
        if self.beta_end < self.beta_start:
            raise ValueError("beta_end must not be below beta_start")
        return self

    def schedule(self) -> ScheduleConfig:
        """The linear noise schedule of training."""
        return ScheduleConfig(
            timesteps=self.timesteps, beta_start=self.beta_start, beta_end=self.beta_end
        )


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
        self.register_buffer("alpha_bar", config.schedule().alpha_bar().float(), persistent=False)

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
