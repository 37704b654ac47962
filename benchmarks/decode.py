"""Slide decoding speed: tifffile + imagecodecs tiles against OpenSlide's read_region, one run.

    .venv/bin/python benchmarks/decode.py [--box 512] [--threads 1 2] [--repeats 3]

For each TIFF-based real slide in ../shared/data/wsi and each of its pyramid levels, reads the
whole level in ``--box`` x ``--box`` boxes (the way QC's reader threads do) with
:class:`histoblur.wsi.readers.OpenSlideReader` and with
:class:`histoblur.wsi.readers.TiffTileReader`, with 1 and 2 threads, and prints megapixels per
second (median of ``--repeats`` after a warm-up read of the level) and the ratio. The pixels
of both readers are compared on every box at level 0 (they must be identical).
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from histoblur.wsi.readers import OpenSlideReader, SlideReader, TiffTileReader

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "wsi"
SLIDES = ("cmu-1-small-region.svs", "tcga-cr-7395-01a-01-ts1.svs")


def boxes(reader: SlideReader, level: int, box: int) -> list[tuple[int, int, int, int]]:
    """(x0, y0, w, h) boxes covering a level; x0, y0 in level-0 pixels."""
    w, h = reader.level_dimensions[level]
    d = reader.level_downsamples[level]
    return [
        (round(x * d), round(y * d), min(box, w - x), min(box, h - y))
        for y in range(0, h, box)
        for x in range(0, w, box)
    ]


def read_all(reader: SlideReader, level: int, grid: list, threads: int) -> float:
    """Seconds to read every box of ``grid`` at ``level`` with ``threads`` threads."""
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda b: reader.read_region(b[0], b[1], level, (b[2], b[3])), grid))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--box", type=int, default=512)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("| slide | level | megapixels | threads | OpenSlide MP/s | tifffile MP/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    for name in SLIDES:
        path = DATA / name
        if not path.is_file():
            print(f"(skipped {name}: absent)")
            continue
        slow, fast = OpenSlideReader(path), TiffTileReader(path)
        for level in range(len(fast.level_dimensions)):
            grid = boxes(fast, level, args.box)
            if level == 0:
                for x, y, w, h in grid:
                    same = np.array_equal(
                        slow.read_region(x, y, 0, (w, h)), fast.read_region(x, y, 0, (w, h))
                    )
                    assert same, f"{name}: readers differ at ({x}, {y})"
            mp = sum(w * h for *_, w, h in grid) / 1e6
            for threads in args.threads:
                rates = []
                for reader in (slow, fast):
                    read_all(reader, level, grid, threads)  # warm-up (file cache)
                    runs = [read_all(reader, level, grid, threads) for _ in range(args.repeats)]
                    rates.append(mp / statistics.median(runs))
                print(
                    f"| {name} | {level} | {mp:.1f} | {threads} | {rates[0]:.1f} | "
                    f"{rates[1]:.1f} | {rates[1] / rates[0]:.2f}x |",
                    flush=True,
                )
        slow.close()
        fast.close()


if __name__ == "__main__":
    main()
