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
    Manifest,
    add_device,
    add_max_pixels,
    add_overwrite,
    add_seed,
    log,
    option_error,
    parse_params,
    progress_bar,
    recorded,
)
from histoblur.errors import InputError, ParameterError
from histoblur.io.atomic import ensure_writable_dir
from histoblur.io.images import check_unique_stems, read_image, write_image
from histoblur.io.paths import check_output_files
from histoblur.models.hub import select_device
from histoblur.synthesis import BLUR_KINDS, DegradeSpec, apply_blur
from histoblur.synthesis.dataset import DatasetConfig, DegradeSampler, build_dataset
from histoblur.synthesis.learned import learned_device
from histoblur.synthesis.masks import PolygonMaskSampler
from histoblur.synthesis.registry import LEARNED_KINDS, parse_method

DATASET = DatasetConfig()  # the parser's defaults are the config's


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``synth blur`` and ``synth dataset``."""
    synth = sub.add_parser("synth", help="synthesize blur: whole images or labelled datasets")
    verbs = synth.add_subparsers(dest="synth_command", metavar="WHAT", required=True)
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
    add_overwrite(blur)
    add_max_pixels(blur)
    add_device(blur, what="learned kinds (gan:, unit-ddpm:) run")
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
    ds.add_argument("--n", type=int, default=DATASET.n, help=f"number of samples ({DATASET.n})")
    ds.add_argument(
        "--tile", type=int, default=DATASET.tile, help=f"tile side, px ({DATASET.tile})"
    )
    ds.add_argument(
        "--min-tissue",
        type=float,
        default=DATASET.min_tissue,
        help=f"min tissue fraction ({DATASET.min_tissue})",
    )
    ds.add_argument(
        "--feather",
        type=float,
        default=DATASET.masks.feather,
        help=f"mask edge softness, px ({DATASET.masks.feather:g})",
    )
    ds.add_argument(
        "--noise-p",
        type=float,
        default=DATASET.degrade.noise_p,
        help=f"probability of sensor noise ({DATASET.degrade.noise_p:g})",
    )
    ds.add_argument(
        "--jpeg-p",
        type=float,
        default=DATASET.degrade.jpeg_p,
        help=f"probability of JPEG ({DATASET.degrade.jpeg_p:g})",
    )
    ds.add_argument(
        "--config",
        type=Path,
        metavar="FILE.yaml",
        help="every synthesis option as a YAML DatasetConfig (the options above are then ignored)",
    )
    add_overwrite(ds, "a non-empty --out (never one that holds --sharp or --config)")
    add_max_pixels(ds)
    add_device(ds, what="learned kinds (gan:, unit-ddpm:) run")
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
    with learned_device(args.device), progress_bar() as bar:
        task = bar.add_task("synthesizing", total=config.n)
        out = build_dataset(
            args.sharp, args.out, config, args.overwrite, lambda k: bar.advance(task, k), inputs
        )
    log.info(f"Wrote {config.n} samples to {out} (images/, masks/, manifest.jsonl).")
    return 0


def _jsonl(rows: list[dict[str, Any]], failure: str | None) -> str:
    """``params.jsonl``: one JSON line per blurred image (a failure adds no line)."""
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)


def run_blur(args: argparse.Namespace) -> int:
    """Blur each image with a spec drawn from the (possibly fixed) parameters."""
    kind, fixed = parse_method(args.method)
    sampler = kind.sampler.build(**{**parse_params(args.param), **fixed})
    try:
        post = DegradeSpec(
            photons=args.photons,
            read_noise=args.read_noise,
            jpeg_quality=args.jpeg_quality,
            seed=args.seed,
        )
    except ValidationError as exc:
        raise option_error(exc) from None
    check_unique_stems(args.images, "Blur them into different --out folders.")
    outputs = [args.out / f"{path.stem}.png" for path in args.images]
    check_output_files([*outputs, args.out / "params.jsonl"], args.images, args.overwrite)
    images = [(path, read_image(path)) for path in args.images]  # fail before writing anything
    specs = [sampler.sample(np.random.default_rng([args.seed, i])) for i in range(len(images))]
    select_device(args.device)  # a bad --device fails before any output exists
    out_dir = ensure_writable_dir(args.out)
    record = Manifest(out_dir / "params.jsonl", _jsonl)
    with learned_device(args.device), recorded(record), progress_bar() as bar:
        task = bar.add_task("blurring", total=len(images))
        for (path, image), spec in zip(images, specs, strict=True):
            write_image(out_dir / f"{path.stem}.png", apply_blur(image, spec, post))
            row = {"input": str(path), "output": f"{path.stem}.png", "blur": spec.model_dump()}
            if post.active:
                row["degrade"] = post.model_dump()
            record.add(row)
            bar.advance(task)
    log.info(f"Wrote {len(images)} image(s) to {out_dir} (parameters in params.jsonl).")
    return 0
