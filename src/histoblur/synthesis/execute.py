"""The numpy/OpenCV executor: runs a blur plan on an (H, W, C) image.

The route is picked per kernel for speed; every route computes the convolution with the plan's own
kernel, exact up to float32 round-off (about 1e-4 grey levels):

* a separable kernel (a Gaussian, or any kernel of exact rank one such as horizontal motion) runs
  as two 1-D passes (``cv2.sepFilter2D``), unless it is so long that the FFT is cheaper;
* a small 2-D kernel runs as a direct filter (``cv2.filter2D``);
* a large 2-D kernel (a lens disk, a polygonal aperture, a slanted motion line) runs as a tiled
  FFT convolution (overlap-save): the reflected image is cut into overlapping tiles of a fast DFT
  size, each tile is transformed with ``cv2.dft`` (two channels as one complex transform),
  multiplied by the cached kernel spectrum and transformed back, and the tiles run on a small
  thread pool (OpenCV releases the GIL). Tiles of 256 pixels stay in cache and cost about a third
  of one whole-image transform per pixel;
* a spatially variant blur (a :class:`LevelsPlan`) shares each tile's forward transform across its
  levels and only inverts the levels whose blend weight is non-zero inside that tile.

Borders are reflected (``BORDER_REFLECT_101``) on every route. :func:`execute` works on float32
images; :func:`execute_uint8` runs the same plan straight from and to uint8 (rounded to nearest),
which saves the float round trip for the most common image type. The one deliberate shortcut is
uint8 only: the far tails of a separable kernel are dropped when they cannot move any output by
more than ``UINT8_TAIL_TOL`` (0.1) grey level before rounding.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from histoblur.kernels.core import separable_factors, trim_zeros_1d
from histoblur.synthesis.plans import (
    BlurPlan,
    KernelPlan,
    LevelsPlan,
    NetworkPlan,
    WarpPlan,
    level_weights,
)

BORDER = cv2.BORDER_REFLECT_101
# Largest 2-D kernel side that runs as a direct filter, by input dtype (uint8 | float32); larger
# kernels use tiled FFTs. Longest 1-D factor that runs as separable passes, likewise. Both are the
# crossovers measured on 2048 x 2048 RGB images (benchmarks/synthesis.py machine, 2 cores).
DIRECT_MAX = {np.dtype(np.uint8): 7, np.dtype(np.float32): 11}
SEPARABLE_MAX = {np.dtype(np.uint8): 61, np.dtype(np.float32): 45}
# For uint8 output, outer taps of a non-negative separable kernel are dropped while the mass they
# hold cannot move any output by more than this many grey levels (see _trim_tails).
UINT8_TAIL_TOL = 0.1
# A kernel whose point reflection differs by less than this fraction of its peak has a real
# spectrum (up to float32 round-off), so a tile spectrum is multiplied by a real array.
SYMMETRY_TOL = 1e-9
WORKERS = max(1, min(8, os.cpu_count() or 1))
# Scratch arrays kept per worker thread for reuse across tiles (see _buffer), and kernel spectra
# kept for reuse across calls (see _spectrum).
MAX_BUFFER_BYTES = 64 << 20
MAX_SPECTRUM_BYTES = 256 << 20

_SPECTRA: OrderedDict[tuple, tuple[np.ndarray, bool]] = OrderedDict()
_SPECTRA_LOCK = threading.Lock()

_LOCAL = threading.local()
_POOL_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    """The executor's thread pool, created on first use (and afresh in a forked child)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="histoblur-exec")
        return _POOL


def _forget_pool() -> None:
    """A forked child inherits the pool object but not its threads (nor locks' owners): reset."""
    global _POOL, _POOL_LOCK, _SPECTRA_LOCK
    _POOL, _POOL_LOCK, _SPECTRA_LOCK = None, threading.Lock(), threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def execute(plan: BlurPlan, image: np.ndarray) -> np.ndarray:
    """Apply ``plan`` to a float32 (H, W, C) image and return a new float32 image."""
    image = np.ascontiguousarray(image, dtype=np.float32)
    return _run(plan, image, np.float32)


