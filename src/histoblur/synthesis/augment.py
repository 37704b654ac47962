"""Random blur as data augmentation: numpy pipeline callables and a torch module.

Three thin wrappers around the registry samplers and the two executors:

* :class:`RandomBlur`: albumentations-style callable on numpy images
  (``t(image=..., mask=..., ...) -> dict``); blurs the whole image with probability ``p``.
* :class:`RandomBlurRegion`: blurs only inside random polygons and returns the polygon mask under
  ``blur_mask`` (uint8 0/255), the on-the-fly version of the dataset builder.
* :class:`TorchRandomBlur`: ``nn.Module`` on float (B, C, H, W) tensors, one spec per sample (or
  one for the batch with ``same_on_batch=True``), run on the tensor's device; parameters can be
  drawn with ``forward_parameters`` and given back to ``forward``.

The pure functions under them, :func:`blur_array`, :func:`blur_region` and :func:`region_mask`,
replay drawn parameters; :mod:`histoblur.synthesis.albumentations` (optional extra) wraps the same
draws as native albumentations transforms.

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
from pydantic import Field, ValidationError, field_validator

from histoblur.config import Config
from histoblur.errors import InputError, ParameterError, describe_validation
from histoblur.io.images import merge_alpha, split_alpha
from histoblur.synthesis.blur import apply_blur
from histoblur.synthesis.composite import composite
from histoblur.synthesis.execute import execute
from histoblur.synthesis.masks import PolygonMaskSampler, mask_to_png, rasterize, soft_alpha
from histoblur.synthesis.registry import get_kind, kind_names, plan_for, spec_from_dict
from histoblur.synthesis.spec import BlurSpec, Sampler
from histoblur.synthesis.torch_ops import blur_batch, execute_torch

SpecLike = BlurSpec | Mapping[str, Any]


class RandomBlurConfig(Config):
    """What a random blur draws.

    Attributes:
        kinds: registry names drawn uniformly (every kind when empty).
        p: probability that a sample is blurred.
        ranges: per-kind sampler overrides, e.g. ``{"gaussian": {"sigma": (1, 3)}}``; a scalar
            fixes that parameter, a pair is a range, a list is a set of choices.
    """

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
    return _sample_spec(config, samplers, rng)


def _sample_spec(
    config: RandomBlurConfig, samplers: dict[str, Sampler], rng: np.random.Generator
) -> BlurSpec:
    """The spec of a draw that blurs: a uniformly chosen kind, then its sampler's draw."""
    kind = config.kinds[int(rng.integers(len(config.kinds)))]
    return samplers[kind].sample(rng)


