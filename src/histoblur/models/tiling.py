"""Tiled dense prediction with overlap and blending, batched and memory bounded.

An image of any size is covered by ``tile`` x ``tile`` windows that overlap by ``overlap`` pixels
(the last row and column are shifted inwards, never padded beyond the image); each window's
prediction is weighted by a separable ramp that falls towards the window's inner edges and stays
at 1 on the image border, so seams vanish and the border is not down-weighted. The image is
processed in horizontal bands of windows, so only one band of float accumulators lives at a
time; the finished rows are handed to the caller as they complete.

Examples:
    An identity "network" gives the image back exactly, whatever the tiling:

    >>> image = np.random.default_rng(0).random((40, 50, 3)).astype(np.float32)
    >>> blocks = list(predict_tiled(image, lambda batch: batch, tile=16, overlap=4, channels=3))
    >>> [row for row, _ in blocks], blocks[0][1].shape
    ([0, 12, 24], (12, 50, 3))
    >>> out = np.concatenate([block for _, block in blocks])
    >>> out.shape, bool(np.allclose(out, image, atol=1e-6))
    ((40, 50, 3), True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from histoblur.errors import ParameterError

# (N, C, t, t) float32 batch -> (N, K, t, t) float32 predictions
PredictFn = Callable[[np.ndarray], np.ndarray]
# windows per forward pass, the default of every tiled predictor (segment, qc, restore)
BATCH_SIZE = 8


@dataclass(frozen=True)
class TileGrid:
    """Window origins along one axis plus the axis length."""

    starts: tuple[int, ...]
    size: int
    tile: int


def axis_starts(size: int, tile: int, overlap: int) -> tuple[int, ...]:
    """Window origins covering ``[0, size)``, neighbours overlapping by at least ``overlap``.

    >>> axis_starts(100, 32, 8), axis_starts(20, 32, 8)  # the last window ends at the edge
    ((0, 23, 45, 68), (0,))
    """
    if size <= tile:
        return (0,)
    stride = tile - overlap
    n = int(np.ceil((size - tile) / stride)) + 1
    return tuple(int(round(i * (size - tile) / (n - 1))) for i in range(n))


def ramp(tile: int, overlap: int, low_edge: bool, high_edge: bool) -> np.ndarray:
    """1-D blending weight: rises over ``overlap`` px at inner edges, flat at image edges.

    >>> ramp(8, 2, low_edge=True, high_edge=False).tolist()  # image edge left, neighbour right
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.25]
    """
    w = np.ones(tile, np.float32)
    if overlap > 0:
        r = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        if not low_edge:
            w[:overlap] = r
        if not high_edge:
            w[tile - overlap :] = r[::-1]
    return w


def _pad_to(image: np.ndarray, tile: int) -> np.ndarray:
    """Reflect-pad (bottom/right) an image smaller than one window up to the window size."""
    h, w = image.shape[:2]
    ph, pw = max(0, tile - h), max(0, tile - w)
    if not (ph or pw):
        return image
    mode = "reflect" if ph < h and pw < w else "edge"
    pad = ((0, ph), (0, pw)) + ((0, 0),) * (image.ndim - 2)
    return np.pad(image, pad, mode=mode)


def predict_tiled(
    image: np.ndarray,
    predict: PredictFn,
    tile: int = 256,
    overlap: int = 32,
    batch_size: int = BATCH_SIZE,
    channels: int = 1,
    progress: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Blend window predictions over ``image`` (H, W, C float32), band by band.

    Yields ``(row, block)``: rows ``[row, row + len(block))`` of the (H, W, channels) float32
    prediction, in order and covering the image exactly once.

    Args:
        image: (H, W, C) float32 network input.
        predict: maps an (N, C, tile, tile) batch to (N, channels, tile, tile).
        tile: window side.
        overlap: overlap between neighbouring windows (``< tile / 2``).
        batch_size: windows per call of ``predict``.
        channels: prediction channels.
        progress: called with the number of windows done after each batch.

    Raises:
        ParameterError: a tile under 8, an overlap of half the tile or more, a batch size under 1.

    Examples:
        A (N, C, t, t) -> (N, 1, t, t) predictor over a grey image smaller than one window:

        >>> image = np.ones((20, 30, 1), np.float32)
        >>> done = []
        >>> blocks = list(predict_tiled(image, lambda b: 2 * b, 32, 8, progress=done.append))
        >>> [(row, block.shape) for row, block in blocks], done
        ([(0, (20, 30, 1))], [1])
        >>> float(blocks[0][1].max())
        2.0
    """
    if tile < 8 or not 0 <= overlap < tile // 2:
        raise ParameterError(
            f"Tile {tile} with overlap {overlap}: need tile >= 8 and overlap < tile / 2."
        )
    if batch_size < 1:
        raise ParameterError(f"Batch size must be at least 1, got {batch_size}.")
    h0, w0 = image.shape[:2]
    padded = _pad_to(image, tile)
    h, w = padded.shape[:2]
    ys, xs = axis_starts(h, tile, overlap), axis_starts(w, tile, overlap)

    def bands() -> Iterator[list[tuple[int, np.ndarray]]]:
        for y in ys:
            done: list[tuple[int, np.ndarray]] = []
            for b in range(0, len(xs), batch_size):
                chunk = xs[b : b + batch_size]
                batch = np.stack([padded[y : y + tile, x : x + tile] for x in chunk])
                out = predict(np.ascontiguousarray(batch.transpose(0, 3, 1, 2), np.float32))
                done += list(zip(chunk, out, strict=True))
                if progress is not None:
                    progress(len(chunk))
            yield done

    for row, block in blend_bands(bands(), ys, (h, w), tile, overlap, channels):
        keep = min(block.shape[0], max(0, h0 - row))
        if keep:
            yield row, block[:keep, :w0]


