"""The DDPM forward process on a fixed noise schedule (T = 250 linear betas by default).

``x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps`` with ``ab_t = prod_{s <= t} (1 - beta_s)``;
timesteps are 0-based (t = 0 is the first noising step). Images live in [-1, 1] inside the
diffusion (:func:`to_signed` / :func:`from_signed`); sampling (respacing and the reverse step)
is :class:`histoblur.diffusion.scheduler.Scheduler`.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from histoblur.config import Config


class ScheduleConfig(Config):
    """A linear beta schedule: ``timesteps`` betas from ``beta_start`` to ``beta_end``.

    The defaults follow DDPM's 1e-4 .. 0.02 over 1000 steps, rescaled to 250 steps (as
    improved DDPM does for shorter chains), so the final ``ab_T`` is close to 0 either way.
    """

    timesteps: int = Field(250, ge=2, le=4000)
    beta_start: float = Field(4e-4, gt=0, lt=1)
    beta_end: float = Field(0.08, gt=0, lt=1)

    @model_validator(mode="after")
    def _ordered(self) -> ScheduleConfig:
        if self.beta_end < self.beta_start:
            raise ValueError("beta_end must not be below beta_start")
        return self

    def betas(self) -> torch.Tensor:
        """(T,) float64 betas."""
        return torch.linspace(self.beta_start, self.beta_end, self.timesteps, dtype=torch.float64)

    def alpha_bar(self) -> torch.Tensor:
        """(T,) float64 ``ab_t``."""
        return torch.cumprod(1 - self.betas(), dim=0)


def to_signed(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] images to the diffusion's [-1, 1]."""
    return x * 2 - 1


def from_signed(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] back to [0, 1], clamped."""
    return ((x + 1) / 2).clamp(0, 1)


def q_sample(
    alpha_bar: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """``q(x_t | x_0)``: ``sqrt(ab_t) x0 + sqrt(1 - ab_t) noise`` per sample (``t``: (N,))."""
    ab = alpha_bar.to(x0.device)[t].to(x0.dtype)[:, None, None, None]
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise
