"""Contract tests over every registered detector, and the shared Laplacian map."""

import cv2
import numpy as np
import pytest

from histoblur.inference.baseline import laplacian_energy_map, smoothed_laplacian_map
from histoblur.inference.detectors import CLASSICAL, DETECTORS, make_detector
from histoblur.io.images import to_gray_float


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_every_detector_gives_a_boolean_mask_for_every_image_kind(name, ihc):
    detect = make_detector(name)
    rgb = ihc[:64, :96]
    for image in (rgb, rgb[..., 0], (rgb.astype(np.uint16) * 257), rgb[:8, :8]):
        mask = detect(image)
        assert mask.dtype == bool and mask.shape == image.shape[:2], name


def test_blurring_a_tile_raises_what_the_classical_detectors_flag(ihc):
    sharp = ihc[100:228, 150:278]
    blurred = cv2.GaussianBlur(sharp, (0, 0), 4)
    for name in ("histoqc", "threshold"):
        detect = make_detector(name)
        assert detect(blurred).mean() > detect(sharp).mean(), name
    assert set(CLASSICAL) == set(DETECTORS) - {"segmenter"}


def test_the_shared_laplacian_map_matches_the_formulas_it_replaced(ihc):
    grey = to_gray_float(ihc[:80, :80])
    border = cv2.BORDER_REFLECT_101
    lap3 = cv2.Laplacian(grey, cv2.CV_32F, ksize=3, borderType=border)
    box = cv2.boxFilter(lap3 * lap3, cv2.CV_32F, (31, 31), borderType=border)
    assert np.array_equal(laplacian_energy_map(ihc[:80, :80]), box)
    lap1 = np.abs(cv2.Laplacian(grey, cv2.CV_32F, ksize=1, borderType=border))
    gauss = cv2.GaussianBlur(lap1, (0, 0), 7.0, borderType=border)
    assert np.array_equal(smoothed_laplacian_map(ihc[:80, :80]), gauss)
