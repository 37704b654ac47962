"""Native albumentations 2.x transforms for every blur kind of the registry.

Two transforms that go straight into ``A.Compose`` and ``A.ReplayCompose``:

* :class:`HistoBlur` (an ``ImageOnlyTransform``): blurs the whole image with probability ``p``;
* :class:`HistoBlurRegion` (a ``DualTransform``): blurs inside random polygons and writes the
  polygons into the ``mask`` target (255 inside, the given mask elsewhere), so spatial
  transforms later in the pipeline move the ground truth with the image.

Both are thin wrappers over :mod:`histoblur.synthesis.augment`: the same configuration
(``kinds``, ``ranges``, polygon ``masks``), the same draws (a uniform kind, then its sampler's
spec, then the polygons) and the same functional core (:func:`~histoblur.synthesis.augment.
blur_array`, :func:`~histoblur.synthesis.augment.blur_region`). Randomness follows
albumentations: ``Compose(seed=...)`` (or ``set_random_seed``) seeds the transform, the coin
``< p`` comes from its ``py_random``, the spec and polygons from its ``random_generator``.
``get_params`` draws the parameters (plain JSON values: the spec dict, polygon vertices), the
``apply`` methods only replay them, so ``ReplayCompose`` records and replays them exactly and
``additional_targets`` images get the very same blur.

Serialisation: ``A.to_dict`` writes plain JSON; ``A.from_dict`` finds the classes once this
module is imported. In a saved ``ranges``, a ``(low, high)`` range is written
``{"range": [low, high]}`` and a list of choices ``{"choices": [...]}`` (JSON has no tuples);
both forms are accepted as arguments too.

This module needs the optional extra: ``pip install histoblur[albumentations]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import ValidationError

from histoblur.errors import InputError, ParameterError, describe_validation
from histoblur.synthesis.augment import (
    _as_spec,
    _config,
    _region_params,
    _sample_spec,
    blur_array,
    blur_region,
    region_mask,
)
from histoblur.synthesis.masks import PolygonMaskSampler

_MISSING = (
    "histoblur.synthesis.albumentations needs albumentations 2.x; install it with "
    "`pip install histoblur[albumentations]`."
)
try:
    import albumentations as A  # noqa: N812 (the usual albumentations alias)
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(_MISSING) from exc
if int(A.__version__.split(".")[0]) < 2:  # pragma: no cover
    raise ImportError(f"{_MISSING} (found albumentations {A.__version__})")

__all__ = ["HistoBlur", "HistoBlurRegion", "decode_ranges", "encode_ranges"]

DEFAULT_KINDS = ("gaussian", "lens", "motion")


def _plain(value: Any) -> Any:
    """A JSON scalar for a numpy scalar; other values as given."""
    return value.item() if isinstance(value, np.generic) else value


def encode_ranges(ranges: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Sampler overrides as plain JSON: ``(lo, hi)`` -> ``{"range": [lo, hi]}``, lists -> choices.

    Args:
        ranges: per-kind overrides as :class:`~histoblur.synthesis.augment.RandomBlur` takes
            them (a tuple pair is a range, a list a set of choices, a scalar a fixed value), or
            already encoded.

    Returns:
        The same overrides with tagged ranges and choices, unchanged by a JSON round trip.

    Raises:
        ParameterError: for a malformed tagged value.

    Examples:
        >>> encode_ranges({"lens": {"radius": (2, 6)}, "motion": {"angle": [0.0, 90.0]}})
        {'lens': {'radius': {'range': [2, 6]}}, 'motion': {'angle': {'choices': [0.0, 90.0]}}}
    """
    out: dict[str, dict[str, Any]] = {}
    for kind, fields in decode_ranges(ranges).items():
        own: dict[str, Any] = {}
        for name, value in fields.items():
            if isinstance(value, tuple):
                own[name] = {"range": [_plain(v) for v in value]}
            elif isinstance(value, list):
                own[name] = {"choices": [_plain(v) for v in value]}
            else:
                own[name] = _plain(value)
        out[str(kind)] = own
    return out


