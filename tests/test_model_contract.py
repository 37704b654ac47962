"""Contract tests over every registered architecture and every shipped network.

The architectures come from :data:`histoblur.models.registry.ARCHITECTURES` and the shipped
weights from :data:`histoblur.models.hub.SHIPPED`, so a new entry is tested without editing this
file: an architecture without a line in :data:`TINY` is built from its default config, and one
without a line in :data:`OUTPUTS` is checked only for a finite float32 batch of the input's size.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from histoblur.errors import InputError
from histoblur.io.checkpoints import CONFIG_NAME, WEIGHTS_NAME, read_config, save_checkpoint
from histoblur.models.hub import SHIPPED, WHAT, load_pretrained, resolve, shipped_path
from histoblur.models.registry import (
    ARCHITECTURES,
    build_model,
    check_task,
    load_model,
    load_task_model,
)

N = 2  # batch size of every forward
TASK = "contract-test"

# the smallest valid config of each architecture (fields not named keep their defaults)
TINY: dict[str, dict] = {
    "unet": {"width": 2, "depth": 1},
    "vgg": {"width": 2, "stages": (1, 1)},
    "rednet": {"widths": (4, 8), "convs": 1},
    "blur-gan": {"width": 2, "depth": 1},
    "patch-critic": {"width": 2, "layers": 1},
    "unit-ddpm": {"width": 4, "depth": 1, "translator_width": 2, "timesteps": 10},
    "focal-ae": {"width": 2, "levels": 2},
    "swin-denoiser": {"embed_dim": 8, "depths": (1,), "heads": (1,), "window": 2, "patch": 1},
    "conv-denoiser": {"width": 4, "depth": 1},
}

Shape = tuple[int, ...]
# documented output of each architecture: (config, input shape (N, C, H, W)) -> (shape or None
# when only the leading dims are documented, lowest value, highest value)
OUTPUTS: dict[str, Callable[[object, Shape], tuple[Shape, float, float]]] = {
    "unet": lambda c, s: ((s[0], c.out_channels, *s[2:]), -math.inf, math.inf),
    "vgg": lambda c, s: ((s[0], c.classes), -math.inf, math.inf),
    "rednet": lambda c, s: (s, -math.inf, math.inf),
    "blur-gan": lambda c, s: (s, 0.0, 1.0),
    "patch-critic": lambda c, s: ((s[0], 1), -math.inf, math.inf),
    "unit-ddpm": lambda c, s: (s, 0.0, 1.0),
    "focal-ae": lambda c, s: (s, 0.0, 1.0),
    "swin-denoiser": lambda c, s: (s, -math.inf, math.inf),
    "conv-denoiser": lambda c, s: (s, -math.inf, math.inf),
}
# architectures documented to take images of any size (the others need multiples of `multiple`)
ANY_SIZE = {"unet", "vgg", "rednet", "blur-gan", "unit-ddpm", "conv-denoiser"}
# architectures documented to refuse sides that are not multiples of `multiple` (ValueError)
MULTIPLES_ONLY = {"focal-ae", "swin-denoiser"}
IMAGE_ARGS = ("x", "image", "condition")


def make(name: str, seed: int = 0) -> nn.Module:
    """The tiny network registered as ``name``, seeded, in eval mode."""
    torch.manual_seed(seed)
    return build_model({"arch": name, **TINY.get(name, {})}).eval()


def multiple(model: nn.Module) -> int:
    """The side multiple a network asks for (1 when it does not say)."""
    found = getattr(model, "multiple", None) or getattr(model.config, "multiple", None)
    return int(found or 1)


def channels(model: nn.Module) -> int:
    config = model.config
    return int(getattr(config, "in_channels", None) or getattr(config, "channels", None) or 3)


def side(model: nn.Module, least: int = 8) -> int:
    m = multiple(model)
    return m * -(-least // m)


def inputs(model: nn.Module, hw: tuple[int, int], seed: int = 1) -> tuple[torch.Tensor, ...]:
    """Forward arguments, from the parameter names of ``forward``: images in [0, 1] and
    timesteps; optional arguments (default None) are left to the network."""
    g = torch.Generator().manual_seed(seed)
    args = []
    for p in inspect.signature(model.forward).parameters.values():
        if p.default is None:
            continue
        if p.name in IMAGE_ARGS:
            args.append(torch.rand((N, channels(model), *hw), generator=g))
        elif p.name == "t":
            steps = getattr(model.config, "timesteps", 1000)
            args.append(torch.randint(0, steps, (N,), generator=g))
        else:
            raise AssertionError(f"{type(model).__name__}.forward takes {p.name!r}: teach inputs()")
    return tuple(args)


def run(model: nn.Module, args: tuple[torch.Tensor, ...], seed: int = 2) -> torch.Tensor:
    """Forward under a fixed global seed (networks that draw noise draw the same noise)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        return model(*args)


