"""Cohort QC: many slides, resumable, failures isolated, in-process or on a Dask cluster.

A slide is done when ``OUT/<stem>/summary.json`` exists (it is written last, inside a folder that
is renamed into place), so a crashed run resumes where it stopped. Every failure becomes a row
with a one-sentence ``error``; the other slides go on. ``OUT/cohort.csv`` and ``OUT/index.html``
are rewritten at the end from every summary in ``OUT``, old and new, plus the earlier error rows
of slides not yet done: a run with other slides into the same ``OUT`` adds rows, it never drops
any. ``OUT`` may not be, hold or lie inside an input folder, nor hold an input slide, and
folder searches never take histoblur's own QC outputs (or hidden files) for slides.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from histoblur.errors import HistoblurError, InputError, OutputError, ParameterError
from histoblur.inference.qc import SUMMARY, QCConfig, qc_slide
from histoblur.inference.segment import Segmenter
from histoblur.io.atomic import write_text_atomic
from histoblur.io.images import check_unique_stems
from histoblur.io.qc_report import COHORT_TITLE, cohort_index_html

SCHEDULER_TIMEOUT_S = 10  # how long to wait for a Dask scheduler to answer


class SchedulerUnreachableError(InputError):
    """The Dask scheduler given by address does not answer."""


SLIDE_SUFFIXES = (
    ".svs", ".ndpi", ".mrxs", ".scn", ".svslide", ".bif", ".vms", ".vmu", ".tif", ".tiff",
    ".dcm", ".png", ".jpg", ".jpeg",
)  # fmt: skip
COLUMNS = (
    "stem", "slide", "error", "blurred_fraction", "blurred_area_mm2", "tissue_area_mm2",
    "blurred_regions", "tiles", "seconds", "read_seconds", "compute_seconds", "slide_mpp",
    "mpp_source", "working_mpp", "level", "reader", "model", "threshold",
)  # fmt: skip


COHORT_CSV, COHORT_INDEX = "cohort.csv", "index.html"


def max_workers() -> int:
    """The most local worker processes ``--workers`` may ask for: 4 per usable core, 1 to 32.

    >>> 4 <= max_workers() <= 32
    True
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(4, min(32, 4 * cores))


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
    """Whether ``folder`` is one slide's QC output (``summary.json`` beside ``blur_mask.png``)."""
    return (folder / SUMMARY).is_file() and (folder / "blur_mask.png").is_file()


def _search(folder: Path) -> list[Path]:
    """Slide files under ``folder``: hidden entries and QC output folders are left out."""
    found = []
    for here, dirs, files in os.walk(folder):  # like rglob: folder links are not followed
        dirs[:] = [d for d in dirs if not d.startswith(".") and not is_qc_output(Path(here, d))]
        found += [
            Path(here, f)
            for f in files
            if not f.startswith(".") and Path(f).suffix.lower() in SLIDE_SUFFIXES
        ]
    return sorted(p for p in found if p.is_file())


