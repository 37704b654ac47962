"""U-shaped Swin-Transformer noise predictor with ArtiFusion's time token.

Encoder, bottleneck and decoder are stacks of Swin blocks (window attention, every second block
on windows shifted by half a window), with patch merging down and patch expanding up, and skip
connections between stages of equal resolution. Each block has its own learnable linear layer
that turns the timestep embedding into a **time token**: the token joins every window's tokens
before attention and is dropped after it, so the block's output has exactly its input's tokens
(``time: token``). ``time: add`` adds the same projection to every token instead (the paper's
"Add" ablation).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from torch import nn

from histoblur.config import Config
from histoblur.models.unit_ddpm import timestep_embedding

MAX_STAGES = 6
MAX_DEPTH = 16  # Swin blocks per stage
MAX_HEADS = 64
MAX_CHANNELS = 1024  # token width of the last stage (the bottleneck): ~2 GiB of weights at most


class SwinDenoiserConfig(Config):
    """Architecture of a :class:`SwinDenoiser`.

    Attributes:
        channels: image channels.
        embed_dim: token width of the first stage (doubled per stage; even, as the timestep
            embedding is); the last stage's ``embed_dim * 2**(stages - 1)`` is at most
            :data:`MAX_CHANNELS`.
        depths: Swin blocks per encoder stage, 1 to 16 for each of 1 to 6 stages (the decoder
            mirrors them; the bottleneck has ``depths[-1]``).
        heads: attention heads per stage, 1 to 64, one entry per stage; each must divide its
            stage's token width.
        window: window side in tokens (smaller at stages whose feature map is smaller).
        patch: patch side of the embedding (tokens are ``patch x patch`` pixels).
        time: ``token`` (ArtiFusion) or ``add``.
        mlp_ratio: hidden width of each block's MLP, relative to its token width.
    """

    arch: Literal["swin-denoiser"] = "swin-denoiser"
    channels: int = Field(3, ge=1, le=4)
    embed_dim: int = Field(32, ge=8, le=512, multiple_of=2)
    depths: tuple[int, ...] = (2, 2, 2)
    heads: tuple[int, ...] = (2, 4, 8)
    window: int = Field(8, ge=2, le=32)
    patch: int = Field(2, ge=1, le=8)
    time: Literal["token", "add"] = "token"
    mlp_ratio: float = Field(2.0, ge=0.25, le=8)

    @field_validator("depths", "heads")
    @classmethod
    def _per_stage_bounded(cls, values: tuple[int, ...], info: ValidationInfo) -> tuple[int, ...]:
        high = MAX_DEPTH if info.field_name == "depths" else MAX_HEADS
        if not 1 <= len(values) <= MAX_STAGES or any(not 1 <= v <= high for v in values):
            raise ValueError(
                f"{info.field_name} must list 1 to {MAX_STAGES} whole numbers from 1 to {high}"
            )
        return values

    @model_validator(mode="after")
    def _stages(self) -> SwinDenoiserConfig:
        if len(self.depths) != len(self.heads):
            raise ValueError(
                f"depths and heads need one entry per stage (got {len(self.depths)} depths "
                f"and {len(self.heads)} heads)"
            )
        widest = self.embed_dim * 2 ** (len(self.depths) - 1)
        if widest > MAX_CHANNELS:
            raise ValueError(
                f"the last stage, embed_dim * 2**(stages - 1) = {widest} channels, must not "
                f"exceed {MAX_CHANNELS}; lower embed_dim or the number of stages"
            )
        for k, h in enumerate(self.heads):
            if (self.embed_dim * 2**k) % h:
                raise ValueError(
                    f"heads[{k}] = {h} must divide the {self.embed_dim * 2**k} channels of "
                    f"stage {k} (embed_dim * 2**{k})"
                )
        return self

    @property
    def multiple(self) -> int:
        """Image sides must be multiples of this (every stage then tiles into whole windows)."""
        return self.patch * 2 ** (len(self.depths) - 1) * self.window


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(N, H, W, C) -> (N * H/w * W/w, w * w, C) windows."""
    n, h, w, c = x.shape
    x = x.view(n, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (N * nW, w * w, C) -> (N, H, W, C)."""
    c = windows.shape[-1]
    n = windows.shape[0] // ((h // window) * (w // window))
    x = windows.view(n, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(n, h, w, c)


def shift_mask(h: int, w: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """(nW, w*w, w*w) bool: which token pairs of a shifted window may attend (same region)."""
    region = torch.zeros(1, h, w, 1, device=device)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for ys in cuts:
        for xs in cuts:
            region[:, ys, xs, :] = label
            label += 1
    ids = window_partition(region, window).squeeze(-1)
    return ids[:, :, None] == ids[:, None, :]


class SwinBlock(nn.Module):
    """LayerNorm, (shifted) window attention with the time token, LayerNorm, MLP."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, tdim: int, config) -> None:  # noqa: ANN001
        super().__init__()
        self.heads, self.window, self.shift, self.mode = heads, window, shift, config.time
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.time = nn.Linear(tdim, dim)  # this block's own time projection
        hidden = int(dim * config.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def attend(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Multi-head attention within each window (``tokens``: (B, L, C))."""
        b, length, c = tokens.shape
        q, k, v = self.qkv(tokens).view(b, length, 3, self.heads, c // self.heads).unbind(2)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
        )
        return self.proj(out.transpose(1, 2).reshape(b, length, c))

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """``x``: (N, H, W, C) tokens; ``temb``: (N, tdim) timestep embedding."""
        n, h, w, c = x.shape
        window = min(self.window, h, w)  # a map smaller than the window is one window
        shift = self.shift if window < min(h, w) else 0
        token = self.time(temb)  # (N, C)
        y = self.norm1(x)
        if self.mode == "add":
            y = y + token[:, None, None, :]
        if shift:
            y = torch.roll(y, (-shift, -shift), dims=(1, 2))
        windows = window_partition(y, window)  # (N * nW, L, C)
        per_image = windows.shape[0] // n
        mask = None
        if shift:
            allowed = shift_mask(h, w, window, shift, x.device)  # (nW, L, L)
            mask = allowed.repeat(n, 1, 1)[:, None]
        if self.mode == "token":
            windows = torch.cat([token.repeat_interleave(per_image, 0)[:, None], windows], 1)
            if mask is not None:
                mask = F.pad(mask, (1, 0, 1, 0), value=True)  # the token sees and is seen by all
        out = self.attend(windows, mask)
        if self.mode == "token":
            out = out[:, 1:]  # drop the time token: as many tokens out as in
        y = window_reverse(out, window, h, w)
        if shift:
            y = torch.roll(y, (shift, shift), dims=(1, 2))
        x = x + y
        return x + self.mlp(self.norm2(x))


class Stage(nn.Module):
    """``depth`` Swin blocks at one resolution, alternating plain and shifted windows."""

    def __init__(self, dim: int, depth: int, heads: int, window: int, tdim: int, config) -> None:  # noqa: ANN001
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, heads, window, (window // 2) * (i % 2), tdim, config)
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """Tokens (N, H, W, C) through every block."""
        for block in self.blocks:
            x = block(x, temb)
        return x


class SwinDenoiser(nn.Module):
    """``eps(x_t, t)``: predicted noise (N, C, H, W) of images (N, C, H, W) at timesteps (N,)."""

    def __init__(self, config: SwinDenoiserConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or SwinDenoiserConfig()
        stages = len(config.depths)
        dims = [config.embed_dim * 2**k for k in range(stages)]
        tdim = 4 * config.embed_dim
        self.tdim0 = config.embed_dim
        self.time = nn.Sequential(
            nn.Linear(config.embed_dim, tdim), nn.SiLU(), nn.Linear(tdim, tdim)
        )
        self.embed = nn.Conv2d(config.channels, dims[0], config.patch, stride=config.patch)

        def stage(k: int, depth: int) -> Stage:
            return Stage(dims[k], depth, config.heads[k], config.window, tdim, config)

        self.down = nn.ModuleList(stage(k, config.depths[k]) for k in range(stages - 1))
        self.merge = nn.ModuleList(nn.Linear(4 * dims[k], dims[k + 1]) for k in range(stages - 1))
        self.bottleneck = stage(stages - 1, config.depths[-1])
        self.expand = nn.ModuleList(nn.Linear(dims[k + 1], 4 * dims[k]) for k in range(stages - 1))
        self.fuse = nn.ModuleList(nn.Linear(2 * dims[k], dims[k]) for k in range(stages - 1))
        self.up = nn.ModuleList(stage(k, config.depths[k]) for k in range(stages - 1))
        self.head = nn.Sequential(
            nn.LayerNorm(dims[0]), nn.Linear(dims[0], config.channels * config.patch**2)
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predicted noise of ``x`` at timesteps ``t``."""
        n, c, h, w = x.shape
        m = self.config.multiple
        if h % m or w % m:
            raise ValueError(f"image sides {h} x {w} are not multiples of {m}")
        temb = self.time(timestep_embedding(t, self.tdim0))
        y = self.embed(x).permute(0, 2, 3, 1)  # (N, h, w, C)
        skips = []
        for stage, merge in zip(self.down, self.merge, strict=True):
            y = stage(y, temb)
            skips.append(y)
            y = merge(torch.cat([y[:, 0::2, 0::2], y[:, 1::2, 0::2],
                                 y[:, 0::2, 1::2], y[:, 1::2, 1::2]], dim=-1))  # fmt: skip
        y = self.bottleneck(y, temb)
        for k in reversed(range(len(self.up))):
            y = F.pixel_shuffle(self.expand[k](y).permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
            y = self.fuse[k](torch.cat([y, skips[k]], dim=-1))
            y = self.up[k](y, temb)
        p = self.config.patch
        out = self.head(y).permute(0, 3, 1, 2)  # (N, C * p * p, h, w)
        return F.pixel_shuffle(out, p) if p > 1 else out
