"""``histoblur bench``: build benchmark sets (``bench real-pairs``: real optical blur)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import ValidationError

from histoblur.cli.common import (
    add_max_pixels,
    add_overwrite,
    add_seed,
    log,
    option_error,
    progress_bar,
)
from histoblur.synthesis.real_pairs import SHARPNESS_SCALES, RealPairConfig, build_real_pairs

PAIRS = RealPairConfig()  # the parser's defaults


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``bench`` and its sub-commands (``real-pairs``)."""
    bench = sub.add_parser("bench", help="build benchmark sets with pixel ground truth")
    verbs = bench.add_subparsers(dest="bench_command", metavar="WHAT", required=True)

    pairs = verbs.add_parser(
        "real-pairs",
        help="paste real out-of-focus pixels into an aligned in-focus image under random masks",
        description=(
            "Build an (image, mask) benchmark of REAL optical blur from two images of one field, "
            "one in focus and one out of focus (a re-scan or two focal planes). The images are "
            "centre-cropped to a common size, aligned by phase correlation checked by normalised "
            "correlation (whole-pixel shift, applied by cropping: no resampling), and each "
            "sample is a tile showing the blurred image inside random polygons and the sharp "
            "image outside. Writes images/, masks/ (0/255), "
            "manifest.jsonl and summary.json."
        ),
    )
    pairs.add_argument("--sharp", required=True, type=Path, help="the in-focus image")
    pairs.add_argument("--blurred", required=True, type=Path, help="the out-of-focus image")
    pairs.add_argument("--out", required=True, type=Path, help="output folder (created)")
    pairs.add_argument(
        "--n", type=int, default=PAIRS.n, help=f"number of samples (default {PAIRS.n})"
    )
    pairs.add_argument(
        "--tile", type=int, default=PAIRS.tile, help=f"tile side in px (default {PAIRS.tile})"
    )
    pairs.add_argument(
        "--sharp-fraction",
        type=float,
        default=PAIRS.sharp_fraction,
        help=f"probability of an all-sharp sample, empty mask (default {PAIRS.sharp_fraction})",
    )
    pairs.add_argument(
        "--blurred-fraction",
        type=float,
        default=PAIRS.blurred_fraction,
        help=f"probability of an all-blurred sample, full mask (default {PAIRS.blurred_fraction})",
    )
    pairs.add_argument(
        "--register",
        action=argparse.BooleanOptionalAction,
        default=PAIRS.align,
        help="estimate and remove the shift between the images (default: on); "
        "--no-register only centre-crops them to a common size",
    )
    pairs.add_argument(
        "--min-sharpness-ratio",
        type=float,
        default=PAIRS.min_sharpness_ratio,
        metavar="R",
        help="keep a tile only where the sharp image's variance of Laplacian (after a 1 px "
        "Gaussian) is at least R times the blurred one's (skips empty background; "
        "default 0: keep all)",
    )
    add_overwrite(pairs, "a non-empty --out (never one that holds --sharp or --blurred)")
    add_max_pixels(pairs)
    add_seed(pairs)
    pairs.set_defaults(func=run_real_pairs)


def run_real_pairs(args: argparse.Namespace) -> int:
    """Build the real-blur benchmark and print the registration and a sharpness check."""
    try:
        config = RealPairConfig(
            n=args.n,
            tile=args.tile,
            seed=args.seed,
            sharp_fraction=args.sharp_fraction,
            blurred_fraction=args.blurred_fraction,
            align=args.register,
            min_sharpness_ratio=args.min_sharpness_ratio,
        )
    except ValidationError as exc:
        raise option_error(exc, "benchmark option") from None
    with progress_bar() as bar:
        task = bar.add_task("building", total=config.n)
        summary = build_real_pairs(
            args.sharp,
            args.blurred,
            args.out,
            config,
            args.overwrite,
            lambda k: bar.advance(task, k),
        )
    reg = summary["registration"]
    counts = summary["counts"]
    how = "estimated" if reg["registered"] else "not estimated (--no-register)"
    log.info(
        f"Shift (dy, dx) = {tuple(reg['shift'])} {how}; correlation {reg['correlation']}; "
        f"aligned region {summary['aligned_size'][0]} x {summary['aligned_size'][1]} px."
    )
    log.info(
        f"Wrote {summary['n']} samples to {args.out}: "
        + ", ".join(f"{v} {k}" for k, v in counts.items())
        + f"; mean blurred fraction {summary['blurred_fraction_mean']}."
    )
    for name in SHARPNESS_SCALES:
        mixed = summary["sharpness"][name]["mixed_regions"]
        if mixed["n"]:
            log.info(
                f"Variance of Laplacian ({name}) outside / inside the masks: "
                f"{mixed['outside_mean']:.3g} / {mixed['inside_mean']:.3g} (median ratio "
                f"{mixed['ratio_median']:.3g}, outside sharper in {mixed['outside_wins']:.0%} "
                f"of {mixed['n']} mixed samples)."
            )
    return 0
