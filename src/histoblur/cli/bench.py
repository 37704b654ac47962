"""``histoblur bench``: build benchmark sets (``bench real-pairs``: real optical blur)."""

from __future__ import annotations

import argparse
from pathlib import Path

from histoblur.cli.common import (
    Option,
    add_command_group,
    add_config_options,
    add_file_options,
    add_image_pair,
    add_seed,
    config_from_args,
    log,
    progress_counter,
)
from histoblur.synthesis.real_pairs import SHARPNESS_SCALES, RealPairConfig, build_real_pairs

PAIRS = RealPairConfig()  # the parser's defaults


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``bench`` and its sub-commands (``real-pairs``)."""
    verbs = add_command_group(sub, "bench", "build benchmark sets with pixel ground truth")
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
    add_image_pair(pairs, "the in-focus image", "the out-of-focus image")
    pairs.add_argument("--out", required=True, type=Path, help="output folder (created)")
    add_config_options(
        pairs,
        PAIRS,
        Option("--n", int, "number of samples (default {})"),
        Option("--tile", int, "tile side in px (default {})"),
        Option(
            "--sharp-fraction", float, "probability of an all-sharp sample, empty mask (default {})"
        ),
        Option(
            "--blurred-fraction",
            float,
            "probability of an all-blurred sample, full mask (default {})",
        ),
    )
    pairs.add_argument(
        "--register",
        action=argparse.BooleanOptionalAction,
        default=PAIRS.align,
        help="estimate and remove the shift between the images (default: on); "
        "--no-register only centre-crops them to a common size",
    )
    add_config_options(
        pairs,
        PAIRS,
        Option(
            "--min-sharpness-ratio",
            float,
            "keep a tile only where the sharp image's variance of Laplacian (after a 1 px "
            "Gaussian) is at least R times the blurred one's (skips empty background; "
            "default 0: keep all)",
            "R",
        ),
    )
    add_file_options(pairs, "a non-empty --out (never one that holds --sharp or --blurred)")
    add_seed(pairs)
    pairs.set_defaults(func=run_real_pairs)


def run_real_pairs(args: argparse.Namespace) -> int:
    """Build the real-blur benchmark and print the registration and a sharpness check."""
    config = config_from_args(
        RealPairConfig,
        args,
        *("n", "tile", "seed", "sharp_fraction", "blurred_fraction", "min_sharpness_ratio"),
        what="benchmark option",
        align=args.register,
    )
    with progress_counter("building", config.n) as advance:
        summary = build_real_pairs(
            args.sharp, args.blurred, args.out, config, args.overwrite, advance
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
