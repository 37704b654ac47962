"""The torch executor against the numpy executor, for every registry kind and every route."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from histoblur.errors import InputError
from histoblur.synthesis import BLUR_KINDS, make_spec, plan_for, torch_ops
from histoblur.synthesis.execute import execute
from histoblur.synthesis.plans import KernelPlan, LevelsPlan
from histoblur.synthesis.torch_ops import blur_batch, execute_torch, reflect_pad

TOL = 1e-3
BAND = 8  # border band width, pixels
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def rgb(ihc: np.ndarray) -> np.ndarray:
    """48 x 64 RGB float32 crop in [0, 1] with texture everywhere."""
    return ihc[200:248, 180:244].astype(np.float32) / 255


def _torch(plan, image: np.ndarray, device: str = "cpu") -> np.ndarray:
    x = torch.from_numpy(image).permute(2, 0, 1).to(device)
    return execute_torch(plan, x).permute(1, 2, 0).cpu().numpy()


def _errors(plan, image: np.ndarray, device: str = "cpu") -> tuple[float, float]:
    """Max abs difference to the numpy executor: (interior, border band)."""
    diff = np.abs(_torch(plan, image, device) - execute(plan, image))
    interior = diff[BAND:-BAND, BAND:-BAND].max()
    border = diff.copy()
    border[BAND:-BAND, BAND:-BAND] = 0
    return float(interior), float(border.max())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(BLUR_KINDS))
def test_every_kind_matches_numpy(name: str, device: str, rgb: np.ndarray) -> None:
    kind = BLUR_KINDS[name]
    rng = np.random.default_rng(7)
    specs = [make_spec(name)] + [kind.sampler().sample(rng) for _ in range(3)]
    for spec in specs:
        interior, border = _errors(plan_for(spec, *rgb.shape[:2]), rgb, device)
        assert interior < TOL, spec
        assert border < TOL, spec


@pytest.mark.parametrize("name", list(BLUR_KINDS))
def test_every_kind_on_an_image_smaller_than_its_kernel(name: str, rgb: np.ndarray) -> None:
    """Pads wider than the image reflect repeatedly, as OpenCV's borders do."""
    tiny = np.ascontiguousarray(rgb[:7, :9])
    spec = make_spec(name, **{BLUR_KINDS[name].strength: 12.0 if name != "zoom" else 0.4})
    plan = plan_for(spec, 7, 9)
    assert np.abs(_torch(plan, tiny) - execute(plan, tiny)).max() < TOL


@pytest.mark.parametrize("shape", [(3, 3), (5, 3), (5, 5), (9, 7), (21, 15), (41, 41)])
def test_asymmetric_kernels_are_convolved_not_correlated(
    shape: tuple[int, int], rgb: np.ndarray
) -> None:
    """Random kernels reach the direct and FFT routes; a flip error would show at once."""
    kernel = np.random.default_rng(shape[0]).random(shape)
    kernel /= kernel.sum()
    plan = KernelPlan(kernel=kernel)
    assert np.abs(_torch(plan, rgb) - execute(plan, rgb)).max() < TOL
    # the numpy result is itself a true convolution: check one interior pixel by hand
    y, x = 24, 32
    ry, rx = shape[0] // 2, shape[1] // 2
    window = rgb[y - ry : y + ry + 1, x - rx : x + rx + 1, 0]
    assert _torch(plan, rgb)[y, x, 0] == pytest.approx(
        (window * kernel[::-1, ::-1]).sum(), abs=1e-5
    )


@pytest.mark.parametrize("taps", [(5, 7), (9, 1), (1, 13), (31, 11)])
def test_separable_routes(taps: tuple[int, int], rgb: np.ndarray) -> None:
    rng = np.random.default_rng(sum(taps))
    col, row = rng.random(taps[0]), rng.random(taps[1])
    col, row = col / col.sum(), row / row.sum()
    kernel = np.outer(col, row)
    # the factors given by the plan, and found by the executor's rank-one test
    for plan in (KernelPlan(kernel=kernel, separable=(col, row)), KernelPlan(kernel=kernel)):
        assert np.abs(_torch(plan, rgb) - execute(plan, rgb)).max() < TOL


