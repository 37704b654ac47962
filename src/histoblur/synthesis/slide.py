"""A synthetic whole slide of any size with a known out-of-focus region (demos, benchmarks).

Tissue is a set of smooth blobs drawn from a low-resolution random field; its texture is a real
sharp tile repeated (or a generated one); a rectangle of the tissue is optically blurred with the
lens kernel. Tiles are produced on demand at any pyramid level, so a 40,000 x 40,000 slide can be
written with :func:`histoblur.wsi.pyramid.write_pyramidal_tiff` in bounded memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from histoblur.synthesis import apply_blur, make_spec

GLASS = 243


@dataclass(frozen=True)
class SyntheticSlide:
    """Level-0 size, the blurred box (level-0 x, y, w, h) and a tile source for the pyramid."""

    size: tuple[int, int]
    blurred_box: tuple[int, int, int, int]
    tissue_field: np.ndarray  # low-resolution tissue probability in [0, 1]
    texture: np.ndarray  # sharp RGB texture, repeated over the tissue
    blurred_texture: np.ndarray

    def source(self, d: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Pixels ``[y, y + h) x [x, x + w)`` of the level with down-sample ``d``."""
        W, H = self.size
        fh, fw = self.tissue_field.shape
        # tissue mask of this block, by sampling the smooth field bilinearly
        gy = (np.arange(y, y + h) + 0.5) * d / H * fh - 0.5
        gx = (np.arange(x, x + w) + 0.5) * d / W * fw - 0.5
        map_x, map_y = np.meshgrid(gx.astype(np.float32), gy.astype(np.float32))
        field = cv2.remap(self.tissue_field, map_x, map_y, cv2.INTER_LINEAR, cv2.BORDER_REPLICATE)
        tissue = field > 0.5
        bx, by, bw, bh = (v / d for v in self.blurred_box)
        ys, xs = np.arange(y, y + h), np.arange(x, x + w)
        blurred = ((ys >= by) & (ys < by + bh))[:, None] & ((xs >= bx) & (xs < bx + bw))[None, :]
        out = np.full((h, w, 3), GLASS, np.uint8)
        for tex, where in (
            (self.texture, tissue & ~blurred),
            (self.blurred_texture, tissue & blurred),
        ):
            if where.any():
                patch = _texture_block(_downsampled(tex, d), x, y, w, h)
                out[where] = patch[where]
        return out


_CACHE: dict[tuple[int, int], np.ndarray] = {}


def _downsampled(texture: np.ndarray, d: int) -> np.ndarray:
    key = (id(texture), d)
    if key not in _CACHE:
        th, tw = texture.shape[:2]
        _CACHE[key] = (
            texture
            if d == 1
            else cv2.resize(
                texture, (max(1, tw // d), max(1, th // d)), interpolation=cv2.INTER_AREA
            )
        )
    return _CACHE[key]


def _texture_block(texture: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    """A (h, w) block of ``texture`` repeated periodically, starting at (x, y)."""
    th, tw = texture.shape[:2]
    rows = np.arange(y, y + h) % th
    cols = np.arange(x, x + w) % tw
    return texture[rows][:, cols]


def mirror_tile(texture: np.ndarray) -> np.ndarray:
    """Make a texture seamless when repeated (mirror it into a 2 x 2 arrangement)."""
    top = np.concatenate([texture, texture[:, ::-1]], axis=1)
    return np.ascontiguousarray(np.concatenate([top, top[::-1]], axis=0))


def make_synthetic_slide(
    size: tuple[int, int],
    texture: np.ndarray | None = None,
    blur_radius: float = 6.0,
    seed: int = 0,
    tissue_share: float = 0.35,
) -> SyntheticSlide:
    """A synthetic slide of ``size=(width, height)`` level-0 pixels.

    Args:
        size: level-0 width and height.
        texture: sharp RGB uint8 tissue texture (default: generated stain-like noise).
        blur_radius: lens-blur radius (level-0 px) of the out-of-focus rectangle.
        seed: seed of the tissue layout and of the generated texture.
        tissue_share: approximate fraction of the slide covered by tissue.
    """
    rng = np.random.default_rng(seed)
    if texture is None:
        base = rng.normal(0, 1, (64, 64, 3)).astype(np.float32)
        base = cv2.resize(base, (512, 512), interpolation=cv2.INTER_CUBIC)
        grain = rng.normal(0, 0.6, (512, 512, 3)).astype(np.float32)
        pink = np.array([205, 130, 180], np.float32)
        texture = np.clip(pink + 25 * base + 18 * grain, 0, 255).astype(np.uint8)
    texture = mirror_tile(texture[..., :3])
    blurred = apply_blur(texture, make_spec("lens", radius=blur_radius))
    W, H = size
    fh, fw = 48, max(8, round(48 * W / H))
    field = cv2.GaussianBlur(rng.normal(0, 1, (fh, fw)).astype(np.float32), (0, 0), 3.0)
    cut = np.quantile(field, 1 - tissue_share)
    field = (field > cut).astype(np.float32)
    field = cv2.GaussianBlur(field, (0, 0), 1.0)
    field[[0, -1], :] = 0
    field[:, [0, -1]] = 0
    # blurred box: the tissue-richest quarter-size window
    bw, bh = W // 4, H // 4
    integral = cv2.integral((field > 0.5).astype(np.uint8))
    kx, ky = max(1, fw // 4), max(1, fh // 4)
    best, bx, by = -1, 0, 0
    for j in range(0, fh - ky + 1):
        for i in range(0, fw - kx + 1):
            s = (
                integral[j + ky, i + kx]
                - integral[j, i + kx]
                - integral[j + ky, i]
                + integral[j, i]
            )
            if s > best:
                best, bx, by = s, i, j
    box = (round(bx * W / fw), round(by * H / fh), bw, bh)
    return SyntheticSlide((W, H), box, field, texture, blurred)
