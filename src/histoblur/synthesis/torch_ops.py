"""The torch executor: runs a blur plan on a float tensor on any device (CPU or GPU).

Same semantics as the numpy executor (:mod:`histoblur.synthesis.execute`), up to float32
round-off:

* a :class:`KernelPlan` is a true convolution (the kernel is flipped before ``conv2d``, which
  correlates). A kernel that is exactly an outer product (a Gaussian, horizontal or vertical
  motion) runs as two 1-D convolutions; a small 2-D kernel runs as a direct convolution; a large
  one (a lens disk, a polygonal aperture, a slanted motion line) as a whole-image FFT product;
* a :class:`LevelsPlan` blends its levels per pixel with the weights of
  :func:`~histoblur.synthesis.plans.level_weights`; on the FFT route the image is transformed once
  and shared by every level;
* a :class:`WarpPlan` averages ``grid_sample`` resamplings (bilinear, ``align_corners=True``,
  ``padding_mode="reflection"``: coordinates are mirrored about the first and last pixel centres,
  as OpenCV's ``BORDER_REFLECT_101`` does).

Borders are reflected like OpenCV's ``BORDER_REFLECT_101`` (``dcb|abcd|cba``, the edge pixel is
not repeated). ``torch.nn.functional.pad(mode="reflect")`` is the same rule but needs the pad to
be smaller than the image side; larger pads (a kernel wider than the image) reflect again and
again, exactly as OpenCV does, by gathering rows and columns at mirrored indices.

Every operation is linear in the image and differentiable, channels share the kernel, and
nothing is clipped: normalised non-negative kernels keep values inside the input's range up to
round-off.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the usual torch alias)

from histoblur.errors import InputError
from histoblur.kernels.core import separable_factors, trim_zeros_1d
from histoblur.synthesis.plans import BlurPlan, KernelPlan, LevelsPlan, WarpPlan
from histoblur.synthesis.registry import plan_for
from histoblur.synthesis.spec import BlurSpec

# Largest 2-D kernel side that runs as a direct convolution, and longest 1-D factor that runs as
# two 1-D convolutions; larger kernels use the FFT, whose cost does not depend on the kernel.
# Crossovers measured on a 256 x 256 RGB tensor, one CPU thread (docs/augmentation.md).
DIRECT_MAX = 5
SEPARABLE_MAX = 13
# Compute types: half-precision inputs are blurred in float32 and cast back.
_EXACT_DTYPES = (torch.float32, torch.float64)


def execute_torch(plan: BlurPlan, x: torch.Tensor) -> torch.Tensor:
    """Apply ``plan`` to a float tensor of shape (C, H, W) or (1, C, H, W).

    Args:
        plan: a plan from :func:`histoblur.synthesis.plan_for` for an image of size (H, W).
        x: floating-point tensor on any device; float16/bfloat16 are computed in float32.

    Returns:
        A new tensor with the shape, dtype and device of ``x``.

    Raises:
        InputError: for a non-float tensor, a wrong shape, or a plan made for another size.
    """
    _check_tensor(x, batch_ok=False)
    squeeze = x.ndim == 3
    batch = x.unsqueeze(0) if squeeze else x
    out = _run(plan, batch)
    return out.squeeze(0) if squeeze else out


def blur_batch(x: torch.Tensor, specs: Sequence[BlurSpec | None]) -> torch.Tensor:
    """Blur every sample of a (B, C, H, W) float tensor with its own spec.

    Args:
        x: floating-point batch on any device.
        specs: one spec per sample; ``None`` leaves that sample unchanged.

    Returns:
        A new tensor with the shape, dtype and device of ``x``.

    Raises:
        InputError: for a non-float tensor, a wrong shape or a spec count that differs from B.
    """
    _check_tensor(x, batch_ok=True)
    if x.ndim != 4:
        raise InputError(f"blur_batch needs a (B, C, H, W) tensor, got shape {tuple(x.shape)}.")
    if len(specs) != x.shape[0]:
        raise InputError(f"Got {len(specs)} blur specs for a batch of {x.shape[0]} samples.")
    height, width = x.shape[-2:]
    out = [
        x[i : i + 1].clone() if spec is None else _run(plan_for(spec, height, width), x[i : i + 1])
        for i, spec in enumerate(specs)
    ]
    return torch.cat(out, dim=0)


def _check_tensor(x: torch.Tensor, batch_ok: bool) -> None:
    if not isinstance(x, torch.Tensor):
        raise InputError(f"Expected a torch tensor, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise InputError(
            f"The tensor has dtype {x.dtype}; convert it to a float tensor (e.g. values in [0, 1])."
        )
    ok = x.ndim == 3 or (x.ndim == 4 and (batch_ok or x.shape[0] == 1))
    if not ok or x.shape[-1] == 0 or x.shape[-2] == 0:
        want = "(B, C, H, W)" if batch_ok else "(C, H, W) or (1, C, H, W)"
        raise InputError(f"Expected a {want} tensor, got shape {tuple(x.shape)}.")


# ---------------------------------------------------------------------------------------------
# Dispatch


def _run(plan: BlurPlan, x: torch.Tensor) -> torch.Tensor:
    """Run ``plan`` on an (N, C, H, W) tensor, returning the input's dtype."""
    dtype = x.dtype
    work = x if dtype in _EXACT_DTYPES else x.float()
    n, c, h, w = work.shape
    flat = work.reshape(n * c, 1, h, w)  # channels share the kernel: fold them into the batch
    if isinstance(plan, KernelPlan):
        out = _convolve(flat, np.asarray(plan.kernel, np.float64), plan.separable)
    elif isinstance(plan, LevelsPlan):
        _check_map(plan.index.shape, h, w)
        out = _blend_levels(flat, plan)
    elif isinstance(plan, WarpPlan):
        if plan.grids:
            _check_map(plan.grids[0][0].shape, h, w)
        out = _average_warps(flat, plan)
    else:
        raise TypeError(f"Unknown plan type {type(plan).__name__}.")
    return out.reshape(n, c, h, w).to(dtype)


