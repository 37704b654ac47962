"""``histoblur qc``: whole-slide blur QC for one slide or a cohort.

Every :class:`~histoblur.inference.qc.QCConfig` setting can come from ``--config FILE.yaml``
(its keys are the field names); an option given on the command line wins over the file, and
the settings a run used are written to ``OUT/qc_config.yaml``, which ``--config`` reads back.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from histoblur.cli.common import (
    add_config_file,
    add_device,
    add_precision,
    log,
    option_error,
    progress_bar,
)
from histoblur.config import check_fields, read_yaml, to_yaml
from histoblur.errors import HistoblurError, OutputError, ParameterError
from histoblur.inference.cohort import max_workers
from histoblur.inference.qc import QCConfig
from histoblur.inference.repair import RepairConfig
from histoblur.inference.segment import TASK
from histoblur.models.hub import shipped_names

EXIT_SOME_FAILED = 3
EXIT_USAGE = 2
CONFIG_FILE = "qc_config.yaml"  # OUT/qc_config.yaml: the settings of the latest run into OUT
CONFIG_HEADER = "# histoblur qc settings (QCConfig)"  # how qc knows the file is its own


QC = QCConfig()  # the defaults shown in the help; the parser's own defaults are None
REPAIR = RepairConfig()


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``qc``."""
    qc = sub.add_parser(
        "qc",
        help="whole-slide blur QC: masks, heatmaps, QuPath GeoJSON and reports for slides",
        description=(
            "For each slide write OUT/<stem>/ (blur_mask.png, probability.png, heatmap.png, "
            "overlay.png, thumbnail.png, blur.geojson, summary.json, report.html), then "
            "OUT/cohort.csv and OUT/index.html (every slide ever QC'd into OUT, each with a "
            "status: ok, flagged, no_tissue or error) and OUT/qc_config.yaml (the settings "
            "used, for --config). Settings come from --config FILE.yaml, each option given "
            "overriding it, then the defaults. A slide already done with the same "
            "parameters is skipped, one done with others is QC'd again; a slide that fails gets "
            "an error row. OUT may not be, hold or lie inside an input folder. Exit code 0: all "
            "slides processed (flagged ones too), 3: some failed, 2: usage."
        ),
    )
    qc.add_argument("slides", nargs="*", type=Path, metavar="SLIDE_OR_DIR")
    qc.add_argument(
        "--out", required=True, type=Path, help="output folder (outside every input folder)"
    )
    add_config_file(
        qc,
        f"QC settings as YAML, keyed by QCConfig field: {', '.join(QCConfig.model_fields)} "
        "(see docs/wsi-qc.md); an option given here wins over the file; an earlier run's "
        "OUT/qc_config.yaml is such a file",
    )
    qc.add_argument(
        "--model",
        help=f"shipped model ({', '.join(shipped_names(TASK))}) or checkpoint folder "
        f"(default {QC.model})",
    )
    qc.add_argument(
        "--mpp",
        type=float,
        metavar="UM",
        help="resolution in microns per pixel to judge blur at (default: the model's working "
        "resolution, 0.5 for the shipped model, or the slide's own when coarser)",
    )
    qc.add_argument(
        "--slide-mpp",
        type=float,
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
        action=argparse.BooleanOptionalAction,
        help="use --slide-mpp / --slide-mpp-csv even where the metadata states a resolution "
        "(--no-force-slide-mpp: not, whatever --config says)",
    )
    qc.add_argument(
        "--threshold",
        type=float,
        help="blur probability threshold (default: the model's, 0.5 for the shipped model)",
    )
    qc.add_argument(
        "--flag-above",
        type=float,
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
        help=f"windows per batch, 1 to 256 (default {QC.batch_size})",
    )
    qc.add_argument(
        "--screen",
        action=argparse.BooleanOptionalAction,
        help="read each tissue window at half the working resolution first and take it as "
        "sharp, without the network, when its fine detail is high (faster on mostly sharp "
        "slides; drops the network's small scattered detections in such windows; see "
        "docs/wsi-qc.md; default off)",
    )
    qc.add_argument(
        "--screen-cutoff",
        type=float,
        metavar="RATIO",
        help="detail ratio at or above which --screen takes a window as sharp (default "
        f"{QC.screen_cutoff:g}; lower: faster, more blur missed)",
    )
    add_device(qc, QC.device)
    add_precision(qc, QC.precision)
    qc.add_argument(
        "--readers",
        type=int,
        help=f"decoding threads, 1 to 32 (default {QC.readers})",
    )
    qc.add_argument(
        "--repair",
        action="store_true",
        help="after QC, repair each slide's flagged regions (folds and bubbles restored, the "
        "rest deblurred), QC them again and write OUT/<stem>/repair/ (region PNGs before and "
        "after, repair.csv, repair.html); a repair QC judges worse is reverted; the slide "
        "itself is never changed",
    )
    qc.add_argument(
        "--repair-regions",
        type=int,
        default=REPAIR.max_regions,
        metavar="N",
        help=f"with --repair: the N largest regions per slide (default {REPAIR.max_regions})",
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
    # an option left out is None, so that it neither hides a --config setting nor the default
    fields = {a.dest for a in qc._actions} & set(QCConfig.model_fields)
    qc.set_defaults(func=run, **dict.fromkeys(fields))


def _config_error(exc: ValidationError, given: set[str], path: Path | None) -> ParameterError:
    """One sentence for an invalid setting, naming its option or its key in the file."""
    error = exc.errors()[0]
    loc = [str(p) for p in error["loc"]]
    if path is None or not loc or loc[0] in given:
        return option_error(exc)
    message = str(error["msg"]).removeprefix("Value error, ")
    return ParameterError(f"Invalid setting {'.'.join(loc)} in {path}: {message}.")


def qc_config(args: argparse.Namespace) -> QCConfig:
    """The run's settings: ``--config``'s, each option given overriding it, then the defaults.

    Generic over :class:`QCConfig`'s fields: a YAML key is a field name, an option a field
    of the same name (``--slide-mpp-csv`` gives ``slide_mpps``).

    Raises:
        InputError: an unreadable or invalid YAML file, or a bad ``--slide-mpp-csv``.
        ParameterError: an unknown key or an invalid value, in one sentence naming it.
    """
    from histoblur.inference.cohort import read_slide_mpps

    data: dict[str, Any] = {}
    if args.config is not None:
        data = read_yaml(args.config, "QC config")
        check_fields(data, QCConfig, str(args.config))
    given = {
        name: getattr(args, name)
        for name in QCConfig.model_fields
        if getattr(args, name, None) is not None
    }
    if args.slide_mpp_csv:
        given["slide_mpps"] = read_slide_mpps(args.slide_mpp_csv)
    try:
        return QCConfig.model_validate({**data, **given})
    except ValidationError as exc:
        raise _config_error(exc, set(given), args.config) from None


def check_config_file(out: Path) -> Path:
    """``OUT/qc_config.yaml``, refused when it exists and is not one histoblur qc wrote.

    Raises:
        OutputError: a file of that name that qc did not write (it would be replaced).
    """
    path = Path(out) / CONFIG_FILE
    if path.exists():
        try:
            ours = path.is_file() and path.read_text(encoding="utf-8").startswith(CONFIG_HEADER)
        except (OSError, UnicodeDecodeError):
            ours = False
        if not ours:
            raise OutputError(
                f"{path} exists and is not the {CONFIG_FILE} that histoblur qc writes; qc would "
                "replace it, so choose another --out (or move the file and pass it as --config)."
            )
    return path


def write_config(out: Path, config: QCConfig) -> Path:
    """Write ``config`` to ``OUT/qc_config.yaml`` atomically, readable back with ``--config``."""
    from histoblur import __version__
    from histoblur.io.atomic import write_text_atomic

    header = (
        f"{CONFIG_HEADER} of the latest run into this folder, histoblur {__version__}.\n"
        "# Run again with: histoblur qc --config THIS_FILE --out FOLDER SLIDES...\n"
    )
    return write_text_atomic(Path(out) / CONFIG_FILE, header + to_yaml(config))


def run(args: argparse.Namespace) -> int:
    """QC every slide; returns 0, 2 (usage) or 3 (some slides failed)."""
    from histoblur.inference.cohort import (
        ERROR,
        FLAGGED,
        NO_TISSUE,
        SchedulerUnreachableError,
        check_out,
        check_workers,
        check_writable,
        find_slides,
        run_cohort,
        unmatched_mpps,
    )
    from histoblur.io.atomic import ensure_writable_dir
    from histoblur.models.hub import WHAT, resolve, select_device
    from histoblur.models.registry import check_task

    try:
        config = qc_config(args)
        if not 1 <= args.repair_regions <= 10_000:
            raise ParameterError(
                f"--repair-regions must be between 1 and 10000, got {args.repair_regions}."
            )
        repair = RepairConfig(max_regions=args.repair_regions)
        check_workers(args.workers)
        slides = find_slides(args.slides)
        check_out(args.out, [*args.slides, *slides])  # before anything is written
        check_config_file(args.out)
        check_task(resolve(config.model, TASK), TASK, WHAT[TASK])
        if not args.scheduler:  # a cluster's workers may have the GPU this machine lacks
            select_device(config.device)
        ensure_writable_dir(args.out)
        check_writable(args.out)
        write_config(args.out, config)
    except ValidationError as exc:
        log.error(f"histoblur: error: {option_error(exc)}")
        return EXIT_USAGE
    except (HistoblurError, ValueError) as exc:
        log.error(f"histoblur: error: {exc}")
        return EXIT_USAGE
    unmatched = unmatched_mpps(config.slide_mpps, slides)
    if unmatched:
        source = args.slide_mpp_csv or f"slide_mpps in {args.config}"
        log.warning(
            f"{len(unmatched)} slide(s) of {source} are not among the slides given: "
            f"{', '.join(unmatched[:5])}{' ...' if len(unmatched) > 5 else ''}"
        )
    counts: Counter[str] = Counter()
    done: list[dict] = []
    with progress_bar() as bar:
        task = bar.add_task("slides", total=len(slides))
        tiles = bar.add_task(
            "  tiles", total=None, visible=args.workers == 1 and not args.scheduler
        )

        def finished(row: dict) -> None:
            bar.advance(task)
            counts[row["status"]] += 1
            done.append(row)
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
    if args.repair:
        failed += repair_slides([r for r in done if r["status"] not in (ERROR, NO_TISSUE)],
                                args.out, config, repair)  # fmt: skip
    log.info(
        f"{len(slides) - failed} of {len(slides)} slide(s) done ({counts[FLAGGED]} flagged, "
        f"{counts[NO_TISSUE]} without tissue); see {args.out / 'index.html'}"
    )
    return EXIT_SOME_FAILED if failed else 0


def repair_slides(rows: list[dict], out: Path, config: QCConfig, repair: RepairConfig) -> int:
    """``--repair``: repair every QC'd slide's flagged regions; returns how many failed."""
    from histoblur.inference.repair import Repairer, blurred_areas, repair_slide
    from histoblur.inference.segment import Segmenter

    segmenter = Segmenter.load(
        config.model, config.device, batch_size=config.batch_size, precision=config.precision
    )
    repairer = Repairer.load(segmenter, repair, config.device)
    failed = 0
    with progress_bar() as bar:
        task = bar.add_task("repairing", total=len(rows))
        for row in rows:
            try:
                regions = repair_slide(row["slide"], out / row["stem"], repairer)
            except HistoblurError as exc:
                log.error(f"{row['stem']}: repair failed: {exc}")
                failed += 1
            else:
                before, after = blurred_areas(regions)
                kept = sum(r["outcome"] == "repaired" for r in regions)
                log.info(
                    f"{row['stem']}: {kept} region(s) repaired, {len(regions) - kept} reverted "
                    f"(QC judged the repair worse); blurred area flagged in them {before:,.0f} -> "
                    f"{after:,.0f} um2 ({out / row['stem'] / 'repair'})"
                )
            bar.advance(task)
    return failed
