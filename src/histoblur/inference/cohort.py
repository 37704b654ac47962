"""Cohort QC: many slides, resumable, failures isolated, in-process or on a Dask cluster.

A slide is done when ``OUT/<stem>/`` holds every output file (it is built under a temporary
name and renamed into place, ``summary.json`` written last) and its summary's ``parameters``
equal the ones this run would use (:func:`histoblur.inference.qc.result_parameters`: model
and weights digest, threshold, resolutions, tissue and GeoJSON settings, histoblur version);
any other slide is QC'd again, so a killed or re-parametrised run resumes where it stopped and
never keeps a result made with other settings. Every failure becomes a row with a one-sentence
``error``; the other slides go on. ``OUT/cohort.csv`` and ``OUT/index.html`` are rebuilt at the
end from every complete summary in ``OUT``, old and new, plus the earlier error rows of slides
not yet done: a run with other slides into the same ``OUT`` adds rows, it never drops any.
Each row has a ``status``: ``ok``, ``flagged`` (blurred fraction above ``flag_above``),
``no_tissue`` or ``error``. ``OUT`` may not be, hold or lie inside an input folder, nor hold an
input slide, folder searches never take histoblur's own QC outputs (or hidden files) for
slides, and only files with a slide suffix are inputs.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from histoblur.errors import HistoblurError, InputError, OutputError, ParameterError
from histoblur.inference.qc import (
    MAX_SLIDE_MPP,
    MIN_SLIDE_MPP,
    OUTPUT_FILES,
    SUMMARY,
    QCConfig,
    choose_mpp,
    mpp_keys,
    qc_slide,
    result_parameters,
)
from histoblur.inference.segment import Segmenter
from histoblur.io.atomic import write_text_atomic
from histoblur.io.images import check_unique_stems
from histoblur.io.qc_report import COHORT_TITLE, cohort_index_html, slide_status
from histoblur.io.tables import csv_text
from histoblur.wsi.dicom import is_dicom_slide_folder

log = logging.getLogger(__name__)

SCHEDULER_TIMEOUT_S = 10  # how long to wait for a Dask scheduler to answer


class SchedulerUnreachableError(InputError):
    """The Dask scheduler given by address does not answer."""


SLIDE_SUFFIXES = (
    ".svs", ".ndpi", ".mrxs", ".scn", ".svslide", ".bif", ".vms", ".vmu", ".tif", ".tiff",
    ".dcm", ".png", ".jpg", ".jpeg",
)  # fmt: skip
COLUMNS = (
    "stem", "slide", "error", "status", "blurred_fraction", "blurred_area_mm2", "tissue_area_mm2",
    "blurred_regions", "tiles", "seconds", "read_seconds", "compute_seconds", "slide_mpp",
    "mpp_source", "working_mpp", "level", "reader", "model", "threshold",
)  # fmt: skip


COHORT_CSV, COHORT_INDEX = "cohort.csv", "index.html"
# a slide's status in the cohort table, in the order a QC engineer reads them
OK, FLAGGED, NO_TISSUE, ERROR = "ok", "flagged", "no_tissue", "error"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one).

    >>> usable_cores() >= 1
    True
    """
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def max_workers() -> int:
    """The most local worker processes ``--workers`` may ask for: 4 per usable core, 1 to 32.

    >>> 4 <= max_workers() <= 32
    True
    """
    return max(4, min(32, 4 * usable_cores()))


def compute_threads(readers: int, cores: int | None = None) -> int:
    """Torch threads for an in-process QC run beside ``readers`` decoding threads.

    The cores left after the readers, at least one. Measured on 2 cores (TCGA slide, JPEG 2000,
    2 readers): 1 torch thread 3.4 s, 2 threads 4.2 s; an oversubscribed torch pool stalls
    (see docs/wsi-qc.md).

    >>> compute_threads(2, cores=2), compute_threads(2, cores=8), compute_threads(1, cores=1)
    (1, 6, 1)
    """
    return max(1, (usable_cores() if cores is None else cores) - readers)


def check_workers(workers: int) -> int:
    """``workers`` when it is between 1 and :func:`max_workers`.

    Raises:
        ParameterError: one sentence with the allowed range.
    """
    top = max_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= top:
        raise ParameterError(
            f"--workers must be between 1 and {top} (4 per CPU core of this machine, at most "
            f"32), got {workers}; each worker is a process with its own copy of the network."
        )
    return workers


