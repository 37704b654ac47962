"""``histoblur train segmenter``, ``segment`` and ``evaluate segmentation --bench`` end to end."""

import json

import numpy as np
import pytest

from histoblur.cli.main import main
from histoblur.io.images import read_image, write_image
from histoblur.synthesis import apply_blur, make_spec
from histoblur.synthesis.real_pairs import RealPairConfig, build_real_pairs


def texture(h, w, seed):
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, (-(-h // 4), -(-w // 4), 3), dtype=np.uint8)
    return np.kron(base, np.ones((4, 4, 1), np.uint8))[:h, :w]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    sharp = root / "sharp"
    sharp.mkdir()
    for i in range(2):
        write_image(sharp / f"t{i}.png", texture(96, 96, i))
    s = texture(128, 128, 9)
    write_image(root / "s.png", s)
    write_image(root / "b.png", apply_blur(s, make_spec("lens", radius=4)))
    build_real_pairs(
        root / "s.png", root / "b.png", root / "bench", RealPairConfig(n=6, tile=48, align=False)
    )
    (root / "train.yaml").write_text(
        f"out: {root / 'run'}\n"
        f"sharp_dir: {sharp}\n"
        f"val: [{root / 'bench'}]\n"
        "model: {width: 4, depth: 2}\n"
        "synthesis: {tile: 32, context: 8, methods: [gaussian, lens]}\n"
        "epochs: 1\nsteps_per_epoch: 3\nbatch_size: 2\nworkers: 0\nwarmup_steps: 1\n"
    )
    assert main(["train", "segmenter", "--config", str(root / "train.yaml")]) == 0
    return root


def test_training_writes_checkpoints_history_and_curves(workspace):
    run = workspace / "run"
    for name in ("best/model.safetensors", "best/config.json", "last/trainer.pt"):
        assert (run / name).is_file()
    for name in ("history.csv", "curves.png", "config.json"):
        assert (run / name).is_file()
    config = json.loads((run / "best" / "config.json").read_text())
    assert config["model"]["width"] == 4 and config["task"] == "blur-segmentation"
    assert "dice/bench" in (run / "history.csv").read_text()


def test_training_is_reproducible_and_resumes(workspace, tmp_path):
    yaml_text = (
        (workspace / "train.yaml")
        .read_text()
        .replace(str(workspace / "run"), str(tmp_path / "again"))
    )
    (tmp_path / "t.yaml").write_text(yaml_text)
    assert main(["train", "segmenter", "--config", str(tmp_path / "t.yaml")]) == 0
    a = (workspace / "run" / "last" / "model.safetensors").read_bytes()
    b = (tmp_path / "again" / "last" / "model.safetensors").read_bytes()
    assert a == b
    # the same folder again is refused, resume with more epochs continues
    assert main(["train", "segmenter", "--config", str(tmp_path / "t.yaml")]) == 1
    args = ["train", "segmenter", "--config", str(tmp_path / "t.yaml"), "--set", "epochs=2"]
    assert main([*args, "--resume"]) == 0
    history = (tmp_path / "again" / "history.csv").read_text().strip().splitlines()
    assert len(history) == 3 and history[-1].startswith("2,6,")
    assert main([*args, "--set", "lr=0.5", "--resume"]) == 1


def test_fine_tuning_starts_from_the_init_checkpoint(workspace, tmp_path):
    from safetensors.numpy import load_file

    yaml_text = (
        (workspace / "train.yaml")
        .read_text()
        .replace(str(workspace / "run"), str(tmp_path / "tuned"))
    )
    (tmp_path / "t.yaml").write_text(yaml_text)
    init = ["--set", f"init={workspace / 'run' / 'best'}"]
    frozen = ["--set", "lr=1e-9", "--set", "ema=0"]  # training barely moves the weights
    assert main(["train", "segmenter", "--config", str(tmp_path / "t.yaml"), *init, *frozen]) == 0
    start = load_file(workspace / "run" / "best" / "model.safetensors")
    tuned = load_file(tmp_path / "tuned" / "last" / "model.safetensors")
    convolutions = [k for k in start if k.endswith("weight") and start[k].ndim == 4]
    assert convolutions
    assert all(np.allclose(start[k], tuned[k], atol=1e-6) for k in convolutions)
    # a checkpoint of another architecture cannot start the run
    wider = ["--set", "model.width=8", "--overwrite"]
    args = ["train", "segmenter", "--config", str(tmp_path / "t.yaml"), *init, *wider]
    assert main(args) == 1


def test_bad_training_configs(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("epochs: -1\n")
    assert main(["train", "segmenter", "--config", str(tmp_path / "bad.yaml")]) == 1
    assert "epochs" in capsys.readouterr().err
    (tmp_path / "typo.yaml").write_text("epoch: 3\n")
    assert main(["train", "segmenter", "--config", str(tmp_path / "typo.yaml")]) == 1
    assert main(["train", "segmenter", "--set", f"out={tmp_path / 'r'}"]) == 1
    assert "sharp_dir" in capsys.readouterr().err
    assert main(["train", "segmenter", "--print-config"]) == 0
    assert "steps_per_epoch" in capsys.readouterr().out


def test_segment_writes_three_pictures_per_image(workspace, tmp_path):
    rgb = texture(70, 300, 3)
    write_image(tmp_path / "a.png", rgb)
    write_image(tmp_path / "g.tif", (rgb[..., 0].astype(np.uint16) * 257))
    model = str(workspace / "run" / "best")
    out = tmp_path / "out"
    args = ["segment", "--model", model, "--out", str(out), "--tile", "64", "--overlap", "16"]
    assert main([*args, str(tmp_path / "a.png"), str(tmp_path / "g.tif")]) == 0
    for stem in ("a", "g"):
        mask = read_image(out / f"{stem}_mask.png")
        assert mask.shape == (70, 300) and set(np.unique(mask)) <= {0, 255}
        assert read_image(out / f"{stem}_prob.png").shape == (70, 300)
        assert read_image(out / f"{stem}_overlay.png").shape == (70, 300, 3)
    summary = json.loads((out / "segment.json").read_text())
    assert len(summary["images"]) == 2
    # a folder is expanded to the images in it
    folder_out = tmp_path / "folder_out"
    assert main(["segment", "--model", model, "--out", str(folder_out), str(tmp_path)]) == 0
    assert (folder_out / "a_mask.png").is_file() and (folder_out / "g_overlay.png").is_file()


def test_segment_bad_input(workspace, tmp_path, capsys):
    model = str(workspace / "run" / "best")
    out = str(tmp_path / "out")
    assert main(["segment", "--model", model, "--out", out]) == 1
    assert "No input image" in capsys.readouterr().err
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    assert main(["segment", "--model", model, "--out", out, str(tmp_path / "broken.png")]) == 1
    assert "corrupt" in capsys.readouterr().err
    write_image(tmp_path / "ok.png", texture(40, 40, 1))
    ok = str(tmp_path / "ok.png")
    assert main(["segment", "--model", str(tmp_path / "nope"), "--out", out, ok]) == 1
    assert main(["segment", "--model", model, "--threshold", "2", "--out", out, ok]) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_evaluate_model_and_baseline_on_a_benchmark(workspace, tmp_path):
    out = tmp_path / "scores.csv"
    bench = str(workspace / "bench")
    model = str(workspace / "run" / "best")
    args = ["evaluate", "segmentation", "--bench", bench, "--out", str(out)]
    assert main([*args, "--model", model, "--negatives", str(workspace / "sharp")]) == 0
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["benchmarks"][0]["n"] == 6
    assert summary["negatives"][0]["n"] == 2
    assert main([*args, "--model", "laplacian"]) == 1  # the scores exist already
    assert main([*args, "--model", "laplacian", "--overwrite"]) == 0
    assert out.read_text().startswith("benchmark,n,dice")
    assert main(["evaluate", "segmentation", "--bench", bench, "--pred", bench]) == 1
