"""Blur segmentation: network, checkpoints, tiling, predictor, training loop, evaluation."""

import pickle

import numpy as np
import pytest
import torch

from conftest import DATA
from histoblur.errors import InputError, ParameterError
from histoblur.inference.benchmark import evaluate_benchmark, flagged_fraction
from histoblur.inference.segment import Segmenter, overlay, probability_png
from histoblur.io.checkpoints import save_checkpoint
from histoblur.models import UNet, UNetConfig, load_model
from histoblur.models.tiling import axis_starts, count_tiles, predict_tiled
from histoblur.synthesis import apply_blur, make_spec
from histoblur.training.augment import AugmentConfig, augment_pair, stain_jitter
from histoblur.training.losses import bce_dice_loss, soft_dice_loss

TINY = UNetConfig(width=4, depth=2)


def tiny_model(seed: int = 0, **kw) -> UNet:
    torch.manual_seed(seed)
    return UNet(TINY.model_copy(update=kw)).eval()


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("norm", ["batch", "group", "instance", "none"])
@pytest.mark.parametrize("separable", [False, True])
@pytest.mark.parametrize("stem_stride", [1, 2])
def test_unet_keeps_any_size(norm, separable, stem_stride):
    model = tiny_model(norm=norm, separable=separable, stem_stride=stem_stride)
    for h, w in [(37, 53), (64, 64), (5, 9)]:
        y = model(torch.rand(2, 3, h, w))
        assert y.shape == (2, 1, h, w)
        assert torch.isfinite(y).all()


def test_light_variant_has_fewer_parameters():
    def count(m):
        return sum(p.numel() for p in m.parameters())

    full = UNet(UNetConfig(width=16, depth=4))
    light = UNet(UNetConfig(width=16, depth=4, separable=True))
    assert count(light) < count(full) / 4


def test_losses_are_zero_for_perfect_logits_and_positive_otherwise():
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    perfect = (target * 2 - 1) * 50
    assert float(bce_dice_loss(perfect, target)) < 1e-6
    assert float(soft_dice_loss(-perfect, target)) > 0.9
    assert float(bce_dice_loss(torch.zeros_like(target), target)) > 0.5


def test_tiny_unet_learns_a_few_steps():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images, masks = [], []
    for i in range(4):
        tile = texture(48, 48, i)
        blurred = apply_blur(tile, make_spec("gaussian", sigma=3.0))
        m = np.zeros((48, 48), bool)
        y, x = rng.integers(0, 24, 2)
        m[y : y + 24, x : x + 24] = True
        images.append(np.where(m[..., None], blurred, tile))
        masks.append(m)
    x = torch.from_numpy(np.stack(images).transpose(0, 3, 1, 2).astype(np.float32) / 255)
    t = torch.from_numpy(np.stack(masks)[:, None].astype(np.float32))
    model = UNet(TINY).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = bce_dice_loss(model(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    model = tiny_model(3)
    x = torch.rand(1, 3, 40, 40)
    save_checkpoint(tmp_path / "ck", model.state_dict(), {"model": TINY.model_dump()})
    loaded, config = load_model(tmp_path / "ck")
    assert config["model"]["width"] == 4
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))
    # a plain torch state dict beside the same config.json loads through weights_only
    torch.save(model.state_dict(), tmp_path / "ck" / "weights.pt")
    again, _ = load_model(tmp_path / "ck" / "weights.pt")
    with torch.inference_mode():
        assert torch.equal(model(x), again(x))


class Boom:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_bad_checkpoints_are_refused(tmp_path, capsys):
    good = tmp_path / "good"
    save_checkpoint(good, tiny_model().state_dict(), {"model": TINY.model_dump()})
    with pytest.raises(InputError, match="does not exist"):
        load_model(tmp_path / "missing")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file")
    (corrupt / "config.json").write_text((good / "config.json").read_text())
    with pytest.raises(InputError, match="safetensors"):
        load_model(corrupt)
    wrong = tmp_path / "wrong"
    save_checkpoint(wrong, tiny_model().state_dict(), {"model": {**TINY.model_dump(), "width": 8}})
    with pytest.raises(InputError, match="do not fit"):
        load_model(wrong)
    unknown = tmp_path / "unknown"
    save_checkpoint(unknown, tiny_model().state_dict(), {"model": {"arch": "resnet"}})
    with pytest.raises(InputError, match="Unknown network architecture"):
        load_model(unknown)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"x": Boom()}))
    (tmp_path / "config.json").write_text((good / "config.json").read_text())
    with pytest.raises(InputError, match="weights_only"):
        load_model(evil)
    assert "arbitrary code ran" not in capsys.readouterr().out
    (good / "config.json").write_text("{")
    with pytest.raises(InputError, match="JSON"):
        load_model(good)


def test_tiling_is_exact_for_a_pointwise_predictor():
    rng = np.random.default_rng(1)
    for h, w in [(300, 517), (100, 90), (257, 700)]:
        image = rng.random((h, w, 3), dtype=np.float32)
        out = np.full((h, w), np.nan, np.float32)
        rows = []
        for row, block in predict_tiled(image, lambda b: b[:, :1] * 2, 128, 16, 3):
            rows.append((row, block.shape[0]))
            out[row : row + block.shape[0]] = block[..., 0]
        assert np.allclose(out, image[..., 0] * 2, atol=1e-6)
        assert rows[0][0] == 0 and sum(n for _, n in rows) == h  # contiguous bands, once each
        assert [r for r, _ in rows] == sorted(r for r, _ in rows)
    assert axis_starts(600, 128, 16)[-1] == 600 - 128
    assert count_tiles(100, 90, 128, 16) == 1
    with pytest.raises(ParameterError):
        next(predict_tiled(image, lambda b: b, 128, 64))


