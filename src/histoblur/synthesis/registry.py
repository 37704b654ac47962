"""The one registry of blur kinds: name -> spec, sampler, plan.

Adding a kind is one spec class, one sampler class, one plan function and one line below.

Examples:
    >>> import numpy as np
    >>> kind = get_kind("motion")
    >>> kind.family, kind.strength, kind.spec.__name__
    ('motion', 'length', 'MotionSpec')
    >>> spec = kind.sampler.build(length=(5, 10)).sample(np.random.default_rng(0))
    >>> spec.kind, 5 <= spec.length <= 10
    ('motion', True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from histoblur.errors import ParameterError
from histoblur.synthesis import learned, lens, motion, variant
from histoblur.synthesis.plans import BlurPlan
from histoblur.synthesis.spec import BlurSpec, Sampler, validate_spec

Family = Literal["defocus", "motion", "mixed"]


@dataclass(frozen=True)
class BlurKind:
    """One registry entry.

    Attributes:
        name: command-line name (``--method NAME``).
        family: blur type used by classifiers: defocus, motion or mixed.
        spec: the frozen spec class (its ``kind`` names the plan to run).
        sampler: the default sampler class (ranges).
        plan: pure function ``(spec, height, width) -> BlurPlan``.
        strength: the spec field that controls how strong the blur is.
        summary: one line for ``--help`` and reports.
    """

    name: str
    family: Family
    spec: type[BlurSpec]
    sampler: type[Sampler]
    plan: Callable[[Any, int, int], BlurPlan]
    strength: str
    summary: str


BLUR_KINDS: dict[str, BlurKind] = {
    k.name: k
    for k in (
        BlurKind("gaussian", "defocus", lens.GaussianSpec, lens.GaussianSampler,
                 lens.gaussian_plan, "sigma", "Gaussian PSF (sigma)"),
        BlurKind("lens", "defocus", lens.LensSpec, lens.LensSampler,
                 lens.lens_plan, "radius", "pillbox disk, ideal circular aperture (radius)"),
        BlurKind("aperture", "defocus", lens.ApertureSpec, lens.ApertureSampler,
                 lens.aperture_plan, "radius", "polygonal iris (radius, blades, rotation)"),
        BlurKind("radial", "defocus", variant.RadialSpec, variant.RadialSampler,
                 variant.radial_plan, "max_radius", "defocus growing away from a centre (tilt)"),
        BlurKind("zoom", "defocus", variant.ZoomSpec, variant.ZoomSampler,
                 variant.zoom_plan, "amount", "zoom blur along lines through a centre"),
        BlurKind("spin", "motion", variant.SpinSpec, variant.SpinSampler,
                 variant.spin_plan, "angle", "rotational blur along arcs around a centre"),
        BlurKind("motion", "motion", motion.MotionSpec, motion.MotionSampler,
                 motion.motion_plan, "length", "uniform linear motion, 5-40 px, any angle"),
        BlurKind("motion-h", "motion", motion.MotionSpec, motion.HorizontalMotionSampler,
                 motion.motion_plan, "length", "horizontal motion, 5-40 px in steps of 5"),
        BlurKind("motion-v", "motion", motion.MotionSpec, motion.VerticalMotionSampler,
                 motion.motion_plan, "length", "vertical motion, 5-40 px in steps of 5"),
        BlurKind("mixed", "mixed", motion.MixedSpec, motion.MixedSampler,
                 motion.mixed_plan, "size", "defocus followed by linear motion"),
        BlurKind("variable-defocus", "defocus", variant.VariableDefocusSpec,
                 variant.VariableDefocusSampler, variant.variable_defocus_plan, "max_radius",
                 "smooth random defocus map plus a tilted plane"),
    )
}  # fmt: skip

# Learned kinds run a trained network; ``--method gan:PATH`` names the checkpoint (see
# :func:`parse_method`). They are kept apart from the statistical kinds above, which need no
# weights and run on the torch executor too.
LEARNED_KINDS: dict[str, BlurKind] = {
    kind.name: kind
    for kind in (
        BlurKind("gan", "defocus", learned.GanSpec, learned.GanSampler, learned.gan_plan,
                 "seed", "a trained blur generator (gan:default or gan:PATH)"),
        BlurKind("unit-ddpm", "defocus", learned.UnitDDPMSpec, learned.UnitDDPMSampler,
                 learned.unit_ddpm_plan, "release",
                 "UNIT-DDPM translation, sharp to blurred (unit-ddpm:PATH, a trained checkpoint)"),
    )
}  # fmt: skip


def get_kind(name: str) -> BlurKind:
    """Registry entry by name.

    Examples:
        >>> kind = get_kind("lens")
        >>> kind.name, kind.family, kind.strength
        ('lens', 'defocus', 'radius')
        >>> get_kind("gan").family  # learned kinds are found too
        'defocus'

    Raises:
        ParameterError: for an unknown name, listing the known ones.
    """
    kind = BLUR_KINDS.get(name) or LEARNED_KINDS.get(name)
    if kind is None:
        known = ", ".join([*BLUR_KINDS, *(f"{k}:PATH" for k in LEARNED_KINDS)])
        raise ParameterError(f"Unknown blur kind {name!r}; choose one of: {known}.")
    return kind


def parse_method(method: str) -> tuple[BlurKind, dict[str, Any]]:
    """A ``--method`` value as (kind, sampler overrides): ``gan:PATH`` fixes the model.

    Examples:
        >>> kind, fixed = parse_method("gan:default")
        >>> kind.name, fixed
        ('gan', {'model': 'default'})
        >>> parse_method("lens")[1]
        {}

    Raises:
        ParameterError: unknown kind, or a learned kind without its model.
    """
    name, _, model = method.partition(":")
    kind = get_kind(name)
    if name in LEARNED_KINDS:
        if not model:
            raise ParameterError(f"Name the model: {name}:default or {name}:PATH.")
        return kind, {"model": model}
    if model:
        raise ParameterError(f"Blur kind {name!r} takes no model ({method!r}).")
    return kind, {}


def kind_names() -> list[str]:
    """All registered statistical blur kind names, in registry order (learned kinds apart).

    Examples:
        >>> kind_names()[:3]
        ['gaussian', 'lens', 'aperture']
        >>> "motion" in kind_names(), "gan" in kind_names()
        (True, False)
    """
    return list(BLUR_KINDS)


def make_spec(name: str, **params: Any) -> BlurSpec:
    """A spec of kind ``name``; parameters not given take the spec's defaults.

    Examples:
        >>> make_spec("lens", radius=6)
        LensSpec(kind='lens', radius=6.0)
        >>> make_spec("aperture").params()  # every parameter has a default
        {'radius': 4.0, 'blades': 6, 'rotation': 0.0}
        >>> make_spec("motion-h").kind  # presets share the spec of their kind
        'motion'

    Raises:
        ParameterError: an unknown kind, or a parameter that is unknown or out of range.
    """
    kind = get_kind(name)
    return validate_spec(kind.spec, {"kind": kind.spec.model_fields["kind"].default, **params})


def spec_from_dict(data: dict[str, Any]) -> BlurSpec:
    """Rebuild a spec from ``spec.model_dump()`` (e.g. a manifest line).

    Examples:
        >>> spec = make_spec("gaussian", sigma=1.5)
        >>> spec.model_dump()
        {'kind': 'gaussian', 'sigma': 1.5}
        >>> spec_from_dict(spec.model_dump()) == spec
        True

    Raises:
        ParameterError: a missing ``kind``, an unknown kind or an invalid parameter.
    """
    if "kind" not in data:
        raise ParameterError("A blur spec needs a 'kind' field.")
    return validate_spec(get_kind(data["kind"]).spec, data)


def plan_for(spec: BlurSpec, height: int, width: int) -> BlurPlan:
    """The execution plan of ``spec`` for an image of the given size.

    Spatially invariant kinds give a :class:`~histoblur.synthesis.plans.KernelPlan` (one PSF),
    spatially variant ones a ``LevelsPlan`` (PSFs blended per pixel) or a ``WarpPlan``.

    Examples:
        >>> plan = plan_for(make_spec("lens", radius=3), 32, 32)
        >>> type(plan).__name__, plan.kernel.shape, round(float(plan.kernel.sum()), 3)
        ('KernelPlan', (7, 7), 1.0)
        >>> plan_for(make_spec("gaussian", sigma=1.0), 32, 32).separable is not None
        True
        >>> plan = plan_for(make_spec("radial"), 32, 48)
        >>> type(plan).__name__, plan.index.shape
        ('LevelsPlan', (32, 48))
    """
    return get_kind(spec.kind).plan(spec, height, width)


def family_of(spec: BlurSpec) -> Family:
    """Blur family (defocus / motion / mixed) of a spec.

    Examples:
        >>> [family_of(make_spec(name)) for name in ("lens", "spin", "mixed")]
        ['defocus', 'motion', 'mixed']
    """
    return get_kind(spec.kind).family
