import numpy as np
import pytest

from histoblur.kernels import (
    centroid_offset,
    disk_kernel,
    gaussian_kernel,
    motion_kernel,
    polygon_kernel,
)
from histoblur.synthesis import BLUR_KINDS, plan_for
from histoblur.synthesis.plans import KernelPlan

INVARIANT = [
    k
    for k in BLUR_KINDS.values()
    if k.spec.model_fields["kind"].default in ("gaussian", "lens", "aperture", "motion", "mixed")
]


@pytest.mark.parametrize("kind", INVARIANT, ids=lambda k: k.name)
def test_registry_kernels_are_normalised_and_centred(kind):
    rng = np.random.default_rng(0)
    sampler = kind.sampler()
    for _ in range(10):
        plan = plan_for(sampler.sample(rng), 64, 64)
        assert isinstance(plan, KernelPlan)
        k = plan.kernel
        assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
        assert k.min() >= 0
        assert k.sum() == pytest.approx(1.0, abs=1e-9)
        dy, dx = centroid_offset(k)
        assert abs(dy) < 0.01 and abs(dx) < 0.01


@pytest.mark.parametrize("length", [5, 7.5, 12.25, 40])
@pytest.mark.parametrize("angle", [0, 17, 45, 90, 133.3])
def test_motion_kernel_is_subpixel_exact(length, angle):
    k = motion_kernel(length, angle)
    dy, dx = centroid_offset(k)
    assert abs(dy) < 1e-9 and abs(dx) < 1e-9
    # second moment along the motion direction equals that of a uniform segment of that length
    h = k.shape[0] // 2
    ys, xs = np.mgrid[-h : h + 1, -h : h + 1]
    t = xs * np.cos(np.radians(angle)) - ys * np.sin(np.radians(angle))
    expected = length**2 / 12
    # pixel integration adds at most the quantisation variance of a diagonal step (2/12 px^2)
    assert (k * t**2).sum() == pytest.approx(expected, rel=0.05, abs=0.3)


@pytest.mark.parametrize("length", [3, 5, 10, 40])
def test_integer_axis_motion_is_the_classic_box(length):
    k = motion_kernel(length, 0)
    row = k.sum(axis=0)
    row = row[row > 0]
    if length % 2:
        assert np.allclose(row, 1 / length)
    else:
        assert np.allclose(row, [0.5 / length] + [1 / length] * (length - 1) + [0.5 / length])


def test_motion_kernel_presets_are_axis_aligned():
    assert np.count_nonzero(motion_kernel(9, 0).sum(axis=1)) == 1
    assert np.count_nonzero(motion_kernel(9, 90).sum(axis=0)) == 1


def test_disk_area_tracks_radius():
    for r in (2.0, 5.5, 15.0):
        k = disk_kernel(r)
        support = (k > 0).sum()
        assert abs(support - np.pi * r * r) < 2 * np.pi * r + 4
        assert k[k.shape[0] // 2, k.shape[1] // 2] == pytest.approx(k.max())


def test_polygon_has_blades_and_rotates():
    hexagon = polygon_kernel(8, 6, 0)
    rotated = polygon_kernel(8, 6, 30)
    assert not np.allclose(hexagon, rotated)
    assert np.allclose(polygon_kernel(8, 6, 60), hexagon, atol=1e-3)  # 6-fold symmetry


def test_gaussian_matches_formula():
    k = gaussian_kernel(1.5)
    c = k.shape[0] // 2
    ratio = k[c, c + 1] / k[c, c]
    assert ratio == pytest.approx(np.exp(-0.5 / 1.5**2), rel=1e-9)


@pytest.mark.parametrize(
    "bad",
    [
        lambda: disk_kernel(-1),
        lambda: motion_kernel(0, 0),
        lambda: polygon_kernel(3, 2),
        lambda: gaussian_kernel(0),
    ],
)
def test_kernel_rejects_bad_parameters(bad):
    with pytest.raises(ValueError):
        bad()
