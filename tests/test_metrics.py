from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import data
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from histoblur.errors import InputError, ParameterError
from histoblur.io.images import read_image, to_gray_float
from histoblur.metrics import (
    SHARPNESS,
    aggregate_segmentation,
    binarize_mask,
    brenner,
    confusion_counts,
    dice,
    hf_energy_ratio,
    iou,
    masked_l2,
    mse,
    psnr,
    ssim,
    tenengrad,
    variance_of_laplacian,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def ihc() -> np.ndarray:
    return data.immunohistochemistry()  # 512 x 512 RGB uint8, real IHC


def _noisy(image: np.ndarray, seed: int, amount: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    peak = np.iinfo(image.dtype).max
    noise = rng.normal(0.0, amount * peak, image.shape)
    return np.clip(image.astype(np.float64) + noise, 0, peak).astype(image.dtype)


def _pairs(ihc: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    rgb8 = ihc[100:164, 200:260]
    grey8 = cv2.cvtColor(rgb8, cv2.COLOR_RGB2GRAY)
    rgb16 = rgb8.astype(np.uint16) * 257
    grey_f = grey8.astype(np.float64) / 255.0
    return {
        "grey_float": (grey_f, np.clip(grey_f + 0.05 * np.sin(np.arange(60) / 3.0), 0, 1), 1.0),
        "grey_uint8": (grey8, _noisy(grey8, 1, 0.08), 255),
        "rgb_uint8": (rgb8, _noisy(rgb8, 2, 0.08), 255),
        "rgb_uint16": (rgb16, _noisy(rgb16, 3, 0.05), 65535),
    }


@pytest.mark.parametrize("kind", ["grey_float", "grey_uint8", "rgb_uint8", "rgb_uint16"])
@pytest.mark.parametrize(
    "options",
    [{}, {"gaussian_weights": True}, {"gaussian_weights": True, "win_size": 7}, {"win_size": 5}],
    ids=["uniform7", "gaussian", "gaussian_win7", "uniform5"],
)
def test_ssim_matches_skimage(ihc, kind, options):
    a, b, data_range = _pairs(ihc)[kind]
    channel_axis = 2 if a.ndim == 3 else None
    ref = structural_similarity(a, b, data_range=data_range, channel_axis=channel_axis, **options)
    assert abs(ssim(a, b, **options) - ref) < 1e-3
    assert abs(ssim(a, b, **options) - ref) < 1e-9  # float64 path: far tighter than required
    assert ssim(a, a, **options) == pytest.approx(1.0)


def test_ssim_population_covariance_and_explicit_range_match_skimage(ihc):
    a, b, _ = _pairs(ihc)["grey_uint8"]
    ref = structural_similarity(
        a, b, data_range=200, gaussian_weights=True, use_sample_covariance=False
    )
    got = ssim(a, b, data_range=200, gaussian_weights=True, use_sample_covariance=False)
    assert got == pytest.approx(ref, abs=1e-9)


@pytest.mark.parametrize("kind", ["grey_float", "grey_uint8", "rgb_uint8", "rgb_uint16"])
def test_psnr_and_mse_match_skimage(ihc, kind):
    a, b, data_range = _pairs(ihc)[kind]
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b), abs=1e-9)
    assert psnr(a, b, data_range=data_range / 2) == pytest.approx(
        peak_signal_noise_ratio(a, b, data_range=data_range / 2), abs=1e-9
    )
    scaled = mean_squared_error(a.astype(np.float64), b.astype(np.float64)) / data_range**2
    assert mse(a, b) == pytest.approx(scaled, rel=1e-12)
    assert psnr(a, a) == float("inf")
    assert mse(a, a) == 0.0


def test_batched_torch_equals_per_image_numpy(ihc):
    crops = [ihc[i * 40 : i * 40 + 48, 10:58] for i in range(3)]
    noisy = [_noisy(c, i, 0.1) for i, c in enumerate(crops)]
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)
    y = torch.from_numpy(np.stack(noisy)).permute(0, 3, 1, 2)
    for fn in (mse, psnr, ssim, lambda a, b: ssim(a, b, gaussian_weights=True)):
        batch = fn(x, y)
        assert isinstance(batch, torch.Tensor) and batch.shape == (3,)
        single = [fn(c, n) for c, n in zip(crops, noisy, strict=True)]
        # uint8 tensors are computed in float32, numpy in float64.
        np.testing.assert_allclose(batch.numpy(), single, rtol=1e-4)
    x64, y64 = x.double() / 255, y.double() / 255
    np.testing.assert_allclose(ssim(x64, y64).numpy(), ssim(x, y).numpy(), rtol=1e-4)
    for fn in SHARPNESS.values():
        batch = fn(x)
        np.testing.assert_allclose(batch.numpy(), [fn(c) for c in crops], rtol=1e-4)
    masks = np.zeros((3, 48, 48), bool)
    masks[:, 10:30, 5:40] = True
    got = masked_l2(x, y, torch.from_numpy(masks))
    want = [masked_l2(c, n, m) for c, n, m in zip(crops, noisy, masks, strict=True)]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4)


