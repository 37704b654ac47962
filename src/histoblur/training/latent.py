"""Train the focal-axis autoencoder on real focal stacks (baseline, weak, strong).

``histoblur train latent --config FILE.yaml`` builds a :class:`LatentTrainConfig` and calls
:func:`train_latent`. The three variants of the latent-interpolation paper (section 3.2), with
``x1`` the sharper, ``x3`` the middle and ``x2`` the blurrier plane of a triplet and
``z'3 = alpha * z2 + (1 - alpha) * z1``:

- ``baseline``: reconstruction of all three planes, L1;
- ``weak`` (eq. 4): ``(|x1 - G(z1)| + |x2 - G(z2)|) / 2 + |x3 - G(z'3)|``;
- ``strong`` (eq. 5): ``weak + lambda_latent * |E(x3) - z'3|`` (fine-tuned from a weak model
  with ``init``).

``lambda_ffl`` adds the Focal Frequency Loss to every image term (histoblur's addition against
the paper's loss of detail). Adam, learning rate halved every ``lr_step_epochs`` epochs. Every
epoch scores the held-out crops (:func:`evaluate_triplets`); the best checkpoint has the lowest
held-out loss of the variant's own objective.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from pydantic import Field, model_validator

from histoblur.errors import InputError
from histoblur.metrics.full_reference import focal_frequency_loss
from histoblur.models.autoencoder import AutoencoderConfig, FocalAutoencoder, mix
from histoblur.training import loop, runs
from histoblur.training.focal import (
    FocalStack,
    FocalStackConfig,
    TripletBatches,
    load_stack,
    test_boxes,
    to_tensor,
)

Variant = Literal["baseline", "weak", "strong"]


class LatentTrainConfig(loop.TrainConfig):
    """Everything that defines a focal-autoencoder training run; defaults live here only.

    ``out``, ``init`` (the weak model, for ``strong``), ``epochs``, ``steps_per_epoch``,
    ``lr``, ``workers``, ``threads``, ``device`` and ``seed`` are the fields of
    :class:`~histoblur.training.loop.TrainConfig`.

    Attributes:
        stacks: the focal stacks (see :class:`~histoblur.training.focal.FocalStackConfig`).
        variant: ``baseline``, ``weak`` or ``strong`` (section 3.2 of the paper).
        model: architecture.
        tile: crop side (a multiple of ``2**levels``; 128 in the paper).
        batch_size: crops per step.
        lr_step_epochs, lr_gamma: Adam's step schedule (lr 1e-4, halved every 15 epochs).
        lambda_latent: weight of the strong model's latent term.
        lambda_ffl: weight of the Focal Frequency Loss on every image term (0: the paper).
        fixed_share: share of the paper's fixed crops among training crops.
        test_crops: held-out crops per stack scored every epoch.
        amp: bfloat16 autocast on CUDA (ignored on CPU).
    """

    out: Path = Path("runs/latent")
    stacks: tuple[FocalStackConfig, ...] = ()
    variant: Variant = "weak"
    model: AutoencoderConfig = AutoencoderConfig(width=16)
    tile: int = Field(128, ge=32, le=1024)
    batch_size: int = Field(16, ge=1, le=loop.MAX_BATCH)
    epochs: loop.Epochs = 40
    steps_per_epoch: loop.StepsPerEpoch = 50
    lr_step_epochs: int = Field(15, ge=1)
    lr_gamma: float = Field(0.5, gt=0, le=1)
    lambda_latent: float = Field(1.0, ge=0)
    lambda_ffl: float = Field(0.0, ge=0)
    fixed_share: float = Field(0.5, ge=0, le=1)
    test_crops: int = Field(8, ge=1, le=1000)
    amp: bool = False

    @model_validator(mode="after")
    def _tile_fits(self) -> LatentTrainConfig:
        if self.tile % 2**self.model.levels:
            raise ValueError(f"tile must be a multiple of {2**self.model.levels}")
        return self


def image_loss(pred: torch.Tensor, target: torch.Tensor, lambda_ffl: float) -> torch.Tensor:
    """L1, plus ``lambda_ffl`` times the Focal Frequency Loss."""
    loss = F.l1_loss(pred, target)
    if lambda_ffl:
        loss = loss + lambda_ffl * focal_frequency_loss(target, pred).mean()
    return loss


def variant_loss(
    model: FocalAutoencoder,
    batch: tuple[torch.Tensor, ...],
    variant: Variant,
    lambda_latent: float,
    lambda_ffl: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The objective of ``variant`` on one batch ``(x1, x3, x2, alpha)``, and its parts."""
    x1, x3, x2, alpha = batch
    n = len(x1)
    codes = model.encode(torch.cat([x1, x3, x2]))
    recon = model.decode(codes)
    r1, r3, r2 = recon[:n], recon[n : 2 * n], recon[2 * n :]
    if variant == "baseline":
        loss = sum(image_loss(r, x, lambda_ffl) for r, x in ((r1, x1), (r3, x3), (r2, x2))) / 3
        return loss, {"recon": float(loss.detach())}
    a = alpha.to(x1.dtype)[:, None, None, None]
    z1, z3, z2 = ([c[k * n : (k + 1) * n] for c in codes] for k in range(3))
    mixed = mix(z1, z2, a)
    ends = (image_loss(r1, x1, lambda_ffl) + image_loss(r2, x2, lambda_ffl)) / 2
    middle = image_loss(model.decode(mixed), x3, lambda_ffl)
    loss = ends + middle
    parts = {"recon": float(ends.detach()), "middle": float(middle.detach())}
    if variant == "strong":
        latent = sum(F.l1_loss(m, t) for m, t in zip(mixed, z3, strict=True)) / len(z3)
        loss = loss + lambda_latent * latent
        parts["latent"] = float(latent.detach())
    return loss, parts


