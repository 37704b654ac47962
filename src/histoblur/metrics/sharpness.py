"""No-reference sharpness (focus) measures: higher means sharper for every one of them.

Each measure works on the luma of the image (ITU-R BT.601 weights, as
:func:`histoblur.io.images.to_gray_float`; alpha is ignored) in [0, 1] units: integer images are
divided by their dtype maximum, float images are taken as already in [0, 1]. Derivative filters
are evaluated only where they fit inside the image (no border padding), so image edges add no
false detail. One numpy image ``(H, W)`` / ``(H, W, C)`` gives a float; a torch batch
``(N, C, H, W)`` gives a tensor of ``N`` values on its device.

The values depend on content and magnification: compare them between images of the same kind
(the same tissue at different focus, tiles of one slide), not against absolute thresholds.

Examples:
    >>> from histoblur.synthesis import apply_blur, make_spec
    >>> sharp = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    >>> blurred = apply_blur(sharp, make_spec("lens", radius=3))
    >>> [bool(f(sharp) > f(blurred)) for f in SHARPNESS.values()]
    [True, True, True, True]
    >>> batch = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    >>> tenengrad(batch).shape
    torch.Size([4])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import cv2
import numpy as np
import torch

from histoblur.errors import InputError, ParameterError
from histoblur.io.images import to_gray_float
from histoblur.metrics.full_reference import ImageLike, Score, as_image_batch

LUMA_WEIGHTS = (0.299, 0.587, 0.114)
MIN_SIDE = 3


def local_laplacian_map(
    grey: np.ndarray,
    size: float,
    smoothing: Literal["box", "gaussian"] = "gaussian",
    squared: bool = True,
    ksize: int = 1,
) -> np.ndarray:
    """Local Laplacian energy of a float32 grey image (same H x W); low values mean blur.

    The Laplacian (``ksize`` 1: 4-neighbour; 3: OpenCV's 3 x 3 aperture) is squared or taken
    absolute, then averaged over a ``size`` x ``size`` box or a Gaussian of sigma ``size``;
    borders are reflected. The map behind histoblur's classical detectors.

    >>> local_laplacian_map(np.zeros((8, 8), np.float32), 2.0).shape
    (8, 8)
    """
    border = cv2.BORDER_REFLECT_101
    lap = cv2.Laplacian(grey, cv2.CV_32F, ksize=ksize, borderType=border)
    lap = lap * lap if squared else np.abs(lap)
    if smoothing == "box":
        return cv2.boxFilter(lap, cv2.CV_32F, (int(size), int(size)), borderType=border)
    return cv2.GaussianBlur(lap, (0, 0), size, borderType=border)


def luma_batch(image: ImageLike) -> tuple[torch.Tensor, bool]:
    """Luma ``(N, 1, H, W)`` in [0, 1] units, and whether the input was one numpy image.

    Raises:
        InputError: for an unsupported input, channel count, or an image under 3 x 3 pixels.

    Examples:
        >>> luma, single = luma_batch(np.full((8, 8, 3), 255, np.uint8))
        >>> luma.shape, single, float(luma.max())
        (torch.Size([1, 1, 8, 8]), True, 1.0)
        >>> luma_batch(torch.rand(2, 4, 8, 8))[0].shape  # RGBA batch: alpha ignored
        torch.Size([2, 1, 8, 8])
    """
    batch, single = as_image_batch(image, "image")  # validates type, dtype and dimensions
    channels = batch.shape[1]
    if channels not in (1, 2, 3, 4):
        raise InputError(
            f"The image has {channels} channels; sharpness needs grey (1), grey+alpha (2), "
            "RGB (3) or RGBA (4)."
        )
    if min(batch.shape[-2:]) < MIN_SIDE:
        raise InputError(
            f"The image is {batch.shape[-2]} x {batch.shape[-1]} px; sharpness needs at least "
            f"{MIN_SIDE} x {MIN_SIDE}."
        )
    if single and channels in (1, 3, 4):
        gray = to_gray_float(image if channels != 4 else image[..., :3])
        return torch.from_numpy(gray.astype(np.float64))[None, None], True
    if channels <= 2:
        return batch[:, :1], single
    w = torch.tensor(LUMA_WEIGHTS, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    return (batch[:, :3] * w).sum(dim=1, keepdim=True), single


def _finish(values: torch.Tensor, single: bool) -> Score:
    return float(values[0]) if single else values


def _laplacian(g: torch.Tensor) -> torch.Tensor:
    """4-neighbour Laplacian ``[[0,1,0],[1,-4,1],[0,1,0]]`` on the valid region."""
    c = g[..., 1:-1, 1:-1]
    return g[..., :-2, 1:-1] + g[..., 2:, 1:-1] + g[..., 1:-1, :-2] + g[..., 1:-1, 2:] - 4 * c


def _sobel(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """3 x 3 Sobel derivatives (x: left to right, y: top to bottom) on the valid region."""
    smooth_y = g[..., :-2, :] + 2 * g[..., 1:-1, :] + g[..., 2:, :]
    smooth_x = g[..., :, :-2] + 2 * g[..., :, 1:-1] + g[..., :, 2:]
    gx = smooth_y[..., :, 2:] - smooth_y[..., :, :-2]
    gy = smooth_x[..., 2:, :] - smooth_x[..., :-2, :]
    return gx, gy


def variance_of_laplacian(image: ImageLike) -> Score:
    """Variance of the 4-neighbour Laplacian of the luma.

    ``VoL = var(L * [[0,1,0],[1,-4,1],[0,1,0]])``; range [0, 16] in [0, 1] units (0 for a flat
    image); higher is sharper.

    Args:
        image: numpy ``(H, W)`` / ``(H, W, C)`` image or torch ``(N, C, H, W)`` batch.

    Returns:
        A float for one numpy image, a tensor ``(N,)`` for a torch batch.

    Raises:
        InputError: for an unsupported input.

    Examples:
        >>> checkerboard = (np.indices((16, 16)).sum(axis=0) % 2 * 255).astype(np.uint8)
        >>> variance_of_laplacian(checkerboard)  # the largest possible value
        16.0
        >>> variance_of_laplacian(np.full((16, 16), 128, np.uint8))
        0.0
        >>> variance_of_laplacian(torch.zeros(3, 1, 16, 16))
        tensor([0., 0., 0.])
    """
    gray, single = luma_batch(image)
    lap = _laplacian(gray)
    return _finish(lap.var(dim=(1, 2, 3), unbiased=False), single)


def tenengrad(image: ImageLike) -> Score:
    """Tenengrad: mean squared Sobel gradient magnitude of the luma (no threshold).

    ``T = mean(Gx^2 + Gy^2)`` with 3 x 3 Sobel derivatives; range [0, 32] in [0, 1] units;
    higher is sharper.

    Arguments, returns and errors: as :func:`variance_of_laplacian`.

    Examples:
        >>> stripes = (np.indices((16, 16))[1] // 2 % 2 * 255).astype(np.uint8)  # 2 px stripes
        >>> tenengrad(stripes)
        16.0
        >>> tenengrad(np.zeros((16, 16), np.uint8))
        0.0
    """
    gray, single = luma_batch(image)
    gx, gy = _sobel(gray)
    return _finish((gx * gx + gy * gy).mean(dim=(1, 2, 3)), single)


def brenner(image: ImageLike) -> Score:
    """Brenner gradient of the luma, in both directions.

    ``B = mean((L[y, x+2] - L[y, x])^2) + mean((L[y+2, x] - L[y, x])^2)``; range [0, 2] in
    [0, 1] units; higher is sharper.

    Arguments, returns and errors: as :func:`variance_of_laplacian`.

    Examples:
        >>> stripes = (np.indices((16, 16))[1] // 2 % 2 * 255).astype(np.uint8)  # 2 px stripes
        >>> brenner(stripes)  # every horizontal step of 2 px crosses an edge
        1.0
        >>> brenner(stripes.T) == brenner(stripes)  # both directions count
        True
    """
    gray, single = luma_batch(image)
    dx = gray[..., :, 2:] - gray[..., :, :-2]
    dy = gray[..., 2:, :] - gray[..., :-2, :]
    return _finish((dx * dx).mean(dim=(1, 2, 3)) + (dy * dy).mean(dim=(1, 2, 3)), single)


def hf_energy_ratio(image: ImageLike, cutoff: float = 0.25) -> Score:
    """Share of the spectral energy above a radial frequency cutoff.

    The mean-subtracted luma is multiplied by a 2-D Hann window (so the image border adds no
    false high frequencies) and Fourier transformed;
    ``HF = sum_{r > cutoff} |F|^2 / sum_{r > 0} |F|^2`` with ``r`` the radial frequency as a
    fraction of the Nyquist frequency (0.5 cycles/pixel). Range [0, 1] (0 for a flat image);
    higher is sharper.

    Args:
        image: numpy ``(H, W)`` / ``(H, W, C)`` image or torch ``(N, C, H, W)`` batch.
        cutoff: radial cutoff as a fraction of Nyquist, in (0, 1).

    Returns:
        A float for one numpy image, a tensor ``(N,)`` for a torch batch.

    Raises:
        InputError: for an unsupported input.
        ParameterError: for a cutoff outside (0, 1).

    Examples:
        >>> from histoblur.synthesis import apply_blur, make_spec
        >>> noise = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
        >>> smooth = apply_blur(noise, make_spec("gaussian", sigma=2.0))
        >>> round(hf_energy_ratio(noise), 3), bool(hf_energy_ratio(smooth) < 0.2)
        (0.933, True)
        >>> hf_energy_ratio(np.zeros((16, 16), np.uint8))
        0.0
    """
    if not 0.0 < cutoff < 1.0:
        raise ParameterError(f"cutoff must be in (0, 1) (a fraction of Nyquist), got {cutoff}.")
    gray, single = luma_batch(image)
    h, w = gray.shape[-2:]
    kw = {"dtype": gray.dtype, "device": gray.device}
    window = torch.outer(
        torch.hann_window(h, periodic=False, **kw), torch.hann_window(w, periodic=False, **kw)
    )
    centred = (gray - gray.mean(dim=(2, 3), keepdim=True)) * window
    power = torch.fft.fft2(centred).abs() ** 2
    fy = torch.fft.fftfreq(h, **kw)[:, None]
    fx = torch.fft.fftfreq(w, **kw)[None, :]
    radius = torch.sqrt(fx * fx + fy * fy) / 0.5
    total = (power * (radius > 0)).sum(dim=(1, 2, 3))
    high = (power * (radius > cutoff)).sum(dim=(1, 2, 3))
    flat = (gray.amax(dim=(1, 2, 3)) == gray.amin(dim=(1, 2, 3))) | (total <= 0)
    ratio = torch.where(flat, 0.0, high / torch.where(flat, 1.0, total))
    return _finish(ratio, single)


SHARPNESS: dict[str, Callable[[ImageLike], Score]] = {
    "variance_of_laplacian": variance_of_laplacian,
    "tenengrad": tenengrad,
    "brenner": brenner,
    "hf_energy_ratio": hf_energy_ratio,
}
"""Every no-reference sharpness measure by name (image -> score, higher = sharper)."""
