"""The ``histoblur`` command: one sub-command module per verb, registered explicitly below.

Starting the command is cheap: :data:`COMMANDS` names each sub-command's module and one-line
help, the top-level parser lists them from that table alone, and only the module of the
command given is imported (with torch, OpenCV and the networks it needs) to build its full
parser and run it. ``histoblur --help`` imports none of them.

>>> sorted(COMMANDS)[:3]
['bench', 'calibrate', 'classify']
>>> chosen_command(["-v", "segment", "--out", "o", "a.png"]), chosen_command(["--help"])
('segment', None)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple, NoReturn

from histoblur import __version__
from histoblur.errors import HistoblurError


class Command(NamedTuple):
    """One sub-command: the module whose ``register(subparsers)`` adds it, and its help line.

    ``help`` is what ``histoblur --help`` lists; it must equal the help the module registers
    (tests/test_cli_lazy.py checks every entry).
    """

    module: str
    help: str


# name -> module and help, in the order ``histoblur --help`` lists them. Each module exposes
# ``register(subparsers)``, which adds the command of that name and sets ``func`` on its parsers.
COMMANDS: dict[str, Command] = {
    "synth": Command("histoblur.cli.synth", "synthesize blur: whole images or labelled datasets"),
    "bench": Command("histoblur.cli.bench", "build benchmark sets with pixel ground truth"),
    "calibrate": Command(
        "histoblur.cli.calibrate", "fit every blur family to a real (sharp, blurred) pair"
    ),
    "train": Command("histoblur.cli.train", "train a network from a YAML config"),
    "segment": Command(
        "histoblur.cli.segment", "find blurred regions in images with a segmentation network"
    ),
    "classify": Command(
        "histoblur.cli.classify",
        "blur type of images (in_focus, defocus, motion, mixed) with calibrated probabilities",
    ),
    "deblur": Command(
        "histoblur.cli.deblur",
        "remove defocus / motion blur with DL_defocus and DL_motion (auto-routed)",
    ),
    "latent": Command("histoblur.cli.latent", "blur synthesis / deblurring along the focal axis"),
    "restore": Command(
        "histoblur.cli.restore",
        "regenerate masked artifact regions with the diffusion denoiser (ArtiFusion)",
    ),
    "evaluate": Command("histoblur.cli.evaluate", "measure results against ground truth"),
    "qc": Command(
        "histoblur.cli.qc",
        "whole-slide blur QC: masks, heatmaps, QuPath GeoJSON and reports for slides",
    ),
    "demo": Command("histoblur.cli.demo", "run every blur kind on an embedded image; HTML report"),
}


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, pointing at ``--help``."""

    def error(self, message: str) -> NoReturn:
        """Print ``prog: error: message`` and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help).\n")


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser, in full for ``commands`` (default: all of them, as the docs need).

    Every other command is a stub with its name and help line (what ``histoblur --help``
    shows), so only the modules of ``commands`` are imported.

    Raises:
        KeyError: a name that is not in :data:`COMMANDS`.
    """
    full = set(COMMANDS if commands is None else commands)
    unknown = full - set(COMMANDS)
    if unknown:
        raise KeyError(f"Unknown command(s) {', '.join(sorted(unknown))}.")
    parser = _Parser(
        prog="histoblur",
        description="Out-of-focus blur for digital pathology: synthesize, detect, measure.",
    )
    parser.add_argument("--version", action="version", version=f"histoblur {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        if name in full:
            importlib.import_module(command.module).register(sub)
        else:
            sub.add_parser(name, help=command.help, add_help=False)
    for command in (parser, *leaf_parsers(parser)):
        # leaves must not reset a -v or -q given before the command
        default = False if command is parser else argparse.SUPPRESS
        loud = command.add_mutually_exclusive_group()
        loud.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            default=default,
            help="print debug messages, and with an error the details behind it",
        )
        loud.add_argument(
            "-q",
            "--quiet",
            action="store_true",
            default=default,
            help="print only warnings and errors",
        )
    return parser


def chosen_command(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names: its first word that is not an option, if it is a command.

    Exact, since no top-level option takes a value; None for ``--help``, ``--version``, no
    command or an unknown one (the parser then says so).
    """
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def leaf_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every parser below ``parser`` that has no sub-commands of its own."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                has_children = any(
                    isinstance(a, argparse._SubParsersAction) for a in child._actions
                )
                yield from leaf_parsers(child) if has_children else (child,)


def _details(exc: BaseException) -> list[str]:
    """The chain of causes behind an error, innermost last."""
    lines = []
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        lines.append(f"  caused by {type(cause).__name__}: {cause}")
        cause = cause.__cause__ or cause.__context__
    return lines


def _fail(exc: BaseException, message: str, verbose: bool) -> int:
    print(f"histoblur: error: {message}", file=sys.stderr)
    if verbose:
        for line in _details(exc):
            print(line, file=sys.stderr)
    return 1


def _silence_libraries() -> None:
    """Silence OpenCV's and tifffile's own decoding messages: histoblur says it in a sentence.

    OpenCV reads ``OPENCV_LOG_LEVEL`` when first imported, so setting it costs no import; one
    the user set is left alone.
    """
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    if "OPENCV_LOG_LEVEL" in os.environ:
        return
    os.environ["OPENCV_LOG_LEVEL"] = "SILENT"
    if "cv2" in sys.modules:  # imported already (a notebook, the tests): tell it directly
        import cv2.utils.logging

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code (0 ok, 1 error, 2 usage)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    name = chosen_command(argv)
    parser = build_parser([name] if name else [])
    args = parser.parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    if verbose and getattr(args, "quiet", False):
        parser.error("-q/--quiet and -v/--verbose cannot be used together")
    # imported once a command runs: that command needs them anyway, --help does not
    from pydantic import ValidationError

    from histoblur.cli.common import option_error, set_verbosity

    set_verbosity(1 if verbose else -1 if getattr(args, "quiet", False) else 0)
    _silence_libraries()
    try:
        with _pixel_limit(getattr(args, "max_pixels", None)):
            return int(args.func(args) or 0)
    except HistoblurError as exc:
        return _fail(exc, str(exc), verbose)
    except ValidationError as exc:
        return _fail(exc, str(option_error(exc)), verbose)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(exc, f"{where}{exc.strerror or exc}.", verbose)
    except KeyboardInterrupt:
        print("histoblur: interrupted.", file=sys.stderr)
        return 130


def _pixel_limit(max_pixels: int | None) -> contextlib.AbstractContextManager[None]:
    """``--max-pixels`` for the block (commands without it keep the default limit)."""
    if max_pixels is None:
        return contextlib.nullcontext()
    from histoblur.io.images import pixel_limit

    return pixel_limit(max_pixels)


if __name__ == "__main__":
    sys.exit(main())
