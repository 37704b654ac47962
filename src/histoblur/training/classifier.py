"""Train the blur-type classifier (in focus / defocus / motion / mixed) on synthetic blur.

``histoblur train classifier --config FILE.yaml`` builds a :class:`ClassifierTrainConfig` and
calls :func:`train_classifier`. Sample ``i`` has class ``i % 4`` and is drawn with the dataset
builder (:func:`histoblur.synthesis.dataset.draw_sample`) from its own generator, so training is
reproducible. Every sixth sharp source image is held out: the held-out samples are split in two
halves, one to pick the best epoch and fit the softmax temperature, the other to report accuracy,
the confusion matrix and the expected calibration error. The run folder holds ``best/`` and
``last/`` checkpoints, ``history.csv`` and ``heldout.json``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import IterableDataset

from histoblur.config import Config
from histoblur.errors import InputError
from histoblur.inference.resolution import DEFAULT_WORKING_MPP
from histoblur.io.atomic import write_text_atomic
from histoblur.io.checkpoints import save_checkpoint
from histoblur.io.images import to_float
from histoblur.metrics.calibration import expected_calibration_error, fit_temperature, softmax
from histoblur.models.classifier import BLUR_TYPES, BlurTypeConfig
from histoblur.models.registry import load_model
from histoblur.synthesis.dataset import (
    DatasetConfig,
    DegradeSampler,
    draw_sample,
    usable_sources,
)
from histoblur.training import loop, runs
from histoblur.training.augment import AugmentConfig, augment_pair
from histoblur.training.data import TrainBox, check_real, crop_in_box, holdout_split

# Blur strong enough to be seen at the tile's scale: the weakest defocus of the synthesis
# defaults (Gaussian sigma 1, disk radius 2) is hard to tell from a sharp but soft scan.
VISIBLE_RANGES: dict[str, dict[str, Any]] = {
    "gaussian": {"sigma": (1.5, 5.0)},
    "lens": {"radius": (2.5, 10.0)},
    "aperture": {"radius": (2.5, 10.0)},
    "mixed": {"size": (1.5, 4.0), "length": (12.0, 36.0)},
}
VAL_OFFSET = 1_000_000_000  # sample indices of held-out samples start here


class RealImage(Config):
    """A real image of known blur type; only crops inside ``train_box`` are trained on.

    Attributes:
        path: the image.
        label: its blur type (one of :data:`BLUR_TYPES`).
        train_box: (x0, y0, x1, y1) as fractions of the image (default: the top half; the
            bottom half is left for evaluation).
    """

    path: Path
    label: Literal["in_focus", "defocus", "motion", "mixed"]
    train_box: TrainBox = (0.0, 0.0, 1.0, 0.5)


class ClassifierTrainConfig(loop.AdamWTrainConfig):
    """Everything that defines a classifier training run; defaults live here only.

    ``out``, ``init``, ``epochs``, ``steps_per_epoch``, ``lr``, ``workers``, ``threads``,
    ``device``, ``seed``, ``warmup_steps`` and ``weight_decay`` (AdamW, warm-up, cosine decay)
    are the fields of :class:`~histoblur.training.loop.AdamWTrainConfig`.

    Attributes:
        sharp_dir: sharp images to synthesize from (searched recursively).
        model: network architecture.
        kinds: blur kinds (registry names) drawn for each blurred class.
        ranges: per-kind sampler overrides.
        tile: training tile side.
        working_mpp: the resolution (um/px) the sources are taken to be at, recorded in the
            checkpoint; the classifier resamples finer images to it.
        scale: range of source magnification (see :class:`DatasetConfig`).
        degrade: sensor noise / JPEG policy applied to every class alike.
        real: real images of known blur type (training regions only).
        real_share: probability that a sample of a class with real images is a real crop.
        augment: flips, stain/colour jitter, grey conversion.
        batch_size: samples per step.
        ema: decay of the averaged weights that are validated and saved (0: raw weights).
        heldout: held-out samples per class (half to select and calibrate, half to report).
    """

    out: Path = Path("runs/classifier")
    sharp_dir: Path | None = None
    model: BlurTypeConfig = BlurTypeConfig()
    kinds: dict[str, tuple[str, ...]] = {
        "defocus": ("gaussian", "lens", "aperture"),
        "motion": ("motion", "motion-h", "motion-v"),
        "mixed": ("mixed",),
    }
    ranges: dict[str, dict[str, Any]] = Field(default_factory=lambda: dict(VISIBLE_RANGES))
    tile: int = Field(128, ge=32, le=1024)
    working_mpp: float = Field(DEFAULT_WORKING_MPP, gt=0, le=50)
    scale: tuple[float, float] = (0.8, 1.25)
    degrade: DegradeSampler = DegradeSampler(noise_p=0.6, jpeg_p=0.5)
    augment: AugmentConfig = AugmentConfig()
    real: tuple[RealImage, ...] = ()
    real_share: float = Field(0.25, ge=0, le=1)
    epochs: loop.Epochs = 8
    steps_per_epoch: loop.StepsPerEpoch = 250
    batch_size: int = Field(16, ge=4, le=loop.MAX_BATCH)
    lr: loop.LearningRate = 1e-3
    ema: float = Field(0.0, ge=0, lt=1)
    heldout: int = Field(100, ge=2, le=1000)
    workers: loop.Workers = 1


def class_synthesis(config: ClassifierTrainConfig) -> list[DatasetConfig]:
    """One dataset definition per class, in :data:`BLUR_TYPES` order."""
    common = {
        "tile": config.tile,
        "context": 48,
        "min_tissue": 0.3,
        "scale": config.scale,
        "degrade": config.degrade,
        "ranges": config.ranges,
        "seed": config.seed,
    }
    out = [DatasetConfig(methods=("gaussian",), sharp_fraction=1.0, **common)]
    for name in BLUR_TYPES[1:]:
        if not config.kinds.get(name):
            raise InputError(f"kinds.{name} must name at least one blur kind.")
        out.append(DatasetConfig(methods=config.kinds[name], blurred_fraction=1.0, **common))
    return out


def split_sources(sharp_dir: Path, tile: int) -> tuple[list[Path], list[Path]]:
    """(training, held-out) source images: every sixth (sorted) is held out."""
    train, held = holdout_split(usable_sources(sharp_dir, tile + 2 * 48))
    if not train or not held:
        raise InputError(f"{sharp_dir} needs at least two usable images to hold one out.")
    return train, held


class BlurTypeSamples(IterableDataset):
    """Labelled tiles ``(x (3, t, t) float32 in [0, 1], class index)``; sample i has class i % 4.

    Iterating yields batches ``start, start + 1, ...`` of ``batch_size`` (worker ``w`` of ``W``
    makes every W-th batch).
    """

    def __init__(
        self,
        config: ClassifierTrainConfig,
        sources: list[Path],
        augment: bool,
        batch_size: int = 16,
        start: int = 0,
    ) -> None:
        super().__init__()
        assert config.sharp_dir is not None
        self.config, self.sources, self.augment = config, sources, augment
        self.root = Path(config.sharp_dir)
        self.synthesis = class_synthesis(config)
        self.batch_size, self.start = batch_size, start

    def sample(self, index: int) -> tuple[np.ndarray, int]:
        """Sample ``index``."""
        label = index % len(BLUR_TYPES)
        real = [r for r in self.config.real if r.label == BLUR_TYPES[label]] if self.augment else []
        pick = np.random.default_rng([self.config.seed, index, 5])
        if real and pick.random() < self.config.real_share:
            image = real[int(pick.integers(len(real)))]
            tile = crop_in_box(image.path, image.train_box, self.config.tile, pick)
        else:
            _, tile, _ = draw_sample(index, self.sources, self.root, self.synthesis[label])
        x = to_float(tile)
        if x.ndim == 2:
            x = np.repeat(x[..., None], 3, axis=2)
        if self.augment:
            rng = np.random.default_rng([self.config.seed, index, 2])
            x, _ = augment_pair(x, np.zeros(x.shape[:2], bool), self.config.augment, rng)
        return np.ascontiguousarray(x.transpose(2, 0, 1)), label

    def batch(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``b`` as tensors."""
        samples = [self.sample(b * self.batch_size + j) for j in range(self.batch_size)]
        x = torch.from_numpy(np.stack([s[0] for s in samples]))
        return x, torch.tensor([s[1] for s in samples])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return loop.worker_batches(self.batch, self.start)


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module, images: np.ndarray, device: torch.device, batch: int = 32
) -> np.ndarray:
    """(N, K) logits of (N, 3, t, t) float32 images."""
    model.eval()
    out = [
        model(torch.from_numpy(images[i : i + batch]).to(device)).float().cpu().numpy()
        for i in range(0, len(images), batch)
    ]
    return np.concatenate(out)


