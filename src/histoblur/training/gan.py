"""Train the blur generator: conditional WGAN-GP on unpaired sharp and real blurred tissue.

``histoblur train gan --config FILE.yaml`` builds a :class:`GanTrainConfig` and calls
:func:`train_gan`:

1. **Pre-training** (``pretrain_steps``): the generator alone, L1 loss, on a simple paired set:
   sharp tiles with a random share of their pixels dropped in, the full tiles out.
2. **Adversarial training**: per generator step, ``critic_steps`` critic steps of the WGAN-GP
   loss (``lambda_gp``); the generator minimises ``-D(G(x))`` plus ``lambda_identity`` times the
   identity loss (a real blurred tile through G stays unchanged, L1) plus, when ``paired_l1`` is
   set, the L1 distance between G(sharp) and the real blurred side of the aligned pairs'
   training regions. Adam at ``lr`` constant for the first half, then linearly down to zero.

Real sharp tiles come from ``sharp_dir``; real blurred tiles from ``blurred`` (each only inside
its ``train_box``) and the blurred side of ``pairs``. Every epoch the generator blurs the held-out
region of each aligned pair (the rows below its training box) with a fixed noise seed; PSNR,
SSIM and the Focal Frequency Loss against the real blurred side are logged, and the best
checkpoint maximises that SSIM.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field, model_validator

from histoblur.io.images import to_float
from histoblur.models.gan import (
    BlurGenerator,
    BlurGeneratorConfig,
    PatchCriticConfig,
    critic_condition,
)
from histoblur.models.registry import build_model
from histoblur.training import loop, runs
from histoblur.training.adversarial import critic_loss, identity_loss
from histoblur.training.domains import (
    DomainBatches,
    DomainConfig,
    domain_sources,
    history_row,
    realism,
    sharp_crop,
    stack,
    validation_pairs,
)

VAL_SEED = 1234  # noise seed of the validation blur
AdamBeta = Annotated[float, Field(ge=0, lt=1)]


class GanTrainConfig(DomainConfig, loop.TrainConfig):
    """Everything that defines a blur-generator training run; defaults live here only.

    The data fields (``sharp_dir``, ``blurred``, ``pairs``, ``tile``, ``batch_size``,
    ``min_tissue``, ``seed``) are those of :class:`DomainConfig`; ``out``, ``init`` (the
    generator's), ``epochs``, ``steps_per_epoch`` (generator steps = their product), ``lr``,
    ``workers``, ``threads`` and ``device`` those of :class:`~histoblur.training.loop.TrainConfig`.

    Attributes:
        generator, critic: architectures.
        critic_steps: critic updates per generator update.
        lambda_gp, lambda_identity: loss weights.
        paired_l1: weight of the L1 distance between G(sharp) and the real blurred side of the
            pairs' training regions (0: unpaired only).
        pretrain_steps, drop: L1 pre-training length and the share of pixels dropped.
        lr, betas: Adam for both networks (constant, then linear decay over the second half).
        amp: bfloat16 autocast on CUDA (ignored on CPU).
    """

    out: Path = Path("runs/gan")
    generator: BlurGeneratorConfig = BlurGeneratorConfig()
    critic: PatchCriticConfig = PatchCriticConfig()
    critic_steps: int = Field(5, ge=1, le=100)
    lambda_gp: float = Field(10.0, ge=0)
    lambda_identity: float = Field(5.0, ge=0)
    paired_l1: float = Field(0.0, ge=0)
    pretrain_steps: int = Field(200, ge=0, le=100_000)
    drop: float = Field(0.1, ge=0, lt=1)
    lr: loop.LearningRate = 2e-4
    betas: tuple[AdamBeta, AdamBeta] = (0.5, 0.999)
    amp: bool = False

    @model_validator(mode="after")
    def _critic_fits(self) -> GanTrainConfig:
        need = 3 * 2**self.critic.layers  # each strided layer halves; two 4 x 4 convs end it
        if self.tile < need:
            raise ValueError(
                f"a critic of {self.critic.layers} layers needs tiles of at least {need} px, "
                f"got tile {self.tile}"
            )
        return self


def drop_pixels(tile: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """The tile with a random ``share`` of its pixels set to black (pre-training input)."""
    keep = rng.random(tile.shape[:2]) >= share
    return tile * keep[..., None].astype(tile.dtype)


def lr_factor(step: int, total: int) -> float:
    """1 for the first half of training, then linearly down to 0 at the end."""
    half = total / 2
    return 1.0 if step < half else max(0.0, (total - step) / max(1.0, total - half))


@torch.no_grad()
def generate(generator: BlurGenerator, image: np.ndarray, seed: int, device: torch.device):
    """G(image) for a float (H, W, 3) image with the noise of ``seed`` (float (H, W, 3))."""
    x = torch.from_numpy(image.transpose(2, 0, 1)[None].copy()).to(device)
    z = generator.noise(x, torch.Generator().manual_seed(seed))
    return generator(x, z)[0].permute(1, 2, 0).float().cpu().numpy()


def pretrain(
    generator: BlurGenerator,
    optimizer: torch.optim.Optimizer,
    config: GanTrainConfig,
    sources: list[Path],
    device: torch.device,
) -> list[float]:
    """L1 pre-training on (tile with dropped pixels -> tile); returns the loss of every step."""
    noise = torch.Generator().manual_seed(config.seed + 1)
    losses = []
    for i in range(config.pretrain_steps):
        rng = np.random.default_rng([config.seed, i, 7])
        tiles = [
            to_float(sharp_crop(sources, config.tile, config.min_tissue, rng))
            for _ in range(config.batch_size)
        ]
        x = stack([drop_pixels(t, config.drop, rng) for t in tiles]).to(device)
        loss = (generator(x, generator.noise(x, noise)) - stack(tiles).to(device)).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def checkpoint_config(config: GanTrainConfig, row: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The ``config.json`` stored beside the generator's weights."""
    inference = {"input": "RGB float in [0, 1]", "tile": 512, "overlap": 32}
    return runs.checkpoint_meta("blur-gan", config.generator, config, inference, row, **extra)


def gan_step(
    generator: BlurGenerator,
    critic: torch.nn.Module,
    batches: Iterator[tuple[torch.Tensor, ...]],
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    config: GanTrainConfig,
    noise: torch.Generator,
    device: torch.device,
) -> dict[str, float]:
    """``critic_steps`` critic updates, then one generator update; returns the losses."""
    opt_g, opt_d = optimizers
    autocast = loop.mixed_precision(device, config.amp)
    for _ in range(config.critic_steps):
        sharp, blurred, _, _ = (t.to(device) for t in next(batches))
        with autocast:
            fake = generator(sharp, generator.noise(sharp, noise))
        loss_d, distance = critic_loss(
            critic, critic_condition(blurred), blurred, critic_condition(sharp), fake.float(),
            config.lambda_gp, noise,
        )  # fmt: skip
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
    sharp, blurred, pair_sharp, pair_blurred = (t.to(device) for t in next(batches))
    with autocast:
        fake = generator(sharp, generator.noise(sharp, noise))
        adversarial = -critic(critic_condition(sharp), fake.float()).mean()
        same = identity_loss(generator(blurred, generator.noise(blurred, noise)), blurred)
        loss_g = adversarial + config.lambda_identity * same
        paired = torch.zeros((), device=device)
        if len(pair_sharp):
            made = generator(pair_sharp, generator.noise(pair_sharp, noise))
            paired = (made - pair_blurred).abs().mean()
            loss_g = loss_g + config.paired_l1 * paired
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    losses = {"critic": loss_d, "adversarial": adversarial, "identity": same, "paired": paired}
    return {"wasserstein": distance, **{k: float(v.detach()) for k, v in losses.items()}}


def train_gan(
    config: GanTrainConfig,
    overwrite: bool = False,
    progress: loop.Progress | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Pre-train, then train the generator adversarially; keep the best validation SSIM.

    ``resume`` continues the run in ``config.out`` from its last epoch (same config; ``epochs``
    may grow): both networks, both optimizers and schedules, the noise generator and the batch
    stream carry on where they stopped; pre-training is not repeated.
    """
    sources = domain_sources(config)
    with runs.training_run(config, resume, overwrite, progress) as run:
        return _train(config, run, sources)


def _train(config: GanTrainConfig, run: runs.RunFolder, sources: list[Path]) -> dict[str, Any]:
    generator = loop.new_network(config.generator, config.init, run.device)
    critic = build_model(config.critic).to(run.device)
    opt_g, opt_d = (
        torch.optim.Adam(net.parameters(), lr=config.lr, betas=config.betas)
        for net in (generator, critic)
    )
    pre = runs.Values(first=None, last=None)
    if not run.resume:
        pre_losses = pretrain(generator, opt_g, config, sources, run.device)
        if pre_losses:
            pre = runs.Values(
                first=round(float(np.mean(pre_losses[:20])), 5),
                last=round(float(np.mean(pre_losses[-20:])), 5),
            )
    total = config.total_steps
    sched_g, sched_d = (
        torch.optim.lr_scheduler.LambdaLR(o, lambda s: lr_factor(s, total)) for o in (opt_g, opt_d)
    )
    noise = torch.Generator().manual_seed(config.seed)
    run.begin({
        "generator": generator, "critic": critic, "optimizer": opt_g, "critic_optimizer": opt_d,
        "schedule": sched_g, "critic_schedule": sched_d, "noise": runs.GeneratorPart(noise),
        "pretrain": pre,
    })  # fmt: skip
    per_step = config.critic_steps + 1  # batches drawn per generator step
    stream = DomainBatches(config, sources, config.paired_l1 > 0, start=run.step * per_step)
    batches = loop.endless(stream, config.workers)
    held = validation_pairs(config.pairs)
    base = realism(lambda image: image, held)
    for epoch in run.epochs(config.epochs, config.steps_per_epoch):
        generator.train()
        losses = loop.train_updates(
            run,
            lambda: gan_step(generator, critic, batches, (opt_g, opt_d), config, noise, run.device),
            (sched_g, sched_d),
            "critic",
        )
        generator.eval()
        scores = realism(lambda image: generate(generator, image, VAL_SEED, run.device), held)
        row = history_row(run, losses, base, scores)
        score = scores.get("val_ssim", float(epoch))
        critic_meta = {"task": "blur-gan-critic", "model": config.critic.model_dump(mode="json")}
        side = {"critic": (critic.state_dict(), critic_meta)}
        saved = checkpoint_config(config, row, pretrain_l1=pre.values)
        run.save_epoch(row, generator.state_dict(), saved, score, also=side)
    return {"out": str(config.out), "history": run.history, "best_val_ssim": run.best}
