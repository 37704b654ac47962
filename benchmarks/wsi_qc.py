"""Whole-slide blur QC (with and without the focus screen) against a HistoQC-style module.

    .venv/bin/python benchmarks/wsi_qc.py [--large 100000x80000] [--cache runs/bench_wsi]
                                         [--threads 2] [--pictures docs/images]

For each slide (the real slides in ../shared/data/wsi that carry tissue, and a generated 40x
JPEG pyramidal slide of ``--large`` px with a known blurred rectangle, see :func:`large_slide`),
runs in a fresh child process each:

- ``histoblur qc`` (shipped model, 0.5 um/px working resolution, tissue windows only, reader
  threads decoding ahead): seconds per slide, windows and windows per second, the split between
  decoding (summed over reader threads) and the network, and peak resident memory;
- the same with ``--screen``: also the share of windows the screen settled and its time, the
  speed-up and the Dice between the two blur masks;
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
import os
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


# the generated slide's working-resolution masks are 50,000 x 40,000 px
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(1 << 40))


def read_mask(path: Path) -> np.ndarray:
    """A blur_mask.png of any size as bool (OpenCV's pixel limit lifted above)."""
    import cv2

    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 0


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parse_size(text: str) -> tuple[int, int]:
    """``100000x80000`` -> (100000, 80000); ``0`` -> no generated slide."""
    if text == "0":
        return (0, 0)
    w, _, h = text.partition("x")
    return int(w), int(h or w)


def real_texture() -> np.ndarray | None:
    """Real H&E at 0.25 um/px: the tissue-dense strip of CMU-1's 20x region enlarged 2x.

    The strip (x 1000-1700, y 300-2967 of the 0.499 um/px level 0) is ~85 % tissue. The working
    resolution (0.5 um/px) shrinks it back by 2, so the network sees the real tissue at about
    its scanned resolution.
    """
    import cv2

    from histoblur.wsi.readers import open_slide

    path = DATA / "wsi" / "cmu-1-small-region.svs"
    if not path.is_file():
        return None
    reader = open_slide(path)
    w, h = reader.level_dimensions[0]
    x0, y0, x1, y1 = 1000, 300, min(w, 1700), h
    image = reader.read_region(x0, y0, 0, (x1 - x0, y1 - y0))
    reader.close()
    return cv2.resize(image, (2 * (x1 - x0), 2 * (y1 - y0)), interpolation=cv2.INTER_CUBIC)


def large_slide(size: tuple[int, int], cache: Path) -> tuple[Path, tuple[int, int, int, int]]:
    """The generated 40x slide (written once into ``cache``) and its blurred box.

    A JPEG (quality 85) pyramidal TIFF at 0.25 um/px with levels shrinking 4x, as an Aperio 40x
    scan; tissue blobs cover ~35 % of it, textured with the real CMU-1 H&E (see
    :func:`real_texture`; 125 mm2 of tissue found on 100,000 x 80,000 px); the tissue-richest
    quarter-size rectangle is blurred with a lens kernel of radius 8 px (2 um, 4 px at the
    working resolution).
    """
    from histoblur.synthesis.slide import make_synthetic_slide
    from histoblur.wsi.pyramid import write_pyramidal_tiff

    slide = make_synthetic_slide(size, real_texture(), 8.0, seed=1, tissue_share=0.35)
    path = cache / f"synthetic_{size[0]}x{size[1]}_cmu1.tif"
    if not path.is_file():
        t0 = time.perf_counter()
        cache.mkdir(parents=True, exist_ok=True)
        write_pyramidal_tiff(path, slide.source, slide.size, mpp=0.25, factor=4, compression="jpeg")
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
    slide: str,
    slide_mpp: float | None,
    threads: int,
    box,
    pictures: Path | None,
    screen: bool,
    keep: Path,
    queue: mp.Queue,
) -> None:
    """``qc_slide`` timed in this (fresh) process; its blur mask is copied into ``keep``."""
    import shutil

    import torch

    from histoblur.inference.qc import QCConfig, qc_slide
    from histoblur.inference.segment import Segmenter

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    config = QCConfig(slide_mpp=slide_mpp, screen=screen)
    segmenter = Segmenter.load("default", precision=config.precision)
    stem = Path(slide).stem
    with tempfile.TemporaryDirectory() as tmp:
        summary = qc_slide(slide, Path(tmp), config, segmenter)
        wall = time.perf_counter() - t0
        row = {**summary, "wall": wall, "peak_mb": peak_mb()}
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(tmp) / stem / "blur_mask.png", keep / f"{stem}_screen{int(screen)}.png")
        if box is not None:
            mask = read_mask(Path(tmp) / stem / "blur_mask.png")
            row["box"] = box_scores(mask, tuple(summary["level0_size"]), box)
        if pictures is not None and not screen:
            save_picture(Path(tmp) / stem / "overlay.png", pictures, stem)
    queue.put(row)


