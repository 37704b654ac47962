"""Run folders every histoblur trainer shares: create, replace, resume, checkpoint, history.

:func:`run_folder` is the one place that creates, replaces and resumes run folders;
:func:`training_run` is a run folder with torch set up; the epoch loop is
:mod:`histoblur.training.loop`.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from histoblur.errors import InputError, OutputError, ParameterError
from histoblur.io.atomic import (
    atomic_path,
    ensure_writable_dir,
    owner_ended,
    owner_tag,
    write_text_atomic,
)
from histoblur.io.checkpoints import provenance, save_checkpoint
from histoblur.io.paths import refuse_folder_with_inputs
from histoblur.io.tables import csv_text
from histoblur.training.loop import Progress, TrainConfig, start_torch

TRAINER_STATE = "trainer.pt"


"""Called after every optimisation step with ``(step, total steps, {"loss": ...})``."""


def checkpoint_meta(
    task: str,
    architecture: BaseModel,
    training: TrainConfig,
    inference: dict[str, Any],
    row: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """The ``config.json`` stored beside a network trained to the end of an epoch.

    Task, architecture, how to run it, the full training config, provenance (version, git
    revision), the epoch and its ``history.csv`` row (``metrics``), the seed, and ``extra``.
    """
    return {
        "task": task,
        "model": architecture.model_dump(mode="json"),
        "inference": inference,
        "training": training.model_dump(mode="json"),
        **provenance(),
        "epoch": row["epoch"],
        "metrics": row,
        "seed": training.seed,
        **extra,
    }


RUN_CONFIG = "config.json"


def run_inputs(config: BaseModel) -> list[Path]:
    """Every existing path a config names (sharp folder, datasets, images, init...) but ``out``."""
    found: list[Path] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
        elif isinstance(value, (str, Path)) and str(value) and _exists(Path(value)):
            found.append(Path(value))

    walk({k: v for k, v in config.model_dump().items() if k != "out"})
    return found


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long, or with a NUL byte
        return False


def _read_run_config(out: Path) -> dict[str, Any] | None:
    """``out/config.json`` as written by :func:`run_folder`, or None when it is not one."""
    try:
        data = json.loads((out / RUN_CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    ok = isinstance(data, dict) and isinstance(data.get("training"), dict)
    return data if ok and "histoblur_version" in data else None


def is_stub(out: Path) -> bool:
    """Whether ``out`` holds only what a run writes before its first checkpoint (config.json)."""
    names = [p.name for p in out.iterdir()] if out.is_dir() else []
    return names == [RUN_CONFIG] and _read_run_config(out) is not None


def _check_resume(out: Path, training: dict[str, Any]) -> None:
    """Raise InputError unless ``out`` is a run with a trainer state and the same config."""
    if not (out / "last" / TRAINER_STATE).is_file():
        if is_stub(out):
            raise InputError(f"Run {out} has no checkpoint yet; start it again without --resume.")
        raise InputError(f"Cannot resume: {out / 'last'} holds no {TRAINER_STATE}.")
    try:
        saved = json.loads((out / RUN_CONFIG).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"Cannot resume {out}: its {RUN_CONFIG} cannot be read.") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"Cannot resume {out}: its {RUN_CONFIG} is not valid JSON.") from exc
    saved = saved.get("training") if isinstance(saved, dict) else None
    if not isinstance(saved, dict):
        raise InputError(f"Cannot resume {out}: its {RUN_CONFIG} holds no training config.")
    changed = sorted(
        k for k in training if k not in ("epochs", "out") and saved.get(k) != training[k]
    )
    if not _same_folder(saved.get("out"), training["out"]):
        changed = ["out", *changed]
    if changed:
        raise InputError(
            f"Cannot resume {out}: {', '.join(changed)} differ(s) from the run's config "
            "(only epochs may change, to train longer)."
        )


def _same_folder(saved: Any, out: Any) -> bool:
    """Whether the ``out`` saved in a run's config names the folder ``out`` names now.

    Both are resolved first (against the current directory), so ``runs/a``, ``./runs/a`` and
    ``/abs/runs/a`` are one folder.
    """
    if not isinstance(saved, str) or not saved:
        return False
    try:
        return Path(saved).resolve() == Path(out).resolve()
    except (OSError, RuntimeError, ValueError):
        return saved == out


class RunFolder:
    """The folder a run trains into, and the run's bookkeeping; made by :func:`run_folder`.

    Every trainer goes through the same loop (in :func:`training_run`)::

        run.begin(parts)  # networks, optimizers, schedules, generators to resume
        for epoch in run.epochs(config.epochs, config.steps_per_epoch):
            losses = train_steps(run, ...)  # steps_per_epoch steps on run.device
            row = run.row(loss=..., **scores)  # validate
            run.save_epoch(row, weights, checkpoint_config, score)
        return {"history": run.history, "best": run.best, ...}

    Attributes:
        path: the run folder.
        resume: whether the run continues the one saved in ``path``.
        device: the device the run trains on (set by :func:`training_run`).
        progress: called after every optimisation step (set by :func:`training_run`).
        step: optimisation steps taken so far (advanced by :func:`train_updates`).
        epoch, epoch_started: the epoch being trained and when it started (:meth:`epochs`).
        steps_per_epoch, total_steps: the run's length (:meth:`epochs`).
        best: the best validation score so far (``-inf`` before the first epoch).
        history: one row per finished epoch.
    """

    def __init__(self, path: Path, backup: Path | None, resume: bool = False) -> None:
        self.path, self.backup, self.resume, self.started = path, backup, resume, False
        self.device = torch.device("cpu")
        self.progress: Progress | None = None
        self.parts: dict[str, Any] = {}
        self.step, self.best = 0, -math.inf
        self.epoch, self.steps_per_epoch, self.total_steps = 0, 1, 0
        self.epoch_started = time.perf_counter()
        self.history: list[dict[str, Any]] = []

    def begin(self, parts: dict[str, Any]) -> int:
        """Register what ``last/trainer.pt`` keeps; a resumed run restores it (see below).

        ``parts`` maps names to objects with ``state_dict`` / ``load_state_dict``: networks,
        optimizers, schedules, :class:`GeneratorPart`, :class:`Values`; torch's global random
        state (:class:`TorchRNGPart`: dropout draws from it) is added. Resuming restores them
        and the step, best score and history (:func:`resume_trainer`).

        Returns:
            The step to start from (0 for a new run), also :attr:`step`.
        """
        self.parts = {**parts, TORCH_RNG: TorchRNGPart()}
        if self.resume:
            self.step, self.best, self.history = resume_trainer(self.path, self.parts)
        return self.step

    def epochs(self, epochs: int, steps_per_epoch: int) -> Iterator[int]:
        """The (1-based) epochs still to train, after :attr:`step` steps.

        Sets the run's length (:attr:`steps_per_epoch` of :attr:`total_steps`), then, for each
        epoch, :attr:`epoch` and the clock of :meth:`row`.
        """
        self.steps_per_epoch, self.total_steps = steps_per_epoch, epochs * steps_per_epoch
        for epoch in range(self.step // steps_per_epoch + 1, epochs + 1):
            self.epoch, self.epoch_started = epoch, time.perf_counter()
            yield epoch

    def row(self, **columns: Any) -> dict[str, Any]:
        """The epoch's ``history.csv`` row: epoch, step, ``columns`` in order, then its seconds."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            **columns,
            "seconds": round(time.perf_counter() - self.epoch_started, 1),
        }

    def save_epoch(
        self,
        row: dict[str, Any],
        weights: dict[str, torch.Tensor],
        config: dict[str, Any],
        score: float,
        also: dict[str, tuple[dict[str, torch.Tensor], dict[str, Any]]] | None = None,
    ) -> float:
        """End an epoch (at :attr:`step`): record ``row``, write checkpoints and ``history.csv``.

        ``also`` names side checkpoints (``{"critic": (weights, config)}``), written first to
        their folders. Then :func:`save_epoch` writes ``best/`` (when ``score`` beats
        :attr:`best`), ``last/`` with the trainer state of the parts given to :meth:`begin`,
        and ``history.csv``. The first call makes the run the one kept.

        Returns:
            The new best score.
        """
        self.history.append(row)
        for name, (state, meta) in (also or {}).items():
            save_checkpoint(self.path / name, state, meta)
        trainer = trainer_state(self.parts, self.step, self.history) if self.parts else None
        self.best = save_epoch(self.path, self.history, weights, config, score, self.best, trainer)
        self.commit()
        return self.best

    def commit(self) -> None:
        """The new run has a checkpoint: drop the previous run it replaces."""
        self.started = True
        if self.backup is not None:
            shutil.rmtree(self.backup, ignore_errors=True)
            self.backup = None


