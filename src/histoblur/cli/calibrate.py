"""``histoblur calibrate``: fit every blur family to a real (sharp, blurred) pair."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from rich import box
from rich.console import Console
from rich.table import Table

from histoblur.calibration import (
    FREEFORM,
    IDENTITY,
    CalibrationConfig,
    CalibrationResult,
    build_config,
    calibrate,
    kernel_montage,
)
from histoblur.cli.common import (
    Option,
    add_config_options,
    add_file_options,
    add_image_pair,
    log,
    progress_counter,
)
from histoblur.errors import ParameterError
from histoblur.io.atomic import atomic_dir, atomic_path, ensure_writable_dir, write_text_atomic
from histoblur.io.images import read_image, write_image
from histoblur.io.paths import check_output_folder

DEFAULTS = CalibrationConfig()  # the parser's defaults are the config's


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``calibrate`` sub-command."""
    p = sub.add_parser(
        "calibrate",
        help="fit every blur family to a real (sharp, blurred) pair",
        description=(
            "Fit each spatially invariant blur family (and a free-form non-negative kernel) to a "
            "pair of images of the same field in and out of focus (pixel-aligned, or aligned "
            "with --register / --scale-search). Every model includes a "
            "per-channel gain and offset fitted by least squares; a border of half the largest "
            "kernel is left out of the scores. Prints a table sorted by residual PSNR."
        ),
    )
    add_image_pair(p, "in-focus image", "out-of-focus image of the field")
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="write calibration.json, calibration.csv, kernels.png and kernels.npz here",
    )
    add_file_options(p, "an existing --out folder (never one that holds --sharp or --blurred)")
    p.add_argument(
        "--crop",
        action="store_true",
        help="centre-crop two images of different sizes to their common size",
    )
    p.add_argument(
        "--register",
        action="store_true",
        help="remove the integer shift between the images (phase correlation, then refined by "
        "the fit of a Gaussian PSF); implies --crop",
    )
    add_config_options(
        p,
        DEFAULTS,
        Option(
            "--register-search",
            int,
            "with --register: also try integer shifts up to PX px around the phase-correlation "
            "estimate and keep the one a fitted Gaussian PSF explains best (default {}; 0 = off)",
            "PX",
        ),
        Option(
            "--scale",
            float,
            "magnification of the blurred image relative to the sharp one; the blurred image "
            "is resampled by 1/S first (default 1)",
            "S",
        ),
        Option(
            "--scale-search",
            float,
            "estimate the magnification within S*(1 +- R) by fit quality (focal-stack planes "
            "differ by a few percent; e.g. 0.05); implies --register",
            "R",
        ),
        Option(
            "--max-size",
            int,
            "fit on a centre crop of at most PX x PX pixels (default {}; 0 = whole image)",
            "PX",
        ),
    )
    p.add_argument(
        "--families",
        default=",".join(DEFAULTS.families),
        help=f"comma-separated blur kinds to fit (default {','.join(DEFAULTS.families)})",
    )
    p.add_argument("--no-freeform", action="store_true", help="skip the free-form kernel")
    add_config_options(
        p,
        DEFAULTS,
        Option("--freeform-size", int, "free-form kernel side (odd)", "PX"),
        Option("--freeform-steps", int, "free-form Adam steps", "N"),
        Option(
            "--max-radius",
            float,
            "largest defocus radius searched (Gaussian sigma up to half of it; default {:g})",
            "PX",
        ),
        Option("--max-length", float, "largest motion length searched (default {:g})", "PX"),
    )
    p.add_argument(
        "--channels",
        choices=("all", "luma"),
        default=DEFAULTS.channels,
        help="search on every colour channel (default) or on the luma only (faster); gains, "
        "offsets and scores are always per channel",
    )
    p.set_defaults(func=run)


