"""Random blur augmentations: probability, determinism, replay, regions, albumentations, torch."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from histoblur.errors import InputError, ParameterError
from histoblur.synthesis import BLUR_KINDS, apply_blur, make_spec, spec_from_dict
from histoblur.synthesis.augment import (
    RandomBlur,
    RandomBlurRegion,
    TorchRandomBlur,
    blur_array,
)
from histoblur.synthesis.masks import PolygonMaskSampler, rasterize
from histoblur.synthesis.torch_ops import blur_batch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def img(ihc: np.ndarray) -> np.ndarray:
    """48 x 64 RGB uint8 crop with texture everywhere."""
    return ihc[200:248, 180:244].copy()


# ---------------------------------------------------------------------------------------------
# RandomBlur


def test_p0_returns_everything_unchanged(img: np.ndarray) -> None:
    mask = np.zeros(img.shape[:2], np.uint8)
    t = RandomBlur(p=0.0, seed=0)
    for _ in range(5):
        out = t(image=img, mask=mask, label=3)
        assert set(out) == {"image", "mask", "label"}
        assert np.array_equal(out["image"], img)
        assert out["mask"] is mask and out["label"] == 3
        assert t.last_params is None


def test_p1_blurs_and_keeps_shape_dtype(img: np.ndarray) -> None:
    t = RandomBlur(p=1.0, seed=0)
    for _ in range(5):
        out = t(image=img)["image"]
        assert out.shape == img.shape and out.dtype == img.dtype
        assert not np.array_equal(out, img)
        assert t.last_params["kind"] in ("gaussian", "lens", "motion")


def test_force_apply_overrides_p(img: np.ndarray) -> None:
    t = RandomBlur(p=0.0, seed=0)
    assert not np.array_equal(t(image=img, force_apply=True)["image"], img)
    assert t.last_params is not None


def test_p_is_the_fraction_blurred() -> None:
    t = RandomBlur(p=0.3, seed=1)
    drawn = [t.draw() is not None for _ in range(1000)]
    assert 0.25 < np.mean(drawn) < 0.35


def test_same_seed_same_draws_and_images(img: np.ndarray) -> None:
    a, b = RandomBlur(kinds=None, seed=5), RandomBlur(kinds=None, seed=5)
    outs = []
    for _ in range(6):
        oa, ob = a(image=img)["image"], b(image=img)["image"]
        assert a.last_params == b.last_params
        assert np.array_equal(oa, ob)
        outs.append(a.last_params)
    c = RandomBlur(kinds=None, seed=6)
    assert [c(image=img) and c.last_params for _ in range(6)] != outs


def test_rng_argument_and_reseed(img: np.ndarray) -> None:
    a = RandomBlur(p=1.0, rng=np.random.default_rng(9))
    b = RandomBlur(p=1.0, seed=9)
    assert [a.draw() for _ in range(3)] == [b.draw() for _ in range(3)]
    a.reseed(4)
    b.reseed(np.random.default_rng(4))
    assert a.draw() == b.draw()
    # a pickled copy (what a DataLoader worker receives) continues the same stream
    c = pickle.loads(pickle.dumps(a))
    assert c.draw() == a.draw()


def test_last_params_replay_exactly(img: np.ndarray) -> None:
    t = RandomBlur(kinds=None, p=1.0, seed=2)
    for _ in range(8):
        out = t(image=img)["image"]
        assert np.array_equal(t.apply(img, t.last_params), out)
        spec = spec_from_dict(t.last_params)
        assert np.array_equal(apply_blur(img, spec), out)


def test_all_kinds_when_none() -> None:
    t = RandomBlur(kinds=None, p=1.0, seed=3)
    expected = {k.spec.model_fields["kind"].default for k in BLUR_KINDS.values()}
    assert {t.draw().kind for _ in range(300)} == expected


def test_ranges_override_the_samplers() -> None:
    t = RandomBlur(
        kinds=["gaussian", "motion"],
        p=1.0,
        ranges={"gaussian": {"sigma": 2.5}, "motion": {"length": (7, 8), "angle": [0.0, 90.0]}},
        seed=0,
    )
    for _ in range(40):
        spec = t.draw()
        if spec.kind == "gaussian":
            assert spec.sigma == 2.5
        else:
            assert 7 <= spec.length <= 8 and spec.angle in (0.0, 90.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kinds": ["blurry"]}, "Unknown blur kind"),
        ({"p": 1.5}, "p"),
        ({"kinds": ["lens"], "ranges": {"gaussian": {"sigma": 2}}}, "not among the drawn"),
        ({"kinds": ["lens"], "ranges": {"lens": {"radius": (5, 2)}}}, "low 5"),
        ({"kinds": ["lens"], "ranges": {"lens": {"colour": 1}}}, "colour"),
        ({"seed": 1, "rng": np.random.default_rng(1)}, "either seed or rng"),
        ({"seed": "one"}, "seed"),
    ],
)
def test_bad_settings_raise_parameter_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        RandomBlur(**kwargs)


def test_bad_calls_raise_input_error(img: np.ndarray) -> None:
    t = RandomBlur(p=1.0, seed=0)
    with pytest.raises(InputError, match="named arguments"):
        t(img)
    with pytest.raises(InputError, match="No image"):
        t(mask=img)
    with pytest.raises(InputError, match="dtype"):
        t(image=img.astype(np.int32))
    with pytest.raises(InputError, match="float32"):
        t(image=img.astype(np.float64))
    with pytest.raises(InputError, match="shape"):
        t(image=img[..., :2].astype(np.float32))


def test_grey_rgba_uint16_and_float_images(img: np.ndarray) -> None:
    spec = make_spec("lens", radius=3.0)
    t = RandomBlur(p=1.0, seed=0)
    grey = img[..., 0].copy()
    assert t.apply(grey, spec).shape == grey.shape
    rgba = np.dstack([img, np.arange(img[..., 0].size, dtype=np.uint8).reshape(img.shape[:2])])
    out = t.apply(rgba, spec)
    assert np.array_equal(out[..., 3], rgba[..., 3])
    assert np.array_equal(out[..., :3], t.apply(img, spec))
    wide = img.astype(np.uint16) * 257
    assert t.apply(wide, spec).dtype == np.uint16
    assert np.abs(t.apply(wide, spec) / 257.0 - t.apply(img, spec)).max() <= 1.0
    f = img.astype(np.float32) / 255
    out_f = blur_array(f, spec)
    assert out_f.dtype == np.float32 and out_f.shape == f.shape
    assert np.abs(out_f * 255 - t.apply(img, spec)).max() <= 0.5 + 1e-3
    assert blur_array(f[..., 0], spec).shape == f.shape[:2]


# ---------------------------------------------------------------------------------------------
# RandomBlurRegion


def test_region_mask_is_ground_truth(img: np.ndarray) -> None:
    given = np.full(img.shape[:2], 7, np.uint8)
    t = RandomBlurRegion(kinds=None, seed=0)
    for _ in range(6):
        out = t(image=img, mask=given, tag="x")
        assert set(out) == {"image", "mask", "tag", "blur_mask"}
        assert out["mask"] is given and out["tag"] == "x"
        bm = out["blur_mask"]
        assert bm.dtype == np.uint8 and bm.shape == img.shape[:2]
        assert set(np.unique(bm)) <= {0, 255} and (bm == 255).any()
        outside = bm == 0
        assert np.array_equal(out["image"][outside], img[outside])
        assert not np.array_equal(out["image"][~outside], img[~outside])
        polygons = [[tuple(p) for p in poly] for poly in t.last_params["polygons"]]
        assert np.array_equal(rasterize(polygons, *img.shape[:2]), bm == 255)


def test_region_replay_and_determinism(img: np.ndarray) -> None:
    masks = PolygonMaskSampler(count=(2, 3), feather=2.0)
    a = RandomBlurRegion(masks=masks, seed=11)
    b = RandomBlurRegion(masks=masks, seed=11)
    for _ in range(4):
        oa, ob = a(image=img), b(image=img)
        assert a.last_params == b.last_params and a.last_params["feather"] == 2.0
        assert np.array_equal(oa["image"], ob["image"])
        image, mask = a.apply(img, a.last_params)
        assert np.array_equal(image, oa["image"]) and np.array_equal(mask, oa["blur_mask"])
        assert set(np.unique(oa["blur_mask"])) <= {0, 255}


def test_region_p0_and_custom_key(img: np.ndarray) -> None:
    t = RandomBlurRegion(p=0.0, mask_key="gt", seed=0)
    out = t(image=img)
    assert np.array_equal(out["image"], img) and not out["gt"].any()
    assert out["gt"].dtype == np.uint8 and t.last_params is None
    with pytest.raises(ParameterError, match="mask_key"):
        RandomBlurRegion(mask_key="image")


def test_region_on_float_and_rgba(img: np.ndarray) -> None:
    t = RandomBlurRegion(seed=3)
    f = img.astype(np.float32) / 255
    out = t(image=f)
    outside = out["blur_mask"] == 0
    assert out["image"].dtype == np.float32
    assert np.array_equal(out["image"][outside], f[outside])
    rgba = np.dstack([img, np.full(img.shape[:2], 200, np.uint8)])
    out = t(image=rgba)
    assert out["image"].shape == rgba.shape and (out["image"][..., 3] == 200).all()


# ---------------------------------------------------------------------------------------------
# albumentations


def test_inside_albumentations_compose(img: np.ndarray) -> None:
    A = pytest.importorskip("albumentations")
    blur = RandomBlur(p=1.0, seed=0)
    pipeline = A.Compose(
        [A.HorizontalFlip(p=1.0), A.Lambda(image=blur.blur_image, name="histoblur_blur")],
        seed=0,
    )
    mask = (np.arange(img.shape[1]) < 10)[None].repeat(img.shape[0], 0).astype(np.uint8)
    out = pipeline(image=img, mask=mask)
    flipped = np.ascontiguousarray(img[:, ::-1])
    assert blur.last_params is not None
    assert np.array_equal(out["image"], blur.apply(flipped, blur.last_params))
    assert np.array_equal(out["mask"], mask[:, ::-1])  # the mask only follows the flip


def test_region_before_albumentations_compose(img: np.ndarray) -> None:
    A = pytest.importorskip("albumentations")
    region = RandomBlurRegion(seed=1)
    pipeline = A.Compose([A.HorizontalFlip(p=1.0)], additional_targets={"blur_mask": "mask"})
    blurred = region(image=img)
    out = pipeline(**blurred)
    assert np.array_equal(out["image"], blurred["image"][:, ::-1])
    assert np.array_equal(out["blur_mask"], blurred["blur_mask"][:, ::-1])


# ---------------------------------------------------------------------------------------------
# TorchRandomBlur


def _batch(img: np.ndarray, device: str = "cpu") -> torch.Tensor:
    stack = np.stack([img, img[::-1].copy(), img[:, ::-1].copy(), img])
    return torch.from_numpy(stack).permute(0, 3, 1, 2).float().div(255).to(device)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_random_blur_matches_apply_blur(img: np.ndarray, device: str) -> None:
    x = _batch(img, device)
    t = TorchRandomBlur(kinds=None, p=1.0, generator=0)
    out = t(x)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert t.last_params is not None and len(t.last_params) == 4
    ref_in = (x * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    for i, params in enumerate(t.last_params):
        ref = apply_blur(ref_in[i], spec_from_dict(params)).astype(np.float32) / 255
        got = out[i].permute(1, 2, 0).cpu().numpy()
        assert np.abs(got - ref).max() <= 1 / 255
    assert torch.equal(t.apply(x, t.last_params), out)


def test_torch_random_blur_probability_and_replay(img: np.ndarray) -> None:
    x = _batch(img)
    assert torch.equal(TorchRandomBlur(p=0.0, generator=0)(x), x)
    t = TorchRandomBlur(p=0.5, generator=np.random.default_rng(3))
    seen = []
    for _ in range(5):
        out = t(x)
        for i, params in enumerate(t.last_params):
            if params is None:
                assert torch.equal(out[i], x[i])
            seen.append(params is None)
        assert torch.equal(t.apply(x, t.last_params), out)
    assert any(seen) and not all(seen)


def test_torch_random_blur_generators_are_deterministic(img: np.ndarray) -> None:
    x = _batch(img).double()
    runs = []
    for _ in range(2):
        t = TorchRandomBlur(kinds=None, p=0.7, generator=torch.Generator().manual_seed(5))
        runs.append([(t(x), t.last_params) for _ in range(2)])
    for (a, pa), (b, pb) in zip(*runs, strict=True):
        assert pa == pb and torch.equal(a, b) and a.dtype == torch.float64
    seeded = TorchRandomBlur(p=1.0, generator=4)
    again = TorchRandomBlur(p=1.0, generator=np.random.default_rng(4))
    seeded(x), again(x)
    assert seeded.last_params == again.last_params
    single = TorchRandomBlur(p=1.0, generator=0)
    assert single(x[0]).shape == x[0].shape and len(single.last_params) == 1
    assert "kinds=" in repr(single) and not list(single.parameters())
    with pytest.raises(InputError, match="tensor"):
        single(img)


def test_torch_same_on_batch_shares_one_draw(img: np.ndarray) -> None:
    x = torch.from_numpy(np.stack([img] * 4)).permute(0, 3, 1, 2).float().div(255)
    t = TorchRandomBlur(kinds=None, p=0.5, generator=0, same_on_batch=True)
    applied = []
    for _ in range(8):
        out = t(x)
        assert all(p == t.last_params[0] for p in t.last_params)
        assert all(torch.equal(out[0], out[i]) for i in range(1, 4))
        applied.append(t.last_params[0] is not None)
        # one call for the batch gives the per-sample executor's pixels
        assert torch.equal(
            out, blur_batch(x, [t.last_params[0] and spec_from_dict(t.last_params[0])] * 4)
        )
    assert any(applied) and not all(applied)
    assert "same_on_batch=True" in repr(t)
    one = TorchRandomBlur(p=1.0, generator=0, same_on_batch=True)
    assert one(x[0]).shape == x[0].shape and len(one.last_params) == 1


def test_torch_parameters_replay_on_image_and_target(img: np.ndarray) -> None:
    x = _batch(img)
    target = x[:, :1] * 0.5  # a one-channel target batch of the same size
    for same in (False, True):
        t = TorchRandomBlur(
            kinds=None, p=0.8, generator=torch.Generator().manual_seed(1), same_on_batch=same
        )
        params = t.forward_parameters(x.shape)
        assert len(params) == 4 and t.last_params is None  # drawing does not blur
        out = t(x, params)
        assert t.last_params == params
        assert torch.equal(t(x, params), out) and torch.equal(t.apply(x, params), out)
        specs = [None if p is None else spec_from_dict(p) for p in params]
        assert torch.equal(t(target, params), blur_batch(target, specs))
        assert torch.equal(out, blur_batch(x, specs))
        assert len(t.forward_parameters(x[0].shape)) == 1


def test_torch_forward_parameters_follow_the_generator(img: np.ndarray) -> None:
    x = _batch(img)
    a = TorchRandomBlur(p=0.7, generator=3)
    b = TorchRandomBlur(p=0.7, generator=3)
    params = a.forward_parameters(x.shape)
    out = b(x)  # the same generator state: forward draws what forward_parameters drew
    assert b.last_params == params and torch.equal(a(x, params), out)
    with pytest.raises(InputError, match="one spec or None per sample"):
        a(x, params[:2])
    with pytest.raises(InputError, match="one spec or None per sample"):
        a(x, params[0] or {"kind": "gaussian"})
    with pytest.raises(InputError, match="batch_shape"):
        a.forward_parameters((4, 32))
    with pytest.raises(ParameterError, match="same_on_batch"):
        TorchRandomBlur(same_on_batch=1)


def test_importing_histoblur_does_not_need_albumentations() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['albumentations'] = None\n"
        "import histoblur, histoblur.synthesis, histoblur.synthesis.augment\n"
        "try:\n"
        "    import histoblur.synthesis.albumentations\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "pip install histoblur[albumentations]" in done.stdout
