"""The QC repair loop on real defocus: QC -> repair -> QC again, against the in-focus truth.

    python benchmarks/repair.py [--out runs/bench/repair]

Each case is a real in-focus image with an ellipse of the same field's real out-of-focus scan
pasted in (pixel-aligned pairs: the FQPath H&E pair, smear plane +5 and urjc_s1 plane -6 into
their best-focus planes), so the truth under the blurred region is known. Each is QC'd as a
slide (``--slide-mpp 0.5``), its flagged regions repaired (:mod:`histoblur.inference.repair`),
and printed side by side: the share of the repaired regions QC flags before and after repair
(a region whose repair QC flags more is reverted and counts as before), and the
region's SSIM / PSNR against the in-focus truth before and after (with Richardson-Lucy over the
same region, disk PSF of 4 px, as the classical alternative), the seconds of the repair, and a
check that no pixel outside the flagged regions changed. Planes of unequal size are registered
to their overlap first.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from histoblur.inference.deblur import richardson_lucy
from histoblur.inference.qc import QCConfig, qc_slide
from histoblur.inference.repair import RepairConfig, Repairer, blurred_areas, repair_slide
from histoblur.inference.segment import Segmenter
from histoblur.io.images import from_float, read_image, read_mask, to_float, write_image
from histoblur.kernels import disk_kernel
from histoblur.metrics import psnr, ssim
from histoblur.synthesis.register import register_planes

DATA = Path("../shared/data")
RL_RADIUS = 4.0  # px: Richardson-Lucy's PSF, a disk (no calibration: the repair has none)
CASES = {
    "FQPath H&E": ("real_pairs/fqpath_left/sharp.png", "real_pairs/fqpath_left/blurred.png"),
    "smear +5": ("focal_stacks/smear/plane_+00.png", "focal_stacks/smear/plane_+05.png"),
    "urjc_s1 -6": ("focal_stacks/urjc_s1/plane_+00.png", "focal_stacks/urjc_s1/plane_-06.png"),
}


def composite(sharp: np.ndarray, blurred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``sharp`` with a centred ellipse (a third of each side) of ``blurred``, and the ellipse."""
    h, w = sharp.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (w // 2, h // 2), (w // 3, h // 3), 20, 0, 360, 1, -1)
    mask = mask.astype(bool)
    out = sharp.copy()
    out[mask] = blurred[mask]
    return out, mask


def rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/repair"))
    args = parser.parse_args()
    config = QCConfig(device="cpu", slide_mpp=0.5)
    segmenter = Segmenter.load(config.model, "cpu")
    repairer = Repairer.load(segmenter, RepairConfig(), "cpu")
    lines = [
        "| case | QC flags in the regions: before | after | region SSIM blurred | repaired | "
        "R-L | region PSNR blurred | repaired | R-L | regions kept / reverted | seconds | "
        "outside unchanged |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (sharp_path, blurred_path) in CASES.items():
        planes = [rgb(read_image(DATA / p)) for p in (sharp_path, blurred_path)]
        sharp, blurred = (
            register_planes(planes, 0) if planes[0].shape != planes[1].shape else planes
        )
        image, ellipse = composite(sharp, blurred)
        stem = name.replace(" ", "_").replace("&", "").replace("+", "p").replace("-", "m")
        slide = write_image(args.out / "slides" / f"{stem}.png", image)
        qc_slide(slide, args.out / "qc", config, segmenter)
        started = time.perf_counter()
        rows = repair_slide(slide, args.out / "qc" / slide.stem, repairer)
        seconds = time.perf_counter() - started
        repaired, flagged = image.copy(), np.zeros(image.shape[:2], bool)
        folder = args.out / "qc" / slide.stem / "repair"
        for row in rows:  # working resolution = the slide's (0.5 um/px): boxes are pixels
            x, y, w, h = (int(row[k]) for k in ("x", "y", "width", "height"))
            region = read_mask(folder / f"{row['region']}_mask.png")
            window = read_image(folder / f"{row['region']}.png")
            repaired[y : y + h, x : x + w][region] = window[region]
            flagged[y : y + h, x : x + w] |= region
        unchanged = bool((repaired[~flagged] == image[~flagged]).all())
        rl = image.copy()
        rl[flagged] = from_float(
            richardson_lucy(to_float(image), disk_kernel(RL_RADIUS)), np.uint8
        )[flagged]
        before, after = blurred_areas(rows)
        kept = sum(r["outcome"] == "repaired" for r in rows)
        area = max(sum(float(r["area_um2"]) for r in rows), 1e-9)
        ys, xs = np.nonzero(ellipse)
        box = np.s_[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        s = [ssim(sharp[box], x[box]) for x in (image, repaired, rl)]
        p = [psnr(sharp[ellipse], x[ellipse]) for x in (image, repaired, rl)]
        lines.append(
            f"| {name} | {before / area:.3f} | {after / area:.3f} | {s[0]:.3f} | {s[1]:.3f} | "
            f"{s[2]:.3f} | {p[0]:.2f} | {p[1]:.2f} | {p[2]:.2f} | {kept} / {len(rows) - kept} | "
            f"{seconds:.1f} | {unchanged} |"
        )
        print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
