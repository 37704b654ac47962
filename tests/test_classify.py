"""Blur-type classifier: network, calibration, window selection, training, loading, CLI."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from histoblur.cli.main import main
from histoblur.errors import InputError
from histoblur.inference.classify import BlurClassifier, select_windows, window_starts
from histoblur.io.checkpoints import save_checkpoint
from histoblur.io.images import read_image, write_image
from histoblur.metrics.calibration import expected_calibration_error, fit_temperature, softmax
from histoblur.models.classifier import BLUR_TYPES, BlurTypeConfig, BlurTypeNet
from histoblur.synthesis.blur import apply_blur
from histoblur.synthesis.registry import make_spec
from histoblur.training.classifier import ClassifierTrainConfig, train_classifier

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SHARP_TILE = DATA / "sharp" / "he" / "tiatoolbox_target_image.png"


@pytest.mark.parametrize("size", [(32, 32), (37, 53), (128, 96)])
def test_network_any_input_size(size):
    torch.manual_seed(0)
    net = BlurTypeNet(BlurTypeConfig(width=4)).eval()
    assert net(torch.rand(2, 3, *size)).shape == (2, len(BLUR_TYPES))


def test_tiny_network_learns_sharp_versus_smooth():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    sharp = rng.random((8, 3, 32, 32)).astype(np.float32)
    smooth = np.full_like(sharp, 0.5)
    x = torch.from_numpy(np.concatenate([sharp, smooth]))
    y = torch.tensor([0] * 8 + [1] * 8)
    net = BlurTypeNet(BlurTypeConfig(width=4, stages=(1, 1), dropout=0.0))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_expected_calibration_error_known_values():
    labels = np.array([0, 0, 1, 1])
    perfect = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert expected_calibration_error(perfect, labels) == pytest.approx(0.0)
    # always 90% sure, right half the time: ECE 0.4
    over = np.array([[0.9, 0.1], [0.1, 0.9], [0.1, 0.9], [0.9, 0.1]])
    assert expected_calibration_error(over, labels) == pytest.approx(0.4)


def test_fit_temperature_recovers_overconfidence():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, (4000, 4))
    labels = np.array([rng.choice(4, p=p) for p in softmax(true_logits)])
    temperature = fit_temperature(true_logits * 3.0, labels)  # logits three times too sharp
    assert temperature == pytest.approx(3.0, rel=0.15)
    before = expected_calibration_error(softmax(true_logits * 3.0), labels)
    after = expected_calibration_error(softmax(true_logits * 3.0, temperature), labels)
    assert after < before / 2


def test_window_selection_prefers_structure_and_pads_small_images():
    assert window_starts(300, 128) == [0, 128, 172]
    rng = np.random.default_rng(0)
    image = np.full((256, 512, 3), 0.9, np.float32)
    image[:128, 256:384] = rng.random((128, 128, 3))
    windows = select_windows(image, 128)
    assert windows.shape == (1, 3, 128, 128)
    assert np.array_equal(windows[0], image[:128, 256:384].transpose(2, 0, 1))
    assert select_windows(rng.random((40, 70, 3)).astype(np.float32), 128).shape == (1, 3, 128, 128)


def _tiny_checkpoint(folder, task="blur-type-classification"):
    torch.manual_seed(0)
    net = BlurTypeNet(BlurTypeConfig(width=4)).eval()
    config = {
        "task": task,
        "classes": list(BLUR_TYPES),
        "model": BlurTypeConfig(width=4).model_dump(mode="json"),
        "inference": {"tile": 64},
        "calibration": {"temperature": 2.0},
    }
    save_checkpoint(folder, net.state_dict(), config)
    return net


def test_checkpoint_round_trip_and_wrong_task(tmp_path):
    net = _tiny_checkpoint(tmp_path / "clf")
    classifier = BlurClassifier.load(tmp_path / "clf")
    image = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    logits, n = classifier.logits(image)
    with torch.no_grad():
        expected = net(torch.from_numpy(image.astype(np.float32)[None].transpose(0, 3, 1, 2) / 255))
    assert n == 1 and np.allclose(logits, expected[0].numpy(), atol=1e-5)
    result = classifier.classify(image)
    assert sum(result.probabilities.values()) == pytest.approx(1.0)
    assert result.label == BLUR_TYPES[int(np.argmax(logits))]
    _tiny_checkpoint(tmp_path / "seg", task="blur-segmentation")
    with pytest.raises(InputError, match="not a blur-type classifier"):
        BlurClassifier.load(tmp_path / "seg")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(InputError):
        BlurClassifier.load(tmp_path / "bad")


def test_classify_command(tmp_path, capsys):
    _tiny_checkpoint(tmp_path / "clf")
    rng = np.random.default_rng(2)
    write_image(tmp_path / "imgs" / "a.png", (rng.random((90, 70, 3)) * 255).astype(np.uint8))
    write_image(tmp_path / "imgs" / "b.png", (rng.random((200, 150)) * 255).astype(np.uint8))
    out = tmp_path / "types.csv"
    assert (
        main(
            [
                "classify",
                "--model",
                str(tmp_path / "clf"),
                "--out",
                str(out),
                str(tmp_path / "imgs"),
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(out.open()))
    assert [Path(r["path"]).name for r in rows] == ["a.png", "b.png"]
    assert list(rows[0])[:6] == ["path", "label", "p_in_focus", "p_defocus", "p_motion", "p_mixed"]
    assert all(r["label"] in BLUR_TYPES for r in rows)
    assert main(["classify", "--out", str(out), str(tmp_path / "missing.png")]) == 1
    assert main(["classify", "--out", str(tmp_path / "x.txt"), str(tmp_path / "imgs")]) == 1


@pytest.mark.skipif(not (DATA / "sharp").is_dir(), reason="../shared/data is absent")
def test_training_runs_and_reports_calibration(tmp_path):
    config = ClassifierTrainConfig(
        out=tmp_path / "run", sharp_dir=DATA / "sharp", model=BlurTypeConfig(width=4),
        epochs=1, steps_per_epoch=3, batch_size=8, heldout=4, workers=0, ema=0.0,
    )  # fmt: skip
    report = train_classifier(config)["heldout"]
    assert report["n"] == 16 and np.array(report["confusion"]).sum() == 16
    assert 0.0 <= report["ece"] <= 1.0 and report["temperature"] > 0
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
    assert BlurClassifier.load(tmp_path / "run" / "best").temperature == report["temperature"]
    longer = config.model_copy(update={"epochs": 2, "ema": 0.0})
    resumed = train_classifier(longer, resume=True)
    assert [r["epoch"] for r in resumed["history"]] == [1, 2]
    assert resumed["history"][-1]["step"] == 6


SHIPPED = Path(__file__).resolve().parents[1] / "src/histoblur/models/weights/classifier-default"


@pytest.mark.skipif(not SHARP_TILE.is_file(), reason="../shared/data is absent")
@pytest.mark.skipif(not (SHIPPED / "model.safetensors").is_file(), reason="not shipped yet")
def test_default_model_tells_sharp_from_motion():
    classifier = BlurClassifier.load("default")
    tile = read_image(SHARP_TILE)[:256, :256, :3]
    assert classifier.classify(tile).label == "in_focus"
    moved = apply_blur(tile, make_spec("motion", length=25, angle=0))
    assert classifier.classify(moved).label == "motion"


def test_segmenter_and_classifier_give_one_answer(tmp_path):
    """The combined label is in focus exactly when the pooled map says so."""
    from histoblur.inference.focus import FocusModel, combine

    rng = np.random.default_rng(5)
    for _ in range(20):
        q = rng.dirichlet(np.ones(len(BLUR_TYPES)))
        focus = float(rng.random())
        p = combine(focus, dict(zip(BLUR_TYPES, q, strict=True)))
        assert sum(p.values()) == pytest.approx(1.0, abs=1e-5)
        assert p["in_focus"] == pytest.approx(1 - focus, abs=1e-6)
        blur = [k for k in BLUR_TYPES if k != "in_focus"]
        order = sorted(blur, key=lambda k: q[BLUR_TYPES.index(k)])
        assert sorted(blur, key=p.__getitem__) == order  # the classifier still ranks the types
    model = FocusModel.load()  # as the command loads it
    image = (rng.random((96, 96, 3)) * 255).astype(np.uint8)
    judgement = model.judge(image)
    label, probs = judgement.blur_type.label, judgement.blur_type.probabilities
    assert (label == "in_focus") == (judgement.focus_score < 0.5)
    assert probs["in_focus"] == pytest.approx(1 - judgement.focus_score, abs=1e-6)
    out = tmp_path / "c.csv"
    write_image(tmp_path / "a.png", image)
    assert main(["classify", "--out", str(out), str(tmp_path / "a.png")]) == 0
    row = next(csv.DictReader(out.open()))
    assert float(row["focus_score"]) == pytest.approx(judgement.focus_score, abs=1e-6)
    assert row["label"] == label
    assert (
        main(
            [
                "classify",
                "--classifier-only",
                "--out",
                str(out),
                "--overwrite",
                str(tmp_path / "a.png"),
            ]
        )
        == 0
    )
    assert next(csv.DictReader(out.open()))["focus_score"] == ""