def held_out_batches(stacks: list[FocalStack], tile: int, limit: int) -> list[tuple[Any, ...]]:
    """One batch per stack: every triplet at every held-out crop."""
    out = []
    for stack in stacks:
        boxes = test_boxes(stack, tile, limit)
        rows = [
            [stack.planes[i][y : y + tile, x : x + tile] for i in (t.sharp, t.middle, t.blurry)]
            + [t.alpha]
            for t in stack.triplets()
            for y, x in boxes
        ]
        planes = [to_tensor([r[j] for r in rows]) for j in range(3)]
        out.append((stack.name, *planes, torch.tensor([r[3] for r in rows])))
    return out


def pooled_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (data range 1) of the mean squared error over a whole batch of crops."""
    mse = float(((a.float() - b.float()) ** 2).mean())
    return 10 * float(np.log10(1 / max(mse, 1e-12)))


@torch.no_grad()
def evaluate_triplets(
    model: FocalAutoencoder, batch: tuple[torch.Tensor, ...], chunk: int = 32
) -> dict[str, float]:
    """PSNR on held-out triplets: reconstruction, and the interpolated middle plane.

    ``psnr_blur_quality`` compares ``G(z'3)`` with the real middle plane, ``psnr_blur`` with
    its reconstruction ``G(E(x3))`` (the paper's PSNR-blur).
    """
    x1, x3, x2, alpha = batch
    recon, interp, r3 = [], [], []
    for s in range(0, len(x1), chunk):
        part = slice(s, s + chunk)
        z1, z3, z2 = model.encode(x1[part]), model.encode(x3[part]), model.encode(x2[part])
        a = alpha[part].to(x1.dtype)[:, None, None, None]
        interp.append(model.decode(mix(z1, z2, a)))
        r3.append(model.decode(z3))
        recon.append(model.decode(z1))
    interp_t, r3_t = torch.cat(interp), torch.cat(r3)
    return {
        "psnr_recon": (pooled_psnr(torch.cat(recon), x1) + pooled_psnr(r3_t, x3)) / 2,
        "psnr_blur_quality": pooled_psnr(interp_t, x3),
        "psnr_blur": pooled_psnr(interp_t, r3_t),
    }


def checkpoint_config(
    config: LatentTrainConfig, row: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """The ``config.json`` stored beside the model."""
    inference = {"input": "RGB float in [0, 1]", "multiple": 2**config.model.levels}
    return runs.checkpoint_meta("focal-ae", config.model, config, inference, row, **extra)


def train_latent(
    config: LatentTrainConfig,
    overwrite: bool = False,
    progress: loop.Progress | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train one variant; keep the lowest held-out loss.

    ``resume`` continues the run in ``config.out`` from its last epoch (``epochs`` may grow):
    weights, optimizer, schedule and the crop stream carry on where they stopped.

    Raises:
        InputError: no stacks, or a stack that cannot be read or is too small for ``tile``.
    """
    if not config.stacks:
        raise InputError("Name at least one focal stack (stacks) in the config.")
    stacks = [load_stack(s) for s in config.stacks]
    batches_source = TripletBatches(
        stacks, config.tile, config.batch_size, config.seed, config.fixed_share
    )
    held = held_out_batches(stacks, config.tile, config.test_crops)
    with runs.training_run(config, resume, overwrite, progress) as run:
        return _train(config, run, batches_source, held)


def _train(
    config: LatentTrainConfig,
    run: runs.RunFolder,
    batches_source: TripletBatches,
    held: list[tuple[Any, ...]],
) -> dict[str, Any]:
    model = loop.new_network(config.model, config.init, run.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.StepLR(
        optimizer, config.lr_step_epochs * config.steps_per_epoch, config.lr_gamma
    )
    autocast = loop.mixed_precision(run.device, config.amp)
    run.begin({"raw": model, "optimizer": optimizer, "schedule": schedule})
    batches = loop.endless(batches_source.starting_at(run.step), config.workers)

    def update() -> dict[str, float]:
        batch = tuple(t.to(run.device) for t in next(batches))
        with autocast:
            loss, parts = variant_loss(
                model, batch, config.variant, config.lambda_latent, config.lambda_ffl
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": float(loss.detach()), **parts}

    for _ in run.epochs(config.epochs, config.steps_per_epoch):
        model.train()
        losses = loop.train_updates(run, update, (schedule,))
        model.eval()
        columns = {k: round(v, 5) for k, v in loop.loss_means(losses).items()}
        val_losses = []
        for name, *tensors in held:
            batch = tuple(t.to(run.device) for t in tensors)
            with torch.no_grad():
                val_losses.append(
                    float(variant_loss(model, batch, config.variant, config.lambda_latent, 0)[0])
                )
            for key, value in evaluate_triplets(model, batch).items():
                columns[f"{key}/{name}"] = round(value, 3)
        columns["val_loss"] = round(float(np.mean(val_losses)), 5)
        row = run.row(**columns)
        saved = checkpoint_config(config, row, variant=config.variant)
        run.save_epoch(row, model.state_dict(), saved, -row["val_loss"])
    return {"out": str(config.out), "history": run.history, "best_val_loss": -run.best}
