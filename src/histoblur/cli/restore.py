"""``histoblur restore``: regenerate masked artifact regions by regional reverse diffusion."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from histoblur.cli.common import progress_bar
from histoblur.diffusion.regional import RestoreSettings, denoiser_passes
from histoblur.errors import InputError, ParameterError
from histoblur.inference.restore import Restorer
from histoblur.io.atomic import ensure_writable_dir
from histoblur.io.images import read_image, read_mask, write_image

console = Console(stderr=True)
SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``restore``."""
    cmd = sub.add_parser(
        "restore",
        help="regenerate masked artifact regions with the diffusion denoiser (ArtiFusion)",
        description=(
            "Only the masked pixels change. IMAGE and --mask are files (--out a file) or "
            "folders (masks matched by file stem, --out a folder)."
        ),
    )
    cmd.add_argument("image", type=Path, metavar="IMAGE")
    cmd.add_argument("--mask", required=True, type=Path, help="mask PNG (non-zero = restore)")
    cmd.add_argument("--out", required=True, type=Path)
    cmd.add_argument("--model", default="default", help="shipped denoiser (default) or a folder")
    cmd.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddim")
    cmd.add_argument("--steps", type=int, default=25, help="reverse steps (ddpm: 0 = all T)")
    cmd.add_argument("--jump-length", type=int, default=0, help="RePaint resampling jump (0: off)")
    cmd.add_argument("--resamples", type=int, default=1, help="RePaint resamplings per jump")
    cmd.add_argument("--seed", type=int, default=0)
    cmd.set_defaults(func=run)


def pairs(image: Path, mask: Path, out: Path) -> list[tuple[Path, Path, Path]]:
    """(image, mask, output) triples of a single file or of two folders.

    Raises:
        InputError: missing paths, a folder with no images, or an image without its mask.
    """
    for path in (image, mask):
        if not path.exists():
            raise InputError(f"{path} does not exist.")
    if image.is_file():
        return [(image, mask, out)]
    images = sorted(p for p in image.iterdir() if p.suffix.lower() in SUFFIXES)
    if not images:
        raise InputError(f"{image} holds no images.")
    masks = {p.stem: p for p in mask.iterdir() if p.suffix.lower() in SUFFIXES}
    missing = [p.name for p in images if p.stem not in masks]
    if missing:
        raise InputError(f"No mask in {mask} for {', '.join(missing[:3])}.")
    return [(p, masks[p.stem], out / f"{p.stem}.png") for p in images]


def run(args: argparse.Namespace) -> int:
    """Restore every image; each output appears complete or not at all."""
    if args.steps < 0 or args.jump_length < 0 or args.resamples < 1:
        raise ParameterError("--steps and --jump-length must be >= 0 and --resamples >= 1.")
    settings = RestoreSettings(args.sampler, args.steps or None, args.jump_length, args.resamples)
    jobs = pairs(args.image, args.mask, args.out)
    restorer = Restorer.load(args.model)
    if args.image.is_dir():
        ensure_writable_dir(args.out)
    passes = denoiser_passes(settings, restorer.schedule)
    with progress_bar(console) as bar:
        task = bar.add_task("restoring", total=len(jobs))
        for image_path, mask_path, out_path in jobs:
            image, mask = read_image(image_path), read_mask(mask_path)
            write_image(out_path, restorer.restore(image, mask, settings, args.seed))
            bar.console.print(f"{image_path.name}: {int(mask.sum())} px restored")
            bar.advance(task)
    console.print(f"Wrote {len(jobs)} image(s); {passes} denoiser passes per window.")
    return 0
