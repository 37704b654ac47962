"""Deblurring networks, DBMID routing, Richardson-Lucy baseline, training, CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from histoblur.cli.main import main
from histoblur.errors import InputError
from histoblur.inference.deblur import Deblurrer, deblur_image, richardson_lucy
from histoblur.io.checkpoints import save_checkpoint
from histoblur.io.images import read_image, write_image
from histoblur.kernels import gaussian_kernel
from histoblur.models.rednet import RedNet, RedNetConfig
from histoblur.synthesis.blur import apply_blur
from histoblur.synthesis.registry import make_spec
from histoblur.training.deblur import DeblurTrainConfig, RealPair, train_deblur

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TINY = RedNetConfig(widths=(4, 8), convs=1)


class Fixed:
    """A stand-in classifier that always answers the same blur type."""

    def __init__(self, label):
        self.label = label

    def classify(self, image):
        from histoblur.inference.classify import BlurType

        return BlurType(self.label, {self.label: 1.0}, 1)


def _deblurrer(family, seed=0):
    torch.manual_seed(seed)
    net = RedNet(TINY)
    for p in net.tail.parameters():  # not the identity, so routing is visible
        torch.nn.init.normal_(p, std=0.05)
    config = {"task": f"deblur-{family}", "model": TINY.model_dump(mode="json")}
    return Deblurrer(net.eval(), config, tile=64, overlap=8), net, config


@pytest.mark.parametrize("size", [(1, 3, 16, 16), (2, 3, 37, 51), (1, 1, 33, 20)])
def test_rednet_keeps_any_size_and_starts_as_identity(size):
    config = RedNetConfig(channels=size[1], widths=(4, 8, 16), convs=1)
    x = torch.rand(*size)
    y = RedNet(config)(x)
    assert y.shape == x.shape and torch.equal(y, x)  # zero-initialised tail


def test_tiny_network_training_lowers_the_loss():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    sharp = np.full((4, 32, 32, 3), 0.2, np.float32)  # bright squares: edges to restore
    for i in range(4):
        y, x = rng.integers(4, 20, 2)
        sharp[i, y : y + 8, x : x + 8] = 0.9
    spec = make_spec("gaussian", sigma=1.5)
    blurred = np.stack([apply_blur((s * 255).astype(np.uint8), spec) for s in sharp]) / 255.0
    x = torch.from_numpy(blurred.transpose(0, 3, 1, 2).astype(np.float32))
    y = torch.from_numpy(sharp.transpose(0, 3, 1, 2))
    net = RedNet(TINY)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = torch.nn.functional.mse_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


def test_tiled_deblurring_matches_whole_image():
    deblurrer, net, _ = _deblurrer("defocus")
    rgb = np.random.default_rng(1).random((150, 170, 3)).astype(np.float32)
    tiled = deblurrer.run_float(rgb)
    with torch.no_grad():
        whole = net(torch.from_numpy(rgb.transpose(2, 0, 1))[None])[0].numpy().transpose(1, 2, 0)
    assert tiled.shape == rgb.shape
    assert np.abs(tiled - np.clip(whole, 0, 1)).max() < 0.02


def test_routing_in_focus_untouched_mixed_chains_both():
    image = (np.random.default_rng(2).random((40, 50, 3)) * 255).astype(np.uint8)
    nets = {"defocus": _deblurrer("defocus", 0)[0], "motion": _deblurrer("motion", 1)[0]}
    kept = deblur_image(image, "auto", nets, Fixed("in_focus"))
    assert kept.networks == () and np.array_equal(kept.image, image)
    assert kept.image is not image
    mixed = deblur_image(image, "auto", nets, Fixed("mixed"))
    assert mixed.networks == ("DL_motion", "DL_defocus") and mixed.image.dtype == np.uint8
    motion_only = deblur_image(image, "motion", nets)
    chained = deblur_image(motion_only.image, "defocus", nets)
    assert np.abs(chained.image.astype(int) - mixed.image.astype(int)).max() <= 1
    grey16 = (np.random.default_rng(3).random((30, 41)) * 65535).astype(np.uint16)
    out = deblur_image(grey16, "defocus", nets).image
    assert out.shape == grey16.shape and out.dtype == np.uint16


def test_wrong_checkpoint_is_refused(tmp_path):
    _, net, config = _deblurrer("motion")
    save_checkpoint(tmp_path / "m", net.state_dict(), config)
    assert Deblurrer.load("motion", tmp_path / "m").config["task"] == "deblur-motion"
    with pytest.raises(InputError, match="not a defocus deblurring network"):
        Deblurrer.load("defocus", tmp_path / "m")
    with pytest.raises(InputError):
        Deblurrer.load("defocus", tmp_path / "missing")


def test_richardson_lucy_sharpens_a_known_blur():
    rng = np.random.default_rng(4)
    sharp = np.zeros((64, 64, 1), np.float32)
    sharp[rng.integers(8, 56, 20), rng.integers(8, 56, 20)] = 1.0
    psf = gaussian_kernel(1.5)
    import cv2

    blurred = cv2.filter2D(sharp, -1, psf, borderType=cv2.BORDER_REFLECT)[..., None]
    restored = richardson_lucy(blurred, psf, iterations=30)
    assert np.abs(restored - sharp).mean() < np.abs(blurred - sharp).mean()
    with pytest.raises(InputError):
        richardson_lucy(blurred, psf, iterations=0)


@pytest.mark.skipif(not (DATA / "sharp").is_dir(), reason="../shared/data is absent")
def test_training_on_synthetic_and_real_pairs(tmp_path):
    pair = DATA / "real_pairs" / "fqpath_left"
    config = DeblurTrainConfig(
        out=tmp_path / "run", sharp_dir=DATA / "sharp", model=TINY, epochs=1,
        steps_per_epoch=3, batch_size=2, heldout=2, workers=0, tile=48,
        real=(RealPair(sharp=pair / "sharp.png", blurred=pair / "blurred.png"),), real_share=0.5,
    )  # fmt: skip
    summary = train_deblur(config)
    row = summary["history"][0]
    assert row["heldout_psnr_blurred"] > 0 and np.isfinite(row["heldout_psnr_deblurred"])
    assert Deblurrer.load("defocus", tmp_path / "run" / "best").config["task"] == "deblur-defocus"


def test_real_crop_tone_match_keeps_the_blurred_mean_and_the_sharp_detail(tmp_path):
    from histoblur.training.deblur import real_pair_crop

    rng = np.random.default_rng(3)
    sharp = (rng.random((64, 64, 3)) * 200).astype(np.uint8)
    blurred = (np.clip(sharp.astype(int) + 30, 0, 255)).astype(np.uint8)  # a brighter plane
    write_image(tmp_path / "s.png", sharp)
    write_image(tmp_path / "b.png", blurred)
    pair = RealPair(sharp=tmp_path / "s.png", blurred=tmp_path / "b.png", train_box=(0, 0, 1, 1))
    b, kept = real_pair_crop(pair, 32, np.random.default_rng(0), "keep")
    b2, matched = real_pair_crop(pair, 32, np.random.default_rng(0), "match")
    assert np.array_equal(b, b2)
    assert abs(kept.mean() - b.mean()) > 0.1  # as scanned: 30 grey levels apart
    assert np.allclose(matched.mean(axis=(0, 1)), b.mean(axis=(0, 1)), atol=1e-3)
    assert np.allclose(matched - matched.mean(), kept - kept.mean(), atol=1e-5)


def test_pair_balance_draws_as_before_and_stack_balance_weighs_stacks_alike():
    from histoblur.training.deblur import pick_real

    pairs = tuple(RealPair(sharp=f"s{i // 3}", blurred=f"b{i}") for i in range(4))  # 3 + 1
    a, b = np.random.default_rng(4), np.random.default_rng(4)
    drawn = [pick_real(pairs, "pair", a) for _ in range(50)]
    assert drawn == [pairs[int(b.integers(4))] for _ in range(50)]  # old configs reproduce
    rng = np.random.default_rng(5)
    lone = sum(pick_real(pairs, "stack", rng).blurred.name == "b3" for _ in range(2000))
    assert 0.45 < lone / 2000 < 0.55  # the one-pair stack: half, not a quarter


def test_deblur_command(tmp_path):
    for family in ("defocus", "motion"):
        _, net, config = _deblurrer(family)
        save_checkpoint(tmp_path / "nets" / family, net.state_dict(), config)
    image = (np.random.default_rng(5).random((48, 64, 3)) * 255).astype(np.uint8)
    write_image(tmp_path / "in" / "a.png", image)
    out = tmp_path / "out"
    args = ["deblur", "--kind", "mixed", "--model", str(tmp_path / "nets"), "--out", str(out)]
    assert main([*args, str(tmp_path / "in")]) == 0
    assert read_image(out / "a.png").shape == image.shape
    assert main([*args, str(tmp_path / "missing.png")]) == 1
    assert main(["deblur", "--kind", "defocus", "--model", str(tmp_path / "nope"), "--out",
                 str(out), str(tmp_path / "in")]) == 1  # fmt: skip


def test_bf16_deblurring_stays_within_a_few_grey_levels_of_fp32(tmp_path):
    from histoblur.inference.deblur import Deblurrer

    rgb = np.random.default_rng(6).random((80, 96, 3)).astype(np.float32)
    reference = Deblurrer.load("defocus").run_float(rgb)
    fast = Deblurrer.load("defocus", precision="bf16").run_float(rgb)
    assert fast.shape == reference.shape and fast.dtype == np.float32
    assert np.abs(fast - reference).max() * 255 < 4
    write_image(tmp_path / "in" / "a.png", (rgb * 255).astype(np.uint8))
    out = tmp_path / "out"
    cli = ["deblur", "--kind", "defocus", "--precision", "bf16", "--out", str(out)]
    assert main([*cli, str(tmp_path / "in")]) == 0 and (out / "a.png").is_file()


def test_fwhm_of_a_gaussian_dip_and_its_motion_smear():
    from histoblur.metrics.fwhm import dark_objects, mean_fwhm, profile_fwhm

    x = np.arange(41) - 20.0
    sigma = 2.0
    dip = 1.0 - 0.8 * np.exp(-(x**2) / (2 * sigma**2))
    assert profile_fwhm(dip) == pytest.approx(2.3548 * sigma, rel=0.03)
    assert np.isnan(profile_fwhm(np.ones(9)))
    image = np.full((120, 120), 230, np.uint8)
    import cv2

    for y, x0 in [(40, 40), (40, 80), (80, 60)]:
        cv2.circle(image, (x0, y), 3, 40, -1)
    centres = dark_objects(image, count=10)
    assert sorted(centres) == [(40, 40), (40, 80), (80, 60)]
    moved = apply_blur(image, make_spec("motion", length=15, angle=0))
    sharp_w, moved_w = mean_fwhm(image, centres, 1), mean_fwhm(moved, centres, 1)
    assert moved_w > sharp_w + 5  # smeared along x
    across = abs(mean_fwhm(moved, centres, 0) - mean_fwhm(image, centres, 0))
    assert across < (moved_w - sharp_w) / 2  # hardly across the motion


WEIGHTS = Path(__file__).resolve().parents[1] / "src/histoblur/models/weights"


@pytest.mark.skipif(
    not (WEIGHTS / "deblur-defocus-default" / "model.safetensors").is_file(),
    reason="not shipped yet",
)
def test_shipped_networks_load_and_keep_shape():
    image = (np.random.default_rng(6).random((45, 67, 3)) * 255).astype(np.uint8)
    for family in ("defocus", "motion"):
        out = deblur_image(image, family, {family: Deblurrer.load(family)}).image
        assert out.shape == image.shape and out.dtype == np.uint8


def test_deblur_training_resumes(tmp_path, ihc):
    from histoblur.cli.main import main
    from histoblur.io.images import write_image

    sharp = tmp_path / "sharp"
    for k in range(7):  # every sixth image is held out
        write_image(sharp / f"t{k}.png", ihc[k * 40 : k * 40 + 128, k * 30 : k * 30 + 128])
    (tmp_path / "d.yaml").write_text(
        f"out: {tmp_path / 'run'}\nsharp_dir: {sharp}\n"
        f"model: {json.dumps(TINY.model_dump(mode='json'))}\n"
        "epochs: 1\nsteps_per_epoch: 2\nbatch_size: 2\nheldout: 2\nworkers: 0\ntile: 48\n"
    )
    command = ["train", "deblur", "--config", str(tmp_path / "d.yaml")]
    assert main(command) == 0
    first = (tmp_path / "run" / "last" / "model.safetensors").read_bytes()
    assert main([*command, "--set", "epochs=2", "--resume"]) == 0
    rows = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[-1].startswith("2,4,")
    assert (tmp_path / "run" / "last" / "model.safetensors").read_bytes() != first
    assert main([*command, "--set", "epochs=2", "--set", "lr=0.5", "--resume"]) == 1
