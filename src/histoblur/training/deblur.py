"""Train a deblurring network (DL_defocus or DL_motion) on synthetic and real aligned pairs.

``histoblur train deblur --config FILE.yaml`` builds a :class:`DeblurTrainConfig` and calls
:func:`train_deblur`. A training pair is either synthetic (a sharp crop blurred with a kind of the
network's family, sensor noise on the blurred side only) or a crop of a real aligned pair
(``real``: the FQPath pair, focal-stack planes against their in-focus plane) taken from the
pair's training region only, so the rest of each real pair stays unseen for evaluation. The loss
is the mean squared error (DBMID). The best checkpoint maximises PSNR on held-out synthetic pairs
from held-out source images.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from pydantic import Field, model_validator
from torch.utils.data import IterableDataset

from histoblur.config import Config
from histoblur.errors import InputError
from histoblur.io.images import to_float
from histoblur.metrics.full_reference import psnr
from histoblur.models.rednet import RedNetConfig
from histoblur.synthesis.blur import apply_blur
from histoblur.synthesis.dataset import load_rgb, usable_sources
from histoblur.synthesis.degrade import DegradeSpec, degrade
from histoblur.synthesis.registry import get_kind
from histoblur.training import loop, runs
from histoblur.training.classifier import VAL_OFFSET, VISIBLE_RANGES
from histoblur.training.data import TrainBox, check_real, holdout_split, window_in_box

FAMILY_KINDS = {
    "defocus": ("gaussian", "lens", "aperture"),
    "motion": ("motion", "motion-h", "motion-v"),
}
CONTEXT = 48  # source pixels kept around a crop while blurring


class RealPair(Config):
    """An aligned (sharp, blurred) pair of files; ``train_box`` is the share used for training.

    Attributes:
        sharp: in-focus image.
        blurred: the same field out of focus, pixel-aligned.
        train_box: (x0, y0, x1, y1) as fractions of the image; only crops inside it are trained
            on, the rest is left for evaluation.
    """

    sharp: Path
    blurred: Path
    train_box: TrainBox = (0.0, 0.0, 1.0, 0.5)


class DeblurTrainConfig(loop.TrainConfig):
    """Everything that defines a deblurring training run; defaults live here only.

    ``out``, ``init`` (e.g. fine-tuning on a scanner's own focal stacks), ``epochs``,
    ``steps_per_epoch``, ``lr``, ``workers``, ``threads``, ``device`` and ``seed`` are the
    fields of :class:`~histoblur.training.loop.TrainConfig`.

    Attributes:
        family: ``defocus`` (DL_defocus) or ``motion`` (DL_motion).
        sharp_dir: sharp images to synthesize pairs from.
        real: real aligned pairs (defocus only in practice).
        real_share: probability that a sample is a real-pair crop when ``real`` is given.
        real_balance: how a real pair is drawn: ``pair`` (every pair alike) or ``stack``
            (every in-focus image alike, then one of its pairs: a focal stack of 18 planes
            weighs as much as a single pair).
        real_tone: ``keep`` the target as scanned, or ``match`` each sharp crop's per-channel
            mean to its blurred crop's, so the network learns to restore detail, not a plane's
            exposure change (blur keeps a region's mean).
        model: network architecture.
        kinds: blur kinds of the family (default: the family's kinds).
        ranges: per-kind sampler overrides.
        tile: training crop side; scale: source magnification range.
        noise: probability of sensor noise on the blurred side.
        batch_size, warmup_steps: optimisation (Adam, MSE, cosine decay).
        heldout: held-out synthetic pairs scored every epoch.
    """

    out: Path = Path("runs/deblur")
    family: Literal["defocus", "motion"] = "defocus"
    sharp_dir: Path | None = None
    real: tuple[RealPair, ...] = ()
    real_share: float = Field(0.25, ge=0, le=1)
    real_balance: Literal["pair", "stack"] = "pair"
    real_tone: Literal["keep", "match"] = "keep"
    model: RedNetConfig = RedNetConfig()
    kinds: tuple[str, ...] = ()
    ranges: dict[str, dict[str, Any]] = Field(default_factory=lambda: dict(VISIBLE_RANGES))
    tile: int = Field(96, ge=16, le=1024)
    scale: tuple[float, float] = (0.8, 1.25)
    noise: float = Field(0.5, ge=0, le=1)
    epochs: loop.Epochs = 8
    steps_per_epoch: loop.StepsPerEpoch = 200
    batch_size: int = Field(8, ge=1, le=loop.MAX_BATCH)
    warmup_steps: int = Field(50, ge=0)
    heldout: int = Field(48, ge=1, le=1024)
    workers: loop.Workers = 1

    @model_validator(mode="after")
    def _tile_fits(self) -> DeblurTrainConfig:
        if self.tile < self.model.multiple:
            raise ValueError(
                f"tile must be at least {self.model.multiple} px for a network of "
                f"{len(self.model.widths)} levels (model.widths)"
            )
        return self

    def blur_kinds(self) -> tuple[str, ...]:
        """The kinds drawn: ``kinds`` or the family's defaults."""
        return self.kinds or FAMILY_KINDS[self.family]


def synthetic_pair(
    sources: list[Path], config: DeblurTrainConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(blurred, sharp) float32 (t, t, 3) crops: a source region blurred, then resized and cut."""
    image = load_rgb(str(sources[int(rng.integers(len(sources)))]))
    s = float(rng.uniform(*config.scale))
    t = config.tile
    side = math.ceil(t / s) + 2 * CONTEXT
    h, w = image.shape[:2]
    if h < side or w < side:
        image = np.pad(image, ((0, max(0, side - h)), (0, max(0, side - w)), (0, 0)), "reflect")
        h, w = image.shape[:2]
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    region = image[y : y + side, x : x + side]
    kinds = config.blur_kinds()
    kind = kinds[int(rng.integers(len(kinds)))]
    spec = get_kind(kind).sampler.build(**config.ranges.get(kind, {})).sample(rng)
    blurred = apply_blur(region, spec)
    if rng.random() < config.noise:
        post = DegradeSpec(
            photons=float(rng.uniform(300, 3000)),
            read_noise=float(rng.uniform(0, 0.01)),
            seed=int(rng.integers(2**31)),
        )
        blurred = degrade(blurred, post)
    size = max(t, round(side * s))
    pair = [cv2.resize(a, (size, size), interpolation=cv2.INTER_AREA) for a in (blurred, region)]
    c = (size - t) // 2
    return tuple(to_float(a[c : c + t, c : c + t]) for a in pair)  # type: ignore[return-value]


def pick_real(pairs: tuple[RealPair, ...], balance: str, rng: np.random.Generator) -> RealPair:
    """One real pair: uniformly (``pair``) or an in-focus image first (``stack``).

    >>> a, b, c = (RealPair(sharp=s, blurred=f"{s}{i}") for s, i in (("x", 1), ("x", 2), ("y", 1)))
    >>> rng = np.random.default_rng(0)
    >>> sum(pick_real((a, b, c), "stack", rng).sharp.name == "y" for _ in range(1000)) / 1000
    0.526
    """
    if balance == "stack":
        stacks = sorted({p.sharp for p in pairs})
        sharp = stacks[int(rng.integers(len(stacks)))]
        pairs = tuple(p for p in pairs if p.sharp == sharp)
    return pairs[int(rng.integers(len(pairs)))]


def real_pair_crop(
    pair: RealPair, tile: int, rng: np.random.Generator, tone: str = "keep"
) -> tuple[np.ndarray, np.ndarray]:
    """(blurred, sharp) float32 crops from the training region of a real aligned pair.

    ``tone="match"`` shifts the sharp crop's per-channel mean onto the blurred crop's.
    """
    sharp, blurred = load_rgb(str(pair.sharp)), load_rgb(str(pair.blurred))
    size = (min(sharp.shape[0], blurred.shape[0]), min(sharp.shape[1], blurred.shape[1]))
    y, x, t = window_in_box(size, pair.train_box, tile, rng)
    crops = [to_float(a[y : y + t, x : x + t]) for a in (blurred, sharp)]
    if tone == "match":
        shift = crops[0].mean(axis=(0, 1)) - crops[1].mean(axis=(0, 1))
        crops[1] = np.clip(crops[1] + shift, 0, 1).astype(np.float32)
    if t < tile:
        crops = [cv2.resize(a, (tile, tile), interpolation=cv2.INTER_LINEAR) for a in crops]
    k = int(rng.integers(4))
    return tuple(np.ascontiguousarray(np.rot90(a, k)) for a in crops)  # type: ignore[return-value]


class DeblurPairs(IterableDataset):
    """Batches ``(blurred (B, 3, t, t), sharp (B, 3, t, t))``; sample ``i`` uses rng [seed, i]."""

    def __init__(
        self,
        config: DeblurTrainConfig,
        sources: list[Path],
        batch_size: int,
        real: bool = True,
        start: int = 0,
    ) -> None:
        super().__init__()
        self.config, self.sources, self.batch_size = config, sources, batch_size
        self.real = config.real if real else ()
        self.start = start

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Pair ``index`` as (3, t, t) arrays."""
        rng = np.random.default_rng([self.config.seed, index])
        if self.real and rng.random() < self.config.real_share:
            pair = pick_real(self.real, self.config.real_balance, rng)
            blurred, sharp = real_pair_crop(pair, self.config.tile, rng, self.config.real_tone)
        else:
            blurred, sharp = synthetic_pair(self.sources, self.config, rng)
        return blurred.transpose(2, 0, 1), sharp.transpose(2, 0, 1)

    def batch(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``b`` as tensors."""
        pairs = [self.sample(b * self.batch_size + j) for j in range(self.batch_size)]
        blurred = torch.from_numpy(np.stack([p[0] for p in pairs]))
        return blurred, torch.from_numpy(np.stack([p[1] for p in pairs]))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return loop.worker_batches(self.batch, self.start)


def checkpoint_config(
    config: DeblurTrainConfig, row: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """The ``config.json`` stored beside a deblurring network's weights."""
    inference = {"input": "RGB float in [0, 1]", "tile": 512, "overlap": 32}
    return runs.checkpoint_meta(
        f"deblur-{config.family}", config.model, config, inference, row, **extra
    )


def train_deblur(
    config: DeblurTrainConfig,
    overwrite: bool = False,
    progress: loop.Progress | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train with MSE and Adam, keep the checkpoint with the best held-out PSNR.

    ``resume`` continues the run in ``config.out`` from its last epoch (``epochs`` may grow).
    """
    if config.sharp_dir is None:
        raise InputError("Set sharp_dir (sharp images to synthesize from) in the config.")
    for pair in config.real:
        check_real((pair.sharp, pair.blurred), pair.train_box, config.tile, "Real pair image")
    sources = usable_sources(Path(config.sharp_dir), 64)
    train_sources, held_sources = holdout_split(sources)
    with runs.training_run(config, resume, overwrite, progress) as run:
        return _train(config, run, train_sources or sorted(sources), held_sources)


def _train(
    config: DeblurTrainConfig, run: runs.RunFolder, sources: list[Path], held: list[Path]
) -> dict[str, Any]:
    held_pairs = DeblurPairs(config, held, 1, real=False)
    val = [held_pairs.sample(VAL_OFFSET + i) for i in range(config.heldout)]
    val_blurred = torch.from_numpy(np.stack([v[0] for v in val]))
    val_sharp = np.stack([v[1] for v in val])
    model = loop.new_network(config.model, config.init, run.device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = loop.warmup_cosine(optimizer, config.total_steps, config.warmup_steps)
    run.begin({"raw": model, "optimizer": optimizer, "schedule": schedule})
    stream = DeblurPairs(config, sources, config.batch_size, start=run.step)
    batches = loop.endless(stream, config.workers)
    base = float(np.mean([psnr(s, b) for s, b in zip(val_sharp, val_blurred.numpy(), strict=True)]))
    loss_of = loop.supervised(model, torch.nn.functional.mse_loss, run.device)
    for _ in run.epochs(config.epochs, config.steps_per_epoch):
        model.train()
        losses = loop.train_steps(run, model, loss_of, batches, optimizer, schedule)
        model.eval()
        with torch.no_grad():
            restored = torch.cat(
                [model(val_blurred[i : i + 8].to(run.device)).cpu() for i in range(0, len(val), 8)]
            )
        restored_np = restored.clamp(0, 1).numpy()
        score = float(np.mean([psnr(s, r) for s, r in zip(val_sharp, restored_np, strict=True)]))
        row = run.row(
            loss=round(float(np.mean(losses)), 6),
            heldout_psnr_blurred=round(base, 3),
            heldout_psnr_deblurred=round(score, 3),
        )
        saved = checkpoint_config(config, row)
        run.save_epoch(row, model.state_dict(), saved, score)
    return {"out": str(config.out), "history": run.history, "best_psnr": run.best}
