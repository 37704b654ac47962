"""Property tests (hypothesis, derandomized): kernels, blur ops, specs, executors, segmentation
metrics and tiling.

Every blur kind of :data:`histoblur.synthesis.BLUR_KINDS` is drawn over its spec's own field
bounds (read from the pydantic fields, so a new kind is covered without editing this file); the
strength fields are capped at :data:`CAP` pixels to keep the examples fast.
"""

from __future__ import annotations

import json
import math
import types
import typing

import numpy as np
import pytest
import torch
from annotated_types import Ge, Gt, Le, Lt
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from histoblur.kernels import (
    centroid_offset,
    combine,
    disk_kernel,
    gaussian_kernel,
    gaussian_kernel_1d,
    motion_kernel,
    polygon_kernel,
)
from histoblur.metrics.segmentation import aggregate_segmentation, confusion_counts, dice, iou
from histoblur.models.tiling import axis_starts, count_tiles, predict_tiled, ramp
from histoblur.synthesis import BLUR_KINDS, apply_blur, make_spec, plan_for, spec_from_dict
from histoblur.synthesis.execute import execute
from histoblur.synthesis.plans import KernelPlan, LevelsPlan, WarpPlan
from histoblur.synthesis.registry import LEARNED_KINDS, family_of
from histoblur.synthesis.spec import BlurSpec, validate_spec
from histoblur.synthesis.torch_ops import execute_torch

FAST = settings(max_examples=25, deadline=None, derandomize=True, database=None)
MANY = settings(FAST, max_examples=40)
PER_KIND = settings(FAST, max_examples=8)  # per blur kind: every kind is exercised
KINDS = sorted(BLUR_KINDS)
CAP = 16.0  # largest radius / sigma / length drawn for whole-image blurs (pixels)
SUM_TOL = 1e-12
# the two executors agree to this (float32 round-off: measured <= 8e-7 on [0, 1] images)
EXECUTOR_TOL = 2e-6
ALL_KINDS = {**BLUR_KINDS, **LEARNED_KINDS}


def field_strategy(name: str, info, cap: float | None) -> st.SearchStrategy:
    """Values a spec field accepts, from its annotation and its pydantic bounds."""
    annotation = info.annotation
    if typing.get_origin(annotation) is typing.Literal:
        return st.sampled_from(typing.get_args(annotation))
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    if optional:  # `float | None`: None or a value
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    low = high = None
    exclude_low = exclude_high = False
    for m in info.metadata:
        if isinstance(m, Ge):
            low = m.ge
        elif isinstance(m, Gt):
            low, exclude_low = m.gt, True
        elif isinstance(m, Le):
            high = m.le
        elif isinstance(m, Lt):
            high, exclude_high = m.lt, True
    if annotation is str:
        strategy = st.just(info.default)
    elif annotation is int:
        lo = (low or 0) + (1 if exclude_low else 0)
        hi = (2**31 - 1) if high is None else high - (1 if exclude_high else 0)
        strategy = st.integers(lo, hi)
    elif annotation is float:
        if cap is not None and high is not None and high >= 64:
            high, exclude_high = cap, False
        strategy = st.floats(
            low, high, exclude_min=exclude_low, exclude_max=exclude_high, allow_nan=False
        )
    else:
        raise AssertionError(f"teach field_strategy about {name}: {info.annotation}")
    return st.none() | strategy if optional else strategy


def spec_strategy(name: str, cap: float | None = CAP) -> st.SearchStrategy[BlurSpec]:
    """Specs of kind ``name`` with every field drawn inside its bounds."""
    cls = ALL_KINDS[name].spec
    fields = {
        f: st.just(info.default) if f == "kind" else field_strategy(f, info, cap)
        for f, info in cls.model_fields.items()
    }
    return st.fixed_dictionaries(fields).map(lambda values: validate_spec(cls, values))


