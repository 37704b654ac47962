"""Focal-axis autoencoder: latent metrics, code arithmetic, focal stacks, training, CLI."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from histoblur.cli.main import main
from histoblur.errors import InputError, ParameterError
from histoblur.inference.latent import FocalCodec
from histoblur.io.checkpoints import save_checkpoint
from histoblur.io.images import read_image, write_image
from histoblur.metrics.latent import (
    average_pairwise_distance,
    linear_dependence_score,
    linear_path,
)
from histoblur.models.autoencoder import (
    AutoencoderConfig,
    FocalAutoencoder,
    extrapolate,
    flatten,
    mix,
)
from histoblur.synthesis.register import register_planes
from histoblur.training.focal import FocalStackConfig, dyadic_triplets, load_stack
from histoblur.training.latent import LatentTrainConfig, train_latent, variant_loss

TINY = AutoencoderConfig(width=4, levels=3)


def test_lds_of_identical_codes_is_one_and_apd_zero():
    z = np.random.default_rng(0).normal(size=(5, 40))
    assert linear_dependence_score(z, z) == pytest.approx(1.0)
    assert average_pairwise_distance(z, z) == 0.0


def test_codes_on_a_line_score_perfectly_and_a_bent_path_does_not():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=30), rng.normal(size=30)
    positions = [0, 1, 2, 4]
    line = np.stack([a + (p / 4) * (b - a) for p in positions])
    assert np.allclose(linear_path(line, positions), line)
    bent = line.copy()
    bent[1:3] += rng.normal(size=(2, 30))
    path = linear_path(bent, positions)
    assert linear_dependence_score(bent, path) < 0.99
    assert average_pairwise_distance(bent, path) > 0.01


def test_extrapolation_inverts_interpolation_exactly():
    rng = torch.Generator().manual_seed(0)
    sharp = [torch.randn(2, 4, 8, 8, generator=rng), torch.randn(2, 8, 4, 4, generator=rng)]
    far = [torch.randn(2, 4, 8, 8, generator=rng), torch.randn(2, 8, 4, 4, generator=rng)]
    for alpha in (0.0, 0.3, 0.5, 0.9):
        near = mix(sharp, far, alpha)
        back = extrapolate(near, far, alpha)
        assert all(torch.allclose(s, r, atol=1e-5) for s, r in zip(sharp, back, strict=True))
    with pytest.raises(ValueError):
        extrapolate(sharp, far, 1.0)


@pytest.mark.parametrize("skips", [(), (1, 2)])
def test_autoencoder_codes_and_reconstructs_any_multiple_of_its_stride(skips):
    torch.manual_seed(0)
    model = FocalAutoencoder(AutoencoderConfig(width=4, levels=3, skips=skips)).eval()
    x = torch.rand(2, 3, 32, 48)
    code = model.encode(x)
    assert len(code) == len(skips) + 1 and code[-1].shape == (2, 16, 4, 6)
    assert flatten(code).shape[0] == 2
    with torch.no_grad():
        out = model(x)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    with pytest.raises(ValueError):
        model.encode(torch.rand(1, 3, 30, 32))


def test_skips_must_be_inner_levels():
    with pytest.raises(ValueError):
        AutoencoderConfig(levels=3, skips=(3,))


def test_dyadic_triplets_are_the_papers_on_nine_planes():
    assert dyadic_triplets(8) == [
        (0, 4, 8), (0, 2, 4), (4, 6, 8), (0, 1, 2), (2, 3, 4), (4, 5, 6), (6, 7, 8),
    ]  # fmt: skip


def test_registration_undoes_a_known_shift(ihc):
    a = ihc[50:250, 60:300]
    b = ihc[57:257, 55:295]  # content of a at (y, x) sits at (y - 7, x + 5) of b
    ra, rb = register_planes([a, b], reference=0)
    assert ra.shape == rb.shape and np.array_equal(ra, rb)


def write_stack(folder: Path, image: np.ndarray, sizes_differ: bool = True) -> Path:
    """Planes -4..+4 of a synthetic focal stack: Gaussian blur growing with |z|."""
    folder.mkdir(parents=True, exist_ok=True)
    for z in range(-4, 5):
        plane = image if z == 0 else cv2.GaussianBlur(image, (0, 0), 0.8 * abs(z))
        if sizes_differ and z % 2:
            plane = plane[1:-1, 2:]
        write_image(folder / f"plane_{z:+03d}.png", plane)
    return folder


@pytest.fixture()
def stack_dir(tmp_path, ihc):
    return write_stack(tmp_path / "stack", ihc[:128, :192])


def stack_config(folder: Path) -> FocalStackConfig:
    return FocalStackConfig(
        name="synthetic", folder=folder, glob="plane_*.png", position=r"plane_([+-]\d+)",
        test_fraction=0.3,
    )  # fmt: skip


def test_focal_stack_is_registered_and_ordered_outwards(stack_dir):
    stack = load_stack(stack_config(stack_dir))
    assert len({p.shape for p in stack.planes}) == 1
    assert stack.axes == [[4, 5, 6, 7, 8], [4, 3, 2, 1, 0]]
    triplets = stack.triplets()
    assert len(triplets) == 6 and all(t.alpha == pytest.approx(0.5) for t in triplets)
    assert (triplets[0].sharp, triplets[0].middle, triplets[0].blurry) == (4, 6, 8)


def test_missing_or_short_stacks_are_refused(tmp_path, stack_dir):
    with pytest.raises(InputError, match="does not exist"):
        load_stack(stack_config(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="at least 3"):
        load_stack(stack_config(stack_dir).model_copy(update={"glob": "plane_+0[01].png"}))


def tiny_train(stack_dir: Path, out: Path, variant: str, **changes) -> LatentTrainConfig:
    return LatentTrainConfig.model_validate({
        "out": out, "stacks": [stack_config(stack_dir)], "variant": variant, "model": TINY,
        "tile": 32, "batch_size": 4, "epochs": 1, "steps_per_epoch": 3, "lr": 3e-3,
        "test_crops": 2, "threads": 1, **changes,
    })  # fmt: skip


@pytest.mark.parametrize("variant", ["baseline", "weak", "strong"])
def test_each_variant_trains_and_its_loss_falls(stack_dir, tmp_path, variant):
    config = tiny_train(stack_dir, tmp_path / variant, variant, epochs=4, lambda_ffl=0.1)
    summary = train_latent(config)
    losses = [row["loss"] for row in summary["history"]]
    assert losses[-1] < losses[0]
    assert (tmp_path / variant / "best" / "model.safetensors").is_file()
    assert np.isfinite(summary["history"][-1]["psnr_blur_quality/synthetic"])


def test_strong_loss_adds_the_latent_term():
    torch.manual_seed(0)
    model = FocalAutoencoder(TINY).eval()
    batch = (*(torch.rand(2, 3, 32, 32) for _ in range(3)), torch.tensor([0.5, 0.5]))
    with torch.no_grad():
        weak, _ = variant_loss(model, batch, "weak", 1.0, 0.0)
        strong, parts = variant_loss(model, batch, "strong", 2.0, 0.0)
    assert float(strong) == pytest.approx(float(weak) + 2.0 * parts["latent"], rel=1e-5)


@pytest.fixture()
def codec_dir(tmp_path):
    torch.manual_seed(0)
    model = FocalAutoencoder(TINY)
    with torch.no_grad():  # non-trivial batch-norm statistics
        model.train()(torch.rand(4, 3, 64, 64))
    return save_checkpoint(
        tmp_path / "ae", model.eval().state_dict(), {"task": "focal-ae", "model": TINY.model_dump()}
    )


def test_alpha_zero_and_one_reproduce_the_reconstructions(codec_dir, ihc):
    sharp = ihc[:64, :96]
    blurry = cv2.GaussianBlur(sharp, (0, 0), 2)
    codec = FocalCodec.load(codec_dir)
    at0, at1 = codec.interpolate(sharp, blurry, [0.0, 1.0])
    with torch.no_grad():
        x = torch.from_numpy(np.stack([sharp, blurry]).transpose(0, 3, 1, 2) / 255.0).float()
        recon = (codec.model(x).numpy().transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)
    assert np.abs(at0.astype(int) - recon[0]).max() <= 1
    assert np.abs(at1.astype(int) - recon[1]).max() <= 1
    assert at0.shape == sharp.shape and at0.dtype == np.uint8


def test_residual_outputs_are_anchored_to_the_planes_own_pixels(codec_dir, ihc):
    sharp = ihc[:64, :96]
    blurry = cv2.GaussianBlur(sharp, (0, 0), 2)
    codec = FocalCodec.load(codec_dir)
    at0, mid, at1 = codec.interpolate(sharp, blurry, [0.0, 0.5, 1.0], residual=True)
    assert np.abs(at0.astype(int) - sharp).max() <= 1  # the planes themselves, not decodes
    assert np.abs(at1.astype(int) - blurry).max() <= 1
    (plain,) = codec.interpolate(sharp, blurry, [0.5])
    blend = (sharp.astype(float) + blurry) / 2
    assert np.abs(mid - blend).mean() < np.abs(plain - blend).mean()
    (near,) = codec.deblur(sharp, blurry, [0.0], residual=True)
    assert np.abs(near.astype(int) - sharp).max() <= 1


def test_deblur_at_alpha_zero_is_the_near_planes_reconstruction(codec_dir, ihc):
    near = cv2.GaussianBlur(ihc[:64, :64], (0, 0), 1)
    far = cv2.GaussianBlur(ihc[:64, :64], (0, 0), 3)
    codec = FocalCodec.load(codec_dir)
    (deblurred,) = codec.deblur(near, far, [0.0])
    (recon,) = codec.interpolate(near, far, [0.0])
    assert np.array_equal(deblurred, recon)
    with pytest.raises(ParameterError):
        codec.deblur(near, far, [1.0])


def test_shifted_planes_give_the_first_planes_size_and_position(codec_dir, ihc, caplog):
    first = np.ascontiguousarray(ihc[20:84, 20:116])  # 64 x 96
    second = np.ascontiguousarray(ihc[23:87, 16:112])  # the same field, 3 px up, 4 px right
    codec = FocalCodec.load(codec_dir)
    with caplog.at_level("WARNING", logger="histoblur.inference.latent"):
        (out,) = codec.interpolate(first, second, [0.0])
    assert out.shape == first.shape
    assert "after registration" in caplog.text and "x 0-92, y 3-64" in caplog.text
    # inside the overlap: alpha 0 reconstructs the first plane where it lies
    (same,) = codec.interpolate(first[3:, :92], second[:61, 4:], [0.0])
    assert np.abs(out[3:, :92].astype(int) - same.astype(int)).max() <= 1
    # outside it: the overlap's edge pixels repeated
    assert np.array_equal(out[:3, :92], np.repeat(out[3:4, :92], 3, axis=0))


def test_large_planes_run_in_windows(codec_dir, ihc):
    sharp = np.concatenate([ihc, ihc[:, ::-1]], axis=1)[:40, :600]
    (out,) = FocalCodec.load(codec_dir).interpolate(sharp, sharp, [0.5])
    assert out.shape == sharp.shape


def test_grey_planes_stay_grey(codec_dir, ihc):
    grey = cv2.cvtColor(ihc[:64, :64], cv2.COLOR_RGB2GRAY)
    (out,) = FocalCodec.load(codec_dir).interpolate(grey, cv2.GaussianBlur(grey, (0, 0), 2), [0.5])
    assert out.shape == grey.shape


def test_cli_sweep_writes_one_strip_and_bad_input_fails_cleanly(codec_dir, stack_dir, tmp_path):
    out = tmp_path / "strip.png"
    args = ["latent", "interpolate", "--model", str(codec_dir), "--sweep", "3", "--out", str(out),
            str(stack_dir / "plane_+00.png"), str(stack_dir / "plane_+04.png")]  # fmt: skip
    assert main(args) == 0
    strip = read_image(out)
    assert strip.shape[1] > 3 * 180
    bad = tmp_path / "bad.png"
    args = ["latent", "deblur", "--model", str(codec_dir), "--alpha", "1.0", "--out", str(bad),
            str(stack_dir / "plane_+02.png"), str(stack_dir / "plane_+04.png")]  # fmt: skip
    assert main(args) == 1 and not bad.exists()
    args[4] = str(tmp_path)  # not a checkpoint
    assert main(["latent", "deblur", "--model", str(tmp_path), "--alpha", "0.5", "--out",
                 str(bad), str(stack_dir / "plane_+02.png"),
                 str(stack_dir / "plane_+04.png")]) == 1  # fmt: skip


def test_cli_trains_a_tiny_model(stack_dir, tmp_path):
    config = tmp_path / "latent.yaml"
    config.write_text(
        f"out: {tmp_path / 'run'}\nvariant: weak\ntile: 32\nbatch_size: 2\nepochs: 1\n"
        f"steps_per_epoch: 2\ntest_crops: 1\nthreads: 1\n"
        f"model: {{width: 4, levels: 3}}\nstacks:\n"
        f"  - {{name: s, folder: {stack_dir}, glob: 'plane_*.png', "
        f"position: 'plane_([+-]\\d+)', test_fraction: 0.3}}\n"
    )
    assert main(["train", "latent", "--config", str(config)]) == 0
    assert (tmp_path / "run" / "best" / "config.json").is_file()
    assert main(["train", "latent", "--set", "tile=100"]) == 1
    resume = ["train", "latent", "--config", str(config), "--set", "epochs=2", "--resume"]
    assert main(resume) == 0
    rows = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[-1].startswith("2,4,")


def test_shipped_model_synthesizes_the_real_middle_plane_better_than_the_ends(data_dir):
    smear = data_dir / "focal_stacks" / "smear"
    planes = [read_image(smear / f"plane_+0{k}.png") for k in (0, 4, 8)]
    sharp, middle, blurry = register_planes(planes, reference=0)
    held = slice(int(sharp.shape[1] * 0.6), None)  # the columns the shipped model never saw
    sharp, middle, blurry = sharp[:, held], middle[:, held], blurry[:, held]
    at0, made, at1 = FocalCodec.load("default").interpolate(sharp, blurry, [0.0, 0.5, 1.0])
    h, w = made.shape[:2]

    def error(image: np.ndarray) -> float:
        return float(np.abs(image[:h, :w].astype(float) - middle[:h, :w]).mean())

    assert error(made) < min(error(at0), error(at1))  # the decoded ends
    assert error(made) < min(error(sharp), error(blurry))  # the real ends
