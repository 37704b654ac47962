"""The base of every typed configuration and spec in histoblur.

A :class:`Config` is frozen (hashable, safe to share), refuses unknown keys (a typo in a YAML
file is an error, not a silently ignored setting) and refuses infinities and NaN.

Examples:
    >>> from pydantic import Field
    >>> class Tiles(Config):
    ...     side: int = Field(256, ge=16)
    >>> Tiles(side=64).side
    64
    >>> Tiles(sid=64)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for Tiles
    ...
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Config(BaseModel):
    """Frozen, no unknown keys, no inf/NaN: what every histoblur config class derives from."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
