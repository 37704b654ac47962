"""Whole-slide blur QC against a HistoQC-style Laplacian blur module, side by side in one run.

    .venv/bin/python benchmarks/wsi_qc.py [--large 40000] [--cache runs/bench_wsi] [--threads 2]
                                         [--pictures docs/images]

For each slide (the real slides in ../shared/data/wsi that carry tissue, and a generated
pyramidal slide of ``--large`` x ``--large`` px at 0.25 um/px with a known blurred rectangle),
runs in a fresh child process each:

- ``histoblur qc`` (shipped model, 0.5 um/px working resolution, tissue windows only, reader
  threads decoding ahead): seconds per slide, windows and windows per second, the split between
  decoding (summed over reader threads) and the network, and peak resident memory;
- the HistoQC-style module (thumbnail at 2.5x = 4 um/px, smoothed absolute Laplacian <= 0.1 on
  tissue): seconds and peak memory.

Prints a table with ratios and, for the generated slide, how much of the known blurred
rectangle each method flags and how much tissue outside it. Then, on HistoQC's own output for a
TCGA slide (``histoqc_reference_output``), where HistoQC's blur mask lies: on glass, on the rim
of the tissue, or inside it. ``--pictures`` saves each slide's overlay and that comparison.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from segmentation import in_child  # benchmarks/segmentation.py: a fresh process per run

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL = [("cmu-1-small-region.svs", None), ("tcga-cr-7395-01a-01-ts1.svs", 0.5)]
# The 256 px HistoQC thumbnail states no resolution; its glands suggest about 4 um/px (only
# used for the tissue detector's smallest piece). The rim is measured in thumbnail pixels.
HISTOQC_THUMB_MPP = 4.0
RIM_PX = 25


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def large_slide(side: int, cache: Path) -> tuple[Path, tuple[int, int, int, int]]:
    """The generated slide (written once into ``cache``) and its blurred box."""
    from histoblur.io.images import read_image, to_rgb
    from histoblur.synthesis.slide import make_synthetic_slide
    from histoblur.wsi.pyramid import write_pyramidal_tiff

    texture_path = DATA / "sharp" / "he" / "tiatoolbox_target_image.png"
    texture = to_rgb(read_image(texture_path))[:512, :512] if texture_path.is_file() else None
    # lens radius 12 px = 3 um at 0.25 um/px
    slide = make_synthetic_slide((side, side), texture, 12.0, seed=1, tissue_share=0.3)
    path = cache / f"synthetic_{side}.tif"
    if not path.is_file():
        t0 = time.perf_counter()
        cache.mkdir(parents=True, exist_ok=True)
        write_pyramidal_tiff(path, slide.source, slide.size, mpp=0.25)
        print(
            f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.0f} s"
        )
    return path, slide.blurred_box


def box_scores(mask: np.ndarray, level0: tuple[int, int], box) -> tuple[float, float]:
    """(fraction of the blurred box flagged, fraction of flagged pixels outside the box)."""
    h, w = mask.shape
    sx, sy = w / level0[0], h / level0[1]
    x, y, bw, bh = box
    inside = np.zeros_like(mask, bool)
    inside[round(y * sy) : round((y + bh) * sy), round(x * sx) : round((x + bw) * sx)] = True
    flagged = mask.astype(bool)
    recall = float(flagged[inside].mean())
    outside = float(flagged[~inside].sum() / max(1, flagged.sum()))
    return recall, outside


def run_ours(
    slide: str, slide_mpp: float | None, threads: int, box, pictures: Path | None, queue: mp.Queue
) -> None:
    import torch

    from histoblur.inference.qc import QCConfig, qc_slide
    from histoblur.inference.segment import Segmenter
    from histoblur.io.images import read_image

    torch.set_num_threads(threads)
    config = QCConfig(slide_mpp=slide_mpp)
    segmenter = Segmenter.load("default")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = qc_slide(slide, Path(tmp), config, segmenter)
        wall = time.perf_counter() - t0
        row = {**summary, "wall": wall, "peak_mb": peak_mb()}
        if box is not None:
            mask = read_image(Path(tmp) / Path(slide).stem / "blur_mask.png") > 0
            row["box"] = box_scores(mask, tuple(summary["level0_size"]), box)
        if pictures is not None:
            save_picture(Path(tmp) / Path(slide).stem / "overlay.png", pictures, Path(slide).stem)
    queue.put(row)


def save_picture(overlay: Path, pictures: Path, stem: str) -> None:
    """The overlay as a JPEG of at most 900 px a side, for the docs."""
    import cv2

    image = cv2.imread(str(overlay))
    scale = min(1.0, 900 / max(image.shape[:2]))
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    pictures.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(pictures / f"wsi_qc_{stem}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 82])


def run_histoqc(slide: str, slide_mpp: float | None, box, queue: mp.Queue) -> None:
    from histoblur.inference.baseline import HISTOQC_SLIDE_MPP, histoqc_slide_blur
    from histoblur.wsi.readers import open_slide, thumbnail
    from histoblur.wsi.tissue import detect_tissue

    t0 = time.perf_counter()
    reader = open_slide(slide)
    mpp = slide_mpp or reader.mpp
    down = HISTOQC_SLIDE_MPP / mpp
    thumb = thumbnail(reader, down)
    tissue = detect_tissue(thumb, HISTOQC_SLIDE_MPP)
    mask = histoqc_slide_blur(thumb, tissue)
    wall = time.perf_counter() - t0
    row = {
        "wall": wall,
        "peak_mb": peak_mb(),
        "blurred_fraction": float(mask.sum() / max(1, tissue.sum())),
    }
    if box is not None:
        row["box"] = box_scores(mask, reader.level_dimensions[0], box)
    queue.put(row)


def histoqc_reference(pictures: Path | None) -> str | None:
    """Where HistoQC's own blur mask lies on its TCGA thumbnail: glass, tissue rim, interior."""
    import cv2

    from histoblur.io.images import read_image, to_rgb, write_image
    from histoblur.io.report import outline
    from histoblur.wsi.tissue import detect_tissue

    folder = DATA / "histoqc_reference_output"
    if not folder.is_dir():
        return None
    thumb = to_rgb(read_image(folder / "TCGA-EJ-5509_thumb.png"))[..., :3]
    blurry = read_image(folder / "TCGA-EJ-5509_blurry.png") > 0
    tissue = detect_tissue(thumb, HISTOQC_THUMB_MPP)
    depth = cv2.distanceTransform(tissue.astype(np.uint8), cv2.DIST_L2, 5)
    rim = tissue & (depth <= RIM_PX)
    n = max(1, int(blurry.sum()))
    if pictures is not None:
        write_image(pictures / "wsi_qc_histoqc_reference.png", outline(thumb, blurry, (255, 0, 0)))
    return (
        f"HistoQC's own blur mask on TCGA-EJ-5509: {blurry.mean():.1%} of the thumbnail; "
        f"{(blurry & ~tissue).sum() / n:.0%} of it on glass or specks, "
        f"{(blurry & rim).sum() / n:.0%} within {RIM_PX} px of the tissue edge (a band "
        f"holding {rim.sum() / max(1, tissue.sum()):.0%} of the tissue), "
        f"{(blurry & tissue & ~rim).sum() / n:.0%} deeper inside the tissue."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=40000, help="side of the generated slide")
    parser.add_argument("--cache", type=Path, default=Path("runs/bench_wsi"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pictures", type=Path, default=None, help="save overlays here")
    args = parser.parse_args()
    slides = [(str(DATA / "wsi" / n), mpp, None) for n, mpp in REAL if (DATA / "wsi" / n).is_file()]
    if args.large:
        path, box = large_slide(args.large, args.cache)
        slides.append((str(path), None, box))
    results = []
    for slide, mpp, box in slides:
        ours = in_child(run_ours, slide, mpp, args.threads, box, args.pictures)
        base = in_child(run_histoqc, slide, mpp, box)
        results.append({"slide": Path(slide).name, "ours": ours, "histoqc": base})
        print(f"done {Path(slide).name}", flush=True)
    print(
        "\n| slide | level-0 px | histoblur qc s | windows | windows/s | decode s | network s "
        "| peak MB | HistoQC-style s | peak MB | time ratio | blurred (qc / HistoQC) |"
    )
    print("|" + "---|" * 12)
    for r in results:
        o, b = r["ours"], r["histoqc"]
        w, h = o["level0_size"]
        print(
            f"| {r['slide']} | {w} x {h} | {o['wall']:.1f} | {o['tiles']} | "
            f"{o['tiles'] / o['wall']:.1f} | "
            f"{o['read_seconds']:.1f} | {o['compute_seconds']:.1f} | {o['peak_mb']:.0f} | "
            f"{b['wall']:.1f} | {b['peak_mb']:.0f} | {o['wall'] / b['wall']:.1f}x | "
            f"{o['blurred_fraction']:.1%} / {b['blurred_fraction']:.1%} |"
        )
    for r in results:
        if "box" in r["ours"]:
            o, b = r["ours"]["box"], r["histoqc"]["box"]
            print(
                f"\n{r['slide']}: known blurred rectangle flagged {o[0]:.1%} (qc) vs {b[0]:.1%} "
                f"(HistoQC-style); flagged pixels outside it {o[1]:.1%} vs {b[1]:.1%}"
            )
    reference = histoqc_reference(args.pictures)
    if reference:
        print("\n" + reference)
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
