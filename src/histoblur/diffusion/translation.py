"""UNIT-DDPM translation: sharp images to the blurred domain by two coupled reverse chains.

The networks are :class:`histoblur.models.unit_ddpm.UnitDDPM`; the sampling (respacing, clean
estimate, reverse step) is the shared :class:`~histoblur.diffusion.scheduler.Scheduler`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from histoblur.diffusion.schedule import from_signed, q_sample, to_signed
from histoblur.diffusion.scheduler import Scheduler

if TYPE_CHECKING:
    from histoblur.models.unit_ddpm import UnitDDPM


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

    Examples:
        >>> from histoblur.models.unit_ddpm import UnitDDPM, UnitDDPMConfig
        >>> _ = torch.manual_seed(0)
        >>> model = UnitDDPM(UnitDDPMConfig(width=8, depth=1, translator_width=4)).eval()
        >>> x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        >>> out = translate(model, x, steps=4, generator=torch.Generator().manual_seed(1))
        >>> out.shape, bool(out.min() >= 0), bool(out.max() <= 1)
        (torch.Size([1, 3, 16, 16]), True, True)
    """
    device, dtype = x_a.device, x_a.dtype
    scheduler = Scheduler(model.alpha_bar, model.config.prediction)
    ts = scheduler.set_timesteps(steps, start)
    source = to_signed(x_a)
    t_r = release * (model.config.timesteps - 1)

    def noise() -> torch.Tensor:
        return torch.randn(x_a.shape, generator=generator).to(device, dtype)

    x_a_t = q_sample(model.alpha_bar, source, ts[-1:].expand(len(x_a)).to(device), noise())
    x_b = (
        noise()
        if start >= 1
        else q_sample(model.alpha_bar, source, ts[-1:].expand(len(x_a)).to(device), noise())
    )
    for i in reversed(range(len(ts))):
        t = ts[i]
        tt = t.expand(len(x_a)).to(device)
        if t > t_r:  # source chain is the forward process of x_A
            x_a_t = q_sample(model.alpha_bar, source, tt, noise())
        out_b = model.eps_b(x_b, x_a_t, tt)
        next_a = None
        if t <= t_r:
            out_a = model.eps_a(x_a_t, x_b, tt)
            next_a = scheduler.step(out_a, i, x_a_t, eta, noise() if i > 0 else None)
        x_b = scheduler.step(out_b, i, x_b, eta, noise() if i > 0 else None)
        if next_a is not None:
            x_a_t = next_a
    return from_signed(x_b)
