"""``histoblur latent``: blur synthesis and deblurring by latent arithmetic on two focal planes."""

from __future__ import annotations

import argparse
from pathlib import Path

from histoblur.cli.common import add_command_group, add_run_options, log
from histoblur.errors import ParameterError
from histoblur.io.paths import check_output_file

MAX_SWEEP = 64  # alphas of one --sweep strip

VERBS = {
    "interpolate": (
        "synthesize intermediate blur between a sharper and a blurrier plane (eq. 1-2)",
        "Decode alpha * z_blurrier + (1 - alpha) * z_sharper: alpha 0 reproduces the sharper "
        "plane, 1 the blurrier one, values between give intermediate defocus.",
        ("SHARPER", "BLURRIER"),
    ),
    "deblur": (
        "recover the in-focus plane from two defocused planes by extrapolation (eq. 3)",
        "Decode (z_near - alpha * z_far) / (1 - alpha): alpha is where NEAR lies between focus "
        "(0) and FAR (1), e.g. 0.5 for planes 4 and 8 steps from focus.",
        ("NEAR", "FAR"),
    ),
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``latent interpolate`` and ``latent deblur``."""
    verbs = add_command_group(sub, "latent", "blur synthesis / deblurring along the focal axis")
    for name, (help_text, description, (first, second)) in VERBS.items():
        cmd = verbs.add_parser(name, help=help_text, description=description)
        cmd.add_argument("first", type=Path, metavar=f"{first}.png")
        cmd.add_argument("second", type=Path, metavar=f"{second}.png")
        cmd.add_argument("--out", required=True, type=Path, metavar="OUT.png")
        cmd.add_argument("--model", default="default", help="shipped model (default) or a folder")
        how = cmd.add_mutually_exclusive_group(required=True)
        how.add_argument("--alpha", type=float, help="the interpolation parameter")
        how.add_argument(
            "--sweep",
            type=int,
            metavar="N",
            help="write N alphas evenly over [0, 1] (deblur: [0, 1)) side by side as one strip "
            f"(2 to {MAX_SWEEP})",
        )
        cmd.add_argument(
            "--residual",
            action="store_true",
            help="anchor the output to the planes' own pixels: their pixel blend (deblur: "
            "extrapolation) plus what the latent path adds beyond that of the decoded planes",
        )
        add_run_options(cmd, "an existing OUT.png")
        cmd.set_defaults(func=run, verb=name)


def sweep_alphas(verb: str, n: int) -> list[float]:
    """The alphas of a ``--sweep N``: [0, 1] for interpolation, [0, 1) for deblurring."""
    if not 2 <= n <= MAX_SWEEP:
        raise ParameterError(f"--sweep must be between 2 and {MAX_SWEEP}, got {n}.")
    import numpy as np

    if verb == "interpolate":
        return [float(a) for a in np.linspace(0, 1, n)]
    return [float(a) for a in np.linspace(0, 1, n + 1)[:-1]]


def run(args: argparse.Namespace) -> int:
    """Run one verb and write OUT.png (written whole or not at all)."""
    from histoblur.inference.latent import FocalCodec, sweep_strip
    from histoblur.io.images import IMAGE_SUFFIXES, read_image, write_image

    alphas = [args.alpha] if args.alpha is not None else sweep_alphas(args.verb, args.sweep)
    check_output_file(args.out, (args.first, args.second), args.overwrite, IMAGE_SUFFIXES)
    first, second = read_image(args.first), read_image(args.second)
    codec = FocalCodec.load(args.model, args.device)
    operation = codec.interpolate if args.verb == "interpolate" else codec.deblur
    images = operation(first, second, alphas, residual=args.residual)
    if len(images) == 1:
        write_image(args.out, images[0])
    else:
        write_image(args.out, sweep_strip(images, [f"alpha {a:.2f}" for a in alphas]))
    size = images[0].shape
    log.info(f"Wrote {args.out} ({len(alphas)} alpha(s), {size[1]} x {size[0]} px each).")
    return 0
