"""Random blur as data augmentation: numpy pipeline callables and a torch module.

Three thin wrappers around the registry samplers and the two executors:

* :class:`RandomBlur`: albumentations-style callable on numpy images
  (``t(image=..., mask=..., ...) -> dict``); blurs the whole image with probability ``p``.
* :class:`RandomBlurRegion`: blurs only inside random polygons and returns the polygon mask under
  ``blur_mask`` (uint8 0/255), the on-the-fly version of the dataset builder.
* :class:`TorchRandomBlur`: ``nn.Module`` on float (B, C, H, W) tensors, one spec per sample, run
  on the tensor's device.

Each call draws from the wrapper's own ``numpy.random.Generator`` (made from ``seed`` or passed
in; never the global one): a uniform number decides whether the blur is applied (``< p``), then a
kind is chosen uniformly from ``kinds`` and its sampler draws the spec (and, for regions, the
polygons). The drawn parameters are kept in ``last_params`` and ``apply`` replays them exactly.

A generator copied into DataLoader worker processes repeats the same draws in every worker: give
each worker its own stream with :meth:`RandomBlur.reseed` in a ``worker_init_fn`` (see
docs/augmentation.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from histoblur.errors import InputError, ParameterError, describe_validation
from histoblur.io.images import merge_alpha, split_alpha
from histoblur.synthesis.blur import apply_blur
from histoblur.synthesis.composite import composite
from histoblur.synthesis.execute import execute
from histoblur.synthesis.masks import PolygonMaskSampler, mask_to_png, rasterize, soft_alpha
from histoblur.synthesis.registry import get_kind, kind_names, plan_for, spec_from_dict
from histoblur.synthesis.spec import BlurSpec, Sampler
from histoblur.synthesis.torch_ops import blur_batch

SpecLike = BlurSpec | Mapping[str, Any]


class RandomBlurConfig(BaseModel):
    """What a random blur draws.

    Attributes:
        kinds: registry names drawn uniformly (every kind when empty).
        p: probability that a sample is blurred.
        ranges: per-kind sampler overrides, e.g. ``{"gaussian": {"sigma": (1, 3)}}``; a scalar
            fixes that parameter, a pair is a range, a list is a set of choices.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    kinds: tuple[str, ...]
    p: float = Field(ge=0, le=1)
    ranges: dict[str, dict[str, Any]]

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, kinds: tuple[str, ...]) -> tuple[str, ...]:
        if not kinds:
            return tuple(kind_names())
        for name in kinds:
            get_kind(name)
        return kinds


def _config(
    kinds: Sequence[str] | None, p: float, ranges: Mapping[str, Mapping[str, Any]] | None
) -> tuple[RandomBlurConfig, dict[str, Sampler]]:
    """Validated config and one sampler per kind.

    Raises:
        ParameterError: for an unknown kind, a probability outside [0, 1], a range given for a
            kind that is not drawn, or an invalid range.
    """
    if isinstance(kinds, str):
        kinds = [kinds]
    try:
        config = RandomBlurConfig(
            kinds=tuple(kinds or ()),
            p=p,
            ranges={k: dict(v) for k, v in (ranges or {}).items()},
        )
    except ValidationError as exc:
        raise ParameterError(describe_validation(exc, "random blur setting")) from None
    extra = sorted(set(config.ranges) - set(config.kinds))
    if extra:
        raise ParameterError(
            f"Ranges are given for {', '.join(extra)}, which is not among the drawn kinds "
            f"({', '.join(config.kinds)})."
        )
    samplers = {k: get_kind(k).sampler.build(**config.ranges.get(k, {})) for k in config.kinds}
    return config, samplers


def _generator(
    seed: int | np.random.Generator | None, rng: np.random.Generator | None = None
) -> np.random.Generator:
    """The wrapper's own generator: ``rng`` as given, else a new one from ``seed``.

    Raises:
        ParameterError: if both are given.
    """
    if rng is not None and seed is not None:
        raise ParameterError("Give either seed or rng, not both.")
    if rng is not None:
        seed = rng
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise ParameterError(f"seed must be an integer or a numpy Generator, got {seed!r}.")
    return np.random.default_rng(seed)