def result_table(result: CalibrationResult) -> Table:
    """Rich table: one row per family, best residual PSNR first."""
    base = result.fit(IDENTITY).psnr
    h, w = result.pair_shape
    table = Table(
        title=f"PSF calibration on {h} x {w} px (border {result.border} px left out)",
        caption="gain, offset: per-channel intensity map fitted with every model; "
        "dPSNR: gain over the identity (no blur); green: best family",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("family", no_wrap=True)
    table.add_column("parameters", ratio=1, overflow="fold")
    table.add_column("gain, offset", no_wrap=True)
    for name in ("PSNR dB", "dPSNR", "SSIM"):
        table.add_column(name, justify="right", no_wrap=True)
    best = result.best_family
    for f in result.fits:
        params = f.describe() + (f" [at bound: {', '.join(f.at_bound)}]" if f.at_bound else "")
        style = "bold green" if f.family == best else ("dim" if f.family == IDENTITY else "")
        table.add_row(
            f.family,
            params,
            "\n".join(f"{g:.3f} {o:+.3f}" for g, o in zip(f.gain, f.offset, strict=True)),
            f"{f.psnr:.2f}",
            f"{f.psnr - base:+.2f}",
            f"{f.ssim:.4f}",
            style=style,
        )
    return table


def write_outputs(
    out: Path,
    result: CalibrationResult,
    inputs: dict[str, str],
    overwrite: bool,
    sources: tuple[Path, ...] = (),
) -> None:
    """Write calibration.json, calibration.csv, kernels.png and kernels.npz into ``out``."""
    with atomic_dir(out, overwrite, sources) as tmp:
        write_text_atomic(
            tmp / "calibration.json", json.dumps(result.as_dict(inputs), indent=2) + "\n"
        )
        write_text_atomic(tmp / "calibration.csv", result.to_csv())
        write_image(tmp / "kernels.png", kernel_montage(result.fits))
        with atomic_path(tmp / "kernels.npz") as npz, npz.open("wb") as fh:
            np.savez_compressed(fh, **{f.family: f.kernel for f in result.fits})


def run(args: argparse.Namespace) -> int:
    """Read the pair, calibrate, print the table and write the outputs."""
    if args.max_size < 0:
        raise ParameterError(f"--max-size must be 0 (whole image) or more, got {args.max_size}.")
    families = tuple(f.strip() for f in args.families.split(",") if f.strip())
    if not families:
        raise ParameterError("--families needs at least one blur kind, e.g. gaussian,lens.")
    config = build_config(
        families=families,
        freeform=not args.no_freeform,
        freeform_size=args.freeform_size,
        freeform_steps=args.freeform_steps,
        max_radius=args.max_radius,
        max_length=args.max_length,
        max_size=args.max_size or None,
        crop=args.crop or args.register,
        registration=args.register or args.scale_search > 0,
        register_search=args.register_search,
        scale=args.scale,
        scale_search=args.scale_search,
        channels=args.channels,
    )
    out = args.out
    if out is not None:  # check before the work, which takes minutes
        check_output_folder(out, (args.sharp, args.blurred), args.overwrite)
        ensure_writable_dir(out.parent)
    sharp, blurred = read_image(args.sharp), read_image(args.blurred)
    steps = len(families) + int(config.freeform)
    with progress_counter("fitting blur families", steps) as advance:
        result = calibrate(sharp, blurred, config, progress=lambda _: advance())
    if config.scale_search > 0:
        log.info(f"estimated magnification of the blurred image: {result.scale:.4f}")
    for note in result.notes:
        log.info(note)
    Console().print(result_table(result))
    best = result.fit(result.best_family)
    line = (
        f"Best family: {best.family} ({best.describe()}), {best.psnr:.2f} dB, "
        f"{best.psnr - result.fit(IDENTITY).psnr:+.2f} dB over no blur"
    )
    if config.freeform:
        free = result.fit(FREEFORM)
        line += f"; free-form {config.freeform_size}x{config.freeform_size}: {free.psnr:.2f} dB"
    log.info(line + f" ({result.seconds:.1f} s).")
    if args.out is not None:
        inputs = {"sharp": str(args.sharp), "blurred": str(args.blurred)}
        write_outputs(args.out, result, inputs, args.overwrite, (args.sharp, args.blurred))
        log.info(f"Wrote {args.out}/calibration.json, calibration.csv, kernels.png.")
    return 0
