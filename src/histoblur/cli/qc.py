"""``histoblur qc``: whole-slide blur QC for one slide or a cohort."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from pydantic import ValidationError

from histoblur.cli.common import add_device, add_precision, log, option_error, progress_bar
from histoblur.errors import HistoblurError
from histoblur.inference.cohort import (
    ERROR,
    FLAGGED,
    NO_TISSUE,
    SchedulerUnreachableError,
    check_out,
    check_workers,
    check_writable,
    find_slides,
    max_workers,
    read_slide_mpps,
    run_cohort,
    unmatched_mpps,
)
from histoblur.inference.qc import QCConfig
from histoblur.inference.segment import DEFAULT_MODEL, TASK
from histoblur.io.atomic import ensure_writable_dir
from histoblur.models.hub import WHAT, resolve, select_device, shipped_names
from histoblur.models.registry import check_task

EXIT_SOME_FAILED = 3
EXIT_USAGE = 2


QC = QCConfig()  # the parser's defaults


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``qc``."""
    qc = sub.add_parser(
        "qc",
        help="whole-slide blur QC: masks, heatmaps, QuPath GeoJSON and reports for slides",
        description=(
            "For each slide write OUT/<stem>/ (blur_mask.png, probability.png, heatmap.png, "
            "overlay.png, thumbnail.png, blur.geojson, summary.json, report.html), then "
            "OUT/cohort.csv and OUT/index.html (every slide ever QC'd into OUT, each with a "
            "status: ok, flagged, no_tissue or error). A slide already done with the same "
            "parameters is skipped, one done with others is QC'd again; a slide that fails gets "
            "an error row. OUT may not be, hold or lie inside an input folder. Exit code 0: all "
            "slides processed (flagged ones too), 3: some failed, 2: usage."
        ),
    )
    qc.add_argument("slides", nargs="*", type=Path, metavar="SLIDE_OR_DIR")
    qc.add_argument(
        "--out", required=True, type=Path, help="output folder (outside every input folder)"
    )
    qc.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"shipped model ({', '.join(shipped_names(TASK))}) or checkpoint folder "
        f"(default {DEFAULT_MODEL})",
    )
    qc.add_argument(
        "--mpp",
        type=float,
        default=QC.mpp,
        metavar="UM",
        help="resolution in microns per pixel to judge blur at (default: the model's working "
        "resolution, 0.5 for the shipped model, or the slide's own when coarser)",
    )
    qc.add_argument(
        "--slide-mpp",
        type=float,
        default=QC.slide_mpp,
        metavar="UM",
        help="level-0 microns per pixel of slides whose metadata states none (a fallback: "
        "metadata wins, with a warning when it differs by more than 10%%)",
    )
    qc.add_argument(
        "--slide-mpp-csv",
        type=Path,
        metavar="FILE",
        help="CSV with the columns slide (file name or path) and mpp: per-slide level-0 "
        "microns per pixel for mixed cohorts (beats --slide-mpp)",
    )
    qc.add_argument(
        "--force-slide-mpp",
        action="store_true",
        default=QC.force_slide_mpp,
        help="use --slide-mpp / --slide-mpp-csv even where the metadata states a resolution",
    )
    qc.add_argument(
        "--threshold",
        type=float,
        default=QC.threshold,
        help="blur probability threshold (default: the model's, 0.5 for the shipped model)",
    )
    qc.add_argument(
        "--flag-above",
        type=float,
        default=QC.flag_above,
        metavar="FRACTION",
        help="status 'flagged' for slides with more than this fraction of their tissue "
        f"blurred (default {QC.flag_above:g}); re-labels done slides without QC'ing them again",
    )
    qc.add_argument(
        "--overwrite",
        action="store_true",
        help="QC every slide again, even those done with the same parameters",
    )
    qc.add_argument(
        "--batch-size",
        type=int,
        default=QC.batch_size,
        help=f"windows per batch, 1 to 256 (default {QC.batch_size})",
    )
    add_device(qc, QC.device)
    add_precision(qc, QC.precision)
    qc.add_argument(
        "--readers",
        type=int,
        default=QC.readers,
        help=f"decoding threads, 1 to 32 (default {QC.readers})",
    )
    where = qc.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        type=int,
        default=1,
        help=f"local worker processes, 1 to {max_workers()} on this machine (default 1: "
        "in-process)",
    )
    where.add_argument("--scheduler", help="address of a Dask scheduler, e.g. tcp://host:8786")
    qc.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """QC every slide; returns 0, 2 (usage) or 3 (some slides failed)."""
    try:
        mpps = read_slide_mpps(args.slide_mpp_csv) if args.slide_mpp_csv else {}
        config = QCConfig(
            model=str(args.model),
            mpp=args.mpp,
            slide_mpp=args.slide_mpp,
            slide_mpps=mpps,
            force_slide_mpp=args.force_slide_mpp,
            threshold=args.threshold,
            flag_above=args.flag_above,
            batch_size=args.batch_size,
            device=args.device,
            precision=args.precision,
            readers=args.readers,
        )
        check_workers(args.workers)
        slides = find_slides(args.slides)
        check_out(args.out, [*args.slides, *slides])  # before anything is written
        check_task(resolve(config.model, TASK), TASK, WHAT[TASK])
        if not args.scheduler:  # a cluster's workers may have the GPU this machine lacks
            select_device(config.device)
        ensure_writable_dir(args.out)
        check_writable(args.out)
    except ValidationError as exc:
        log.error(f"histoblur: error: {option_error(exc)}")
        return EXIT_USAGE
    except (HistoblurError, ValueError) as exc:
        log.error(f"histoblur: error: {exc}")
        return EXIT_USAGE
    unmatched = unmatched_mpps(config.slide_mpps, slides)
    if unmatched:
        log.warning(
            f"{len(unmatched)} slide(s) of {args.slide_mpp_csv} are not among the slides given: "
            f"{', '.join(unmatched[:5])}{' ...' if len(unmatched) > 5 else ''}"
        )
    counts: Counter[str] = Counter()
    with progress_bar() as bar:
        task = bar.add_task("slides", total=len(slides))
        tiles = bar.add_task(
            "  tiles", total=None, visible=args.workers == 1 and not args.scheduler
        )

        def finished(row: dict) -> None:
            bar.advance(task)
            counts[row["status"]] += 1
            if row.get("error"):
                log.error(f"{row['stem']}: {row['error']}")
                for line in str(row.get("detail") or "").splitlines():
                    log.debug(f"  {line}")  # the cause chain, shown with -v
                return
            if not row.get("skipped"):
                for warning in row.get("warnings") or ():
                    log.warning(f"{row['stem']}: {warning}")
            note = " (already done)" if row.get("skipped") else f" in {row['seconds']:.1f} s"
            if row["status"] == NO_TISSUE:
                log.info(f"{row['stem']}: no tissue found, nothing judged (no_tissue){note}")
                return
            area = float(row["tissue_area_mm2"])
            flag = " (flagged)" if row["status"] == FLAGGED else ""
            log.info(
                f"{row['stem']}: {row['blurred_fraction']:.1%} of "
                f"{area:.{1 if area >= 10 else 2 if area >= 0.1 else 4}f} mm2 tissue "
                f"blurred{flag}{note}"
            )

        try:
            run_cohort(
                slides,
                args.out,
                config,
                workers=args.workers,
                scheduler=args.scheduler,
                progress=finished,
                slide_progress=lambda done, total: bar.update(tiles, completed=done, total=total),
                overwrite=args.overwrite,
            )
        except SchedulerUnreachableError as exc:
            log.error(f"histoblur: error: {exc}")
            return EXIT_USAGE
    failed = counts[ERROR]
    log.info(
        f"{len(slides) - failed} of {len(slides)} slide(s) done ({counts[FLAGGED]} flagged, "
        f"{counts[NO_TISSUE]} without tissue); see {args.out / 'index.html'}"
    )
    return EXIT_SOME_FAILED if failed else 0
