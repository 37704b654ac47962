"""``histoblur train``: train networks from a YAML config (see :data:`TRAINERS`)."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from histoblur.cli.common import (
    add_command_group,
    add_config_file,
    add_overwrite,
    log,
    messages,
    option_error,
)
from histoblur.config import read_yaml, to_yaml
from histoblur.errors import ParameterError
from histoblur.io.paths import refuse_folder_with_inputs

console = messages()


@dataclass(frozen=True)
class Trainer:
    """One ``train`` sub-command: its config schema, how to run it, what to print after.

    ``module`` defines the schema and the function; it is imported on first use of
    :attr:`schema` or :attr:`run`, so ``train --help`` imports no trainer. ``run`` is called
    with the config and the keywords ``overwrite``, ``progress`` and ``resume``, and returns
    the run's summary.
    """

    help: str
    description: str
    module: str
    schema_name: str
    run_name: str
    report: Callable[[dict[str, Any]], list[str]]
    loss_digits: int = 4

    @property
    def schema(self) -> type[BaseModel]:
        """The config class."""
        return getattr(importlib.import_module(self.module), self.schema_name)

    @property
    def run(self) -> Callable[..., dict[str, Any]]:
        """The training function."""
        return getattr(importlib.import_module(self.module), self.run_name)


def _segmenter_report(summary: dict[str, Any]) -> list[str]:
    return [
        "last epoch: " + ", ".join(f"{k} {v}" for k, v in row.items())
        for row in summary["history"][-1:]
    ]


def _line(template: str) -> Callable[[dict[str, Any]], list[str]]:
    """A one-line report: ``template`` filled from the summary and ``last``, its last epoch."""

    def report(summary: dict[str, Any]) -> list[str]:
        return [template.format_map({**summary, "last": (summary.get("history") or [{}])[-1]})]

    return report


def _synthesis_report(summary: dict[str, Any]) -> list[str]:
    last = summary["history"][-1]
    if "val_ssim" not in last:
        return _segmenter_report(summary)
    return [
        f"validation SSIM to the real blurred side: sharp input {last['val_ssim_sharp']}, "
        f"best synthesized {summary['best_val_ssim']:.4f}"
    ]


def _latent_report(summary: dict[str, Any]) -> list[str]:
    last = summary["history"][-1]
    scores = ", ".join(f"{k} {v}" for k, v in last.items() if k.startswith("psnr"))
    return [f"best held-out loss {summary['best_val_loss']:.5f}; last epoch: {scores}"]


TRAINERS: dict[str, Trainer] = {
    "segmenter": Trainer(
        "blur segmentation U-Net on synthetic blur, validated on real blur",
        "Train a blur segmentation network. Every config field has a default; print them "
        "with --print-config. Training samples are synthesized on the fly from sharp_dir.",
        "histoblur.training.segmenter",
        "SegmenterTrainConfig",
        "train_segmenter",
        _segmenter_report,
    ),
    "classifier": Trainer(
        "blur-type classifier (in focus / defocus / motion / mixed) on synthetic blur",
        "Train the blur-type classifier on tiles synthesized on the fly from sharp_dir; "
        "a sixth of the source images is held out to select, calibrate and report.",
        "histoblur.training.classifier",
        "ClassifierTrainConfig",
        "train_classifier",
        _line(
            "held-out accuracy {heldout[accuracy]:.2%}, ECE {heldout[ece]:.3f} "
            "(raw {heldout[ece_raw]:.3f}, temperature {heldout[temperature]})"
        ),
    ),
    "deblur": Trainer(
        "DL_defocus or DL_motion deblurring network on synthetic and real aligned pairs",
        "Train a RED-Net-style deblurring network (family: defocus or motion).",
        "histoblur.training.deblur",
        "DeblurTrainConfig",
        "train_deblur",
        _line(
            "held-out PSNR {last[heldout_psnr_blurred]} dB blurred -> best "
            "{best_psnr:.3f} dB deblurred"
        ),
        loss_digits=5,
    ),
    "gan": Trainer(
        "conditional WGAN-GP blur generator on unpaired sharp and real blurred tissue",
        "Train the learned blur generator (U-Net with noise, PatchGAN critic, gradient "
        "penalty, identity loss, L1 pre-training); the aligned pairs validate it.",
        "histoblur.training.gan",
        "GanTrainConfig",
        "train_gan",
        _synthesis_report,
    ),
    "unit-ddpm": Trainer(
        "UNIT-DDPM sharp <-> blurred translation on unpaired tissue",
        "Train two domain diffusion models, each conditioned on the other domain, and two "
        "translators; the aligned pairs validate the release-time translation.",
        "histoblur.training.unit_ddpm",
        "UnitDDPMTrainConfig",
        "train_unit_ddpm",
        _synthesis_report,
    ),
    "latent": Trainer(
        "focal-axis autoencoder (baseline, weak or strong) on real focal stacks",
        "Train the autoencoder whose latent codes interpolate along the focal axis: variant "
        "baseline (reconstruction), weak (eq. 4) or strong (eq. 5, init from a weak model).",
        "histoblur.training.latent",
        "LatentTrainConfig",
        "train_latent",
        _latent_report,
        loss_digits=5,
    ),
    "restore": Trainer(
        "restoration denoiser (Swin-Transformer with time token, or CNN) on artifact-free tiles",
        "Train the DDPM denoiser that regenerates artifact regions (ArtiFusion): epsilon "
        "prediction on sharp tiles only; held-out tiles validate a regional DDIM restoration.",
        "histoblur.training.restoration",
        "RestorationTrainConfig",
        "train_restoration",
        _line(
            "held-out restoration PSNR in the region: best {best_val_psnr:.3f} dB "
            "(last {last[val_psnr_region]} dB)"
        ),
        loss_digits=5,
    ),
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add one ``train`` sub-command per entry of :data:`TRAINERS`."""
    verbs = add_command_group(sub, "train", "train a network from a YAML config")
    for name, trainer in TRAINERS.items():
        cmd = verbs.add_parser(name, help=trainer.help, description=trainer.description)
        add_config_file(cmd, "training config (YAML)")
        cmd.add_argument(
            "--set",
            action="append",
            metavar="KEY=VALUE",
            help="override a config field, dotted for nested ones (epochs=5, model.width=8)",
        )
        cmd.add_argument(
            "--out", type=Path, metavar="FOLDER", help="the run folder (replaces the config's out)"
        )
        cmd.add_argument(
            "--resume",
            action="store_true",
            help="continue the run in its out folder (same config; epochs may grow)",
        )
        add_overwrite(cmd, "an existing run folder (kept until the new run saves a checkpoint)")
        cmd.add_argument(
            "--print-config", action="store_true", help="print the resolved config and exit"
        )
        cmd.set_defaults(func=run, trainer=trainer)


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ParameterError(f"--set {key}: {part} is not a group of fields.")
    node[parts[-1]] = value


