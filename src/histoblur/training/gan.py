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

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

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
from histoblur.training.runs import (
    MAX_THREADS,
    GeneratorPart,
    RunFolder,
    Values,
    checkpoint_meta,
    endless,
    mixed_precision,
    new_network,
    run_folder,
    start_torch,
)

VAL_SEED = 1234  # noise seed of the validation blur
AdamBeta = Annotated[float, Field(ge=0, lt=1)]


class GanTrainConfig(DomainConfig):
    """Everything that defines a blur-generator training run; defaults live here only.

    The data fields (``sharp_dir``, ``blurred``, ``pairs``, ``tile``, ``batch_size``,
    ``min_tissue``, ``seed``) are those of :class:`DomainConfig`.

    Attributes:
        out: run folder.
        generator, critic: architectures; init: generator checkpoint to start from.
        critic_steps: critic updates per generator update.
        lambda_gp, lambda_identity: loss weights.
        paired_l1: weight of the L1 distance between G(sharp) and the real blurred side of the
            pairs' training regions (0: unpaired only).
        pretrain_steps, drop: L1 pre-training length and the share of pixels dropped.
        epochs, steps_per_epoch: generator steps = epochs x steps_per_epoch.
        lr, betas: Adam for both networks (constant, then linear decay over the second half).
        amp: bfloat16 autocast on CUDA (ignored on CPU).
        workers, threads, device: as for the other trainers.
    """

    out: Path = Path("runs/gan")
    generator: BlurGeneratorConfig = BlurGeneratorConfig()
    critic: PatchCriticConfig = PatchCriticConfig()
    init: Path | None = None
    critic_steps: int = Field(5, ge=1, le=100)
    lambda_gp: float = Field(10.0, ge=0)
    lambda_identity: float = Field(5.0, ge=0)
    paired_l1: float = Field(0.0, ge=0)
    pretrain_steps: int = Field(200, ge=0, le=100_000)
    drop: float = Field(0.1, ge=0, lt=1)
    epochs: int = Field(10, ge=1)
    steps_per_epoch: int = Field(100, ge=1)
    lr: float = Field(2e-4, gt=0)
    betas: tuple[AdamBeta, AdamBeta] = (0.5, 0.999)
    amp: bool = False
    workers: int = Field(0, ge=0, le=64)
    threads: int = Field(0, ge=0, le=MAX_THREADS)
    device: Literal["auto", "cpu", "cuda"] = "auto"

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


def checkpoint_config(config: GanTrainConfig, extra: dict[str, Any]) -> dict[str, Any]:
    """The ``config.json`` stored beside the generator's weights."""
    inference = {"input": "RGB float in [0, 1]", "tile": 512, "overlap": 32}
    return checkpoint_meta("blur-gan", config.generator, config, inference, extra)


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
    autocast = mixed_precision(device, config.amp)
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
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Pre-train, then train the generator adversarially; keep the best validation SSIM.

    ``resume`` continues the run in ``config.out`` from its last epoch (same config; ``epochs``
    may grow): both networks, both optimizers and schedules, the noise generator and the batch
    stream carry on where they stopped; pre-training is not repeated.
    """
    sources = domain_sources(config)
    with run_folder(config, resume, overwrite) as run:
        return _train(config, run, sources, progress)


def _train(
    config: GanTrainConfig,
    run: RunFolder,
    sources: list[Path],
    progress: Callable[[int, int, dict[str, float]], None] | None,
) -> dict[str, Any]:
    """The training loop of :func:`train_gan` in its prepared run folder."""
    device = start_torch(config.threads, config.device, config.seed)
    generator = new_network(config.generator, config.init, device)
    critic = build_model(config.critic).to(device)
    opt_g, opt_d = (
        torch.optim.Adam(net.parameters(), lr=config.lr, betas=config.betas)
        for net in (generator, critic)
    )
    pre = Values(first=None, last=None)
    if not run.resume:
        pre_losses = pretrain(generator, opt_g, config, sources, device)
        if pre_losses:
            pre = Values(
                first=round(float(np.mean(pre_losses[:20])), 5),
                last=round(float(np.mean(pre_losses[-20:])), 5),
            )
    total = config.epochs * config.steps_per_epoch
    sched_g, sched_d = (
        torch.optim.lr_scheduler.LambdaLR(o, lambda s: lr_factor(s, total)) for o in (opt_g, opt_d)
    )
    noise = torch.Generator().manual_seed(config.seed)
    step = run.begin({
        "generator": generator, "critic": critic, "optimizer": opt_g, "critic_optimizer": opt_d,
        "schedule": sched_g, "critic_schedule": sched_d, "noise": GeneratorPart(noise),
        "pretrain": pre,
    })  # fmt: skip
    per_step = config.critic_steps + 1  # batches drawn per generator step
    stream = DomainBatches(config, sources, config.paired_l1 > 0, start=step * per_step)
    batches = endless(stream, config.workers)
    held = validation_pairs(config.pairs)
    base = realism(lambda image: image, held) if held else {}
    for epoch in run.epochs(config.epochs, config.steps_per_epoch):
        started = time.perf_counter()
        generator.train()
        sums: dict[str, float] = {}
        for _ in range(config.steps_per_epoch):
            losses = gan_step(generator, critic, batches, (opt_g, opt_d), config, noise, device)
            sched_g.step()
            sched_d.step()
            step += 1
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + value
            if progress is not None:
                progress(step, total, {"loss": losses["critic"]})
        generator.eval()
        scores = (
            realism(lambda image: generate(generator, image, VAL_SEED, device), held)
            if held
            else {}
        )
        row = history_row(epoch, step, sums, config.steps_per_epoch, base, scores, started)
        extra = {"epoch": epoch, "metrics": row, "pretrain_l1": pre.values, "seed": config.seed}
        score = scores.get("val_ssim", float(epoch))
        critic_meta = {"task": "blur-gan-critic", "model": config.critic.model_dump(mode="json")}
        side = {"critic": (critic.state_dict(), critic_meta)}
        saved = checkpoint_config(config, extra)
        run.save_epoch(step, row, generator.state_dict(), saved, score, also=side)
    return {"out": str(config.out), "history": run.history, "best_val_ssim": run.best}
