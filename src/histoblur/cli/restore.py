"""``histoblur restore``: regenerate masked artifact regions by regional reverse diffusion."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from histoblur.cli.common import (
    add_device,
    add_file_options,
    add_mpp,
    add_precision,
    add_seed,
    log,
    progress_counter,
)
from histoblur.diffusion.regional import (
    RECIPE,
    STARTS,
    RestoreSettings,
    check_budget,
    default_weight,
)
from histoblur.errors import InputError, OutputError, ParameterError
from histoblur.inference.detectors import DETECTORS, make_detector
from histoblur.inference.inpaint import FILLS
from histoblur.inference.resolution import check_mpp
from histoblur.inference.restore import Restorer, detect_and_restore, restoring
from histoblur.io.atomic import ensure_writable_dir, write_text_atomic
from histoblur.io.images import (
    IMAGE_SUFFIXES,
    check_sizes,
    list_images,
    read_image,
    read_mask,
    write_image,
)
from histoblur.io.paths import check_output_file, check_output_files
from histoblur.models.tiling import BATCH_SIZE

MASK_SUFFIXES = ("_mask", "_after_mask")  # --detect: the masks before and after restoration


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``restore``."""
    cmd = sub.add_parser(
        "restore",
        help="regenerate masked artifact regions with the diffusion denoiser (ArtiFusion)",
        description=(
            "Only the masked pixels change. IMAGE and --mask are files (--out a file) or "
            "folders (masks matched by file stem, --out a folder). With --detect instead of "
            "--mask the artifacts are found first, restored, and detected again on the result "
            "(masks written beside each output as NAME_mask.png and NAME_after_mask.png). "
            "An output that is an input is refused; existing outputs are replaced only with "
            "--overwrite."
        ),
    )
    cmd.add_argument("image", type=Path, metavar="IMAGE")
    where = cmd.add_mutually_exclusive_group(required=True)
    where.add_argument("--mask", type=Path, help="mask PNG or folder (non-zero = restore)")
    where.add_argument(
        "--detect",
        choices=DETECTORS,
        help="find the regions to restore: "
        + "; ".join(f"{k}: {v.summary}" for k, v in DETECTORS.items()),
    )
    cmd.add_argument("--out", required=True, type=Path)
    cmd.add_argument("--model", default="default", help="shipped denoiser (default) or a folder")
    cmd.add_argument(
        "--method",
        choices=("diffusion", *FILLS),
        default="diffusion",
        help="diffusion (the denoiser, default) or a classical fill without a network: "
        "telea, ns (OpenCV inpainting), laplace (the smoothest surface through the region's "
        "border) or harmonise (ring harmonisation)",
    )
    cmd.add_argument("--detector-model", default="default", help="segmenter for --detect segmenter")
    fast = RECIPE  # the defaults: histoblur's recipe
    cmd.add_argument("--sampler", choices=("ddpm", "ddim"), default=fast.sampler)
    cmd.add_argument(
        "--steps", type=int, default=fast.steps or 0, help="reverse steps (0, default: all T)"
    )
    cmd.add_argument(
        "--eta", type=float, default=fast.eta, help="step noise, 0 (deterministic) to 1"
    )
    cmd.add_argument(
        "--strength",
        type=float,
        default=fast.strength,
        help="start from --start noised to this share of the schedule (1: from pure noise; "
        f"default {fast.strength})",
    )
    cmd.add_argument(
        "--start",
        choices=STARTS,
        default=fast.start,
        help="what the region holds before it is noised (strength < 1): the artifact or its "
        f"telea, ns, laplace or harmonise fill (default {fast.start})",
    )
    cmd.add_argument(
        "--weight",
        type=float,
        help="share of the denoiser's change to the start that is kept, in (0, 1] (below 1 "
        f"needs --strength below 1 and a fill as --start; default {fast.weight} there, else 1)",
    )
    cmd.add_argument(
        "--jump-length",
        type=int,
        default=fast.jump_length,
        help="RePaint resampling jump (0: off)",
    )
    cmd.add_argument(
        "--resamples", type=int, default=fast.resamples, help="RePaint resamplings per jump"
    )
    cmd.add_argument(
        "--batch-size",
        type=int,
        default=BATCH_SIZE,
        help=f"windows denoised together (default {BATCH_SIZE})",
    )
    add_mpp(cmd)
    add_device(cmd)
    add_precision(
        cmd,
        "fp32",
        "with --detect segmenter, the detector network's arithmetic (the denoiser runs in "
        "float32): ",
        "masks agree with fp32 on >99.9 %% of pixels",
    )
    add_seed(cmd)
    add_file_options(cmd)
    cmd.set_defaults(func=run)


