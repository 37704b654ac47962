"""Argument helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.text import Text

from histoblur.errors import HistoblurError, InputError, ParameterError, describe_validation
from histoblur.io.atomic import write_text_atomic
from histoblur.io.images import DEFAULT_MAX_PIXELS, check_sizes, list_images
from histoblur.models.hub import DEVICES

# every command's messages: records of the ``histoblur`` logger, printed by :func:`set_verbosity`
log = logging.getLogger("histoblur")
_CONSOLE = Console(stderr=True, soft_wrap=True)
_STYLES = {logging.DEBUG: "dim", logging.WARNING: "yellow", logging.ERROR: "red"}


def messages() -> Console:
    """The console of every command's messages and progress bars: stderr, never hard-wrapped.

    A terminal wraps long lines itself; a log file or a pipe gets each message on one line.
    """
    return _CONSOLE


class ConsoleHandler(logging.Handler):
    """Prints log records on the messages console, above any progress bar, as plain text."""

    def emit(self, record: logging.LogRecord) -> None:
        """Print one record (styled by its level)."""
        try:
            style = _STYLES.get(record.levelno, "")
            _CONSOLE.print(Text(self.format(record), style=style), soft_wrap=True)
        except Exception:  # noqa: BLE001 (logging must never raise)
            self.handleError(record)


def set_verbosity(verbosity: int) -> None:
    """Show the ``histoblur`` logger's messages: -1 warnings only (-q), 0 info, 1 debug (-v).

    >>> set_verbosity(-1); log.getEffectiveLevel() == logging.WARNING
    True
    """
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    for handler in [h for h in log.handlers if isinstance(h, ConsoleHandler)]:
        log.removeHandler(handler)
    log.addHandler(ConsoleHandler())
    log.setLevel(level)


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


def add_overwrite(parser: argparse.ArgumentParser, what: str = "existing output files") -> None:
    """Add ``--overwrite``: without it an existing output is never replaced."""
    parser.add_argument("--overwrite", action="store_true", help=f"replace {what}")


def add_device(
    parser: argparse.ArgumentParser, default: str = "auto", what: str = "networks run"
) -> None:
    """Add ``--device``: where the network runs."""
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default=default,
        help=f"where {what}: auto (CUDA when available), cpu or cuda (default {default})",
    )


def add_max_pixels(parser: argparse.ArgumentParser) -> None:
    """Add ``--max-pixels``: the largest image read whole (checked before decoding)."""
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help=f"refuse images of more than N pixels (default {DEFAULT_MAX_PIXELS:,})",
    )


def option_error(exc: ValidationError, what: str = "option", flags: bool = True) -> ParameterError:
    """One sentence for the first problem of a pydantic validation error.

    Args:
        exc: the error.
        what: what was being validated ("option", "dataset option"...).
        flags: name a top-level field as its command-line flag (``jpeg_quality`` ->
            ``--jpeg-quality``); otherwise fields keep their dotted config names.

    >>> from histoblur.synthesis import DegradeSpec
    >>> try:
    ...     DegradeSpec(jpeg_quality=0)
    ... except ValidationError as exc:
    ...     print(option_error(exc))
    Invalid option --jpeg-quality: Input should be greater than or equal to 1.
    """
    return ParameterError(describe_validation(exc, what, flags))


class Manifest:
    """The file that lists a run's finished outputs, kept up to date while the run goes on.

    Rewritten atomically as rows arrive (at most every ``every_s`` seconds, and at the end), so
    a run that fails, is interrupted or is killed still lists what it finished (a kill loses at
    most the last ``every_s`` seconds of the list).

    Args:
        path: the manifest file.
        render: ``(rows, failure or None) -> text``.
        every_s: least time between two rewrites while rows arrive.
    """

    def __init__(
        self,
        path: Path,
        render: Callable[[list[dict[str, Any]], str | None], str],
        every_s: float = 2.0,
    ) -> None:
        self.path, self.render, self.every_s = Path(path), render, every_s
        self.rows: list[dict[str, Any]] = []
        self.failure: str | None = None
        self._written = -math.inf

    def add(self, row: dict[str, Any]) -> None:
        """Record one finished output."""
        self.rows.append(row)
        if time.monotonic() - self._written >= self.every_s:
            self.write()

    def write(self) -> None:
        """Rewrite the file now (nothing is written before the first row)."""
        if self.rows:
            write_text_atomic(self.path, self.render(self.rows, self.failure))
            self._written = time.monotonic()


def json_manifest(header: dict[str, Any]) -> Callable[[list[dict[str, Any]], str | None], str]:
    """A :class:`Manifest` renderer: ``{**header, "images": rows, "failed": error}`` as JSON."""

    def render(rows: list[dict[str, Any]], failure: str | None) -> str:
        summary = {**header, "images": rows, **({"failed": failure} if failure else {})}
        return json.dumps(summary, indent=2) + "\n"

    return render


@contextlib.contextmanager
def recorded(manifest: Manifest) -> Iterator[Manifest]:
    """Write ``manifest`` when the block ends, also when it fails (with the error) or stops."""
    try:
        yield manifest
    except HistoblurError as exc:
        manifest.failure = str(exc)
        raise
    except KeyboardInterrupt:
        manifest.failure = "interrupted"
        raise
    finally:
        manifest.write()


def progress_bar(console: Console | None = None) -> Progress:
    """The progress bar every long command shows (hidden when stderr is not a terminal)."""
    console = console or _CONSOLE
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
    """Image files from files and folders, in the order given, their sizes checked.

    Raises:
        InputError: no input, a missing path, or an image above the pixel limit.
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
    check_sizes(images)
    return images