def test_ssim_is_differentiable_on_float_tensors():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 16, 16, generator=gen)
    y = torch.rand(2, 1, 16, 16, generator=gen, requires_grad=True)
    (1 - ssim(x, y)).sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_masked_l2_analytic_values():
    a = np.zeros((8, 8, 3), np.float32)
    b = np.full((8, 8, 3), 1.0, np.float32)
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    b[mask] = 0.5
    assert masked_l2(a, b, mask) == pytest.approx(0.5)
    assert masked_l2(a, b, ~mask) == pytest.approx(1.0)
    with pytest.raises(InputError, match="no pixel"):
        masked_l2(a, b, np.zeros((8, 8), bool))
    with pytest.raises(InputError, match="mask has shape"):
        masked_l2(a, b, np.ones((4, 8), bool))


def test_full_reference_input_errors():
    a = np.zeros((16, 16), np.uint8)
    with pytest.raises(InputError, match="same size"):
        psnr(a, np.zeros((16, 15), np.uint8))
    with pytest.raises(InputError, match="same type"):
        ssim(a, np.zeros((16, 16), np.float32))
    with pytest.raises(InputError, match="numpy arrays or two torch"):
        mse(a, torch.zeros(16, 16, dtype=torch.uint8))
    with pytest.raises(InputError, match="unsigned integer"):
        mse(a.astype(np.int16), a.astype(np.int16))
    with pytest.raises(InputError, match=r"\(N, C, H, W\)"):
        ssim(torch.zeros(16, 16), torch.zeros(16, 16))
    with pytest.raises(InputError, match="smaller than"):
        ssim(a[:5], a[:5])
    with pytest.raises(ParameterError, match="odd"):
        ssim(a, a, win_size=6)
    with pytest.raises(ParameterError, match="data_range"):
        psnr(a, a, data_range=0)


