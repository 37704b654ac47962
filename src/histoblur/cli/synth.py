"""``histoblur synth``: blur whole images, or build a pixel-labelled dataset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import ValidationError

from histoblur.cli.common import (
    Option,
    OutputFolder,
    add_command_group,
    add_config_file,
    add_config_options,
    add_device,
    add_file_options,
    add_seed,
    config_from_args,
    log,
    option_error,
    parse_params,
    progress_counter,
)
from histoblur.errors import InputError, ParameterError
from histoblur.io.images import read_image, write_image
from histoblur.models.hub import select_device
from histoblur.synthesis import BLUR_KINDS, DegradeSpec, apply_blur
from histoblur.synthesis.dataset import DatasetConfig, DegradeSampler, build_dataset
from histoblur.synthesis.learned import learned_device
from histoblur.synthesis.masks import PolygonMaskSampler
from histoblur.synthesis.registry import LEARNED_KINDS, parse_method

DATASET = DatasetConfig()  # the parser's defaults are the config's
LEARNED = "learned kinds (gan:, unit-ddpm:) run"  # what --device places


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``synth blur`` and ``synth dataset``."""
    verbs = add_command_group(sub, "synth", "synthesize blur: whole images or labelled datasets")
    kinds = "; ".join(
        f"{k.name}: {k.summary}" for k in (*BLUR_KINDS.values(), *LEARNED_KINDS.values())
    )

    blur = verbs.add_parser(
        "blur",
        help="blur whole images with one blur kind",
        description=f"Blur whole images into OUT/<stem>.png (parameters in OUT/params.jsonl; "
        f"existing outputs are replaced only with --overwrite). Kinds: {kinds}.",
    )
    blur.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    blur.add_argument(
        "--method",
        required=True,
        metavar="KIND",
        help="a blur kind, or a learned one: gan:default, gan:PATH, unit-ddpm:PATH",
    )
    blur.add_argument(
        "--param",
        action="append",
        metavar="K=V",
        help="fix a parameter (sigma=3) or give a range to sample from (sigma=[1,4])",
    )
    blur.add_argument("--out", required=True, type=Path, help="output folder")
    blur.add_argument("--photons", type=float, help="add Poisson shot noise at this photon count")
    blur.add_argument("--read-noise", type=float, help="add Gaussian read noise (sigma, 0-1 units)")
    blur.add_argument("--jpeg-quality", type=int, help="JPEG re-compress at this quality")
    add_file_options(blur)
    add_device(blur, what=LEARNED)
    add_seed(blur)
    blur.set_defaults(func=run_blur)

    ds = verbs.add_parser("dataset", help="build an (image, mask) dataset from sharp tiles")
    ds.add_argument("--sharp", required=True, type=Path, help="folder of sharp images (recursive)")
    ds.add_argument("--out", required=True, type=Path, help="output folder (created)")
    ds.add_argument(
        "--method",
        default=",".join(DATASET.methods),
        help=f"comma-separated kinds (default {','.join(DATASET.methods)}; any of "
        + ", ".join(BLUR_KINDS)
        + ", or gan:PATH / unit-ddpm:PATH)",
    )
    ds.add_argument(
        "--param",
        action="append",
        metavar="K=V",
        help="fix or range a parameter of every --method that has it (unit-ddpm start=0.3)",
    )
    add_config_options(
        ds,
        DATASET,
        Option("--n", int, "number of samples ({})"),
        Option("--tile", int, "tile side, px ({})"),
        Option("--min-tissue", float, "min tissue fraction ({})"),
        Option("--feather", float, "mask edge softness, px ({:g})", field="masks.feather"),
        Option("--noise-p", float, "probability of sensor noise ({:g})", field="degrade.noise_p"),
        Option("--jpeg-p", float, "probability of JPEG ({:g})", field="degrade.jpeg_p"),
    )
    add_config_file(
        ds, "every synthesis option as a YAML DatasetConfig (the options above are then ignored)"
    )
    add_file_options(ds, "a non-empty --out (never one that holds --sharp or --config)")
    add_device(ds, what=LEARNED)
    add_seed(ds)
    ds.set_defaults(func=run_dataset)


