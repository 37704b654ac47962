"""How the shipped segmenter's real-blur score depends on the working resolution.

    .venv/bin/python benchmarks/working_resolution.py runs/bench/fqpath [more benchmarks]

Each benchmark folder (built by ``histoblur bench real-pairs``) is scored at its native
resolution and after down-sampling tiles (area average) and masks (nearest) by 2, 3 and 4:
pooled Dice on blurred pixels and the share of pixels flagged on all-sharp tiles. The FQPath
pair is scanned at about 0.25 um/px, so factor 2 is ``histoblur qc``'s default of 0.5 um/px.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from histoblur.inference.segment import Segmenter
from histoblur.synthesis.real_pairs import iter_benchmark

FACTORS = (1, 2, 3, 4)


def shrink(image: np.ndarray, truth: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    """Down-sample a tile (area) and its mask (nearest) by ``f``."""
    if f == 1:
        return image, truth
    h, w = image.shape[:2]
    size = (w // f, h // f)
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    mask = cv2.resize(truth.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    return small, mask


def score(segmenter: Segmenter, bench: Path, f: int) -> tuple[float, float]:
    """(pooled Dice, share of all-sharp pixels flagged) at down-sampling factor ``f``."""
    tp = fp = fn = sharp_px = sharp_flagged = 0
    for image, truth, record in iter_benchmark(bench):
        small, mask = shrink(image, truth, f)
        pred = segmenter.segment(small).mask
        tp += int((pred & mask).sum())
        fp += int((pred & ~mask).sum())
        fn += int((~pred & mask).sum())
        if record["kind"] == "all-sharp":
            sharp_px += pred.size
            sharp_flagged += int(pred.sum())
    return 2 * tp / max(1, 2 * tp + fp + fn), sharp_flagged / max(1, sharp_px)


def main() -> None:
    benches = [Path(p) for p in sys.argv[1:]] or [Path("runs/bench/fqpath")]
    segmenter = Segmenter.load("default")
    print("| benchmark | down-sampling | Dice | all-sharp pixels flagged |")
    print("|---|---|---|---|")
    for bench in benches:
        for f in FACTORS:
            dice, flagged = score(segmenter, bench, f)
            print(f"| {bench.name} | {f}x | {dice:.3f} | {flagged:.1%} |", flush=True)


if __name__ == "__main__":
    main()
