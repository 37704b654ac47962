"""Native albumentations transforms: every kind, seeds, replay, extra targets, serialisation."""

from __future__ import annotations

import json

import numpy as np
import pytest

A = pytest.importorskip("albumentations")

from histoblur.errors import InputError, ParameterError  # noqa: E402
from histoblur.synthesis import get_kind, kind_names, make_spec, spec_from_dict  # noqa: E402
from histoblur.synthesis.albumentations import (  # noqa: E402
    HistoBlur,
    HistoBlurRegion,
    decode_ranges,
    encode_ranges,
)
from histoblur.synthesis.augment import (  # noqa: E402
    RandomBlurRegion,
    blur_array,
    region_mask,
)


@pytest.fixture(scope="module")
def img(ihc: np.ndarray) -> np.ndarray:
    """32 x 32 RGB uint8 crop with texture everywhere."""
    return ihc[200:232, 180:212].copy()


@pytest.fixture(scope="module")
def other(ihc: np.ndarray) -> np.ndarray:
    """Another 32 x 32 crop, for additional targets."""
    return ihc[300:332, 100:132].copy()


def _zeros(image: np.ndarray) -> np.ndarray:
    return np.zeros(image.shape[:2], np.uint8)


def _params(out: dict) -> dict:
    """Parameters of the first transform of a ReplayCompose result."""
    return out["replay"]["transforms"][0]["params"]


def _replay(transform: A.BasicTransform, seed: int, **kw: object) -> A.ReplayCompose:
    pipeline = A.ReplayCompose([transform], **kw)
    pipeline.set_random_seed(seed)
    return pipeline


# ---------------------------------------------------------------------------------------------
# HistoBlur


@pytest.mark.parametrize("kind", kind_names())
def test_every_registry_kind_runs_in_compose(img: np.ndarray, kind: str) -> None:
    t = HistoBlur(kinds=[kind], p=1.0)
    out = A.Compose([t], seed=0)(image=img)["image"]
    spec = spec_from_dict(t.params["blur"])
    assert isinstance(spec, get_kind(kind).spec)
    assert out.shape == img.shape and out.dtype == img.dtype
    assert np.array_equal(out, blur_array(img, spec))


