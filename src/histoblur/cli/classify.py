"""``histoblur classify``: blur type (in focus, defocus, motion, mixed) of images, as CSV."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from histoblur.cli.common import (
    add_mpp,
    add_precision,
    add_run_options,
    expand_images,
    log,
    progress_counter,
)
from histoblur.inference.classify import MIN_SIDE, TOO_SMALL, BlurClassifier
from histoblur.inference.focus import FocusModel
from histoblur.inference.resolution import check_mpp
from histoblur.io.atomic import write_text_atomic
from histoblur.io.images import read_image
from histoblur.io.paths import check_output_file
from histoblur.io.tables import csv_text
from histoblur.models.classifier import BLUR_TYPES

COLUMNS = (
    "path",
    "label",
    *(f"p_{c}" for c in BLUR_TYPES),
    "focus_score",
    "blurred_fraction",
    "windows",
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``classify``."""
    cmd = sub.add_parser(
        "classify",
        help="blur type of images (in_focus, defocus, motion, mixed) with calibrated probabilities",
        description=(
            "Classify each image (any size: the windows with most structure are pooled) and "
            "write one CSV row per image: path,label,p_in_focus,p_defocus,p_motion,p_mixed,"
            "focus_score,blurred_fraction,windows. The blur segmenter's map decides whether an "
            "image is out of focus (focus_score: its blur probability averaged over the tissue; "
            "p_in_focus = 1 - focus_score) and the classifier how (it splits the rest between "
            "the blur types), so the two never disagree; --classifier-only gives the "
            "classifier's own probabilities. Folders are searched for images. Images with a "
            f"side below {MIN_SIDE} px are too small to judge: label {TOO_SMALL}, no "
            "probabilities, 0 windows."
        ),
    )
    cmd.add_argument("images", nargs="*", type=Path, metavar="IMAGE")
    cmd.add_argument("--out", required=True, type=Path, metavar="FILE.csv", help="CSV to write")
    cmd.add_argument(
        "--model", default="default", help="shipped classifier (default) or checkpoint folder"
    )
    cmd.add_argument(
        "--segmenter",
        default="default",
        metavar="MODEL",
        help="shipped blur segmenter (default) or checkpoint folder giving the focus score",
    )
    cmd.add_argument(
        "--classifier-only",
        action="store_true",
        help="the classifier's own probabilities, without the segmenter (no focus_score)",
    )
    add_mpp(cmd)
    add_precision(cmd, "fp32", note="probabilities then compare across machines")
    add_run_options(cmd, "an existing FILE.csv")
    cmd.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Classify every image, then write the CSV atomically."""
    images = expand_images(args.images)
    check_mpp(args.mpp)
    check_output_file(args.out, images, args.overwrite, (".csv",))
    if args.classifier_only:
        classifier = BlurClassifier.load(args.model, device=args.device, precision=args.precision)
    else:
        model = FocusModel.load(args.segmenter, args.model, args.device, precision=args.precision)

    def judge(image: np.ndarray, mpp: float | None) -> dict:
        if args.classifier_only:
            result = classifier.classify(image, mpp)
            return {**result.row(), "windows": result.windows}
        return model.judge(image, mpp).row()

    rows = []
    with progress_counter("classifying", len(images)) as advance:
        for path in images:
            image = read_image(path)
            if min(image.shape[:2]) < MIN_SIDE:
                rows.append({"path": str(path), "label": TOO_SMALL, "windows": 0})
            else:
                rows.append({"path": str(path), **judge(image, args.mpp)})
            advance()
    write_text_atomic(args.out, csv_text(rows, COLUMNS))
    counts = {c: sum(r["label"] == c for r in rows) for c in (*BLUR_TYPES, TOO_SMALL)}
    log.info(f"Wrote {args.out}: " + ", ".join(f"{n} {c}" for c, n in counts.items() if n))
    return 0
