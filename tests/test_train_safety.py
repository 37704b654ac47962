"""``histoblur train``: a failed run never loses or blocks a run folder, never deletes an input."""

import json
import shutil
from fractions import Fraction

import numpy as np
import pytest
import torch

from histoblur.cli.main import main
from histoblur.cli.train import TRAINERS as REGISTRY
from histoblur.errors import InputError
from histoblur.io.images import write_image

TRAINERS = tuple(sorted(REGISTRY))  # every registered trainer


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


@pytest.mark.parametrize("trainer", TRAINERS)
@pytest.mark.parametrize("field", ["threads: 100000", "batch_size: 100000"])
def test_huge_threads_or_batches_are_refused_by_every_trainer(tmp_path, capsys, trainer, field):
    (tmp_path / "c.yaml").write_text(f"out: {tmp_path / 'run'}\n{field}\n")
    assert main(["train", trainer, "--config", str(tmp_path / "c.yaml")]) == 1
    name = field.split(":")[0]
    assert one_error(capsys).startswith(f"histoblur: error: Invalid training config field {name}:")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("trainer", "setting", "named"),
    [
        ("deblur", "model.widths=[]", "widths must list 1 to 6"),
        ("deblur", "model.widths=[0]", "widths must list 1 to 6"),
        ("deblur", "model.widths=[100000]", "widths must list 1 to 6"),
        ("deblur", "heldout=100000", "heldout"),
        ("classifier", "heldout=100000", "heldout"),
        ("classifier", "model.stages=[100000]", "stages must list"),
        ("gan", "betas=[1, 2]", "betas.0: Input should be less than 1"),
        ("gan", "betas=[0.5, -1]", "betas.1"),
        ("gan", "critic_steps=100000", "critic_steps"),
        ("gan", "pretrain_steps=100000000", "pretrain_steps"),
        ("unit-ddpm", "sample_steps=100000", "sample_steps"),
        ("unit-ddpm", "model.beta_start=0.5", "beta_end must not be below beta_start"),
        ("restore", "schedule.beta_start=0.5", "beta_end must not be below beta_start"),
        ("restore", "model.heads=[0]", "heads must list 1 to 6"),
        ("restore", "model.heads=[0, 0, 0]", "heads must list 1 to 6"),
        ("restore", "model.depths=[100000, 2, 2]", "depths must list 1 to 6"),
        ("restore", "val_steps=100000", "val_steps"),
        ("latent", "test_crops=100000", "test_crops"),
    ],
)
def test_unbounded_or_inconsistent_fields_are_one_sentence(
    tmp_path, capsys, trainer, setting, named
):
    (tmp_path / "c.yaml").write_text(f"out: {tmp_path / 'run'}\n")
    command = ["train", trainer, "--config", str(tmp_path / "c.yaml"), "--set", setting]
    assert main(command) == 1
    line = one_error(capsys)
    assert "Invalid training config field" in line and named in line, line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("position", "named"),
    [("plane_(", "is not a regular expression"), ("plane_", "has no group")],
)
def test_a_bad_focal_position_pattern_is_one_sentence(tmp_path, capsys, position, named):
    (tmp_path / "c.yaml").write_text(
        f"out: {tmp_path / 'run'}\n"
        f"stacks: [{{name: s, folder: {tmp_path}, position: '{position}'}}]\n"
    )
    assert main(["train", "latent", "--config", str(tmp_path / "c.yaml")]) == 1
    assert named in one_error(capsys)


def test_a_focal_position_that_is_no_number_is_one_sentence(tmp_path, capsys):
    for z in range(3):
        write_image(tmp_path / f"plane_{'abc'[z]}.png", texture(32, 32, z))
    (tmp_path / "c.yaml").write_text(
        f"out: {tmp_path / 'run'}\n"
        f"stacks: [{{name: s, folder: {tmp_path}, position: 'plane_(.)'}}]\n"
    )
    assert main(["train", "latent", "--config", str(tmp_path / "c.yaml")]) == 1
    assert one_error(capsys).endswith("which is not a number.")


@pytest.fixture
def domains(tmp_path):
    """A sharp folder, a 1 x 1 image and a 64 px image for the learned-synthesis trainers."""
    (tmp_path / "sharp").mkdir()
    for i in range(2):
        write_image(tmp_path / "sharp" / f"t{i}.png", texture(64, 64, i))
    write_image(tmp_path / "dot.png", texture(1, 1, 3))
    write_image(tmp_path / "real.png", texture(64, 64, 4))
    return tmp_path


