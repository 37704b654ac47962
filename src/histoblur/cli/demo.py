"""``histoblur demo``: every blur kind on an embedded image, measured, in an HTML report."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from histoblur.cli.common import add_seed, log, messages
from histoblur.errors import ParameterError

console = messages()


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``demo``."""
    demo = sub.add_parser("demo", help="run every blur kind on an embedded image; HTML report")
    demo.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (demo_out)")
    add_seed(demo)
    demo.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo with a live status line."""
    from histoblur.demo import run_demo

    if args.seed < 0:
        raise ParameterError(f"--seed must be 0 or more, got {args.seed}.")
    start = time.perf_counter()
    with console.status("demo") as status:
        report = run_demo(args.out, args.seed, lambda k: status.update(f"blurring: {k}"))
    log.info(f"Report: {report}  ({time.perf_counter() - start:.1f} s)")
    return 0
