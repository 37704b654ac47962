"""Blur synthesis: specs, samplers, executors, masks, compositing and dataset builders."""

from histoblur.synthesis.augment import RandomBlur, RandomBlurRegion, TorchRandomBlur
from histoblur.synthesis.blur import apply_blur, sample_and_blur
from histoblur.synthesis.degrade import DegradeSpec, degrade
from histoblur.synthesis.registry import (
    BLUR_KINDS,
    BlurKind,
    family_of,
    get_kind,
    kind_names,
    make_spec,
    plan_for,
    spec_from_dict,
)
from histoblur.synthesis.spec import BlurSpec, Sampler
from histoblur.synthesis.torch_ops import blur_batch, execute_torch

__all__ = [
    "BLUR_KINDS",
    "BlurKind",
    "BlurSpec",
    "DegradeSpec",
    "RandomBlur",
    "RandomBlurRegion",
    "Sampler",
    "TorchRandomBlur",
    "apply_blur",
    "blur_batch",
    "degrade",
    "execute_torch",
    "family_of",
    "get_kind",
    "kind_names",
    "make_spec",
    "plan_for",
    "sample_and_blur",
    "spec_from_dict",
]
