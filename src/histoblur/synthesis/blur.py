"""Apply a blur spec to an image: the pure function behind every blur in histoblur."""

from __future__ import annotations

import numpy as np

from histoblur.io.images import check_image, from_float, merge_alpha, split_alpha, to_float
from histoblur.synthesis.degrade import DegradeSpec, degrade
from histoblur.synthesis.execute import execute, execute_uint8
from histoblur.synthesis.registry import get_kind, plan_for
from histoblur.synthesis.spec import BlurSpec


def apply_blur(image: np.ndarray, spec: BlurSpec, post: DegradeSpec | None = None) -> np.ndarray:
    """Blur an image with ``spec`` (then degrade it with ``post`` if given).

    Args:
        image: (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA, uint8 or uint16. Alpha is kept.
        spec: the blur to apply (see :data:`histoblur.synthesis.BLUR_KINDS`).
        post: optional sensor noise / JPEG re-compression applied after the blur.

    Returns:
        A new image with the input's shape and dtype.
    """
    check_image(image)
    colour, alpha = split_alpha(image)
    squeeze = colour.ndim == 2
    work = colour[..., None] if squeeze else colour
    plan = plan_for(spec, work.shape[0], work.shape[1])
    if work.dtype == np.uint8:
        # uint8 runs straight through the executor (correctly rounded, no float round trip).
        result = execute_uint8(plan, work)
    else:
        result = from_float(execute(plan, to_float(work)), image.dtype)
    if squeeze:
        result = result[..., 0]
    if post is not None:
        result = degrade(result, post)
    return merge_alpha(result, alpha)


def sample_and_blur(
    image: np.ndarray, kind: str, rng: np.random.Generator, **ranges: object
) -> tuple[np.ndarray, BlurSpec]:
    """Draw a spec of ``kind`` (default ranges, overridden by ``ranges``) and apply it."""
    spec = get_kind(kind).sampler.build(**ranges).sample(rng)
    return apply_blur(image, spec), spec