def is_qc_output(folder: Path) -> bool:
    """Whether ``folder`` is (part of) one slide's QC output.

    It is when it holds two or more of the files a slide's QC writes
    (:data:`~histoblur.inference.qc.OUTPUT_FILES`), so even a partial copy of an output folder
    is never searched for slides.
    """
    return sum((folder / name).is_file() for name in OUTPUT_FILES) >= 2


def _search(folder: Path) -> list[Path]:
    """Slides under ``folder``: slide files, and folders of one DICOM slide's instances.

    Hidden entries and QC output folders are left out; a DICOM slide folder (see
    :func:`~histoblur.wsi.dicom.is_dicom_slide_folder`) is one slide, not searched further.
    """
    found = []
    for here, dirs, files in os.walk(folder):  # like rglob: folder links are not followed
        if is_dicom_slide_folder(here):
            found.append(Path(here))
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if not d.startswith(".") and not is_qc_output(Path(here, d))]
        found += [
            Path(here, f)
            for f in files
            if not f.startswith(".") and Path(f).suffix.lower() in SLIDE_SUFFIXES
        ]
    return sorted(p for p in found if p.is_file() or p.is_dir())


def find_slides(inputs: Sequence[str | Path]) -> list[Path]:
    """Slides from files and folders (folders searched recursively by suffix), sorted.

    A folder search skips hidden files and folders (temporaries) and every folder holding a
    slide's QC outputs (see :func:`is_qc_output`): histoblur's own pictures are
    never taken for slides. A folder whose ``.dcm`` files are the instances of one DICOM
    whole-slide series is one slide (named after the folder), whether given or met in a
    search; a folder of single-file DICOM slides is searched as any other. Files named
    explicitly are taken when their suffix is a slide's (:data:`SLIDE_SUFFIXES`, any case).

    Raises:
        InputError: empty input, a missing path, a file without a slide suffix, a folder
            without slides, a folder mixing several DICOM series with a multi-file one, or two
            slides sharing a file stem (their output folders would collide).
    """
    if not inputs:
        raise InputError("No slides given.")
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            inside = [] if is_qc_output(item) else _search(item)
            if not inside:
                raise InputError(
                    f"Folder {item} holds no slide files ({', '.join(SLIDE_SUFFIXES)}; "
                    "histoblur's own QC outputs are not slides)."
                )
            found += inside
        elif item.exists() and item.suffix.lower() not in SLIDE_SUFFIXES:
            raise InputError(
                f"{item} is not a slide file (slides end in {', '.join(SLIDE_SUFFIXES)})."
            )
        elif item.exists():
            found.append(item)
        else:
            raise InputError(f"Slide {item} does not exist.")
    check_unique_stems(found, "QC them into different --out folders.")
    return found


def read_slide_mpps(path: str | Path) -> dict[str, float]:
    r"""Level-0 microns per pixel per slide from a CSV with the columns ``slide`` and ``mpp``.

    ``slide`` is a file name (``a.svs``) or a path (relative ones are taken from the CSV's
    folder); other columns are ignored. Returns file name or resolved path -> mpp, as
    :attr:`QCConfig.slide_mpps <histoblur.inference.qc.QCConfig>` takes it.

    Raises:
        InputError: a missing or unreadable file, no ``slide`` / ``mpp`` column, no rows, an
            empty slide, an mpp that is not a number in (0.01, 50], or a slide named twice.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     csv_path = Path(tmp) / "mpp.csv"
        ...     _ = csv_path.write_text("slide,mpp,scanner\na.svs,0.25,AT2\nb.tif,0.5,\n")
        ...     read_slide_mpps(csv_path)
        {'a.svs': 0.25, 'b.tif': 0.5}
    """
    path = Path(path)
    what = f"--slide-mpp-csv {path}"
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            table = [(reader.line_num, r) for r in reader if any(c.strip() for c in r)]
    except FileNotFoundError:
        raise InputError(f"{what} does not exist.") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} cannot be read as CSV text (it is not UTF-8).") from exc
    except (OSError, csv.Error) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise InputError(f"{what} cannot be read as CSV text: {reason}.") from exc
    header = [c.strip().lower() for c in table[0][1]] if table else []
    if "slide" not in header or "mpp" not in header:
        raise InputError(
            f"{what} needs a header row with the columns slide and mpp "
            f"(got {', '.join(header) or 'nothing'})."
        )
    if len(table) < 2:
        raise InputError(f"{what} lists no slides below its header.")
    name_at, mpp_at = header.index("slide"), header.index("mpp")
    mpps: dict[str, float] = {}
    lines: dict[str, int] = {}
    for line, row in table[1:]:
        slide = row[name_at].strip() if name_at < len(row) else ""
        raw = row[mpp_at].strip() if mpp_at < len(row) else ""
        if not slide:
            raise InputError(f"{what} line {line} names no slide.")
        try:
            mpp = float(raw)
        except ValueError:
            mpp = math.nan
        if not (math.isfinite(mpp) and MIN_SLIDE_MPP < mpp <= MAX_SLIDE_MPP):
            raise InputError(
                f"{what} line {line}: mpp {raw!r} of {slide} is not a number "
                f"above {MIN_SLIDE_MPP:g} and at most {MAX_SLIDE_MPP:g} microns per pixel."
            )
        key = slide if Path(slide).name == slide else str((path.parent / slide).resolve())
        if key in mpps:
            raise InputError(
                f"{what} line {line} names {slide} again (first on line "
                f"{lines[key]}); list each slide once."
            )
        mpps[key], lines[key] = mpp, line
    return mpps


