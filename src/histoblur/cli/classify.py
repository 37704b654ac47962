"""``histoblur classify``: blur type (in focus, defocus, motion, mixed) of images, as CSV."""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

from histoblur.cli.common import add_mpp, add_run_options, expand_images, log, progress_counter
from histoblur.inference.classify import MIN_SIDE, TOO_SMALL, BlurClassifier
from histoblur.inference.resolution import check_mpp
from histoblur.io.atomic import write_text_atomic
from histoblur.io.images import read_image
from histoblur.io.paths import check_output_file
from histoblur.models.classifier import BLUR_TYPES

COLUMNS = ("path", "label", *(f"p_{c}" for c in BLUR_TYPES), "windows")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``classify``."""
    cmd = sub.add_parser(
        "classify",
        help="blur type of images (in_focus, defocus, motion, mixed) with calibrated probabilities",
        description=(
            "Classify each image (any size: the windows with most structure are pooled) and "
            "write one CSV row per image: path,label,p_in_focus,p_defocus,p_motion,p_mixed,"
            f"windows. Folders are searched for images. Images with a side below {MIN_SIDE} px "
            f"are too small to judge: label {TOO_SMALL}, no probabilities, 0 windows."
        ),
    )
    cmd.add_argument("images", nargs="*", type=Path, metavar="IMAGE")
    cmd.add_argument("--out", required=True, type=Path, metavar="FILE.csv", help="CSV to write")
    cmd.add_argument(
        "--model", default="default", help="shipped model (default) or checkpoint folder"
    )
    add_mpp(cmd)
    add_run_options(cmd, "an existing FILE.csv")
    cmd.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Classify every image, then write the CSV atomically."""
    images = expand_images(args.images)
    check_mpp(args.mpp)
    check_output_file(args.out, images, args.overwrite, (".csv",))
    classifier = BlurClassifier.load(args.model, device=args.device)
    rows = []
    with progress_counter("classifying", len(images)) as advance:
        for path in images:
            image = read_image(path)
            if min(image.shape[:2]) < MIN_SIDE:
                rows.append({"path": str(path), "label": TOO_SMALL, "windows": 0})
            else:
                result = classifier.classify(image, args.mpp)
                rows.append({"path": str(path), **result.row(), "windows": result.windows})
            advance()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(args.out, buffer.getvalue())
    counts = {c: sum(r["label"] == c for r in rows) for c in (*BLUR_TYPES, TOO_SMALL)}
    log.info(f"Wrote {args.out}: " + ", ".join(f"{n} {c}" for c, n in counts.items() if n))
    return 0
