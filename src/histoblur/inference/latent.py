"""Blur synthesis and deblurring by latent arithmetic on two focal planes of one field.

:class:`FocalCodec` wraps a trained focal autoencoder. ``interpolate(sharper, blurrier, alphas)``
decodes ``alpha * z_blurrier + (1 - alpha) * z_sharper`` (eq. 1-2: alpha 0 gives the sharper
plane, 1 the blurrier one); ``deblur(near, far, alphas)`` decodes the extrapolated sharp code
``(z_near - alpha * z_far) / (1 - alpha)`` (eq. 3), with ``alpha`` where the near plane lies
between focus and the far plane (for planes 4 and 8 steps from focus, 0.5).

With ``residual``, the output is anchored to the planes' own pixels: the same arithmetic done
on the pixels (a blend, or an extrapolation) plus the decoded result minus that arithmetic on
the two decoded planes. What the autoencoder fails to reconstruct, common to all decodes,
cancels; what remains is the part of the latent path that a pixel blend lacks.

Two planes of slightly different sizes or offsets are registered first (whole-pixel shifts,
cropped to the shared region); the outputs have the first plane's size and position, the part
registration cut off filled with the overlap's edge pixels (and a warning saying where).
Images of any size run in blended 512 px windows; all alphas of a sweep come from one encoding
of each window.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from histoblur.errors import InputError, ParameterError
from histoblur.io.images import check_image, from_float, to_float, to_rgb
from histoblur.models.autoencoder import Code, FocalAutoencoder, extrapolate, mix
from histoblur.models.hub import load_pretrained
from histoblur.models.tiling import predict_tiled
from histoblur.synthesis.register import register_planes_box

log = logging.getLogger(__name__)

WINDOW, OVERLAP = 512, 64
FONT = cv2.FONT_HERSHEY_SIMPLEX


def anchored(latent: torch.Tensor, pixels: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
    """The ``--residual`` output: ``pixels`` plus what the latent path adds beyond ``decoded``.

    ``pixels`` is the planes' own combination, ``decoded`` the same combination of the planes'
    decodes: the autoencoder's reconstruction error, common to the decodes, cancels.

    >>> x = torch.ones(1, 3, 2, 2)
    >>> round(anchored(0.7 * x, 0.5 * x, 0.6 * x).flatten()[0].item(), 4)  # latent adds +0.1
    0.6
    """
    return latent + pixels - decoded


@dataclass
class FocalCodec:
    """A loaded focal autoencoder and what it was trained as."""

    model: FocalAutoencoder
    path: Path

    @classmethod
    def load(cls, model: str | Path = "default", device: str = "cpu") -> FocalCodec:
        """The shipped model (``default``) or a checkpoint folder, on ``device``.

        Raises:
            InputError: missing, corrupt or untrusted checkpoint, one of another task, or an
                unavailable device.
        """
        network, _, path = load_pretrained(model, "focal-ae", device)
        return cls(network, path)

    def interpolate(
        self,
        sharper: np.ndarray,
        blurrier: np.ndarray,
        alphas: Sequence[float],
        residual: bool = False,
    ) -> list[np.ndarray]:
        """Images at ``alphas`` (0: sharper, 1: blurrier), in the inputs' dtype and channels.

        ``residual``: the planes' own pixel blend plus what the latent path adds beyond
        blending the two decoded planes (see the module docstring).
        """
        if any(not 0 <= a <= 1 for a in alphas):
            raise ParameterError(f"Interpolation alphas must be in [0, 1], got {list(alphas)}.")
        return self._combine(sharper, blurrier, alphas, mix, residual)

    def deblur(
        self, near: np.ndarray, far: np.ndarray, alphas: Sequence[float], residual: bool = False
    ) -> list[np.ndarray]:
        """Sharp estimates for each ``alpha`` in [0, 1) (see the module docstring)."""
        if any(not 0 <= a < 1 for a in alphas):
            raise ParameterError(f"Deblurring alphas must be in [0, 1), got {list(alphas)}.")
        return self._combine(near, far, alphas, extrapolate, residual)

    def _combine(
        self,
        first: np.ndarray,
        second: np.ndarray,
        alphas: Sequence[float],
        combine: Callable[[Code, Code, float], Code],
        residual: bool = False,
    ) -> list[np.ndarray]:
        if not alphas:
            raise ParameterError("Give at least one alpha.")
        for image, name in ((first, "first image"), (second, "second image")):
            check_image(image, name)
        if first.dtype != second.dtype:
            raise InputError(f"The two planes differ in type ({first.dtype}, {second.dtype}).")
        grey = first.ndim == 2 or first.shape[2] == 1
        (a, b), box = register_planes_box([to_rgb(first), to_rgb(second)], reference=0)
        h, w = a.shape[:2]
        if min(h, w) < 8:
            raise InputError(f"The planes share only {h} x {w} px after registration.")
        stacked = np.concatenate([to_float(a), to_float(b)], axis=2)
        m = self.model.multiple

        def predict(batch: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(batch).to(next(self.model.parameters()).device)
            with torch.no_grad():
                za: Code = self.model.encode(x[:, :3])
                zb: Code = self.model.encode(x[:, 3:])
                outs = [self.model.decode(combine(za, zb, float(t))) for t in alphas]
                if residual:
                    ends = [self.model.decode(za)], [self.model.decode(zb)]
                    outs = [
                        anchored(
                            out,
                            combine([x[:, :3]], [x[:, 3:]], float(t))[0],
                            combine(*ends, float(t))[0],
                        )
                        for out, t in zip(outs, alphas, strict=True)
                    ]
            return torch.cat(outs, dim=1).float().cpu().numpy()

        if max(h, w) <= WINDOW:  # one pass, padded only to the network's multiple
            ph, pw = -h % m, -w % m
            mode = "reflect" if ph < h and pw < w else "edge"
            padded = np.pad(stacked, ((0, ph), (0, pw), (0, 0)), mode=mode)
            out = predict(padded.transpose(2, 0, 1)[None].copy())[0].transpose(1, 2, 0)[:h, :w]
        else:
            out = np.empty((h, w, 3 * len(alphas)), np.float32)
            channels = 3 * len(alphas)
            for row, block in predict_tiled(stacked, predict, WINDOW, OVERLAP, 4, channels):
                out[row : row + len(block)] = block
        pads = _cut_off(first.shape[:2], box)
        images = [
            cv2.copyMakeBorder(np.clip(out[..., 3 * k : 3 * k + 3], 0, 1), *pads,
                               cv2.BORDER_REPLICATE)
            for k in range(len(alphas))
        ]  # fmt: skip
        if grey:
            images = [i.mean(axis=2) for i in images]
        return [from_float(i, first.dtype) for i in images]


def _cut_off(shape: tuple[int, ...], box: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) px of the first plane's ``shape`` outside the overlap ``box``.

    Logged once when any: the outputs repeat the overlap's edge pixels there.

    >>> _cut_off((4, 3), (1, 0, 3, 3))
    (1, 1, 0, 0)
    """
    y0, x0, y1, x1 = box
    pads = (y0, shape[0] - y1, x0, shape[1] - x1)
    if any(pads):
        log.warning(
            f"The two planes overlap in {x1 - x0} x {y1 - y0} px of the first plane's "
            f"{shape[1]} x {shape[0]} (x {x0}-{x1}, y {y0}-{y1}) after registration; the output "
            "keeps the first plane's size and position, its edge pixels repeated outside the "
            "overlap."
        )
    return pads


def sweep_strip(images: Sequence[np.ndarray], labels: Sequence[str]) -> np.ndarray:
    """Images side by side (8 px white gaps) with a label band above each; uint8 RGB."""
    tiles = [
        to_rgb(i) if i.dtype == np.uint8 else to_rgb((i // 257).astype(np.uint8)) for i in images
    ]
    h, w = tiles[0].shape[:2]
    band = max(18, h // 12)
    gap = 8
    strip = np.full((h + band, len(tiles) * (w + gap) - gap, 3), 255, np.uint8)
    for k, (tile, label) in enumerate(zip(tiles, labels, strict=True)):
        x = k * (w + gap)
        strip[band:, x : x + w] = tile
        scale = band / 30
        while scale > 0.25 and cv2.getTextSize(label, FONT, scale, 1)[0][0] > w - 6:
            scale *= 0.9  # shrink a long label to its tile's width
        cv2.putText(strip, label, (x + 3, int(band * 0.75)), FONT, scale, (0, 0, 0),
                    max(1, int(scale * 2)), cv2.LINE_AA)  # fmt: skip
    return strip
