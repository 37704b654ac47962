"""The epoch loop every histoblur trainer shares: config fields, schedules, torch set-up.

:class:`TrainConfig` holds the fields every trainer's config has; :func:`train_steps` and
:func:`train_updates` run the steps of an epoch; run folders are :mod:`histoblur.training.runs`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import torch
from pydantic import BaseModel, Field
from torch.utils.data import IterableDataset, get_worker_info

from histoblur.config import Config
from histoblur.errors import InputError
from histoblur.models.hub import select_device
from histoblur.models.registry import build_model, load_model

if TYPE_CHECKING:
    from histoblur.training.runs import RunFolder

MAX_THREADS = 256  # torch CPU threads a config may ask for (0: torch's default)


MAX_BATCH = 512  # samples per optimisation step a config may ask for


MAX_WORKERS = 64  # data-loader processes a config may ask for


Batch = TypeVar("Batch")


Progress = Callable[[int, int, dict[str, float]], None]


# The bounds of the fields of :class:`TrainConfig` whose defaults differ between trainers: a
# trainer's config sets its own default by declaring the field again with this type.
Epochs = Annotated[int, Field(ge=1)]


StepsPerEpoch = Annotated[int, Field(ge=1)]


LearningRate = Annotated[float, Field(gt=0)]


Workers = Annotated[int, Field(ge=0, le=MAX_WORKERS)]


class TrainConfig(Config):
    """The fields every trainer's config has, with one meaning and one set of bounds.

    Each trainer's config extends it; where its default differs it declares the field again
    with the type given here (``epochs: Epochs = 8``).

    Attributes:
        out: run folder.
        init: checkpoint whose weights start the run (fine-tuning); its architecture must
            match the network's.
        epochs, steps_per_epoch: the run's length (:attr:`total_steps` optimisation steps).
        lr: the (peak) learning rate.
        workers: data-loader processes making batches (0: in the training process).
        threads: torch CPU threads (0: torch's default).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        seed: master seed (weights, batches, augmentation, noise).
    """

    out: Path = Path("runs/train")
    init: Path | None = None
    epochs: Epochs = 10
    steps_per_epoch: StepsPerEpoch = 100
    lr: LearningRate = 1e-4
    workers: Workers = 0
    threads: int = Field(0, ge=0, le=MAX_THREADS)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = Field(0, ge=0)

    @property
    def total_steps(self) -> int:
        """Optimisation steps of the whole run."""
        return self.epochs * self.steps_per_epoch


class AdamWTrainConfig(TrainConfig):
    """A :class:`TrainConfig` for AdamW with a linear warm-up, then a cosine decay to 1 %.

    See :func:`warmup_adamw`.

    Attributes:
        warmup_steps: warm-up length (steps).
        weight_decay: AdamW weight decay.
    """

    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = Field(1e-4, ge=0)


def check_steps_fit(steps: int, name: str, timesteps: int, timesteps_name: str) -> None:
    """Refuse more sampling steps than the diffusion schedule has timesteps.

    Raises:
        ValueError: in words, for the config's validation message.
    """
    if steps > timesteps:
        raise ValueError(f"{name} ({steps}) must not exceed {timesteps_name} ({timesteps})")


def check_levels(values: Any, name: str, most: int, high: int) -> None:
    """Refuse per-level sizes (widths, heads, blocks): empty, too many, or outside ``1..high``.

    Non-numbers are left to the config's own type check.

    Raises:
        ValueError: in words, for the config's validation message.
    """
    if not isinstance(values, (list, tuple)):
        return
    numbers = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
    if not 1 <= len(values) <= most or any(not 1 <= v <= high for v in numbers):
        raise ValueError(f"{name} must list 1 to {most} whole numbers from 1 to {high}")


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


def warmup_adamw(
    model: torch.nn.Module, config: AdamWTrainConfig
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW on ``model``'s parameters at ``config.lr`` and its :func:`warmup_cosine` schedule."""
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    return optimizer, warmup_cosine(optimizer, config.total_steps, config.warmup_steps)


@torch.no_grad()
def ema_update(averaged: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """Move ``averaged``'s weights and float buffers towards ``model``'s; copy integer buffers."""
    for avg, cur in zip(averaged.state_dict().values(), model.state_dict().values(), strict=True):
        if avg.dtype.is_floating_point:
            avg.lerp_(cur, 1 - decay)
        else:
            avg.copy_(cur)


def train_updates(
    run: RunFolder,
    update: Callable[[], dict[str, float]],
    schedules: Sequence[torch.optim.lr_scheduler.LRScheduler],
    shown: str = "loss",
) -> list[dict[str, float]]:
    """The training steps of one epoch of ``run`` (:meth:`RunFolder.epochs`); their losses.

    Each step advances :attr:`RunFolder.step` and reports ``{"loss": losses[shown]}`` to
    :attr:`RunFolder.progress`.

    Args:
        run: the run, inside :meth:`RunFolder.epochs`.
        update: one training step: draws its batches, steps its optimizers, returns its
            losses by name.
        schedules: each stepped once after every update.
        shown: the loss the progress callback is given.
    """
    rows: list[dict[str, float]] = []
    for _ in range(run.steps_per_epoch):
        rows.append(update())
        for schedule in schedules:
            schedule.step()
        run.step += 1
        if run.progress is not None:
            run.progress(run.step, run.total_steps, {"loss": rows[-1][shown]})
    return rows


def loss_means(rows: list[dict[str, float]]) -> dict[str, float]:
    """The mean of each loss over the steps of :func:`train_updates` (summed in step order)."""
    return {key: sum(row[key] for row in rows) / len(rows) for key in rows[0]} if rows else {}


def train_steps(
    run: RunFolder,
    model: torch.nn.Module,
    loss_of: Callable[[Any], torch.Tensor],
    batches: Iterator[Any],
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler | None,
    averaged: torch.nn.Module | None = None,
    ema: float = 0.0,
) -> list[float]:
    """The optimisation steps of one network in an epoch of ``run``; returns their losses.

    Args:
        run: the run, inside :meth:`RunFolder.epochs` (see :func:`train_updates`).
        model: the network being trained (``loss_of`` calls it).
        loss_of: batch -> scalar loss.
        batches: the batch stream.
        optimizer: stepped once per batch.
        schedule: stepped once per batch (None: a constant learning rate).
        averaged: the weight average, updated after each step when ``ema`` > 0.
        ema: decay of the average (:func:`ema_update`); 0 leaves ``averaged`` alone.
    """

    def update() -> dict[str, float]:
        loss = loss_of(next(batches))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema and averaged is not None:  # reads only the weights: the schedule may step after
            ema_update(averaged, model, ema)
        return {"loss": float(loss.detach())}

    rows = train_updates(run, update, [schedule] if schedule is not None else [])
    return [row["loss"] for row in rows]


def supervised(
    model: torch.nn.Module,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    device: torch.device,
) -> Callable[[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """Batch ``(inputs, targets)`` -> ``criterion(model(inputs), targets)``, both on ``device``."""
    return lambda batch: criterion(model(batch[0].to(device)), batch[1].to(device))


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


def new_network(
    architecture: BaseModel, init: Path | None, device: torch.device
) -> torch.nn.Module:
    """Build a network on ``device``, starting from checkpoint ``init`` when given."""
    model = build_model(architecture).to(device)
    start_from(model, init, architecture.model_dump(mode="json"))
    return model


def worker_batches(batch: Callable[[int], Batch], start: int = 0) -> Iterator[Batch]:
    """Batches ``start, start + 1, ...``; data-loader worker ``w`` of ``W`` makes every W-th."""
    info = get_worker_info()
    wid, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    b = start + wid
    while True:
        yield batch(b)
        b += workers


def endless(stream: IterableDataset, workers: int) -> Iterator[Any]:
    """Iterate an endless batch stream through a data loader with ``workers`` processes.

    The streams draw their own randomness per batch index; the loader's own seed comes from a
    private generator, so starting a stream never moves torch's global random state (which a
    resumed run restores).
    """
    loader = torch.utils.data.DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
        generator=torch.Generator().manual_seed(0),  # leaves torch's global random state alone
    )
    return iter(loader)
