"""Argument helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from operator import attrgetter
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TimeRemainingColumn
from rich.text import Text

from histoblur.errors import HistoblurError, InputError, ParameterError, describe_validation
from histoblur.io.atomic import ensure_writable_dir, write_text_atomic
from histoblur.io.paths import check_output_files

# the choices of --device and --precision: those of histoblur.models.hub (tests/test_cli_lazy.py
# checks), repeated here so that building a parser does not import torch
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")

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


def add_command_group(
    sub: argparse._SubParsersAction, name: str, help: str
) -> argparse._SubParsersAction:
    """Add ``histoblur NAME WHAT ...``: returns the action its sub-commands are added to.

    The chosen sub-command is stored as ``NAME_command``.
    """
    group = sub.add_parser(name, help=help)
    dest = f"{name.replace('-', '_')}_command"
    return group.add_subparsers(dest=dest, metavar="WHAT", required=True)


class Option(NamedTuple):
    """One option of :func:`add_config_options`: its default is a field of a config.

    Attributes:
        flag: the option (``--min-tissue``); it names the field (``min_tissue``) unless
            ``field`` does.
        type: the type its value is parsed as.
        help: its help; ``{}`` (or ``{:g}``...) in it shows the default.
        metavar: the value's name in the help (default: the flag's).
        field: the config field, dotted for nested ones (``masks.feather``).
    """

    flag: str
    type: type
    help: str
    metavar: str | None = None
    field: str | None = None


def add_config_options(parser: argparse.ArgumentParser, config: Any, *options: Option) -> None:
    """Add options whose defaults are the fields of ``config`` (defaults live in the config).

    >>> from types import SimpleNamespace
    >>> parser = argparse.ArgumentParser()
    >>> config = SimpleNamespace(min_tissue=0.5, masks=SimpleNamespace(feather=2.0))
    >>> add_config_options(
    ...     parser,
    ...     config,
    ...     Option("--min-tissue", float, "min tissue fraction ({})"),
    ...     Option("--feather", float, "edge softness ({:g})", "PX", field="masks.feather"),
    ... )
    >>> parser.parse_args(["--feather", "3"])
    Namespace(min_tissue=0.5, feather=3.0)
    >>> [action.help for action in parser._actions[1:]]
    ['min tissue fraction (0.5)', 'edge softness (2)']
    """
    for option in options:
        field = option.field or option.flag.lstrip("-").replace("-", "_")
        default = attrgetter(field)(config)
        parser.add_argument(
            option.flag,
            type=option.type,
            default=default,
            metavar=option.metavar,
            help=option.help.format(default),
        )


def add_image_pair(parser: argparse.ArgumentParser, sharp: str, blurred: str) -> None:
    """Add ``--sharp`` and ``--blurred``: two images of one field, in and out of focus."""
    parser.add_argument("--sharp", required=True, type=Path, help=sharp)
    parser.add_argument("--blurred", required=True, type=Path, help=blurred)


def add_config_file(parser: argparse.ArgumentParser, help: str) -> None:
    """Add ``--config FILE.yaml``: the command's settings as a YAML file."""
    parser.add_argument("--config", type=Path, metavar="FILE.yaml", help=help)


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


def add_precision(
    parser: argparse.ArgumentParser,
    default: str = "auto",
    what: str = "",
    note: str = "masks agree with fp32 on >99.9 %% of pixels",
) -> None:
    """Add ``--precision``: the arithmetic the network runs in.

    ``what`` starts the help (which network, where a command runs several); ``note`` follows
    the default.
    """
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=default,
        help=f"{what}auto (bfloat16 where the CPU or GPU runs it natively, else float32), fp32 "
        f"(the reference) or bf16 (default {default}; {note})",
    )


def add_max_pixels(parser: argparse.ArgumentParser) -> None:
    """Add ``--max-pixels``: the largest image read whole (checked before decoding)."""
    from histoblur.io.images import DEFAULT_MAX_PIXELS  # imports OpenCV: only where needed

    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help=f"refuse images of more than N pixels (default {DEFAULT_MAX_PIXELS:,})",
    )


