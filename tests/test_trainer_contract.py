"""The contract every ``histoblur train`` command keeps, checked over the whole registry.

Each trainer registered in :data:`histoblur.cli.train.TRAINERS`, with a config that trains in
about a second: writes its checkpoints and ``config.json`` into the run folder; its checkpoints
load back through the model hub and registry; a second run into the same folder is refused and
leaves the run untouched; ``--resume`` continues it, and 1 epoch then ``--resume`` for a second
ends bit-identical to 2 epochs straight (networks, optimizers, schedules, noise generators and
batch streams all carry on).

The tiny configs keep the first epoch's learning rates independent of the run's length (a
warm-up covers it, or the schedule is constant there): a 1-epoch run is then the first half of a
2-epoch run, and a resumed run's schedule follows the longer run from the second epoch on.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import pytest
import yaml
from safetensors.torch import load_file

from histoblur.cli.main import main
from histoblur.cli.train import TRAINERS
from histoblur.io.images import write_image
from histoblur.models.hub import WHAT, load_pretrained
from histoblur.models.registry import load_model

STEPS = 2  # steps per epoch of every tiny config
# on CPU: bit-identical resumes need deterministic kernels, which CUDA does not promise
COMMON = {"epochs": 1, "steps_per_epoch": STEPS, "threads": 1, "workers": 0, "device": "cpu"}


def tiny_configs(root: Path) -> dict[str, dict]:
    """A config per trainer that trains in about a second (``out`` comes from ``--out``)."""
    sharp = str(root / "sharp")
    domains = {
        "sharp_dir": sharp,
        "blurred": [{"path": str(root / "blurred.png")}],
        "pairs": [{"sharp": str(root / "pair_s.png"), "blurred": str(root / "pair_b.png")}],
        "tile": 32,
        "batch_size": 1,
        "min_tissue": 0.0,
    }
    stack = {
        "name": "s", "folder": str(root / "stack"), "glob": "plane_*.png",
        "position": r"plane_([+-]\d+)", "test_fraction": 0.3,
    }  # fmt: skip
    configs = {
        "segmenter": {
            "sharp_dir": sharp, "model": {"width": 4, "depth": 2},
            "synthesis": {"tile": 32, "context": 8, "methods": ["gaussian"]},
            "batch_size": 2, "warmup_steps": STEPS, "ema": 0.9,
        },
        "classifier": {
            "sharp_dir": sharp, "model": {"width": 2, "stages": [1, 1]}, "tile": 32,
            "batch_size": 4, "heldout": 2, "warmup_steps": STEPS, "ema": 0.9,
        },
        "deblur": {
            "sharp_dir": sharp, "model": {"widths": [4, 8], "convs": 1}, "tile": 32,
            "batch_size": 2, "heldout": 2, "warmup_steps": STEPS,
        },
        "gan": {  # the learning rate is constant over the first half of a run
            **domains, "generator": {"width": 4, "depth": 2}, "critic": {"width": 4, "layers": 2},
            "critic_steps": 1, "pretrain_steps": 1, "paired_l1": 1.0,
        },
        "unit-ddpm": {
            **domains, "model": {"width": 4, "depth": 1, "translator_width": 2, "timesteps": 20},
            "warmup_steps": STEPS, "sample_steps": 2,
        },
        "latent": {  # the learning rate steps every 15 epochs
            "stacks": [stack], "variant": "weak", "tile": 32, "batch_size": 2, "test_crops": 1,
            "model": {"width": 4, "levels": 3},
        },
        "restore": {  # constant learning rate
            "sharp_dir": sharp, "model": {"arch": "conv-denoiser", "width": 4, "depth": 2},
            "schedule": {"timesteps": 20}, "tile": 32, "batch_size": 2, "min_tissue": 0.0,
            "val_crops": 2, "val_steps": 3, "ema": 0.9,
        },
    }  # fmt: skip
    return {name: {**COMMON, **config} for name, config in configs.items()}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, ihc):
    """Tiny inputs for every trainer and one config file per trainer."""
    root = tmp_path_factory.mktemp("contract")
    (root / "sharp").mkdir()
    for k in range(7):  # every sixth image is held out
        write_image(root / "sharp" / f"t{k}.png", ihc[k * 48 : k * 48 + 128, k * 40 : k * 40 + 128])
    blurred = cv2.GaussianBlur(ihc, (0, 0), 3)
    write_image(root / "blurred.png", blurred[:128, 256:384])
    write_image(root / "pair_s.png", ihc[256:384, :128])
    write_image(root / "pair_b.png", blurred[256:384, :128])
    (root / "stack").mkdir()
    for z in range(-4, 5):
        plane = (
            ihc[:128, :192] if z == 0 else cv2.GaussianBlur(ihc[:128, :192], (0, 0), 0.8 * abs(z))
        )
        write_image(root / "stack" / f"plane_{z:+03d}.png", plane)
    for name, config in tiny_configs(root).items():
        (root / f"{name}.yaml").write_text(yaml.safe_dump(config))
    return root


def snapshot(run: Path) -> dict[str, bytes]:
    """Bytes of every file of a run folder, by relative path."""
    return {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()}


def one_error(capsys) -> str:
    """The single 'histoblur: error:' line the CLI printed (no traceback)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("histoblur: error: "), err
    return lines[0]


