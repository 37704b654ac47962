"""VGG-style blur-type classifier: in focus, defocus, motion, mixed.

Five stages of 3 x 3 convolutions (2, 2, 3, 3, 3 as in VGG16), each followed by 2 x 2 max
pooling; channels ``width * (1, 2, 4, 8, 8)``. Global average pooling replaces VGG's fixed-size
fully connected head, so any input size works; a small head maps the pooled features to class
logits. ``width=64`` is VGG16's own width; 16 runs comfortably on a CPU.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

BLUR_TYPES = ("in_focus", "defocus", "motion", "mixed")


class BlurTypeConfig(BaseModel):
    """Architecture of a :class:`BlurTypeNet` (stored in ``config.json`` beside the weights).

    Attributes:
        in_channels: input channels (RGB).
        classes: number of blur types.
        width: channels of the first stage.
        stages: convolutions per stage (VGG16: 2, 2, 3, 3, 3).
        norm: batch normalisation after each convolution, or none (plain VGG).
        dropout: dropout before the last layer.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    arch: Literal["vgg"] = "vgg"
    in_channels: int = Field(3, ge=1, le=16)
    classes: int = Field(len(BLUR_TYPES), ge=2, le=64)
    width: int = Field(16, ge=2, le=128)
    stages: tuple[int, ...] = (2, 2, 3, 3, 3)
    norm: Literal["batch", "none"] = "batch"
    dropout: float = Field(0.3, ge=0, lt=1)


class BlurTypeNet(nn.Module):
    """VGG-style CNN: (N, C, H, W) float images in [0, 1] -> (N, classes) logits."""

    def __init__(self, config: BlurTypeConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        channels = config.in_channels
        for i, convs in enumerate(config.stages):
            out = config.width * min(2**i, 8)
            for _ in range(convs):
                layers.append(nn.Conv2d(channels, out, 3, padding=1, bias=config.norm == "none"))
                if config.norm == "batch":
                    layers.append(nn.BatchNorm2d(out))
                layers.append(nn.ReLU(inplace=True))
                channels = out
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels, channels),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(channels, config.classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits; the input is centred on 0.5 inside."""
        features = self.features(x - 0.5)
        return self.head(features.mean(dim=(2, 3), keepdim=True))
