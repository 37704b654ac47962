"""``--device`` and ``--precision`` reach the networks of every command that runs one."""

import json

import numpy as np
import pytest
import torch

from histoblur.cli.main import main
from histoblur.errors import InputError
from histoblur.inference import classify as classify_module
from histoblur.inference import segment as segment_module
from histoblur.inference.classify import BlurClassifier
from histoblur.inference.detectors import make_detector
from histoblur.io.images import write_image


def texture(h, w, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, (-(-h // 4), -(-w // 4), 3), dtype=np.uint8)
    return np.kron(base, np.ones((4, 4, 1), np.uint8))[:h, :w]


@pytest.fixture
def tile(tmp_path):
    return write_image(tmp_path / "in" / "tile.png", texture(64, 64))


@pytest.fixture
def precisions(monkeypatch):
    """The precision each network is built with: (which, precision) in order."""
    seen = []
    for name, module in (("segmenter", segment_module), ("classifier", classify_module)):
        real = module.select_precision

        def spy(precision, device, name=name, real=real):
            seen.append((name, precision))
            return real(precision, device)

        monkeypatch.setattr(module, "select_precision", spy)
    return seen


def one_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)


def test_segment_runs_on_the_cpu_when_asked(tmp_path, tile, monkeypatch):
    devices = []
    real = segment_module.Segmenter.load.__func__

    def spy(cls, model="default", device="cpu", **kwargs):
        devices.append(device)
        return real(cls, model, device, **kwargs)

    monkeypatch.setattr(segment_module.Segmenter, "load", classmethod(spy))
    out = tmp_path / "seg"
    assert main(["segment", "--device", "cpu", "--out", str(out), str(tile)]) == 0
    assert devices == ["cpu"] and (out / "tile_mask.png").is_file()


@pytest.mark.parametrize("command", ["segment", "classify"])
def test_cuda_without_a_gpu_is_one_sentence_and_writes_nothing(
    tmp_path, tile, capsys, monkeypatch, command
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "o" / ("out.csv" if command == "classify" else "seg")
    assert main([command, "--device", "cuda", "--out", str(out), str(tile)]) == 1
    one_error(capsys, "histoblur: error: device 'cuda' was asked for but no CUDA device")
    assert not (tmp_path / "o").exists()


def test_classify_takes_precision_for_both_networks(tmp_path, tile, precisions):
    out = tmp_path / "c.csv"
    assert main(["classify", "--out", str(out), str(tile)]) == 0
    assert sorted(precisions) == [("classifier", "fp32"), ("segmenter", "fp32")]  # the default
    precisions.clear()
    assert (
        main(["classify", "--precision", "bf16", "--overwrite", "--out", str(out), str(tile)]) == 0
    )
    assert sorted(precisions) == [("classifier", "bf16"), ("segmenter", "bf16")]
    precisions.clear()
    argv = ["classify", "--classifier-only", "--precision", "auto", "--overwrite", "--out"]
    assert main([*argv, str(out), str(tile)]) == 0
    assert precisions == [("classifier", "auto")]


def test_evaluate_negatives_takes_precision(tmp_path, tile, precisions):
    out = tmp_path / "eval.csv"
    argv = ["evaluate", "segmentation", "--negatives", str(tile.parent), "--out", str(out)]
    assert main([*argv, "--precision", "bf16"]) == 0
    assert precisions == [("segmenter", "bf16")]
    assert json.loads(out.with_suffix(".json").read_text())["precision"] == "bf16"
    precisions.clear()
    assert main([*argv, "--overwrite", "--model", "laplacian"]) == 0  # no network: no precision
    assert precisions == [] and "precision" not in json.loads(out.with_suffix(".json").read_text())


def test_restore_detect_segmenter_takes_precision(tmp_path, precisions):
    from histoblur.io.checkpoints import save_checkpoint
    from histoblur.models.swin_denoiser import SwinDenoiser, SwinDenoiserConfig

    tiny = SwinDenoiserConfig(embed_dim=8, depths=(1, 2), heads=(1, 2), window=4, patch=1)
    torch.manual_seed(0)
    denoiser = save_checkpoint(
        tmp_path / "denoiser",
        SwinDenoiser(tiny).state_dict(),
        {"task": "restore-denoiser", "model": tiny.model_dump(),
         "inference": {"schedule": {"timesteps": 20}}},
    )  # fmt: skip
    image = write_image(tmp_path / "a.png", texture(64, 64))
    argv = ["restore", str(image), "--model", str(denoiser), "--steps", "2", "--detect"]
    out = tmp_path / "a_restored.png"
    assert main([*argv, "segmenter", "--precision", "bf16", "--out", str(out)]) == 0
    assert precisions == [("segmenter", "bf16")] and out.is_file()


def test_the_classifier_in_bf16_agrees_with_fp32():
    import skimage.data

    from histoblur.synthesis import apply_blur, make_spec

    tissue = skimage.data.immunohistochemistry()[100:228, 150:406]
    images = [tissue, apply_blur(tissue, make_spec("motion", length=15, angle=0))]
    fp32 = BlurClassifier.load("default", precision="fp32")
    bf16 = BlurClassifier.load("default", precision="bf16")
    assert fp32.autocast is None and bf16.autocast is torch.bfloat16
    for image in images:
        a, b = fp32.classify(image), bf16.classify(image)
        assert a.label == b.label
        for name, p in a.probabilities.items():
            assert b.probabilities[name] == pytest.approx(p, abs=0.05), name


def test_an_unknown_precision_is_refused_where_it_is_used():
    with pytest.raises(InputError, match="Unknown precision 'half'"):
        BlurClassifier.load("default", precision="half")
    with pytest.raises(InputError, match="Unknown precision 'half'"):
        make_detector("segmenter", precision="half")
