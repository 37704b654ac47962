"""The ``histoblur`` command: one sub-command module per verb, registered explicitly below."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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
from histoblur.errors import HistoblurError

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


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (used by ``main`` and by the docs)."""
    parser = argparse.ArgumentParser(
        prog="histoblur",
        description="Out-of-focus blur for digital pathology: synthesize, detect, measure.",
    )
    parser.add_argument("--version", action="version", version=f"histoblur {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code (0 ok, 1 error, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HistoblurError as exc:
        print(f"histoblur: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("histoblur: interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
