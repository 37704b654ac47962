"""Reverse-diffusion sampling on a noise schedule, shaped like diffusers' schedulers.

One home for respacing, the clean estimate and the reverse step, shared by the regional
restorer (:mod:`histoblur.diffusion.regional`) and UNIT-DDPM translation
(:mod:`histoblur.diffusion.translation`). :meth:`Scheduler.set_timesteps` picks the timesteps a
sampling visits (ascending, indexed by *position*; position -1 is the clean image) and
:meth:`Scheduler.step` moves a sample from one position to a lower one given the denoiser's
output: ancestral DDPM at ``eta`` 1, deterministic DDIM at ``eta`` 0.

Examples:
    >>> import torch
    >>> from histoblur.diffusion.schedule import ScheduleConfig
    >>> scheduler = Scheduler(ScheduleConfig(timesteps=100).alpha_bar())
    >>> scheduler.set_timesteps(5).tolist()
    [0, 25, 50, 74, 99]
    >>> x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> for position in reversed(range(len(scheduler.timesteps))):
    ...     output = torch.zeros_like(x)  # a denoiser's predicted noise
    ...     x = scheduler.step(output, position, x, eta=0.0)
    >>> x.shape
    torch.Size([1, 3, 8, 8])
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from histoblur.errors import ParameterError

Prediction = Literal["epsilon", "v"]


class Scheduler:
    """Sampling over ``alpha_bar`` (T,): respacing, clean estimates and reverse steps.

    Args:
        alpha_bar: ``prod_{s <= t} (1 - beta_s)`` for t = 0..T-1 (any float dtype; kept as
            float64 on the CPU).
        prediction: what the denoiser outputs: the noise (``epsilon``) or the velocity
            ``v = sqrt(ab) eps - sqrt(1 - ab) x0`` (``v``).
    """

    def __init__(self, alpha_bar: torch.Tensor, prediction: Prediction = "epsilon") -> None:
        if prediction not in ("epsilon", "v"):
            raise ParameterError(f"prediction must be epsilon or v, got {prediction!r}.")
        self.alpha_bar = alpha_bar.detach().cpu().double()
        self.prediction = prediction
        self.set_timesteps(None)

    @property
    def total(self) -> int:
        """T, the timesteps of the schedule."""
        return len(self.alpha_bar)

    def set_timesteps(self, steps: int | None, strength: float = 1.0) -> torch.Tensor:
        """Respace to ``steps`` evenly spread timesteps (None: all T; at least 2), ascending.

        ``strength`` < 1 keeps only the timesteps up to ``round(strength (T - 1))`` (and always
        the first), so sampling starts part-way down the schedule.

        Returns:
            The timesteps (long), also kept as ``self.timesteps``.
        """
        n = self.total if steps is None else max(2, min(steps, self.total))
        ts = torch.linspace(0, self.total - 1, n).round().long().unique()
        if strength < 1:
            keep = ts <= round(strength * (self.total - 1))
            keep[0] = True
            ts = ts[keep]
        self.timesteps = ts
        self._alphas = self.alpha_bar[ts].tolist()
        return ts

    def alpha(self, position: int) -> float:
        """``alpha_bar`` at ``position`` of the timesteps; 1 at position -1 (the clean image)."""
        return 1.0 if position < 0 else self._alphas[position]

    def clean(self, x_t: torch.Tensor, output: torch.Tensor, position: int) -> torch.Tensor:
        """The clean image the denoiser's ``output`` implies at ``position``, clamped to [-1, 1]."""
        ab = self.alpha(position)
        if self.prediction == "v":
            x0 = math.sqrt(ab) * x_t - math.sqrt(1 - ab) * output
        else:
            x0 = (x_t - math.sqrt(1 - ab) * output) / math.sqrt(ab)
        return x0.clamp(-1, 1)

    def step(
        self,
        output: torch.Tensor,
        position: int,
        x_t: torch.Tensor,
        eta: float = 1.0,
        noise: torch.Tensor | None = None,
        to: int | None = None,
    ) -> torch.Tensor:
        """Move ``x_t`` from ``position`` down to ``to`` (default ``position - 1``).

        The noise estimate is recomputed from the clamped clean estimate, so an imperfect
        denoiser cannot push the chain out of the image range. ``noise`` (None: none) is added
        with the step's ``sigma = eta * sqrt((1 - ab') / (1 - ab) (1 - ab / ab'))``.
        """
        x0 = self.clean(x_t, output, position)
        ab_t, ab_prev = self.alpha(position), self.alpha(position - 1 if to is None else to)
        eps = (x_t - math.sqrt(ab_t) * x0) / math.sqrt(1 - ab_t)
        sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev))
        out = math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * eps
        if noise is not None and sigma > 0:
            out = out + sigma * noise
        return out

    def renoise(self, x: torch.Tensor, position: int, to: int, noise: torch.Tensor) -> torch.Tensor:
        """Diffuse ``x`` forward from ``position`` up to ``to`` (RePaint's jump back up)."""
        ratio = self.alpha(to) / self.alpha(position)
        return math.sqrt(ratio) * x + math.sqrt(1 - ratio) * noise