def find_slides(inputs: Sequence[str | Path]) -> list[Path]:
    """Slide files from files and folders (folders searched recursively by suffix), sorted.

    A folder search skips hidden files and folders (temporaries) and every folder holding a
    slide's QC outputs (``summary.json`` and ``blur_mask.png``): histoblur's own pictures are
    never taken for slides. Files named explicitly are always taken.

    Raises:
        InputError: empty input, a missing path, a folder without slides, or two slides sharing
            a file stem (their output folders would collide).
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
        elif item.exists():
            found.append(item)
        else:
            raise InputError(f"Slide {item} does not exist.")
    check_unique_stems(found, "QC them into different --out folders.")
    return found


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


def completed(out: Path, slide: Path) -> dict[str, Any] | None:
    """The saved summary of a slide already processed into ``out``, else None."""
    path = out / slide.stem / SUMMARY
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


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
def _segmenter(model: str, batch_size: int, threads: int, device: str = "cpu") -> Segmenter:
    if threads:
        import torch

        torch.set_num_threads(threads)
    return Segmenter.load(model, device, batch_size=batch_size)


def qc_task(slide: str, out: str, config_json: str, threads: int = 0) -> dict[str, Any]:
    """QC one slide, never raising: the unit of work sent to Dask workers (plain arguments)."""
    config = QCConfig.model_validate_json(config_json)
    path = Path(slide)
    try:
        segmenter = _segmenter(config.model, config.batch_size, threads, config.device)
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
) -> list[dict[str, Any]]:
    """QC every slide not yet done, then write ``cohort.csv`` and ``index.html``; returns rows.

    ``cohort.csv`` and ``index.html`` cover every slide QC'd into ``out`` (see
    :func:`cohort_rows`); the returned rows are this run's slides, in their order.

    Args:
        slides: slide paths (unique stems).
        out: output folder (checked with :func:`check_out` against ``slides``).
        config: QC settings.
        workers: local processes (1: in this process; at most :func:`max_workers`).
        scheduler: address of a running Dask scheduler (``tcp://host:port``); overrides workers.
        progress: called with each finished row (also for slides skipped as already done).
        slide_progress: tile progress ``(done, total)`` of the current slide (in-process only).

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
    rows: dict[str, dict[str, Any]] = {}
    todo: list[Path] = []
    for slide in slides:
        done = completed(out, slide)
        if done is not None and not same_slide(done.get("slide"), slide):
            rows[slide.stem] = clash_row(out, slide, str(done.get("slide")))
            if progress is not None:
                progress(rows[slide.stem])
        elif done is not None:
            rows[slide.stem] = {**done, "error": "", "skipped": True}
            if progress is not None:
                progress(rows[slide.stem])
        else:
            todo.append(slide)
    cfg = config.model_dump_json()
    if todo and (scheduler or workers > 1):
        for row in _run_dask(todo, out, cfg, workers, scheduler):
            rows[row["stem"]] = row
            if progress is not None:
                progress(row)
    else:
        for slide in todo:
            try:
                segmenter = _segmenter(config.model, config.batch_size, 0, config.device)
                row = {**qc_slide(slide, out, config, segmenter, slide_progress), "error": ""}
            except Exception as exc:  # isolation: one broken slide must not stop a cohort
                row = error_row(slide, exc)
            rows[slide.stem] = row
            if progress is not None:
                progress(row)
    ordered = [rows[s.stem] for s in slides]
    write_cohort(out, cohort_rows(out, ordered))
    return ordered


def read_cohort(out: Path) -> list[dict[str, str]]:
    """The rows of an earlier ``out/cohort.csv`` (none when it is missing or unreadable)."""
    try:
        with open(out / COHORT_CSV, encoding="utf-8", newline="") as f:
            return [r for r in csv.DictReader(f) if r.get("stem")]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def cohort_rows(out: Path, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every slide of ``out``: this run's ``rows`` merged into what ``out`` already records.

    One row per finished output folder (its ``summary.json``; this run's rows win), plus the
    error rows of the earlier ``cohort.csv`` and of this run, one per slide (the later wins),
    less those whose slide is now done. So a run with other slides into the same ``out`` adds
    rows and never drops any; sorted by stem, the finished row of a stem first.
    """
    done: dict[str, dict[str, Any]] = {}
    for path in sorted(out.glob(f"*/{SUMMARY}")):
        if path.parent.name.startswith("."):
            continue
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(summary, dict) and summary.get("stem") == path.parent.name:
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


def write_cohort(out: Path, rows: Sequence[dict[str, Any]]) -> None:
    """``cohort.csv`` (one row per slide, ``error`` column) and ``index.html``, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in COLUMNS})
    write_text_atomic(out / COHORT_CSV, buffer.getvalue())
    thumbs = {
        r["stem"]: f"{r['stem']}/overlay.png"
        for r in rows
        if not r.get("error") and (out / r["stem"] / "overlay.png").is_file()
    }
    write_text_atomic(out / COHORT_INDEX, cohort_index_html(list(rows), thumbs))
