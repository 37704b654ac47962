"""What every histoblur trainer shares: run folders, torch set-up, batch streams, schedules.

The segmenter, classifier and deblurring trainers differ in data, loss and validation; the
pieces here are the same for all three.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch
from pydantic import BaseModel
from torch.utils.data import IterableDataset, get_worker_info

from histoblur.errors import InputError, OutputError
from histoblur.io.atomic import ensure_writable_dir, write_text_atomic
from histoblur.io.checkpoints import provenance, save_checkpoint
from histoblur.models.registry import build_model, load_model

TRAINER_STATE = "trainer.pt"
Batch = TypeVar("Batch")


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0.01."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total: int, warmup: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The :func:`lr_factor` schedule over ``total`` steps."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup))


@torch.no_grad()
def ema_update(averaged: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """Move ``averaged``'s weights and float buffers towards ``model``'s; copy integer buffers."""
    for avg, cur in zip(averaged.state_dict().values(), model.state_dict().values(), strict=True):
        if avg.dtype.is_floating_point:
            avg.lerp_(cur, 1 - decay)
        else:
            avg.copy_(cur)


def train_steps(
    model: torch.nn.Module,
    loss_of: Callable[[Any], torch.Tensor],
    batches: Iterator[Any],
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    steps: int,
    first: int,
    total: int,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
    averaged: torch.nn.Module | None = None,
    ema: float = 0.0,
) -> list[float]:
    """``steps`` optimisation steps on the next batches; returns their losses.

    Args:
        model: the network being trained (``loss_of`` calls it).
        loss_of: batch -> scalar loss.
        batches: the batch stream.
        optimizer: stepped once per batch.
        schedule: stepped once per batch.
        steps: how many steps to take now.
        first: steps taken before (for progress).
        total: steps of the whole run (for progress).
        progress: called after each step with ``(step, total, {"loss": ...})``.
        averaged: the weight average, updated after each step when ``ema`` > 0.
        ema: decay of the average (:func:`ema_update`); 0 leaves ``averaged`` alone.
    """
    losses: list[float] = []
    for i in range(steps):
        loss = loss_of(next(batches))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if ema and averaged is not None:
            ema_update(averaged, model, ema)
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(first + i + 1, total, {"loss": losses[-1]})
    return losses


def select_device(name: str) -> torch.device:
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``.

    Raises:
        InputError: ``cuda`` asked for without a CUDA device.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for but no CUDA device is available.")
    return torch.device(name)


def start_torch(threads: int, device: str, seed: int) -> torch.device:
    """Set torch's CPU threads (0: leave the default) and seed; return the device."""
    if threads:
        torch.set_num_threads(threads)
    chosen = select_device(device)
    torch.manual_seed(seed)
    return chosen


def start_from(model: torch.nn.Module, init: Path | None, architecture: dict[str, Any]) -> None:
    """Load checkpoint ``init``'s weights into ``model`` (fine-tuning); no-op when ``None``.

    Raises:
        InputError: the checkpoint is missing, corrupt or of another architecture.
    """
    if init is None:
        return
    start, start_config = load_model(init)
    if start_config["model"] != architecture:
        raise InputError(f"init checkpoint {init} has a different architecture.")
    model.load_state_dict(start.state_dict())


def mixed_precision(device: torch.device, enabled: bool) -> torch.autocast:
    """bfloat16 autocast on CUDA when ``enabled`` (no gradient scaler needed); off on CPU."""
    return torch.autocast(device.type, torch.bfloat16, enabled=enabled and device.type == "cuda")


def checkpoint_meta(
    task: str,
    architecture: BaseModel,
    training: BaseModel,
    inference: dict[str, Any],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The ``config.json`` stored beside a trained network.

    Task, architecture, how to run it, the full training config, provenance (version, git
    revision) and ``extra`` (epoch, metrics...).
    """
    return {
        "task": task,
        "model": architecture.model_dump(mode="json"),
        "inference": inference,
        "training": training.model_dump(mode="json"),
        **provenance(),
        **extra,
    }


def new_network(
    architecture: BaseModel, init: Path | None, device: torch.device
) -> torch.nn.Module:
    """Build a network on ``device``, starting from checkpoint ``init`` when given."""
    model = build_model(architecture).to(device)
    start_from(model, init, architecture.model_dump(mode="json"))
    return model


def prepare_run(out: Path, training: dict[str, Any], resume: bool, overwrite: bool) -> None:
    """Create (or check, to resume) the run folder and write its ``config.json``.

    Args:
        out: the run folder.
        training: the run's config as JSON data.
        resume: continue the run in ``out`` (only ``epochs`` may differ from the saved config).
        overwrite: replace a non-empty ``out``.

    Raises:
        InputError: cannot resume (no trainer state, or a changed config).
        OutputError: ``out`` is not empty and neither ``resume`` nor ``overwrite`` is set.
    """
    if resume:
        if not (out / "last" / TRAINER_STATE).is_file():
            raise InputError(f"Cannot resume: {out / 'last'} holds no {TRAINER_STATE}.")
        saved = json.loads((out / "config.json").read_text())["training"]
        changed = sorted(k for k in training if k != "epochs" and saved.get(k) != training[k])
        if changed:
            raise InputError(
                f"Cannot resume {out}: {', '.join(changed)} differ(s) from the run's config "
                "(only epochs may change, to train longer)."
            )
    elif out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputError(
                f"Run folder {out} already exists and is not empty; pass --resume to continue "
                "it or --overwrite to start again."
            )
        shutil.rmtree(out)
    ensure_writable_dir(out)
    write_text_atomic(
        out / "config.json", json.dumps({"training": training, **provenance()}, indent=2) + "\n"
    )


def save_epoch(
    out: Path,
    history: list[dict[str, Any]],
    state: dict[str, torch.Tensor],
    config: dict[str, Any],
    score: float,
    best: float,
) -> float:
    """Write ``history.csv`` and ``last/``, and ``best/`` when ``score`` beats ``best``.

    Returns:
        The new best score.
    """
    if score > best:
        best = score
        save_checkpoint(out / "best", state, config)
    save_checkpoint(out / "last", state, config)
    write_text_atomic(out / "history.csv", history_csv(history))
    return best


def history_csv(rows: list[dict[str, Any]]) -> str:
    """Per-epoch rows as CSV (columns: every key seen, in first-seen order)."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def worker_batches(batch: Callable[[int], Batch], start: int = 0) -> Iterator[Batch]:
    """Batches ``start, start + 1, ...``; data-loader worker ``w`` of ``W`` makes every W-th."""
    info = get_worker_info()
    wid, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    b = start + wid
    while True:
        yield batch(b)
        b += workers


def endless(stream: IterableDataset, workers: int) -> Iterator[Any]:
    """Iterate an endless batch stream through a data loader with ``workers`` processes."""
    loader = torch.utils.data.DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
    )
    return iter(loader)
