"""Explicit registry of network architectures: name -> (config class, module class).

A checkpoint's ``config.json`` names its architecture under ``model.arch``; loading looks it up
here, validates the rest of the block with the config class and builds the module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from torch import nn

from histoblur.errors import InputError, describe_validation
from histoblur.io.checkpoints import load_state, read_config
from histoblur.models.autoencoder import AutoencoderConfig, FocalAutoencoder
from histoblur.models.classifier import BlurTypeConfig, BlurTypeNet
from histoblur.models.conv_denoiser import ConvDenoiser, ConvDenoiserConfig
from histoblur.models.focuslite import FocusLiteConfig, FocusLiteNN
from histoblur.models.gan import BlurGenerator, BlurGeneratorConfig, PatchCritic, PatchCriticConfig
from histoblur.models.rednet import RedNet, RedNetConfig
from histoblur.models.swin_denoiser import SwinDenoiser, SwinDenoiserConfig
from histoblur.models.unet import UNet, UNetConfig
from histoblur.models.unit_ddpm import UnitDDPM, UnitDDPMConfig


@dataclass(frozen=True)
class Architecture:
    """One registry entry."""

    config: type[BaseModel]
    module: type[nn.Module]


ARCHITECTURES: dict[str, Architecture] = {
    "unet": Architecture(UNetConfig, UNet),
    "vgg": Architecture(BlurTypeConfig, BlurTypeNet),
    "rednet": Architecture(RedNetConfig, RedNet),
    "blur-gan": Architecture(BlurGeneratorConfig, BlurGenerator),
    "patch-critic": Architecture(PatchCriticConfig, PatchCritic),
    "unit-ddpm": Architecture(UnitDDPMConfig, UnitDDPM),
    "focal-ae": Architecture(AutoencoderConfig, FocalAutoencoder),
    "swin-denoiser": Architecture(SwinDenoiserConfig, SwinDenoiser),
    "conv-denoiser": Architecture(ConvDenoiserConfig, ConvDenoiser),
    "focuslite": Architecture(FocusLiteConfig, FocusLiteNN),
}


def build_model(config: BaseModel | dict[str, Any]) -> nn.Module:
    """Build an untrained network from its config (an instance or a ``model`` JSON block).

    Raises:
        InputError: unknown architecture or invalid fields.
    """
    data = config.model_dump() if isinstance(config, BaseModel) else dict(config)
    name = data.get("arch")
    if name not in ARCHITECTURES:
        raise InputError(
            f"Unknown network architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}."
        )
    entry = ARCHITECTURES[name]
    try:
        parsed = entry.config.model_validate(data)
    except ValidationError as exc:
        raise InputError(describe_validation(exc, f"{name} configuration")) from exc
    return entry.module(parsed)


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a network from a checkpoint folder (or weights file with ``config.json`` beside).

    Returns:
        The network in eval mode on the CPU, and the checkpoint's full config.

    Raises:
        InputError: missing or corrupt files, or weights that do not fit the architecture.
    """
    path = Path(path)
    state = load_state(path)
    config = read_config(path)
    model = build_model(config["model"])
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        detail = (
            f"missing {missing[:3]}"
            if missing
            else f"unexpected {unexpected[:3]}"
            if unexpected
            else f"shape of {wrong[0]} is {tuple(state[wrong[0]].shape)}, "
            f"expected {tuple(expected[wrong[0]].shape)}"
        )
        raise InputError(f"Weights in {path} do not fit the architecture in its config ({detail}).")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return model.eval(), config


def load_task_model(path: str | Path, task: str, what: str) -> tuple[nn.Module, dict[str, Any]]:
    """:func:`load_model`, refusing a checkpoint trained for another ``task``.

    Raises:
        InputError: as :func:`load_model`, or ``what`` names the expected kind of network in a
            one-sentence refusal of another task's checkpoint.
    """
    check_task(path, task, what)
    network, config = load_model(path)
    return network.eval(), config


def check_task(path: str | Path, task: str, what: str) -> None:
    """Refuse a checkpoint whose ``config.json`` names another task, or none.

    Raises:
        InputError: ``what`` names the expected kind of network.
    """
    found = read_config(Path(path)).get("task")
    if found is None:
        raise InputError(
            f"{path} is not {what}: its config.json names no task, so what it was trained for "
            "is unknown."
        )
    if found != task:
        raise InputError(f"{path} is not {what} (its task is {found!r}).")