def test_levels_on_direct_and_fft_routes(rgb: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    index = rng.uniform(-0.5, 3.5, rgb.shape[:2]).astype(np.float32)
    small = tuple(np.full((k, k), 1.0 / k**2) for k in (1, 3, 5))
    large = (*small, np.full((15, 15), 1 / 225))
    for kernels in (small, large):
        plan = LevelsPlan(kernels=kernels, index=np.clip(index, 0, len(kernels) - 1))
        assert np.abs(_torch(plan, rgb) - execute(plan, rgb)).max() < TOL


@pytest.mark.parametrize("n", [1, 2, 3, 7])
@pytest.mark.parametrize("pad", [0, 1, 2, 6, 20])
def test_reflect_pad_is_opencv_reflect_101(n: int, pad: int) -> None:
    a = np.arange(n * (n + 2), dtype=np.float32).reshape(n, n + 2)
    ref = cv2.copyMakeBorder(a, pad, pad + 1, pad + 2, pad, cv2.BORDER_REFLECT_101)
    got = reflect_pad(torch.from_numpy(a)[None, None], pad, pad + 1, pad + 2, pad)[0, 0]
    np.testing.assert_array_equal(got.numpy(), ref.reshape(got.shape))


def test_routes_are_chosen_by_kernel_size(monkeypatch: pytest.MonkeyPatch, rgb) -> None:
    calls: list[str] = []
    for route in ("_direct", "_separable", "_fft_convolve"):
        original = getattr(torch_ops, route)

        def spy(*args, _route=route, _original=original):
            calls.append(_route)
            return _original(*args)

        monkeypatch.setattr(torch_ops, route, spy)
    x = torch.from_numpy(rgb).permute(2, 0, 1)
    for spec in (make_spec("gaussian", sigma=1.0), make_spec("lens", radius=1.0)):
        execute_torch(plan_for(spec, 48, 64), x)
    execute_torch(plan_for(make_spec("lens", radius=6.0), 48, 64), x)
    assert calls == ["_separable", "_direct", "_fft_convolve"]


def test_shapes_dtypes_and_errors(rgb: np.ndarray) -> None:
    plan = plan_for(make_spec("lens", radius=3.0), 48, 64)
    x = torch.from_numpy(rgb).permute(2, 0, 1)
    assert execute_torch(plan, x).shape == x.shape
    assert execute_torch(plan, x[None]).shape == (1, 3, 48, 64)
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        out = execute_torch(plan, x.to(dtype))
        assert out.dtype == dtype
        assert torch.allclose(out.float(), execute_torch(plan, x), atol=1e-2)
    assert torch.equal(x, torch.from_numpy(rgb).permute(2, 0, 1))  # input untouched
    with pytest.raises(InputError, match="float"):
        execute_torch(plan, (x * 255).to(torch.uint8))
    with pytest.raises(InputError, match="shape"):
        execute_torch(plan, x[None].repeat(2, 1, 1, 1))
    with pytest.raises(InputError, match="made for"):
        execute_torch(plan_for(make_spec("radial"), 40, 40), x)


def test_gradients_flow_to_the_input(rgb: np.ndarray) -> None:
    x = torch.from_numpy(rgb).permute(2, 0, 1).clone().requires_grad_(True)
    for name in BLUR_KINDS:
        x.grad = None
        execute_torch(plan_for(make_spec(name), 48, 64), x).mean().backward()
        # normalised kernels: the adjoint spreads each output's weight over the inputs
        assert x.grad is not None and torch.isfinite(x.grad).all()
        assert x.grad.sum().item() == pytest.approx(1.0, rel=1e-3)


def test_blur_batch_runs_one_spec_per_sample(rgb: np.ndarray) -> None:
    x = torch.from_numpy(np.stack([rgb, rgb[::-1].copy(), rgb[:, ::-1].copy()])).permute(0, 3, 1, 2)
    specs = [make_spec("gaussian", sigma=2.0), None, make_spec("spin")]
    out = blur_batch(x, specs)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out[1], x[1])
    for i in (0, 2):
        ref = execute(plan_for(specs[i], 48, 64), x[i].permute(1, 2, 0).numpy())
        assert np.abs(out[i].permute(1, 2, 0).numpy() - ref).max() < TOL
    with pytest.raises(InputError, match="2 blur specs"):
        blur_batch(x, specs[:2])
    with pytest.raises(InputError, match=r"\(B, C, H, W\)"):
        blur_batch(x[0], [None])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_batch_matches_cpu(rgb: np.ndarray) -> None:
    x = torch.from_numpy(np.stack([rgb, rgb])).permute(0, 3, 1, 2)
    specs = [make_spec("variable-defocus"), make_spec("motion", length=21.0, angle=33.0)]
    out = blur_batch(x.cuda(), specs)
    assert out.device.type == "cuda"
    assert (out.cpu() - blur_batch(x, specs)).abs().max().item() < TOL