def assert_psf(kernel: np.ndarray, centred: bool = True, tol: float = 1e-9) -> None:
    """Odd, square, finite, non-negative, unit sum (and centred when asked)."""
    assert kernel.ndim == 2 and kernel.shape[0] == kernel.shape[1] and kernel.shape[0] % 2 == 1
    assert np.isfinite(kernel).all() and (kernel >= 0).all()
    assert abs(kernel.sum() - 1.0) < SUM_TOL
    if centred:
        dy, dx = centroid_offset(kernel)
        assert abs(dy) < tol and abs(dx) < tol, (dy, dx)


# ---------------------------------------------------------------------------------------------
# kernels


@MANY
@given(sigma=st.floats(1e-3, 64.0), truncate=st.floats(0.5, 6.0))
def test_gaussian_kernels_are_normalised_symmetric_psfs(sigma, truncate):
    k1 = gaussian_kernel_1d(sigma, truncate)
    assert k1.ndim == 1 and k1.size % 2 == 1 and (k1 >= 0).all()
    assert abs(k1.sum() - 1.0) < SUM_TOL
    np.testing.assert_array_equal(k1, k1[::-1])
    k = gaussian_kernel(sigma, truncate)
    assert_psf(k)
    np.testing.assert_allclose(k, k.T, atol=0)


@MANY
@given(radius=st.floats(0.0, 64.0))
def test_disk_kernels_are_normalised_centred_psfs(radius):
    k = disk_kernel(radius)
    assert_psf(k)
    np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-15)
    assert k.shape[0] <= 2 * max(1, math.ceil(radius)) + 1  # no needless zero border


@MANY
@given(radius=st.floats(0.0, 32.0), blades=st.integers(3, 16), rotation=st.floats(0, 359.99))
def test_polygon_kernels_are_normalised_psfs(radius, blades, rotation):
    k = polygon_kernel(radius, blades, rotation)
    # a regular polygon is centred on its centre; area sampling moves it by a fraction of a pixel
    assert_psf(k, tol=0.05)


@MANY
@given(length=st.floats(0.01, 200.0), angle=st.floats(0.0, 359.99))
def test_motion_kernels_are_normalised_and_never_shift(length, angle):
    k = motion_kernel(length, angle)
    assert_psf(k, tol=1e-9)  # documented: the centroid is exactly the central pixel
    if length <= 1:
        assert k.shape == (1, 1)


@FAST
@given(
    radius=st.floats(0.0, 12.0),
    sigma=st.floats(0.1, 8.0),
    length=st.floats(1.01, 40.0),
    angle=st.floats(0.0, 359.99),
)
def test_combined_kernels_are_normalised_psfs(radius, sigma, length, angle):
    k = combine(disk_kernel(radius), gaussian_kernel(sigma), motion_kernel(length, angle))
    assert_psf(k, tol=1e-6)


@pytest.mark.parametrize("name", KINDS)
@PER_KIND
@given(data=st.data())
def test_every_plan_over_the_full_parameter_range_holds_valid_psfs(name, data):
    spec = data.draw(spec_strategy(name, cap=None), label="spec")
    h, w = 16, 20
    plan = plan_for(spec, h, w)
    if isinstance(plan, KernelPlan):
        assert_psf(plan.kernel, centred=False)
        if plan.separable is not None:
            col, row = plan.separable
            np.testing.assert_allclose(np.outer(col, row), plan.kernel, atol=1e-12)
    elif isinstance(plan, LevelsPlan):
        for kernel in plan.kernels:
            assert_psf(kernel, centred=False)
        assert plan.index.shape == (h, w)
        assert plan.index.min() >= 0 and plan.index.max() <= len(plan.kernels) - 1 + 1e-5
    else:
        assert isinstance(plan, WarpPlan) and plan.grids
        for gx, gy in plan.grids:
            assert gx.shape == gy.shape == (h, w)
            assert np.isfinite(gx).all() and np.isfinite(gy).all()


# ---------------------------------------------------------------------------------------------
# blur ops