def _draw_spec(
    config: RandomBlurConfig,
    samplers: dict[str, Sampler],
    rng: np.random.Generator,
    force: bool = False,
) -> BlurSpec | None:
    """One draw: None (not applied, probability 1 - p) or a spec of a uniformly chosen kind."""
    applied = rng.random() < config.p
    if not (applied or force):
        return None
    kind = config.kinds[int(rng.integers(len(config.kinds)))]
    return samplers[kind].sample(rng)


def _as_spec(spec: SpecLike) -> BlurSpec:
    return spec if isinstance(spec, BlurSpec) else spec_from_dict(dict(spec))


def blur_array(image: np.ndarray, spec: SpecLike) -> np.ndarray:
    """Blur a numpy image with ``spec``: uint8/uint16 as in ``apply_blur``, or float32 as is.

    Args:
        image: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array, uint8, uint16 or float32 (any
            range, typically [0, 1]; not clipped). An alpha channel is kept unchanged.
        spec: a blur spec, or its ``model_dump()`` dictionary.

    Returns:
        A new image with the input's shape and dtype.

    Raises:
        InputError: for an unsupported array.
    """
    spec = _as_spec(spec)
    if isinstance(image, np.ndarray) and image.dtype.kind == "f" and image.dtype != np.float32:
        raise InputError(f"The image has dtype {image.dtype}; convert float images to float32.")
    if not isinstance(image, np.ndarray) or image.dtype != np.float32:
        return apply_blur(image, spec)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise InputError(
            f"The image has shape {image.shape}; expected (H, W) or (H, W, C) with C in 1, 3, 4."
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"The image is empty (shape {image.shape}).")
    colour, alpha = split_alpha(image)
    f = colour[..., None] if colour.ndim == 2 else colour
    out = execute(plan_for(spec, f.shape[0], f.shape[1]), f)
    return merge_alpha(out[..., 0] if colour.ndim == 2 else out, alpha)


def _check_call(args: tuple[Any, ...], data: dict[str, Any]) -> np.ndarray:
    if args:
        raise InputError("Pass data as named arguments, for example t(image=image).")
    if "image" not in data:
        raise InputError("No image given; call the transform as t(image=image, ...).")
    return data["image"]


