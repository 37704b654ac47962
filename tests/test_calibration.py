"""PSF calibration: parameter recovery on synthetic pairs, alignment, CLI, real data."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from histoblur.calibration import (
    FREEFORM,
    IDENTITY,
    CalibrationConfig,
    align_pair,
    build_config,
    calibrate,
    estimate_scale,
    fit_freeform,
    kernel_montage,
    prepare_pair,
    search_space,
)
from histoblur.cli.main import main
from histoblur.errors import InputError, ParameterError
from histoblur.io.images import read_image, write_image
from histoblur.kernels import combine, disk_kernel
from histoblur.synthesis.blur import apply_blur
from histoblur.synthesis.execute import convolve
from histoblur.synthesis.registry import make_spec

# Narrower searches than the defaults keep each fit near one second.
SMALL = {
    "max_radius": 8.0,
    "max_length": 16.0,
    "freeform": False,
    "aperture_blades": (6, 8),
    "mixed_defocus": ("lens",),
}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny FFTs run fastest on one thread, and do not stall when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sharp96() -> np.ndarray:
    import skimage.data

    return skimage.data.immunohistochemistry()[200:296, 200:296].copy()


def _relight(image: np.ndarray, gain: float, offset: float) -> np.ndarray:
    """A real re-scan changes brightness and contrast: apply an affine map, back to uint8."""
    f = image.astype(np.float64) / 255 * gain + offset
    return np.clip(np.rint(f * 255), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("kind", "params", "tolerances"),
    [
        ("lens", {"radius": 3.0}, {"radius": 0.3}),
        ("gaussian", {"sigma": 2.0}, {"sigma": 0.3}),
        ("motion", {"length": 9.0, "angle": 30.0}, {"length": 0.3, "angle": 3.0}),
    ],
)
def test_recovers_known_blur(sharp96, kind, params, tolerances):
    blurred = _relight(apply_blur(sharp96, make_spec(kind, **params)), 0.9, 0.04)
    result = calibrate(sharp96, blurred, CalibrationConfig(**SMALL))
    fit = result.fit(kind)
    for name, tol in tolerances.items():
        assert abs(fit.params[name] - params[name]) <= tol, (name, fit.params)
    assert result.best_family == kind
    # The true family explains far more than the identity and than the wrong families.
    identity = result.fit(IDENTITY)
    assert fit.psnr > identity.psnr + 15
    others = [f for f in result.fits if f.family not in (kind, IDENTITY, "mixed", "aperture")]
    assert all(fit.psnr > f.psnr + 5 for f in others), [(f.family, f.psnr) for f in others]
    assert fit.ssim > 0.99
    np.testing.assert_allclose(fit.gain, 0.9, atol=0.02)
    np.testing.assert_allclose(fit.offset, 0.04, atol=0.02)
    # Sorted best first, identity included, every family reported once.
    psnrs = [f.psnr for f in result.fits]
    assert psnrs == sorted(psnrs, reverse=True)
    assert {f.family for f in result.fits} == {IDENTITY, *CalibrationConfig().families}


def test_freeform_recovers_an_asymmetric_kernel(sharp96):
    kernel = np.zeros((11, 11))
    kernel[3:8, 3] = 1
    kernel[7, 3:9] = 1
    kernel[2, 8] = 2
    kernel = combine(kernel, disk_kernel(1.0))
    blurred = convolve(sharp96.astype(np.float32) / 255, kernel)
    blurred = np.clip(np.rint(blurred * 255), 0, 255).astype(np.uint8)
    config = CalibrationConfig(
        freeform_size=15, freeform_steps=150, freeform_lr=4.0, max_radius=6, max_length=10
    )
    fit = fit_freeform(prepare_pair(sharp96, blurred, config), config)
    truth = np.zeros((15, 15))
    truth[1:14, 1:14] = kernel
    assert fit.kernel.shape == (15, 15)
    assert fit.kernel.min() >= 0
    assert fit.kernel.sum() == pytest.approx(1.0)
    assert np.corrcoef(fit.kernel.ravel(), truth.ravel())[0, 1] > 0.9
    assert fit.family == FREEFORM


def test_registration_finds_the_shift_and_sizes_may_differ(ihc):
    big = ihc[150:300, 150:300]
    blurred_big = apply_blur(big, make_spec("lens", radius=3.0))
    sharp = big[10:110, 12:112]
    blurred = blurred_big[13:117, 10:110]  # content displaced by (-3, +2); 4 rows taller
    config = CalibrationConfig(**SMALL)
    with pytest.raises(InputError, match="--crop"):
        prepare_pair(sharp, blurred, config)
    registered = CalibrationConfig(**SMALL, registration=True)
    pair, _ = align_pair(sharp, blurred, registered)
    # Centre-cropping the taller image moves its content up by 2 rows: -3 - 2 = -5.
    assert pair.shift == (-5, 2)
    rows, cols = pair.sharp.shape[:2]
    so, bo = pair.sharp_origin, pair.blurred_origin
    np.testing.assert_allclose(
        pair.blurred[..., 0] * 255, blurred[bo[0] : bo[0] + rows, bo[1] : bo[1] + cols, 0]
    )
    np.testing.assert_allclose(
        pair.sharp[..., 0] * 255, sharp[so[0] : so[0] + rows, so[1] : so[1] + cols, 0]
    )
    result = calibrate(sharp, blurred, registered)
    assert result.shift == (-5, 2)
    assert abs(result.fit("lens").params["radius"] - 3.0) <= 0.3


def test_scale_search_finds_the_magnification(ihc):
    big = ihc[100:260, 100:260]
    blurred = apply_blur(big, make_spec("gaussian", sigma=1.5))
    size = round(160 * 1.03)
    magnified = cv2.resize(blurred, (size, size), interpolation=cv2.INTER_CUBIC)
    config = CalibrationConfig(**SMALL, registration=True, scale_search=0.04)
    assert estimate_scale(big, magnified, config) == pytest.approx(1.03, abs=0.006)


def test_config_errors():
    with pytest.raises(ParameterError, match="freeform_size"):
        build_config(freeform_size=20)
    with pytest.raises(ParameterError, match="registration"):
        build_config(scale_search=0.05)
    with pytest.raises(ParameterError, match="Unknown blur kind"):
        search_space("nope", CalibrationConfig())
    for kind in ("radial", "zoom", "spin", "variable-defocus"):
        with pytest.raises(ParameterError, match="spatially variant"):
            search_space(kind, CalibrationConfig())


def test_kind_without_hand_set_space_uses_its_sampler():
    space = search_space("motion-v", CalibrationConfig())
    assert space.params == ()
    assert space.fixed == {"angle": 90.0}
    assert space.choices["length"] == (5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0)


def test_grey_pair_and_montage(sharp96):
    grey = cv2.cvtColor(sharp96, cv2.COLOR_RGB2GRAY)
    blurred = apply_blur(grey, make_spec("gaussian", sigma=1.5))
    config = CalibrationConfig(families=("gaussian", "lens"), freeform_steps=30, max_radius=6)
    result = calibrate(grey, blurred, config)
    assert result.best_family == "gaussian"
    assert len(result.fit("gaussian").gain) == 1
    picture = kernel_montage(result.fits)
    assert picture.dtype == np.uint8 and picture.ndim == 3
    assert picture.shape[1] > 3 * picture.shape[0] // 2  # three panels side by side


def _write_pair(tmp_path: Path, sharp: np.ndarray, blurred: np.ndarray) -> tuple[Path, Path]:
    return write_image(tmp_path / "sharp.png", sharp), write_image(tmp_path / "blur.png", blurred)


FAST_CLI = ["--families", "gaussian,lens", "--freeform-size", "9", "--freeform-steps", "20"]
FAST_CLI += ["--max-radius", "5", "--max-length", "8"]


def test_cli_writes_outputs(tmp_path, sharp96):
    blurred = apply_blur(sharp96, make_spec("lens", radius=2.5))
    s, b = _write_pair(tmp_path, sharp96, blurred)
    out = tmp_path / "cal"
    argv = ["calibrate", "--sharp", str(s), "--blurred", str(b), "--out", str(out), *FAST_CLI]
    assert main(argv) == 0
    summary = json.loads((out / "calibration.json").read_text())
    assert summary["best_family"] == "lens"
    assert summary["config"]["families"] == ["gaussian", "lens"]
    fits = {f["family"]: f for f in summary["fits"]}
    assert set(fits) == {"identity", "gaussian", "lens", "free-form"}
    assert abs(fits["lens"]["params"]["radius"] - 2.5) <= 0.3
    rows = (out / "calibration.csv").read_text().strip().splitlines()
    assert rows[0].startswith("rank,family,params")
    assert len(rows) == 5
    picture = read_image(out / "kernels.png")
    assert picture.ndim == 3 and picture.shape[1] > picture.shape[0]
    kernels = np.load(out / "kernels.npz")
    assert kernels["free-form"].shape == (9, 9)
    assert sorted(p.name for p in out.iterdir()) == [
        "calibration.csv",
        "calibration.json",
        "kernels.npz",
        "kernels.png",
    ]
    # An existing output folder is refused without --overwrite.
    assert main(argv) == 1
    assert main([*argv, "--overwrite"]) == 0


def test_cli_errors(tmp_path, sharp96, capsys):
    s, b = _write_pair(tmp_path, sharp96, sharp96[:90])
    missing = ["calibrate", "--sharp", str(tmp_path / "nope.png"), "--blurred", str(b)]
    assert main(missing) == 1
    assert "does not exist" in capsys.readouterr().err
    mismatch = ["calibrate", "--sharp", str(s), "--blurred", str(b), *FAST_CLI]
    assert main(mismatch) == 1
    err = capsys.readouterr().err
    assert "96 x 96" in err and "90 x 96" in err and "--crop" in err
    assert main([*mismatch, "--crop"]) == 0
    assert main([*mismatch, "--families", "radial"]) == 1
    assert "spatially variant" in capsys.readouterr().err
    assert main([*mismatch, "--freeform-size", "8"]) == 1


@pytest.mark.realdata
def test_real_fqpath_pair_every_family_beats_identity(data_dir):
    folder = data_dir / "real_pairs" / "fqpath_left"
    if not (folder / "sharp.png").exists():
        pytest.skip(f"{folder} is absent")
    sharp, blurred = read_image(folder / "sharp.png"), read_image(folder / "blurred.png")
    result = calibrate(sharp, blurred, CalibrationConfig(max_size=128, freeform=False))
    identity = result.fit(IDENTITY)
    for fit in result.fits:
        if fit.family != IDENTITY:
            assert fit.psnr > identity.psnr + 1.0, (fit.family, fit.psnr, identity.psnr)
    # Real optical defocus is a wide, isotropic PSF: a defocus family beats pure motion.
    assert result.fit("lens").psnr > result.fit("motion").psnr
    assert result.best_family in ("lens", "gaussian", "aperture", "mixed")