def execute_uint8(plan: BlurPlan, image: np.ndarray) -> np.ndarray:
    """Apply ``plan`` to a uint8 (H, W, C) image and return a new uint8 (H, W, C) image.

    Same result as converting to float, calling :func:`execute` and rounding back to the nearest
    grey level, without the full-image float copies. The two can differ by one level only where
    the exact value lies within float round-off of a rounding tie, or, for separable kernels whose
    far tails are dropped, within ``UINT8_TAIL_TOL`` of it.
    """
    if image.dtype != np.uint8 or image.ndim != 3:
        raise TypeError(f"execute_uint8 needs uint8 (H, W, C), got {image.dtype} {image.shape}.")
    return _run(plan, np.ascontiguousarray(image), np.uint8)


def convolve(
    image: np.ndarray, kernel: np.ndarray, separable: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """True convolution (not correlation) of a float32 (H, W, C) image, reflected borders.

    Args:
        image: float32 (H, W, C) image; every channel is convolved with the same kernel.
        kernel: 2-D kernel, odd size, centred.
        separable: optional (column, row) factors with ``outer(col, row) == kernel``.
    """
    image = np.ascontiguousarray(image, dtype=np.float32)
    return _convolve(image, np.asarray(kernel, dtype=np.float64), separable, np.float32)


# ---------------------------------------------------------------------------------------------
# Dispatch


def _run(plan: BlurPlan, image: np.ndarray, out_dtype: type) -> np.ndarray:
    if isinstance(plan, KernelPlan):
        return _convolve(image, np.asarray(plan.kernel, np.float64), plan.separable, out_dtype)
    if isinstance(plan, LevelsPlan):
        return _blend_levels(image, plan, out_dtype)
    if isinstance(plan, WarpPlan):
        return _finish(_average_warps(image.astype(np.float32, copy=False), plan), out_dtype)
    if isinstance(plan, NetworkPlan):
        from histoblur.synthesis.learned import run_network  # torch networks: imported on use

        scale = 255.0 if image.dtype == np.uint8 else 1.0
        result = run_network(plan, image.astype(np.float32) / np.float32(scale))
        return _finish(result * np.float32(scale), out_dtype)
    raise TypeError(f"Unknown plan type {type(plan).__name__}.")


def _convolve(
    image: np.ndarray,
    kernel: np.ndarray,
    separable: tuple[np.ndarray, np.ndarray] | None,
    out_dtype: type,
) -> np.ndarray:
    """Exact convolution of ``image`` (uint8 or float32) to ``out_dtype`` by the fastest route."""
    if kernel.shape == (1, 1):
        return _finish(image * np.float32(kernel[0, 0]) if kernel[0, 0] != 1 else image, out_dtype)
    factors = separable if separable is not None else separable_factors(kernel)
    if factors is not None:
        col, row = (trim_zeros_1d(np.asarray(f, np.float64)) for f in factors)
        if out_dtype is np.uint8:
            col, row = _trim_tails(col, row, UINT8_TAIL_TOL / 255.0)
        if max(col.size, row.size) <= SEPARABLE_MAX[image.dtype]:
            return _sep(image, row[::-1], col[::-1], out_dtype)
    if max(kernel.shape) <= DIRECT_MAX[image.dtype]:
        flipped = np.ascontiguousarray(kernel[::-1, ::-1], dtype=np.float32)
        out = cv2.filter2D(image, _depth(out_dtype), flipped, borderType=BORDER)
        return _keep_channels(out, image)
    return _fft_convolve(image, (kernel,), None, out_dtype)


def _depth(out_dtype: type) -> int:
    return cv2.CV_8U if out_dtype is np.uint8 else cv2.CV_32F


def _sep(image: np.ndarray, row: np.ndarray, col: np.ndarray, out_dtype: type) -> np.ndarray:
    """Separable correlation with ``row`` then ``col`` (OpenCV rounds to uint8 from float sums)."""
    out = cv2.sepFilter2D(
        image, _depth(out_dtype), row.astype(np.float32), col.astype(np.float32), borderType=BORDER
    )
    return _keep_channels(out, image)


def _keep_channels(out: np.ndarray, image: np.ndarray) -> np.ndarray:
    """OpenCV drops a trailing singleton channel axis; put it back."""
    return out.reshape(image.shape)


def _finish(image: np.ndarray, out_dtype: type) -> np.ndarray:
    """A float result (or an untouched input) as a new array of ``out_dtype``."""
    if out_dtype is np.uint8:
        if image.dtype == np.uint8:
            return image.copy()
        return np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return image.astype(np.float32, copy=True)


def _trim_tails(col: np.ndarray, row: np.ndarray, budget: float) -> tuple[np.ndarray, np.ndarray]:
    """Drop outer tap pairs of non-negative factors while the dropped mass stays within budget.

    With kernel ``outer(col, row)`` normalised and non-negative, dropping a fraction ``m_c`` of the
    column mass and ``m_r`` of the row mass and renormalising changes an output by at most
    ``(m_c + m_r)`` times the image range, so for a budget of ``tol / 255`` no uint8 output moves
    by more than ``tol`` grey levels before rounding.
    """
    if (col < 0).any() or (row < 0).any():
        return col, row
    factors = [col / col.sum(), row / row.sum()]
    scale = col.sum() * row.sum()
    dropped = 0.0
    while True:
        ends = [f[0] + f[-1] if f.size > 1 else np.inf for f in factors]
        i = int(np.argmin(ends))
        if dropped + ends[i] > budget:
            break
        dropped += ends[i]
        factors[i] = factors[i][1:-1]
    col, row = (f / f.sum() for f in factors)
    return col * scale, row


# ---------------------------------------------------------------------------------------------
# Tiled FFT convolution (overlap-save)


def _tile_size(halo: int) -> int:
    """DFT tile side with the least transform work per output pixel for a kernel half-size.

    A complex forward plus inverse ``cv2.dft`` costs about 4.3, 6.5, 10.4 and 14 ns per pixel at
    256, 512, 1024 and 2048 (2 cores here; small tiles stay in cache), and a tile of side T
    yields (T - 2 * halo)^2 output pixels.
    """
    cost = {256: 4.3, 512: 6.5, 1024: 10.4, 2048: 14.0}
    usable = [t for t in cost if t > 4 * halo]
    if not usable:
        return 1 << (4 * halo).bit_length()
    return min(usable, key=lambda t: cost[t] * (t / (t - 2 * halo)) ** 2)


def _segments(length: int, halo: int, tile: int) -> list[tuple[int, int, int]]:
    """Cut one axis into (start, valid length, DFT size) pieces of at most ``tile`` samples."""
    step = tile - 2 * halo
    pieces = []
    start = 0
    while start < length:
        valid = min(step, length - start)
        size = tile if valid == step else cv2.getOptimalDFTSize(valid + 2 * halo)
        pieces.append((start, valid, size))
        start += valid
    return pieces


def _spectrum(
    kernel_bytes: bytes, kshape: tuple[int, int], size: tuple[int, int]
) -> tuple[np.ndarray, bool]:
    """Complex (h, w, 2) spectrum of a kernel for true convolution, 1/N scaling folded in.

    Returns ``(spectrum, real)``. For a point-symmetric kernel (every disk, Gaussian and centred
    line) the spectrum is real: both planes then hold its real part, so a tile spectrum is
    multiplied element-wise instead of as complex numbers. Spectra are cached (least recently
    used first out, ``MAX_SPECTRUM_BYTES`` in all).
    """
    key = (kernel_bytes, kshape, size)
    with _SPECTRA_LOCK:
        hit = _SPECTRA.get(key)
        if hit is not None:
            _SPECTRA.move_to_end(key)
            return hit
    kernel = np.frombuffer(kernel_bytes, dtype=np.float64).reshape(kshape)
    h, w = size
    ry, rx = kshape[0] // 2, kshape[1] // 2
    # Tap (i, j) acts at offset (i - ry, j - rx); negative offsets wrap to the buffer's end.
    padded = np.zeros(size, np.float64)
    padded[np.ix_(np.arange(-ry, ry + 1) % h, np.arange(-rx, rx + 1) % w)] = kernel
    spec = cv2.dft(padded, flags=cv2.DFT_COMPLEX_OUTPUT) / (h * w)
    real = _is_symmetric(kernel)
    if real:
        spec[..., 1] = spec[..., 0]
    spec = spec.astype(np.float32)
    spec.setflags(write=False)
    with _SPECTRA_LOCK:
        _SPECTRA[key] = (spec, real)
        total = sum(a.nbytes for a, _ in _SPECTRA.values())
        while len(_SPECTRA) > 1 and total > MAX_SPECTRUM_BYTES:
            total -= _SPECTRA.popitem(last=False)[1][0].nbytes
    return spec, real


def _is_symmetric(kernel: np.ndarray) -> bool:
    return bool(np.abs(kernel - kernel[::-1, ::-1]).max() <= SYMMETRY_TOL * np.abs(kernel).max())


def _pad(image: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """Reflect-pad an (H, W, C) image, keeping the channel axis."""
    padded = cv2.copyMakeBorder(image, top, bottom, left, right, BORDER)
    return padded.reshape(padded.shape[0], padded.shape[1], image.shape[2])


# A tile: (y0, valid height, DFT height, x0, valid width, DFT width); an item: one of its channels.
Tile = tuple[int, int, int, int, int, int]
Item = tuple[Tile, int]


def _fft_convolve(
    image: np.ndarray, kernels: tuple[np.ndarray, ...], index: np.ndarray | None, out_dtype: type
) -> np.ndarray:
    """Tiled FFT convolution with one kernel, or with several blended by a level index map.

    Two real tiles travel as the real and imaginary parts of one complex transform (convolving
    ``a + ib`` with a real kernel gives ``a * k + i (b * k)``, and one complex DFT costs about
    25 % less than two real ones): channels 0 and 1 of a tile form one transform, and a leftover
    channel is paired with the same channel of another tile of the same size.

    With ``index`` (float32 (H, W)), pixel p takes the linear blend of levels ``floor(index[p])``
    and ``ceil(index[p])`` (index clipped to [0, K-1]); a transform is inverted only for the levels
    its tiles use.
    """
    height, width, channels = image.shape
    hy = max(k.shape[0] // 2 for k in kernels)
    hx = max(k.shape[1] // 2 for k in kernels)
    tile = _tile_size(max(hy, hx))
    rows = _segments(height, hy, tile)
    cols = _segments(width, hx, tile)
    # Pad so that every tile of every size lies inside the padded image.
    bottom = max(y0 + n for y0, _, n in rows) - height - hy
    right = max(x0 + n for x0, _, n in cols) - width - hx
    padded = _pad(image, hy, bottom, hx, right)
    keys = [(k.tobytes(), k.shape) for k in kernels]
    identity = [k.shape == (1, 1) and k[0, 0] == 1 for k in kernels]
    nonnegative = all(k.min() >= 0 for k in kernels)
    out = np.empty((height, width, channels), dtype=out_dtype)

    jobs: list[list[Item]] = []
    singles: dict[tuple[int, int, int, int], list[Item]] = {}
    for y0, vh, nh in rows:
        for x0, vw, nw in cols:
            t = (y0, vh, nh, x0, vw, nw)
            jobs.extend([[(t, c), (t, c + 1)] for c in range(0, channels - 1, 2)])
            if channels % 2:
                singles.setdefault((vh, nh, vw, nw), []).append((t, channels - 1))
    for items in singles.values():
        jobs.extend(items[i : i + 2] for i in range(0, len(items), 2))
    for nh, nw in {(job[0][0][2], job[0][0][5]) for job in jobs}:
        for key, ident in zip(keys, identity, strict=True):
            if not ident:  # warm the spectrum cache before the threads need it
                _spectrum(*key, (nh, nw))

    def job(items: list[Item]) -> None:
        _, vh, nh, _, vw, nw = items[0][0]
        z = _buffer("z", (nh, nw, 2))
        for j, ((y0, _, _, x0, _, _), c) in enumerate(items):
            z[..., j] = padded[y0 : y0 + nh, x0 : x0 + nw, c]
        if len(items) == 1:
            z[..., 1] = 0
        levels: range | list[int] = [0]
        if index is not None:
            idx = _buffer("index", (vh, vw, 2))
            for j in range(2):
                y0, _, _, x0, _, _ = items[min(j, len(items) - 1)][0]
                idx[..., j] = index[y0 : y0 + vh, x0 : x0 + vw]
            flat = idx.reshape(vh, vw * 2)
            cv2.threshold(flat, len(kernels) - 1, 0, cv2.THRESH_TRUNC, dst=flat)
            cv2.threshold(flat, 0, 0, cv2.THRESH_TOZERO, dst=flat)
            lo, hi = cv2.minMaxLoc(flat)[:2]
            levels = range(int(np.floor(lo)), int(np.ceil(hi)) + 1)
            weight = _buffer("weight", (vh, vw, 2))
            acc = _buffer("acc", (vh, vw, 2))
            acc.fill(0)
        spectrum = None
        for level in levels:
            if index is not None:
                # weight = max(0, 1 - |index - level|), in place
                cv2.absdiff(idx, (level, level, 0, 0), dst=weight)
                cv2.threshold(weight, 1, 1, cv2.THRESH_TRUNC, dst=weight)
                cv2.addWeighted(weight, -1, weight, 0, 1, dst=weight)
                if not cv2.countNonZero(weight.reshape(vh, vw * 2)):
                    continue
            if identity[level]:
                result = z
            else:
                if spectrum is None:
                    spectrum = cv2.dft(z, dst=_buffer("spectrum", (nh, nw, 2)))
                spec, real = _spectrum(*keys[level], (nh, nw))
                product = _buffer("product", (nh, nw, 2))
                if real:
                    cv2.multiply(spectrum, spec, dst=product)
                else:
                    cv2.mulSpectrums(spectrum, spec, 0, product)
                result = cv2.dft(product, flags=cv2.DFT_INVERSE, dst=_buffer("result", (nh, nw, 2)))
            value = result[hy : hy + vh, hx : hx + vw]
            if index is None:
                acc = value
            else:
                cv2.accumulateProduct(value, weight, acc)
        if out_dtype is np.uint8:
            u8 = _buffer("u8", (vh, vw, 2), np.uint8)
            if nonnegative:
                # Sums of non-negative taps are >= 0 but for round-off (~1e-4), where |x| rounds
                # to the same grey level as x saturated: one fast pass.
                acc = cv2.convertScaleAbs(acc, dst=u8)
            else:
                acc = np.clip(np.rint(acc), 0, 255, out=u8, casting="unsafe")
        for j, ((y0, _, _, x0, _, _), c) in enumerate(items):
            out[y0 : y0 + vh, x0 : x0 + vw, c] = acc[..., j]

    if len(jobs) == 1:
        job(jobs[0])
    else:
        pool = _pool()
        for future in [pool.submit(job, items) for items in jobs]:
            future.result()
    return out


def _buffer(name: str, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
    """A per-thread scratch array, reused across tiles.

    Fresh multi-megabyte arrays are mapped and faulted in page by page on every allocation, which
    costs as much as the transforms themselves; the few shapes a call needs are kept instead, the
    least recently used dropped beyond ``MAX_BUFFER_BYTES`` per thread.
    """
    cache = getattr(_LOCAL, "cache", None)
    if cache is None:
        cache = _LOCAL.cache = _BufferCache()
    return cache.get((name, shape, np.dtype(dtype).str))


class _BufferCache:
    """Least-recently-used scratch arrays of one thread, bounded in bytes."""

    def __init__(self) -> None:
        self.arrays: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self.nbytes = 0

    def get(self, key: tuple) -> np.ndarray:
        array = self.arrays.get(key)
        if array is not None:
            self.arrays.move_to_end(key)
            return array
        array = np.empty(key[1], np.dtype(key[2]))
        self.arrays[key] = array
        self.nbytes += array.nbytes
        while len(self.arrays) > 1 and self.nbytes > MAX_BUFFER_BYTES:
            # a caller still holding an evicted array keeps it alive until it is done
            self.nbytes -= self.arrays.popitem(last=False)[1].nbytes
        return array


# ---------------------------------------------------------------------------------------------
# Spatially variant blends and warps


def _blend_levels(image: np.ndarray, plan: LevelsPlan, out_dtype: type) -> np.ndarray:
    """Per-pixel linear blend of the plan's levels (see :class:`LevelsPlan`)."""
    kernels = tuple(np.asarray(k, np.float64) for k in plan.kernels)
    index = np.asarray(plan.index, np.float32)
    if max(max(k.shape) for k in kernels) > DIRECT_MAX[image.dtype]:
        return _fft_convolve(image, kernels, index, out_dtype)
    out = np.zeros(image.shape, dtype=np.float32)
    for level, weight in enumerate(level_weights(index, len(kernels))):
        if weight.any():
            out += _convolve(image, kernels[level], None, np.float32) * weight[..., None]
    return _finish(out, out_dtype)


def _average_warps(image: np.ndarray, plan: WarpPlan) -> np.ndarray:
    out = np.zeros_like(image, dtype=np.float32)
    for map_x, map_y in plan.grids:
        warped = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=BORDER)
        out += _keep_channels(warped, image)
    return out / len(plan.grids)
