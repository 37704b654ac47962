"""Sub-command `histoblur bench` (being written)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the sub-command to the parser."""
