"""``histoblur segment``: blur masks, probability maps and overlays for images."""

from __future__ import annotations

import argparse
from pathlib import Path

from histoblur.cli.common import (
    OutputFolder,
    add_mpp,
    add_precision,
    add_run_options,
    expand_images,
    json_manifest,
    log,
)
from histoblur.errors import ParameterError
from histoblur.inference.resolution import check_mpp
from histoblur.inference.segment import (
    DEFAULT_MODEL,
    TASK,
    Segmenter,
    output_paths,
    segment_file,
)
from histoblur.io.images import read_image
from histoblur.models.hub import shipped_names
from histoblur.models.tiling import BATCH_SIZE


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``segment``."""
    seg = sub.add_parser(
        "segment",
        help="find blurred regions in images with a segmentation network",
        description=(
            "For each IMAGE write OUT/<stem>_mask.png (0/255), OUT/<stem>_prob.png (blur "
            "probability x 255) and OUT/<stem>_overlay.png, plus OUT/segment.json. Any size, "
            "RGB/RGBA/grey, 8/16-bit: large images are tiled with overlap and blended. "
            "Existing outputs are replaced only with --overwrite; if an image fails, "
            "segment.json still lists the images finished before it."
        ),
    )
    seg.add_argument(
        "images", nargs="*", type=Path, metavar="IMAGE", help="image files or folders of images"
    )
    seg.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"shipped model ({', '.join(shipped_names(TASK))}) or checkpoint folder "
        f"(default {DEFAULT_MODEL})",
    )
    seg.add_argument("--out", required=True, type=Path, help="output folder")
    seg.add_argument(
        "--threshold", type=float, help="blur probability threshold (default: the model's)"
    )
    seg.add_argument(
        "--all-pixels",
        action="store_true",
        help="also flag glass (by default only tissue pixels can be called blurred)",
    )
    seg.add_argument(
        "--tile", type=int, help="window side in px (default: the model's, 256 for the shipped)"
    )
    seg.add_argument(
        "--overlap",
        type=int,
        help="window overlap in px, below half the tile (default 32, or tile / 4 if smaller)",
    )
    seg.add_argument(
        "--batch-size",
        type=int,
        default=BATCH_SIZE,
        help=f"windows per batch (default {BATCH_SIZE})",
    )
    add_mpp(seg)
    add_precision(seg)
    add_run_options(seg)
    seg.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Segment every image; outputs appear complete or not at all."""
    images = expand_images(args.images)
    mpp = check_mpp(args.mpp)
    if args.threshold is not None and not 0.0 < args.threshold < 1.0:
        raise ParameterError(f"--threshold must be in (0, 1), got {args.threshold}.")
    folder = OutputFolder(
        images,
        [p for image in images for p in output_paths(args.out, image).values()],
        args.out / "segment.json",
        json_manifest({"model": str(args.model), "precision": args.precision}),
        args.overwrite,
        "Segment them into different --out folders.",
    )
    segmenter = Segmenter.load(
        args.model,
        args.device,
        tile=args.tile,
        overlap=args.overlap,
        batch_size=args.batch_size,
        tissue_only=not args.all_pixels,
        precision=args.precision,
    )
    with folder.progress("segmenting", len(images)) as (bar, task):
        for path in images:
            image = read_image(path)
            sub = bar.add_task(f"  {path.name}", total=segmenter.tiles_for(image, mpp))
            folder.add(
                segment_file(
                    segmenter,
                    path,
                    args.out,
                    args.threshold,
                    lambda k, s=sub: bar.advance(s, k),
                    image,  # decoded once, above
                    mpp,
                )
            )
            bar.remove_task(sub)
            bar.advance(task)
    rows = folder.rows
    for row in rows:
        log.info(f"{row['image']}: {row['blurred_fraction']:.1%} flagged as blur")
    log.info(f"Wrote masks, probabilities and overlays for {len(rows)} image(s) to {args.out}.")
    return 0
