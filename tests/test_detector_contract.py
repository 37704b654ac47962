"""Contract tests over every detector of :data:`histoblur.inference.detectors.DETECTORS`.

Each detector maps an image to an (H, W) boolean mask of the pixels to flag. On a textured IHC
tile and the same tile blurred with histoblur's own blur (:func:`histoblur.synthesis.apply_blur`)
the mask has the image's shape, is deterministic, leaves its input alone, and flags the blurred
version clearly more than the sharp one. Cases a detector is known to fail are marked ``xfail``
(strict) with the measured numbers, so they stay visible and a fix shows up as an XPASS failure.
"""

from __future__ import annotations

import numpy as np
import pytest

from histoblur.inference.detectors import CLASSICAL, DETECTORS, make_detector
from histoblur.synthesis import apply_blur, make_spec

NAMES = sorted(DETECTORS)
BLURS = {
    "gaussian": {"sigma": 3.0},
    "lens": {"radius": 4.0},
    "motion": {"length": 15.0},
}
DEFOCUS = ("gaussian", "lens")
# blurring must raise the flagged share by at least this much (a real, not a marginal, change)
MARGIN = 0.25

LAPLACIAN_RELATIVE = (
    "laplacian thresholds at a quarter of the image's own 90th percentile, so a tile blurred "
    "all over is not flagged (measured 0.0 % sharp vs <= 0.2 % blurred)"
)
THRESHOLD_MOTION = (
    "the threshold detector does not see 15 px motion blur: it flags 12.5 % of the "
    "motion-blurred tile vs 14.2 % of the sharp one"
)
HISTOQC_GLASS = (
    "histoqc's absolute rule flags every pixel of a blank glass tile as blurred "
    "(smoothed Laplacian 0 <= 0.02); the other detectors flag none"
)
KNOWN_FAILURES = {
    ("laplacian", "gaussian"): LAPLACIAN_RELATIVE,
    ("laplacian", "lens"): LAPLACIAN_RELATIVE,
    ("laplacian", "motion"): LAPLACIAN_RELATIVE,
    ("threshold", "motion"): THRESHOLD_MOTION,
}


@pytest.fixture(scope="module")
def detectors():
    """Every registered detector, built once (the segmenter loads its shipped weights)."""
    return {name: make_detector(name) for name in NAMES}


@pytest.fixture(scope="module")
def sharp(ihc) -> np.ndarray:
    """A 96 x 128 RGB crop with texture everywhere."""
    return np.ascontiguousarray(ihc[100:196, 150:278])


@pytest.fixture(scope="module")
def blurred(sharp) -> dict[str, np.ndarray]:
    return {kind: apply_blur(sharp, make_spec(kind, **p)) for kind, p in BLURS.items()}


def _cases(names, kinds, known=None):
    out = []
    for name in names:
        for kind in kinds:
            reason = (known or {}).get((name, kind))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            out.append(pytest.param(name, kind, marks=marks, id=f"{name}-{kind}"))
    return out


def test_the_classical_set_is_the_registry_without_networks():
    assert set(CLASSICAL) <= set(DETECTORS) and "segmenter" not in CLASSICAL
    assert NAMES  # the registry is not empty


@pytest.mark.parametrize("name", NAMES)
def test_mask_has_the_image_shape_and_is_boolean(name, detectors, sharp, blurred):
    detect = detectors[name]
    for image in (sharp, blurred["gaussian"], sharp[..., 1], sharp[:40, :56]):
        mask = detect(image)
        assert isinstance(mask, np.ndarray), name
        assert mask.dtype == bool and mask.shape == image.shape[:2], name
        assert set(np.unique(mask)) <= {False, True}


@pytest.mark.parametrize("name", NAMES)
def test_detector_is_deterministic_and_leaves_its_input_alone(name, detectors, sharp, blurred):
    image = blurred["lens"].copy()
    first = detectors[name](image)
    assert np.array_equal(image, blurred["lens"]), "the detector wrote into its input"
    assert np.array_equal(detectors[name](image), first)
    assert np.array_equal(make_detector(name)(image), first)  # a fresh build agrees


@pytest.mark.parametrize(("name", "kind"), _cases(sorted(CLASSICAL), BLURS, KNOWN_FAILURES))
def test_classical_detectors_flag_the_blurred_tile_more(name, kind, detectors, sharp, blurred):
    detect = detectors[name]
    flagged_sharp, flagged_blurred = detect(sharp).mean(), detect(blurred[kind]).mean()
    assert flagged_blurred >= flagged_sharp + MARGIN, (flagged_sharp, flagged_blurred)


@pytest.mark.parametrize(("name", "kind"), _cases(sorted(set(NAMES) - set(CLASSICAL)), DEFOCUS))
def test_network_detectors_flag_defocus_more(name, kind, detectors, sharp, blurred):
    detect = detectors[name]
    flagged_sharp, flagged_blurred = detect(sharp).mean(), detect(blurred[kind]).mean()
    assert flagged_blurred >= flagged_sharp + MARGIN, (flagged_sharp, flagged_blurred)


@pytest.mark.parametrize(("name", "kind"), _cases(NAMES, BLURS))
def test_in_a_half_blurred_tile_the_blurred_half_is_flagged_more(
    name, kind, detectors, sharp, blurred
):
    half = sharp.shape[1] // 2
    image = sharp.copy()
    image[:, half:] = blurred[kind][:, half:]
    mask = detectors[name](image)
    # leave out a band at the seam: windows straddling it see both halves
    band = 16
    left, right = mask[:, : half - band].mean(), mask[:, half + band :].mean()
    assert right >= left + MARGIN, (left, right)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=HISTOQC_GLASS))
        if n == "histoqc"
        else n
        for n in NAMES
    ],
)
def test_blank_glass_is_not_flagged(name, detectors):
    glass = np.full((64, 96, 3), 243, np.uint8)
    assert not detectors[name](glass).any()