def _region_params(
    spec: BlurSpec, masks: PolygonMaskSampler, rng: np.random.Generator, height: int, width: int
) -> dict[str, Any]:
    """Regional parameters: ``spec``, polygons drawn from ``rng`` and the feather sigma."""
    polygons = masks.sample(rng, height, width)
    return {
        "blur": spec.model_dump(),
        "polygons": [[list(p) for p in poly] for poly in polygons],
        "feather": masks.feather,
    }


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
        return _region_params(spec, self.masks, self.rng, height, width)

    def apply(
        self, image: np.ndarray, params: Mapping[str, Any] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Replay parameters on ``image``: (image, uint8 0/255 blur mask).

        Args:
            image: the image (see :func:`blur_array` for the accepted arrays).
            params: a ``last_params`` dictionary, or None for no blur.
        """
        return blur_region(image, params)

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


def region_mask(params: Mapping[str, Any] | None, height: int, width: int) -> np.ndarray:
    """The blur mask of regional parameters: uint8 (H, W), 255 inside the polygons, else 0.

    Args:
        params: ``{"blur": ..., "polygons": [[[x, y], ...], ...], "feather": ...}`` (a
            :class:`RandomBlurRegion` ``last_params``), or None for no blur (all 0).
        height: image height in pixels.
        width: image width in pixels.
    """
    if params is None:
        return np.zeros((height, width), np.uint8)
    polygons = [[tuple(p) for p in poly] for poly in params["polygons"]]
    return mask_to_png(rasterize(polygons, height, width))


def blur_region(
    image: np.ndarray, params: Mapping[str, Any] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Blur ``image`` inside the polygons of regional parameters: (image, uint8 0/255 mask).

    The whole image is blurred with ``params["blur"]``, then pasted back inside the polygons
    (edges softened by a Gaussian of sigma ``params["feather"]``); outside them, with
    ``feather=0``, pixels are unchanged.

    Args:
        image: the image (see :func:`blur_array` for the accepted arrays).
        params: a :class:`RandomBlurRegion` ``last_params`` dictionary, or None for no blur.

    Raises:
        InputError: for an unsupported array.
    """
    if not isinstance(image, np.ndarray) or image.ndim < 2:
        raise InputError("The image must be a numpy array of shape (H, W) or (H, W, C).")
    h, w = image.shape[:2]
    mask = region_mask(params, h, w)
    if params is None or not mask.any():
        return image, mask
    blurred = blur_array(image, params["blur"])
    alpha = soft_alpha(mask > 0, float(params["feather"]))
    return _blend(image, blurred, alpha), mask


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
    :func:`histoblur.synthesis.torch_ops.blur_batch`. With ``same_on_batch=True`` one draw (the
    coin, then the spec) serves the whole batch, whose blur plan is then built once (the pixels
    are those of ``blur_batch`` with that spec repeated). Shape, dtype and device are preserved;
    values are not clipped (normalised non-negative kernels keep them in the input's range). The
    module has no parameters and blurs in both training and evaluation mode; the blur is
    differentiable with respect to the input.

    The parameters can be drawn apart from the blur: :meth:`forward_parameters` draws them for a
    shape and ``module(x, params)`` applies given ones, so an image batch and its target batch
    (same size, any channel count) get exactly the same blur.

    Args:
        kinds: blur kinds drawn uniformly (registry names); None draws from every kind.
        p: probability that a sample (with ``same_on_batch``, the batch) is blurred.
        ranges: per-kind sampler overrides, e.g. ``{"lens": {"radius": (2, 5)}}``.
        generator: where the draws come from: a ``torch.Generator`` (each call takes one 62-bit
            seed from it and draws that batch's specs from a numpy generator of that seed), a
            ``numpy.random.Generator``, an integer seed, or None (fresh entropy).
        same_on_batch: draw once per call and give every sample that draw.

    Attributes:
        last_params: after a call, one entry per sample: the spec dict, or None for a sample
            left unchanged; None before the first call.

    Raises:
        ParameterError: for an unknown kind, ``p`` outside [0, 1] or an invalid range.

    Examples:
        >>> import torch
        >>> x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        >>> blur = TorchRandomBlur(kinds=("gaussian", "lens"), p=1.0, generator=0)
        >>> blur(x).shape, len(blur.last_params)
        (torch.Size([4, 3, 32, 32]), 4)
        >>> same = TorchRandomBlur(p=1.0, generator=0, same_on_batch=True)
        >>> out = same(x[:1].expand(4, -1, -1, -1))
        >>> all(torch.equal(out[0], out[i]) for i in range(4))
        True
        >>> params = same.forward_parameters(x.shape)  # one spec dict per sample
        >>> target = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(1))
        >>> image_out, target_out = same(x, params), same(target, params)
        >>> target_out.shape, torch.equal(same(x, params), image_out)
        (torch.Size([4, 1, 32, 32]), True)
    """

    def __init__(
        self,
        kinds: Sequence[str] | None = ("gaussian", "lens", "motion"),
        p: float = 0.5,
        ranges: Mapping[str, Mapping[str, Any]] | None = None,
        generator: torch.Generator | np.random.Generator | int | None = None,
        same_on_batch: bool = False,
    ) -> None:
        super().__init__()
        self.config, self._samplers = _config(kinds, p, ranges)
        if isinstance(generator, torch.Generator):
            self.generator: torch.Generator | np.random.Generator = generator
        else:
            self.generator = _generator(generator)
        if not isinstance(same_on_batch, bool):
            raise ParameterError(f"same_on_batch must be True or False, got {same_on_batch!r}.")
        self.same_on_batch = same_on_batch
        self.last_params: list[dict[str, Any] | None] | None = None

    def _batch_rng(self) -> np.random.Generator:
        if isinstance(self.generator, np.random.Generator):
            return self.generator
        g = self.generator
        seed = torch.randint(0, 2**62, (1,), generator=g, device=g.device).item()
        return np.random.default_rng(int(seed))

    def draw(self, batch: int) -> list[BlurSpec | None]:
        """Draw the specs of the next ``batch`` samples (None: sample left unchanged).

        With ``same_on_batch`` one spec (or None) is drawn and repeated ``batch`` times.
        """
        rng = self._batch_rng()
        if self.same_on_batch:
            return [_draw_spec(self.config, self._samplers, rng)] * batch
        return [_draw_spec(self.config, self._samplers, rng) for _ in range(batch)]

    def forward_parameters(self, batch_shape: Sequence[int]) -> list[dict[str, Any] | None]:
        """Draw the parameters of one call for a tensor of shape ``batch_shape``, without blurring.

        Args:
            batch_shape: (B, C, H, W) or (C, H, W), e.g. ``x.shape``.

        Returns:
            One entry per sample (one for a (C, H, W) shape): the spec dict, or None for a sample
            left unchanged; pass it to ``module(x, params)`` or :meth:`apply`.

        Raises:
            InputError: for a shape that is not 3 or 4 integers.
        """
        shape = tuple(batch_shape) if isinstance(batch_shape, Sequence) else ()
        if len(shape) not in (3, 4) or not all(isinstance(n, (int, np.integer)) for n in shape):
            raise InputError(
                f"batch_shape must be (B, C, H, W) or (C, H, W), e.g. x.shape; got {batch_shape!r}."
            )
        specs = self.draw(1 if len(shape) == 3 else int(shape[0]))
        return [None if s is None else s.model_dump() for s in specs]

    def apply(self, x: torch.Tensor, specs: Sequence[SpecLike | None]) -> torch.Tensor:
        """Replay per-sample specs (or ``last_params``) on a (B, C, H, W) or (C, H, W) tensor.

        A batch whose specs are all equal (``same_on_batch``) builds its plan once; the pixels are
        those of :func:`~histoblur.synthesis.torch_ops.blur_batch` either way.
        """
        resolved = [None if s is None else _as_spec(s) for s in specs]
        single = isinstance(x, torch.Tensor) and x.ndim == 3
        batch = x.unsqueeze(0) if single else x
        first = resolved[0] if resolved else None
        if (
            first is not None
            and len(resolved) > 1
            and isinstance(batch, torch.Tensor)
            and batch.ndim == 4
            and len(resolved) == batch.shape[0]
            and all(s == first for s in resolved)
        ):
            out = _blur_shared(batch, first)
        else:
            out = blur_batch(batch, resolved)
        return out.squeeze(0) if single else out

    def forward(
        self, x: torch.Tensor, params: Sequence[SpecLike | None] | None = None
    ) -> torch.Tensor:
        """Blur each sample with probability ``p``, or with given ``params``; a new tensor.

        Args:
            x: float (B, C, H, W) or (C, H, W) tensor on any device.
            params: one spec (dict) or None per sample, e.g. from :meth:`forward_parameters` or
                ``last_params``; None draws new ones.

        Raises:
            InputError: for a tensor of another shape, or params of another length.
        """
        if not isinstance(x, torch.Tensor) or x.ndim not in (3, 4):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"Expected a (B, C, H, W) or (C, H, W) tensor, got {shape}.")
        batch = 1 if x.ndim == 3 else x.shape[0]
        if params is None:
            specs: Sequence[SpecLike | None] = self.draw(batch)
        elif not isinstance(params, Sequence) or isinstance(params, str) or len(params) != batch:
            listed = isinstance(params, Sequence) and not isinstance(params, str)
            got = f"{len(params)} entries" if listed else f"a {type(params).__name__}"
            raise InputError(
                f"params must hold one spec or None per sample ({batch} here), as "
                f"forward_parameters(x.shape) returns; got {got}."
            )
        else:
            specs = [None if s is None else _as_spec(s) for s in params]
        self.last_params = [None if s is None else _as_spec(s).model_dump() for s in specs]
        return self.apply(x, specs)

    def extra_repr(self) -> str:
        """Settings shown by ``print(module)``."""
        c = self.config
        return f"kinds={c.kinds}, p={c.p}, ranges={c.ranges}, same_on_batch={self.same_on_batch}"


def _blur_shared(x: torch.Tensor, spec: BlurSpec) -> torch.Tensor:
    """Blur every sample of a (B, C, H, W) batch with one spec, building its plan once.

    Sample by sample, as :func:`blur_batch` runs them: one call over the folded batch could
    differ from it by float round-off (convolution routes depend on the batch size).
    """
    plan = plan_for(spec, x.shape[-2], x.shape[-1])
    return torch.cat([execute_torch(plan, x[i : i + 1]) for i in range(x.shape[0])], dim=0)
