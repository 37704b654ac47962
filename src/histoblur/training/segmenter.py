"""Train a blur segmentation network on synthetic blur; validate on real-blur benchmarks.

``histoblur train segmenter --config FILE.yaml`` builds a :class:`SegmenterTrainConfig` from the
YAML file (every field has a default) and calls :func:`train_segmenter`. The run folder holds:

- ``config.json``: the resolved training config, version, git revision;
- ``last/`` and ``best/``: checkpoints (``model.safetensors`` + ``config.json``; ``last/`` also
  ``trainer.pt``, the optimizer and schedule state, for ``--resume``);
- ``history.csv`` and ``curves.png``: loss and validation scores per epoch.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from histoblur.errors import InputError
from histoblur.inference.benchmark import evaluate_benchmark
from histoblur.inference.resolution import DEFAULT_WORKING_MPP
from histoblur.inference.segment import Segmenter
from histoblur.io.atomic import atomic_path
from histoblur.models.registry import load_model
from histoblur.models.unet import UNetConfig
from histoblur.synthesis.dataset import DatasetConfig, DegradeSampler
from histoblur.training import loop, runs
from histoblur.training.augment import AugmentConfig
from histoblur.training.data import BuiltDataset, SegmentationBatches
from histoblur.training.losses import bce_dice_loss
from histoblur.training.sources import Source, coarsest_mpp, prepare_sources

STATISTICAL_KINDS = (
    "gaussian",
    "lens",
    "aperture",
    "radial",
    "motion",
    "mixed",
    "variable-defocus",
)


def _default_synthesis() -> DatasetConfig:
    return DatasetConfig(
        methods=STATISTICAL_KINDS,
        tile=128,
        context=32,
        min_tissue=0.3,
        sharp_fraction=0.2,
        blurred_fraction=0.1,
        scale=(0.75, 3.0),
        degrade=DegradeSampler(noise_p=0.7, jpeg_p=0.5),
    )


class SegmenterTrainConfig(loop.AdamWTrainConfig):
    """Everything that defines a segmentation training run; defaults live here only.

    ``out``, ``init``, ``epochs``, ``steps_per_epoch``, ``lr`` (the peak: AdamW, linear warm-up
    then cosine decay to 1 %), ``workers``, ``threads``, ``device``, ``seed``, ``warmup_steps``
    and ``weight_decay`` are the fields of :class:`~histoblur.training.loop.AdamWTrainConfig`.

    Attributes:
        sharp_dir: folder of sharp tiles for on-the-fly synthesis (searched recursively), taken
            to be at ``working_mpp``.
        sources: sharp sources with their resolutions (folders, images, slide levels), brought
            to ``working_mpp`` in ``out/sources`` before training (instead of ``sharp_dir``).
        working_mpp: the resolution (um/px) the model works at, recorded in its checkpoint;
            detectors resample finer images to it.
        datasets: folders built by ``histoblur synth dataset`` to train on as well (or instead).
        dataset_share: probability that a sample comes from ``datasets`` when both are given.
        val: real-blur benchmark folders (``histoblur bench real-pairs``) scored every epoch;
            the best checkpoint maximises their mean Dice minus their mean flagged fraction of
            all-sharp tiles (a false alarm costs as much as a miss; the last epoch's loss
            without them).
        model: network architecture.
        synthesis: blur kinds, ranges, masks, degradation and tile size of the training samples.
        augment: flips, stain/colour jitter, grey conversion.
        batch_size: samples per step.
        bce_weight: weight of binary cross-entropy in the loss.
        dice_weight: weight of soft Dice in the loss.
        threshold: probability threshold stored with the model and used for validation.
        ema: decay of the exponential moving average of the weights that is validated and
            saved (smooths the step-to-step noise of small batches; 0 saves the raw weights).
    """

    out: Path = Path("runs/segmenter")
    sharp_dir: Path | None = None
    sources: tuple[Source, ...] = ()
    working_mpp: float = Field(DEFAULT_WORKING_MPP, gt=0, le=50)
    datasets: tuple[Path, ...] = ()
    dataset_share: float = Field(0.5, ge=0, le=1)
    val: tuple[Path, ...] = ()
    model: UNetConfig = UNetConfig(width=16, depth=4, stem_stride=2)
    synthesis: DatasetConfig = Field(default_factory=_default_synthesis)
    augment: AugmentConfig = AugmentConfig()
    epochs: loop.Epochs = 12
    steps_per_epoch: loop.StepsPerEpoch = 250
    batch_size: int = Field(16, ge=1, le=loop.MAX_BATCH)
    lr: loop.LearningRate = 2e-3
    bce_weight: float = Field(1.0, ge=0)
    dice_weight: float = Field(1.0, ge=0)
    threshold: float = Field(0.5, gt=0, lt=1)
    ema: float = Field(0.995, ge=0, lt=1)
    workers: loop.Workers = 1


def checkpoint_config(
    config: SegmenterTrainConfig, row: dict[str, Any], max_mpp: float | None = None, **extra: Any
) -> dict[str, Any]:
    """The ``config.json`` stored beside a segmenter's weights.

    ``inference.mpp`` is the working resolution; ``inference.max_mpp`` the coarsest resolution
    of sharp tissue seen in training (coarser images are judged at their own resolution).
    """
    inference = {
        "threshold": config.threshold,
        "tile": 256,
        "input": "RGB float in [0, 1]",
        "mpp": config.working_mpp,
    }
    if max_mpp is not None:
        inference["max_mpp"] = round(max_mpp, 3)
    return runs.checkpoint_meta("blur-segmentation", config.model, config, inference, row, **extra)


def validate(
    model: torch.nn.Module, config: SegmenterTrainConfig, device: torch.device
) -> dict[str, float]:
    """Dice and sharp-tile flagged fraction on each validation benchmark (``val``).

    ``Segmenter`` puts ``model`` in eval mode; the caller switches it back to training.
    """
    segmenter = Segmenter(model, {"inference": {"threshold": config.threshold}}, device=device)
    scores: dict[str, float] = {}
    for bench in config.val:
        result = evaluate_benchmark(lambda im: segmenter.segment(im).mask, bench)
        scores[f"dice/{result.name}"] = result.overall.micro.dice
        scores[f"sharp_flagged/{result.name}"] = result.sharp_flagged
    return scores


def _plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].plot(epochs, [r["loss"] for r in rows], marker="o")
    axes[0].set(xlabel="epoch", ylabel="training loss (BCE + Dice)")
    for key in rows[0]:
        if key.startswith("dice/"):
            axes[1].plot(epochs, [r[key] for r in rows], marker="o", label=key[5:])
    if axes[1].lines:
        axes[1].legend(fontsize=7)
    axes[1].set(xlabel="epoch", ylabel="validation Dice (real blur)", ylim=(0, 1))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def train_segmenter(
    config: SegmenterTrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    progress: loop.Progress | None = None,
) -> dict[str, Any]:
    """Train, validate every epoch, write checkpoints; returns the final summary.

    Args:
        config: the run definition.
        resume: continue from ``out/last`` (same config; ``epochs`` may grow).
        overwrite: replace an existing run folder.
        progress: called after each step with ``(step, total_steps, {"loss": ...})``.
    """
    if config.sharp_dir is None and not config.sources and not config.datasets:
        raise InputError(
            "Set sources or sharp_dir (sharp tiles to synthesize from) or datasets in the config."
        )
    if config.sharp_dir is not None and config.sources:
        raise InputError("Set either sharp_dir or sources in the config, not both.")
    for bench in config.val:
        if not (Path(bench) / "manifest.jsonl").is_file():
            raise InputError(f"Validation benchmark {bench} has no manifest.jsonl.")
    with runs.training_run(config, resume, overwrite, progress) as run:
        return _train(config, run)


def _train(config: SegmenterTrainConfig, run: runs.RunFolder) -> dict[str, Any]:
    model = loop.new_network(config.model, config.init, run.device).train()
    averaged = copy.deepcopy(model).eval() if config.ema else model
    optimizer, schedule = loop.warmup_adamw(model, config)
    out = run.path
    if run.resume:  # the saved weights are the average; the raw ones are in trainer.pt
        net, _ = load_model(out / "last")
        averaged.load_state_dict(net.state_dict())
    run.begin({"raw": model, "optimizer": optimizer, "schedule": schedule})
    built = BuiltDataset.open(config.datasets) if config.datasets else None
    sharp_dir, max_mpp = config.sharp_dir, None
    if config.sources:
        sharp_dir = prepare_sources(config.sources, config.working_mpp, out / "sources")
        max_mpp = coarsest_mpp(sharp_dir) / min(1.0, config.synthesis.scale[0])
    stream = SegmentationBatches(
        config.synthesis,
        config.augment,
        config.batch_size,
        config.seed,
        sharp_dir=sharp_dir,
        built=built,
        built_share=config.dataset_share,
        start=run.step,
    )
    batches = loop.endless(stream, config.workers)

    def loss_of(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, masks = (t.to(run.device) for t in batch)
        return bce_dice_loss(model(images), masks, config.bce_weight, config.dice_weight)

    for epoch in run.epochs(config.epochs, config.steps_per_epoch):
        losses = loop.train_steps(
            run, model, loss_of, batches, optimizer, schedule, averaged, config.ema
        )
        averaged.eval()
        scores = validate(averaged, config, run.device)
        row = {
            "epoch": epoch,
            "step": run.step,
            "loss": round(float(np.mean(losses)), 5),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - run.epoch_started, 1),
            **{k: round(v, 4) for k, v in scores.items()},
        }
        dices = [v for k, v in scores.items() if k.startswith("dice/")]
        flagged = [v for k, v in scores.items() if k.startswith("sharp_flagged/")]
        score = float(np.mean(dices) - np.mean(flagged)) if dices else -row["loss"]
        saved = checkpoint_config(config, row, max_mpp, step=run.step)
        run.save_epoch(row, averaged.state_dict(), saved, score)
        _plot_curves(run.history, out / "curves.png")
        model.train()
    return {"out": str(out), "steps": run.step, "best_score": run.best, "history": run.history}
