"""Scale as an input: images of known microns per pixel are judged at the working resolution."""

import logging

import numpy as np
import pytest

from histoblur.errors import ParameterError
from histoblur.inference.resolution import (
    check_mpp,
    scale_factor,
    to_input_size,
    to_working,
    working_mpp,
)
from histoblur.inference.segment import Segmenter


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), 51, "0.5"])
def test_absurd_mpp_is_refused_with_one_sentence(bad):
    with pytest.raises(ParameterError, match="microns per pixel"):
        check_mpp(bad)


def test_far_resolutions_warn_that_the_result_is_unreliable(caplog):
    with caplog.at_level(logging.WARNING, logger="histoblur"):
        assert scale_factor(0.05, 0.5) == pytest.approx(0.1)
    assert "unreliable" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="histoblur"):
        scale_factor(0.25, 0.5)
    assert caplog.text == ""


@pytest.mark.parametrize("shape", [(101, 57), (101, 57, 3), (7, 9, 4)])
@pytest.mark.parametrize("mpp", [0.1, 0.25, 0.5, 1.0, 4.0])
def test_maps_come_back_at_the_input_size(shape, mpp):
    image = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    work = to_working(image, mpp, 0.5)
    assert work.dtype == image.dtype and work.shape[2:] == image.shape[2:]
    assert work.shape[0] == max(1, round(shape[0] * min(1.0, mpp / 0.5)))  # never enlarged
    back = to_input_size(np.zeros(work.shape[:2], np.float32), shape[:2])
    assert back.shape == shape[:2]


def test_the_working_resolution_comes_from_the_checkpoint():
    assert working_mpp({"inference": {"mpp": 0.25}}) == 0.25
    assert working_mpp({}) == 0.5
    with pytest.raises(ParameterError):
        working_mpp({"inference": {"mpp": -3}})
    assert Segmenter.load("default").mpp == 0.5


def test_segmenter_masks_match_the_input_at_any_mpp():
    segmenter = Segmenter.load("default", tile=64)
    image = np.random.default_rng(1).integers(0, 255, (90, 70, 3), dtype=np.uint8)
    for mpp in (None, 0.25, 0.5, 2.0):
        result = segmenter.segment(image, mpp=mpp)
        assert result.mask.shape == result.probability.shape == (90, 70)
    at_working = segmenter.predict_proba(image, mpp=0.5)
    assert np.array_equal(at_working, segmenter.predict_proba(image))  # no resampling at 0.5


def test_classifier_takes_the_image_resolution():
    from histoblur.inference.classify import BlurClassifier

    classifier = BlurClassifier.load()
    assert classifier.mpp == 0.5
    image = np.random.default_rng(2).integers(0, 255, (128, 256, 3), dtype=np.uint8)
    assert classifier.logits(image, mpp=0.25)[1] == 1  # halved to 64 x 128: one padded window
    same = classifier.classify(image, mpp=0.5).probabilities
    assert same == classifier.classify(image).probabilities


@pytest.mark.parametrize("name", ["segmenter", "threshold", "laplacian", "histoqc"])
def test_every_detector_takes_the_image_resolution(name):
    from histoblur.inference.detectors import make_detector

    image = np.random.default_rng(3).integers(0, 255, (80, 60, 3), dtype=np.uint8)
    plain = make_detector(name)(image)
    assert np.array_equal(make_detector(name, mpp=0.5)(image), plain)
    for mpp in (0.25, 1.0):
        assert make_detector(name, mpp=mpp)(image).shape == (80, 60)
    with pytest.raises(ParameterError):
        make_detector(name, mpp=-1)


def test_cli_mpp_is_checked_first_and_recorded(tmp_path, capsys):
    from histoblur.cli.main import main
    from histoblur.io.images import write_image

    tile = write_image(tmp_path / "t.png", np.zeros((40, 40, 3), np.uint8))
    for command in (
        ["segment", "--out", str(tmp_path / "s")],
        ["classify", "--out", str(tmp_path / "c.csv")],
    ):
        assert main([*command, "--mpp", "-1", str(tile)]) == 1
        assert "--mpp must be" in capsys.readouterr().err
    assert not (tmp_path / "s").exists() and not (tmp_path / "c.csv").exists()
    assert main(["segment", "--mpp", "0.25", "--out", str(tmp_path / "s"), str(tile)]) == 0
    assert (tmp_path / "s" / "t_mask.png").is_file()