def test_tiled_inference_matches_whole_image_inference():
    model = tiny_model(5)
    image = texture(200, 260, 2)
    whole = Segmenter(model, tile=512).predict_proba(image)  # one padded window
    tiled = Segmenter(model, tile=96, overlap=32, batch_size=3).predict_proba(image)
    assert whole.shape == tiled.shape == (200, 260)
    assert np.abs(whole - tiled).mean() < 0.01
    assert np.abs(whole - tiled).max() < 0.1


def test_segmenter_accepts_every_image_kind():
    seg = Segmenter(tiny_model(1), tile=64, overlap=8)
    rgb = texture(70, 90)
    grey16 = rgb[..., 0].astype(np.uint16) * 257
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    reference = seg.predict_proba(rgb)
    assert np.allclose(seg.predict_proba(rgba), reference)
    assert seg.predict_proba(grey16).shape == (70, 90)
    small = seg.segment(texture(10, 7))  # smaller than the window: padded
    assert small.mask.shape == small.probability.shape == (10, 7)
    with pytest.raises(ParameterError):
        seg.segment(rgb, threshold=1.5)
    picture = overlay(rgb, reference > 0.5, reference)
    assert picture.shape == rgb.shape and picture.dtype == np.uint8
    assert probability_png(np.array([[0.0, 1.0]])).tolist() == [[0, 255]]


def test_augment_moves_image_and_mask_together():
    rng = np.random.default_rng(0)
    tile = rng.random((16, 16, 3), dtype=np.float32)
    mask = np.zeros((16, 16), bool)
    mask[:4, :8] = True
    tile[mask] = 1.0  # mark the masked pixels white
    for seed in range(8):
        cfg = AugmentConfig(stain_p=0, colour_p=0, grey_p=0)
        x, m = augment_pair(tile, mask, cfg, np.random.default_rng(seed))
        assert m.sum() == mask.sum() and np.all(x[m] == 1.0)
    identity = stain_jitter(tile, np.ones(3), np.zeros(3))
    assert np.allclose(identity, np.clip(tile, 1 / 255, 1), atol=1e-5)


def test_benchmark_scoring_and_negatives(tmp_path):
    from histoblur.io.images import write_image
    from histoblur.synthesis.real_pairs import RealPairConfig, build_real_pairs

    sharp = texture(160, 160, 7)
    write_image(tmp_path / "s.png", sharp)
    write_image(tmp_path / "b.png", apply_blur(sharp, make_spec("lens", radius=4)))
    build_real_pairs(
        tmp_path / "s.png",
        tmp_path / "b.png",
        tmp_path / "bench",
        RealPairConfig(n=12, tile=64, seed=0, align=False),
    )
    bench = tmp_path / "bench"
    oracle = evaluate_benchmark(lambda im: np.zeros(im.shape[:2], bool), bench)
    assert oracle.sharp_flagged == 0.0 and oracle.overall.micro.recall == 0.0
    everything = evaluate_benchmark(lambda im: np.ones(im.shape[:2], bool), bench)
    assert everything.overall.micro.recall == 1.0
    assert np.isnan(everything.sharp_flagged) or everything.sharp_flagged == 1.0
    neg = flagged_fraction(lambda im: np.ones(im.shape[:2], bool), tmp_path)
    assert neg["n"] == 2 and neg["flagged"] == 1.0


@pytest.mark.skipif(not DATA.is_dir(), reason=f"real data folder {DATA} is absent")
def test_default_model_flags_a_blurred_square_in_a_real_tile():
    from histoblur.io.images import read_image

    seg = Segmenter.load("default")
    tile = read_image(DATA / "sharp" / "he" / "tiatoolbox_target_image.png")[:256, :256, :3]
    blurred = apply_blur(tile, make_spec("lens", radius=6))
    image = tile.copy()
    image[64:192, 64:192] = blurred[64:192, 64:192]
    result = seg.segment(image)
    inside = result.mask[80:176, 80:176].mean()
    outside = np.concatenate([result.mask[:48].ravel(), result.mask[208:].ravel()]).mean()
    assert inside > 0.8 and outside < 0.2


def test_glass_is_never_flagged_unless_asked():
    model = tiny_model(2)
    with torch.no_grad():
        model.head.bias.fill_(20.0)  # the network calls everything blurred
    image = texture(64, 64, 4)
    image[:, :32] = 245  # bright unsaturated glass on the left half
    gated = Segmenter(model, tile=64, overlap=8).segment(image)
    assert gated.probability.min() > 0.99
    assert not gated.mask[:, :32].any() and gated.mask[:, 40:].mean() > 0.9
    everything = Segmenter(model, tile=64, overlap=8, tissue_only=False).segment(image)
    assert everything.mask.all()


def test_bf16_autocast_agrees_with_fp32_on_real_tissue(ihc):
    """bfloat16 autocast (what --precision auto picks on CPUs with native BF16) keeps the mask."""
    from histoblur.synthesis import apply_blur, make_spec

    image = ihc[:256, :256].copy()
    image[:, 128:] = apply_blur(image, make_spec("lens", radius=5))[:, 128:]
    fp32 = Segmenter.load("default", tile=128, precision="fp32")
    bf16 = Segmenter.load("default", tile=128, precision="bf16")
    assert fp32.autocast is None and bf16.autocast is torch.bfloat16
    a, b = fp32.segment(image), bf16.segment(image)
    assert (a.mask == b.mask).mean() > 0.995
    assert np.abs(a.probability - b.probability).max() < 0.1
    assert a.mask[:, 160:].mean() > 0.5 and b.mask[:, 160:].mean() > 0.5
