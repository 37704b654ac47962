"""``histoblur train``: train networks from a YAML config (``segmenter``, ``classifier``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from histoblur.errors import InputError, ParameterError
from histoblur.training.classifier import ClassifierTrainConfig, train_classifier
from histoblur.training.deblur import DeblurTrainConfig, train_deblur
from histoblur.training.segmenter import SegmenterTrainConfig, train_segmenter

console = Console(stderr=True)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train segmenter`` and ``train classifier``."""
    train = sub.add_parser("train", help="train a network from a YAML config")
    verbs = train.add_subparsers(dest="train_command", metavar="WHAT", required=True)
    seg = verbs.add_parser(
        "segmenter",
        help="blur segmentation U-Net on synthetic blur, validated on real blur",
        description=(
            "Train a blur segmentation network. Every config field has a default; print them "
            "with --print-config. Training samples are synthesized on the fly from sharp_dir."
        ),
    )
    seg.add_argument("--config", type=Path, metavar="FILE.yaml", help="training config (YAML)")
    seg.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config field, dotted for nested ones (epochs=5, model.width=8)",
    )
    seg.add_argument("--resume", action="store_true", help="continue the run in its out folder")
    seg.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    seg.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    seg.set_defaults(func=run_segmenter)
    clf = verbs.add_parser(
        "classifier",
        help="blur-type classifier (in focus / defocus / motion / mixed) on synthetic blur",
        description=(
            "Train the blur-type classifier on tiles synthesized on the fly from sharp_dir; "
            "a sixth of the source images is held out to select, calibrate and report."
        ),
    )
    clf.add_argument("--config", type=Path, metavar="FILE.yaml", help="training config (YAML)")
    clf.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field")
    clf.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    clf.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    clf.set_defaults(func=run_classifier)
    deb = verbs.add_parser(
        "deblur",
        help="DL_defocus or DL_motion deblurring network on synthetic and real aligned pairs",
        description="Train a RED-Net-style deblurring network (family: defocus or motion).",
    )
    deb.add_argument("--config", type=Path, metavar="FILE.yaml", help="training config (YAML)")
    deb.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field")
    deb.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    deb.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )
    deb.set_defaults(func=run_deblur)


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ParameterError(f"--set {key}: {part} is not a group of fields.")
    node[parts[-1]] = value


def load_config(
    path: Path | None, overrides: list[str] | None, schema: type[BaseModel] = SegmenterTrainConfig
) -> Any:
    """Read the YAML file, apply ``KEY=VALUE`` overrides and validate.

    Raises:
        InputError: unreadable YAML.
        ParameterError: an invalid field, with its dotted name.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise InputError(f"Cannot read config {path}: {exc.strerror or exc}.") from exc
        except yaml.YAMLError as exc:
            raise InputError(f"Config {path} is not valid YAML ({exc}).") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise InputError(f"Config {path} must be a mapping of field names to values.")
        data = loaded or {}
    for item in overrides or ():
        key, sep, raw = item.partition("=")
        if not sep:
            raise ParameterError(f"--set {item!r} is not of the form KEY=VALUE.")
        _set_dotted(data, key.strip(), yaml.safe_load(raw))
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ParameterError(f"Invalid training config field {where}: {first['msg']}.") from exc


def _columns() -> tuple[Any, ...]:
    return (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        "{task.fields[loss]}",
    )


def run_segmenter(args: argparse.Namespace) -> int:
    """Train and print where the checkpoints went."""
    config = load_config(args.config, args.set)
    if args.print_config:
        print(yaml.safe_dump(json.loads(config.model_dump_json()), sort_keys=False))
        return 0
    with Progress(*_columns(), console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task("training", total=config.epochs * config.steps_per_epoch, loss="")

        def progress(step: int, total: int, info: dict[str, float]) -> None:
            bar.update(task, completed=step, loss=f"loss {info['loss']:.4f}")

        summary = train_segmenter(config, args.resume, args.overwrite, progress)
    for row in summary["history"][-1:]:
        console.print("last epoch: " + ", ".join(f"{k} {v}" for k, v in row.items()))
    console.print(f"Checkpoints in {config.out}/best and {config.out}/last.")
    return 0


def run_classifier(args: argparse.Namespace) -> int:
    """Train the classifier and print its held-out report."""
    config = load_config(args.config, args.set, ClassifierTrainConfig)
    if args.print_config:
        print(yaml.safe_dump(json.loads(config.model_dump_json()), sort_keys=False))
        return 0
    with Progress(*_columns(), console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task("training", total=config.epochs * config.steps_per_epoch, loss="")

        def progress(step: int, total: int, info: dict[str, float]) -> None:
            bar.update(task, completed=step, loss=f"loss {info['loss']:.4f}")

        summary = train_classifier(config, args.overwrite, progress)
    report = summary["heldout"]
    console.print(
        f"held-out accuracy {report['accuracy']:.2%}, ECE {report['ece']:.3f} "
        f"(raw {report['ece_raw']:.3f}, temperature {report['temperature']})"
    )
    console.print(f"Checkpoints in {config.out}/best and {config.out}/last.")
    return 0


def run_deblur(args: argparse.Namespace) -> int:
    """Train a deblurring network and print its held-out PSNR."""
    config = load_config(args.config, args.set, DeblurTrainConfig)
    if args.print_config:
        print(yaml.safe_dump(json.loads(config.model_dump_json()), sort_keys=False))
        return 0
    with Progress(*_columns(), console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task("training", total=config.epochs * config.steps_per_epoch, loss="")

        def progress(step: int, total: int, info: dict[str, float]) -> None:
            bar.update(task, completed=step, loss=f"loss {info['loss']:.5f}")

        summary = train_deblur(config, args.overwrite, progress)
    last = summary["history"][-1]
    console.print(
        f"held-out PSNR {last['heldout_psnr_blurred']} dB blurred -> best "
        f"{summary['best_psnr']:.3f} dB deblurred"
    )
    console.print(f"Checkpoints in {config.out}/best and {config.out}/last.")
    return 0