def history(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "history.csv").open()))


def test_every_registered_trainer_has_a_tiny_config(tmp_path):
    missing = sorted(set(TRAINERS) - set(tiny_configs(tmp_path)))
    assert not missing, f"add a tiny config for {missing} to tiny_configs()"


@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_trainer_contract(workspace, tmp_path, capsys, name):
    if name not in tiny_configs(workspace):
        pytest.fail(f"add a tiny config for {name!r} to tiny_configs()")
    command = ["train", name, "--config", str(workspace / f"{name}.yaml")]
    run = tmp_path / "run"
    assert main([*command, "--out", str(run)]) == 0

    # the run folder: its config, checkpoints with their config.json, history
    saved = json.loads((run / "config.json").read_text())
    assert saved["training"]["out"] == str(run) and saved["training"]["epochs"] == 1
    for folder in ("best", "last"):
        assert {"model.safetensors", "config.json"} <= {p.name for p in (run / folder).iterdir()}
    assert (run / "last" / "trainer.pt").is_file()
    assert [row["epoch"] for row in history(run)] == ["1"]

    # every checkpoint loads back: the trained one through the hub, for its task
    best = json.loads((run / "best" / "config.json").read_text())
    assert best["task"] in WHAT and best["training"]["epochs"] == 1
    network, config, _ = load_pretrained(run / "best", best["task"])
    weights = load_file(run / "best" / "model.safetensors")
    assert config["task"] == best["task"]
    assert all((network.state_dict()[k] == v).all() for k, v in weights.items())
    for checkpoint in sorted(p.parent for p in run.glob("*/model.safetensors")):
        load_model(checkpoint)

    # a second run into the folder is refused and changes nothing
    before = snapshot(run)
    capsys.readouterr()
    assert main([*command, "--out", str(run), "--set", "seed=1"]) == 1
    assert "--resume" in one_error(capsys)
    assert snapshot(run) == before

    # --resume continues; 1 + 1 epochs end where 2 straight epochs end, bit for bit
    assert main([*command, "--out", str(run), "--set", "epochs=2", "--resume"]) == 0
    rows = history(run)
    assert [(r["epoch"], r["step"]) for r in rows] == [("1", str(STEPS)), ("2", str(2 * STEPS))]
    straight = tmp_path / "straight"
    assert main([*command, "--out", str(straight), "--set", "epochs=2"]) == 0
    for checkpoint in sorted(p.parent.name for p in straight.glob("*/model.safetensors")):
        a = load_file(run / checkpoint / "model.safetensors")
        b = load_file(straight / checkpoint / "model.safetensors")
        assert a.keys() == b.keys()
        assert all(a[k].equal(b[k]) for k in a), f"{checkpoint} differs after --resume"
    timeless = [{k: v for k, v in r.items() if k != "seconds"} for r in history(straight)]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in rows] == timeless
