"""The ``histoblur`` command: one sub-command module per verb, registered explicitly below."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import NoReturn

from pydantic import ValidationError

from histoblur import __version__
from histoblur.cli import (
    bench,
    calibrate,
    classify,
    deblur,
    demo,
    evaluate,
    latent,
    qc,
    restore,
    segment,
    synth,
    train,
)
from histoblur.cli.common import option_error, set_verbosity
from histoblur.errors import HistoblurError
from histoblur.io.images import DEFAULT_MAX_PIXELS, pixel_limit

# Each module exposes ``register(subparsers)`` and sets ``func`` on its parsers.
COMMANDS = (
    synth,
    bench,
    calibrate,
    train,
    segment,
    classify,
    deblur,
    latent,
    restore,
    evaluate,
    qc,
    demo,
)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, pointing at ``--help``."""

    def error(self, message: str) -> NoReturn:
        """Print ``prog: error: message`` and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help).\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (used by ``main`` and by the docs)."""
    parser = _Parser(
        prog="histoblur",
        description="Out-of-focus blur for digital pathology: synthesize, detect, measure.",
    )
    parser.add_argument("--version", action="version", version=f"histoblur {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code (0 ok, 1 error, 2 usage)."""
    import cv2.utils.logging

    # silent: histoblur reports decoding failures itself, in one sentence
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)  # same: one sentence of ours
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    if verbose and getattr(args, "quiet", False):
        parser.error("-q/--quiet and -v/--verbose cannot be used together")
    set_verbosity(1 if verbose else -1 if getattr(args, "quiet", False) else 0)
    try:
        with pixel_limit(getattr(args, "max_pixels", None) or DEFAULT_MAX_PIXELS):
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


if __name__ == "__main__":
    sys.exit(main())
