"""Learned blur synthesis: a noise-conditioned U-Net generator and a PatchGAN critic.

:class:`BlurGenerator` maps a sharp RGB tile in [0, 1] to a blurred one. It is a U-Net
(:class:`histoblur.models.unet.UNet`) that sees the tile and a smooth random noise map and
predicts a correction added to the tile; the last layer starts at zero, so an untrained generator
is the identity (the identity loss starts at zero). The noise map is drawn at
``1 / noise_scale`` of the tile's resolution and up-sampled, so one sharp tile yields blur that
varies from place to place and from draw to draw, as real scanner blur does.

:class:`PatchCritic` is a PatchGAN critic for WGAN-GP: strided 4 x 4 convolutions, leaky ReLU,
no batch normalisation (the gradient penalty is per sample) and no sigmoid; it scores
overlapping patches of ``(condition, image)``. :func:`critic_condition` makes the condition: a
strong low-pass of the generator's input (or of a real blurred image), which sharp and blurred
versions of one field share, so the critic is conditioned on the input even for unpaired data.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from pydantic import Field, model_validator
from torch import nn

from histoblur.config import Config
from histoblur.models.unet import Norm, UNet, UNetConfig, check_widest

CONDITION_FACTOR = 8  # the critic's condition keeps structure coarser than 8 px


class BlurGeneratorConfig(Config):
    """Architecture of a :class:`BlurGenerator`.

    Attributes:
        width, depth, norm: of the U-Net (see :class:`UNetConfig`, whose bounds apply).
        noise_channels: channels of the random noise map given beside the image (at most 13:
            the U-Net takes at most 16 input channels).
        noise_scale: the noise map is drawn this many times coarser than the image.
    """

    arch: Literal["blur-gan"] = "blur-gan"
    width: int = Field(16, ge=2, le=256)
    depth: int = Field(4, ge=1, le=7)
    norm: Norm = "instance"
    noise_channels: int = Field(2, ge=0, le=13)
    noise_scale: int = Field(16, ge=1, le=256)

    @model_validator(mode="after")
    def _widest_bounded(self) -> BlurGeneratorConfig:
        check_widest(self.width, self.depth)
        return self

    def unet(self) -> UNetConfig:
        """The generator's U-Net: the image and the noise map in, a 3-channel correction out."""
        return UNetConfig(
            in_channels=3 + self.noise_channels,
            out_channels=3,
            width=self.width,
            depth=self.depth,
            norm=self.norm,
        )


class BlurGenerator(nn.Module):
    """``G(x, z) = clamp(x + U-Net([x, z]))``; any input size."""

    def __init__(self, config: BlurGeneratorConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or BlurGeneratorConfig()
        self.unet = UNet(config.unet())
        nn.init.zeros_(self.unet.head.weight)
        nn.init.zeros_(self.unet.head.bias)

    def noise(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A smooth standard-normal noise map for ``x`` (N, noise_channels, H, W)."""
        n, _, h, w = x.shape
        c, s = self.config.noise_channels, self.config.noise_scale
        coarse = (max(1, -(-h // s)), max(1, -(-w // s)))
        z = torch.randn((n, c, *coarse), generator=generator, device="cpu").to(x.device, x.dtype)
        return F.interpolate(z, size=(h, w), mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Blurred ``x`` (N, 3, H, W) in [0, 1]; ``z`` from :meth:`noise` (drawn when None)."""
        if self.config.noise_channels:
            z = self.noise(x) if z is None else z
            inputs = torch.cat([x, z], dim=1)
        else:
            inputs = x
        return (x + self.unet(inputs)).clamp(0, 1)


class PatchCriticConfig(Config):
    """Architecture of a :class:`PatchCritic`.

    Attributes:
        width: channels of the first convolution (doubled at each stride, at most 8x).
        layers: strided convolutions (3: 70 x 70 px patches, as pix2pix).
    """

    arch: Literal["patch-critic"] = "patch-critic"
    width: int = Field(32, ge=2, le=512)
    layers: int = Field(3, ge=1, le=6)


class PatchCritic(nn.Module):
    """Scores (N, 1, h, w) for overlapping patches of ``cat([condition, image])`` (6 channels)."""

    def __init__(self, config: PatchCriticConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or PatchCriticConfig()
        layers: list[nn.Module] = []
        cin = 6
        for k in range(config.layers):
            cout = config.width * min(2**k, 8)
            layers += [nn.Conv2d(cin, cout, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        layers += [
            nn.Conv2d(cin, cin, 4, 1, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(cin, 1, 4, 1, 1),
        ]
        self.body = nn.Sequential(*layers)

    def forward(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Patch scores (higher: more like real blur)."""
        return self.body(torch.cat([condition, image], dim=1))


def critic_condition(x: torch.Tensor) -> torch.Tensor:
    """The low-pass both a field's sharp and blurred versions share (area down, bilinear up)."""
    h, w = x.shape[-2:]
    f = CONDITION_FACTOR
    small = F.adaptive_avg_pool2d(x, (max(1, h // f), max(1, w // f)))
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