def method_ranges(methods: tuple[str, ...], params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``--param`` values for every method whose sampler has that field.

    Raises:
        ParameterError: a parameter no method has.
    """
    ranges: dict[str, dict[str, Any]] = {}
    used: set[str] = set()
    for method in methods:
        kind, _ = parse_method(method)
        own = {k: v for k, v in params.items() if k in kind.sampler.model_fields}
        used |= set(own)
        if own:
            ranges[method] = own
    unused = sorted(set(params) - used)
    if unused:
        raise ParameterError(f"No --method has the parameter(s) {', '.join(unused)}.")
    return ranges


def dataset_config(args: argparse.Namespace, methods: tuple[str, ...]) -> DatasetConfig:
    """The dataset's config: the ``--config`` file, or the command-line options."""
    if args.config is not None:
        if not args.config.is_file():
            raise InputError(f"Dataset config {args.config} does not exist.")
        try:
            data = yaml.safe_load(args.config.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise InputError(
                f"Cannot read dataset config {args.config}: it is not a readable YAML file."
            ) from exc
        if not isinstance(data, dict):
            raise InputError(f"Dataset config {args.config} must be a mapping of options.")
        return DatasetConfig.model_validate(data)
    return DatasetConfig(
        methods=methods,
        ranges=method_ranges(methods, parse_params(args.param)),
        n=args.n,
        tile=args.tile,
        seed=args.seed,
        min_tissue=args.min_tissue,
        masks=PolygonMaskSampler(feather=args.feather),
        degrade=DegradeSampler(noise_p=args.noise_p, jpeg_p=args.jpeg_p),
    )


def run_dataset(args: argparse.Namespace) -> int:
    """Build the dataset and print where it went."""
    methods = tuple(m.strip() for m in args.method.split(",") if m.strip())
    try:
        config = dataset_config(args, methods)
    except ValidationError as exc:
        raise option_error(exc, "dataset option", flags=args.config is None) from None
    inputs = [args.sharp] + ([args.config] if args.config is not None else [])
    with learned_device(args.device), progress_counter("synthesizing", config.n) as advance:
        out = build_dataset(args.sharp, args.out, config, args.overwrite, advance, inputs)
    log.info(f"Wrote {config.n} samples to {out} (images/, masks/, manifest.jsonl).")
    return 0


def _jsonl(rows: list[dict[str, Any]], failure: str | None) -> str:
    """``params.jsonl``: one JSON line per blurred image (a failure adds no line)."""
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)


def run_blur(args: argparse.Namespace) -> int:
    """Blur each image with a spec drawn from the (possibly fixed) parameters."""
    kind, fixed = parse_method(args.method)
    sampler = kind.sampler.build(**{**parse_params(args.param), **fixed})
    post = config_from_args(DegradeSpec, args, "photons", "read_noise", "jpeg_quality", "seed")
    folder = OutputFolder(
        args.images,
        [args.out / f"{path.stem}.png" for path in args.images],
        args.out / "params.jsonl",
        _jsonl,
        args.overwrite,
        "Blur them into different --out folders.",
    )
    images = [(path, read_image(path)) for path in args.images]  # fail before writing anything
    specs = [sampler.sample(np.random.default_rng([args.seed, i])) for i in range(len(images))]
    select_device(args.device)  # a bad --device fails before any output exists
    with learned_device(args.device), folder.progress("blurring", len(images)) as (bar, task):
        for (path, image), spec in zip(images, specs, strict=True):
            write_image(args.out / f"{path.stem}.png", apply_blur(image, spec, post))
            row = {"input": str(path), "output": f"{path.stem}.png", "blur": spec.model_dump()}
            if post.active:
                row["degrade"] = post.model_dump()
            folder.add(row)
            bar.advance(task)
    log.info(f"Wrote {len(images)} image(s) to {args.out} (parameters in params.jsonl).")
    return 0