def decode_ranges(ranges: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Sampler overrides for :func:`~histoblur.synthesis.augment.RandomBlur`'s ``ranges``.

    ``{"range": [lo, hi]}`` becomes the pair ``(lo, hi)`` and ``{"choices": [...]}`` a list;
    tuples, lists and scalars are kept.

    Raises:
        ParameterError: for ranges that are not a mapping of mappings, or a malformed tag.

    Examples:
        >>> decode_ranges({"lens": {"radius": {"range": [2, 6]}}})
        {'lens': {'radius': (2, 6)}}
    """
    if ranges is None:
        return {}
    if not isinstance(ranges, Mapping) or not all(isinstance(v, Mapping) for v in ranges.values()):
        raise ParameterError(
            "ranges must map blur kinds to parameter overrides, e.g. "
            '{"lens": {"radius": {"range": [2, 6]}}}.'
        )
    out: dict[str, dict[str, Any]] = {}
    for kind, fields in ranges.items():
        own: dict[str, Any] = {}
        for name, value in fields.items():
            own[name] = _decode_value(f"{kind}.{name}", value)
        out[kind] = own
    return out


def _decode_value(where: str, value: Any) -> Any:
    if not isinstance(value, Mapping):
        return value
    if set(value) == {"range"} and isinstance(value["range"], (list, tuple)):
        if len(value["range"]) != 2:
            raise ParameterError(f"Range {where} needs two values, [low, high].")
        return tuple(value["range"])
    if set(value) == {"choices"} and isinstance(value["choices"], (list, tuple)):
        return list(value["choices"])
    raise ParameterError(
        f"Parameter {where} is a mapping {dict(value)!r}; write a range as "
        '{"range": [low, high]} and choices as {"choices": [a, b, ...]}.'
    )


def _masks(masks: PolygonMaskSampler | Mapping[str, Any] | None) -> PolygonMaskSampler:
    if masks is None:
        return PolygonMaskSampler()
    if isinstance(masks, PolygonMaskSampler):
        return masks
    if not isinstance(masks, Mapping):
        raise ParameterError(
            f"masks must be a PolygonMaskSampler or a mapping of its fields, got {masks!r}."
        )
    try:
        return PolygonMaskSampler.model_validate(dict(masks))
    except ValidationError as exc:
        raise ParameterError(describe_validation(exc, "polygon mask setting", every=True)) from None


class HistoBlur(A.ImageOnlyTransform):
    """Blur the whole image with a random histoblur spec, as an albumentations transform.

    With probability ``p`` a kind is drawn uniformly from ``kinds`` and its sampler (overridden by
    ``ranges``) draws the spec, exactly as :class:`~histoblur.synthesis.augment.RandomBlur`
    does; the image and every ``additional_targets`` image get that spec. Masks, boxes and
    keypoints are not touched (blur moves nothing).

    Args:
        kinds: registry names drawn uniformly (:func:`~histoblur.synthesis.kind_names`); None
            draws from every kind (saved as the resolved list).
        ranges: per-kind sampler overrides, e.g. ``{"lens": {"radius": (2, 5)}}`` (a pair is a
            range, a list a set of choices, a scalar fixes the parameter), or the tagged JSON
            form of :func:`encode_ranges`.
        p: probability that the image is blurred.

    Attributes:
        kinds: the drawn kinds (a list of names).
        ranges: the overrides in their JSON form (:func:`encode_ranges`).

    Targets:
        image, images, volume, volumes

    Image types:
        uint8, uint16, float32; (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) (alpha kept).

    Raises:
        ParameterError: for an unknown kind, ``p`` outside [0, 1] or an invalid range.

    Examples:
        >>> import albumentations as A
        >>> import numpy as np
        >>> image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        >>> t = A.ReplayCompose([HistoBlur(kinds=["gaussian"], p=1.0)])
        >>> t.set_random_seed(0)  # ReplayCompose takes no seed argument
        >>> out = t(image=image)
        >>> out["image"].shape, out["replay"]["transforms"][0]["params"]["blur"]["kind"]
        ((32, 32, 3), 'gaussian')
        >>> again = A.ReplayCompose.replay(out["replay"], image=image)
        >>> bool(np.array_equal(again["image"], out["image"]))
        True
    """

    def __init__(
        self,
        kinds: Sequence[str] | None = DEFAULT_KINDS,
        ranges: Mapping[str, Mapping[str, Any]] | None = None,
        p: float = 0.5,
    ) -> None:
        config, samplers = _config(kinds, p, decode_ranges(ranges))  # validates p first
        super().__init__(p=p)
        self.config, self._samplers = config, samplers
        self.kinds = list(self.config.kinds)
        self.ranges = encode_ranges(self.config.ranges)

    def get_params(self) -> dict[str, Any]:
        """Draw the spec from ``random_generator``: ``{"blur": spec dict}``."""
        return {
            "blur": _sample_spec(self.config, self._samplers, self.random_generator).model_dump()
        }

    def apply(self, img: np.ndarray, blur: Mapping[str, Any], **params: Any) -> np.ndarray:
        """Blur ``img`` with the drawn spec (:func:`~histoblur.synthesis.augment.blur_array`)."""
        return blur_array(img, blur)


class HistoBlurRegion(A.DualTransform):
    """Blur random polygons of the image and write them into the mask, as albumentations does.

    With probability ``p`` a spec is drawn as :class:`HistoBlur` draws it, then polygons
    (``masks``) for the image's size, exactly as
    :class:`~histoblur.synthesis.augment.RandomBlurRegion` does. The image (and every
    ``additional_targets`` image) is blurred, then pasted back inside the polygons (edges
    softened by the ``feather`` sigma). The ``mask_key`` target, a uint8 (H, W) array that must
    be passed in (start from ``np.zeros((H, W), np.uint8)``), is set to 255 inside the polygons
    and kept elsewhere: from an empty mask it is RandomBlurRegion's ``blur_mask`` (all 0 when the
    transform does not blur), and chained regional blurs add up. Other masks, boxes and keypoints
    are returned unchanged.

    Args:
        kinds: registry names drawn uniformly; None draws from every kind.
        ranges: per-kind sampler overrides (see :class:`HistoBlur`).
        masks: polygon ranges: a :class:`~histoblur.synthesis.masks.PolygonMaskSampler` or a
            mapping of its fields (count, size, vertices, jitter, feather); saved as a mapping.
        mask_key: the mask target that receives the blurred polygons (``"mask"``, or a key
            declared as a mask in ``additional_targets``).
        p: probability that the image gets blurred regions.

    Targets:
        image, images, mask, masks, bboxes, keypoints, volume, volumes

    Image types:
        uint8, uint16, float32; (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) (alpha kept).

    Raises:
        ParameterError: for an unknown kind, ``p`` outside [0, 1], an invalid range or polygon
            setting, or a ``mask_key`` that is not a mask name.

    Examples:
        >>> import albumentations as A
        >>> import numpy as np
        >>> image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        >>> t = A.Compose([HistoBlurRegion(kinds=["lens"]), A.HorizontalFlip(p=1.0)], seed=0)
        >>> out = t(image=image, mask=np.zeros((32, 32), np.uint8))
        >>> out["image"].shape, out["mask"].dtype, np.unique(out["mask"]).tolist()
        ((32, 32, 3), dtype('uint8'), [0, 255])
        >>> outside = out["mask"] == 0  # feather=0: pixels outside the polygons are unchanged
        >>> bool(np.array_equal(out["image"][outside], image[:, ::-1][outside]))
        True
    """

    def __init__(
        self,
        kinds: Sequence[str] | None = DEFAULT_KINDS,
        ranges: Mapping[str, Mapping[str, Any]] | None = None,
        masks: PolygonMaskSampler | Mapping[str, Any] | None = None,
        mask_key: str = "mask",
        p: float = 1.0,
    ) -> None:
        config, samplers = _config(kinds, p, decode_ranges(ranges))  # validates p first
        super().__init__(p=p)
        self.config, self._samplers = config, samplers
        self._masks = _masks(masks)
        if not isinstance(mask_key, str) or not mask_key or mask_key in ("image", "images"):
            raise ParameterError(
                f"mask_key must name a mask target such as 'mask', got {mask_key!r}."
            )
        self.kinds = list(self.config.kinds)
        self.ranges = encode_ranges(self.config.ranges)
        self.masks = self._masks.model_dump(mode="json")
        self.mask_key = mask_key

    def __call__(self, *args: Any, force_apply: bool = False, **data: Any) -> Any:
        """Run the transform; the ``mask_key`` target must be given (it receives the polygons)."""
        if self.mask_key not in data:
            raise InputError(
                f"HistoBlurRegion writes its blur mask into the {self.mask_key!r} target; pass "
                f"one, e.g. {self.mask_key}=np.zeros(image.shape[:2], np.uint8)."
            )
        return super().__call__(*args, force_apply=force_apply, **data)

    def get_params(self) -> dict[str, Any]:
        """Draw the spec from ``random_generator``: ``{"blur": spec dict}``."""
        return {
            "blur": _sample_spec(self.config, self._samplers, self.random_generator).model_dump()
        }

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        """Draw the polygons for the image size: ``{"blur", "polygons", "feather"}``."""
        height, width = params["shape"][:2]
        spec = _as_spec(params["blur"])
        return _region_params(spec, self._masks, self.random_generator, height, width)

    def apply(
        self,
        img: np.ndarray,
        blur: Mapping[str, Any],
        polygons: list[list[list[float]]],
        feather: float,
        **params: Any,
    ) -> np.ndarray:
        """Blur ``img`` inside the polygons (:func:`~histoblur.synthesis.augment.blur_region`)."""
        return blur_region(img, {"blur": blur, "polygons": polygons, "feather": feather})[0]

    def apply_to_mask(self, mask: np.ndarray, *args: Any, **params: Any) -> np.ndarray:
        """Masks other than ``mask_key`` are unchanged (blur moves nothing)."""
        return mask

    def apply_to_bboxes(self, bboxes: np.ndarray, *args: Any, **params: Any) -> np.ndarray:
        """Boxes are unchanged."""
        return bboxes

    def apply_to_keypoints(self, keypoints: np.ndarray, *args: Any, **params: Any) -> np.ndarray:
        """Keypoints are unchanged."""
        return keypoints

    def apply_with_params(
        self, params: dict[str, Any], *args: Any, **kwargs: Any
    ) -> dict[str, Any]:
        """Apply to every target, then set the ``mask_key`` target to 255 inside the polygons."""
        out = super().apply_with_params(params, *args, **kwargs)
        if out.get(self.mask_key) is not None:
            out[self.mask_key] = self._write_mask(out[self.mask_key], params)
        return out

    def _write_mask(self, mask: Any, params: Mapping[str, Any]) -> np.ndarray:
        height, width = params["shape"][:2]
        if (
            not isinstance(mask, np.ndarray)
            or mask.dtype != np.uint8
            or mask.shape
            != (
                height,
                width,
            )
        ):
            got = (
                f"{mask.dtype} {mask.shape}"
                if isinstance(mask, np.ndarray)
                else type(mask).__name__
            )
            raise InputError(
                f"The {self.mask_key!r} target must be a uint8 ({height}, {width}) array "
                f"(e.g. np.zeros(image.shape[:2], np.uint8)); got {got}."
            )
        out = mask.copy()
        out[region_mask(params, height, width) > 0] = 255
        return out