@pytest.mark.parametrize("trainer", ["gan", "unit-ddpm"])
@pytest.mark.parametrize(
    ("data", "named"),
    [
        ("blurred: [{path: DOT}]", "dot.png: train_box [0.0, 0.0, 1.0, 0.5] covers 1 x 0 px"),
        ("blurred: [{path: REAL, train_box: [0.5, 0.5, 0.55, 0.55]}]", "real.png: train_box"),
        ("pairs: [{sharp: DOT, blurred: REAL}]", "dot.png and "),
        ("blurred: [{path: REAL, train_box: [0.5, 0.5, 0.5, 1]}]", "train_box: must be"),
    ],
)
def test_too_small_real_images_or_boxes_are_refused(domains, capsys, trainer, data, named):
    data = data.replace("DOT", str(domains / "dot.png")).replace("REAL", str(domains / "real.png"))
    (domains / "c.yaml").write_text(
        f"out: {domains / 'run'}\nsharp_dir: {domains / 'sharp'}\ntile: 32\n{data}\n"
    )
    assert main(["train", trainer, "--config", str(domains / "c.yaml")]) == 1
    line = one_error(capsys)
    assert named in line, line
    assert not (domains / "run").exists()


def test_deblur_and_classifier_refuse_too_small_real_images(domains, capsys):
    dot = domains / "dot.png"
    configs = {
        "deblur": f"real: [{{sharp: {dot}, blurred: {domains / 'real.png'}}}]",
        "classifier": f"real: [{{path: {dot}, label: defocus}}]",
    }
    for trainer, data in configs.items():
        (domains / "c.yaml").write_text(
            f"out: {domains / 'run'}\nsharp_dir: {domains / 'sharp'}\ntile: 32\n{data}\n"
        )
        assert main(["train", trainer, "--config", str(domains / "c.yaml")]) == 1
        assert f"{dot}" in one_error(capsys)


def test_resume_and_overwrite_together_are_refused(run_copy, capsys):
    config, run = run_copy
    before = snapshot(run)
    assert train(config, "--set", "epochs=2", "--resume", "--overwrite") == 1
    assert one_error(capsys).endswith(
        "Pass --resume to continue a run or --overwrite to start it again, not both."
    )
    assert snapshot(run) == before


def test_resume_compares_the_run_folder_by_path_not_by_text(trained, tmp_path, monkeypatch, capsys):
    root, _, run = trained
    monkeypatch.chdir(tmp_path)
    config = tiny_yaml(tmp_path / "t.yaml", "run", root / "sharp")  # a relative out
    assert train(config) == 0
    for spelling in (str(tmp_path / "run"), "./run/"):
        assert train(config, "--out", spelling, "--set", "epochs=2", "--resume") == 0
    rows = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(rows) == 3  # the second resume had nothing left to train
    capsys.readouterr()
    other = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "run", other)
    assert train(config, "--out", str(other), "--set", "epochs=3", "--resume") == 1
    assert "out differ(s) from the run's config" in one_error(capsys)


def test_overwrite_refuses_a_run_folder_with_a_hard_link_of_a_file_in_an_input_folder(
    trained, tmp_path, capsys
):
    import os

    root, _, run = trained
    sharp = tmp_path / "sharp"
    shutil.copytree(root / "sharp", sharp)
    out = tmp_path / "run"
    shutil.copytree(run, out)
    os.link(sharp / "t1.png", out / "t1.png")
    before = snapshot(out)
    config = tiny_yaml(tmp_path / "t.yaml", out, sharp)
    assert train(config, "--overwrite") == 1
    line = one_error(capsys)
    assert f"holds a hard link of the input {sharp / 't1.png'}" in line, line
    assert snapshot(out) == before
    dataset = ["synth", "dataset", "--sharp", str(sharp), "--n", "1", "--tile", "32"]
    assert main([*dataset, "--out", str(out), "--overwrite"]) == 1
    assert "holds a hard link of the input" in one_error(capsys)
    assert snapshot(out) == before
    # a hard link of an unrelated file is no input: the run is replaced
    os.unlink(out / "t1.png")
    (tmp_path / "mine.txt").write_text("mine")
    os.link(tmp_path / "mine.txt", out / "mine.txt")
    assert train(config, "--overwrite") == 0
    assert (tmp_path / "mine.txt").read_text() == "mine" and not (out / "mine.txt").exists()