def test_compose_seed_decides_the_draws(img: np.ndarray) -> None:
    def run(seed: int) -> tuple[list[np.ndarray], list[dict]]:
        t = HistoBlur(kinds=None, p=0.7)
        pipeline = A.Compose([t], seed=seed)
        images, params = [], []
        for _ in range(8):
            images.append(pipeline(image=img)["image"])
            params.append(t.params.get("blur"))
        return images, params

    (a, pa), (b, pb), (c, pc) = run(3), run(3), run(4)
    assert pa == pb and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert pc != pa and any(not np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert any(p is None for p in pa + pc) and any(p is not None for p in pa + pc)


def test_p_is_albumentations_coin(img: np.ndarray) -> None:
    never = A.Compose([HistoBlur(p=0.0)], seed=0)
    assert np.array_equal(never(image=img)["image"], img)
    t = HistoBlur(kinds=["gaussian"], ranges={"gaussian": {"sigma": 1.0}}, p=0.3)
    pipeline = A.Compose([t], seed=1)
    blurred = [not np.array_equal(pipeline(image=img)["image"], img) for _ in range(200)]
    assert 0.2 < np.mean(blurred) < 0.4


def test_replay_is_bit_identical(img: np.ndarray) -> None:
    pipeline = A.ReplayCompose([A.HorizontalFlip(p=0.5), HistoBlur(kinds=None, p=1.0)])
    pipeline.set_random_seed(2)
    for _ in range(4):
        out = pipeline(image=img, mask=_zeros(img))
        record = json.loads(json.dumps(out["replay"]))  # plain JSON, e.g. saved beside a sample
        again = A.ReplayCompose.replay(record, image=img, mask=_zeros(img))
        assert np.array_equal(again["image"], out["image"])
        assert not np.array_equal(out["image"], img)


def test_additional_target_images_get_the_same_spec(img: np.ndarray, other: np.ndarray) -> None:
    pipeline = _replay(
        HistoBlur(kinds=None, p=1.0), 5, additional_targets={"copy": "image", "other": "image"}
    )
    for _ in range(3):
        out = pipeline(image=img, copy=img.copy(), other=other)
        assert np.array_equal(out["image"], out["copy"])
        spec = spec_from_dict(_params(out)["blur"])
        assert np.array_equal(out["other"], blur_array(other, spec))
        assert np.array_equal(out["image"], blur_array(img, spec))


def test_a_fixed_spec_matches_the_direct_api(img: np.ndarray) -> None:
    fixed = HistoBlur(kinds=["lens"], ranges={"lens": {"radius": 3.0}}, p=1.0)
    out = A.Compose([fixed], seed=0)(image=img)["image"]
    assert np.array_equal(out, blur_array(img, make_spec("lens", radius=3.0)))


def test_float_grey_and_batched_images(img: np.ndarray) -> None:
    t = HistoBlur(kinds=["gaussian"], p=1.0)
    pipeline = A.Compose([t], seed=0)
    f = img.astype(np.float32) / 255
    out = pipeline(image=f)["image"]
    assert out.dtype == np.float32 and np.array_equal(out, blur_array(f, t.params["blur"]))
    grey = img[..., 0].copy()
    assert pipeline(image=grey)["image"].shape == grey.shape
    batch = pipeline(images=np.stack([img, img]))["images"]
    assert batch.shape == (2, *img.shape) and np.array_equal(batch[0], batch[1])


def test_to_dict_from_dict_round_trip(img: np.ndarray) -> None:
    original = A.Compose(
        [
            HistoBlur(
                kinds=("lens", "motion"),
                ranges={"lens": {"radius": (2, 4)}, "motion": {"angle": [0.0, 90.0]}},
                p=0.8,
            )
        ]
    )
    saved = json.loads(json.dumps(A.to_dict(original)))  # through a JSON file
    restored = A.from_dict(saved)
    assert A.to_dict(restored) == saved
    a, b = original.transforms[0], restored.transforms[0]
    assert isinstance(b, HistoBlur) and b.p == 0.8 and b.kinds == ["lens", "motion"]
    # a range stays a range and choices stay choices through JSON
    assert b.config.ranges == {"lens": {"radius": (2, 4)}, "motion": {"angle": [0.0, 90.0]}}
    assert b._samplers == a._samplers
    original.set_random_seed(7), restored.set_random_seed(7)
    for _ in range(4):
        assert np.array_equal(original(image=img)["image"], restored(image=img)["image"])
        assert a.params == b.params


def test_ranges_encoding() -> None:
    ranges = {"aperture": {"radius": (2, 4), "blades": [5, 6], "rotation": 10.0}}
    encoded = encode_ranges(ranges)
    assert encoded == {
        "aperture": {"radius": {"range": [2, 4]}, "blades": {"choices": [5, 6]}, "rotation": 10.0}
    }
    assert decode_ranges(encoded) == ranges and encode_ranges(encoded) == encoded
    assert json.loads(json.dumps(encoded)) == encoded
    assert encode_ranges({"lens": {"radius": (np.float64(2), np.int64(4))}}) == {
        "lens": {"radius": {"range": [2.0, 4]}}
    }


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kinds": ["nope"]}, "Unknown blur kind"),
        ({"p": 1.5}, "p"),
        ({"ranges": {"gaussian": {"sigma": {"low": 1}}}}, "range"),
        ({"ranges": {"gaussian": {"sigma": {"range": [1, 2, 3]}}}}, "two values"),
        ({"ranges": {"lens": {"radius": (1, 2)}}, "kinds": ["gaussian"]}, "not among"),
        ({"ranges": {"gaussian": 3}}, "map blur kinds"),
    ],
)
def test_bad_settings_raise_parameter_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        HistoBlur(**kwargs)
    with pytest.raises(ParameterError, match=match):
        HistoBlurRegion(**kwargs)


# ---------------------------------------------------------------------------------------------
# HistoBlurRegion


def test_region_mask_is_where_the_image_changed(img: np.ndarray) -> None:
    pipeline = _replay(HistoBlurRegion(kinds=None, masks={"count": (1, 2)}), 0)
    seen_blur = False
    for _ in range(6):
        out = pipeline(image=img, mask=_zeros(img))
        params = _params(out)
        mask = out["mask"]
        assert mask.dtype == np.uint8 and mask.shape == img.shape[:2]
        assert set(np.unique(mask)) <= {0, 255}
        assert np.array_equal(mask, region_mask(params, *img.shape[:2]))
        changed = (out["image"] != img).any(axis=2)
        assert not changed[mask == 0].any()  # feather 0: untouched outside
        seen_blur |= bool(changed[mask == 255].any())
        # the same parameters through the numpy wrapper give the same image and mask
        ref_image, ref_mask = RandomBlurRegion().apply(img, params)
        assert np.array_equal(ref_image, out["image"]) and np.array_equal(ref_mask, mask)
    assert seen_blur


