"""The model hub (shipped weights, resolution, devices) and the import direction of the package."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from histoblur.errors import InputError
from histoblur.inference.classify import BlurClassifier
from histoblur.inference.deblur import Deblurrer
from histoblur.inference.latent import FocalCodec
from histoblur.inference.restore import Restorer
from histoblur.inference.segment import Segmenter
from histoblur.models.hub import (
    SHIPPED,
    WHAT,
    load_pretrained,
    resolve,
    select_device,
    shipped_names,
    shipped_path,
)

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "histoblur"
# layer -> the layers it may not import (cli -> inference/training -> models/synthesis/... -> io)
FORBIDDEN = {
    "models": ("inference", "training", "cli"),
    "synthesis": ("inference", "training", "cli"),
    "wsi": ("inference", "training", "cli", "synthesis", "models"),
    "io": ("inference", "training", "cli", "synthesis", "models", "wsi"),
    "metrics": ("inference", "training", "cli"),
    "kernels": ("inference", "training", "cli", "synthesis", "models"),
    "diffusion": ("inference", "training", "cli"),
    "inference": ("training", "cli"),
    "training": ("cli",),
}


def imported_layers(path: Path) -> set[str]:
    """The histoblur sub-packages a module imports (at any depth of its code)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "histoblur" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_flow_one_way(layer):
    wrong = {
        str(path.relative_to(PACKAGE)): sorted(imported_layers(path) & set(FORBIDDEN[layer]))
        for path in (PACKAGE / layer).rglob("*.py")
    }
    assert not {k: v for k, v in wrong.items() if v}


@pytest.mark.parametrize("task", sorted(SHIPPED))
def test_every_shipped_network_loads_for_its_task_only(task):
    assert task in WHAT
    for name in shipped_names(task):
        if not (shipped_path(name, task) / "model.safetensors").is_file():
            with pytest.raises(InputError, match="missing from this installation"):
                resolve(name, task)
            continue
        network, config, path = load_pretrained(name, task, "cpu")
        assert config["task"] == task and path == shipped_path(name, task)
        assert not network.training
        other = next(t for t in SHIPPED if t != task)
        with pytest.raises(InputError, match="is not"):
            load_pretrained(path, other)


def test_resolution_and_devices_refuse_what_does_not_exist(tmp_path):
    with pytest.raises(InputError, match="neither a shipped model"):
        resolve(tmp_path / "nothing", "blur-segmentation")
    with pytest.raises(InputError, match="Unknown network task"):
        resolve("default", "no-such-task")
    with pytest.raises(InputError, match="Unknown device"):
        select_device("tpu")
    assert select_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device"):
            select_device("cuda")


LOADERS = {
    "segmenter": lambda device: Segmenter.load("default", device).model,
    "classifier": lambda device: BlurClassifier.load("default", device=device).model,
    "deblur": lambda device: Deblurrer.load("defocus", "default", device).model,
    "latent": lambda device: FocalCodec.load("default", device).model,
    "restore": lambda device: Restorer.load("default", device).model,
}


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_every_predictor_takes_a_device(name):
    network = LOADERS[name]("cpu")
    assert next(network.parameters()).device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", sorted(LOADERS))
def test_predictors_run_on_cuda(name):
    network = LOADERS[name]("cuda")
    assert next(network.parameters()).device.type == "cuda"


def test_segmenter_gives_the_same_map_through_the_hub(ihc):
    image = ihc[:96, :128]
    direct = Segmenter(*load_pretrained("default", "blur-segmentation")[:2])
    assert np.array_equal(
        direct.predict_proba(image), Segmenter.load("default", "cpu").predict_proba(image)
    )
