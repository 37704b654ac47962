"""``histoblur evaluate``: measure results against ground truth (``evaluate segmentation``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from histoblur.cli.common import progress_bar
from histoblur.errors import ParameterError
from histoblur.io.atomic import write_text_atomic
from histoblur.metrics.segmentation import (
    PAIRING_RULE,
    SCORE_NAMES,
    SegmentationScores,
    SegmentationSummary,
    evaluate_mask_pairs,
    pair_mask_files,
)

console = Console(stderr=True)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``evaluate`` and its sub-commands (``segmentation``)."""
    evaluate = sub.add_parser("evaluate", help="measure results against ground truth")
    verbs = evaluate.add_subparsers(dest="evaluate_command", metavar="WHAT", required=True)

    seg = verbs.add_parser(
        "segmentation",
        help="Dice, IoU, precision, recall, FPR of predicted blur masks",
        description=(
            "Score predicted blur masks against ground-truth masks, per image and over the set "
            f"(micro: pooled pixels; macro: mean of per-image scores). Pairing: {PAIRING_RULE}. "
            "Truth masks: non-zero = blur."
        ),
    )
    seg.add_argument(
        "--pred", required=True, type=Path, metavar="DIR", help="folder of predicted masks"
    )
    seg.add_argument(
        "--truth", required=True, type=Path, metavar="DIR", help="folder of ground-truth masks"
    )
    seg.add_argument(
        "--out",
        type=Path,
        metavar="FILE.csv",
        help="write per-image and aggregate rows to this .csv and a summary .json beside it "
        "(default: print only)",
    )
    seg.add_argument(
        "--threshold",
        type=float,
        metavar="T",
        help="for probability-map predictions: blur where value > T x dtype max "
        "(0.5: > 127.5 for 8-bit masks); default: any non-zero pixel is blur",
    )
    seg.set_defaults(func=run_segmentation)


def _row(label: str, s: SegmentationScores, style: str | None = None) -> tuple[list[str], str]:
    d = s.as_dict()
    cells = [label, *(f"{d[k]:.4f}" for k in SCORE_NAMES)]
    return cells, style or ""


def summary_table(summary: SegmentationSummary) -> Table:
    """Rich table: one row per image, then the micro and macro aggregates."""
    table = Table(
        title=f"Blur segmentation, {len(summary.per_image)} image(s)",
        caption="micro: ratios of pooled pixel counts; macro: mean of per-image ratios"
        " (pixel counts are in the --out CSV)",
    )
    table.add_column("image", overflow="fold", min_width=8)
    for name in SCORE_NAMES:
        table.add_column(name, justify="right", no_wrap=True)
    rows = [_row(s.name, s) for s in summary.per_image]
    rows.append(_row("micro", summary.micro, "bold"))
    rows.append(_row("macro", summary.macro, "bold"))
    for index, (cells, style) in enumerate(rows):
        table.add_row(*cells, style=style, end_section=index == len(summary.per_image) - 1)
    return table


def run_segmentation(args: argparse.Namespace) -> int:
    """Evaluate, print the table, and write CSV + JSON when ``--out`` is given."""
    if args.out is not None and args.out.suffix.lower() != ".csv":
        raise ParameterError(f"--out {args.out} must end in .csv (a .json summary goes beside it).")
    if args.threshold is not None and not 0.0 <= args.threshold < 1.0:
        raise ParameterError(f"--threshold must be in [0, 1), got {args.threshold}.")
    pairing = pair_mask_files(args.pred, args.truth)
    with progress_bar(console) as bar:
        task = bar.add_task("scoring masks", total=len(pairing.pairs))
        summary = evaluate_mask_pairs(pairing, args.threshold, lambda k: bar.advance(task, k))
    Console().print(summary_table(summary))
    notes = summary.notes
    for role, key in (("prediction", "unmatched_predictions"), ("truth", "unmatched_truths")):
        if notes.get(key):
            names = ", ".join(notes[key][:5]) + (", ..." if len(notes[key]) > 5 else "")
            console.print(f"[yellow]{len(notes[key])} {role} file(s) had no partner: {names}")
    if args.out is not None:
        csv_path = write_text_atomic(args.out, summary.to_csv())
        json_path = write_text_atomic(
            args.out.with_suffix(".json"), json.dumps(summary.as_dict(), indent=2) + "\n"
        )
        console.print(f"Wrote {csv_path} and {json_path}.")
    return 0