@pytest.mark.parametrize("name", KINDS)
@PER_KIND
@given(
    data=st.data(),
    h=st.integers(3, 24),
    w=st.integers(3, 24),
    value=st.integers(0, 255),
    grey=st.booleans(),
)
def test_blur_of_a_constant_image_is_that_constant(name, data, h, w, value, grey):
    spec = data.draw(spec_strategy(name), label="spec")
    image = np.full((h, w) if grey else (h, w, 3), value, np.uint8)
    out = apply_blur(image, spec)
    assert out.shape == image.shape and out.dtype == image.dtype
    np.testing.assert_array_equal(out, image)
    as_float = execute(plan_for(spec, h, w), np.full((h, w, 3), value / 255, np.float32))
    np.testing.assert_allclose(as_float, value / 255, atol=EXECUTOR_TOL)
    assert abs(float(as_float.mean()) - value / 255) < EXECUTOR_TOL


@pytest.mark.parametrize("name", KINDS)
@PER_KIND
@given(data=st.data(), h=st.integers(3, 24), w=st.integers(3, 24), seed=st.integers(0, 2**16))
def test_blur_stays_in_the_input_range(name, data, h, w, seed):
    spec = data.draw(spec_strategy(name), label="spec")
    rng = np.random.default_rng(seed)
    image = rng.integers(40, 200, (h, w, 3), dtype=np.uint8)
    out = apply_blur(image, spec)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert out.min() >= image.min() and out.max() <= image.max()
    x = image.astype(np.float32) / 255
    y = execute(plan_for(spec, h, w), x)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert y.min() >= x.min() - EXECUTOR_TOL and y.max() <= x.max() + EXECUTOR_TOL


@pytest.mark.parametrize("name", KINDS)
@PER_KIND
@given(data=st.data(), h=st.integers(3, 20), w=st.integers(3, 20), seed=st.integers(0, 2**16))
def test_numpy_and_torch_executors_agree(name, data, h, w, seed):
    spec = data.draw(spec_strategy(name), label="spec")
    image = np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)
    plan = plan_for(spec, h, w)
    expected = execute(plan, image)
    got = execute_torch(plan, torch.from_numpy(image).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=EXECUTOR_TOL)


# ---------------------------------------------------------------------------------------------
# specs


@pytest.mark.parametrize("name", sorted(ALL_KINDS))
def test_default_specs_round_trip(name):
    spec = make_spec(name)
    assert spec_from_dict(spec.model_dump()) == spec
    assert spec_from_dict(json.loads(json.dumps(spec.model_dump()))) == spec
    assert family_of(spec) == ALL_KINDS[name].family


@pytest.mark.parametrize("name", sorted(ALL_KINDS))
@PER_KIND
@given(data=st.data())
def test_specs_round_trip_through_their_dict_and_json(name, data):
    spec = data.draw(spec_strategy(name, cap=None), label="spec")
    data = spec.model_dump()
    assert spec_from_dict(data) == spec
    again = spec_from_dict(json.loads(json.dumps(data)))
    assert again == spec and type(again) is type(spec)
    assert again.params() == {k: v for k, v in data.items() if k != "kind"}


@FAST
@given(name=st.sampled_from(sorted(ALL_KINDS)), seed=st.integers(0, 2**32 - 1))
def test_sampled_specs_round_trip_and_replay(name, seed):
    sampler = ALL_KINDS[name].sampler()
    spec = sampler.sample(np.random.default_rng(seed))
    assert spec_from_dict(json.loads(json.dumps(spec.model_dump()))) == spec
    assert sampler.sample(np.random.default_rng(seed)) == spec


# ---------------------------------------------------------------------------------------------
# segmentation metrics


def masks(shape):
    return arrays(np.bool_, shape)


mask_pair = st.tuples(st.integers(1, 12), st.integers(1, 12)).flatmap(
    lambda s: st.tuples(masks(s), masks(s))
)


