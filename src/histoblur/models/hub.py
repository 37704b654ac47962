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

import logging
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from histoblur.errors import InputError
from histoblur.models.registry import load_task_model

DEVICES = ("auto", "cpu", "cuda")
log = logging.getLogger(__name__)

# task -> shipped name -> folder under histoblur/models/weights
SHIPPED: dict[str, dict[str, str]] = {
    "blur-segmentation": {"default": "segmenter-default"},
    "blur-type-classification": {"default": "classifier-default"},
    "deblur-defocus": {"default": "deblur-defocus-default"},
    "deblur-motion": {"default": "deblur-motion-default"},
    "focal-ae": {"default": "latent-default"},
    "restore-denoiser": {"default": "restore-default"},
    "blur-gan": {"default": "gan-default"},
    "unit-ddpm": {},  # none shipped: train one (docs/learned-synthesis.md), pass unit-ddpm:PATH
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
    """The names of the networks shipped for ``task``.

    Raises:
        InputError: an unknown task.

    Examples:
        >>> shipped_names("deblur-motion")
        ('default',)
        >>> list(SHIPPED)[:3]
        ['blur-segmentation', 'blur-type-classification', 'deblur-defocus']
    """
    return tuple(_task(task))


def shipped_path(name: str, task: str) -> Path:
    """Folder of the network shipped as ``name`` for ``task`` (it may be absent).

    >>> shipped_path("default", "blur-type-classification").name
    'classifier-default'
    """
    folder = resources.files("histoblur.models") / "weights" / _task(task)[name]
    return Path(str(folder))


def resolve(model: str | Path, task: str) -> Path:
    """A shipped name (``default``) or a checkpoint path, as a checkpoint path.

    Raises:
        InputError: the name is unknown and no such path exists, or the shipped weights are
            missing from this installation.

    Examples:
        >>> path = resolve("default", "blur-segmentation")
        >>> path.name, sorted(p.name for p in path.iterdir())
        ('segmenter-default', ['config.json', 'model.safetensors'])
        >>> resolve("best", "blur-segmentation")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        histoblur.errors.InputError: Model best is neither a shipped model (default) nor an ...
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

    Examples:
        >>> select_device("cpu"), select_device(torch.device("cpu"))
        (device(type='cpu'), device(type='cpu'))
        >>> select_device("auto").type in ("cpu", "cuda")
        True
        >>> select_device("tpu")
        Traceback (most recent call last):
        ...
        histoblur.errors.InputError: Unknown device 'tpu'; choose auto, cpu or cuda.
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


PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_bf16() -> bool:
    """True when this CPU runs bfloat16 natively (AVX-512 BF16 or AMX; Linux flags).

    >>> isinstance(cpu_has_bf16(), bool)
    True
    """
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def select_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``name`` on ``device``: None for float32.

    ``auto`` takes bfloat16 where the hardware runs it natively (a CPU with AVX-512 BF16 or
    AMX, a CUDA device that supports it) and float32 elsewhere; ``bf16`` asks for it anyway
    (slow on CPUs without native support); ``fp32`` is the reference.

    Raises:
        InputError: an unknown name.

    Examples:
        >>> select_precision("fp32", torch.device("cpu")) is None
        True
        >>> select_precision("bf16", torch.device("cpu"))
        torch.bfloat16
        >>> select_precision("half", torch.device("cpu"))
        Traceback (most recent call last):
        ...
        histoblur.errors.InputError: Unknown precision 'half'; choose auto, fp32 or bf16.
    """
    if name not in PRECISIONS:
        raise InputError(
            f"Unknown precision {name!r}; choose {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}."
        )
    if name == "fp32":
        return None
    if name == "bf16":
        return torch.bfloat16
    native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_bf16()
    return torch.bfloat16 if native else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """The autocast context of a :func:`select_precision` result (None: plain float32).

    >>> with autocast(torch.device("cpu"), torch.bfloat16):
    ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
    torch.bfloat16
    """
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def load_pretrained(
    model: str | Path, task: str, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any], Path]:
    """Load a shipped or saved network for ``task`` onto ``device``, in eval mode.

    Returns:
        The network, its checkpoint config and the checkpoint's path.

    Raises:
        InputError: missing, corrupt or untrusted checkpoint, one of another task, or an
            unavailable device.

    Examples:
        >>> net, config, path = load_pretrained("default", "blur-segmentation")
        >>> config["task"], next(net.parameters()).device.type, net.training
        ('blur-segmentation', 'cpu', False)

        A checkpoint folder of your own (``config.json`` beside the weights) loads the same way,
        and a checkpoint of another task is refused before its weights are read:

        >>> import tempfile
        >>> from histoblur.io.checkpoints import save_checkpoint
        >>> from histoblur.models.unet import UNet, UNetConfig
        >>> arch = UNetConfig(width=4, depth=2)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     folder = save_checkpoint(
        ...         Path(tmp) / "mine",
        ...         UNet(arch).state_dict(),
        ...         {"task": "blur-segmentation", "model": arch.model_dump()},
        ...     )
        ...     net, config, _ = load_pretrained(folder, "blur-segmentation")
        ...     try:
        ...         load_pretrained(folder, "deblur-motion")
        ...     except InputError as exc:
        ...         refusal = str(exc)
        >>> type(net).__name__, config["model"]["width"]
        ('UNet', 4)
        >>> refusal.split(" is ", 1)[1]
        "not a motion deblurring network (its task is 'blur-segmentation')."
    """
    chosen = select_device(device)
    path = resolve(model, task)
    network, config = load_task_model(path, task, WHAT[task])
    log.debug("loaded %s from %s on %s", WHAT[task], path, chosen)
    return network.to(chosen).eval(), config, path