def blend_bands(
    bands: Iterable[list[tuple[int, np.ndarray]]],
    ys: Sequence[int],
    size: tuple[int, int],
    tile: int,
    overlap: int,
    channels: int,
) -> Iterator[tuple[int, np.ndarray]]:
    """Blend window predictions band by band into finished rows.

    Args:
        bands: for each window row origin in ``ys``, the ``(x, prediction (channels, t, t))``
            pairs of that row; windows may be missing (their area then predicts 0).
        ys: window row origins (:func:`axis_starts`).
        size: ``(height, width)`` of the covered area.
        tile: window side.
        overlap: overlap used for the ramps.
        channels: prediction channels.

    Yields:
        ``(row, block)``: rows ``[row, row + len(block))`` of the (H, W, channels) float32
        blend, in order, each row once.

    Examples:
        Two rows of two windows, each predicting a constant: the blend is that constant.

        >>> ys = axis_starts(24, 16, 8)
        >>> xs = axis_starts(24, 16, 8)
        >>> bands = [[(x, np.full((1, 16, 16), 3.0, np.float32)) for x in xs] for _ in ys]
        >>> blocks = list(blend_bands(bands, ys, (24, 24), tile=16, overlap=4, channels=1))
        >>> [(row, block.shape) for row, block in blocks]
        [(0, (8, 24, 1)), (8, (16, 24, 1))]
        >>> {float(v) for _, block in blocks for v in np.unique(block.round(6))}
        {3.0}
    """
    h, w = size
    done = 0  # rows already yielded
    # channel-first accumulators of rows [done, done + rows): each window adds contiguous runs;
    # fresh rows come from np.zeros (calloc: pages no window touches, e.g. glass, stay free)
    acc = np.zeros((channels, 0, w), np.float32)
    norm = np.zeros((0, w), np.float32)
    spans: list[tuple[int, int, int]] = []  # (last row + 1, x0, x1) of every window blended
    for i, (y, windows) in enumerate(zip(ys, bands, strict=True)):
        end = y + tile
        if end - done > norm.shape[0]:
            grown = np.zeros((channels, end - done, w), np.float32)
            grown_norm = np.zeros((end - done, w), np.float32)
            grown[:, : norm.shape[0]], grown_norm[: norm.shape[0]] = acc, norm
            acc, norm = grown, grown_norm
        wy = ramp(tile, overlap, y == 0, end >= h)
        for x, out in windows:
            weight = wy[:, None] * ramp(tile, overlap, x == 0, x + tile >= w)[None, :]
            acc[:, y - done : end - done, x : x + tile] += out * weight
            norm[y - done : end - done, x : x + tile] += weight
            spans.append((end, x, x + tile))
        # rows above the next band's start are final
        final = min((ys[i + 1] if i + 1 < len(ys) else h), h) - done
        if final > 0:
            block = np.zeros((final, w, channels), np.float32)
            spans = [s for s in spans if s[0] > done]
            for x0, x1 in _merged((a, b) for _, a, b in spans):  # only where windows lie
                part = acc[:, :final, x0:x1] / np.maximum(norm[:final, x0:x1], 1e-12)
                block[:, x0:x1] = part.transpose(1, 2, 0)
            yield done, block
            acc, norm, done = acc[:, final:], norm[final:], done + final


def _merged(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Union of half-open intervals, sorted and merged.

    >>> _merged([(5, 9), (0, 3), (2, 4), (9, 12)])
    [(0, 4), (5, 12)]
    """
    out: list[tuple[int, int]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def count_tiles(height: int, width: int, tile: int, overlap: int) -> int:
    """Number of windows :func:`predict_tiled` evaluates for an image of this size.

    >>> count_tiles(100, 100, 32, 8), count_tiles(10, 10, 32, 8)
    (16, 1)
    """
    h, w = max(height, tile), max(width, tile)
    return len(axis_starts(h, tile, overlap)) * len(axis_starts(w, tile, overlap))
