"""WGAN-GP losses for the blur generator: critic loss with gradient penalty, generator losses.

The critic ``D`` scores ``(condition, image)``; higher means more like real blur. With
``real`` and ``fake`` critic inputs (the image half of each; conditions are passed alongside):

- critic: ``mean D(fake) - mean D(real) + lambda_gp * E[(||grad D(x_hat)||_2 - 1)^2]``, with
  ``x_hat`` drawn uniformly on the segment between a real and a fake input;
- generator: ``-mean D(G(x))`` plus the identity loss ``|y - G(y)|_1`` on real blurred ``y``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Critic = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def gradient_penalty(
    critic: Critic,
    condition_real: torch.Tensor,
    real: torch.Tensor,
    condition_fake: torch.Tensor,
    fake: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``E[(||grad D(c_hat, x_hat)||_2 - 1)^2]`` on random points between real and fake inputs.

    The condition and the image are interpolated with the same weight, and the gradient norm is
    taken over both (the critic's whole input), per sample.
    """
    n = real.shape[0]
    eps = torch.rand((n, 1, 1, 1), generator=generator, device="cpu").to(real.device, real.dtype)
    c_hat = (eps * condition_real + (1 - eps) * condition_fake).detach().requires_grad_(True)
    x_hat = (eps * real + (1 - eps) * fake).detach().requires_grad_(True)
    scores = critic(c_hat, x_hat)
    grads = torch.autograd.grad(scores.sum(), (c_hat, x_hat), create_graph=True)
    norm = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads) + 1e-12)
    return (norm - 1).pow(2).mean()


def critic_loss(
    critic: Critic,
    condition_real: torch.Tensor,
    real: torch.Tensor,
    condition_fake: torch.Tensor,
    fake: torch.Tensor,
    lambda_gp: float = 10.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, float]:
    """(WGAN-GP critic loss, Wasserstein estimate ``mean D(real) - mean D(fake)``)."""
    fake = fake.detach()
    real_score = critic(condition_real, real).mean()
    fake_score = critic(condition_fake, fake).mean()
    gp = gradient_penalty(critic, condition_real, real, condition_fake, fake, generator)
    return fake_score - real_score + lambda_gp * gp, float((real_score - fake_score).detach())


def identity_loss(generated: torch.Tensor, blurred: torch.Tensor) -> torch.Tensor:
    """``|y - G(y)|_1`` (mean): a blurred image passed through the generator stays unchanged."""
    return (generated - blurred).abs().mean()
