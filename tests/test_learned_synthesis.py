"""Learned blur synthesis: WGAN-GP generator and UNIT-DDPM, training, and use as blur kinds."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from histoblur.cli.main import main
from histoblur.diffusion.schedule import q_sample
from histoblur.diffusion.translation import translate
from histoblur.errors import InputError, ParameterError
from histoblur.io.checkpoints import save_checkpoint
from histoblur.io.images import read_image, write_image
from histoblur.metrics.frechet import frechet_distance
from histoblur.metrics.full_reference import focal_frequency_loss
from histoblur.models.gan import BlurGenerator, BlurGeneratorConfig, PatchCritic, critic_condition
from histoblur.models.unit_ddpm import UnitDDPM, UnitDDPMConfig
from histoblur.synthesis.blur import apply_blur
from histoblur.synthesis.dataset import DatasetConfig, build_dataset, iter_manifest, regenerate
from histoblur.synthesis.learned import GanSpec, load_network
from histoblur.synthesis.registry import parse_method
from histoblur.training.adversarial import critic_loss, gradient_penalty, identity_loss
from histoblur.training.deblur import RealPair
from histoblur.training.domains import DomainConfig
from histoblur.training.gan import GanTrainConfig, pretrain, train_gan
from histoblur.training.unit_ddpm import UnitDDPMTrainConfig, train_unit_ddpm

TINY = BlurGeneratorConfig(width=4, depth=2)


def test_gradient_penalty_matches_the_closed_form_of_a_linear_critic():
    torch.manual_seed(0)
    w_c, w_x = torch.randn(3, 8, 8) * 0.1, torch.randn(3, 8, 8) * 0.05

    def critic(c, x):
        return (c * w_c).sum(dim=(1, 2, 3)) + (x * w_x).sum(dim=(1, 2, 3))

    real, fake = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)
    gp = gradient_penalty(critic, real, real, fake, fake, torch.Generator().manual_seed(1))
    norm = torch.sqrt((w_c**2).sum() + (w_x**2).sum())
    assert float(gp) == pytest.approx(float((norm - 1) ** 2), rel=1e-5)


def test_critic_loss_is_the_wasserstein_gap_plus_the_penalty():
    critic = PatchCritic()
    real, fake = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    c_real, c_fake = critic_condition(real), critic_condition(fake)
    loss, gap = critic_loss(critic, c_real, real, c_fake, fake, lambda_gp=0.0)
    assert float(loss.detach()) == pytest.approx(-gap, abs=1e-6)
    with_gp, _ = critic_loss(critic, c_real, real, c_fake, fake, lambda_gp=10.0)
    assert float(with_gp.detach()) > float(loss.detach())


def test_untrained_generator_is_the_identity_so_the_identity_loss_is_zero():
    generator = BlurGenerator(TINY)
    y = torch.rand(2, 3, 37, 50)
    out = generator(y)
    assert out.shape == y.shape
    assert float(identity_loss(out, y)) == 0.0


def test_critic_condition_is_shared_by_a_field_and_its_blurred_version():
    rng = np.random.default_rng(0)
    coarse = cv2.resize(rng.random((8, 8, 3)).astype(np.float32), (64, 64))
    sharp = np.clip(coarse + rng.normal(0, 0.1, coarse.shape), 0, 1).astype(np.float32)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 2)
    as_t = [torch.from_numpy(a.transpose(2, 0, 1))[None] for a in (sharp, blurred)]
    gap_images = float((as_t[0] - as_t[1]).abs().mean())
    gap_conditions = float((critic_condition(as_t[0]) - critic_condition(as_t[1])).abs().mean())
    assert gap_conditions < 0.2 * gap_images


def test_focal_frequency_loss_orders_blur_strength(tile):
    x = tile.astype(np.float32) / 255
    weak, strong = (cv2.GaussianBlur(x, (0, 0), s) for s in (1, 3))
    assert focal_frequency_loss(x, x) == 0.0
    assert 0 < focal_frequency_loss(x, weak) < focal_frequency_loss(x, strong)
    batch = torch.from_numpy(np.stack([x, strong]).transpose(0, 3, 1, 2).copy())
    both = focal_frequency_loss(batch, batch.flip(0))
    assert float(both[0]) == pytest.approx(focal_frequency_loss(x, strong), rel=1e-5)


@pytest.fixture()
def domains(tmp_path, ihc):
    """A sharp folder, a real-blurred image and an aligned pair made from the IHC image."""
    sharp_dir = tmp_path / "sharp"
    sharp_dir.mkdir()
    write_image(sharp_dir / "a.png", ihc[:256, :256])
    write_image(sharp_dir / "b.png", ihc[256:, 256:])
    blurred = cv2.GaussianBlur(ihc, (0, 0), 3)
    write_image(tmp_path / "blurred.png", blurred[:256, 256:])
    write_image(tmp_path / "pair_sharp.png", ihc[256:, :256])
    write_image(tmp_path / "pair_blurred.png", blurred[256:, :256])
    return tmp_path


def tiny_config(root: Path, **changes) -> GanTrainConfig:
    values = {
        "out": root / "run",
        "sharp_dir": root / "sharp",
        "blurred": [{"path": root / "blurred.png"}],
        "pairs": [RealPair(sharp=root / "pair_sharp.png", blurred=root / "pair_blurred.png")],
        "generator": TINY,
        "critic": {"width": 4, "layers": 2},
        "tile": 48,
        "batch_size": 2,
        "critic_steps": 2,
        "pretrain_steps": 2,
        "epochs": 2,
        "steps_per_epoch": 2,
        "paired_l1": 1.0,
        "min_tissue": 0.0,
        "threads": 1,
        **changes,
    }
    return GanTrainConfig.model_validate(values)


def test_pretraining_lowers_the_l1_of_dropped_pixels(domains):
    config = tiny_config(domains, pretrain_steps=30, lr=3e-3, drop=0.3)
    torch.manual_seed(0)
    generator = BlurGenerator(TINY)
    optimizer = torch.optim.Adam(generator.parameters(), lr=config.lr)
    sources = sorted((domains / "sharp").glob("*.png"))
    losses = pretrain(generator, optimizer, config, sources, torch.device("cpu"))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_tiny_gan_trains_and_writes_checkpoints(domains):
    summary = train_gan(tiny_config(domains))
    out = domains / "run"
    for name in ("best", "last", "critic"):
        assert (out / name / "model.safetensors").is_file()
    rows = summary["history"]
    assert len(rows) == 2
    assert all(np.isfinite(r["critic"]) and np.isfinite(r["val_ssim"]) for r in rows)
    generator = load_network("gan", str(out / "last"))
    x = torch.rand(1, 3, 48, 48)
    assert not torch.equal(generator(x), x)  # training moved it away from the identity


def test_training_refuses_missing_images(domains):
    with pytest.raises(InputError, match="does not exist"):
        train_gan(tiny_config(domains, blurred=[{"path": domains / "nope.png"}]))


@pytest.fixture()
def generator_dir(tmp_path):
    torch.manual_seed(0)
    net = BlurGenerator(TINY)
    torch.nn.init.normal_(net.unet.head.weight, std=0.3)
    return save_checkpoint(
        tmp_path / "gen", net.state_dict(), {"task": "blur-gan", "model": TINY.model_dump()}
    )


def test_gan_blur_kind_is_deterministic_per_seed_and_keeps_shape_and_dtype(generator_dir, tile):
    spec = GanSpec(model=str(generator_dir), seed=3)
    first, again = apply_blur(tile, spec), apply_blur(tile, spec)
    other = apply_blur(tile, GanSpec(model=str(generator_dir), seed=4))
    assert first.shape == tile.shape and first.dtype == tile.dtype
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first, tile)
    grey = apply_blur(tile[..., 0], spec)
    assert grey.shape == tile.shape[:2]
    wide = apply_blur((tile.astype(np.uint16) * 257), spec)
    assert wide.dtype == np.uint16


def test_gan_method_names_a_model():
    kind, fixed = parse_method("gan:/some/folder")
    assert kind.name == "gan" and fixed == {"model": "/some/folder"}
    with pytest.raises(ParameterError, match="gan:default or gan:PATH"):
        parse_method("gan")
    with pytest.raises(ParameterError, match="takes no model"):
        parse_method("gaussian:x")


def test_other_checkpoints_are_refused_as_generators(tmp_path):
    from histoblur.models.rednet import RedNet, RedNetConfig

    config = RedNetConfig(widths=(4, 8))
    folder = save_checkpoint(
        tmp_path / "deblur",
        RedNet(config).state_dict(),
        {"task": "deblur-defocus", "model": config.model_dump()},
    )
    with pytest.raises(InputError, match="not a gan checkpoint"):
        apply_blur(np.zeros((32, 32, 3), np.uint8), GanSpec(model=str(folder), seed=0))


def test_dataset_with_gan_blur_regenerates_from_its_manifest(generator_dir, tmp_path, ihc):
    sharp = tmp_path / "src"
    sharp.mkdir()
    write_image(sharp / "ihc.png", ihc)
    config = DatasetConfig(n=3, tile=64, methods=(f"gan:{generator_dir}",), blurred_fraction=1.0)
    out = build_dataset(sharp, tmp_path / "ds", config)
    for record in iter_manifest(out):
        assert record["blur"]["kind"] == "gan"
        image, _ = regenerate(record, sharp)
        assert np.array_equal(image, read_image(out / "images" / f"{record['id']}.png"))


def test_cli_synth_blur_with_a_generator(generator_dir, tmp_path, tile, capsys):
    write_image(tmp_path / "in.png", tile)
    code = main(["synth", "blur", "--method", f"gan:{generator_dir}", "--out",
                 str(tmp_path / "out"), str(tmp_path / "in.png")])  # fmt: skip
    assert code == 0
    assert read_image(tmp_path / "out" / "in.png").shape == tile.shape
    code = main(["synth", "blur", "--method", "gan", "--out", str(tmp_path / "o2"),
                 str(tmp_path / "in.png")])  # fmt: skip
    assert code != 0
    assert "gan:default or gan:PATH" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


UNIT_TINY = UnitDDPMConfig(width=4, depth=2, translator_width=4, timesteps=50)


def test_forward_process_matches_its_closed_form():
    ab = UNIT_TINY.schedule().alpha_bar().float()
    x0, noise = torch.rand(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    t = torch.tensor([0, 49])
    x_t = q_sample(ab, x0, t, noise)
    expected = ab[49].sqrt() * x0[1] + (1 - ab[49]).sqrt() * noise[1]
    assert torch.allclose(x_t[1], expected)


def test_release_time_translation_keeps_size_range_and_replays_per_seed():
    torch.manual_seed(0)
    model = UnitDDPM(UNIT_TINY).eval()
    x = torch.rand(1, 3, 21, 34)
    first = translate(model, x, 0.5, 5, torch.Generator().manual_seed(3))
    again = translate(model, x, 0.5, 5, torch.Generator().manual_seed(3))
    other = translate(model, x, 0.5, 5, torch.Generator().manual_seed(4))
    assert first.shape == x.shape and first.dtype == x.dtype
    assert float(first.min()) >= 0 and float(first.max()) <= 1
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_translation_started_late_from_the_source_keeps_its_layout():
    torch.manual_seed(0)
    model = UnitDDPM(UNIT_TINY).eval()
    x = torch.rand(1, 3, 24, 24)
    out = translate(model, x, 0.5, 5, torch.Generator().manual_seed(0), start=0.05)
    assert out.shape == x.shape
    assert float(torch.corrcoef(torch.stack([out.flatten(), x.flatten()]))[0, 1]) > 0.95


def test_tiny_unit_ddpm_trains_and_its_translators_move(domains):
    config = UnitDDPMTrainConfig.model_validate(
        {**tiny_config(domains).model_dump(include=set(DomainConfig.model_fields)),
         "out": domains / "unit", "model": UNIT_TINY, "epochs": 1, "steps_per_epoch": 3,
         "warmup_steps": 0, "sample_steps": 3, "threads": 1}
    )  # fmt: skip
    summary = train_unit_ddpm(config)
    row = summary["history"][-1]
    assert all(np.isfinite(row[k]) for k in ("denoise", "translate", "cycle", "val_ssim"))
    model = load_network("unit-ddpm", str(domains / "unit" / "last"))
    x = torch.rand(1, 3, 32, 32)
    assert not torch.equal(model.a_to_b(x), x)


def test_unit_ddpm_blur_kind_replays_per_seed(tmp_path, tile):
    torch.manual_seed(0)
    folder = save_checkpoint(
        tmp_path / "unit",
        UnitDDPM(UNIT_TINY).state_dict(),
        {"task": "unit-ddpm", "model": UNIT_TINY.model_dump()},
    )
    kind, fixed = parse_method(f"unit-ddpm:{folder}")
    spec = kind.sampler.build(**fixed, steps=4).sample(np.random.default_rng(0))
    first, again = apply_blur(tile, spec), apply_blur(tile, spec)
    assert first.shape == tile.shape and first.dtype == tile.dtype
    assert np.array_equal(first, again)


def test_unit_ddpm_kind_takes_its_checkpoints_settings_unless_given(tmp_path, tile):
    torch.manual_seed(0)
    folder = save_checkpoint(
        tmp_path / "unit",
        UnitDDPM(UNIT_TINY).state_dict(),
        {"task": "unit-ddpm", "model": UNIT_TINY.model_dump(),
         "inference": {"release": 0.5, "steps": 5, "start": 0.05}},
    )  # fmt: skip
    kind, fixed = parse_method(f"unit-ddpm:{folder}")
    stored = apply_blur(tile, kind.sampler.build(**fixed).sample(np.random.default_rng(0)))
    spec = kind.sampler.build(**fixed, start=1.0).sample(np.random.default_rng(0))
    from_noise = apply_blur(tile, spec)
    assert np.corrcoef(stored.ravel(), tile.ravel())[0, 1] > 0.95
    assert np.corrcoef(from_noise.ravel(), tile.ravel())[0, 1] < 0.5


def test_frechet_distance_of_shifted_sets_is_the_squared_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 6))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-4)
    shift = np.array([1.0, -2.0, 0.0, 0.5, 0.0, 0.0])
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-3)
    with pytest.raises(InputError, match="same D"):
        frechet_distance(a, a[:, :5])


def test_shipped_generator_blurs_a_tile_and_lowers_its_sharpness(tile):
    from histoblur.metrics.sharpness import variance_of_laplacian

    blurred = apply_blur(tile, GanSpec(model="default", seed=0))
    assert blurred.shape == tile.shape and blurred.dtype == tile.dtype
    assert variance_of_laplacian(blurred) < 0.8 * variance_of_laplacian(tile)


def test_unshipped_default_translator_gives_a_clear_error(tile):
    from histoblur.models.hub import shipped_names
    from histoblur.synthesis.learned import UnitDDPMSpec

    assert shipped_names("unit-ddpm") == ()  # none shipped, none listed
    with pytest.raises(InputError, match="none shipped"):
        apply_blur(tile, UnitDDPMSpec(model="default", seed=0))


def test_cli_trains_a_tiny_gan_and_refuses_a_bad_config(domains, capsys):
    import yaml

    config = tiny_config(domains, epochs=1, steps_per_epoch=1, pretrain_steps=1)
    path = domains / "gan.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    assert main(["train", "gan", "--config", str(path)]) == 0
    assert (domains / "run" / "best" / "config.json").is_file()
    bad = config.model_dump(mode="json") | {"out": str(domains / "bad"), "critic_steps": 0}
    path.write_text(yaml.safe_dump(bad))
    assert main(["train", "gan", "--config", str(path)]) != 0
    assert "critic_steps" in capsys.readouterr().err
    assert not (domains / "bad").exists()


def test_cli_dataset_with_a_generator(generator_dir, tmp_path, ihc):
    sharp = tmp_path / "src"
    sharp.mkdir()
    write_image(sharp / "ihc.png", ihc)
    out = str(tmp_path / "ds")
    method = f"gaussian,gan:{generator_dir}"
    code = main(["synth", "dataset", "--sharp", str(sharp), "--out", out,
                 "--method", method, "--n", "4", "--tile", "64"])  # fmt: skip
    assert code == 0
    kinds = {r["blur"]["kind"] for r in iter_manifest(tmp_path / "ds")}
    assert kinds <= {"gaussian", "gan"} and len(list((tmp_path / "ds" / "images").iterdir())) == 4


class StoppedError(Exception):
    """Raised from the progress callback: a run killed in the middle of an epoch."""


@pytest.mark.parametrize("trainer", ["gan", "unit-ddpm"])
def test_a_run_stopped_mid_epoch_resumes_bit_identical(domains, trainer):
    import json

    from safetensors.torch import load_file

    # 3 steps per epoch: the learning rate decays inside the second epoch of both schedules
    gan = tiny_config(domains, epochs=2, steps_per_epoch=3, critic_steps=1, batch_size=1)
    if trainer == "gan":
        config, train = gan, train_gan
    else:
        fields = gan.model_dump(include=set(DomainConfig.model_fields))
        config = UnitDDPMTrainConfig.model_validate(
            {**fields, "model": UNIT_TINY, "epochs": 2, "steps_per_epoch": 3,
             "warmup_steps": 0, "sample_steps": 2, "threads": 1}
        )  # fmt: skip
        train = train_unit_ddpm
    straight = config.model_copy(update={"out": domains / "straight"})
    stopped = config.model_copy(update={"out": domains / "stopped"})
    train(straight)

    def stop_in_epoch_2(step, total, info):
        if step == 5:
            raise StoppedError

    with pytest.raises(StoppedError):
        train(stopped, progress=stop_in_epoch_2)
    assert len((stopped.out / "history.csv").read_text().splitlines()) == 2  # epoch 1 kept
    summary = train(stopped, resume=True)
    assert [row["step"] for row in summary["history"]] == [3, 6]
    folders = ["last", "best", "critic"] if trainer == "gan" else ["last", "best"]
    for folder in folders:
        a = load_file(straight.out / folder / "model.safetensors")
        b = load_file(stopped.out / folder / "model.safetensors")
        assert all(a[k].equal(b[k]) for k in a), folder
    meta = [json.loads((c.out / "last" / "config.json").read_text()) for c in (straight, stopped)]
    assert meta[0]["metrics"]["val_ssim"] == meta[1]["metrics"]["val_ssim"]
    assert meta[0].get("pretrain_l1") == meta[1].get("pretrain_l1")  # not pre-trained again


def test_learned_kinds_run_where_learned_device_says():
    from histoblur.synthesis.learned import current_device, learned_device

    image = np.random.default_rng(0).integers(0, 255, (24, 24, 3), dtype=np.uint8)
    spec = GanSpec(model="default", seed=3)
    plain = apply_blur(image, spec)
    with learned_device("cpu"):
        assert current_device().type == "cpu"
        assert np.array_equal(apply_blur(image, spec), plain)
    with pytest.raises(InputError, match="device"), learned_device("tpu"):
        pass


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_synth_blur_device_cuda_without_cuda_writes_nothing(tmp_path, capsys):
    src = write_image(tmp_path / "t.png", np.zeros((16, 16, 3), np.uint8))
    out = tmp_path / "out"
    code = main(["synth", "blur", "--method", "gan:default", "--device", "cuda",
                 "--out", str(out), str(src)])  # fmt: skip
    assert code == 1 and not out.exists()
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_learned_kinds_on_cuda_stay_close_to_cpu():
    from histoblur.synthesis.learned import learned_device

    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    spec = GanSpec(model="default", seed=3)
    with learned_device("cuda"):
        gpu = apply_blur(image, spec).astype(int)
    assert np.abs(gpu - apply_blur(image, spec).astype(int)).max() <= 2
