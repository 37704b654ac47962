"""The base of every typed configuration and spec in histoblur, and its YAML files.

A :class:`Config` is frozen (hashable, safe to share), refuses unknown keys (a typo in a YAML
file is an error, not a silently ignored setting) and refuses infinities and NaN.
:func:`read_yaml` and :func:`to_yaml` are the one home of configuration files: every
``--config FILE.yaml`` is read by the first, every resolved config written or printed by the
second.

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
    >>> print(to_yaml(Tiles(side=64)), end="")
    side: 64
    >>> check_fields({"sid": 64}, Tiles, "tiles.yaml")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    histoblur.errors.ParameterError: Unknown setting 'sid' in tiles.yaml (did you mean side?); ...
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from histoblur.errors import InputError, ParameterError


class Config(BaseModel):
    """Frozen, no unknown keys, no inf/NaN: what every histoblur config class derives from."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: what and where."""
    problem = getattr(exc, "problem", None) or "unreadable"
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def read_yaml(path: str | Path, what: str = "config") -> dict[str, Any]:
    r"""The mapping of field names to values in a YAML file (``{}`` for an empty file).

    Args:
        path: the file.
        what: what the file is, in the messages ("config", "QC config").

    Raises:
        InputError: an unreadable, binary or invalid YAML file, or one that is not a mapping,
            in one sentence naming the file.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     good, bad = Path(tmp) / "a.yaml", Path(tmp) / "b.yaml"
        ...     _ = good.write_text("epochs: 3\nmodel: {width: 8}\n")
        ...     _ = bad.write_text("epochs: [1\n")
        ...     print(read_yaml(good))
        ...     try:
        ...         read_yaml(bad)
        ...     except InputError as exc:
        ...         print(str(exc).replace(tmp, "TMP").split(" (")[0])
        {'epochs': 3, 'model': {'width': 8}}
        Config TMP/b.yaml is not valid YAML
    """
    name = what[:1].upper() + what[1:]
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"Cannot read {what} {path}: {exc.strerror or exc}.") from exc
    except (UnicodeDecodeError, yaml.reader.ReaderError) as exc:  # binary bytes
        raise InputError(f"{name} {path} is not a YAML text file.") from exc
    except yaml.YAMLError as exc:
        raise InputError(f"{name} {path} is not valid YAML ({_yaml_problem(exc)}).") from exc
    if loaded is not None and not isinstance(loaded, dict):
        raise InputError(f"{name} {path} must be a mapping of field names to values.")
    return loaded or {}


def check_fields(data: Mapping[str, Any], schema: type[BaseModel], where: str) -> None:
    """Refuse top-level keys of ``data`` that are not fields of ``schema``, in one sentence.

    Raises:
        ParameterError: the first unknown key, the closest field name and every field.
    """
    fields = list(schema.model_fields)
    for key in data:
        if key not in schema.model_fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ParameterError(
                f"Unknown setting {key!r} in {where}{hint}; the settings are: {', '.join(fields)}."
            )


def to_yaml(config: BaseModel) -> str:
    """``config`` as YAML text, fields in their declared order (what :func:`read_yaml` reads).

    Values go through JSON first, so paths, tuples and enums are written as plain YAML.
    """
    return yaml.safe_dump(json.loads(config.model_dump_json()), sort_keys=False)
