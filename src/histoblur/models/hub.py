"""Pretrained networks: the one table of shipped weights, name resolution and device choice.

Every predictor, trainer and learned blur kind loads a network through here: a shipped name
(``default``) or a checkpoint path becomes a folder (:func:`resolve`), the checkpoint's task is
checked before its weights are read, and the network lands on the chosen device
(:func:`load_pretrained`).

>>> sorted(shipped_names("blur-segmentation"))
['default']
>>> select_device("cpu").type
'cpu'
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from histoblur.errors import InputError
from histoblur.models.registry import load_task_model

DEVICES = ("auto", "cpu", "cuda")

# task -> shipped name -> folder under histoblur/models/weights
SHIPPED: dict[str, dict[str, str]] = {
    "blur-segmentation": {"default": "segmenter-default"},
    "blur-type-classification": {"default": "classifier-default"},
    "deblur-defocus": {"default": "deblur-defocus-default"},
    "deblur-motion": {"default": "deblur-motion-default"},
    "focal-ae": {"default": "latent-default"},
    "restore-denoiser": {"default": "restore-default"},
    "blur-gan": {"default": "gan-default"},
    "unit-ddpm": {"default": "unit-ddpm-default"},
}
# how a refusal names the network a task expects
WHAT: dict[str, str] = {
    "blur-segmentation": "a blur segmentation model",
    "blur-type-classification": "a blur-type classifier",
    "deblur-defocus": "a defocus deblurring network",
    "deblur-motion": "a motion deblurring network",
    "focal-ae": "a focal autoencoder checkpoint",
    "restore-denoiser": "a restoration denoiser",
    "blur-gan": "a gan checkpoint",
    "unit-ddpm": "a unit-ddpm checkpoint",
}


def _task(task: str) -> dict[str, str]:
    if task not in SHIPPED:
        raise InputError(f"Unknown network task {task!r}; known: {', '.join(SHIPPED)}.")
    return SHIPPED[task]


def shipped_names(task: str) -> tuple[str, ...]:
    """The names of the networks shipped for ``task``."""
    return tuple(_task(task))


def shipped_path(name: str, task: str) -> Path:
    """Folder of the network shipped as ``name`` for ``task`` (it may be absent)."""
    folder = resources.files("histoblur.models") / "weights" / _task(task)[name]
    return Path(str(folder))


def resolve(model: str | Path, task: str) -> Path:
    """A shipped name (``default``) or a checkpoint path, as a checkpoint path.

    Raises:
        InputError: the name is unknown and no such path exists, or the shipped weights are
            missing from this installation.
    """
    names = _task(task)
    if isinstance(model, str) and model in names:
        path = shipped_path(model, task)
        if not (path / "model.safetensors").is_file():
            raise InputError(f"The shipped '{model}' model is missing from this installation.")
        return path
    path = Path(model)
    if not path.exists():
        raise InputError(
            f"Model {model} is neither a shipped model ({', '.join(names) or 'none shipped'}) "
            "nor an existing path."
        )
    return path


def select_device(name: str | torch.device) -> torch.device:
    """``auto`` (CUDA when available), ``cpu`` or ``cuda`` (``cuda:N``), as a torch device.

    Raises:
        InputError: an unknown name, or CUDA asked for without a CUDA device.
    """
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.split(":")[0] not in ("cpu", "cuda"):
        raise InputError(f"Unknown device {name!r}; choose auto, cpu or cuda.")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for but no CUDA device is available.")
    return torch.device(name)


def load_pretrained(
    model: str | Path, task: str, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any], Path]:
    """Load a shipped or saved network for ``task`` onto ``device``, in eval mode.

    >>> net, config, path = load_pretrained("default", "blur-segmentation")
    >>> config["task"], next(net.parameters()).device.type
    ('blur-segmentation', 'cpu')

    Returns:
        The network, its checkpoint config and the checkpoint's path.

    Raises:
        InputError: missing, corrupt or untrusted checkpoint, one of another task, or an
            unavailable device.
    """
    chosen = select_device(device)
    path = resolve(model, task)
    network, config = load_task_model(path, task, WHAT[task])
    return network.to(chosen).eval(), config, path
