"""Frozen blur specifications and the samplers that draw them from ranges.

A *spec* holds the exact parameters of one blur (enough to replay it); a *sampler* holds, for the
same field names, a fixed value, a ``(low, high)`` range or a list of choices, and draws a spec
from an explicit ``numpy.random.Generator``.

Examples:
    >>> from histoblur.synthesis.lens import LensSampler
    >>> sampler = LensSampler.build(radius=(2, 4))
    >>> sampler
    LensSampler(radius=(2.0, 4.0))
    >>> spec = sampler.sample(np.random.default_rng(0))
    >>> spec.kind, round(spec.radius, 3)
    ('lens', 3.274)
    >>> spec == sampler.sample(np.random.default_rng(0))  # same seed, same spec
    True
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, get_args

import numpy as np
from pydantic import ValidationError

from histoblur.config import Config
from histoblur.errors import ParameterError, describe_validation

SEED_RANGE = (0, 2**31 - 1)


class BlurSpec(Config):
    """Base of every blur spec: frozen, strict about unknown fields, JSON round-trippable.

    Examples:
        >>> from histoblur.synthesis import make_spec
        >>> spec = make_spec("gaussian", sigma=2)
        >>> spec.model_dump_json()
        '{"kind":"gaussian","sigma":2.0}'
        >>> spec.model_copy(update={"sigma": 3.0}).sigma  # frozen: copy to change
        3.0
    """

    kind: str

    def params(self) -> dict[str, Any]:
        """The parameters without the ``kind`` tag.

        >>> from histoblur.synthesis import make_spec
        >>> make_spec("motion", length=9, angle=45).params()
        {'length': 9.0, 'angle': 45.0}
        """
        return self.model_dump(exclude={"kind"})


def validate_spec(spec_cls: type[BlurSpec], values: dict[str, Any]) -> BlurSpec:
    """Build a spec, turning pydantic's report into one readable sentence.

    Raises:
        ParameterError: if a value is missing, unknown or out of range.

    Examples:
        >>> from histoblur.synthesis.lens import LensSpec
        >>> validate_spec(LensSpec, {"radius": 3})
        LensSpec(kind='lens', radius=3.0)
        >>> validate_spec(LensSpec, {"radius": 0, "sigma": 1})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        histoblur.errors.ParameterError: Invalid Lens parameters radius: Input should be greater ...
    """
    try:
        return spec_cls.model_validate(values)
    except ValidationError as exc:
        raise ParameterError(_describe(spec_cls.__name__, exc)) from None


def _describe(owner: str, exc: ValidationError) -> str:
    """The sentence for invalid parameters of a spec or sampler class named ``owner``."""
    name = owner.replace("Spec", "").replace("Sampler", " sampler")
    return describe_validation(exc, f"{name} parameters", every=True)


Range = tuple[float, float]
IntRange = tuple[int, int]


def check_range(name: str, value: tuple[float, float], low: float, high: float) -> None:
    """Raise ValueError unless ``low <= value[0] <= value[1] <= high`` (finite numbers).

    >>> check_range("size", (0.1, 0.4), 0.0, 1.0)
    """
    lo, hi = value
    if not (math.isfinite(lo) and math.isfinite(hi) and low <= lo <= hi <= high):
        raise ValueError(f"{name} must be a range (low, high) with {low} <= low <= high <= {high}")


class Sampler(Config):
    """Draw a spec: each field is a fixed value, a (low, high) range, or a list of choices.

    Subclasses set ``spec_cls`` and declare fields with the names of the spec's fields. Integer
    spec fields draw integers from inclusive ranges; the draw order is the field order, so a
    given generator state always gives the same spec.
    """

    spec_cls: ClassVar[type[BlurSpec]]

    def sample(self, rng: np.random.Generator) -> BlurSpec:
        """Draw one spec from ``rng``.

        >>> from histoblur.synthesis.lens import ApertureSampler
        >>> spec = ApertureSampler.build(blades=[5, 7]).sample(np.random.default_rng(0))
        >>> spec.kind, spec.blades in (5, 7), 2.0 <= spec.radius <= 10.0
        ('aperture', True, True)
        """
        values: dict[str, Any] = {}
        spec_fields = self.spec_cls.model_fields
        for name in type(self).model_fields:
            value = getattr(self, name)
            is_int = spec_fields[name].annotation is int or int in get_args(
                spec_fields[name].annotation
            )
            values[name] = _draw(value, rng, is_int)
        return validate_spec(self.spec_cls, values)

    @classmethod
    def build(cls, **overrides: Any) -> Sampler:
        """A sampler with some fields overridden; a scalar override fixes that parameter.

        Raises:
            ParameterError: for an unknown field or an invalid range.

        Examples:
            >>> from histoblur.synthesis.lens import LensSampler
            >>> LensSampler.build(radius=3).sample(np.random.default_rng(0))
            LensSpec(kind='lens', radius=3.0)
            >>> LensSampler.build(radius=(4, 2))
            Traceback (most recent call last):
            ...
            histoblur.errors.ParameterError: Range for radius has low 4.0 above high 2.0.
        """
        try:
            sampler = cls.model_validate({**cls().model_dump(), **overrides})
        except ValidationError as exc:
            raise ParameterError(_describe(cls.__name__, exc)) from None
        for name in cls.model_fields:
            value = getattr(sampler, name)
            if isinstance(value, tuple) and value[0] > value[1]:
                raise ParameterError(f"Range for {name} has low {value[0]} above high {value[1]}.")
        return sampler


def _draw(value: Any, rng: np.random.Generator, is_int: bool) -> Any:
    if isinstance(value, tuple) and len(value) == 2:
        low, high = value
        if is_int:
            return int(rng.integers(int(low), int(high) + 1))
        return float(rng.uniform(low, high))
    if isinstance(value, list):
        return value[int(rng.integers(len(value)))]
    return value