def _check_map(shape: tuple[int, ...], h: int, w: int) -> None:
    if tuple(shape) != (h, w):
        raise InputError(f"The plan was made for {tuple(shape)} images, not ({h}, {w}).")


def _convolve(
    x: torch.Tensor, kernel: np.ndarray, separable: tuple[np.ndarray, np.ndarray] | None
) -> torch.Tensor:
    """True convolution of an (N, 1, H, W) tensor by the cheapest exact route."""
    kernel = _trim_2d(kernel)
    if kernel.shape == (1, 1):
        return x * float(kernel[0, 0]) if kernel[0, 0] != 1 else x.clone()
    factors = separable if separable is not None else separable_factors(kernel)
    if factors is not None:
        col, row = (trim_zeros_1d(np.asarray(f, np.float64)) for f in factors)
        if max(col.size, row.size) <= SEPARABLE_MAX:
            return _separable(x, col, row)
    if max(kernel.shape) <= DIRECT_MAX:
        return _direct(x, kernel)
    return _fft_convolve(x, (kernel,), None)


def _tensor(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """A numpy array as a tensor with the dtype and device of ``like``."""
    return torch.as_tensor(np.ascontiguousarray(a), dtype=like.dtype, device=like.device)


def _direct(x: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    ry, rx = kernel.shape[0] // 2, kernel.shape[1] // 2
    weight = _tensor(kernel[::-1, ::-1], x)[None, None]  # flipped: conv2d correlates
    return F.conv2d(reflect_pad(x, ry, ry, rx, rx), weight)


def _separable(x: torch.Tensor, col: np.ndarray, row: np.ndarray) -> torch.Tensor:
    """Convolve rows with ``row`` then columns with ``col`` (each flipped for conv2d)."""
    out = x
    if row.size > 1:
        r = row.size // 2
        out = F.conv2d(reflect_pad(out, 0, 0, r, r), _tensor(row[::-1], x).view(1, 1, 1, -1))
    elif row[0] != 1:
        out = out * float(row[0])
    if col.size > 1:
        r = col.size // 2
        out = F.conv2d(reflect_pad(out, r, r, 0, 0), _tensor(col[::-1], x).view(1, 1, -1, 1))
    elif col[0] != 1:
        out = out * float(col[0])
    return out


def _trim_2d(k: np.ndarray) -> np.ndarray:
    """Drop all-zero outer row pairs and column pairs of a centred kernel, keeping it centred."""
    tiny = 1e-12 * np.abs(k).max()
    while k.shape[0] > 1 and np.abs(k[[0, -1]]).max() <= tiny:
        k = k[1:-1]
    while k.shape[1] > 1 and np.abs(k[:, [0, -1]]).max() <= tiny:
        k = k[:, 1:-1]
    return k


# ---------------------------------------------------------------------------------------------
# Borders


def reflect_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Pad the last two axes like OpenCV's ``BORDER_REFLECT_101``, for any pad width.

    ``F.pad(mode="reflect")`` follows the same rule but only for pads smaller than the side; wider
    pads reflect repeatedly (the pattern has period ``2 * (side - 1)``; a side of one pixel is
    repeated).
    """
    h, w = x.shape[-2:]
    if max(top, bottom) < h and max(left, right) < w:
        return F.pad(x, (left, right, top, bottom), mode="reflect")
    rows = _reflect_index(h, top, bottom, x.device)
    cols = _reflect_index(w, left, right, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def _reflect_index(n: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    i = torch.arange(-before, n + after, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = i.remainder(period)  # non-negative for a positive divisor
    return torch.where(i >= n, period - i, i)


# ---------------------------------------------------------------------------------------------
# FFT convolution and spatially variant blends


def _fast_size(n: int) -> int:
    """Smallest integer >= n whose only prime factors are 2, 3 and 5 (a fast FFT length)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _kernel_spectrum(kernel: np.ndarray, size: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """Real-FFT spectrum of a kernel for true convolution on a (size) buffer.

    Tap (i, j) acts at offset (i - ry, j - rx); negative offsets wrap to the buffer's end.
    """
    kh, kw = kernel.shape
    buf = torch.zeros(size, dtype=like.dtype, device=like.device)
    buf[:kh, :kw] = _tensor(kernel, like)
    buf = torch.roll(buf, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1))
    return torch.fft.rfft2(buf)


def _fft_convolve(
    x: torch.Tensor, kernels: tuple[np.ndarray, ...], weights: list[torch.Tensor | None] | None
) -> torch.Tensor:
    """Convolve an (N, 1, H, W) tensor with one kernel, or blend several with per-pixel weights.

    The image is reflect-padded by the largest kernel half-size (and up to a fast FFT length), so
    the circular convolution never wraps into the cropped result; the image spectrum is shared.
    ``weights[k]`` is level k's (H, W) weight map, ``None`` for a level that is unused.
    """
    h, w = x.shape[-2:]
    hy = max(k.shape[0] // 2 for k in kernels)
    hx = max(k.shape[1] // 2 for k in kernels)
    size = (_fast_size(h + 2 * hy), _fast_size(w + 2 * hx))
    padded = reflect_pad(x, hy, size[0] - h - hy, hx, size[1] - w - hx)
    spectrum = torch.fft.rfft2(padded)
    out = None
    for level, kernel in enumerate(kernels):
        weight = None if weights is None else weights[level]
        if weights is not None and weight is None:
            continue
        if kernel.shape == (1, 1):
            value = x * float(kernel[0, 0])
        else:
            product = spectrum * _kernel_spectrum(kernel, size, x)
            value = torch.fft.irfft2(product, s=size)[..., hy : hy + h, hx : hx + w]
        term = value if weight is None else value * weight
        out = term if out is None else out + term
    return out if out is not None else torch.zeros_like(x)


def _level_weight_maps(index: np.ndarray, levels: int, like: torch.Tensor) -> list[torch.Tensor]:
    """Per-level blend weights ``max(0, 1 - |index - k|)`` (index clipped to [0, K-1])."""
    idx = _tensor(index, like).clamp(0, levels - 1)
    return [(1 - (idx - k).abs()).clamp_min(0) for k in range(levels)]


def _blend_levels(x: torch.Tensor, plan: LevelsPlan) -> torch.Tensor:
    """Per-pixel linear blend of the plan's levels (see :class:`LevelsPlan`)."""
    kernels = tuple(_trim_2d(np.asarray(k, np.float64)) for k in plan.kernels)
    maps = _level_weight_maps(np.asarray(plan.index, np.float32), len(kernels), x)
    used: list[torch.Tensor | None] = [m if bool(m.any()) else None for m in maps]
    if max(max(k.shape) for k in kernels) > DIRECT_MAX:
        return _fft_convolve(x, kernels, used)
    out = torch.zeros_like(x)
    for kernel, weight in zip(kernels, used, strict=True):
        if weight is not None:
            out = out + _convolve(x, kernel, None) * weight
    return out


def _average_warps(x: torch.Tensor, plan: WarpPlan) -> torch.Tensor:
    """Mean of bilinear resamplings at the plan's source coordinates, reflected borders."""
    h, w = x.shape[-2:]
    n = x.shape[0]
    out = torch.zeros_like(x)
    for map_x, map_y in plan.grids:
        # align_corners=True maps -1 and 1 to the first and last pixel centres.
        gx, gy = _tensor(map_x, x), _tensor(map_y, x)
        gx = gx * (2.0 / (w - 1)) - 1 if w > 1 else torch.zeros_like(gx)
        gy = gy * (2.0 / (h - 1)) - 1 if h > 1 else torch.zeros_like(gy)
        grid = torch.stack([gx, gy], dim=-1).unsqueeze(0).expand(n, h, w, 2)
        out = out + F.grid_sample(
            x, grid, mode="bilinear", padding_mode="reflection", align_corners=True
        )
    return out / max(1, len(plan.grids))
