"""How real is synthesized blur? Every statistical kind, the calibrated kind and learned generators.

    .venv/bin/python benchmarks/learned_synthesis.py [--gan default|PATH ...]
        [--unit-ddpm default|PATH ...] [--pictures DIR]

The reference is the real aligned FQPath pair, in the rows its learned generators never trained
on (the bottom half): the sharp side goes in, the real out-of-focus side is the target. For each
method (4 draws, seeds 0-3):

- PSNR, SSIM and the Focal Frequency Loss (FFL) of the synthesized image against the real blurred
  one (full-reference: is it the same blur?);
- Frechet distance (FD) between the blur-type classifier's penultimate features of 128 px
  crops of the synthesized and of the real blurred image (distribution: does it look like it?);
- the variance of the Laplacian per crop, median and inter-quartile range, beside the real
  blurred image's (sharpness distribution).

Then, on tiles from other sources (``sharp/``: 12 H&E and 4 IHC images, 512 px centre crops,
seed 0; tissue of the generators' sharp domain, not of the FQPath field their blurred domain
centres on), what each learned generator does to it beside a Gaussian: the share of
the tile's variance of the Laplacian kept (how much it blurs) and the shift of the mean colour
in grey levels (blur keeps a region's mean).

With ``--pictures DIR``: ``learned_synthesis_fqpath.png`` (sharp, real blurred, Gaussian,
calibrated, each GAN; not for the repository: FQPath is GPL-3) and ``learned_synthesis_he.png``
(a sharp H&E tile, then the calibrated kind and each GAN with seeds 0 and 1).

The calibrated kind is the best parametric PSF ``histoblur calibrate`` fits on the TOP half of
the same pair (so it has seen this microscope, as a GAN trained on the pair has).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from histoblur.calibration.config import CalibrationConfig
from histoblur.calibration.fit import calibrate
from histoblur.inference.classify import BlurClassifier
from histoblur.io.images import from_float, read_image, to_float, to_rgb, write_image
from histoblur.metrics.frechet import frechet_distance
from histoblur.metrics.full_reference import focal_frequency_loss, psnr, ssim
from histoblur.metrics.sharpness import variance_of_laplacian
from histoblur.synthesis.blur import apply_blur
from histoblur.synthesis.registry import BLUR_KINDS, make_spec, parse_method

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PAIR = DATA / "real_pairs" / "fqpath_left"
DRAWS = 4
CROP, STRIDE = 128, 64
UNIT_STEPS = 50  # UNIT-DDPM sampling steps (of 1000)


def crops(image: np.ndarray) -> np.ndarray:
    """All CROP px windows at STRIDE, as a (N, 3, CROP, CROP) float batch."""
    h, w = image.shape[:2]
    out = [
        image[y : y + CROP, x : x + CROP]
        for y in range(0, h - CROP + 1, STRIDE)
        for x in range(0, w - CROP + 1, STRIDE)
    ]
    return np.stack(out).transpose(0, 3, 1, 2).astype(np.float32)


def embed(net: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net.embed(torch.from_numpy(batch)).numpy()


def methods(
    gans: list[str],
    translators: list[str],
    starts: list[float],
    top_sharp: np.ndarray,
    top_blurred: np.ndarray,
):
    """(name, draw(seed) -> spec) for every method."""
    rows = []
    for name, kind in BLUR_KINDS.items():
        sampler = kind.sampler()
        rows.append((name, lambda seed, s=sampler: s.sample(np.random.default_rng([7, seed]))))
    result = calibrate(top_sharp, top_blurred, CalibrationConfig(max_size=256, freeform=False))
    fit = result.fit(result.best_family)
    spec = make_spec(fit.family, **fit.params)
    rows.append((f"calibrated ({fit.family})", lambda seed, s=spec: s))
    for gan in gans:
        kind, fixed = parse_method(f"gan:{gan}")
        sampler = kind.sampler.build(**fixed)
        rows.append((f"GAN ({gan})", lambda seed, s=sampler: s.sample(np.random.default_rng(seed))))
    for model in translators:
        kind, fixed = parse_method(f"unit-ddpm:{model}")
        for start in starts:
            sampler = kind.sampler.build(**fixed, steps=UNIT_STEPS, start=start)
            label = f"UNIT-DDPM ({model}, start {start})"
            rows.append((label, lambda seed, s=sampler: s.sample(np.random.default_rng(seed))))
    return rows


def foreign_tissue(gans: list[str]) -> None:
    """Laplacian variance kept and mean colour shift on sharp tiles of other sources."""
    sharp = DATA / "sharp"
    files = sorted((sharp / "he").glob("*"))[:12] + sorted((sharp / "ihc").glob("*"))[:4]
    tiles = []
    for f in files:
        image = to_rgb(read_image(f))
        h, w = image.shape[:2]
        s = min(h, w, 512)
        tiles.append(image[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s])
    specs = [("gaussian (sigma 3)", make_spec("gaussian", sigma=3.0))]
    specs += [(f"GAN ({gan})", make_spec("gan", model=gan, seed=0)) for gan in gans]
    print(f"\n{len(tiles)} sharp tiles of other sources:\n")
    print("| method | Laplacian variance kept | mean colour shift, grey levels (max) |")
    print("|---|---|---|")
    for name, spec in specs:
        kept, shift = [], []
        for tile in tiles:
            a, b = to_float(tile), to_float(apply_blur(tile, spec))
            kept.append(variance_of_laplacian(b) / max(variance_of_laplacian(a), 1e-12))
            shift.append(float(np.abs(a.mean((0, 1)) - b.mean((0, 1))).max() * 255))
        print(f"| {name} | {np.mean(kept):.2f} | {np.mean(shift):.1f} ({np.max(shift):.1f}) |")


def strip(images: list[np.ndarray], side: int = 256) -> np.ndarray:
    """The top-left ``side`` px of each float image, side by side, as uint8."""
    return from_float(np.hstack([im[:side, :side] for im in images]), np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gan", action="append", default=[], help="default or a checkpoint")
    parser.add_argument("--unit-ddpm", action="append", default=[], help="default or a checkpoint")
    parser.add_argument(
        "--unit-start", action="append", type=float, default=None,
        help="UNIT-DDPM start t_s / T (repeatable; default 1: from pure noise)",
    )  # fmt: skip
    parser.add_argument("--pictures", type=Path, default=None)
    args = parser.parse_args()
    sharp, blurred = read_image(PAIR / "sharp.png"), read_image(PAIR / "blurred.png")
    h = sharp.shape[0] // 2
    test_sharp, test_blurred = sharp[h:], blurred[h:]
    real = to_float(test_blurred)
    net = BlurClassifier.load("default").model
    real_features = embed(net, crops(real))
    real_lap = [variance_of_laplacian(c.transpose(1, 2, 0)) for c in crops(real)]
    print(
        f"real blurred: variance of Laplacian median {np.median(real_lap):.5f} "
        f"(IQR {np.percentile(real_lap, 25):.5f}-{np.percentile(real_lap, 75):.5f})"
    )
    print("\n| method | PSNR | SSIM | FFL (x1e3) | FD | var. of Laplacian median (IQR) |")
    print("|---|---|---|---|---|---|")
    rows = [("sharp (no blur)", lambda seed: None)]
    rows += methods(args.gan, args.unit_ddpm, args.unit_start or [1.0], sharp[:h], blurred[:h])
    shown = [to_float(test_sharp), real]
    for name, draw in rows:
        scores, features, laps = [], [], []
        for seed in range(DRAWS):
            spec = draw(seed)
            made = test_sharp if spec is None else apply_blur(test_sharp, spec)
            x = to_float(made)
            scores.append((psnr(real, x), ssim(real, x), focal_frequency_loss(real, x) * 1e3))
            batch = crops(x)
            features.append(embed(net, batch))
            laps += [variance_of_laplacian(c.transpose(1, 2, 0)) for c in batch]
            if seed == 0 and (name.startswith(("calibrated", "GAN", "UNIT")) or name == "gaussian"):
                shown.append(x)
        m = np.mean(scores, axis=0)
        fd = frechet_distance(np.concatenate(features), real_features)
        q = np.percentile(laps, [25, 50, 75])
        print(
            f"| {name} | {m[0]:.2f} | {m[1]:.3f} | {m[2]:.3f} | {fd:.2f} | "
            f"{q[1]:.5f} ({q[0]:.5f}-{q[2]:.5f}) |"
        )
    foreign_tissue(args.gan)
    if args.pictures is not None:
        args.pictures.mkdir(parents=True, exist_ok=True)
        write_image(args.pictures / "learned_synthesis_fqpath.png", strip(shown))
        he = read_image(sorted((DATA / "sharp" / "he").glob("*.png"))[0])[:256, :256, :3]
        picks = [spec for name, draw in rows[1:] if name.startswith(("calibrated", "GAN", "UNIT"))
                 for spec in (draw(0), draw(1))]  # fmt: skip
        write_image(
            args.pictures / "learned_synthesis_he.png",
            strip([to_float(he)] + [to_float(apply_blur(he, spec)) for spec in picks]),
        )


if __name__ == "__main__":
    main()
