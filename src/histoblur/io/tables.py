"""Rows of dictionaries as CSV text, the one CSV writer of histoblur's outputs."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal


def csv_text(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    extras: Literal["raise", "ignore"] = "raise",
) -> str:
    """``rows`` as CSV with a header line and Unix line ends.

    ``columns``: the columns, in order (missing values are empty; a key outside them raises
    ``ValueError``, or is left out with ``extras="ignore"``); by default every key seen, in
    first-seen order. No rows and no columns: "".

    Examples:
        >>> print(csv_text([{"a": 1, "b": 2}, {"a": 3, "c": 4}]), end="")
        a,b,c
        1,2,
        3,,4
        >>> print(csv_text([{"a": 1, "b": 2}], columns=["b"], extras="ignore"), end="")
        b
        2
    """
    rows = list(rows)
    keys = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    if not keys:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, keys, restval="", extrasaction=extras, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