def test_region_not_applied_keeps_the_mask(img: np.ndarray) -> None:
    out = A.Compose([HistoBlurRegion(p=0.0)], seed=0)(image=img, mask=_zeros(img))
    assert np.array_equal(out["image"], img) and not out["mask"].any()


def test_region_masks_add_up_and_follow_spatial_transforms(img: np.ndarray) -> None:
    first, second = HistoBlurRegion(kinds=["lens"]), HistoBlurRegion(kinds=["gaussian"])
    pipeline = A.ReplayCompose([first, second, A.HorizontalFlip(p=1.0)])
    pipeline.set_random_seed(1)
    out = pipeline(image=img, mask=_zeros(img))
    p1, p2 = (t["params"] for t in out["replay"]["transforms"][:2])
    union = np.maximum(region_mask(p1, 32, 32), region_mask(p2, 32, 32))
    assert np.array_equal(out["mask"], union[:, ::-1])


def test_region_replay_additional_targets_and_custom_key(
    img: np.ndarray, other: np.ndarray
) -> None:
    label = (np.arange(32)[:, None] < 10).repeat(32, 1).astype(np.uint8)
    pipeline = _replay(
        HistoBlurRegion(kinds=None, masks={"feather": 1.5}, mask_key="blur_mask"),
        3,
        additional_targets={"copy": "image", "other": "image", "blur_mask": "mask"},
    )
    for _ in range(3):
        data = {"image": img, "copy": img.copy(), "other": other, "mask": label}
        out = pipeline(**data, blur_mask=_zeros(img))
        params = _params(out)
        assert np.array_equal(out["image"], out["copy"])
        assert np.array_equal(out["other"], RandomBlurRegion().apply(other, params)[0])
        assert np.array_equal(out["mask"], label)  # other masks are untouched
        assert np.array_equal(out["blur_mask"], region_mask(params, 32, 32))
        again = A.ReplayCompose.replay(
            json.loads(json.dumps(out["replay"])), **data, blur_mask=_zeros(img)
        )
        for key in ("image", "other", "blur_mask", "mask"):
            assert np.array_equal(again[key], out[key])


def test_region_to_dict_from_dict_round_trip(img: np.ndarray) -> None:
    region = HistoBlurRegion(
        kinds=["motion"], ranges={"motion": {"length": (5, 9)}}, masks={"feather": 2.0}, p=0.9
    )
    original = A.Compose([region])
    saved = json.loads(json.dumps(A.to_dict(original)))
    restored = A.from_dict(saved)
    assert A.to_dict(restored) == saved
    b = restored.transforms[0]
    assert isinstance(b, HistoBlurRegion) and b._masks == region._masks
    original.set_random_seed(4), restored.set_random_seed(4)
    for _ in range(3):
        oa = original(image=img, mask=_zeros(img))
        ob = restored(image=img, mask=_zeros(img))
        assert np.array_equal(oa["image"], ob["image"]) and np.array_equal(oa["mask"], ob["mask"])


def test_region_bboxes_and_keypoints_pass_through(img: np.ndarray) -> None:
    pipeline = A.Compose(
        [HistoBlurRegion()],
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]),
        keypoint_params=A.KeypointParams(format="xy"),
        seed=0,
    )
    out = pipeline(
        image=img, mask=_zeros(img), bboxes=[[2, 3, 20, 25]], labels=[1], keypoints=[[4, 5]]
    )
    assert np.allclose(out["bboxes"], [[2, 3, 20, 25]]) and np.allclose(out["keypoints"], [[4, 5]])


def test_region_needs_a_uint8_mask_target(img: np.ndarray) -> None:
    with pytest.raises(InputError, match="mask=np.zeros"):
        HistoBlurRegion()(image=img)
    with pytest.raises(InputError, match="uint8"):
        HistoBlurRegion()(image=img, mask=np.zeros(img.shape[:2], np.float32))
    with pytest.raises(ParameterError, match="mask_key"):
        HistoBlurRegion(mask_key="image")
    with pytest.raises(ParameterError, match="polygon mask"):
        HistoBlurRegion(masks={"count": (0, 1)})
