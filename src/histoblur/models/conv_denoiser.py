"""Convolutional U-Net noise predictor ``eps(x_t, t)``: the restoration denoisers' CNN baseline.

The same timestep-conditioned residual U-Net as UNIT-DDPM's denoisers, without a condition
image: GroupNorm, SiLU, 3 x 3 convolutions, the timestep's sinusoidal embedding added in every
block. Any image size (padded inside to a multiple of ``2**depth``).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from histoblur.config import Config
from histoblur.models.unit_ddpm import Denoiser


class ConvDenoiserConfig(Config):
    """Architecture of a :class:`ConvDenoiser` (``width`` doubles per level, up to 8x).

    ``width`` is even: it is also the size of the timestep's sinusoidal embedding.
    """

    arch: Literal["conv-denoiser"] = "conv-denoiser"
    channels: int = Field(3, ge=1, le=4)
    width: int = Field(32, ge=4, le=256, multiple_of=2)
    depth: int = Field(3, ge=1, le=5)

    @property
    def multiple(self) -> int:
        """Any side works; the network pads inside."""
        return 1


class ConvDenoiser(nn.Module):
    """``eps(x_t, t)`` of images (N, C, H, W) at timesteps (N,)."""

    def __init__(self, config: ConvDenoiserConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ConvDenoiserConfig()
        self.net = Denoiser(config.width, config.depth, config.channels, config.channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predicted noise of ``x`` at timesteps ``t``."""
        return self.net(x, None, t)
