"""Manifests: one JSON object per line, one line per sample."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from histoblur.errors import InputError


def iter_jsonl(folder: Path, what: str, name: str = "manifest.jsonl") -> Iterator[dict[str, Any]]:
    """Records of ``folder/name`` in file order, skipping blank lines.

    Args:
        folder: the dataset or benchmark folder.
        what: what the folder should be, for the error message (e.g. "histoblur dataset").
        name: the manifest file name.

    Raises:
        InputError: if the folder holds no such file or a line is not valid JSON.
    """
    path = Path(folder) / name
    if not path.is_file():
        raise InputError(f"{folder} has no {name}; is it a {what}?")
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                raise InputError(f"{path} line {number} is not valid JSON.") from None
