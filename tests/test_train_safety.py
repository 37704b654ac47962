"""``histoblur train``: a failed run never loses or blocks a run folder, never deletes an input."""

import json
import shutil
from fractions import Fraction

import numpy as np
import pytest
import torch

from histoblur.cli.main import main
from histoblur.errors import InputError
from histoblur.io.images import write_image

TRAINERS = ("segmenter", "classifier", "deblur", "gan", "unit-ddpm", "latent", "restore")


def texture(h, w, seed):
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, (-(-h // 4), -(-w // 4), 3), dtype=np.uint8)
    return np.kron(base, np.ones((4, 4, 1), np.uint8))[:h, :w]


def tiny_yaml(path, out, sharp):
    """A segmenter config that trains in about a second."""
    path.write_text(
        f"out: {out}\nsharp_dir: {sharp}\n"
        "model: {width: 4, depth: 2}\n"
        "synthesis: {tile: 32, context: 8, methods: [gaussian]}\n"
        "epochs: 1\nsteps_per_epoch: 3\nbatch_size: 2\nworkers: 0\nwarmup_steps: 1\nema: 0\n"
    )
    return path


def train(config, *args):
    """``histoblur train segmenter --config CONFIG ARGS...``; returns the exit code."""
    return main(["train", "segmenter", "--config", str(config), *args])


def snapshot(run):
    """Bytes of every file of a run folder, by relative path."""
    return {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()}


def one_error(capsys):
    """The single 'histoblur: error:' line the CLI printed (no traceback)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("histoblur: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny segmenter run: (root, config file, run folder)."""
    root = tmp_path_factory.mktemp("safety")
    sharp = root / "sharp"
    sharp.mkdir()
    for i in range(2):
        write_image(sharp / f"t{i}.png", texture(96, 96, i))
    config = tiny_yaml(root / "train.yaml", root / "run", sharp)
    assert train(config) == 0
    return root, config, root / "run"


@pytest.fixture
def run_copy(trained, tmp_path):
    """A private copy of the trained run and a config pointing at it."""
    root, _, run = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    saved = json.loads((copy / "config.json").read_text())
    saved["training"]["out"] = str(copy)  # resuming compares every field but epochs
    (copy / "config.json").write_text(json.dumps(saved, indent=2) + "\n")
    return tiny_yaml(tmp_path / "train.yaml", copy, root / "sharp"), copy


def test_failed_overwrite_keeps_the_previous_run(run_copy, tmp_path, capsys):
    config, run = run_copy
    before = snapshot(run)
    assert {"best/model.safetensors", "last/trainer.pt", "history.csv"} <= set(before)
    bad = ["--set", f"sharp_dir={tmp_path / 'typo'}"]
    assert train(config, *bad, "--overwrite") == 1
    assert "typo" in one_error(capsys)
    assert snapshot(run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "train.yaml"]  # no backup left
    # a run that really starts replaces the old one, and its backup goes
    assert train(config, "--set", "seed=3", "--overwrite") == 0
    after = snapshot(run)
    assert after["last/model.safetensors"] != before["last/model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "train.yaml"]


def test_overwrite_refuses_a_folder_that_holds_an_input(trained, tmp_path, capsys):
    root, _, run = trained
    project = tmp_path / "project"
    shutil.copytree(root / "sharp", project / "sharp")
    (project / "notes.txt").write_text("mine")
    config = tiny_yaml(tmp_path / "t.yaml", project, project / "sharp")
    for extra in ([], ["--overwrite"]):
        assert train(config, *extra) == 1
        assert "holds the input" in one_error(capsys)
    assert sorted(p.name for p in (project / "sharp").iterdir()) == ["t0.png", "t1.png"]
    assert (project / "notes.txt").read_text() == "mine"
    # the init checkpoint of the run being replaced is an input too
    before = snapshot(run)
    init = ["--set", f"init={run / 'best'}", "--set", f"out={run}", "--overwrite"]
    assert train(config, *init) == 1
    assert "holds the input" in one_error(capsys)
    assert snapshot(run) == before
    # the same check guards every trainer, e.g. deblurring
    (tmp_path / "d.yaml").write_text(f"out: {project}\nsharp_dir: {project / 'sharp'}\n")
    assert main(["train", "deblur", "--config", str(tmp_path / "d.yaml"), "--overwrite"]) == 1
    assert "holds the input" in one_error(capsys)
    assert (project / "sharp" / "t0.png").is_file()


def test_a_failed_run_does_not_block_the_retry(trained, tmp_path, capsys):
    root, _, run = trained
    config = tiny_yaml(tmp_path / "t.yaml", tmp_path / "new", tmp_path / "typo")
    assert train(config) == 1
    one_error(capsys)
    assert not (tmp_path / "new").exists()
    # a stub left by a run killed before its first checkpoint is reused as empty ...
    (tmp_path / "new").mkdir()
    shutil.copy(run / "config.json", tmp_path / "new" / "config.json")
    fixed = ["--set", f"sharp_dir={root / 'sharp'}"]
    assert train(config, *fixed, "--resume") == 1
    message = one_error(capsys)
    assert "no checkpoint yet" in message and "without --resume" in message
    assert train(config, *fixed) == 0
    assert (tmp_path / "new" / "last" / "trainer.pt").is_file()
    capsys.readouterr()
    # ... but a folder with files histoblur did not write still needs --overwrite
    user = tmp_path / "user"
    user.mkdir()
    shutil.copy(run / "config.json", user / "config.json")
    (user / "keep.txt").write_text("mine")
    assert train(config, *fixed, "--set", f"out={user}") == 1
    assert "--overwrite" in one_error(capsys)
    assert (user / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("trainer", TRAINERS)
def test_a_binary_config_file_is_refused(tmp_path, capsys, trainer):
    image = tmp_path / "image.png"
    write_image(image, texture(16, 16, 0))
    assert main(["train", trainer, "--config", str(image)]) == 1
    assert one_error(capsys).endswith(f"Config {image} is not a YAML text file.")


def test_a_yaml_syntax_error_is_one_line(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("epochs: [1\n")
    assert train(tmp_path / "bad.yaml") == 1
    assert "is not valid YAML" in one_error(capsys)


class Opaque:
    """Not a tensor, not a plain container: torch.load(weights_only=True) refuses it."""


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ({"raw": Fraction(1, 3), "opaque": Opaque()}, "is not a plain trainer state"),
        ({"raw": {}, "step": 3}, "does not match this run"),
    ],
)
def test_resume_refuses_a_bad_trainer_state(run_copy, capsys, state, expected):
    config, run = run_copy
    torch.save(state, run / "last" / "trainer.pt")
    before = snapshot(run)
    assert train(config, "--set", "epochs=2", "--resume") == 1
    message = one_error(capsys)
    assert expected in message and "Unpickl" not in message and "GLOBAL" not in message
    assert snapshot(run) == before  # config.json too, byte for byte


def test_a_refused_trainer_state_keeps_the_pytorch_detail_in_the_chain(run_copy):
    from histoblur.cli.train import load_config
    from histoblur.training.segmenter import train_segmenter

    config, run = run_copy
    torch.save({"raw": Opaque()}, run / "last" / "trainer.pt")
    with pytest.raises(InputError, match="weights_only=True") as caught:
        train_segmenter(load_config(config, ["epochs=2"]), resume=True)
    assert isinstance(caught.value.__cause__, Exception)


def test_resume_with_a_corrupt_run_config_is_one_sentence(run_copy, capsys):
    config, run = run_copy
    (run / "config.json").write_text('{"training": {"epochs": ')
    before = snapshot(run)
    assert train(config, "--resume") == 1
    assert one_error(capsys).endswith(f"Cannot resume {run}: its config.json is not valid JSON.")
    assert snapshot(run) == before
    (run / "config.json").write_text(json.dumps(["not", "a", "run"]))
    assert train(config, "--resume") == 1
    assert "holds no training config" in one_error(capsys)


@pytest.mark.parametrize("checkpointed", [False, True])
def test_a_killed_overwrite_run_is_settled_by_the_next_run(tmp_path, checkpointed):
    import os

    from histoblur.io.atomic import owner_tag
    from histoblur.training.runs import recover_killed_replacement

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(
        json.dumps({"training": {"out": str(out)}, "histoblur_version": "0"})
    )
    if checkpointed:
        (out / "last").mkdir()
    dead = f"{2**22 + 4321}@{owner_tag().split('@')[1]}"
    backup = tmp_path / f".run.replaced-{dead}-abc"
    (backup / "best").mkdir(parents=True)
    (backup / "history.csv").write_text("epoch\n1\n")
    alive = tmp_path / f".run.replaced-{os.getpid()}@{owner_tag().split('@')[1]}-abc"
    alive.mkdir()
    assert recover_killed_replacement(out) == backup
    assert not backup.exists() and alive.exists()  # a live run's backup is left alone
    if checkpointed:
        assert (out / "last").is_dir() and not (out / "history.csv").exists()
    else:
        assert (out / "history.csv").read_text() == "epoch\n1\n" and (out / "best").is_dir()


def test_overwrite_refuses_a_run_folder_that_holds_the_config_file(run_copy, capsys):
    config, run = run_copy
    inside = shutil.copy(config, run / "train.yaml")
    before = snapshot(run)
    assert train(inside, "--overwrite") == 1
    assert "holds the input" in one_error(capsys)
    assert snapshot(run) == before