def check_output(name: str, model: nn.Module, args: tuple[torch.Tensor, ...], out) -> None:
    assert isinstance(out, torch.Tensor), name
    assert out.dtype == torch.float32, name
    assert torch.isfinite(out).all(), name
    shape = tuple(args[0].shape)
    if name not in OUTPUTS:
        assert out.shape[0] == shape[0], name
        return
    expected, low, high = OUTPUTS[name](model.config, shape)
    assert tuple(out.shape[: len(expected)]) == expected, name
    if name == "patch-critic":
        assert out.ndim == 4, name
    else:
        assert out.ndim == len(expected), name
    assert out.min() >= low and out.max() <= high, name


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_forward_gives_the_documented_output(name):
    model = make(name)
    assert isinstance(model.config, ARCHITECTURES[name].config)
    assert isinstance(model, ARCHITECTURES[name].module)
    hw = (side(model), 2 * side(model))  # not square: a swapped axis shows
    args = inputs(model, hw)
    check_output(name, model, args, run(model, args))


@pytest.mark.parametrize("name", sorted(ANY_SIZE & set(ARCHITECTURES)))
def test_any_size_networks_take_odd_sides(name):
    model = make(name)
    args = inputs(model, (9, 11))
    check_output(name, model, args, run(model, args))


@pytest.mark.parametrize("name", sorted(MULTIPLES_ONLY & set(ARCHITECTURES)))
def test_networks_refuse_sides_that_are_not_multiples(name):
    model = make(name)
    m = multiple(model)
    assert m > 1
    with pytest.raises(ValueError, match="multiples of"):
        run(model, inputs(model, (m + 1, m)))


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_build_and_forward_are_deterministic_under_a_seed(name):
    a, b, other = make(name, seed=0), make(name, seed=0), make(name, seed=5)
    sa, sb, so = a.state_dict(), b.state_dict(), other.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], so[k]) for k in sa if sa[k].is_floating_point())
    args = inputs(a, (side(a), side(a)))
    assert torch.equal(run(a, args), run(b, args))
    assert torch.equal(run(a, args), run(a, args))


