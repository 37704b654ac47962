"""RED-Net-style deblurring encoder-decoder with symmetric skip connections summed.

The encoder has one level per entry of ``widths`` (32, 64, 128 by default): ``convs`` 3 x 3
convolutions, then a stride-2 convolution into the next level. The decoder mirrors it with
stride-2 transposed convolutions; the output of each encoder level is added to the decoder
feature of the same size (symmetric skips, summed), and the input image is added to the
output, so the network predicts the correction. Any input size works: sides are reflect-padded
to a multiple of ``2 ** (len(widths) - 1)`` inside ``forward`` (replicate-padded when a side is
too short to reflect) and the output is cropped back.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from pydantic import Field, field_validator
from torch import nn

from histoblur.config import Config

MAX_LEVELS = 6
MAX_WIDTH = 512


class RedNetConfig(Config):
    """Architecture of a :class:`RedNet` (stored in ``config.json`` beside the weights).

    Attributes:
        channels: image channels in and out.
        widths: features per level (1 to 6 levels of 1 to 512 features); each level after the
            first halves the resolution.
        convs: 3 x 3 convolutions per level on each side.
        kernel: convolution kernel size (3 or 5, as in DBMID).
    """

    arch: Literal["rednet"] = "rednet"
    channels: int = Field(3, ge=1, le=16)
    widths: tuple[int, ...] = (32, 64, 128)
    convs: int = Field(2, ge=1, le=16)
    kernel: Literal[3, 5] = 3

    @field_validator("widths")
    @classmethod
    def _widths_bounded(cls, widths: tuple[int, ...]) -> tuple[int, ...]:
        if not 1 <= len(widths) <= MAX_LEVELS or any(not 1 <= w <= MAX_WIDTH for w in widths):
            raise ValueError(
                f"widths must list 1 to {MAX_LEVELS} whole numbers from 1 to {MAX_WIDTH}"
            )
        return widths

    @property
    def multiple(self) -> int:
        """Input sides are padded to a multiple of this inside ``forward``."""
        return 2 ** (len(self.widths) - 1)


def _convs(width: int, n: int, kernel: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(n):
        layers += [nn.Conv2d(width, width, kernel, padding=kernel // 2), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class RedNet(nn.Module):
    """(N, C, H, W) blurred images in [0, 1] -> (N, C, H, W) deblurred images (not clamped)."""

    def __init__(self, config: RedNetConfig) -> None:
        super().__init__()
        self.config = config
        w, k = config.widths, config.kernel
        self.head = nn.Sequential(nn.Conv2d(config.channels, w[0], k, padding=k // 2), nn.ReLU())
        self.encoder = nn.ModuleList(_convs(c, config.convs, k) for c in w)
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 3, stride=2, padding=1), nn.ReLU())
            for a, b in zip(w, w[1:], strict=False)
        )
        self.up = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(b, a, 4, stride=2, padding=1), nn.ReLU())
            for a, b in zip(w, w[1:], strict=False)
        )
        self.decoder = nn.ModuleList(_convs(c, config.convs, k) for c in w[:-1])
        self.tail = nn.Conv2d(w[0], config.channels, k, padding=k // 2)
        nn.init.zeros_(self.tail.weight)  # start as the identity: training learns the correction
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Deblurred image: input plus the predicted correction."""
        h, w = x.shape[-2:]
        m = self.config.multiple
        ph, pw = (-h) % m, (-w) % m
        padded = x
        if ph or pw:  # reflect needs a pad shorter than the side; a tiny input is replicated
            mode = "reflect" if ph < h and pw < w else "replicate"
            padded = F.pad(x, (0, pw, 0, ph), mode=mode)
        feature = self.head(padded)
        skips = []
        for level, block in enumerate(self.encoder):
            feature = block(feature)
            skips.append(feature)
            if level < len(self.down):
                feature = self.down[level](feature)
        for level in reversed(range(len(self.up))):
            feature = self.up[level](feature) + skips[level]
            feature = self.decoder[level](feature)
        out = padded + self.tail(feature + skips[0])
        return out[..., :h, :w]
