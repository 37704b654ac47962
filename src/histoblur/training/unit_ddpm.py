"""Train UNIT-DDPM on unpaired sharp (A) and real blurred (B) tissue.

``histoblur train unit-ddpm --config FILE.yaml`` builds a :class:`UnitDDPMTrainConfig` and calls
:func:`train_unit_ddpm`. Each step has two updates:

1. the denoisers: the DDPM loss of each domain, its image and the other domain's condition
   (made by the translator from that image, no gradient to the translator) noised jointly;
2. the translators: the other domain's DDPM loss on the translated image (conditioned on the
   source image), which pulls translations into that domain's distribution, plus
   ``lambda_cycle`` times the cycle loss ``|A -> B -> A - A|_1 + |B -> A -> B - B|_1``; the
   denoisers' weights are not stepped by this update.

Every epoch the release-time translation of a 256 px crop of each pair's held-out rows is
compared with the real blurred side (PSNR, SSIM, Focal Frequency Loss); the best checkpoint
maximises that SSIM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field, model_validator

from histoblur.diffusion.translation import translate
from histoblur.models.unit_ddpm import UnitDDPM, UnitDDPMConfig, denoising_loss
from histoblur.training import loop, runs
from histoblur.training.domains import (
    DomainBatches,
    DomainConfig,
    domain_sources,
    history_row,
    realism,
    validation_pairs,
)

VAL_SIDE = 256


class UnitDDPMTrainConfig(DomainConfig, loop.TrainConfig):
    """Everything that defines a UNIT-DDPM training run; defaults live here only.

    The data fields are those of :class:`~histoblur.training.domains.DomainConfig`; ``out``,
    ``init``, ``epochs``, ``steps_per_epoch``, ``lr`` (Adam, cosine decay), ``workers``,
    ``threads`` and ``device`` those of :class:`~histoblur.training.loop.TrainConfig`.

    Attributes:
        model: architecture and noise schedule.
        lambda_cycle: weight of the translators' cycle loss.
        warmup_steps: linear warm-up of the learning rate.
        release, sample_steps, sample_start: release time ``t_r / T``, sampling steps and start
            ``t_s / T`` of the validation translation (1: from pure noise, as in the paper).
        amp: bfloat16 autocast on CUDA (ignored on CPU).
    """

    out: Path = Path("runs/unit-ddpm")
    model: UnitDDPMConfig = UnitDDPMConfig()
    lambda_cycle: float = Field(10.0, ge=0)
    steps_per_epoch: loop.StepsPerEpoch = 200
    lr: loop.LearningRate = 2e-4
    warmup_steps: int = Field(100, ge=0)
    release: float = Field(0.5, gt=0, le=1)
    sample_steps: int = Field(50, ge=2, le=1000)
    sample_start: float = Field(1.0, gt=0, le=1)
    amp: bool = False

    @model_validator(mode="after")
    def _steps_fit(self) -> UnitDDPMTrainConfig:
        loop.check_steps_fit(
            self.sample_steps, "sample_steps", self.model.timesteps, "model.timesteps"
        )
        return self


def train_step(
    model: UnitDDPM,
    sharp: torch.Tensor,
    blurred: torch.Tensor,
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    lambda_cycle: float,
    generator: torch.Generator,
) -> dict[str, float]:
    """One denoiser update and one translator update; returns the losses."""
    opt_eps, opt_tr = optimizers
    with torch.no_grad():
        fake_b, fake_a = model.a_to_b(sharp), model.b_to_a(blurred)
    opt_eps.zero_grad(set_to_none=True)
    loss_eps = denoising_loss(model, model.eps_a, sharp, fake_b, generator) + denoising_loss(
        model, model.eps_b, blurred, fake_a, generator
    )
    loss_eps.backward()
    opt_eps.step()

    opt_tr.zero_grad(set_to_none=True)
    fake_b, fake_a = model.a_to_b(sharp), model.b_to_a(blurred)
    in_domain = denoising_loss(model, model.eps_b, fake_b, sharp, generator) + denoising_loss(
        model, model.eps_a, fake_a, blurred, generator
    )
    cycle = (model.b_to_a(fake_b) - sharp).abs().mean() + (
        model.a_to_b(fake_a) - blurred
    ).abs().mean()
    (in_domain + lambda_cycle * cycle).backward()
    opt_tr.step()
    return {
        "denoise": float(loss_eps.detach()),
        "translate": float(in_domain.detach()),
        "cycle": float(cycle.detach()),
    }


def translate_image(
    model: UnitDDPM, image: np.ndarray, config: UnitDDPMTrainConfig, device: torch.device
) -> np.ndarray:
    """Release-time translation of one float (H, W, 3) image (float (H, W, 3))."""
    x = torch.from_numpy(image.transpose(2, 0, 1)[None].copy()).to(device)
    generator = torch.Generator().manual_seed(config.seed)
    out = translate(
        model, x, config.release, config.sample_steps, generator, start=config.sample_start
    )
    return out[0].permute(1, 2, 0).float().cpu().numpy()


def checkpoint_config(
    config: UnitDDPMTrainConfig, row: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """The ``config.json`` stored beside the model."""
    inference = {
        "release": config.release,
        "steps": config.sample_steps,
        "start": config.sample_start,
    }
    return runs.checkpoint_meta("unit-ddpm", config.model, config, inference, row, **extra)


def train_unit_ddpm(
    config: UnitDDPMTrainConfig,
    overwrite: bool = False,
    progress: loop.Progress | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train both denoisers and both translators; keep the best validation SSIM.

    ``resume`` continues the run in ``config.out`` from its last epoch (same config; ``epochs``
    may grow): weights, both optimizers and schedules, the noise generator and the batch stream
    carry on where they stopped.
    """
    sources = domain_sources(config)
    with runs.training_run(config, resume, overwrite, progress) as run:
        return _train(config, run, sources)


