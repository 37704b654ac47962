"""Blur segmentation with a trained network: probability maps, masks and overlays for any image.

``Segmenter`` wraps a network rebuilt from a checkpoint. It accepts every image histoblur reads
(RGB, RGBA, grey; 8 or 16 bit; any size: small images are padded, large ones tiled with overlap
and blended) and returns a float32 probability map of the same height and width.

Examples:
    Real tissue (scikit-image's IHC sample) with its right half put out of focus:

    >>> import skimage.data
    >>> from histoblur.synthesis import apply_blur, make_spec
    >>> tissue = skimage.data.immunohistochemistry()[100:196, 150:278]
    >>> image = tissue.copy()
    >>> image[:, 64:] = apply_blur(tissue, make_spec("lens", radius=4))[:, 64:]
    >>> segmenter = Segmenter.load("default", "cpu", tile=64)
    >>> result = segmenter.segment(image)
    >>> result.probability.shape, result.probability.dtype, result.mask.dtype
    ((96, 128), dtype('float32'), dtype('bool'))
    >>> bool(result.mask[:, 80:].mean() > 0.5), bool(result.mask[:, :48].mean() < 0.1)
    (True, True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from histoblur.errors import InputError, ParameterError
from histoblur.inference.modality import as_bright_field
from histoblur.inference.resolution import (
    coarsest_mpp,
    scale_factor,
    to_input_size,
    to_working,
    working_mpp,
)
from histoblur.io.checkpoints import config_number
from histoblur.io.images import check_image, dtype_max, read_image, to_rgb, write_image
from histoblur.io.report import outline
from histoblur.models.hub import autocast, load_pretrained, select_device, select_precision
from histoblur.models.tiling import BATCH_SIZE, count_tiles, predict_tiled
from histoblur.wsi.tissue import tissue_mask

DEFAULT_MODEL = "default"
TASK = "blur-segmentation"
MIN_TILE, MAX_TILE = 16, 2048  # window sides a segmenter accepts
OVERLAY_COLOUR = (255, 0, 255)  # magenta: never a stain colour
OVERLAY_ALPHA = 0.45


def to_network_input(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] from any supported image (grey repeated, alpha dropped).

    >>> x = to_network_input(np.full((8, 10), 65535, np.uint16))
    >>> x.shape, x.dtype, float(x.max())
    ((8, 10, 3), dtype('float32'), 1.0)
    """
    check_image(image)
    return to_rgb(image).astype(np.float32) / dtype_max(image.dtype)


@dataclass(frozen=True)
class SegmentationResult:
    """Output of :meth:`Segmenter.segment` for one image.

    >>> mask = np.zeros((4, 4), bool)
    >>> mask[:1] = True
    >>> SegmentationResult(np.zeros((4, 4), np.float32), mask, 0.5).blurred_fraction
    0.25
    """

    probability: np.ndarray  # (H, W) float32 in [0, 1]
    mask: np.ndarray  # (H, W) bool
    threshold: float

    @property
    def blurred_fraction(self) -> float:
        """Share of pixels flagged as blur."""
        return float(self.mask.mean())


