"""Cohort QC: many slides, resumable, failures isolated, in-process or on a Dask cluster.

A slide is done when ``OUT/<stem>/summary.json`` exists (it is written last, inside a folder that
is renamed into place), so a crashed run resumes where it stopped. Every failure becomes a row
with a one-sentence ``error``; the other slides go on. ``OUT/cohort.csv`` and ``OUT/index.html``
are rewritten at the end from every summary, old and new.
"""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from histoblur.errors import HistoblurError, InputError
from histoblur.inference.qc import SUMMARY, QCConfig, qc_slide
from histoblur.inference.segment import Segmenter
from histoblur.io.atomic import write_text_atomic
from histoblur.io.images import check_unique_stems
from histoblur.io.qc_report import cohort_index_html

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


def find_slides(inputs: Sequence[str | Path]) -> list[Path]:
    """Slide files from files and folders (folders searched recursively by suffix), sorted.

    Raises:
        InputError: empty input, a missing path, a folder without slides, or two slides sharing
            a file stem (their output folders would collide).
    """
    if not inputs:
        raise InputError("No slides given.")
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            inside = sorted(
                p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES
            )
            if not inside:
                raise InputError(f"Folder {item} holds no slide files.")
            found += inside
        elif item.exists():
            found.append(item)
        else:
            raise InputError(f"Slide {item} does not exist.")
    check_unique_stems(found, "QC them into different --out folders.")
    return found


def completed(out: Path, slide: Path) -> dict[str, Any] | None:
    """The saved summary of a slide already processed into ``out``, else None."""
    path = out / slide.stem / SUMMARY
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def error_row(slide: Path, exc: BaseException) -> dict[str, Any]:
    """A cohort row for a slide that failed, with a one-sentence reason."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not isinstance(exc, HistoblurError):
        reason = f"{type(exc).__name__}: {reason}"
    return {"stem": slide.stem, "slide": str(slide), "error": reason}


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

    Args:
        slides: slide paths (unique stems).
        out: output folder.
        config: QC settings.
        workers: local processes (1: in this process).
        scheduler: address of a running Dask scheduler (``tcp://host:port``); overrides workers.
        progress: called with each finished row (also for slides skipped as already done).
        slide_progress: tile progress ``(done, total)`` of the current slide (in-process only).
    """
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, Any]] = {}
    todo: list[Path] = []
    for slide in slides:
        done = completed(out, slide)
        if done is not None:
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
            except Exception as exc:
                row = error_row(slide, exc)
            rows[slide.stem] = row
            if progress is not None:
                progress(row)
    ordered = [rows[s.stem] for s in slides]
    write_cohort(out, ordered)
    return ordered


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
    write_text_atomic(out / "cohort.csv", buffer.getvalue())
    thumbs = {
        r["stem"]: f"{r['stem']}/overlay.png"
        for r in rows
        if not r.get("error") and (out / r["stem"] / "overlay.png").is_file()
    }
    write_text_atomic(out / "index.html", cohort_index_html(list(rows), thumbs))
