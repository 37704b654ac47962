"""Streaming PNG writer and row-block reducer used for slide-sized maps."""

import numpy as np
import pytest

from histoblur.errors import ParameterError
from histoblur.inference.reduce import RowReducer
from histoblur.io.images import read_image
from histoblur.io.png_stream import PngRowWriter


def test_png_written_in_blocks_reads_back_exactly(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (157, 203), dtype=np.uint8)
    with PngRowWriter(tmp_path / "m.png", 203, 157) as png:
        for r0 in range(0, 157, 40):
            png.write(image[r0 : r0 + 40])
    back = read_image(tmp_path / "m.png")
    assert back.dtype == np.uint8 and np.array_equal(back, image)


def test_png_writer_refuses_wrong_rows(tmp_path):
    png = PngRowWriter(tmp_path / "m.png", 8, 4)
    with pytest.raises(ParameterError, match="shape"):
        png.write(np.zeros((2, 9), np.uint8))
    png.write(np.zeros((3, 8), np.uint8))
    with pytest.raises(ParameterError, match="More than 4 rows"):
        png.write(np.zeros((2, 8), np.uint8))
    with pytest.raises(ParameterError, match="3 of 4 rows"):
        png.close()


@pytest.mark.parametrize("factor", [1, 3, 8])
def test_row_reducer_equals_block_mean(factor):
    rng = np.random.default_rng(1)
    full = rng.random((50, 37)).astype(np.float32)
    reducer = RowReducer(50, 37, factor)
    for r0, r1 in [(0, 7), (7, 7), (7, 30), (30, 50)]:  # uneven blocks, one empty
        reducer.add(full[r0:r1])
    out = reducer.mean()
    h, w = -(-50 // factor), -(-37 // factor)
    expected = np.array(
        [
            [full[i * factor : (i + 1) * factor, j * factor : (j + 1) * factor].mean()
             for j in range(w)]
            for i in range(h)
        ]
    )  # fmt: skip
    assert out.shape == (h, w)
    np.testing.assert_allclose(out, expected, rtol=1e-5)
