"""Self-describing checkpoints: a folder with ``model.safetensors`` and ``config.json``.

``config.json`` holds everything needed to rebuild and use the network (its ``model`` block,
the task's settings, package version, git revision, seed, training config), so loading never
repeats training flags. Weights are read with safetensors only, never unpickled; a ``.pt``/``.pth``
state dict is accepted through ``torch.load(weights_only=True)``, which refuses arbitrary objects.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from histoblur import __version__
from histoblur.errors import InputError
from histoblur.io.atomic import atomic_dir, default_mode

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
TORCH_SUFFIXES = (".pt", ".pth", ".bin")


def git_revision() -> str | None:
    """The git commit of the source tree histoblur runs from, or None outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def provenance() -> dict[str, Any]:
    """Package version and git revision, stored in every checkpoint and run folder."""
    return {"histoblur_version": __version__, "git_revision": git_revision()}


def save_checkpoint(
    directory: Path, state: dict[str, torch.Tensor], config: dict[str, Any], overwrite: bool = True
) -> Path:
    """Write ``state`` (tensors) and ``config`` (JSON) into ``directory``, atomically.

    Args:
        directory: the checkpoint folder; replaced as a whole when ``overwrite``.
        state: a ``state_dict`` (contiguous CPU copies are made).
        config: must hold a ``model`` block naming its ``arch``.
        overwrite: replace an existing non-empty folder.
    """
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    with atomic_dir(Path(directory), overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        os.chmod(tmp / WEIGHTS_NAME, default_mode(0o666))  # safetensors writes 0600
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return Path(directory)


def _weights_path(path: Path) -> Path:
    if path.is_dir():
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            raise InputError(f"Model folder {path} has no {WEIGHTS_NAME}.")
        return weights
    return path


def read_config(path: Path) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint folder (or the one beside a weights file)."""
    path = Path(path)
    file = path / CONFIG_NAME if path.is_dir() else path.with_name(CONFIG_NAME)
    if not file.is_file():
        raise InputError(f"No {CONFIG_NAME} beside the model weights {path}.")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{file} is not a readable JSON file ({exc}).") from exc
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise InputError(f"{file} has no 'model' block describing the network.")
    return config


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint: a folder, a ``.safetensors`` file, or a ``.pt`` state dict.

    Raises:
        InputError: missing, corrupt, or not a plain mapping of names to tensors.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"Model {path} does not exist.")
    weights = _weights_path(path)
    if weights.suffix.lower() in TORCH_SUFFIXES:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is bad input
            raise InputError(
                f"{weights} is not a plain weights file: torch.load(weights_only=True) refused "
                "it (run with -v for PyTorch's reason)."
            ) from exc
    else:
        try:
            state = load_file(str(weights), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(
                f"{weights} is not a readable safetensors file (run with -v for the reason)."
            ) from exc
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise InputError(f"{weights} does not hold a mapping of parameter names to tensors.")
    return state


def config_number(block: dict[str, Any], key: str, default: float, kind: type) -> Any:
    """``block[key]`` of a checkpoint's config as ``kind`` (int or float), ``default`` if absent.

    >>> config_number({"threshold": 0.4}, "threshold", 0.5, float)
    0.4

    Raises:
        InputError: a value that is not a finite number, or a block that is not a mapping.
    """
    if not isinstance(block, dict):
        raise InputError(f"The model's config holds {block!r} where settings were expected.")
    value = block.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"The model's config gives {key} = {value!r}, which is not a number.")
    return kind(value)