def agreement(keep: Path, stem: str) -> tuple[float, float]:
    """Dice between the screened and the unscreened blur masks, and their blurred shares."""
    full = read_mask(keep / f"{stem}_screen0.png")
    fast = read_mask(keep / f"{stem}_screen1.png")
    inter = int((full & fast).sum())
    total = int(full.sum() + fast.sum())
    return (2 * inter / total if total else 1.0), float(fast.sum() - full.sum()) / full.size


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
    parser.add_argument(
        "--large",
        type=parse_size,
        default=(100000, 80000),
        help="WIDTHxHEIGHT of the generated slide (0: none)",
    )
    parser.add_argument("--cache", type=Path, default=Path("runs/bench_wsi"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pictures", type=Path, default=None, help="save overlays here")
    args = parser.parse_args()
    slides = [(str(DATA / "wsi" / n), mpp, None) for n, mpp in REAL if (DATA / "wsi" / n).is_file()]
    if args.large[0]:
        path, box = large_slide(args.large, args.cache)
        slides.append((str(path), None, box))
    keep = args.cache / "masks"
    results = []
    for slide, mpp, box in slides:
        full = in_child(run_ours, slide, mpp, args.threads, box, args.pictures, False, keep)
        fast = in_child(run_ours, slide, mpp, args.threads, box, None, True, keep)
        base = in_child(run_histoqc, slide, mpp, box)
        dice, shift = agreement(keep, Path(slide).stem)
        results.append(
            {"slide": Path(slide).name, "ours": full, "screened": fast, "histoqc": base,
             "dice": dice, "blurred_shift": shift}
        )  # fmt: skip
        print(f"done {Path(slide).name}", flush=True)
    print(
        "\n| slide | level-0 px | qc s | windows | windows/s | decode s | network s | peak MB "
        "| qc --screen s | settled by screen | screen s | decode s | network s | peak MB "
        "| speed-up | Dice vs full | HistoQC-style s | time ratio (full / HistoQC) "
        "| blurred (qc / screen / HistoQC) |"
    )
    print("|" + "---|" * 19)
    for r in results:
        o, f, b = r["ours"], r["screened"], r["histoqc"]
        w, h = o["level0_size"]
        print(
            f"| {r['slide']} | {w} x {h} | {o['wall']:.1f} | {o['tiles']} | "
            f"{o['tiles'] / o['wall']:.1f} | {o['read_seconds']:.1f} | "
            f"{o['compute_seconds']:.1f} | {o['peak_mb']:.0f} | {f['wall']:.1f} | "
            f"{f['screened_sharp'] / max(1, f['tiles']):.0%} | {f['screen_seconds']:.1f} | "
            f"{f['read_seconds']:.1f} | {f['compute_seconds']:.1f} | {f['peak_mb']:.0f} | "
            f"{o['wall'] / f['wall']:.2f}x | {r['dice']:.3f} | {b['wall']:.1f} | "
            f"{o['wall'] / b['wall']:.1f}x | {o['blurred_fraction']:.1%} / "
            f"{f['blurred_fraction']:.1%} / {b['blurred_fraction']:.1%} |"
        )
    for r in results:
        if "box" in r["ours"]:
            o, f, b = r["ours"]["box"], r["screened"]["box"], r["histoqc"]["box"]
            print(
                f"\n{r['slide']}: known blurred rectangle flagged {o[0]:.1%} (qc) / {f[0]:.1%} "
                f"(qc --screen) / {b[0]:.1%} (HistoQC-style); flagged pixels outside it "
                f"{o[1]:.1%} / {f[1]:.1%} / {b[1]:.1%}"
            )
    reference = histoqc_reference(args.pictures)
    if reference:
        print("\n" + reference)
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
