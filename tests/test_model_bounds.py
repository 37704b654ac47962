"""Model configs refuse architectures their constructors cannot build, in one sentence.

A checkpoint's ``config.json`` and a training config reach the constructors only through these
configs, so every out-of-range value must stop there as an :class:`InputError` (through
:func:`build_model` and :func:`load_model`) or a pydantic ``ValidationError`` that the CLI turns
into one sentence, never as a ZeroDivisionError, IndexError or RuntimeError from torch.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path

import annotated_types
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from pydantic import ValidationError
from safetensors.torch import save_file

from histoblur.cli.main import main
from histoblur.cli.train import TRAINERS, load_config
from histoblur.errors import InputError
from histoblur.io.checkpoints import CONFIG_NAME, WEIGHTS_NAME, read_config
from histoblur.models.autoencoder import AutoencoderConfig
from histoblur.models.gan import BlurGenerator, BlurGeneratorConfig
from histoblur.models.rednet import RedNet, RedNetConfig
from histoblur.models.registry import ARCHITECTURES, build_model, load_model
from histoblur.models.swin_denoiser import SwinDenoiserConfig
from histoblur.models.unet import UNet, UNetConfig, norm_groups

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "src" / "histoblur" / "models" / "weights"
CONFIGS = ROOT / "configs"

# (architecture, bad fields, words the one sentence must hold)
BAD: list[tuple[str, dict, str]] = [
    ("rednet", {"widths": ()}, "widths must list 1 to 6 whole numbers from 1 to 512"),
    ("rednet", {"widths": (0,)}, "widths must list 1 to 6"),
    ("rednet", {"widths": (-4, 8)}, "widths must list 1 to 6"),
    ("rednet", {"widths": (4, 100_000)}, "widths must list 1 to 6"),
    ("rednet", {"widths": (4,) * 7}, "widths must list 1 to 6"),
    ("vgg", {"stages": ()}, "stages must list 1 to 6 whole numbers from 1 to 8"),
    ("vgg", {"stages": (0, 2)}, "stages must list 1 to 6"),
    ("vgg", {"stages": (9,)}, "stages must list 1 to 6"),
    ("vgg", {"stages": (1,) * 7}, "stages must list 1 to 6"),
    ("vgg", {"in_channels": 1, "spectrum": True}, "spectrum reads the luma of RGB tiles"),
    ("swin-denoiser", {"heads": (0, 4, 8)}, "heads must list 1 to 6 whole numbers from 1 to 64"),
    ("swin-denoiser", {"heads": (-1, 4, 8)}, "heads must list 1 to 6"),
    ("swin-denoiser", {"heads": (2, 4, 128)}, "heads must list 1 to 6"),
    ("swin-denoiser", {"depths": (), "heads": ()}, "depths must list 1 to 6"),
    ("swin-denoiser", {"depths": (0, 2, 2)}, "depths must list 1 to 6 whole numbers from 1 to 16"),
    ("swin-denoiser", {"depths": (100_000, 2, 2)}, "depths must list 1 to 6"),
    ("swin-denoiser", {"depths": (1,) * 7, "heads": (1,) * 7}, "depths must list 1 to 6"),
    ("swin-denoiser", {"depths": (2, 2), "heads": (2, 4, 8)}, "one entry per stage"),
    ("swin-denoiser", {"heads": (3, 4, 8)}, "heads[0] = 3 must divide the 32 channels"),
    ("swin-denoiser", {"embed_dim": 30, "heads": (1, 7, 8)}, "heads[1] = 7 must divide"),
    (
        "swin-denoiser",
        {"embed_dim": 9, "heads": (1, 1, 1)},
        "embed_dim: Input should be a multiple",
    ),
    ("swin-denoiser", {"mlp_ratio": 0.01}, "mlp_ratio"),
    ("swin-denoiser", {"window": 0}, "window"),
    (
        "swin-denoiser",
        {"embed_dim": 64, "depths": (1,) * 6, "heads": (1,) * 6},
        "embed_dim * 2**(stages - 1) = 2048 channels, must not exceed 1024",
    ),
    ("conv-denoiser", {"width": 5}, "width: Input should be a multiple of 2"),
    ("conv-denoiser", {"depth": 0}, "depth"),
    ("unet", {"width": 256, "depth": 7}, "width * 2**depth = 32768 channels, must not exceed 2048"),
    ("unet", {"depth": 0}, "depth"),
    (
        "blur-gan",
        {"noise_channels": 14},
        "noise_channels: Input should be less than or equal to 13",
    ),
    ("blur-gan", {"width": 256, "depth": 4}, "must not exceed 2048"),
    ("focal-ae", {"width": 256, "levels": 7}, "width * 2**(levels - 1) = 16384 filters"),
    ("focal-ae", {"levels": 3, "skips": (3,)}, "skips must be distinct levels"),
    ("patch-critic", {"layers": 0}, "layers"),
]


def one_sentence(message: str, arch: str) -> None:
    assert message.startswith(f"Invalid {arch} configuration"), message
    assert message.endswith(".") and "\n" not in message, message


@pytest.mark.parametrize(("arch", "fields", "words"), BAD, ids=[f"{a}-{f}" for a, f, _ in BAD])
def test_a_bad_architecture_is_refused_in_one_sentence(arch, fields, words):
    with pytest.raises(ValidationError):
        ARCHITECTURES[arch].config(**fields)
    with pytest.raises(InputError) as caught:
        build_model({"arch": arch, **fields})
    one_sentence(str(caught.value), arch)
    assert words in str(caught.value)


@pytest.mark.parametrize(("arch", "fields", "words"), BAD[::4], ids=[a for a, _, _ in BAD[::4]])
def test_a_checkpoint_with_a_bad_architecture_is_refused_before_building(
    tmp_path, arch, fields, words
):
    (tmp_path / CONFIG_NAME).write_text(json.dumps({"model": {"arch": arch, **fields}}))
    save_file({"unused": torch.zeros(1)}, str(tmp_path / WEIGHTS_NAME))
    with pytest.raises(InputError) as caught:
        load_model(tmp_path)
    assert words in str(caught.value)


def _bounds(metadata: list) -> tuple[bool, bool]:
    low = any(isinstance(m, (annotated_types.Ge, annotated_types.Gt)) for m in metadata)
    high = any(isinstance(m, (annotated_types.Le, annotated_types.Lt)) for m in metadata)
    return low, high


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_number_a_config_can_set_is_bounded_both_ways(arch):
    config = ARCHITECTURES[arch].config
    for name, field in config.model_fields.items():
        if field.annotation in (int, float):
            assert _bounds(field.metadata) == (True, True), f"{arch}.{name} is unbounded"
        elif typing.get_origin(field.annotation) is tuple:  # per-level sizes
            with pytest.raises(ValidationError):
                config(**{name: (10**6,)})


@pytest.mark.parametrize(
    ("arch", "fields"),
    [
        ("unet", {"width": 128, "depth": 4}),
        ("blur-gan", {"width": 16, "depth": 7, "noise_channels": 13}),
        ("focal-ae", {"width": 64, "levels": 7}),
        (
            "swin-denoiser",
            {"embed_dim": 64, "depths": (16,) * 5, "heads": (64,) * 5, "mlp_ratio": 8},
        ),  # fmt: skip
        ("rednet", {"widths": (512,) * 6, "convs": 16, "kernel": 5}),
        ("vgg", {"width": 128, "stages": (8,) * 6, "spectrum": True}),
    ],
)
def test_the_largest_allowed_architectures_stay_buildable(arch, fields):
    entry = ARCHITECTURES[arch]
    with torch.device("meta"):  # shapes only: no memory for the weights
        network = entry.module(entry.config(**fields))
    size = sum(p.numel() for p in network.parameters()) * 4
    assert size < 5 * 2**30, f"{arch} at its bounds needs {size / 2**30:.1f} GiB of weights"


def test_every_shipped_checkpoint_config_is_still_valid():
    folders = sorted(p for p in WEIGHTS.iterdir() if (p / CONFIG_NAME).is_file())
    assert folders
    for folder in folders:
        block = read_config(folder)["model"]
        ARCHITECTURES[block["arch"]].config.model_validate(block)


def test_every_training_config_file_is_still_valid():
    files = sorted(CONFIGS.rglob("*.yaml"))
    checked = 0
    for path in files:
        if path.parent.name in TRAINERS:  # configs/datasets holds synthesis configs
            load_config(path, None, TRAINERS[path.parent.name].schema)
            checked += 1
    assert checked >= len(TRAINERS)


@pytest.mark.parametrize(
    ("trainer", "model", "words"),
    [
        ("deblur", "{widths: [4, 0]}", "model.widths: widths must list 1 to 6"),
        ("classifier", "{stages: [2, 9]}", "model.stages: stages must list 1 to 6"),
        ("classifier", "{in_channels: 1, spectrum: true}", "needs in_channels of 3 or more"),
        ("restore", "{arch: swin-denoiser, heads: [0, 4, 8]}", "heads must list 1 to 6"),
        ("restore", "{arch: swin-denoiser, depths: [0, 2, 2]}", "depths must list 1 to 6"),
        ("restore", "{arch: swin-denoiser, heads: [3, 4, 8]}", "must divide the 32 channels"),
        ("restore", "{arch: swin-denoiser, embed_dim: 9}", "multiple of 2"),
        ("restore", "{arch: conv-denoiser, width: 5}", "multiple of 2"),
        ("segmenter", "{width: 256, depth: 7}", "must not exceed 2048"),
        ("latent", "{width: 256, levels: 7}", "must not exceed 4096"),
    ],
)
def test_the_cli_prints_one_sentence_for_a_bad_model_block(tmp_path, capsys, trainer, model, words):
    config = tmp_path / "c.yaml"
    config.write_text(f"model: {model}\n")
    out = tmp_path / "run"
    assert main(["train", trainer, "--config", str(config), "--out", str(out)]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("histoblur: error: Invalid training config field model"), lines
    assert words in lines[0] and lines[0].endswith("."), lines
    assert not out.exists()


def test_the_gan_generator_block_is_refused_in_one_sentence(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("generator: {noise_channels: 14}\n")
    assert main(["train", "gan", "--config", str(config), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "histoblur: error: Invalid training config field generator.noise_channels: "
        "Input should be less than or equal to 13."
    )


@pytest.mark.parametrize("widths", [(4,), (4, 8), (4, 8, 16), (4,) * 6])
@pytest.mark.parametrize("size", [(1, 1), (2, 2), (3, 3), (1, 9), (3, 40)])
def test_rednet_takes_inputs_smaller_than_its_padding_multiple(widths, size):
    torch.manual_seed(0)
    net = RedNet(RedNetConfig(widths=widths, convs=1)).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        out = net(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_rednet_on_a_3x3_input_returns_3x3():
    net = RedNet(RedNetConfig()).eval()  # three levels: sides padded to a multiple of 4
    with torch.no_grad():
        assert net(torch.rand(1, 3, 3, 3)).shape == (1, 3, 3, 3)
        assert net(torch.rand(1, 3, 1, 1)).shape == (1, 3, 1, 1)


@pytest.mark.parametrize("size", [(8, 8), (13, 17), (33, 40), (5, 9), (64, 37)])
def test_rednet_still_reflect_pads_inputs_large_enough(size):
    """Bit-identical to padding by reflection outside, as before small inputs were handled."""
    torch.manual_seed(0)
    net = RedNet(RedNetConfig(widths=(4, 8, 16, 32), convs=1)).eval()
    torch.nn.init.normal_(net.tail.weight, std=0.1)  # not the identity
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(1))
    m = net.config.multiple
    padded = F.pad(x, (0, -size[1] % m, 0, -size[0] % m), mode="reflect")
    with torch.no_grad():
        assert torch.equal(net(x), net(padded)[..., : size[0], : size[1]])


def test_group_norm_builds_for_any_width_and_keeps_eight_groups_where_it_did():
    for channels in range(1, 600):
        g = norm_groups(channels)
        assert channels % g == 0 and 1 <= g <= 8
        if channels % min(8, channels) == 0:  # the widths that built before: unchanged
            assert g == min(8, channels)
    for width in (3, 6, 12):
        net = UNet(UNetConfig(width=width, depth=2, norm="group")).eval()
        assert net(torch.rand(1, 3, 16, 16)).shape == (1, 1, 16, 16)
    generator = BlurGenerator(BlurGeneratorConfig(width=12, depth=2, norm="group")).eval()
    assert generator(torch.rand(1, 3, 16, 16)).shape == (1, 3, 16, 16)


def test_the_caps_themselves_are_allowed():
    UNetConfig(width=128, depth=4)
    BlurGeneratorConfig(width=16, depth=7, noise_channels=13)
    AutoencoderConfig(width=64, levels=7)
    SwinDenoiserConfig(embed_dim=32, depths=(1,) * 6, heads=(1,) * 6)
    RedNetConfig(widths=(1, 512, 512, 512, 512, 512))


def test_gan_training_refuses_tiles_too_small_for_its_critic():
    from histoblur.models.gan import PatchCriticConfig
    from histoblur.training.gan import GanTrainConfig

    with pytest.raises(ValueError, match="needs tiles of at least 48 px"):
        GanTrainConfig(tile=32, critic=PatchCriticConfig(layers=4))
    assert GanTrainConfig(tile=48, critic=PatchCriticConfig(layers=4)).tile == 48


def test_unit_ddpm_width_must_be_even():
    from histoblur.models.unit_ddpm import UnitDDPMConfig

    with pytest.raises(ValueError, match="multiple"):
        UnitDDPMConfig(width=9)