class RandomBlur:
    """Blur a whole numpy image with probability ``p``, albumentations style.

    ``t(image=img, mask=m, ...)`` returns a dict with every key passed in: ``image`` is blurred
    with probability ``p`` (same shape and dtype), every other target is returned unchanged.

    Args:
        kinds: blur kinds drawn uniformly (registry names); None draws from every kind.
        p: probability that an image is blurred.
        ranges: per-kind sampler overrides, e.g. ``{"lens": {"radius": (2, 5)}}``.
        seed: seed of the transform's own generator (None: fresh entropy).
        rng: a generator to draw from instead of ``seed``.

    Attributes:
        last_params: the spec drawn by the last call as a dict (``spec.model_dump()``), or None
            when that call did not blur.

    Raises:
        ParameterError: for an unknown kind, ``p`` outside [0, 1] or an invalid range.
    """

    def __init__(
        self,
        kinds: Sequence[str] | None = ("gaussian", "lens", "motion"),
        p: float = 0.5,
        ranges: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        seed: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.config, self._samplers = _config(kinds, p, ranges)
        self.rng = _generator(seed, rng)
        self.last_params: dict[str, Any] | None = None

    def reseed(self, seed: int | np.random.Generator) -> None:
        """Restart the draws from a new seed (e.g. one per DataLoader worker)."""
        self.rng = _generator(seed)

    def draw(self, force: bool = False) -> BlurSpec | None:
        """Draw the next spec (None when the coin says not to blur, unless ``force``)."""
        return _draw_spec(self.config, self._samplers, self.rng, force)

    def apply(self, image: np.ndarray, spec: SpecLike | None) -> np.ndarray:
        """Blur ``image`` with a given spec (or its dict); None returns the image unchanged."""
        return image if spec is None else blur_array(image, spec)

    def __call__(self, *args: Any, force_apply: bool = False, **data: Any) -> dict[str, Any]:
        """Blur ``data["image"]`` with probability ``p`` (always when ``force_apply``)."""
        image = _check_call(args, data)
        spec = self.draw(force=force_apply)
        self.last_params = None if spec is None else spec.model_dump()
        return {**data, "image": self.apply(image, spec)}

    def blur_image(self, image: np.ndarray, **_: Any) -> np.ndarray:
        """Draw and apply on one image, for ``albumentations.Lambda(image=t.blur_image)``."""
        return self(image=image)["image"]

    def __repr__(self) -> str:
        c = self.config
        return f"{type(self).__name__}(kinds={c.kinds}, p={c.p}, ranges={c.ranges})"


class RandomBlurRegion:
    """Blur numpy images inside random polygons and return the polygon mask as ground truth.

    ``t(image=img, mask=m, ...)`` returns every key passed in plus ``blur_mask`` (uint8 (H, W),
    255 inside the blurred polygons, 0 elsewhere, all 0 when the call did not blur): the image is
    blurred as a whole, then pasted back inside the polygons (edges softened by the mask
    sampler's ``feather`` sigma, so with ``feather > 0`` the blend reaches a few pixels beyond the
    mask). A given ``mask`` and every other target are returned unchanged.

    Args:
        kinds: blur kinds drawn uniformly (registry names); None draws from every kind.
        p: probability that an image gets blurred regions.
        ranges: per-kind sampler overrides, e.g. ``{"lens": {"radius": (2, 5)}}``.
        masks: polygon ranges (count, size, vertices, jitter, feather).
        mask_key: output key of the ground-truth mask.
        seed: seed of the transform's own generator (None: fresh entropy).
        rng: a generator to draw from instead of ``seed``.

    Attributes:
        last_params: ``{"blur": spec dict, "polygons": [[[x, y], ...], ...], "feather": sigma}``
            drawn by the last call, or None when it did not blur.

    Raises:
        ParameterError: for an unknown kind, ``p`` outside [0, 1] or an invalid range.
    """

    def __init__(
        self,
        kinds: Sequence[str] | None = ("gaussian", "lens", "motion"),
        p: float = 1.0,
        ranges: Mapping[str, Mapping[str, Any]] | None = None,
        masks: PolygonMaskSampler | None = None,
        mask_key: str = "blur_mask",
        *,
        seed: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.config, self._samplers = _config(kinds, p, ranges)
        self.masks = masks if masks is not None else PolygonMaskSampler()
        if mask_key == "image":
            raise ParameterError("mask_key cannot be 'image'; choose another output key.")
        self.mask_key = mask_key
        self.rng = _generator(seed, rng)
        self.last_params: dict[str, Any] | None = None

    def reseed(self, seed: int | np.random.Generator) -> None:
        """Restart the draws from a new seed (e.g. one per DataLoader worker)."""
        self.rng = _generator(seed)

    def draw(self, height: int, width: int, force: bool = False) -> dict[str, Any] | None:
        """Draw the next parameters for an image of the given size (None: not blurred)."""
        spec = _draw_spec(self.config, self._samplers, self.rng, force)
        if spec is None:
            return None
        polygons = self.masks.sample(self.rng, height, width)
        return {
            "blur": spec.model_dump(),
            "polygons": [[list(p) for p in poly] for poly in polygons],
            "feather": self.masks.feather,
        }

    def apply(
        self, image: np.ndarray, params: Mapping[str, Any] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Replay parameters on ``image``: (image, uint8 0/255 blur mask).

        Args:
            image: the image (see :func:`blur_array` for the accepted arrays).
            params: a ``last_params`` dictionary, or None for no blur.
        """
        if not isinstance(image, np.ndarray) or image.ndim < 2:
            raise InputError("The image must be a numpy array of shape (H, W) or (H, W, C).")
        h, w = image.shape[:2]
        if params is None:
            return image, np.zeros((h, w), np.uint8)
        mask = rasterize([[tuple(p) for p in poly] for poly in params["polygons"]], h, w)
        if not mask.any():
            return image, mask_to_png(mask)
        blurred = blur_array(image, params["blur"])
        alpha = soft_alpha(mask, float(params["feather"]))
        return _blend(image, blurred, alpha), mask_to_png(mask)

    def __call__(self, *args: Any, force_apply: bool = False, **data: Any) -> dict[str, Any]:
        """Blur random regions of ``data["image"]`` with probability ``p``; add the mask."""
        image = _check_call(args, data)
        if not isinstance(image, np.ndarray) or image.ndim < 2:
            raise InputError("The image must be a numpy array of shape (H, W) or (H, W, C).")
        params = self.draw(image.shape[0], image.shape[1], force=force_apply)
        self.last_params = params
        out, mask = self.apply(image, params)
        return {**data, "image": out, self.mask_key: mask}

    def __repr__(self) -> str:
        c = self.config
        return (
            f"{type(self).__name__}(kinds={c.kinds}, p={c.p}, ranges={c.ranges}, "
            f"masks={self.masks!r})"
        )


def _blend(sharp: np.ndarray, blurred: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Blurred inside, sharp outside; float images are blended without rounding."""
    if sharp.dtype != np.float32:
        return composite(sharp, blurred, alpha)
    a = alpha[..., None] if sharp.ndim == 3 else alpha
    return (sharp * (1 - a) + blurred * a).astype(np.float32)


class TorchRandomBlur(torch.nn.Module):
    """Random blur of float image batches on their own device (CPU or GPU).

    Each sample of a (B, C, H, W) batch (or a single (C, H, W) image) is blurred with
    probability ``p`` by its own spec, drawn like :class:`RandomBlur` and run by
    :func:`histoblur.synthesis.torch_ops.blur_batch`. Shape, dtype and device are preserved;
    values are not clipped (normalised non-negative kernels keep them in the input's range). The
    module has no parameters and blurs in both training and evaluation mode; the blur is
    differentiable with respect to the input.

    Args:
        kinds: blur kinds drawn uniformly (registry names); None draws from every kind.
        p: probability that a sample is blurred.
        ranges: per-kind sampler overrides, e.g. ``{"lens": {"radius": (2, 5)}}``.
        generator: where the draws come from: a ``torch.Generator`` (each call takes one 62-bit
            seed from it and draws that batch's specs from a numpy generator of that seed), a
            ``numpy.random.Generator``, an integer seed, or None (fresh entropy).

    Attributes:
        last_params: after a call, one entry per sample: the spec dict, or None for a sample
            left unchanged; None before the first call.

    Raises:
        ParameterError: for an unknown kind, ``p`` outside [0, 1] or an invalid range.
    """

    def __init__(
        self,
        kinds: Sequence[str] | None = ("gaussian", "lens", "motion"),
        p: float = 0.5,
        ranges: Mapping[str, Mapping[str, Any]] | None = None,
        generator: torch.Generator | np.random.Generator | int | None = None,
    ) -> None:
        super().__init__()
        self.config, self._samplers = _config(kinds, p, ranges)
        if isinstance(generator, torch.Generator):
            self.generator: torch.Generator | np.random.Generator = generator
        else:
            self.generator = _generator(generator)
        self.last_params: list[dict[str, Any] | None] | None = None

    def _batch_rng(self) -> np.random.Generator:
        if isinstance(self.generator, np.random.Generator):
            return self.generator
        g = self.generator
        seed = torch.randint(0, 2**62, (1,), generator=g, device=g.device).item()
        return np.random.default_rng(int(seed))

    def draw(self, batch: int) -> list[BlurSpec | None]:
        """Draw the specs of the next ``batch`` samples (None: sample left unchanged)."""
        rng = self._batch_rng()
        return [_draw_spec(self.config, self._samplers, rng) for _ in range(batch)]

    def apply(self, x: torch.Tensor, specs: Sequence[SpecLike | None]) -> torch.Tensor:
        """Replay per-sample specs (or ``last_params``) on a (B, C, H, W) or (C, H, W) tensor."""
        resolved = [None if s is None else _as_spec(s) for s in specs]
        if isinstance(x, torch.Tensor) and x.ndim == 3:
            return blur_batch(x.unsqueeze(0), resolved).squeeze(0)
        return blur_batch(x, resolved)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Blur each sample with probability ``p``; returns a new tensor."""
        if not isinstance(x, torch.Tensor) or x.ndim not in (3, 4):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"Expected a (B, C, H, W) or (C, H, W) tensor, got {shape}.")
        specs = self.draw(1 if x.ndim == 3 else x.shape[0])
        self.last_params = [None if s is None else s.model_dump() for s in specs]
        return self.apply(x, specs)

    def extra_repr(self) -> str:
        """Settings shown by ``print(module)``."""
        c = self.config
        return f"kinds={c.kinds}, p={c.p}, ranges={c.ranges}"