@contextlib.contextmanager
def run_folder(
    config: BaseModel, resume: bool = False, overwrite: bool = False
) -> Iterator[RunFolder]:
    """Prepare ``config.out`` for a run, write its ``config.json``, and undo both if it fails early.

    A folder holding only a run's ``config.json`` (a run that failed before its first
    checkpoint) counts as empty. With ``overwrite`` a previous run is moved aside to a hidden
    sibling (``.NAME.replaced-PID@HOST-...``) and deleted only once the new run saved its first
    checkpoint (:meth:`RunFolder.save_epoch`); if the block raises before that, the new folder
    is removed and the previous run moved back. A failed resume leaves ``config.json`` as it
    was. A previous run left aside by a killed ``--overwrite`` run is settled first
    (:func:`recover_killed_replacement`).

    Args:
        config: the run's validated config (``out``: the run folder).
        resume: continue the run in ``out`` (only ``epochs`` may differ from the saved config).
        overwrite: replace a non-empty ``out``.

    Raises:
        ParameterError: both ``resume`` and ``overwrite``.
        InputError: cannot resume (no trainer state, corrupt or changed config).
        OutputError: ``out`` is a file, is or holds an input, or is not empty and neither
            ``resume`` nor ``overwrite`` is set.
    """
    if resume and overwrite:
        raise ParameterError(
            "Pass --resume to continue a run or --overwrite to start it again, not both."
        )
    out = Path(config.out)
    training = config.model_dump(mode="json")
    if out.exists() and not out.is_dir():
        raise OutputError(f"Run folder {out} is a file; set out to a folder.")
    recover_killed_replacement(out)
    existed, backup = out.exists(), None
    if resume:
        _check_resume(out, training)
    else:
        refuse_folder_with_inputs(out, run_inputs(config), "out")
        if existed and any(out.iterdir()) and not is_stub(out):
            if not overwrite:
                raise OutputError(
                    f"Run folder {out} already exists and is not empty; pass --resume to "
                    "continue it or --overwrite to start again."
                )
            backup = _move_aside(out)
    previous = (out / RUN_CONFIG).read_bytes() if (out / RUN_CONFIG).is_file() else None
    run = RunFolder(out, backup, resume)
    try:
        ensure_writable_dir(out)
        write_text_atomic(
            out / RUN_CONFIG, json.dumps({"training": training, **provenance()}, indent=2) + "\n"
        )
        yield run
    except BaseException:
        if not run.started:
            _roll_back(out, resume, existed and backup is None, previous, backup)
        raise
    run.commit()


