"""Regional restoration: regenerate only the masked region of an image by reverse diffusion.

At every reverse step the known region is re-noised from the input with ``q(x_t | x_0)`` and
combined with the generated region by the mask (eq. 2 of ArtiFusion); RePaint's resampling
(``jump_length``, ``resamples``) optionally diffuses the combined image forward again a few
steps and repeats them, so the generated region harmonises with its surroundings. ``sampler``
``ddpm`` walks every step of the schedule with ancestral noise; ``ddim`` walks ``steps``
respaced steps deterministically (the fast path). Outside the mask the result is the input,
bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from histoblur.diffusion.schedule import (
    ScheduleConfig,
    clean_from_eps,
    from_signed,
    q_sample,
    step_back,
    to_signed,
)

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t) -> predicted noise


@dataclass(frozen=True)
class RestoreSettings:
    """How to sample.

    Attributes:
        sampler: ``ddpm`` (ancestral, eta 1) or ``ddim`` (deterministic, eta 0).
        steps: reverse steps over the schedule (None: all ``T`` of them).
        jump_length, resamples: RePaint resampling: every ``jump_length`` steps go back up
            ``jump_length`` steps, ``resamples - 1`` times (0 / 1: no resampling).
    """

    sampler: Literal["ddpm", "ddim"] = "ddim"
    steps: int | None = 25
    jump_length: int = 0
    resamples: int = 1


def respaced(alpha_bar: torch.Tensor, steps: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(timesteps, their alpha_bar) of a sampling schedule of ``steps`` (ascending)."""
    total = len(alpha_bar)
    n = total if steps is None else max(2, min(steps, total))
    ts = torch.linspace(0, total - 1, n).round().long().unique()
    return ts, alpha_bar[ts]


def time_path(n: int, jump_length: int, resamples: int) -> list[int]:
    """Positions (indices into a schedule of ``n`` steps, -1 = clean) from ``n - 1`` down.

    Without resampling it is ``n - 1, ..., 0, -1``. With it, after reaching each multiple of
    ``jump_length`` the path goes back up ``jump_length`` positions, ``resamples - 1`` times.
    """
    left = {
        t: resamples - 1
        for t in range(0, n - 1, jump_length or n)
        if jump_length and t + jump_length <= n - 1
    }
    path, t = [n - 1], n - 1
    while t > -1:
        t -= 1
        path.append(t)
        if left.get(t, 0) > 0:
            left[t] -= 1
            for _ in range(jump_length):
                t += 1
                path.append(t)
    return path


def denoiser_passes(settings: RestoreSettings, schedule: ScheduleConfig) -> int:
    """How many times the denoiser runs for these settings (the cost of one restoration)."""
    n = len(respaced(schedule.alpha_bar(), settings.steps)[0])
    path = time_path(n, settings.jump_length, settings.resamples)
    return sum(1 for a, b in zip(path, path[1:], strict=False) if b < a)


@torch.no_grad()
def restore_region(
    denoise: Denoise,
    image: torch.Tensor,
    mask: torch.Tensor,
    schedule: ScheduleConfig,
    settings: RestoreSettings,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Regenerate ``image`` (N, C, H, W) in [0, 1] where ``mask`` (N, 1, H, W, bool) is set.

    Returns:
        The restored images; exactly ``image`` where the mask is not set.
    """
    mask = mask.bool()
    device, dtype = image.device, image.dtype
    ts, abs_ = respaced(schedule.alpha_bar(), settings.steps)
    ab = abs_.tolist()
    known = to_signed(image)
    eta = 1.0 if settings.sampler == "ddpm" else 0.0

    def noise() -> torch.Tensor:
        return torch.randn(image.shape, generator=generator).to(device, dtype)

    def alpha_at(position: int) -> float:
        return 1.0 if position < 0 else ab[position]

    x = noise()
    path = time_path(len(ts), settings.jump_length, settings.resamples)
    for cur, nxt in zip(path, path[1:], strict=False):
        if nxt > cur:  # RePaint: diffuse forward again from cur to nxt
            ratio = alpha_at(nxt) / alpha_at(cur)
            x = ratio**0.5 * x + (1 - ratio) ** 0.5 * noise()
            continue
        t = ts[cur].expand(len(image)).to(device)
        x = torch.where(mask, x, q_sample(schedule.alpha_bar(), known, t, noise()))  # eq. 2
        x0 = clean_from_eps(x, denoise(x, t), ab[cur])
        last = nxt < 0
        x = step_back(x, x0, ab[cur], alpha_at(nxt), eta, None if last else noise())
    return torch.where(mask, from_signed(x), image)