def save(model: nn.Module, folder: Path, task: str = TASK) -> Path:
    config = {"task": task, "model": model.config.model_dump(), "seed": 0}
    return save_checkpoint(folder, model.state_dict(), config)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_checkpoint_round_trip_keeps_weights_config_and_output(name, tmp_path):
    model = make(name)
    path = save(model, tmp_path / "ckpt")
    assert (path / WEIGHTS_NAME).is_file() and (path / CONFIG_NAME).is_file()
    loaded, config = load_model(path)
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.config == model.config
    assert config["task"] == TASK
    assert config["model"] == json.loads(json.dumps(model.config.model_dump()))
    before, after = model.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert before[key].dtype == after[key].dtype, key
        assert torch.equal(before[key], after[key]), key
    args = inputs(model, (side(model), side(model)))
    assert torch.equal(run(model, args), run(loaded, args))
    again, _ = load_task_model(path, TASK, "a contract-test network")
    assert torch.equal(run(again, args), run(model, args))


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_loader_refuses_tampered_and_wrong_task_checkpoints(name, tmp_path):
    model = make(name)
    good = save(model, tmp_path / "good")
    config = read_config(good)

    with pytest.raises(InputError, match="is not a contract-test network"):
        load_task_model(good, "another-task", "a contract-test network")
    untasked = save(model, tmp_path / "untasked")
    raw = json.loads((untasked / CONFIG_NAME).read_text())
    del raw["task"]
    (untasked / CONFIG_NAME).write_text(json.dumps(raw))
    with pytest.raises(InputError, match="names no task"):
        check_task(untasked, TASK, "a contract-test network")

    def variant(tag: str, block: dict) -> Path:
        folder = save(model, tmp_path / tag)
        (folder / CONFIG_NAME).write_text(json.dumps({**config, "model": block}))
        return folder

    other = next(a for a in sorted(ARCHITECTURES) if a != name)
    cases = {
        "unknown-arch": {**config["model"], "arch": "no-such-net"},
        "other-arch": build_model({"arch": other, **TINY.get(other, {})}).config.model_dump(),
        "extra-field": {**config["model"], "surprise": 1},
    }
    for tag, block in cases.items():
        with pytest.raises(InputError):
            load_model(variant(tag, block))

    # a weight of the wrong shape, and a missing one
    state = load_file(str(good / WEIGHTS_NAME))
    key = next(k for k, v in state.items() if v.ndim >= 1 and v.numel() > 1)
    for tag, bad in {
        "shape": {**state, key: state[key].flatten()[:-1].clone()},
        "missing": {k: v for k, v in state.items() if k != key},
        "unexpected": {**state, "stowaway.weight": torch.zeros(1)},
    }.items():
        folder = save(model, tmp_path / f"weights-{tag}")
        save_file(bad, str(folder / WEIGHTS_NAME))
        with pytest.raises(InputError, match="do not fit"):
            load_model(folder)

    # damaged files
    truncated = save(model, tmp_path / "truncated")
    data = (truncated / WEIGHTS_NAME).read_bytes()
    (truncated / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="not a readable safetensors"):
        load_model(truncated)
    broken = save(model, tmp_path / "broken-json")
    (broken / CONFIG_NAME).write_text("{ not json")
    with pytest.raises(InputError, match="not a readable JSON"):
        load_model(broken)
    (broken / CONFIG_NAME).unlink()
    with pytest.raises(InputError, match="No config.json"):
        load_model(broken)


class _Payload:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_a_pickle_with_code_is_refused_not_run(tmp_path, capsys):
    model = make("unet")
    folder = save(model, tmp_path / "ckpt")
    weights = folder / "weights.pt"
    torch.save({**model.state_dict(), "payload": _Payload()}, weights)
    with pytest.raises(InputError, match="weights_only"):
        load_model(weights)
    assert "unpickled!" not in capsys.readouterr().out
    # the same file without the payload loads (a plain .pt state dict is accepted)
    torch.save(model.state_dict(), weights)
    loaded, _ = load_model(weights)
    assert loaded.config == model.config


SHIPPED_CASES = [(task, name) for task in sorted(SHIPPED) for name in sorted(SHIPPED[task])]


@pytest.mark.parametrize(("task", "name"), SHIPPED_CASES)
def test_every_shipped_network_resolves_loads_and_runs(task, name):
    assert task in WHAT
    folder = shipped_path(name, task)
    if not (folder / WEIGHTS_NAME).is_file():
        with pytest.raises(InputError, match="missing from this installation"):
            resolve(name, task)
        pytest.skip(f"shipped {task}/{name} weights are absent from this installation")
    assert resolve(name, task) == folder
    network, config, path = load_pretrained(name, task, "cpu")
    assert path == folder and config["task"] == task and not network.training
    assert all(p.device.type == "cpu" for p in network.parameters())

    # the config round-trips: the network's parsed config is the checkpoint's model block
    arch = config["model"]["arch"]
    assert isinstance(network.config, ARCHITECTURES[arch].config)
    dumped = json.loads(json.dumps(network.config.model_dump()))
    assert {k: dumped[k] for k in config["model"]} == config["model"]
    assert type(network.config).model_validate(dumped) == network.config
    assert build_model(dumped).state_dict().keys() == network.state_dict().keys()

    s = side(network, least=32)
    args = inputs(network, (s, s))
    check_output(arch, network, args, run(network, args))
