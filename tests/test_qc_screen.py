"""Whole-slide QC scheduling: the coarse focus screen and full batches across window rows."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from histoblur.inference.cohort import rerun_reason
from histoblur.inference.qc import QCConfig, SlideQC, result_parameters
from histoblur.inference.screen import detail_ratio
from histoblur.inference.segment import Segmenter
from histoblur.wsi.readers import ArrayReader


class Recording:
    """A stand-in network that flags dark pixels and records the size of every batch."""

    def __init__(self, tile=64, batch_size=4):
        self.tile, self.overlap, self.threshold, self.batch_size = tile, 8, 0.5, batch_size
        self.autocast = None
        self.mpp = 0.5
        self.batches = []

    def _predict(self, batch):
        self.batches.append(len(batch))
        return (batch[:, :1] < 0.5).astype(np.float32)


def half_blurred_tissue(sigma=3.0):
    """Real IHC tissue whose right half is Gaussian-blurred (sigma in px at this scale)."""
    tissue = skimage.data.immunohistochemistry()
    out = tissue.copy()
    out[:, 256:] = cv2.GaussianBlur(tissue, (0, 0), sigma)[:, 256:]
    return out


def test_detail_ratio_falls_with_blur_whatever_the_contrast():
    tissue = skimage.data.immunohistochemistry()[::2, ::2]
    ratios = [detail_ratio(cv2.GaussianBlur(tissue, (0, 0), s)) for s in (0.3, 0.7, 1.0, 1.5)]
    assert all(a > b for a, b in zip(ratios, ratios[1:], strict=False))
    faint = (tissue.astype(np.float32) * 0.4 + 150).astype(np.uint8)  # a pale stain
    assert detail_ratio(faint) == pytest.approx(detail_ratio(tissue), rel=0.1)


def test_batches_are_full_across_rows():
    reader = ArrayReader(half_blurred_tissue(), mpp=0.5)
    network = Recording(batch_size=5)
    config = QCConfig(mpp=0.5, tissue_mpp=2.0, batch_size=5)
    result = SlideQC(reader, network, config).run()
    n = result["summary"]["tiles"]
    assert sum(network.batches) == n and n > 5
    assert network.batches[:-1] == [5] * (len(network.batches) - 1)  # only the last is short
    assert result["summary"]["screened_sharp"] == 0


def test_screen_settles_sharp_windows_and_keeps_the_blur():
    reader = ArrayReader(half_blurred_tissue(), mpp=0.5)
    segmenter = Segmenter.load("default", tile=64)
    full = SlideQC(reader, segmenter, QCConfig(mpp=0.5, tissue_mpp=2.0)).run()
    config = QCConfig(mpp=0.5, tissue_mpp=2.0, screen=True, screen_cutoff=0.9)
    fast = SlideQC(reader, segmenter, config).run()
    a, b = full["mask"] > 127, fast["mask"] > 127
    summary = fast["summary"]
    assert 0 < summary["screened_sharp"] < summary["tiles"]
    # the blurred half is found as without the screen
    right = (slice(40, -40), slice(300, -40))
    assert b[right].mean() == pytest.approx(a[right].mean(), abs=0.05) and a[right].mean() > 0.5
    # a settled window is sharp: nothing flagged where the screen settled more than the network
    assert b.sum() <= a.sum()
    # the tissue area does not depend on the screen
    assert summary["tissue_area_mm2"] == pytest.approx(full["summary"]["tissue_area_mm2"], rel=0.02)


def test_screen_is_a_result_parameter():
    segmenter = Segmenter.load("default", tile=64)
    off = result_parameters(QCConfig(), segmenter, 0.25)
    screened = QCConfig(screen=True, screen_cutoff=1.2)
    assert off["screen_cutoff"] is None
    assert result_parameters(screened, segmenter, 0.25)["screen_cutoff"] == 1.2
    summary = {"metadata_mpp": 0.25, "parameters": off}
    assert rerun_reason(summary, Path("a.svs"), QCConfig(), segmenter) == ""
    assert "screen_cutoff changed" in rerun_reason(summary, Path("a.svs"), screened, segmenter)


def test_qc_slide_loads_its_network_with_the_configured_precision(tmp_path):
    from histoblur.inference.qc import qc_slide
    from histoblur.io.images import write_image

    path = write_image(tmp_path / "tile.png", skimage.data.immunohistochemistry()[:256, :256])
    for precision in ("fp32", "bf16"):
        config = QCConfig(device="cpu", slide_mpp=0.5, precision=precision)
        summary = qc_slide(path, tmp_path / precision, config)
        assert summary["parameters"]["precision"] == precision