def unmatched_mpps(mpps: dict[str, float], slides: Sequence[Path]) -> list[str]:
    """The entries of :func:`read_slide_mpps` that name none of ``slides`` (likely typos).

    >>> unmatched_mpps({"a.svs": 0.25, "c.svs": 0.5}, [Path("x/a.svs"), Path("b.svs")])
    ['c.svs']
    """
    names = {key for p in slides for key in mpp_keys(p)}
    return [key for key in mpps if key not in names]


def _inside(folder: Path, path: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it, as written or with links resolved."""
    for f, p in (
        (Path(os.path.abspath(folder)), Path(os.path.abspath(path))),
        (Path(folder).resolve(), Path(path).resolve()),
    ):
        if p == f or f in p.parents:
            return True
    try:
        return Path(folder).exists() and os.path.samefile(folder, path)
    except OSError:
        return False


def _ours(path: Path, marker: str) -> bool:
    """Whether an existing cohort file starts as histoblur writes it (``marker`` in its head)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return marker in f.read(4096)
    except OSError:
        return False


def check_out(out: Path, inputs: Iterable[str | Path]) -> Path:
    """Refuse an output folder that would mix QC outputs with the inputs; writes nothing.

    Args:
        out: the ``--out`` folder (need not exist).
        inputs: what the run reads: slide files and the folders given (searched for slides).

    Raises:
        OutputError: ``out`` is an existing file; is, holds or lies inside an input folder
            (a later folder search would meet the outputs); holds or is an input slide; or holds
            a ``cohort.csv`` / ``index.html`` that histoblur did not write.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"Output path {out} exists and is not a folder.")
    for item in map(Path, inputs):
        if item.is_dir() and _inside(item, out):
            where = "is" if _inside(out, item) else "lies inside"
            raise OutputError(
                f"--out {out} {where} the input folder {item}, so a later run would read "
                "histoblur's outputs as slides; choose an --out outside every input folder."
            )
        if _inside(out, item):
            what = "folder" if item.is_dir() else "slide"
            raise OutputError(
                f"--out {out} holds the input {what} {item}; histoblur never mixes outputs with "
                "inputs, so choose an --out that holds no input."
            )
    header = ",".join(COLUMNS[:3])
    for name, marker in ((COHORT_CSV, header), (COHORT_INDEX, f"<title>{COHORT_TITLE}</title>")):
        path = out / name
        if path.exists() and not (path.is_file() and _ours(path, marker)):
            raise OutputError(
                f"{path} exists and is not the {name} that histoblur qc writes; qc would "
                "replace it, so choose another --out."
            )
    return out


def check_writable(out: Path) -> Path:
    """Create ``out`` and prove that a file can be created in it (the probe is removed).

    Raises:
        OutputError: the folder cannot be created or written (read-only file system, no
            permission), in one sentence.
    """
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out, prefix=".histoblur-probe-"):
            pass
    except OSError as exc:
        reason = exc.strerror or exc
        raise OutputError(f"Cannot write in the output folder {out}: {reason}.") from exc
    return out


def complete_summary(folder: Path) -> dict[str, Any] | None:
    """The summary of a complete slide output folder (every output file there), else None.

    A folder of a killed run, with a damaged or missing ``summary.json`` or a missing picture,
    is not complete: its slide is QC'd again.
    """
    folder = Path(folder)
    if not all((folder / f).is_file() for f in OUTPUT_FILES):
        return None
    try:
        summary = json.loads((folder / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("stem") != folder.name:
        return None
    return summary


def completed(out: Path, slide: Path) -> dict[str, Any] | None:
    """The saved summary of a slide already processed into ``out`` (complete), else None."""
    return complete_summary(Path(out) / slide.stem)


def _shown(key: str, value: Any) -> str:
    """A parameter as a log line shows it: floats short, digests by their first 12 digits."""
    if isinstance(value, float):
        return f"{value:g}"
    if key == "model_sha256" and isinstance(value, str):
        return value[:12]
    return str(value)


def rerun_reason(
    summary: dict[str, Any], slide: Path, config: QCConfig, segmenter: Segmenter
) -> str:
    """Why a finished slide must be QC'd again with ``config``; '' when it is done.

    Its summary's ``parameters`` are compared with those this run would use (the slide's
    resolution found from the ``metadata_mpp`` it recorded, so the slide is not opened).

    Examples:
        >>> segmenter = Segmenter.load(tile=64)
        >>> params = result_parameters(QCConfig(), segmenter, 0.5)
        >>> summary = {"metadata_mpp": 0.5, "parameters": params}
        >>> rerun_reason(summary, Path("a.svs"), QCConfig(), segmenter)
        ''
        >>> rerun_reason(summary, Path("a.svs"), QCConfig(threshold=0.8), segmenter)
        'threshold changed (0.55 -> 0.8)'
        >>> rerun_reason({}, Path("a.svs"), QCConfig(), segmenter)
        'its summary records no QC parameters (an older histoblur wrote it)'
    """
    stored = summary.get("parameters")
    if not isinstance(stored, dict) or "metadata_mpp" not in summary:
        return "its summary records no QC parameters (an older histoblur wrote it)"
    try:
        mpp0 = choose_mpp(slide, summary["metadata_mpp"], config)[0]
    except InputError:
        return "its resolution is no longer given (--slide-mpp or --slide-mpp-csv)"
    now = result_parameters(config, segmenter, mpp0)
    changes = [
        f"{key} changed ({_shown(key, stored.get(key, 'unset'))} -> {_shown(key, value)})"
        for key, value in now.items()
        if stored.get(key, "unset") != value
    ]
    return ", ".join(changes)


def status(row: dict[str, Any], flag_above: float) -> str:
    """A cohort row's status: ``error``, ``no_tissue``, ``flagged`` or ``ok``.

    The one rule is :func:`histoblur.io.qc_report.slide_status`, which the slide reports show.

    ``flagged``: more than ``flag_above`` of the tissue blurred; ``no_tissue``: no tissue
    found (no window judged), whose blurred fraction is 0 but means nothing.

    >>> status({"error": "bad"}, 0.05), status({"tissue_area_mm2": 0.0, "tiles": 0}, 0.05)
    ('error', 'no_tissue')
    >>> row = {"tissue_area_mm2": "1.5", "tiles": "9", "blurred_fraction": "0.08"}  # from CSV
    >>> status(row, 0.05), status(row, 0.1)
    ('flagged', 'ok')
    """
    return slide_status(row, flag_above)


def same_slide(stored: str | None, slide: Path) -> bool:
    """Whether a summary's ``slide`` names ``slide``.

    Same file name, and the same file when both still exist: a moved folder, or a path written
    from another working directory, still matches by name.
    """
    if not stored:
        return True
    before = Path(stored)
    if before.name != slide.name:
        return False
    try:
        if before.exists() and slide.exists():
            return os.path.samefile(before, slide)
    except OSError:
        pass
    return True


def details(exc: BaseException) -> str:
    """The chain behind an error, one ``caused by Type: message`` line each (for -v)."""
    lines = [] if isinstance(exc, HistoblurError) else [f"{type(exc).__name__}: {exc}"]
    cause, seen = exc.__cause__ or exc.__context__, {id(exc)}
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        lines.append(f"caused by {type(cause).__name__}: {cause}")
        cause = cause.__cause__ or cause.__context__
    return "\n".join(lines)


def error_row(slide: Path, exc: BaseException) -> dict[str, Any]:
    """A cohort row for a slide that failed, with a one-sentence ``error``.

    ``detail`` holds the causes behind it: ``histoblur -v qc`` prints them; ``cohort.csv``
    leaves them out.
    """
    if isinstance(exc, HistoblurError):
        reason = " ".join(str(exc).split()) or type(exc).__name__
    elif isinstance(exc, MemoryError):
        reason = f"QC of {slide} ran out of memory; try a smaller --batch-size or fewer --workers."
    elif isinstance(exc, OSError):
        where = exc.filename or slide
        reason = f"QC of {slide} failed: {where}: {exc.strerror or type(exc).__name__}."
    else:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason = f"QC of {slide} failed unexpectedly ({type(exc).__name__}{': ' if first else ''}"
        reason += f"{first}); run with -v for the details."
    return {"stem": slide.stem, "slide": str(slide), "error": reason, "detail": details(exc)}


def clash_row(out: Path, slide: Path, stored: str) -> dict[str, Any]:
    """The row of a slide whose output folder holds another slide's QC (same file stem)."""
    return {
        "stem": slide.stem,
        "slide": str(slide),
        "error": (
            f"{out / slide.stem} already holds the QC of {stored}, another slide with the file "
            f"stem {slide.stem!r}; QC {slide} into another --out (or delete that folder)."
        ),
    }


