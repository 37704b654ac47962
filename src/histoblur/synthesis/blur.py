"""Apply a blur spec to an image: the pure function behind every blur in histoblur.

Examples:
    >>> from histoblur.synthesis import make_spec
    >>> image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    >>> blurred = apply_blur(image, make_spec("gaussian", sigma=2.0))
    >>> blurred.shape, blurred.dtype
    ((32, 32, 3), dtype('uint8'))
    >>> bool(blurred.std() < image.std())  # blur lowers the contrast of fine detail
    True
"""

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

    Raises:
        InputError: an array that is not a supported image.

    Examples:
        >>> from histoblur.synthesis import DegradeSpec, make_spec
        >>> rng = np.random.default_rng(0)
        >>> rgb = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
        >>> apply_blur(rgb, make_spec("lens", radius=4)).shape
        (32, 48, 3)

        Grey and 16-bit images keep their shape and dtype; the alpha of RGBA is kept as it is.

        >>> grey = rng.integers(0, 65536, (16, 16), dtype=np.uint16)
        >>> out = apply_blur(grey, make_spec("motion", length=7, angle=30))
        >>> out.shape, out.dtype
        ((16, 16), dtype('uint16'))
        >>> rgba = np.dstack([rgb, np.full((32, 48), 200, np.uint8)])
        >>> bool((apply_blur(rgba, make_spec("gaussian"))[..., 3] == 200).all())
        True

        Sensor noise and JPEG re-compression can follow the blur:

        >>> post = DegradeSpec(photons=1000, jpeg_quality=80, seed=0)
        >>> apply_blur(rgb, make_spec("gaussian", sigma=1.0), post).dtype
        dtype('uint8')
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
    """Draw a spec of ``kind`` (default ranges, overridden by ``ranges``) and apply it.

    The drawn spec is returned with the image, so the same blur can be replayed with
    :func:`apply_blur`.

    Examples:
        >>> image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        >>> out, spec = sample_and_blur(image, "gaussian", np.random.default_rng(0), sigma=(1, 2))
        >>> out.shape, spec.kind, 1 <= spec.sigma <= 2
        ((32, 32, 3), 'gaussian', True)
        >>> bool((apply_blur(image, spec) == out).all())  # replay
        True
    """
    spec = get_kind(kind).sampler.build(**ranges).sample(rng)
    return apply_blur(image, spec), spec
