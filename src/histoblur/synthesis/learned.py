"""Learned blur kinds: a trained network used like any statistical blur kind.

``--method gan:PATH`` (or ``gan:default``) draws a :class:`GanSpec`, ``--method unit-ddpm:PATH``
a :class:`UnitDDPMSpec`; their plans are :class:`~histoblur.synthesis.plans.NetworkPlan`s, which
the executor hands to :func:`run_network`. It runs the network over the image in blended windows
with noise drawn from the spec's seed, so a spec replays the same blur (datasets regenerate from
their manifests like any other kind).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from histoblur.errors import InputError
from histoblur.models.hub import load_pretrained, select_device
from histoblur.models.tiling import predict_tiled
from histoblur.synthesis.plans import NetworkPlan
from histoblur.synthesis.spec import SEED_RANGE, BlurSpec, IntRange, Sampler

# shipped weights per learned kind, and the checkpoint task each kind accepts
TASKS = {"gan": "blur-gan", "unit-ddpm": "unit-ddpm"}
WINDOW, OVERLAP = 512, 32
# where learned kinds run: set for a block with :func:`learned_device`
_DEVICE: ContextVar[str] = ContextVar("histoblur_learned_device", default="cpu")


@contextmanager
def learned_device(device: str) -> Iterator[None]:
    """Run the learned blur kinds on ``device`` (``auto``, ``cpu``, ``cuda``) inside the block.

    Statistical kinds are unaffected; outside any block learned kinds run on the CPU.

    Raises:
        InputError: an unknown device, or ``cuda`` without a CUDA device.

    Examples:
        >>> with learned_device("cpu"):
        ...     current_device().type
        'cpu'
    """
    select_device(device)  # refuse a bad name before any work
    token = _DEVICE.set(device)
    try:
        yield
    finally:
        _DEVICE.reset(token)


def current_device() -> torch.device:
    """The device learned kinds run on here (see :func:`learned_device`)."""
    return select_device(_DEVICE.get())


class GanSpec(BlurSpec):
    """Blur drawn by a trained generator (``model``: ``default`` or a checkpoint folder)."""

    kind: Literal["gan"] = "gan"
    model: str = "default"
    seed: int = Field(0, ge=SEED_RANGE[0], le=SEED_RANGE[1])


class GanSampler(Sampler):
    """Ranges for :class:`GanSpec`: a fixed model, a random noise seed."""

    spec_cls = GanSpec
    model: str = "default"
    seed: int | IntRange = SEED_RANGE


def gan_plan(spec: GanSpec, height: int, width: int) -> NetworkPlan:
    """The generator's plan (the image size does not change it)."""
    return NetworkPlan(runner="gan", model=spec.model, seed=spec.seed)


class UnitDDPMSpec(BlurSpec):
    """Blur by UNIT-DDPM translation: release time ``t_r / T``, sampling steps, start ``t_s / T``.

    ``start`` 1 is the paper's translation from pure noise; below 1 the blurred chain starts
    from the noised sharp tile (see :func:`histoblur.diffusion.translation.translate`). A setting
    left at None takes the value the checkpoint was validated with (its ``inference``).
    """

    kind: Literal["unit-ddpm"] = "unit-ddpm"
    model: str = "default"
    seed: int = Field(0, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    release: float | None = Field(None, gt=0, le=1)
    steps: int | None = Field(None, ge=2, le=4000)
    start: float | None = Field(None, gt=0, le=1)


class UnitDDPMSampler(Sampler):
    """Ranges for :class:`UnitDDPMSpec`."""

    spec_cls = UnitDDPMSpec
    model: str = "default"
    seed: int | IntRange = SEED_RANGE
    release: float | tuple[float, float] | None = None
    steps: int | IntRange | None = None
    start: float | tuple[float, float] | None = None


def unit_ddpm_plan(spec: UnitDDPMSpec, height: int, width: int) -> NetworkPlan:
    """The translator's plan."""
    settings = {"release": spec.release, "steps": spec.steps, "start": spec.start}
    options = tuple((k, float(v)) for k, v in settings.items() if v is not None)
    return NetworkPlan(runner="unit-ddpm", model=spec.model, seed=spec.seed, options=options)


# translation settings of a UNIT-DDPM checkpoint that stores none
UNIT_DDPM_SETTINGS = {"release": 0.5, "steps": 50.0, "start": 1.0}


def load_network(runner: str, model: str) -> torch.nn.Module:
    """The network of a learned kind (``default``: the shipped one), cached.

    Raises:
        InputError: missing, corrupt or untrusted checkpoint, or one of another task.
    """
    return load_learned(runner, model)[0]


@lru_cache(maxsize=4)
def load_learned(
    runner: str, model: str, device: str = "cpu"
) -> tuple[torch.nn.Module, dict[str, float]]:
    """(network on ``device``, the inference settings stored with it), cached.

    Raises:
        InputError: missing, corrupt or untrusted checkpoint, or one of another task.
    """
    if runner not in TASKS:
        raise InputError(f"Unknown learned blur kind {runner!r}.")
    network, config, _ = load_pretrained(model, TASKS[runner], device)
    return network, dict(config.get("inference", {}))


def run_network(plan: NetworkPlan, image: np.ndarray) -> np.ndarray:
    """Apply a learned blur to a float32 (H, W, C) image in [0, 1]; grey runs as RGB."""
    device = current_device()
    network, stored = load_learned(plan.runner, plan.model, str(device))
    h, w, c = image.shape
    rgb = np.repeat(image[..., :1], 3, axis=2) if c == 1 else image[..., :3]
    generator = torch.Generator().manual_seed(plan.seed)
    if plan.runner == "gan":
        with torch.no_grad():
            z = network.noise(torch.zeros(1, 3, h, w), generator)[0].permute(1, 2, 0).numpy()
        stacked = np.concatenate([rgb, z], axis=2).astype(np.float32)

        def predict(batch: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(batch).to(device)
            return network(x[:, :3], x[:, 3:]).cpu().numpy()

    else:
        from histoblur.diffusion.translation import translate

        options = {**UNIT_DDPM_SETTINGS, **stored, **dict(plan.options)}
        stacked = np.ascontiguousarray(rgb, np.float32)

        def predict(batch: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(batch).to(device)
            steps = int(options["steps"])
            return (
                translate(network, x, options["release"], steps, generator, start=options["start"])
                .cpu()
                .numpy()
            )

    window = min(WINDOW, max(8, h, w))  # a small image runs as one window, not padded to 512
    overlap = min(OVERLAP, window // 4)
    out = np.empty((h, w, 3), np.float32)
    with torch.no_grad():
        for row, block in predict_tiled(stacked, predict, window, overlap, 1, channels=3):
            out[row : row + block.shape[0]] = block
    out = np.clip(out, 0.0, 1.0)
    return out.mean(axis=2, keepdims=True) if c == 1 else out
