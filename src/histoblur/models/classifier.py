"""VGG-style blur-type classifier: in focus, defocus, motion, mixed.

Five stages of 3 x 3 convolutions (2, 2, 3, 3, 3 as in VGG16), each followed by 2 x 2 max
pooling; channels ``width * (1, 2, 4, 8, 8)``. Global average pooling replaces VGG's fixed-size
fully connected head, so any input size works; a small head maps the pooled features to class
logits. ``width=64`` is VGG16's own width; 16 runs comfortably on a CPU.

With ``spectrum`` (the extension DBMID's authors suggest) a second branch reads the log
magnitude of the tile's Fourier transform (Hann-windowed luma, pooled to 64 x 64 frequency bins so
every input size gives the same axes): motion blur leaves parallel fringes there, defocus rings
or a round fall-off; its features join the spatial ones before the head.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from histoblur.config import Config

BLUR_TYPES = ("in_focus", "defocus", "motion", "mixed")
MAX_STAGES = 6
MAX_CONVS = 8  # per stage


class BlurTypeConfig(Config):
    """Architecture of a :class:`BlurTypeNet` (stored in ``config.json`` beside the weights).

    Attributes:
        in_channels: input channels (RGB).
        classes: number of blur types.
        width: channels of the first stage.
        stages: convolutions per stage (VGG16: 2, 2, 3, 3, 3): 1 to 6 stages of 1 to 8.
        norm: batch normalisation after each convolution, or none (plain VGG).
        dropout: dropout before the last layer.
        spectrum: add the Fourier branch (reads the luma of the first three channels, so it
            needs ``in_channels`` of 3 or more).
    """

    arch: Literal["vgg"] = "vgg"
    in_channels: int = Field(3, ge=1, le=16)
    classes: int = Field(len(BLUR_TYPES), ge=2, le=64)
    width: int = Field(16, ge=2, le=128)
    stages: tuple[int, ...] = (2, 2, 3, 3, 3)
    norm: Literal["batch", "none"] = "batch"
    dropout: float = Field(0.3, ge=0, lt=1)
    spectrum: bool = False

    @field_validator("stages")
    @classmethod
    def _stages_bounded(cls, stages: tuple[int, ...]) -> tuple[int, ...]:
        if not 1 <= len(stages) <= MAX_STAGES or any(not 1 <= n <= MAX_CONVS for n in stages):
            raise ValueError(
                f"stages must list 1 to {MAX_STAGES} whole numbers from 1 to {MAX_CONVS}"
            )
        return stages

    @model_validator(mode="after")
    def _spectrum_needs_rgb(self) -> BlurTypeConfig:
        if self.spectrum and self.in_channels < 3:
            raise ValueError(
                f"spectrum reads the luma of RGB tiles, so it needs in_channels of 3 or more "
                f"(got {self.in_channels})"
            )
        return self


SPECTRUM_BINS = 64


def log_spectrum(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, 64, 64) standardised log-magnitude spectrum of the luma of (N, 3, H, W) images."""
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).float()
    h, w = grey.shape[-2:]
    window = torch.outer(
        torch.hann_window(h, periodic=False, device=x.device),
        torch.hann_window(w, periodic=False, device=x.device),
    )
    centred = (grey - grey.mean(dim=(-2, -1), keepdim=True)) * window
    magnitude = torch.fft.fftshift(torch.fft.fft2(centred).abs(), dim=(-2, -1))
    spec = torch.log1p(magnitude * 100.0)[:, None]
    spec = nn.functional.adaptive_avg_pool2d(spec, SPECTRUM_BINS)
    mean = spec.mean(dim=(-2, -1), keepdim=True)
    std = spec.std(dim=(-2, -1), keepdim=True) + 1e-6
    return (spec - mean) / std


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
        joined = channels
        if config.spectrum:
            w = config.width
            self.spectral = nn.Sequential(
                nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
                nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
                nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
                nn.AdaptiveAvgPool2d(8), nn.Flatten(),
                nn.Linear(2 * w * 64, channels), nn.ReLU(inplace=True),
            )  # fmt: skip
            joined = 2 * channels
        self.head = nn.Sequential(
            nn.Linear(joined, channels),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(channels, config.classes),
        )

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x - 0.5).mean(dim=(2, 3))
        if self.config.spectrum:
            features = torch.cat([features, self.spectral(log_spectrum(x))], dim=1)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits; the input is centred on 0.5 inside."""
        return self.head(self._pooled(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, width * 8 or fewer): what the last layer classifies."""
        return self.head[:2](self._pooled(x))
