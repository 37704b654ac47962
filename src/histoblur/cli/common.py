"""Argument helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from histoblur.errors import InputError, ParameterError
from histoblur.io.images import list_images


def parse_params(pairs: Sequence[str] | None) -> dict[str, Any]:
    """Turn ``["k=v", ...]`` into a dict, values parsed as YAML scalars or lists.

    ``sigma=3`` fixes a value, ``sigma=[1,4]`` gives a range, ``blades=[5,6,8]`` (three or more
    items) a list of choices when the parameter is sampled.

    Raises:
        ParameterError: for an item without ``=``.
    """
    params: dict[str, Any] = {}
    for item in pairs or ():
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ParameterError(f"Parameter {item!r} is not of the form name=value.")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        if isinstance(value, list) and len(value) == 2:
            value = tuple(value)
        params[key.strip()] = value
    return params


def add_seed(parser: argparse.ArgumentParser, default: int = 0) -> None:
    """Add the common ``--seed`` option."""
    parser.add_argument(
        "--seed", type=int, default=default, help=f"random seed (default {default})"
    )


def progress_bar(console: Console) -> Progress:
    """The progress bar every long command shows (hidden when stderr is not a terminal)."""
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


def expand_images(paths: list[Path]) -> list[Path]:
    """Image files from files and folders, in the order given.

    Raises:
        InputError: no input, or a missing path.
    """
    if not paths:
        raise InputError("No input image given; pass one or more image paths.")
    images: list[Path] = []
    for path in paths:
        if path.is_dir():
            images.extend(list_images(path))
        elif path.is_file():
            images.append(path)
        else:
            raise InputError(f"Image {path} does not exist.")
    return images