def confusion(labels: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """(k, k) counts: row = true class, column = predicted class."""
    return np.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)


def heldout_report(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict[str, Any]:
    """Accuracy, confusion matrix and ECE (raw and temperature-scaled) of held-out predictions."""
    predicted = logits.argmax(axis=1)
    return {
        "n": int(len(labels)),
        "accuracy": round(float((predicted == labels).mean()), 4),
        "confusion": confusion(labels, predicted, len(BLUR_TYPES)).tolist(),
        "classes": list(BLUR_TYPES),
        "ece_raw": round(expected_calibration_error(softmax(logits), labels), 4),
        "ece": round(expected_calibration_error(softmax(logits, temperature), labels), 4),
        "temperature": round(temperature, 4),
    }


def checkpoint_config(
    config: ClassifierTrainConfig, row: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """The ``config.json`` stored beside a classifier's weights."""
    inference = {"tile": config.tile, "input": "RGB float in [0, 1]", "mpp": config.working_mpp}
    meta = runs.checkpoint_meta(
        "blur-type-classification", config.model, config, inference, row, **extra
    )
    return {"classes": list(BLUR_TYPES), **meta}


def train_classifier(
    config: ClassifierTrainConfig,
    overwrite: bool = False,
    progress: loop.Progress | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train, select on held-out half A, calibrate on it, report on half B; returns the report.

    ``resume`` continues the run in ``config.out`` from its last epoch (``epochs`` may grow);
    calibration and the report are redone at the end.
    """
    if config.sharp_dir is None:
        raise InputError("Set sharp_dir (sharp images to synthesize from) in the config.")
    for real in config.real:
        check_real((real.path,), real.train_box, config.tile)
    train_sources, held_sources = split_sources(Path(config.sharp_dir), config.tile)
    with runs.training_run(config, resume, overwrite, progress) as run:
        return _train(config, run, train_sources, held_sources)


def _train(
    config: ClassifierTrainConfig, run: runs.RunFolder, sources: list[Path], held: list[Path]
) -> dict[str, Any]:
    k = len(BLUR_TYPES)
    n = config.heldout * k
    held_samples = BlurTypeSamples(config, held, augment=False)
    samples = [held_samples.sample(VAL_OFFSET + i) for i in range(2 * n)]
    images = np.stack([s[0] for s in samples])
    labels = np.array([s[1] for s in samples])
    half_a, half_b = slice(0, n), slice(n, 2 * n)
    model = loop.new_network(config.model, config.init, run.device).train()
    averaged = copy.deepcopy(model).eval() if config.ema else model
    optimizer, schedule = loop.warmup_adamw(model, config)
    parts: dict[str, Any] = {"raw": model, "optimizer": optimizer, "schedule": schedule}
    if config.ema:
        parts["ema"] = averaged
    run.begin(parts)
    stream = BlurTypeSamples(
        config, sources, augment=True, batch_size=config.batch_size, start=run.step
    )
    batches = loop.endless(stream, config.workers)
    loss_of = loop.supervised(model, torch.nn.functional.cross_entropy, run.device)
    for _ in run.epochs(config.epochs, config.steps_per_epoch):
        model.train()
        losses = loop.train_steps(
            run, model, loss_of, batches, optimizer, schedule, averaged, config.ema
        )
        logits = predict_logits(averaged, images[half_a], run.device)
        accuracy = float((logits.argmax(axis=1) == labels[half_a]).mean())
        nll = float(
            torch.nn.functional.cross_entropy(
                torch.from_numpy(logits), torch.from_numpy(labels[half_a])
            )
        )
        row = run.row(
            loss=round(float(np.mean(losses)), 5),
            heldout_accuracy=round(accuracy, 4),
            heldout_nll=round(nll, 4),
        )
        saved = checkpoint_config(config, row)
        run.save_epoch(row, averaged.state_dict(), saved, accuracy - 1e-3 * nll)
    chosen, saved = load_model(config.out / "best")
    temperature = fit_temperature(
        predict_logits(chosen, images[half_a], run.device), labels[half_a]
    )
    report = heldout_report(
        predict_logits(chosen, images[half_b], run.device), labels[half_b], temperature
    )
    saved["calibration"] = {"temperature": report["temperature"], "ece_heldout": report["ece"]}
    save_checkpoint(config.out / "best", chosen.state_dict(), saved)
    write_text_atomic(config.out / "heldout.json", json.dumps(report, indent=2) + "\n")
    return {"out": str(config.out), "history": run.history, "heldout": report}
