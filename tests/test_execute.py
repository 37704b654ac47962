"""The numpy executor's fast routes against an exact reference.

The reference is ``cv2.filter2D`` in float32 with the flipped kernel (true convolution) and
reflected borders; errors are in grey levels of an 8-bit image.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from histoblur.kernels import disk_kernel, gaussian_kernel, gaussian_kernel_1d, polygon_kernel
from histoblur.kernels.motion import motion_kernel
from histoblur.synthesis import execute as ex
from histoblur.synthesis.execute import convolve, execute, execute_uint8
from histoblur.synthesis.plans import KernelPlan, LevelsPlan, level_weights
from histoblur.synthesis.variant import defocus_levels

BORDER = cv2.BORDER_REFLECT_101
RADII = (4.0, 8.0, 15.0, 30.0)


def exact(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Exact convolution of every channel, float32, same shape as the image."""
    flipped = np.ascontiguousarray(kernel[::-1, ::-1], dtype=np.float32)
    out = cv2.filter2D(image.astype(np.float32), cv2.CV_32F, flipped, borderType=BORDER)
    return out.reshape(image.shape)


def exact_levels(image: np.ndarray, plan: LevelsPlan) -> np.ndarray:
    out = np.zeros(image.shape, np.float32)
    weights = level_weights(plan.index, len(plan.kernels))
    for kernel, w in zip(plan.kernels, weights, strict=True):
        out += exact(image, kernel) * w[..., None]
    return out


def check(
    image: np.ndarray, plan: KernelPlan | LevelsPlan, ref: np.ndarray, slack: float = 1e-3
) -> None:
    """The float route is exact to round-off; the uint8 route is the exact result rounded."""
    out = execute(plan, image.astype(np.float32))
    assert out.shape == image.shape and out.dtype == np.float32
    assert np.abs(out - ref).max() < 0.01
    out8 = execute_uint8(plan, image)
    assert out8.shape == image.shape and out8.dtype == np.uint8
    assert np.abs(out8 - ref).max() <= 0.5 + slack


@pytest.fixture(scope="module")
def he_tile(data_dir) -> np.ndarray:
    """A 384 x 448 crop of a real H&E image."""
    path = data_dir / "sharp" / "he" / "tiatoolbox_target_image.png"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return np.ascontiguousarray(cv2.imread(str(path))[300:684, 200:648, ::-1])


@pytest.mark.parametrize("radius", RADII)
def test_disk_matches_exact_on_ihc(ihc, radius):
    k = disk_kernel(radius)
    check(ihc, KernelPlan(kernel=k), exact(ihc, k))


@pytest.mark.parametrize("radius", RADII)
def test_disk_matches_exact_on_real_he(he_tile, radius):
    k = disk_kernel(radius)
    check(he_tile, KernelPlan(kernel=k), exact(he_tile, k))


@pytest.mark.parametrize(
    "kernel",
    [
        polygon_kernel(9.0, 5, 10.0),  # not point-symmetric: complex spectrum product
        motion_kernel(25.0, 30.0),
        motion_kernel(20.0, 0.0),  # exactly separable: two 1-D passes
        np.random.default_rng(0).random((13, 21)),  # asymmetric and non-square: catches flips
    ],
    ids=["pentagon", "motion-30", "motion-0", "random-13x21"],
)
def test_other_kernels_match_exact(ihc, kernel):
    kernel = kernel / kernel.sum()
    tile = ihc[:300, :280]
    check(tile, KernelPlan(kernel=kernel), exact(tile, kernel))


def test_gaussian_uint8_within_tail_tolerance(ihc):
    for sigma in (1.0, 2.0, 5.0):
        k1 = gaussian_kernel_1d(sigma)
        plan = KernelPlan(kernel=gaussian_kernel(sigma), separable=(k1, k1))
        ref = exact(ihc, plan.kernel)
        assert np.abs(execute(plan, ihc.astype(np.float32)) - ref).max() < 0.01
        assert np.abs(execute_uint8(plan, ihc) - ref).max() <= 0.5 + ex.UINT8_TAIL_TOL