@functools.lru_cache(maxsize=2)
def _segmenter(
    model: str, batch_size: int, threads: int, device: str = "cpu", precision: str = "auto"
) -> Segmenter:
    if threads:
        import torch

        torch.set_num_threads(threads)
    return Segmenter.load(model, device, batch_size=batch_size, precision=precision)


def qc_task(slide: str, out: str, config_json: str, threads: int = 0) -> dict[str, Any]:
    """QC one slide, never raising: the unit of work sent to Dask workers (plain arguments)."""
    config = QCConfig.model_validate_json(config_json)
    path = Path(slide)
    try:
        segmenter = _segmenter(
            config.model, config.batch_size, threads, config.device, config.precision
        )
        return {**qc_slide(path, Path(out), config, segmenter), "error": ""}
    except Exception as exc:  # isolation: one broken slide must not stop a cohort
        return error_row(path, exc)


def run_cohort(
    slides: Sequence[Path],
    out: Path,
    config: QCConfig,
    workers: int = 1,
    scheduler: str | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    slide_progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """QC every slide not yet done, then write ``cohort.csv`` and ``index.html``; returns rows.

    A slide is done when its output folder is complete and was made with this run's
    parameters (see :func:`rerun_reason`; each re-run is logged with its reason).
    ``cohort.csv`` and ``index.html`` cover every slide QC'd into ``out`` (see
    :func:`cohort_rows`); the returned rows are this run's slides, in their order, each with
    its ``status``.

    Args:
        slides: slide paths (unique stems).
        out: output folder (checked with :func:`check_out` against ``slides``).
        config: QC settings.
        workers: local processes (1: in this process; at most :func:`max_workers`).
        scheduler: address of a running Dask scheduler (``tcp://host:port``); overrides workers.
        progress: called with each finished row (also for slides skipped as already done).
        slide_progress: tile progress ``(done, total)`` of the current slide (in-process only).
        overwrite: QC every slide again, done or not (a folder holding another slide's QC is
            still never replaced).

    Raises:
        OutputError: ``out`` holds an input or cannot be written (before any slide is read).
        ParameterError: ``workers`` out of range.
    """
    slides = [Path(s) for s in slides]
    out = Path(out)
    check_workers(workers)
    check_unique_stems(slides, "QC them into different --out folders.")
    check_out(out, slides)
    check_writable(out)
    distributed = bool(scheduler or workers > 1)
    # the network here: in-process it runs the slides; on a cluster it only tells what a
    # slide's parameters would be (its weights digest), so it stays on the CPU
    local = functools.partial(
        _segmenter,
        config.model,
        config.batch_size,
        0 if distributed else compute_threads(config.readers),
        "cpu" if distributed else config.device,
        config.precision,
    )
    rows: dict[str, dict[str, Any]] = {}
    todo: list[Path] = []
    for slide in slides:
        done = completed(out, slide)
        if done is not None and not same_slide(done.get("slide"), slide):
            rows[slide.stem] = clash_row(out, slide, str(done.get("slide")))
        elif done is not None and not overwrite:
            reason = rerun_reason(done, slide, config, local())
            if not reason:
                rows[slide.stem] = {**done, "error": "", "skipped": True}
            else:
                log.info(f"{slide.stem}: QC again: {reason}")
                todo.append(slide)
                continue
        else:
            todo.append(slide)
            continue
        if progress is not None:
            progress(with_status(rows[slide.stem], config.flag_above))
    cfg = config.model_dump_json()
    if todo and distributed:
        for row in _run_dask(todo, out, cfg, workers, scheduler):
            rows[row["stem"]] = row
            if progress is not None:
                progress(with_status(row, config.flag_above))
    else:
        for slide in todo:
            try:
                row = {**qc_slide(slide, out, config, local(), slide_progress), "error": ""}
            except Exception as exc:  # isolation: one broken slide must not stop a cohort
                row = error_row(slide, exc)
            rows[slide.stem] = row
            if progress is not None:
                progress(with_status(row, config.flag_above))
    ordered = [with_status(rows[s.stem], config.flag_above) for s in slides]
    write_cohort(out, cohort_rows(out, ordered, config.flag_above), config.flag_above)
    return ordered


def with_status(row: dict[str, Any], flag_above: float) -> dict[str, Any]:
    """``row`` with its :func:`status`."""
    return {**row, "status": status(row, flag_above)}


def read_cohort(out: Path) -> list[dict[str, str]]:
    """The rows of an earlier ``out/cohort.csv`` (none when it is missing or unreadable)."""
    try:
        with open(out / COHORT_CSV, encoding="utf-8", newline="") as f:
            return [r for r in csv.DictReader(f) if r.get("stem")]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def cohort_rows(
    out: Path, rows: Sequence[dict[str, Any]], flag_above: float
) -> list[dict[str, Any]]:
    """Every slide of ``out``: this run's ``rows`` merged into what ``out`` already records.

    One row per complete output folder (its ``summary.json``; this run's rows win), plus the
    error rows of the earlier ``cohort.csv`` and of this run, one per slide (the later wins),
    less those whose slide is now done. So a run with other slides into the same ``out`` adds
    rows and never drops any; sorted by stem, the finished row of a stem first; each row
    with its :func:`status` under ``flag_above``.
    """
    done: dict[str, dict[str, Any]] = {}
    for path in sorted(out.glob(f"*/{SUMMARY}")):
        summary = complete_summary(path.parent)
        if summary is not None:
            done[path.parent.name] = {**summary, "error": ""}
    errors = [dict(r) for r in read_cohort(out) if r.get("error")]
    for row in rows:
        if row.get("error"):
            errors.append(row)
        else:
            done[row["stem"]] = row
    failed: dict[str, list[dict[str, Any]]] = {}
    for row in errors:
        stem, slide = str(row["stem"]), Path(str(row.get("slide", "")))
        finished = done.get(stem)
        if finished is not None and same_slide(finished.get("slide"), slide):
            continue  # that slide is done now
        same = failed.setdefault(stem, [])
        same[:] = [r for r in same if not same_slide(r.get("slide"), slide)] + [row]
    merged = [*done.values(), *(r for rs in failed.values() for r in rs)]
    merged = [with_status(r, flag_above) for r in merged]
    return sorted(merged, key=lambda r: (str(r["stem"]), bool(r.get("error")), str(r["slide"])))


def _run_dask(
    slides: Sequence[Path], out: Path, config_json: str, workers: int, scheduler: str | None
) -> Any:
    """Yield rows as slides finish on a Dask cluster (existing, or local with ``workers``)."""
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler:
        try:
            client = Client(scheduler, timeout=f"{SCHEDULER_TIMEOUT_S}s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise SchedulerUnreachableError(
                f"Cannot reach the Dask scheduler at {scheduler} (no answer within "
                f"{SCHEDULER_TIMEOUT_S} s); check the address, or start one with "
                "'dask scheduler'."
            ) from exc
    else:
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(cluster)
    try:
        threads = 1 if cluster is not None else 0
        futures = [
            client.submit(qc_task, str(s), str(out), config_json, threads, pure=False)
            for s in slides
        ]
        for future in as_completed(futures):
            yield future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def write_cohort(out: Path, rows: Sequence[dict[str, Any]], flag_above: float) -> None:
    """``cohort.csv`` (one row per slide, ``error`` and ``status`` columns) and ``index.html``.

    Both are written atomically (a temporary file renamed into place), from the same rows.
    """
    write_text_atomic(out / COHORT_CSV, csv_text(rows, COLUMNS, extras="ignore"))
    thumbs = {
        r["stem"]: f"{r['stem']}/overlay.png"
        for r in rows
        if not r.get("error") and (out / r["stem"] / "overlay.png").is_file()
    }
    write_text_atomic(out / COHORT_INDEX, cohort_index_html(list(rows), thumbs, flag_above))