def pairs(image: Path, mask: Path | None, out: Path) -> list[tuple[Path, Path | None, Path]]:
    """(image, mask or None, output) triples of a single file or of folders.

    Raises:
        InputError: missing paths, a folder with no images, or an image without its mask.
    """
    for path in (image, mask):
        if path is not None and not path.exists():
            raise InputError(f"{path} does not exist.")
    if image.is_file():
        if mask is not None and mask.is_dir():
            raise InputError(f"IMAGE {image} is a file, so --mask must be a file too.")
        return [(image, mask, out)]
    if mask is not None and not mask.is_dir():
        raise InputError(f"IMAGE {image} is a folder, so --mask must be a folder too.")
    if out.exists() and not out.is_dir():
        raise OutputError(f"IMAGE {image} is a folder, so --out must be a folder, not {out}.")
    images = list_images(image)
    if mask is None:
        return [(p, None, out / f"{p.stem}.png") for p in images]
    masks = {p.stem: p for p in mask.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    missing = [p.name for p in images if p.stem not in masks]
    if missing:
        raise InputError(f"No mask in {mask} for {', '.join(missing[:3])}.")
    return [(p, masks[p.stem], out / f"{p.stem}.png") for p in images]


def check_outputs(jobs: list[tuple[Path, Path | None, Path]], args: argparse.Namespace) -> None:
    """Refuse outputs that are inputs, unknown suffixes, and existing files without --overwrite.

    Raises:
        OutputError, ParameterError: one sentence naming the path.
    """
    inputs = [p for image, mask, _ in jobs for p in (image, mask) if p is not None]
    if args.image.is_file():
        check_output_file(args.out, inputs, args.overwrite, IMAGE_SUFFIXES)
    outputs = [out for *_, out in jobs]
    if args.detect:
        outputs += [out.with_name(f"{out.stem}{s}.png") for out in outputs for s in MASK_SUFFIXES]
        if args.image.is_dir():
            outputs.append(args.out / "detections.csv")
    check_output_files(outputs, inputs, args.overwrite)


def run(args: argparse.Namespace) -> int:
    """Restore every image; each output appears complete or not at all."""
    check_mpp(args.mpp)
    if args.steps < 0 or args.batch_size < 1:
        raise ParameterError("--steps must be >= 0 and --batch-size >= 1.")
    settings = RestoreSettings(
        args.sampler,
        args.steps or None,
        args.jump_length,
        args.resamples,
        args.eta,
        args.strength,
        args.start,
        args.weight if args.weight is not None else default_weight(args.strength, args.start),
    )
    jobs = pairs(args.image, args.mask, args.out)
    check_sizes([p for image, mask, _ in jobs for p in (image, mask) if p is not None])
    check_outputs(jobs, args)
    restorer = Restorer.load(args.model, args.device) if args.method == "diffusion" else None
    passes = check_budget(settings, restorer.schedule) if restorer is not None else 0
    fill = restoring(restorer, settings, args.method, args.seed, args.batch_size)
    detect = (
        make_detector(
            args.detect,
            args.detector_model,
            device=args.device,
            mpp=args.mpp,
            precision=args.precision,
        )
        if args.detect
        else None
    )
    if args.image.is_dir():
        ensure_writable_dir(args.out)
    rows = ["image,flagged_fraction,after_fraction"]
    with progress_counter("restoring", len(jobs)) as advance:
        for image_path, mask_path, out_path in jobs:
            image = read_image(image_path)
            if detect is None:
                mask = read_mask(mask_path)
                write_image(out_path, fill(image, mask))
                log.info(f"{image_path.name}: {int(mask.sum())} px restored")
            else:
                loop = detect_and_restore(fill, detect, image)
                write_image(out_path, loop.restored)
                for suffix, m in zip(MASK_SUFFIXES, (loop.flagged, loop.after), strict=True):
                    write_image(out_path.with_name(f"{out_path.stem}{suffix}.png"), _png(m))
                rows.append(
                    f"{image_path.name},{loop.flagged_fraction:.5f},{loop.after_fraction:.5f}"
                )
                log.info(
                    f"{image_path.name}: flagged {100 * loop.flagged_fraction:.2f}% -> "
                    f"{100 * loop.after_fraction:.2f}% after restoration"
                )
            advance()
    if detect is not None and args.image.is_dir():
        write_text_atomic(args.out / "detections.csv", "\n".join(rows) + "\n")
    how = f"{passes} denoiser passes per window" if restorer else f"{args.method} fill"
    log.info(f"Wrote {len(jobs)} image(s); {how}.")
    return 0


def _png(mask: np.ndarray) -> np.ndarray:
    """0/255 uint8 picture of a boolean mask."""
    return mask.astype(np.uint8) * 255