class Segmenter:
    """A blur segmentation network ready for inference.

    Args:
        model: the network (logits out).
        config: its checkpoint config (``threshold``, ``tile`` and the working resolution
            ``mpp`` are read from its ``inference`` block).
        tile: window side for tiled inference (default: the checkpoint's, else 256).
        overlap: overlap between windows (default: 32 px, at most a quarter of the tile).
        batch_size: windows per forward pass.
        device: torch device.
        tissue_only: flag blur on tissue only: glass (bright, unsaturated pixels, see
            :func:`histoblur.wsi.tissue.tissue_mask`) is never called blurred, as featureless
            glass looks the same in and out of focus. The probability map is not changed.
        precision: ``fp32`` (the reference), ``bf16`` (autocast) or ``auto`` (bf16 where the
            hardware runs it natively, see :func:`histoblur.models.hub.select_precision`).
            The network runs channels-last either way (faster on CPU, same arithmetic).

    Raises:
        ParameterError: a tile, overlap or batch size out of range.
        InputError: a checkpoint threshold outside (0, 1).

    Examples:
        >>> from histoblur.models.hub import load_pretrained
        >>> network, config, _ = load_pretrained("default", TASK)
        >>> segmenter = Segmenter(network, config, tile=64, batch_size=4)
        >>> segmenter.tile, segmenter.overlap, segmenter.threshold, segmenter.device.type
        (64, 16, 0.55, 'cpu')
    """

    def __init__(
        self,
        model: nn.Module,
        config: dict[str, Any] | None = None,
        tile: int | None = None,
        overlap: int | None = None,
        batch_size: int = BATCH_SIZE,
        device: str | torch.device = "cpu",
        tissue_only: bool = True,
        precision: str = "fp32",
    ) -> None:
        self.config = config or {}
        inference = self.config.get("inference", {})
        self.tile = config_number(inference, "tile", 256, int) if tile is None else tile
        self.threshold = config_number(inference, "threshold", 0.5, float)
        self.mpp = working_mpp(self.config)  # microns per pixel the network judges blur at
        self.max_mpp = coarsest_mpp(self.config)  # the coarsest sharp tissue it was trained on
        self.overlap = min(32, self.tile // 4) if overlap is None else overlap
        self.batch_size = batch_size
        if not MIN_TILE <= self.tile <= MAX_TILE:
            raise ParameterError(
                f"--tile must be between {MIN_TILE} and {MAX_TILE} px, got {self.tile}."
            )
        if not 0 <= self.overlap < self.tile // 2:
            raise ParameterError(
                f"--overlap must be at least 0 and below half the tile ({self.tile // 2}), "
                f"got {self.overlap}."
            )
        if self.batch_size < 1:
            raise ParameterError(f"--batch-size must be at least 1, got {self.batch_size}.")
        if not 0.0 < self.threshold < 1.0:
            raise InputError(f"The model's threshold {self.threshold} is not in (0, 1).")
        self.device = select_device(device)
        self.tissue_only = tissue_only
        self.autocast = select_precision(precision, self.device)
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()

    @classmethod
    def load(
        cls, model: str | Path = DEFAULT_MODEL, device: str = "cpu", **kwargs: Any
    ) -> Segmenter:
        """Load a shipped model by name or a checkpoint folder/file onto ``device``.

        >>> Segmenter.load("default", "cpu", tile=128).tile
        128

        Raises:
            InputError: missing, corrupt or untrusted checkpoint, one of another task, or an
                unavailable device.
        """
        net, config, _ = load_pretrained(model, TASK, device)
        return cls(net, config, device=device, **kwargs)

    @torch.inference_mode()
    def _predict(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self.device, memory_format=torch.channels_last)
        with autocast(self.device, self.autocast):
            logits = self.model(x)
        return torch.sigmoid(logits.float()).cpu().numpy()

    def predict_proba(
        self,
        image: np.ndarray,
        progress: Callable[[int], None] | None = None,
        mpp: float | None = None,
    ) -> np.ndarray:
        """Blur probability (H, W) float32 for one image.

        An ``mpp`` (the image's microns per pixel) resamples it to the model's working
        resolution and the map back (see :mod:`histoblur.inference.resolution`); None takes
        the image to be at the working resolution.

        Examples:
            >>> segmenter = Segmenter.load("default", tile=64)
            >>> grey = np.random.default_rng(0).integers(0, 65536, (40, 70), dtype=np.uint16)
            >>> prob = segmenter.predict_proba(grey)  # any size, grey or colour, 8 or 16 bit
            >>> prob.shape, prob.dtype, bool(0 <= prob.min() and prob.max() <= 1)
            ((40, 70), dtype('float32'), True)
        """
        return self._proba(as_bright_field(image), progress, mpp)

    def _proba(
        self,
        shown: np.ndarray,
        progress: Callable[[int], None] | None = None,
        mpp: float | None = None,
    ) -> np.ndarray:
        """:meth:`predict_proba` of an image already through :func:`as_bright_field`."""
        x = to_network_input(to_working(shown, mpp, self.mpp, self.max_mpp))
        h, w = x.shape[:2]
        # an image smaller than a window is one window of its own size: padding a 128 px
        # tile to 256 px with copies of its edge rows would show the network fake flat tissue
        tile = max(MIN_TILE, min(self.tile, max(h, w)))
        overlap = min(self.overlap, tile // 4)
        out = np.empty((h, w), np.float32)
        for row, block in predict_tiled(
            x, self._predict, tile, overlap, self.batch_size, 1, progress
        ):
            out[row : row + block.shape[0]] = block[..., 0]
        return to_input_size(out, shown.shape[:2])

    def segment(
        self,
        image: np.ndarray,
        threshold: float | None = None,
        progress: Callable[[int], None] | None = None,
        mpp: float | None = None,
    ) -> SegmentationResult:
        """Probability map and mask (probability > threshold) for one image.

        With ``tissue_only`` (the default) glass is never flagged. ``mpp``: the image's
        microns per pixel, as for :meth:`predict_proba`.

        Raises:
            ParameterError: a threshold outside (0, 1).

        Examples:
            >>> segmenter = Segmenter.load("default", tile=64)
            >>> glass = np.full((64, 64, 3), 245, np.uint8)
            >>> result = segmenter.segment(glass, threshold=0.3)
            >>> result.threshold, bool(result.mask.any())
            (0.3, False)
        """
        t = self.threshold if threshold is None else threshold
        if not 0.0 < t < 1.0:
            raise ParameterError(f"Threshold must be in (0, 1), got {t}.")
        shown = as_bright_field(image)  # once: the network and the tissue mask see the same
        prob = self._proba(shown, progress, mpp)
        mask = prob > t
        if self.tissue_only:
            mask &= tissue_mask(shown)
        return SegmentationResult(prob, mask, t)

    def focus_score(self, image: np.ndarray, mpp: float | None = None) -> float:
        """How out of focus the image is, 0-1: the blur map pooled over its tissue.

        The mean blur probability over tissue pixels (all pixels when under 1 % is tissue):
        the expected out-of-focus share of the tissue, so a tile scores high only where its map
        is blurred (see :func:`pooled_focus`; docs/segmentation.md compares it with the
        classifier's probability and a FocusLiteNN-style network).

        Examples:
            >>> segmenter = Segmenter.load("default", tile=64)
            >>> tile = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
            >>> 0.0 <= segmenter.focus_score(tile) <= 1.0
            True
        """
        shown = as_bright_field(image)
        return pooled_focus(self._proba(shown, mpp=mpp), tissue_mask(shown))

    def tiles_for(self, image: np.ndarray, mpp: float | None = None) -> int:
        """Windows needed for ``image`` at ``mpp`` (for progress bars).

        >>> segmenter = Segmenter.load("default", tile=64)
        >>> segmenter.tiles_for(np.zeros((100, 200, 3), np.uint8))
        8
        >>> segmenter.tiles_for(np.zeros((100, 200, 3), np.uint8), mpp=0.25)  # halved
        2
        """
        factor = scale_factor(mpp, self.mpp, warn=False)
        h, w = (max(1, round(n * factor)) for n in image.shape[:2])
        return count_tiles(h, w, self.tile, self.overlap)


def pooled_focus(prob: np.ndarray, tissue: np.ndarray, min_share: float = 0.01) -> float:
    """Mean of ``prob`` over ``tissue`` (over every pixel when tissue is under ``min_share``).

    >>> prob = np.array([[0.9, 0.9, 0.0, 0.0]], np.float32)
    >>> pooled_focus(prob, np.array([[True, True, False, False]]))
    0.9
    >>> pooled_focus(prob, np.zeros((1, 4), bool))  # no tissue: all pixels
    0.45
    """
    values = prob[tissue] if tissue.mean() >= min_share else prob.ravel()
    return round(float(values.mean()), 6) if values.size else 0.0


def probability_png(prob: np.ndarray) -> np.ndarray:
    """uint8 0-255 picture of a probability map.

    >>> probability_png(np.array([[0.0, 0.5, 1.0]], np.float32))
    array([[  0, 128, 255]], dtype=uint8)
    """
    return np.clip(np.rint(prob * 255.0), 0, 255).astype(np.uint8)


def overlay(image: np.ndarray, mask: np.ndarray, prob: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 picture: the image with flagged pixels tinted magenta and outlined.

    >>> image = np.full((16, 16), 128, np.uint8)  # any supported image
    >>> mask = np.zeros((16, 16), bool)
    >>> mask[4:12, 4:12] = True
    >>> picture = overlay(image, mask)
    >>> picture.shape, picture.dtype, picture[0, 0].tolist()  # unflagged pixels unchanged
    ((16, 16, 3), dtype('uint8'), [128, 128, 128])
    """
    rgb = outline(image, np.zeros(mask.shape, bool))  # RGB uint8 copy
    a = OVERLAY_ALPHA * (mask.astype(np.float32) if prob is None else prob * mask)
    tint = np.asarray(OVERLAY_COLOUR, np.float32)
    mixed = rgb.astype(np.float32) * (1 - a[..., None]) + tint * a[..., None]
    return outline(np.clip(np.rint(mixed), 0, 255).astype(np.uint8), mask, OVERLAY_COLOUR)


def output_paths(out_dir: Path, image_path: Path) -> dict[str, Path]:
    """Where ``histoblur segment`` writes the outputs of one input.

    >>> {k: p.name for k, p in output_paths(Path("out"), Path("slides/a.tif")).items()}
    {'mask': 'a_mask.png', 'prob': 'a_prob.png', 'overlay': 'a_overlay.png'}
    """
    stem = image_path.stem
    return {
        "mask": out_dir / f"{stem}_mask.png",
        "prob": out_dir / f"{stem}_prob.png",
        "overlay": out_dir / f"{stem}_overlay.png",
    }


def segment_file(
    segmenter: Segmenter,
    image_path: Path,
    out_dir: Path,
    threshold: float | None = None,
    progress: Callable[[int], None] | None = None,
    image: np.ndarray | None = None,
    mpp: float | None = None,
) -> dict[str, Any]:
    """Segment one image file and write its mask, probability and overlay PNGs atomically.

    ``image``: the file's pixels when the caller has read them already (read here otherwise);
    ``mpp``: their microns per pixel (see :meth:`Segmenter.segment`).

    Returns:
        A summary row: input, outputs, size, blurred fraction, threshold.

    Examples:
        >>> import tempfile
        >>> segmenter = Segmenter.load("default", tile=64)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = write_image(Path(tmp) / "tile.png", np.full((32, 48, 3), 200, np.uint8))
        ...     row = segment_file(segmenter, path, Path(tmp))
        ...     written = sorted(p.name for p in Path(tmp).iterdir())
        >>> written
        ['tile.png', 'tile_mask.png', 'tile_overlay.png', 'tile_prob.png']
        >>> row["height"], row["width"], row["threshold"]
        (32, 48, 0.55)
    """
    image = read_image(image_path) if image is None else image
    result = segmenter.segment(image, threshold, progress, mpp)
    paths = output_paths(out_dir, image_path)
    pictures = {
        "mask": np.where(result.mask, 255, 0).astype(np.uint8),
        "prob": probability_png(result.probability),
        "overlay": overlay(image, result.mask, result.probability),
    }
    for key, picture in pictures.items():
        write_image(paths[key], picture)  # atomic: complete or absent
    return {
        "image": str(image_path),
        "height": int(image.shape[0]),
        "width": int(image.shape[1]),
        "blurred_fraction": round(result.blurred_fraction, 6),
        "threshold": result.threshold,
        **{k: str(v) for k, v in paths.items()},
    }
