"""Focal-axis autoencoder: blur synthesis and deblurring by arithmetic on latent codes.

The encoder is ``levels`` stride-2 3 x 3 convolutions with batch norm and LeakyReLU (the paper's
64, 128, 256, 512, 1024 filters at ``width=64``); the decoder mirrors it with transposed
convolutions, one more stride-1 transposed convolution, and a 3 x 3 convolution with a sigmoid.

A :data:`Code` is a list of tensors: the bottleneck alone (the paper's model), or the bottleneck
plus the encoder features of the levels named in ``skips``. Skips feed the decoder as in a U-Net
but belong to the code, so interpolating or extrapolating a code moves every scale together and
the linear algebra of the paper (eq. 2 and 3) stays exact.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from histoblur.config import Config

Code = list[torch.Tensor]
MAX_CHANNELS = 4096  # filters of the last encoder level: under 1 GiB of weights


class AutoencoderConfig(Config):
    """Architecture of a :class:`FocalAutoencoder`.

    Attributes:
        width: filters of the first encoder level, doubled per level (64 in the paper).
        levels: stride-2 encoder levels; inputs are padded to a multiple of ``2**levels``. The
            last level's ``width * 2**(levels - 1)`` filters are at most :data:`MAX_CHANNELS`.
        channels: image channels in and out.
        skips: encoder levels (1 = the first, full width, half resolution) whose features join
            the code and the decoder; empty is the paper's plain autoencoder.
    """

    arch: Literal["focal-ae"] = "focal-ae"
    width: int = Field(64, ge=2, le=256)
    levels: int = Field(5, ge=1, le=7)
    channels: int = Field(3, ge=1, le=4)
    skips: tuple[int, ...] = ()

    @model_validator(mode="after")
    def _widest_bounded(self) -> AutoencoderConfig:
        widest = self.width * 2 ** (self.levels - 1)
        if widest > MAX_CHANNELS:
            raise ValueError(
                f"the last level, width * 2**(levels - 1) = {widest} filters, must not exceed "
                f"{MAX_CHANNELS}; lower width or levels"
            )
        return self

    @model_validator(mode="after")
    def _skips_inside(self) -> AutoencoderConfig:
        if any(not 1 <= s < self.levels for s in self.skips) or len(set(self.skips)) != len(
            self.skips
        ):
            raise ValueError(f"skips must be distinct levels between 1 and {self.levels - 1}")
        return self

    def widths(self) -> list[int]:
        """Output filters of each encoder level."""
        return [self.width * 2**k for k in range(self.levels)]


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)
    )


def _up(cin: int, cout: int, stride: int) -> nn.Sequential:
    extra = stride - 1
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 3, stride=stride, padding=1, output_padding=extra),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(0.2),
    )


class FocalAutoencoder(nn.Module):
    """Encoder ``E`` (image -> :data:`Code`) and decoder ``G`` (code -> image in [0, 1])."""

    def __init__(self, config: AutoencoderConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or AutoencoderConfig()
        widths = config.widths()
        inputs = [config.channels, *widths[:-1]]
        self.encoder = nn.ModuleList(_down(i, o) for i, o in zip(inputs, widths, strict=True))
        # decoder level k maps level k+1's resolution to level k's; skips add their channels
        self.decoder = nn.ModuleList()
        for k in reversed(range(config.levels)):
            cin = widths[k] + (widths[k] if (k + 1) in config.skips else 0)
            cout = widths[k - 1] if k > 0 else widths[0]
            self.decoder.append(_up(cin, cout, 2))
        self.refine = _up(widths[0], widths[0], 1)
        self.head = nn.Conv2d(widths[0], config.channels, 3, padding=1)

    @property
    def multiple(self) -> int:
        """Image sides must be multiples of this (the CLI pads to it)."""
        return 2**self.config.levels

    def encode(self, x: torch.Tensor) -> Code:
        """The code of images (N, C, H, W) in [0, 1]; H and W multiples of :attr:`multiple`."""
        h, w = x.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise ValueError(f"image sides {h} x {w} are not multiples of {self.multiple}")
        code: Code = []
        for level, layer in enumerate(self.encoder, start=1):
            x = layer(x)
            if level in self.config.skips:
                code.append(x)
        return [*code, x]

    def decode(self, code: Code) -> torch.Tensor:
        """Images (N, C, H, W) in [0, 1] from a code."""
        skips = dict(zip(sorted(self.config.skips), code[:-1], strict=True))
        y = code[-1]
        for k, layer in zip(reversed(range(self.config.levels)), self.decoder, strict=True):
            if (k + 1) in skips:
                y = torch.cat([y, skips[k + 1]], dim=1)
            y = layer(y)
        return torch.sigmoid(self.head(self.refine(y)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``G(E(x))``."""
        return self.decode(self.encode(x))


def mix(codes_a: Code, codes_b: Code, alpha: float | torch.Tensor) -> Code:
    """Eq. 2: ``alpha * b + (1 - alpha) * a`` per tensor (``a`` sharper, ``b`` blurrier).

    ``alpha`` is a number or a tensor that broadcasts over the codes (one per image).
    """
    return [alpha * b + (1 - alpha) * a for a, b in zip(codes_a, codes_b, strict=True)]


def extrapolate(near: Code, far: Code, alpha: float) -> Code:
    """Eq. 3: the sharp code ``(near - alpha * far) / (1 - alpha)``, inverse of :func:`mix`.

    ``alpha`` is where the near plane lies between focus (0) and the far plane (1).

    Raises:
        ValueError: ``alpha`` outside [0, 1).
    """
    if not 0 <= alpha < 1:
        raise ValueError(f"alpha must be in [0, 1) to extrapolate, got {alpha}")
    return [(n - alpha * f) / (1 - alpha) for n, f in zip(near, far, strict=True)]


def flatten(code: Code) -> torch.Tensor:
    """One vector (N, D) per image: every tensor of the code, flattened and concatenated."""
    return torch.cat([c.flatten(1) for c in code], dim=1)