def load_config(
    path: Path | None,
    overrides: list[str] | None,
    schema: type[BaseModel] | None = None,
    out: Path | None = None,
) -> Any:
    """Read the YAML file, apply ``KEY=VALUE`` overrides and ``out``, and validate.

    ``schema``: the config class (default: the segmenter's).

    Raises:
        InputError: an unreadable, binary or invalid YAML file.
        ParameterError: an invalid field, with its dotted name.
    """
    data = read_yaml(path) if path is not None else {}
    for item in overrides or ():
        key, sep, raw = item.partition("=")
        if not sep:
            raise ParameterError(f"--set {item!r} is not of the form KEY=VALUE.")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ParameterError(f"--set {item!r}: the value is not valid YAML.") from exc
        _set_dotted(data, key.strip(), value)
    if out is not None:
        data["out"] = str(out)
    schema = schema or TRAINERS["segmenter"].schema
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise option_error(exc, "training config field", flags=False) from exc


def run(args: argparse.Namespace) -> int:
    """Train with the chosen trainer, then print its summary and where the checkpoints went."""
    trainer: Trainer = args.trainer
    if args.resume and args.overwrite:
        raise ParameterError(
            "Pass --resume to continue a run or --overwrite to start it again, not both."
        )
    config = load_config(args.config, args.set, trainer.schema, args.out)
    if args.print_config:
        print(to_yaml(config))
        return 0
    if args.config is not None:  # the trainers protect the inputs their config names
        refuse_folder_with_inputs(config.out, [args.config], "out")
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        "{task.fields[loss]}",
    )
    with Progress(*columns, console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task("training", total=config.epochs * config.steps_per_epoch, loss="")

        def progress(step: int, total: int, info: dict[str, float]) -> None:
            bar.update(task, completed=step, loss=f"loss {info['loss']:.{trainer.loss_digits}f}")

        summary = trainer.run(
            config, overwrite=args.overwrite, progress=progress, resume=args.resume
        )
    for line in trainer.report(summary):
        log.info(line)
    log.info(f"Checkpoints in {config.out}/best and {config.out}/last.")
    return 0