@contextlib.contextmanager
def training_run(
    config: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Iterator[RunFolder]:
    """:func:`run_folder`, with torch set up for the run and ``progress`` kept on it.

    Inside the run folder, torch gets the config's CPU threads and seed and the run its device
    (:func:`start_torch`, :attr:`RunFolder.device`); a device that cannot be used fails like
    any error before the first checkpoint (the folder is restored).
    """
    with run_folder(config, resume, overwrite) as run:
        run.device = start_torch(config.threads, config.device, config.seed)
        run.progress = progress
        yield run


def recover_killed_replacement(out: Path) -> Path | None:
    """Settle a previous run left aside by an ``--overwrite`` run that was killed.

    When the killed run had saved a checkpoint, it replaced the previous run: the backup is
    deleted. When it had not, the previous run is moved back in place of the new folder
    (which then held at most a ``config.json``). Returns the backup handled, if any.
    """
    if not out.parent.is_dir():
        return None
    for backup in sorted(out.parent.glob(f".{glob.escape(out.name)}.replaced-*")):
        if not backup.is_dir() or not owner_ended(backup.name[len(out.name) + 1 :]):
            continue
        if (out / "last").is_dir():
            shutil.rmtree(backup, ignore_errors=True)
        elif not out.exists() or is_stub(out) or not any(out.iterdir()):
            if out.exists():
                shutil.rmtree(out)
            backup.rename(out)
        else:
            continue  # the folder holds files of unknown origin: leave both to the user
        return backup
    return None


def _move_aside(out: Path) -> Path:
    """Rename ``out`` to a new hidden sibling and return it."""
    prefix = f".{out.name}.replaced-{owner_tag()}-"
    backup = Path(tempfile.mkdtemp(prefix=prefix, dir=out.parent))
    try:
        backup.rmdir()
        out.rename(backup)
    except OSError as exc:
        raise OutputError(
            f"Cannot move the previous run {out} aside: {exc.strerror or exc}."
        ) from exc
    return backup


def _roll_back(
    out: Path, resume: bool, reused: bool, previous: bytes | None, backup: Path | None
) -> None:
    """Undo :func:`run_folder` after a failure before the first checkpoint.

    A resumed run only gets its ``config.json`` back. A new run's files are deleted, and its
    folder unless it existed before (``reused``: empty, or a stub whose ``config.json`` is
    written back); the previous run it replaced is moved back.
    """
    try:
        if not resume and out.is_dir():
            if reused:
                for entry in out.iterdir():
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            else:
                shutil.rmtree(out)
        if previous is not None:
            with atomic_path(out / RUN_CONFIG) as tmp:
                tmp.write_bytes(previous)
        if backup is not None:
            backup.rename(out)
    except OSError as exc:
        kept = f"; the previous run is kept in {backup}" if backup is not None else ""
        raise OutputError(f"The run failed and {out} could not be cleaned up{kept}.") from exc


def trainer_state(
    parts: dict[str, Any], step: int, history: list[dict[str, Any]]
) -> dict[str, Any]:
    """What ``last/trainer.pt`` holds to resume: each part's ``state_dict``, the step, the history.

    ``parts`` maps names to objects with ``state_dict`` (networks, optimizers, schedules);
    :func:`save_epoch` adds the best score.
    """
    state = {name: part.state_dict() for name, part in parts.items()}
    return {**state, "step": step, "history": json.dumps(history)}


class GeneratorPart:
    """A ``torch.Generator`` as a trainer part (``state_dict`` / ``load_state_dict``)."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The generator's state."""
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the generator's state."""
        self.generator.set_state(state["state"])


TORCH_RNG = "torch_rng"


class TorchRNGPart:
    """Torch's global random state (CPU, and every CUDA device) as a trainer part.

    Layers such as dropout draw from it. A trainer state saved without it (older runs) resumes
    without it (:attr:`optional`).
    """

    optional = True

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The global random state."""
        state = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the global random state (CUDA's when saved with as many devices)."""
        torch.set_rng_state(state["cpu"])
        cuda = state.get("cuda")
        if (
            cuda is not None
            and torch.cuda.is_available()
            and len(cuda) == torch.cuda.device_count()
        ):
            torch.cuda.set_rng_state_all(list(cuda))


class Values:
    """Plain values (numbers, strings, None) as a trainer part.

    For what a resumed run cannot recompute, e.g. statistics of a phase it skips.
    """

    def __init__(self, **values: Any) -> None:
        self.values = values

    def state_dict(self) -> dict[str, Any]:
        """The values."""
        return dict(self.values)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the values."""
        self.values = dict(state)


def _follow_schedule(schedule: Any) -> None:
    """Set the learning rate of a restored ``LambdaLR`` from its own (new) lambda.

    A resumed run may train longer (more epochs): the schedule's lambda then spans the new
    total, and the optimizer's saved learning rate (from the old total) would be used for one
    step before the schedule catches up. With an unchanged total this sets the same value.
    """
    if isinstance(schedule, torch.optim.lr_scheduler.LambdaLR):
        step = schedule.last_epoch
        pairs = zip(schedule.base_lrs, schedule.lr_lambdas, strict=True)
        lrs = [base * f(step) for base, f in pairs]
        for group, lr in zip(schedule.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr


def resume_trainer(run: Path, parts: dict[str, Any]) -> tuple[int, float, list[dict[str, Any]]]:
    """Restore ``parts`` from ``run/last/trainer.pt`` (see :func:`trainer_state`).

    A ``LambdaLR`` schedule then follows its lambda for the new total steps
    (:func:`_follow_schedule`).

    Returns:
        The step, best score and history saved with it.

    Raises:
        InputError: the file is not a plain trainer state (a pickle of arbitrary objects is
            refused) or does not match ``parts``.
    """
    path = run / "last" / TRAINER_STATE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is bad input
        raise InputError(
            f"{path} is not a plain trainer state (refused by torch.load with weights_only=True)."
        ) from exc
    try:
        for name, part in parts.items():
            if name in state or not getattr(part, "optional", False):
                part.load_state_dict(state[name])
        for part in parts.values():
            _follow_schedule(part)
        history = json.loads(str(state["history"]))
        return int(state["step"]), float(state["best"]), history
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
        raise InputError(f"{path} does not match this run's networks and optimizer.") from exc


def save_epoch(
    out: Path,
    history: list[dict[str, Any]],
    state: dict[str, torch.Tensor],
    config: dict[str, Any],
    score: float,
    best: float,
    trainer: dict[str, Any] | None = None,
) -> float:
    """Write ``best/`` when ``score`` beats ``best``, ``last/`` and ``history.csv``.

    ``trainer`` (:func:`trainer_state`) is saved with the new best score as
    ``last/trainer.pt``, for ``--resume``.

    Returns:
        The new best score.
    """
    if score > best:
        best = score
        save_checkpoint(out / "best", state, config)
    save_checkpoint(out / "last", state, config)
    if trainer is not None:
        with atomic_path(out / "last" / TRAINER_STATE) as tmp:
            torch.save({**trainer, "best": best}, tmp)
    write_text_atomic(out / "history.csv", history_csv(history))
    return best


def history_csv(rows: list[dict[str, Any]]) -> str:
    """Per-epoch rows as CSV (columns: every key seen, in first-seen order)."""
    return csv_text(rows)
