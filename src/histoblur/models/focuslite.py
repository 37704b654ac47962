"""FocusLiteNN: a whole-image focus scorer of one convolution and a global min pooling.

After Wang et al. 2020 ("FocusLiteNN: High Efficiency Focus Quality Assessment for Digital
Pathology"): a single strided convolution maps local patches of the image to a "blurriness"
response, and the image's score is the LOWEST response anywhere (min pooling, ``-max(-x)``), so
an image scores as out of focus only when every part of it looks out of focus; one sharp region
is enough to call it sharp. With more than one channel a linear layer mixes the channels'
minima. The output is one logit per image (higher: more out of focus). With the default single
channel the network has ``3 * 7 * 7 + 1 = 148`` parameters.

The convolution is unpadded (zero padding would give borders a response of their own), so both
image sides must be at least ``kernel``.

Examples:
    >>> import torch
    >>> net = FocusLiteNN(FocusLiteConfig()).eval()
    >>> sum(p.numel() for p in net.parameters())
    148
    >>> net(torch.rand(2, 3, 128, 128)).shape, net(torch.rand(1, 3, 7, 30)).shape
    (torch.Size([2, 1]), torch.Size([1, 1]))
    >>> wide = FocusLiteNN(FocusLiteConfig(channels=2))
    >>> sum(p.numel() for p in wide.parameters()), wide(torch.rand(3, 3, 64, 48)).shape
    (299, torch.Size([3, 1]))
    >>> net(torch.rand(1, 3, 6, 64))
    Traceback (most recent call last):
    ...
    ValueError: FocusLiteNN needs image sides of at least its kernel (7 px), got 6 x 64.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from histoblur.config import Config


class FocusLiteConfig(Config):
    """Architecture of a :class:`FocusLiteNN` (stored in ``config.json`` beside the weights).

    Attributes:
        in_channels: input channels (RGB; grey images are repeated by the caller).
        channels: output channels of the convolution (FocusLiteNN: 1; 2 and more add a
            ``Linear(channels, 1)`` after the min pooling).
        kernel: side of the convolution kernel (FocusLiteNN: 7).
        stride: stride of the convolution (FocusLiteNN: 5).
    """

    arch: Literal["focuslite"] = "focuslite"
    in_channels: int = Field(3, ge=1, le=16)
    channels: int = Field(1, ge=1, le=8)
    kernel: int = Field(7, ge=1, le=31)
    stride: int = Field(5, ge=1, le=31)


class FocusLiteNN(nn.Module):
    """(N, C, H, W) float images in [0, 1] -> (N, 1) logits, higher for more out of focus."""

    def __init__(self, config: FocusLiteConfig) -> None:
        super().__init__()
        self.config = config
        self.conv = nn.Conv2d(config.in_channels, config.channels, config.kernel, config.stride)
        self.fc = nn.Linear(config.channels, 1) if config.channels > 1 else None

    def response(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution's map (N, channels, h, w), before the min pooling.

        Raises:
            ValueError: a side shorter than the kernel.
        """
        h, w = x.shape[-2:]
        k = self.config.kernel
        if min(h, w) < k:
            raise ValueError(
                f"FocusLiteNN needs image sides of at least its kernel ({k} px), got {h} x {w}."
            )
        return self.conv(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One logit per image: the minimum of the response map, channels mixed if several."""
        pooled = -torch.amax(-self.response(x), dim=(2, 3))  # global min pooling
        return pooled if self.fc is None else self.fc(pooled)
