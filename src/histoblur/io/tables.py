"""Rows of dictionaries as CSV text, the one CSV writer of histoblur's outputs."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def csv_text(rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """``rows`` as CSV with a header line and Unix line ends.

    ``columns``: the columns, in order (keys outside them are left out, missing values are
    empty); by default every key seen, in first-seen order. No rows and no columns: "".

    Examples:
        >>> print(csv_text([{"a": 1, "b": 2}, {"a": 3, "c": 4}]), end="")
        a,b,c
        1,2,
        3,,4
        >>> print(csv_text([{"a": 1, "b": 2}], columns=["b"]), end="")
        b
        2
    """
    rows = list(rows)
    keys = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    if not keys:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, keys, restval="", extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
