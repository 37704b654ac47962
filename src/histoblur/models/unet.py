"""U-Net for dense blur segmentation: configurable depth, width, normalisation and block type.

The network takes float images in [0, 1] (N, C, H, W) and returns logits (N, out_channels, H, W).
Any H and W work: inputs whose sides are not multiples of ``2 ** depth`` are reflect-padded inside
``forward`` (replicate-padded when a side is too short to reflect) and the output is cropped back,
so the caller never pads.

``separable=True`` gives the light variant: every 3 x 3 convolution after the first becomes a
depthwise 3 x 3 followed by a pointwise 1 x 1 (MobileNet-style), about 6x fewer multiply-adds.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from pydantic import Field, model_validator
from torch import nn

from histoblur.config import Config

Norm = Literal["batch", "group", "instance", "none"]
MAX_CHANNELS = 2048  # of the widest level (the bottleneck): ~0.5 GiB of weights at most


def check_widest(width: int, depth: int) -> None:
    """Refuse a bottleneck (``width * 2**depth`` channels) wider than :data:`MAX_CHANNELS`.

    A wider one would need many GiB for its weights alone.

    Raises:
        ValueError: in words, for the config's validation message.
    """
    if width * 2**depth > MAX_CHANNELS:
        raise ValueError(
            f"the widest level, width * 2**depth = {width * 2**depth} channels, must not exceed "
            f"{MAX_CHANNELS}; lower width or depth"
        )


class UNetConfig(Config):
    """Architecture of a :class:`UNet`; ``config.json`` beside the weights stores it.

    Attributes:
        in_channels: input channels (3 for RGB; grey inputs are replicated by the predictor).
        out_channels: output channels (1 blur logit for segmentation).
        width: channels of the first level; level ``k`` has ``width * 2**k``.
        depth: number of down-sampling steps (the bottleneck is ``2**depth`` times smaller);
            the bottleneck's ``width * 2**depth`` channels are at most :data:`MAX_CHANNELS`.
        norm: normalisation after each convolution (``group``: :func:`norm_groups` groups).
        separable: depthwise-separable convolutions (light variant).
        stem_stride: 2 runs the whole U-Net at half resolution after a strided stem and
            up-samples the logits bilinearly (about 4x cheaper; blur is a low-frequency label).
    """

    arch: Literal["unet"] = "unet"
    in_channels: int = Field(3, ge=1, le=16)
    out_channels: int = Field(1, ge=1, le=16)
    width: int = Field(16, ge=2, le=256)
    depth: int = Field(4, ge=1, le=7)
    norm: Norm = "batch"
    separable: bool = False
    stem_stride: Literal[1, 2] = 1

    @model_validator(mode="after")
    def _widest_bounded(self) -> UNetConfig:
        check_widest(self.width, self.depth)
        return self

    @property
    def multiple(self) -> int:
        """Input sides are padded to a multiple of this inside ``forward``."""
        return self.stem_stride * 2**self.depth


def norm_groups(channels: int) -> int:
    """GroupNorm groups for ``channels``: the largest divisor not above 8 (8 for 8, 16, 24...)."""
    return max(g for g in range(1, min(8, channels) + 1) if channels % g == 0)


def _norm(kind: Norm, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(norm_groups(channels), channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


def _conv(cin: int, cout: int, norm: Norm, separable: bool, stride: int = 1) -> nn.Sequential:
    """3 x 3 convolution (or depthwise + pointwise), normalisation, ReLU."""
    bias = norm == "none"
    if separable and cin > 1:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
            nn.Conv2d(cin, cout, 1, bias=bias),
        ]
    else:
        layers = [nn.Conv2d(cin, cout, 3, stride, 1, bias=bias)]
    return nn.Sequential(*layers, _norm(norm, cout), nn.ReLU(inplace=True))


class _Block(nn.Sequential):
    """Two convolutions; the first one of the network is always a full convolution."""

    def __init__(self, cin: int, cout: int, config: UNetConfig, first: bool = False) -> None:
        sep = config.separable and not first
        super().__init__(
            _conv(cin, cout, config.norm, sep), _conv(cout, cout, config.norm, config.separable)
        )


class UNet(nn.Module):
    """Encoder-decoder with skip connections (max-pool down, bilinear up, concatenation)."""

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or UNetConfig()
        widths = [config.width * 2**k for k in range(config.depth + 1)]
        if config.stem_stride == 2:
            self.stem: nn.Module = _conv(config.in_channels, widths[0], config.norm, False, 2)
            first_in, first = widths[0], False
        else:
            self.stem = nn.Identity()
            first_in, first = config.in_channels, True
        self.down = nn.ModuleList([_Block(first_in, widths[0], config, first=first)])
        self.down.extend(_Block(widths[k - 1], widths[k], config) for k in range(1, len(widths)))
        self.up = nn.ModuleList(
            _Block(widths[k + 1] + widths[k], widths[k], config)
            for k in reversed(range(config.depth))
        )
        self.head = nn.Conv2d(widths[0], config.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the same height and width as ``x``."""
        h, w = x.shape[-2:]
        m = self.config.multiple
        ph, pw = -h % m, -w % m
        if self.config.norm == "instance":  # instance norm needs a bottleneck of 2 x 2 or more
            ph, pw = max(ph, 2 * m - h), max(pw, 2 * m - w)
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        y = self.stem(x)
        skips = []
        for k, block in enumerate(self.down):
            y = block(y if k == 0 else F.max_pool2d(y, 2))
            skips.append(y)
        y = skips.pop()
        for block in self.up:
            skip = skips.pop()
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, skip], dim=1))
        y = self.head(y)
        if self.config.stem_stride != 1:
            y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return y[..., :h, :w]
