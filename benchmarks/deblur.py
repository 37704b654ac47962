"""Deblurring, side by side: DL_defocus / DL_motion (DBMID) against Richardson-Lucy.

    .venv/bin/python benchmarks/deblur.py [--pictures docs/images] [--parts speed,real,motion]

1. Speed: one 1920 x 1920 RGB image on this machine's CPU: DL_defocus (fp32 and bf16),
   DL_motion, the mixed chain, and Richardson-Lucy (30 iterations, 15 px PSF); median of 3
   runs each, ratios.
2. Real defocus, on the halves the networks never trained on (rows below the middle): the
   FQPath pair and every focal-stack plane against its in-focus plane (smear: planes -9..+9;
   unstained cells: -24.65..+24.55 um; urjc_s1 stained section: -10..+6, planes -5 and +5
   held out whole by configs/deblur/defocus-urjc.yaml). SSIM / PSNR of the blurred image, of
   DL_defocus and of Richardson-Lucy with the PSF that ``histoblur calibrate``'s fit finds on
   the training halves;
   with ``--pictures``, SSIM against the focal distance as a curve (DBMID's Fig. 4);
   ``--candidate CHECKPOINT``: another DL_defocus scored in the same run; the SSIM gain per
   stack against the +0.08 target.
3. Motion: held-out sharp images blurred horizontally and vertically by 5..40 px: SSIM / PSNR
   and the FWHM of 60 small dark objects along the motion, for the blurred image, DL_motion and
   Richardson-Lucy with the true kernel.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import cv2
import numpy as np

from histoblur.calibration.config import CalibrationConfig
from histoblur.calibration.fit import calibrate
from histoblur.inference.deblur import Deblurrer, Family, richardson_lucy
from histoblur.io.images import from_float, read_image, to_float, to_rgb, write_image
from histoblur.kernels import motion_kernel
from histoblur.metrics.full_reference import psnr, ssim
from histoblur.metrics.fwhm import dark_objects, mean_fwhm
from histoblur.synthesis.blur import apply_blur
from histoblur.synthesis.registry import make_spec

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RL_ITERATIONS = 30
SPEED_RUNS = 3  # timed runs per row, after the fp32 and bf16 networks have run once
FAMILIES: tuple[Family, ...] = ("defocus", "motion")


def rgb_float(image: np.ndarray) -> np.ndarray:
    return to_float(to_rgb(image))


def to_uint8(x: np.ndarray) -> np.ndarray:
    return from_float(x, np.uint8)


def panel(*images: np.ndarray, side: int = 256) -> np.ndarray:
    """The same centred ``side`` px window of each image, side by side (uint8)."""
    h, w = images[0].shape[:2]
    s = min(side, h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return to_uint8(np.hstack([im[y : y + s, x : x + s] for im in images]))


def scores(reference: np.ndarray, image: np.ndarray) -> tuple[float, float]:
    return float(ssim(reference, image)), float(psnr(reference, image))


def speed(nets: dict[str, Deblurrer]) -> None:
    rng = np.random.default_rng(0)
    image = rgb_float(read_image(DATA / "sharp" / "he" / "tiatoolbox_target_image.png"))
    big = cv2.resize(image, (1920, 1920), interpolation=cv2.INTER_LINEAR)
    big = np.clip(big + rng.normal(0, 0.01, big.shape).astype(np.float32), 0, 1)
    defocus, moving = nets["defocus"].run_float, nets["motion"].run_float
    fast = Deblurrer(nets["defocus"].model, nets["defocus"].config, precision="bf16")
    reference = defocus(big)
    diff = np.abs(fast.run_float(big) - reference).max() * 255
    psf = motion_kernel(15, 0)
    rows = []
    for name, run in (
        ("DL_defocus", lambda: defocus(big)),
        (f"DL_defocus, --precision bf16 (max difference {diff:.1f} grey levels)",
         lambda: fast.run_float(big)),
        ("DL_motion", lambda: moving(big)),
        ("mixed (DL_motion then DL_defocus)", lambda: defocus(moving(big))),
        (f"Richardson-Lucy ({RL_ITERATIONS} it., 15 px PSF)",
         lambda: richardson_lucy(big, psf, RL_ITERATIONS)),
    ):  # fmt: skip
        seconds = []
        for _ in range(SPEED_RUNS):
            t0 = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - t0)
        rows.append((name, float(np.median(seconds))))
    rl = rows[-1][1]
    print(f"\n| 1920 x 1920 RGB | seconds (median of {SPEED_RUNS}) | vs Richardson-Lucy |")
    print("|---|---|---|")
    for name, s in rows:
        print(f"| {name} | {s:.1f} | {s / rl:.2f}x |")


def calibrated_psf(sharp: np.ndarray, blurred: np.ndarray) -> np.ndarray:
    """Best parametric PSF of ``histoblur calibrate`` on a pair (centre 256 px)."""
    config = CalibrationConfig(max_size=256, freeform=False)
    result = calibrate(to_uint8(sharp), to_uint8(blurred), config)
    fit = next(f for f in result.fits if f.family != "identity")
    return np.asarray(fit.kernel, np.float32)


URJC_HELD_OUT = (-5, 5)  # urjc_s1 planes configs/deblur/defocus-urjc.yaml never trains on


def real_defocus(net: Deblurrer, pictures: Path | None, candidate: Deblurrer | None = None) -> None:
    cases: list[tuple[str, str, Path, Path]] = [
        ("fqpath", "pair", DATA / "real_pairs/fqpath_left/sharp.png",
         DATA / "real_pairs/fqpath_left/blurred.png"),
    ]  # fmt: skip
    smear = DATA / "focal_stacks/smear"
    for z in [z for z in range(-9, 10) if z]:
        cases.append(("smear", f"{z:+d}", smear / "plane_+00.png", smear / f"plane_{z:+03d}.png"))
    seph = DATA / "focal_stacks/sephace_set1"
    for path in sorted(seph.glob("brightfield_*_dz*.png")):
        dz = float(re.search(r"dz([+-][\d.]+)um", path.name).group(1))
        if dz != 0.0:
            cases.append(
                ("sephace", f"{dz:+.2f} um", seph / "brightfield_fine_dz+00.00um.png", path)
            )
    urjc = DATA / "focal_stacks/urjc_s1"
    for z in [z for z in range(-10, 7) if z]:
        held = " (held out)" if z in URJC_HELD_OUT else ""
        cases.append(
            ("urjc", f"{z:+d}{held}", urjc / "plane_+00.png", urjc / f"plane_{z:+03d}.png")
        )
    extra = " SSIM candidate | PSNR candidate |" if candidate else ""
    print("\n| stack | defocus | SSIM blurred | SSIM DL_defocus | SSIM R-L | PSNR blurred | "
          f"PSNR DL_defocus | PSNR R-L |{extra}\n|---|---|---|---|---|---|---|---|"
          + "---|---|" * bool(candidate))  # fmt: skip
    gains = []
    for stack, label, sharp_path, blurred_path in cases:
        sharp, blurred = rgb_float(read_image(sharp_path)), rgb_float(read_image(blurred_path))
        h, w = min(sharp.shape[0], blurred.shape[0]), min(sharp.shape[1], blurred.shape[1])
        sharp, blurred = sharp[:h, :w], blurred[:h, :w]
        top, bottom = slice(0, h // 2), slice(h // 2, h)
        psf = calibrated_psf(sharp[top], blurred[top])
        ref, test = sharp[bottom], blurred[bottom]
        restored = net.run_float(test)
        rl = richardson_lucy(test, psf, RL_ITERATIONS)
        s0, p0 = scores(ref, test)
        s1, p1 = scores(ref, restored)
        s2, p2 = scores(ref, rl)
        s3, p3 = scores(ref, candidate.run_float(test)) if candidate else (np.nan, np.nan)
        gains.append((s0, s1, s2, p0, p1, p2, s3, p3))
        cells = f"{s0:.3f} | {s1:.3f} | {s2:.3f} | {p0:.2f} | {p1:.2f} | {p2:.2f}"
        cells += f" | {s3:.3f} | {p3:.2f}" if candidate else ""
        print(f"| {stack} | {label} | {cells} |")
        if pictures is not None and (stack == "fqpath" or label in ("+5", "+9.75 um")):
            write_image(pictures / f"deblur_{stack}.png", panel(test, restored, rl, ref))
    g = np.array(gains)
    if pictures is not None:
        curve = [i for i, c in enumerate(cases) if c[0] != "urjc"]
        focal_curve([cases[i][:2] for i in curve], g[curve], pictures / "deblur_focal_curve.png")
    print("\n| stack | pairs | SSIM gain DL_defocus | SSIM gain R-L | SSIM gain candidate | "
          "target +0.08 and above R-L |\n|---|---|---|---|---|---|")  # fmt: skip
    for stack in dict.fromkeys(c[0] for c in cases):
        rows = g[[i for i, c in enumerate(cases) if c[0] == stack]]
        gain = rows[:, [1, 2, 6]].mean(axis=0) - rows[:, 0].mean()
        best = np.nanmax(gain[[0, 2]]) if candidate else gain[0]
        met = "met" if best >= 0.08 and best > gain[1] else "not met"
        print(
            f"| {stack} | {len(rows)} | {gain[0]:+.3f} | {gain[1]:+.3f} | {gain[2]:+.3f} | {met} |"
        )
    print(f"\nmean over {len(g)} real pairs: SSIM {g[:, 0].mean():.3f} blurred -> "
          f"{g[:, 1].mean():.3f} DL_defocus, {g[:, 2].mean():.3f} Richardson-Lucy; PSNR "
          f"{g[:, 3].mean():.2f} -> {g[:, 4].mean():.2f} dB, {g[:, 5].mean():.2f} dB")  # fmt: skip


def focal_curve(cases: list[tuple[str, str]], gains: np.ndarray, out: Path) -> None:
    """SSIM of blurred / DL_defocus / Richardson-Lucy against the focal distance, per stack."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stacks = [("smear", "smear: focal plane"), ("sephace", "unstained cells: dz (um)")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, (stack, xlabel) in zip(axes, stacks, strict=True):
        pairs = zip(cases, gains, strict=True)
        rows = [(float(label.split()[0]), g) for (s, label), g in pairs if s == stack]
        rows.sort(key=lambda r: r[0])
        x = [r[0] for r in rows]
        for column, name, style in ((0, "blurred", "k--"), (1, "DL_defocus", "C0-o"),
                                    (2, "Richardson-Lucy", "C3-s")):  # fmt: skip
            ax.plot(x, [r[1][column] for r in rows], style, label=name, markersize=4)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("SSIM to the in-focus plane")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def motion(net: Deblurrer, pictures: Path | None) -> None:
    sources = sorted((DATA / "sharp" / "he").glob("*.png"))[::6]
    print("\n| motion | SSIM blurred | SSIM DL_motion | SSIM R-L | PSNR blurred | PSNR DL_motion "
          "| PSNR R-L | FWHM sharp | FWHM blurred | FWHM DL_motion | FWHM R-L |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    for axis, angle, name in ((1, 0.0, "horizontal"), (0, 90.0, "vertical")):
        for length in range(5, 45, 5):
            rows = []
            for path in sources:
                sharp_u8 = to_rgb(read_image(path))[..., :3]
                if min(sharp_u8.shape[:2]) < 128:
                    continue
                blurred_u8 = apply_blur(sharp_u8, make_spec("motion", length=length, angle=angle))
                sharp, blurred = rgb_float(sharp_u8), rgb_float(blurred_u8)
                restored = net.run_float(blurred)
                rl = richardson_lucy(blurred, motion_kernel(length, angle), RL_ITERATIONS)
                centres = dark_objects(sharp_u8, count=60)
                widths = [
                    mean_fwhm(to_uint8(x), centres, axis) for x in (sharp, blurred, restored, rl)
                ]
                rows.append(
                    [*scores(sharp, blurred), *scores(sharp, restored), *scores(sharp, rl), *widths]
                )
                if pictures is not None and length == 20 and path == sources[0]:
                    picture = panel(blurred, restored, rl, sharp)
                    write_image(pictures / f"deblur_motion_{name}.png", picture)
            m = np.nanmean(np.array(rows), axis=0)
            quality = f"{m[0]:.3f} | {m[2]:.3f} | {m[4]:.3f} | {m[1]:.2f} | {m[3]:.2f} | {m[5]:.2f}"
            widths = f"{m[6]:.1f} | {m[7]:.1f} | {m[8]:.1f} | {m[9]:.1f}"
            print(f"| {name} {length} px | {quality} | {widths} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pictures", type=Path, default=None)
    parser.add_argument(
        "--parts", default="speed,real,motion", help="comma-separated: speed, real, motion"
    )
    parser.add_argument(
        "--model", default="default", help="default or a folder with defocus/, motion/"
    )
    parser.add_argument(
        "--candidate", type=Path, help="a DL_defocus checkpoint scored beside it (real part)"
    )
    args = parser.parse_args()
    if args.pictures:
        args.pictures.mkdir(parents=True, exist_ok=True)
    nets = {
        f: Deblurrer.load(f) if args.model == "default" else Deblurrer.load(f, Path(args.model) / f)
        for f in FAMILIES
    }
    parts = set(args.parts.split(","))
    if "speed" in parts:
        speed(nets)
    if "real" in parts:
        candidate = Deblurrer.load("defocus", args.candidate) if args.candidate else None
        real_defocus(nets["defocus"], args.pictures, candidate)
    if "motion" in parts:
        motion(nets["motion"], args.pictures)


if __name__ == "__main__":
    main()
