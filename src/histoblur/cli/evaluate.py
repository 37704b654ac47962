"""``histoblur evaluate``: measure results against ground truth (``evaluate segmentation``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from histoblur.cli.common import (
    add_command_group,
    add_mpp,
    add_precision,
    add_run_options,
    log,
    progress_bar,
    progress_counter,
)
from histoblur.errors import ParameterError
from histoblur.inference.benchmark import evaluate_benchmark, flagged_fraction
from histoblur.inference.detectors import CLASSICAL, make_detector
from histoblur.inference.segment import DEFAULT_MODEL, TASK
from histoblur.io.atomic import write_text_atomic
from histoblur.io.paths import check_output_file
from histoblur.io.tables import csv_text
from histoblur.metrics.segmentation import (
    PAIRING_RULE,
    SCORE_NAMES,
    SegmentationScores,
    SegmentationSummary,
    evaluate_mask_pairs,
    pair_mask_files,
)
from histoblur.models.hub import shipped_names
from histoblur.synthesis.real_pairs import iter_records


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``evaluate`` and its sub-commands (``segmentation``)."""
    verbs = add_command_group(sub, "evaluate", "measure results against ground truth")
    add_segmentation(verbs)


def add_segmentation(verbs: argparse._SubParsersAction) -> None:
    """Add ``evaluate segmentation``."""
    seg = verbs.add_parser(
        "segmentation",
        help="Dice, IoU, precision, recall, FPR of predicted blur masks",
        description=(
            "Score predicted blur masks against ground-truth masks, per image and over the set "
            f"(micro: pooled pixels; macro: mean of per-image scores). Pairing: {PAIRING_RULE}. "
            "Truth masks: non-zero = blur."
        ),
    )
    seg.add_argument("--pred", type=Path, metavar="DIR", help="folder of predicted masks")
    seg.add_argument(
        "--truth", type=Path, metavar="DIR", help="folder of ground-truth masks (with --pred)"
    )
    seg.add_argument(
        "--bench",
        type=Path,
        nargs="+",
        metavar="DIR",
        help="instead of --pred/--truth: run --model on real-blur benchmark folders "
        "(histoblur bench real-pairs) and score it, with the flagged fraction on all-sharp tiles",
    )
    seg.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="with --bench/--negatives: a shipped model "
        f"({', '.join(shipped_names(TASK))}), a checkpoint folder, or a classical baseline "
        f"({', '.join(CLASSICAL)}); default {DEFAULT_MODEL}",
    )
    seg.add_argument(
        "--negatives",
        type=Path,
        nargs="+",
        metavar="DIR",
        help="folders of images with no blur (sharp tissue, glass, pen marks): report the "
        "fraction of pixels the model flags (files named *_mask* are skipped)",
    )
    seg.add_argument(
        "--out",
        type=Path,
        metavar="FILE.csv",
        help="write per-image (or per-benchmark) rows to this .csv and a summary .json beside "
        "it (default: print only)",
    )
    add_mpp(seg)
    add_precision(
        seg,
        "fp32",
        "with --bench/--negatives, the segmentation network's arithmetic: ",
        "scores then compare across machines",
    )
    add_run_options(seg, "an existing --out CSV and its JSON")
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
    if args.out is not None:
        check_output_file(args.out, (), args.overwrite, (".csv",))
        check_output_file(args.out.with_suffix(".json"), (), args.overwrite)
    if args.threshold is not None and not 0.0 <= args.threshold < 1.0:
        raise ParameterError(f"--threshold must be in [0, 1), got {args.threshold}.")
    if args.bench or args.negatives:
        if args.pred is not None or args.truth is not None:
            raise ParameterError("Give either --pred/--truth or --bench/--negatives, not both.")
        return run_detector(args)
    if args.pred is None or args.truth is None:
        raise ParameterError("Give --pred and --truth folders, or --bench/--negatives folders.")
    pairing = pair_mask_files(args.pred, args.truth)
    with progress_counter("scoring masks", len(pairing.pairs)) as advance:
        summary = evaluate_mask_pairs(pairing, args.threshold, advance)
    Console().print(summary_table(summary))
    notes = summary.notes
    for role, key in (("prediction", "unmatched_predictions"), ("truth", "unmatched_truths")):
        if notes.get(key):
            names = ", ".join(notes[key][:5]) + (", ..." if len(notes[key]) > 5 else "")
            log.warning(f"{len(notes[key])} {role} file(s) had no partner: {names}")
    if args.out is not None:
        csv_path = write_text_atomic(args.out, summary.to_csv())
        json_path = write_text_atomic(
            args.out.with_suffix(".json"), json.dumps(summary.as_dict(), indent=2) + "\n"
        )
        log.info(f"Wrote {csv_path} and {json_path}.")
    return 0


def run_detector(args: argparse.Namespace) -> int:
    """Run a model (or the baseline) on benchmarks and negative folders; print and save rows."""
    name = args.model if args.model in CLASSICAL else "segmenter"
    detector = make_detector(
        name, args.model, args.threshold, args.device, mpp=args.mpp, precision=args.precision
    )
    rows: list[dict[str, object]] = []
    negatives: list[dict[str, object]] = []
    with progress_bar() as bar:
        for bench in args.bench or ():
            n = sum(1 for _ in iter_records(bench))
            task = bar.add_task(f"scoring {bench.name}", total=n)
            rows.append(
                evaluate_benchmark(detector, bench, lambda k, t=task: bar.advance(t, k)).row()
            )
        for folder in args.negatives or ():
            negatives.append(flagged_fraction(detector, folder))
    out = Console()
    if rows:
        table = Table(
            title=f"{args.model} on real-blur benchmarks",
            caption="micro scores over pooled pixels; sharp_flagged: fraction of pixels flagged "
            "on all-sharp tiles; per-kind Dice in the --out CSV",
        )
        shown = ("benchmark", "n", "dice", "iou", "precision", "recall", "sharp_flagged")
        for key in shown:
            table.add_column(key, justify="left" if key == "benchmark" else "right")
        for row in rows:
            table.add_row(*("" if row[k] is None else str(row[k]) for k in shown))
        out.print(table)
    if negatives:
        table = Table(title=f"{args.model} on images with no blur: fraction of pixels flagged")
        for key in ("folder", "n", "flagged", "worst image"):
            table.add_column(key)
        for row in negatives:
            per = row["per_image"]
            worst = max(per, key=per.get) if per else ""
            table.add_row(
                str(row["folder"]),
                str(row["n"]),
                str(row["flagged"]),
                f"{worst} ({per[worst]})" if worst else "",
            )
        out.print(table)
    if args.out is not None:
        table_csv = csv_text(rows)
        summary = {
            "model": str(args.model),
            **({} if name in CLASSICAL else {"precision": args.precision}),
            "benchmarks": rows,
            "negatives": negatives,
        }
        csv_path = write_text_atomic(args.out, table_csv)
        json_path = write_text_atomic(
            args.out.with_suffix(".json"), json.dumps(summary, indent=2) + "\n"
        )
        log.info(f"Wrote {csv_path} and {json_path}.")
    return 0