def test_levels_match_exact_blend(ihc):
    rng = np.random.default_rng(1)
    h, w = 320, 300
    # a smooth radius map (several levels per tile) plus a jump, the identity level included
    radius = np.linspace(0, 14, w, dtype=np.float32)[None, :].repeat(h, 0)
    radius[:40] = 3.3
    plan = defocus_levels(radius)
    tile = ihc[:h, :w]
    check(tile, plan, exact_levels(tile, plan))
    # an index map outside [0, K-1] is clipped like level_weights clips it
    noisy = LevelsPlan(plan.kernels, (rng.random((h, w)) * 6 - 1).astype(np.float32))
    check(tile, noisy, exact_levels(tile, noisy))


@pytest.mark.parametrize(
    "plan",
    [
        KernelPlan(kernel=gaussian_kernel(2.0), separable=(gaussian_kernel_1d(2.0),) * 2),
        KernelPlan(kernel=disk_kernel(2.0)),  # direct filter
        KernelPlan(kernel=disk_kernel(12.0)),  # tiled FFT
        defocus_levels(np.tile(np.linspace(0, 12, 90, dtype=np.float32), (70, 1))),
    ],
    ids=["separable", "direct", "fft", "levels"],
)
def test_single_channel_keeps_its_axis(ihc, plan):
    grey = np.ascontiguousarray(ihc[:70, :90, 1:2])
    ref = exact_levels(grey, plan) if isinstance(plan, LevelsPlan) else exact(grey, plan.kernel)
    separable = isinstance(plan, KernelPlan) and plan.separable is not None
    check(grey, plan, ref, ex.UINT8_TAIL_TOL if separable else 1e-3)
    if isinstance(plan, KernelPlan):
        out = convolve(grey.astype(np.float32), plan.kernel, plan.separable)
        assert out.shape == grey.shape


def test_many_tiles_and_channels_pair_up(ihc):
    """Several tiles per axis, odd channel counts and unequal last tiles all stay exact."""
    k = disk_kernel(15.0)
    for channels in (1, 2, 3, 4):
        image = np.ascontiguousarray(np.dstack([ihc[:, :500]] * 2)[..., :channels])
        check(image, KernelPlan(kernel=k), exact(image, k))


def test_kernel_larger_than_image(ihc):
    k = disk_kernel(15.0)
    for tiny in (ihc[:5, :9], ihc[:1, :40], ihc[:33, :1]):
        tiny = np.ascontiguousarray(tiny)
        check(tiny, KernelPlan(kernel=k), exact(tiny, k))


def test_uint8_route_agrees_with_float_route(ihc):
    plan = KernelPlan(kernel=disk_kernel(10.0))
    via_float = np.clip(np.rint(execute(plan, ihc.astype(np.float32))), 0, 255)
    direct = execute_uint8(plan, ihc)
    assert np.abs(direct - via_float).max() <= 1
    assert np.mean(direct != via_float) < 1e-3


def test_identity_returns_a_copy(ihc):
    plan = KernelPlan(kernel=np.ones((1, 1)))
    out = execute_uint8(plan, ihc)
    assert np.array_equal(out, ihc) and out is not ihc
    f = ihc.astype(np.float32)
    assert np.array_equal(execute(plan, f), f)


def _blur_in_child(image: np.ndarray) -> np.ndarray:
    return execute_uint8(KernelPlan(kernel=disk_kernel(15.0)), image)


def test_forked_child_gets_a_working_pool(ihc):
    """A fork (e.g. data-loader workers) inherits the pool object but not its threads."""
    mp = pytest.importorskip("multiprocessing")
    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork on this platform")
    expected = _blur_in_child(ihc)  # the parent's pool threads are running now
    with mp.get_context("fork").Pool(1) as pool:
        out = pool.apply_async(_blur_in_child, (ihc,)).get(timeout=60)
    assert np.array_equal(out, expected)


def test_negative_taps_saturate_in_uint8(ihc):
    """A kernel with negative lobes (unsharp mask) clips at 0 and 255 instead of folding."""
    blur = disk_kernel(8.0)
    sharpen = -0.8 * blur
    sharpen[blur.shape[0] // 2, blur.shape[1] // 2] += 1.8
    tile = ihc[:200, :230]
    ref = exact(tile, sharpen)
    assert ref.min() < -10 and ref.max() > 265  # the test needs saturation on both sides
    out = execute_uint8(KernelPlan(kernel=sharpen), tile)
    assert np.abs(out - np.clip(ref, 0, 255)).max() <= 0.5 + 1e-3
