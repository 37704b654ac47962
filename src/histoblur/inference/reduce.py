"""Area-average a map that arrives row block by row block (slide maps at thumbnail scale)."""

from __future__ import annotations

import numpy as np

from histoblur.errors import ParameterError


class RowReducer:
    """Mean over ``factor`` x ``factor`` cells of an (H, W) map fed in row order.

    The last cell row/column may be partial; its mean is over the pixels it holds. Memory is the
    reduced map only.
    """

    def __init__(self, height: int, width: int, factor: int) -> None:
        if factor < 1:
            raise ParameterError(f"Reduction factor must be at least 1, got {factor}.")
        self.height, self.width, self.factor = height, width, factor
        self.shape = (-(-height // factor), -(-width // factor))
        self._sum = np.zeros(self.shape, np.float32)
        self._cols = np.arange(0, width, factor)
        self.rows = 0

    def add(self, block: np.ndarray) -> None:
        """Append rows ``[rows, rows + len(block))`` of the map (any numeric dtype)."""
        if block.ndim != 2 or block.shape[1] != self.width:
            raise ParameterError(f"Blocks must have {self.width} columns, got {block.shape}.")
        r0, r1 = self.rows, self.rows + block.shape[0]
        if r1 > self.height:
            raise ParameterError(f"More than {self.height} rows added.")
        if r1 == r0:
            return
        cols = np.add.reduceat(block.astype(np.float32), self._cols, axis=1)
        cells = np.arange(r0, r1) // self.factor
        starts = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]])
        self._sum[cells[starts]] += np.add.reduceat(cols, starts, axis=0)
        self.rows = r1

    def mean(self) -> np.ndarray:
        """The reduced (ceil(H / f), ceil(W / f)) float32 map of cell means."""
        f = self.factor
        rows = np.minimum(f, self.height - np.arange(self.shape[0]) * f)
        cols = np.minimum(f, self.width - np.arange(self.shape[1]) * f)
        return self._sum / (rows[:, None] * cols[None, :]).astype(np.float32)
