"""Write a greyscale PNG row block by row block, so a slide-sized mask never sits in memory.

The file is a plain 8-bit greyscale PNG (no filter, zlib-compressed IDAT chunks) that every
image tool opens; memory use is one block of rows plus zlib's window.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np

from histoblur.errors import ParameterError

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHUNK_BYTES = 1 << 20  # compressed bytes per IDAT chunk


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


class PngRowWriter:
    """Streaming writer of a (height, width) uint8 greyscale PNG; use as a context manager.

    Rows must arrive in order and add up to exactly ``height``; otherwise closing raises and the
    file is left incomplete (write it inside an atomic folder or path). zlib ``level`` 1 is the
    default: on a 20,000 x 20,000 probability map it is 3x faster than level 6 for 15% more bytes.
    """

    def __init__(self, path: Path, width: int, height: int, level: int = 1) -> None:
        if width < 1 or height < 1 or width > 2**31 - 1 or height > 2**31 - 1:
            raise ParameterError(f"PNG sides must be 1 to 2^31-1 pixels, got {width} x {height}.")
        self.path, self.width, self.height = Path(path), width, height
        self.rows = 0
        self._zip = zlib.compressobj(level)
        self._pending = bytearray()
        self._file: BinaryIO = self.path.open("wb")
        ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey, no interlace
        self._file.write(SIGNATURE + _chunk(b"IHDR", ihdr))

    def write(self, rows: np.ndarray) -> None:
        """Append a (n, width) uint8 block of rows."""
        if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != self.width:
            raise ParameterError(
                f"Rows must be uint8 of shape (n, {self.width}), got {rows.dtype} {rows.shape}."
            )
        if self.rows + rows.shape[0] > self.height:
            raise ParameterError(f"More than {self.height} rows written to {self.path.name}.")
        framed = np.zeros((rows.shape[0], self.width + 1), np.uint8)  # filter byte 0 per row
        framed[:, 1:] = rows
        self._pending += self._zip.compress(framed.tobytes())
        self.rows += rows.shape[0]
        self._flush(final=False)

    def _flush(self, final: bool) -> None:
        while len(self._pending) >= CHUNK_BYTES or (final and self._pending):
            self._file.write(_chunk(b"IDAT", bytes(self._pending[:CHUNK_BYTES])))
            del self._pending[:CHUNK_BYTES]

    def close(self) -> None:
        """Finish the file; raises if fewer rows than ``height`` were written."""
        if self._file.closed:
            return
        try:
            if self.rows != self.height:
                raise ParameterError(
                    f"{self.path.name}: {self.rows} of {self.height} rows written."
                )
            self._pending += self._zip.flush()
            self._flush(final=True)
            self._file.write(_chunk(b"IEND", b""))
        finally:
            self._file.close()

    def __enter__(self) -> PngRowWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        else:
            self._file.close()