def _square(top: int, left: int, size: int = 10, shape=(32, 32)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[top : top + size, left : left + size] = True
    return m


def test_dice_iou_analytic():
    a = _square(5, 5)
    half = _square(5, 10)  # shifted by half its width: 50 of 100 pixels overlap
    assert dice(a, a) == 1.0 and iou(a, a) == 1.0
    assert dice(a, half) == pytest.approx(0.5)
    assert iou(a, half) == pytest.approx(1 / 3)
    assert dice(a, _square(20, 20)) == 0.0
    empty = np.zeros((32, 32), bool)
    assert dice(empty, empty) == 1.0 and iou(empty, empty) == 1.0
    assert dice(empty, a) == 0.0 and iou(a, empty) == 0.0
    assert confusion_counts(a.astype(np.uint8) * 255, half) == (50, 50, 50, 1024 - 150)
    with pytest.raises(InputError, match="same size"):
        dice(a, a[:-1])


def test_dice_iou_batched_torch():
    preds = np.stack([_square(5, 5), _square(5, 10), np.zeros((32, 32), bool)])
    truths = np.stack([_square(5, 5), _square(5, 5), np.zeros((32, 32), bool)])
    got_d = dice(torch.from_numpy(preds), torch.from_numpy(truths))
    got_i = iou(torch.from_numpy(preds)[:, None], torch.from_numpy(truths)[:, None])
    np.testing.assert_allclose(got_d.numpy(), [1.0, 0.5, 1.0])
    np.testing.assert_allclose(got_i.numpy(), [1.0, 1 / 3, 1.0])


def test_aggregate_micro_macro():
    big = _square(0, 0, size=20)  # 400 px, perfectly predicted
    small_truth = _square(25, 25, size=4)  # 16 px, predicted disjoint 16 px
    small_pred = _square(0, 25, size=4)
    empty = np.zeros((32, 32), bool)
    summary = aggregate_segmentation(
        {"big": (big, big), "small": (small_pred, small_truth), "clean": (empty, empty)}
    )
    per = {s.name: s for s in summary.per_image}
    assert per["big"].dice == 1.0 and per["small"].dice == 0.0 and per["clean"].dice == 1.0
    assert per["small"].precision == 0.0 and per["small"].recall == 0.0
    assert per["clean"].precision == 1.0 and per["clean"].fpr == 0.0
    assert summary.macro.dice == pytest.approx(2 / 3)
    assert summary.macro.tp is None
    # micro: tp = 400, fp = 16, fn = 16.
    assert (summary.micro.tp, summary.micro.fp, summary.micro.fn) == (400, 16, 16)
    assert summary.micro.dice == pytest.approx(800 / 832)
    assert summary.micro.iou == pytest.approx(400 / 432)
    assert summary.micro.fpr == pytest.approx(16 / (3 * 1024 - 416))
    csv_lines = summary.to_csv().splitlines()
    assert csv_lines[0].startswith("kind,image,dice,iou")
    assert [line.split(",")[0] for line in csv_lines[1:]] == ["image"] * 3 + ["micro", "macro"]
    with pytest.raises(InputError, match="no mask pair"):
        aggregate_segmentation([])


def test_binarize_mask_threshold():
    prob = np.array([[0, 100, 128, 255]], np.uint8)
    assert binarize_mask(prob).tolist() == [[False, True, True, True]]
    assert binarize_mask(prob, 0.5).tolist() == [[False, False, True, True]]
    with pytest.raises(ParameterError):
        binarize_mask(prob, 1.5)


def test_sharpness_filters_match_opencv(ihc):
    gray = to_gray_float(ihc[:80, :90]).astype(np.float64)
    lap = cv2.Laplacian(gray, cv2.CV_64F, ksize=1)[1:-1, 1:-1]
    gx = cv2.Sobel(gray, cv2.CV_64F, 1, 0, ksize=3)[1:-1, 1:-1]
    gy = cv2.Sobel(gray, cv2.CV_64F, 0, 1, ksize=3)[1:-1, 1:-1]
    assert variance_of_laplacian(gray) == pytest.approx(lap.var(), rel=1e-9)
    assert tenengrad(gray) == pytest.approx(np.mean(gx**2 + gy**2), rel=1e-9)
    dx, dy = gray[:, 2:] - gray[:, :-2], gray[2:] - gray[:-2]
    assert brenner(gray) == pytest.approx(np.mean(dx**2) + np.mean(dy**2), rel=1e-9)


@pytest.mark.parametrize("name", list(SHARPNESS))
def test_sharpness_decreases_with_gaussian_blur(ihc, name):
    fn = SHARPNESS[name]
    for top, left in ((0, 0), (200, 300), (380, 120)):
        crop = ihc[top : top + 96, left : left + 96]
        values = [fn(crop)] + [fn(cv2.GaussianBlur(crop, (0, 0), s)) for s in (0.7, 1.5, 3.0, 6.0)]
        assert all(v >= 0 for v in values)
        assert all(np.diff(values) < 0), (name, values)


def test_sharpness_contract_and_edge_cases(ihc):
    crop = ihc[:40, :40]
    flat = np.full((16, 16), 7, np.uint8)
    for fn in SHARPNESS.values():
        assert isinstance(fn(crop), float)
        assert fn(flat) == 0.0
        # colour images are measured on their luma
        assert fn(crop) == pytest.approx(fn(to_gray_float(crop)), rel=1e-9)
        with pytest.raises(InputError):
            fn(np.zeros((2, 8), np.uint8))
    assert 0.0 <= hf_energy_ratio(crop) <= 1.0
    assert hf_energy_ratio(crop, cutoff=0.1) > hf_energy_ratio(crop, cutoff=0.5)
    with pytest.raises(ParameterError):
        hf_energy_ratio(crop, cutoff=1.0)
    # checkerboard: analytic values in [0, 1] units
    board = (np.indices((10, 10)).sum(axis=0) % 2).astype(np.float64)
    assert brenner(board) == 0.0  # period 2 is invisible at a step of 2
    assert variance_of_laplacian(board) == pytest.approx(16.0)  # Laplacian is +-4: the maximum
    assert tenengrad(board) == pytest.approx(0.0)


@pytest.mark.realdata
def test_sharpness_peaks_at_best_focus_of_real_focal_stack():
    folder = DATA / "focal_stacks" / "smear"
    if not folder.is_dir():
        pytest.skip(f"real data {folder} absent")
    planes = {int(p.stem.split("_")[1]): read_image(p) for p in folder.glob("plane_*.png")}
    h = min(i.shape[0] for i in planes.values())
    w = min(i.shape[1] for i in planes.values())
    for name, fn in SHARPNESS.items():
        values = {z: fn(img[:h, :w]) for z, img in planes.items()}
        assert max(values, key=values.get) == 0, name
        assert values[9] < 0.5 * values[0] and values[-9] < 0.5 * values[0], name
        assert values[0] > values[2] > values[4] and values[0] > values[-2] > values[-4], name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_metrics_run_on_the_tensors_device(ihc):
    x = torch.from_numpy(np.stack([ihc[:64, :64], ihc[64:128, :64]])).permute(0, 3, 1, 2)
    y = torch.from_numpy(np.stack([_noisy(ihc[:64, :64], 0, 0.1)] * 2)).permute(0, 3, 1, 2)
    for fn in (mse, psnr, ssim, *SHARPNESS.values()):
        args = (x, y) if fn in (mse, psnr, ssim) else (x,)
        cpu = fn(*args)
        gpu = fn(*(a.cuda() for a in args))
        assert gpu.device.type == "cuda"
        np.testing.assert_allclose(gpu.cpu().numpy(), cpu.numpy(), rtol=1e-4)
    m = torch.from_numpy(np.stack([ihc[:64, :64, 0] > 128] * 2))
    assert dice(m.cuda(), m.cuda()).device.type == "cuda"


def test_non_array_inputs_are_refused():
    with pytest.raises(InputError, match="numpy array or a torch tensor"):
        ssim([[0, 1]], [[0, 1]])
    with pytest.raises(InputError, match="numpy array or a torch tensor"):
        tenengrad([[0, 1, 2]] * 3)
    assert psnr(np.zeros((4, 4), np.uint8), np.ones((4, 4), np.uint8), data_range=np.int64(1)) == 0


def test_sre_matches_its_definition_by_hand():
    from histoblur.metrics.full_reference import sre

    a = np.full((8, 8, 3), 100, np.uint8)
    b = a.copy()
    b[0, 0] = 110  # one pixel off by 10 in every channel: mse = 10^2 / 64 (grey levels)
    assert sre(a, b) == pytest.approx(10 * np.log10(100**2 * 64 / 10**2), rel=1e-4)
    assert sre(a, a) == np.inf


def test_fsim_matches_the_authors_reference_values():
    """Reference values from piq 0.8.0's ``fsim`` (a port of the authors' MATLAB FeatureSIM.m)
    on scikit-image's test pictures, computed once in float64 and written down here."""
    from histoblur.metrics import fsim

    camera = data.camera().astype(np.float64) / 255
    assert fsim(camera, cv2.GaussianBlur(camera, (0, 0), 2)) == pytest.approx(
        0.9012150066, abs=1e-8
    )
    astronaut = data.astronaut().astype(np.float64) / 255
    blurred = cv2.GaussianBlur(astronaut, (0, 0), 1.5)
    assert fsim(astronaut, blurred) == pytest.approx(0.9514932795, abs=1e-8)
    assert fsim(astronaut, blurred, chromatic=False) == pytest.approx(0.9517612730, abs=1e-8)
    assert fsim(astronaut, astronaut) == pytest.approx(1.0)


def test_fsim_batches_and_orders_by_damage():
    from histoblur.metrics import fsim

    rng = np.random.default_rng(0)
    sharp = data.astronaut()[:128, :128].astype(np.float32) / 255
    batch = torch.from_numpy(
        np.stack([sharp, cv2.GaussianBlur(sharp, (0, 0), 1), cv2.GaussianBlur(sharp, (0, 0), 3)])
    )
    batch = batch.permute(0, 3, 1, 2)
    scores = fsim(batch[:1].expand(3, -1, -1, -1), batch)
    assert scores.shape == (3,)
    assert scores[0] == pytest.approx(1.0) and scores[0] > scores[1] > scores[2]
    noisy = np.clip(sharp + rng.normal(0, 0.05, sharp.shape), 0, 1).astype(np.float32)
    assert fsim(sharp, noisy) == pytest.approx(
        fsim(
            torch.from_numpy(sharp).permute(2, 0, 1)[None],
            torch.from_numpy(noisy).permute(2, 0, 1)[None],
        )[0].item(),
        abs=1e-6,
    )