def add_file_options(parser: argparse.ArgumentParser, what: str = "existing output files") -> None:
    """Add ``--overwrite`` (replace ``what``) and ``--max-pixels``: every command writing files."""
    add_overwrite(parser, what)
    add_max_pixels(parser)


def add_mpp(parser: argparse.ArgumentParser) -> None:
    """Add ``--mpp``: the images' microns per pixel (blur is judged at the model's resolution)."""
    parser.add_argument(
        "--mpp",
        type=float,
        metavar="UM",
        help="the images' microns per pixel (0.25 at 40x, 0.5 at 20x); they are resampled to "
        "the model's working resolution (default: taken to be at it, 0.5 for the shipped "
        "models)",
    )


def add_run_options(parser: argparse.ArgumentParser, what: str = "existing output files") -> None:
    """Add ``--device`` and :func:`add_file_options`: every command running a network on files."""
    add_device(parser)
    add_file_options(parser, what)


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


def config_from_args(
    schema: Callable[..., Any],
    args: argparse.Namespace,
    *names: str,
    what: str = "option",
    **fields: Any,
) -> Any:
    """``schema`` from the options ``names`` (each the field of that name) and ``fields``.

    Raises:
        ParameterError: an invalid value, in one sentence naming its option (see
            :func:`option_error`).

    >>> from histoblur.synthesis import DegradeSpec
    >>> args = argparse.Namespace(jpeg_quality=90, seed=3)
    >>> config_from_args(DegradeSpec, args, "jpeg_quality", "seed").jpeg_quality
    90
    >>> config_from_args(DegradeSpec, args, "seed", jpeg_quality=0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    histoblur.errors.ParameterError: Invalid option --jpeg-quality: Input should be greater ...
    """
    try:
        return schema(**{name: getattr(args, name) for name in names}, **fields)
    except ValidationError as exc:
        raise option_error(exc, what) from None


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


class OutputFolder:
    """The files a command writes into one folder per input image, and their manifest.

    Made before any work, it checks the outputs: two inputs of one stem, an output that is an
    input, and existing outputs without ``overwrite`` are refused. :meth:`progress` then
    creates the folder; the manifest lists the rows :meth:`add` records as they arrive.

    Args:
        images: the inputs, each written as ``<folder>/<stem>...``.
        outputs: every file the command writes besides the manifest.
        manifest: the manifest file, in the folder.
        render: the manifest's renderer (see :class:`Manifest`).
        overwrite: existing outputs may be replaced.
        advice: the sentence that ends the error for two inputs of one stem.

    Raises:
        InputError: two inputs with one stem.
        OutputError: an output is an input, or outputs exist without ``overwrite``.
    """

    def __init__(
        self,
        images: Sequence[Path],
        outputs: Sequence[Path],
        manifest: Path,
        render: Callable[[list[dict[str, Any]], str | None], str],
        overwrite: bool,
        advice: str,
    ) -> None:
        from histoblur.io.images import check_unique_stems

        check_unique_stems(images, advice)
        check_output_files([*outputs, manifest], images, overwrite)
        self.manifest = Manifest(manifest, render)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The rows recorded so far."""
        return self.manifest.rows

    def add(self, row: dict[str, Any]) -> None:
        """Record one finished input (see :meth:`Manifest.add`)."""
        self.manifest.add(row)

    @contextlib.contextmanager
    def progress(self, description: str, total: int) -> Iterator[tuple[Progress, TaskID]]:
        """Create the folder and show a progress bar over ``total`` inputs in the block.

        Yields the bar and its task; the manifest is written when the block ends, also when it
        fails (see :func:`recorded`).
        """
        ensure_writable_dir(self.manifest.path.parent)
        with recorded(self.manifest), progress_bar() as bar:
            yield bar, bar.add_task(description, total=total)


@contextlib.contextmanager
def progress_counter(description: str, total: int) -> Iterator[Callable[..., None]]:
    """Show a progress bar over ``total`` items in the block; yields ``advance(k=1)``."""
    with progress_bar() as bar:
        task = bar.add_task(description, total=total)

        def advance(k: int = 1) -> None:
            bar.advance(task, k)

        yield advance


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
    from histoblur.io.images import check_sizes, list_images

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