def _train(config: UnitDDPMTrainConfig, run: runs.RunFolder, sources: list[Path]) -> dict[str, Any]:
    model = loop.new_network(config.model, config.init, run.device)
    denoisers = [*model.eps_a.parameters(), *model.eps_b.parameters()]
    translators = [*model.a_to_b.parameters(), *model.b_to_a.parameters()]
    opt_eps, opt_tr = (
        torch.optim.Adam(denoisers, lr=config.lr),
        torch.optim.Adam(translators, lr=config.lr),
    )
    total = config.total_steps
    sched_eps, sched_tr = (
        loop.warmup_cosine(o, total, config.warmup_steps) for o in (opt_eps, opt_tr)
    )
    noise = torch.Generator().manual_seed(config.seed)
    run.begin({
        "raw": model, "optimizer": opt_eps, "translator_optimizer": opt_tr,
        "schedule": sched_eps, "translator_schedule": sched_tr,
        "noise": runs.GeneratorPart(noise),
    })  # fmt: skip
    batches = loop.endless(DomainBatches(config, sources, start=run.step), config.workers)
    held = [
        (s[:VAL_SIDE, :VAL_SIDE], b[:VAL_SIDE, :VAL_SIDE])
        for s, b in validation_pairs(config.pairs)
    ]
    autocast = loop.mixed_precision(run.device, config.amp)

    def update() -> dict[str, float]:
        sharp, blurred, _, _ = (t.to(run.device) for t in next(batches))
        with autocast:
            return train_step(model, sharp, blurred, (opt_eps, opt_tr), config.lambda_cycle, noise)

    base = realism(lambda image: image, held)
    for epoch in run.epochs(config.epochs, config.steps_per_epoch):
        model.train()
        losses = loop.train_updates(run, update, (sched_eps, sched_tr), "denoise")
        model.eval()
        scores = realism(lambda image: translate_image(model, image, config, run.device), held)
        row = history_row(run, losses, base, scores)
        saved = checkpoint_config(config, row)
        run.save_epoch(row, model.state_dict(), saved, scores.get("val_ssim", float(epoch)))
    return {"out": str(config.out), "history": run.history, "best_val_ssim": run.best}
