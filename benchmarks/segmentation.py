"""Blur segmentation inference speed and memory on this machine, side by side in one run.

    .venv/bin/python benchmarks/segmentation.py [--tiles 64] [--threads 2]

Times, on 256 x 256 RGB uint8 tiles cut from a real H&E image (random tiles when the data folder
is absent): the shipped default model at several batch sizes (float32, channels-last) and with
bfloat16 autocast (``--precision bf16``), the light variant (same width,
depthwise-separable convolutions) and a full-resolution U-Net (no strided stem) for reference,
and the Laplacian-energy baseline; then one 2048 x 2048 image through tiled inference (overlap
32, blended). Each row reports the median of 3 timed runs after one warm-up, tiles per second and
the ratio to the 20 tiles/s goal; peak resident memory of the process is measured in a child
process per configuration so one row's peak does not hide another's.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GOAL_TILES_PER_S = 20.0


def tiles(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` 256 x 256 RGB uint8 tiles from a real H&E image (or noise when absent)."""
    rng = np.random.default_rng(seed)
    path = DATA / "sharp" / "he" / "tiatoolbox_target_image.png"
    if path.is_file():
        from histoblur.io.images import read_image, to_rgb

        image = to_rgb(read_image(path))
        h, w = image.shape[:2]
        out = []
        for _ in range(n):
            y, x = rng.integers(0, h - 256), rng.integers(0, w - 256)
            out.append(np.ascontiguousarray(image[y : y + 256, x : x + 256]))
        return out
    return [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(n)]


def build(name: str):
    """(label, image -> mask function, parameters) for a configuration name."""
    from histoblur.inference.baseline import laplacian_blur_mask
    from histoblur.inference.segment import Segmenter
    from histoblur.models import UNet, UNetConfig

    if name == "baseline":
        return laplacian_blur_mask, 0
    if name.startswith("default"):  # default-bf16@8: bfloat16 autocast (fp32 otherwise)
        seg = Segmenter.load("default", precision="bf16" if "-bf16" in name else "fp32")
    else:
        cfg = {
            "light": UNetConfig(width=16, depth=4, stem_stride=2, separable=True),
            "fullres": UNetConfig(width=16, depth=4, stem_stride=1),
        }[name.split("@")[0]]
        torch.manual_seed(0)
        seg = Segmenter(UNet(cfg))
    seg.batch_size = int(name.split("@")[1]) if "@" in name else 8
    params = sum(p.numel() for p in seg.model.parameters())
    return seg, params


def run_one(name: str, n: int, threads: int, queue: mp.Queue) -> None:
    """Time one configuration in this (child) process and report through ``queue``."""
    torch.set_num_threads(threads)
    detector, params = build(name)
    batch = tiles(n)
    if name == "baseline":

        def work() -> None:
            for t in batch:
                detector(t)
    else:
        seg = detector
        stacked = np.stack([t.astype(np.float32) / 255 for t in batch]).transpose(0, 3, 1, 2)

        def work() -> None:
            for i in range(0, n, seg.batch_size):
                seg._predict(np.ascontiguousarray(stacked[i : i + seg.batch_size]))

    work()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        work()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put({"name": name, "params": params, "tiles_per_s": n / med, "peak_mb": peak})


def run_large(threads: int, queue: mp.Queue) -> None:
    """Tiled inference of one 2048 x 2048 image with the default model."""
    torch.set_num_threads(threads)
    seg, _ = build("default")
    image = np.concatenate([np.concatenate(tiles(8, s)[:8], axis=1) for s in range(8)])
    image = np.ascontiguousarray(image[:2048, :2048])
    seg.segment(image[:512, :512])
    t0 = time.perf_counter()
    seg.segment(image)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    windows = seg.tiles_for(image)
    queue.put(
        {
            "name": "default, 2048 x 2048 tiled",
            "seconds": dt,
            "windows": windows,
            "megapixels_per_s": 2048 * 2048 / dt / 1e6,
            "peak_mb": peak,
        }
    )


def in_child(target, *args):
    """Run ``target(*args, queue)`` in a fresh process; return what it put on the queue."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
        f"threads available, using {args.threads}; torch {torch.__version__}"
    )
    print(f"{args.tiles} tiles of 256 x 256 per timed run, median of 3\n")
    rows = [
        in_child(run_one, name, args.tiles, args.threads)
        for name in (
            "default@1",
            "default@8",
            "default@16",
            "default-bf16@8",
            "light@8",
            "fullres@8",
            "baseline",
        )
    ]
    print(f"{'configuration':<28}{'params':>10}{'tiles/s':>10}{'vs goal':>9}{'peak MB':>9}")
    for r in rows:
        print(
            f"{r['name']:<28}{r['params']:>10,}{r['tiles_per_s']:>10.1f}"
            f"{r['tiles_per_s'] / GOAL_TILES_PER_S:>8.2f}x{r['peak_mb']:>9.0f}"
        )
    large = in_child(run_large, args.threads)
    print(
        f"\n{large['name']}: {large['seconds']:.2f} s for {large['windows']} windows "
        f"({large['megapixels_per_s']:.2f} MP/s), peak {large['peak_mb']:.0f} MB"
    )
    default = next(r for r in rows if r["name"] == "default@8")
    verdict = "met" if default["tiles_per_s"] >= GOAL_TILES_PER_S else "NOT met"
    print(
        f"\nGoal: default model >= {GOAL_TILES_PER_S:.0f} tiles/s of 256 x 256 "
        f"(batch 8): {default['tiles_per_s']:.1f} -> {verdict}"
    )
    print(json.dumps({"rows": rows, "large": large}))


if __name__ == "__main__":
    main()