@FAST
@given(pair=mask_pair)
def test_dice_and_iou_are_symmetric_bounded_and_consistent(pair):
    a, b = pair
    d, j = dice(a, b), iou(a, b)
    assert 0.0 <= d <= 1.0 and 0.0 <= j <= 1.0
    assert d == dice(b, a) and j == iou(b, a)
    assert j == pytest.approx(d / (2 - d), abs=1e-12)
    assert j <= d
    assert dice(a, a) == 1.0 and iou(a, a) == 1.0
    assert dice(a, ~a) == 0.0  # disjoint, and never both empty
    tp, fp, fn, tn = confusion_counts(a, b)
    assert tp + fp + fn + tn == a.size and min(tp, fp, fn, tn) >= 0
    row = aggregate_segmentation([(a, b)]).per_image[0]
    swapped = aggregate_segmentation([(b, a)]).per_image[0]
    assert row.precision == swapped.recall and row.recall == swapped.precision
    for value in (row.dice, row.iou, row.precision, row.recall, row.fpr):
        assert 0.0 <= value <= 1.0
    assert row.dice == pytest.approx(d, abs=1e-12)


@FAST
@given(
    stack=st.tuples(st.integers(1, 4), st.integers(1, 8), st.integers(1, 8)).flatmap(
        lambda s: st.tuples(masks(s), masks(s))
    )
)
def test_torch_batches_score_like_one_numpy_pair_each(stack):
    a, b = stack
    batch = dice(torch.from_numpy(a), torch.from_numpy(b))
    assert batch.shape == (a.shape[0],)
    for i in range(a.shape[0]):
        assert float(batch[i]) == pytest.approx(dice(a[i], b[i]), abs=1e-12)
        assert float(iou(torch.from_numpy(a), torch.from_numpy(b))[i]) == pytest.approx(
            iou(a[i], b[i]), abs=1e-12
        )


# ---------------------------------------------------------------------------------------------
# tiling


tiling = st.integers(8, 32).flatmap(
    lambda tile: st.tuples(st.just(tile), st.integers(0, tile // 2 - 1))
)


@FAST
@given(size=st.integers(1, 300), setup=tiling)
def test_window_origins_cover_the_axis_with_the_overlap(size, setup):
    tile, overlap = setup
    starts = axis_starts(size, tile, overlap)
    assert starts[0] == 0
    if size <= tile:
        assert starts == (0,)
        return
    assert starts[-1] + tile == size  # the last window ends at the border, never beyond
    assert all(b > a for a, b in zip(starts, starts[1:], strict=False))
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:], strict=False))
    covered = np.zeros(size, bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all()


@FAST
@given(tile=st.integers(2, 64), overlap=st.integers(0, 31), low=st.booleans(), high=st.booleans())
def test_ramps_are_positive_and_at_most_one(tile, overlap, low, high):
    overlap = min(overlap, tile // 2)
    w = ramp(tile, overlap, low, high)
    assert w.shape == (tile,) and (w > 0).all() and (w <= 1).all()


@FAST
@given(
    h=st.integers(1, 70),
    w=st.integers(1, 70),
    setup=tiling,
    batch=st.integers(1, 4),
    channels=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_tiling_an_identity_map_gives_the_image_back(h, w, setup, batch, channels, seed):
    tile, overlap = setup
    image = np.random.default_rng(seed).random((h, w, channels), dtype=np.float32)
    windows = []

    def identity(x: np.ndarray) -> np.ndarray:
        assert x.shape[1:] == (channels, tile, tile) and 1 <= x.shape[0] <= batch
        windows.append(x.shape[0])
        return x

    out = np.full((h, w, channels), np.nan, np.float32)
    rows = []
    for row, block in predict_tiled(image, identity, tile, overlap, batch, channels):
        assert block.shape[1:] == (w, channels)
        rows.append((row, block.shape[0]))
        out[row : row + block.shape[0]] = block
    # rows come in order, each once, and cover the image
    assert rows[0][0] == 0
    assert all(r + n == nxt for (r, n), (nxt, _) in zip(rows, rows[1:], strict=False))
    assert rows[-1][0] + rows[-1][1] == h
    assert sum(windows) == count_tiles(h, w, tile, overlap)
    np.testing.assert_allclose(out, image, rtol=1e-6, atol=1e-7)

    # a constant map blends to exactly that constant
    ones = np.zeros((h, w, channels), np.float32)
    for row, block in predict_tiled(image, np.ones_like, tile, overlap, batch, channels):
        ones[row : row + block.shape[0]] = block
    assert (ones == 1).all()
