"""Exceptions with a sentence a user can act on; the CLI prints them and exits non-zero."""

from __future__ import annotations

from typing import Any


class HistoblurError(Exception):
    """Base class of every error histoblur raises on purpose."""


class InputError(HistoblurError):
    """An input file or array cannot be used (missing, corrupt, unsupported, wrong size)."""


class ParameterError(HistoblurError):
    """A parameter is out of range or inconsistent with the others."""


class OutputError(HistoblurError):
    """An output location cannot be written."""


def describe_validation(exc: Any, what: str, flags: bool = False, every: bool = False) -> str:
    """One sentence for a pydantic ``ValidationError``: the one home of that wording.

    Args:
        exc: the validation error.
        what: what was validated ("option", "lens parameters", "unet configuration"...).
        flags: name a top-level field as its command-line flag (``jpeg_quality`` ->
            ``--jpeg-quality``); otherwise fields keep their dotted names.
        every: list every problem (with the value given), not only the first.

    >>> from pydantic import BaseModel, Field, ValidationError
    >>> class Tile(BaseModel):
    ...     side: int = Field(256, ge=16)
    >>> try:
    ...     Tile(side=0)
    ... except ValidationError as exc:
    ...     print(describe_validation(exc, "option", flags=True))
    Invalid option --side: Input should be greater than or equal to 16.
    """
    parts = []
    for err in exc.errors() if every else exc.errors()[:1]:
        loc = [str(p) for p in err["loc"]]
        message = str(err["msg"]).removeprefix("Value error, ")
        if every and "input" in err and not isinstance(err["input"], dict):
            message += f" (got {err['input']!r})"
        if not loc:
            parts.append(message)
        elif flags and len(loc) == 1:
            parts.append(f"--{loc[0].replace('_', '-')}: {message}")
        else:
            parts.append(f"{'.'.join(loc)}: {message}")
    sep = " " if exc.errors()[0]["loc"] else ": "
    return f"Invalid {what}{sep}" + "; ".join(parts) + "."
