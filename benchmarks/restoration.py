"""Artifact restoration (ArtiFusion): the paper's Tables 1 and 2 with our numbers, and the loop.

    python benchmarks/restoration.py --model swin=runs/restore/swin-long/best \
        --model add=runs/restore/swin-add/best --model conv=runs/restore/conv/best \
        [--tiles 8] [--tile 256] [--sweep swin] [--sweep-cases 3] [--paper-cases 1] \
        [--pictures docs/images] [--out runs/bench/restoration]

Test cases: ``--tiles`` crops (``--tile`` px, at least half tissue) of the held-out sharp
images (every 6th source, never trained on), each given one fold, bubble, marker-ink and blurred
region (:mod:`histoblur.synthesis.artifacts`; the mask is exactly the changed pixels) and one
64 px block of missing data. Printed:

1. restoration (Table 1 + Table 2's time): every model with the fast sampler (the first also
   starting from the artifact, strength 0.5), the OpenCV Telea / Navier-Stokes inpainting
   baselines and the unrestored input: L2 over the artifact region, MSE, SSIM, PSNR (whole
   tile), FSIM (FSIMc on RGB), SRE, seconds per tile;
2. batching: seconds per tile restoring the first ``--batch`` tiles at once (their windows in
   one batch) against one at a time;
3. passes sweep (first ``--sweep`` model, first ``--sweep-cases`` cases): PSNR / SSIM / L2
   against the number of denoiser passes, from RePaint's 2,410 (first ``--paper-cases``) down
   to 10;
4. detection and the loop: Dice of the threshold detector and the blur segmenter against each
   kind's mask, their flagged share of the clean tiles, and the flagged share before and after
   ``detect -> restore -> detect`` on the first ``--loop-cases`` cases.

``--pictures DIR``: the gradual denoising (t = 150, 100, 50, 0) of one case per kind, as the
paper's Fig. 4 (``restoration_denoising.jpg``), the threshold loop (``restoration_loop.jpg``)
and one case per kind through Telea, ring harmonisation and the recipe
(``restoration_recipe.jpg``). Timings are wall-clock on this machine with ``--threads`` torch
threads.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from histoblur.diffusion.regional import RECIPE, RestoreSettings, denoiser_passes, restore_region
from histoblur.inference.detectors import make_detector
from histoblur.inference.inpaint import inpaint
from histoblur.inference.restore import Restorer, detect_and_restore, restoring
from histoblur.io.images import from_float, to_float, write_image
from histoblur.io.report import outline
from histoblur.metrics import dice, fsim, masked_l2, mse, psnr, sre, ssim
from histoblur.synthesis.artifacts import ARTIFACTS, add_artifact
from histoblur.synthesis.dataset import load_rgb, usable_sources
from histoblur.training.data import holdout_split
from histoblur.wsi.tissue import tissue_fraction

FAST = RestoreSettings("ddim", 10, jump_length=2, resamples=3, eta=1.0)
FROM_ARTIFACT = RestoreSettings("ddim", 20, jump_length=2, resamples=3, eta=1.0, strength=0.5)
FROM_HARMONISED = RECIPE  # the harmonised fill, 6 low-noise DDIM steps (t <= 5), half kept
FULL_WEIGHT = replace(RECIPE, weight=1.0)  # the same walk keeping all of the network's change
FROM_TELEA = replace(RECIPE, start="telea")
KINDS = (*ARTIFACTS, "block")  # block: a 64 px square of missing data (flat white)
BLOCK = 64
MARGIN = 4  # px of known tissue around the region in the region SSIM / FSIM crop
SWEEP = {
    "RePaint, paper (T=250, jump 10 x 10)": RestoreSettings("ddpm", None, 10, 10),
    "DDPM, all 250 steps": RestoreSettings("ddpm", None, 0, 1),
    "DDIM 25": RestoreSettings("ddim", 25, 0, 1, eta=0.0),
    "DDIM 10": RestoreSettings("ddim", 10, 0, 1, eta=0.0),
    "ancestral 10": RestoreSettings("ddim", 10, 0, 1, eta=1.0),
    "fast: ancestral 10, jump 2 x 3": FAST,
    "from the artifact, strength 0.5, ancestral 10": RestoreSettings(
        "ddim", 20, 0, 1, eta=1.0, strength=0.5
    ),
    "from the artifact, strength 0.5, ancestral 10, jump 2 x 3": FROM_ARTIFACT,
}
PICTURE_TIMES = (150, 100, 50, 0)
COLUMNS = ["L2", "MSE", "SSIM", "PSNR", "FSIM", "SRE", "rPSNR", "rSSIM", "rFSIM", "seconds"]
PARTS = ("restoration", "batching", "sweep", "detection")


@dataclass(frozen=True)
class Case:
    """A held-out tile with one artifact: ``truth`` and ``degraded`` uint8 RGB, ``mask`` bool."""

    name: str
    kind: str
    truth: np.ndarray
    degraded: np.ndarray
    mask: np.ndarray


def make_cases(sharp_dir: Path, tile: int, tiles: int, seed: int) -> list[Case]:
    """``tiles`` held-out crops, each with every artifact kind (drawn from ``seed``)."""
    _, held = holdout_split(usable_sources(sharp_dir, tile))
    rng = np.random.default_rng(seed)
    cases, attempts = [], 0
    while len(cases) < tiles * len(KINDS) and attempts < 50 * tiles:
        attempts += 1
        image = load_rgb(str(held[attempts % len(held)]))
        y = int(rng.integers(0, image.shape[0] - tile + 1))
        x = int(rng.integers(0, image.shape[1] - tile + 1))
        crop = image[y : y + tile, x : x + tile]
        if tissue_fraction(crop) < 0.5:
            continue
        name = f"{held[attempts % len(held)].stem}_{y}_{x}"
        for kind in ARTIFACTS:
            degraded, mask = add_artifact(to_float(crop), kind, rng)
            cases.append(Case(name, kind, crop, from_float(degraded, np.uint8), mask))
        cases.append(block_case(name, crop, rng))
    return cases


def block_case(name: str, crop: np.ndarray, rng: np.random.Generator) -> Case:
    """``crop`` with a :data:`BLOCK` px square of missing data (white) at a random place."""
    y, x = (int(rng.integers(MARGIN, side - BLOCK - MARGIN)) for side in crop.shape[:2])
    mask = np.zeros(crop.shape[:2], bool)
    mask[y : y + BLOCK, x : x + BLOCK] = True
    degraded = crop.copy()
    degraded[mask] = 255
    return Case(name, "block", crop, degraded, mask)


def scores(case: Case, restored: np.ndarray) -> dict[str, float]:
    """The paper's six metrics of ``restored`` against the artifact-free truth (whole tile), and
    PSNR over the region's pixels and SSIM / FSIM over its bounding box (+ :data:`MARGIN` px)."""
    truth = case.truth
    ys, xs = np.nonzero(case.mask)
    box = np.s_[max(ys.min() - MARGIN, 0) : ys.max() + MARGIN + 1,
                max(xs.min() - MARGIN, 0) : xs.max() + MARGIN + 1]  # fmt: skip
    return {
        "rPSNR": psnr(truth[case.mask], restored[case.mask]),
        "rSSIM": ssim(truth[box], restored[box]),
        "rFSIM": fsim(truth[box], restored[box]),
        "L2": masked_l2(truth, restored, case.mask),
        "MSE": mse(truth, restored),
        "SSIM": ssim(truth, restored),
        "PSNR": psnr(truth, restored),
        "FSIM": fsim(truth, restored),
        "SRE": sre(truth, restored),
    }


def evaluate(cases: list[Case], method: Callable[[Case], np.ndarray]) -> list[dict[str, float]]:
    """Per case: the metrics of ``method`` and its seconds (outside the mask checked unchanged)."""
    rows = []
    for case in cases:
        started = time.perf_counter()
        restored = method(case)
        seconds = time.perf_counter() - started
        outside = ~case.mask
        assert np.array_equal(restored[outside], case.degraded[outside]), "outside changed"
        rows.append({**scores(case, restored), "seconds": seconds})
    return rows


def mean(rows: list[dict[str, float]], cases: list[Case], kind: str | None = None) -> dict:
    """Metrics averaged over the cases of ``kind`` (all cases: None)."""
    picked = [r for r, c in zip(rows, cases, strict=True) if kind in (None, c.kind)]
    return {key: float(np.mean([r[key] for r in picked])) for key in picked[0]}


def diffusion(restorer: Restorer, settings: RestoreSettings) -> Callable[[Case], np.ndarray]:
    """A method restoring with ``restorer`` and ``settings`` (seed 0)."""
    return lambda case: restorer.restore(case.degraded, case.mask, settings, seed=0)


def table(title: str, rows: dict[str, dict[str, float]], columns: list[str]) -> str:
    """A markdown table of ``rows`` (method -> metrics)."""
    formats = {"L2": "{:.4f}", "MSE": "{:.5f}", "SSIM": "{:.4f}", "FSIM": "{:.4f}"}
    lines = [f"\n### {title}\n", "| method | " + " | ".join(columns) + " |"]
    lines.append("|---|" + "---|" * len(columns))
    for name, row in rows.items():
        cells = [formats.get(c, "{:.2f}").format(row[c]) if c in row else "" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def strip(panels: list[np.ndarray]) -> np.ndarray:
    """Panels side by side with white gaps."""
    padded = [np.pad(p, ((2, 2), (2, 2), (0, 0)), constant_values=255) for p in panels]
    return np.concatenate(padded, axis=1)


def detection(
    cases: list[Case],
    restorer: Restorer,
    segmenter_model: str,
    pictures: Path | None,
    loop_cases: int,
) -> dict[str, dict]:
    """Per detector: Dice per kind, flagged share of clean tiles, and the loop's flagged share
    before / after on the first ``loop_cases`` cases.

    With ``pictures``: one row per kind of the threshold loop: input with the artifact (green)
    and what was flagged (red), the restored tile with what is still flagged, the truth.
    """
    out = {}
    for name in ("threshold", "segmenter"):
        detect = make_detector(name, segmenter_model)
        row: dict[str, float] = {}
        for kind in ARTIFACTS:
            subset = [c for c in cases if c.kind == kind]
            row[f"Dice {kind}"] = float(np.mean([dice(c.mask, detect(c.degraded)) for c in subset]))
        clean = {c.name: c.truth for c in cases}
        row["flagged clean"] = float(np.mean([detect(t).mean() for t in clean.values()]))
        looped = cases[:loop_cases]
        fill = restoring(restorer, RECIPE)
        loops = [detect_and_restore(fill, detect, c.degraded) for c in looped]
        row["flagged before"] = float(np.mean([loop.flagged_fraction for loop in loops]))
        row["flagged after"] = float(np.mean([loop.after_fraction for loop in loops]))
        out[name] = row
        if pictures is not None and name == "threshold" and len(looped) >= len(ARTIFACTS):
            rows = []
            for kind in ARTIFACTS:
                k = next(i for i, c in enumerate(cases) if c.kind == kind)
                marked = outline(outline(cases[k].degraded, cases[k].mask, (0, 200, 0)),
                                  loops[k].flagged, (220, 0, 0))  # fmt: skip
                after = outline(loops[k].restored, loops[k].after, (220, 0, 0))
                rows.append(strip([marked, after, cases[k].truth]))
            write_image(pictures / "restoration_loop.jpg", np.concatenate(rows, axis=0))
    print(table("Detection and the detect -> restore -> detect loop", out, list(out["threshold"])))
    return out


def fig4(restorer: Restorer, cases: list[Case], out: Path) -> None:
    """Rows: input, the region's x_t at t = 150, 100, 50 (DDPM, all steps), the result (t = 0)
    and the truth; one row per kind."""
    rows = []
    for kind in ARTIFACTS:
        case = next(c for c in cases if c.kind == kind)
        seen: dict[int, np.ndarray] = {}

        image = torch.from_numpy(to_float(case.degraded).transpose(2, 0, 1)[None].copy())
        mask = torch.from_numpy(case.mask[None, None].copy())

        def observe(t: int, x: torch.Tensor, seen=seen, image=image, mask=mask) -> None:
            if t in PICTURE_TIMES:  # the region being denoised, in the untouched input
                shown = torch.where(mask, x, image)[0].permute(1, 2, 0).numpy()
                seen[t] = from_float(shown, np.uint8)

        generator = torch.Generator().manual_seed(0)
        final = restore_region(
            restorer.model, image.float(), mask, restorer.schedule,
            RestoreSettings("ddpm", None, 0, 1), generator, observe,
        )  # fmt: skip
        seen[0] = from_float(final[0].permute(1, 2, 0).numpy(), np.uint8)
        marked = outline(case.degraded, case.mask, (0, 200, 0))
        rows.append(strip([marked] + [seen[t] for t in PICTURE_TIMES] + [case.truth]))
    write_image(out, np.concatenate(rows, axis=0))


def recipe_picture(restorer: Restorer, cases: list[Case], out: Path) -> None:
    """One row per kind: the artifact (outlined), Telea, ring harmonisation, the recipe, truth."""
    rows = []
    for kind in KINDS:
        case = next(c for c in cases if c.kind == kind)
        rows.append(strip([
            outline(case.degraded, case.mask, (0, 200, 0)),
            inpaint(case.degraded, case.mask, "telea"),
            inpaint(case.degraded, case.mask, "harmonise"),
            restorer.restore(case.degraded, case.mask, RECIPE, seed=0),
            case.truth,
        ]))  # fmt: skip
    write_image(out, np.concatenate(rows, axis=0))


def restoration(models: dict[str, Restorer], cases: list[Case]) -> dict[str, dict]:
    """Table 1: baselines and every model with the fast sampler, all cases and per kind."""
    methods: dict[str, Callable[[Case], np.ndarray]] = {
        "input (artifact, not restored)": lambda c: c.degraded,
        "OpenCV Telea": lambda c: inpaint(c.degraded, c.mask, "telea"),
        "OpenCV Navier-Stokes": lambda c: inpaint(c.degraded, c.mask, "ns"),
        "Laplace fill": lambda c: inpaint(c.degraded, c.mask, "laplace"),
        "ring harmonisation": lambda c: inpaint(c.degraded, c.mask, "harmonise"),
    }
    for name, restorer in models.items():
        methods[f"{name} ({denoiser_passes(FAST, restorer.schedule)} passes)"] = diffusion(
            restorer, FAST
        )
    name, restorer = next(iter(models.items()))
    passes = denoiser_passes(FROM_ARTIFACT, restorer.schedule)
    methods[f"{name}, from the artifact ({passes} passes)"] = diffusion(restorer, FROM_ARTIFACT)
    for label, settings in (
        ("from the Telea fill, half weight", FROM_TELEA),
        ("from the harmonised fill, full weight", FULL_WEIGHT),
        ("the recipe: from the harmonised fill, half weight", FROM_HARMONISED),
    ):
        passes = denoiser_passes(settings, restorer.schedule)
        methods[f"{name}, {label} ({passes} passes)"] = diffusion(restorer, settings)
    per_case = {}
    for name, method in methods.items():
        per_case[name] = evaluate(cases, method)
        print(f"  {name}: {mean(per_case[name], cases)['PSNR']:.2f} dB", flush=True)
    results = {}
    for kind in (None, *KINDS):
        rows = {name: mean(r, cases, kind) for name, r in per_case.items()}
        results[f"restoration {kind or 'all'}"] = rows
        print(table(f"Restoration, {kind or 'all artifacts'}", rows, COLUMNS), flush=True)
    print(against_telea(results))
    return results


def against_telea(results: dict[str, dict]) -> str:
    """Per kind, every learned method's region metrics against Telea's: the issue's targets
    (region SSIM and FSIM above Telea, region PSNR within 1 dB)."""
    lines = ["\n### Against OpenCV Telea (region metrics)\n",
             "| kind | method | rPSNR - Telea (dB) | rSSIM / Telea | rFSIM / Telea | targets |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for kind in KINDS:
        rows = results[f"restoration {kind}"]
        telea = rows["OpenCV Telea"]
        for name, row in rows.items():
            if name.startswith(("input", "OpenCV")):
                continue
            gap = row["rPSNR"] - telea["rPSNR"]
            ssim_ratio, fsim_ratio = row["rSSIM"] / telea["rSSIM"], row["rFSIM"] / telea["rFSIM"]
            met = gap >= -1 and ssim_ratio > 1 and fsim_ratio > 1
            lines.append(f"| {kind} | {name} | {gap:+.2f} | {ssim_ratio:.3f} | {fsim_ratio:.3f} | "
                         f"{'met' if met else 'not met'} |")  # fmt: skip
    return "\n".join(lines)


def batching(models: dict[str, Restorer], cases: list[Case], size: int) -> dict[str, dict]:
    """Seconds per tile on the first ``size`` cases: one at a time, and their windows batched."""
    results = {}
    cases = cases[:size]
    for name, restorer in models.items():
        timings = {}
        for label, chunk in (("alone", 1), ("batched", size)):
            started = time.perf_counter()
            for k in range(0, len(cases), chunk):
                part = cases[k : k + chunk]
                restorer.restore_many([c.degraded for c in part], [c.mask for c in part], FAST,
                                      batch_size=size)  # fmt: skip
            timings[label] = (time.perf_counter() - started) / len(cases)
        results[f"batching {name}"] = timings
        print(f"  {name}: {timings['alone']:.2f} s per tile alone, {timings['batched']:.2f} s in "
              f"batches of {size} ({timings['alone'] / timings['batched']:.2f}x)")  # fmt: skip
    return results


def sweep(restorer: Restorer, cases: list[Case], count: int, paper: int) -> dict[str, dict]:
    """Quality against denoiser passes on the first case of each kind (``count`` of them)."""
    chosen = [next(c for c in cases if c.kind == k) for k in ARTIFACTS][:count]
    rows = {}
    for label, settings in SWEEP.items():
        subset = chosen[:paper] if "paper" in label else chosen
        if not subset:
            continue
        row = mean(evaluate(subset, diffusion(restorer, settings)), subset)
        row["passes"] = denoiser_passes(settings, restorer.schedule)
        row["cases"] = len(subset)
        rows[label] = row
        print(f"  {label}: {row['passes']} passes, PSNR {row['PSNR']:.2f}, "
              f"{row['seconds']:.1f} s", flush=True)  # fmt: skip
    print(table("Passes sweep", rows, ["passes", "cases", "L2", "PSNR", "SSIM", "FSIM", "seconds"]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="NAME=CHECKPOINT")
    parser.add_argument("--sharp", type=Path, default=Path("../shared/data/sharp"))
    parser.add_argument("--tiles", type=int, default=8)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--sweep", help="model for the passes sweep (default: the first)")
    parser.add_argument("--sweep-cases", type=int, default=3)
    parser.add_argument("--paper-cases", type=int, default=1)
    parser.add_argument("--segmenter", default="default")
    parser.add_argument("--loop-cases", type=int, default=9, help="cases run through the loop")
    parser.add_argument("--batch", type=int, default=8, help="tiles per batch for the timing")
    parser.add_argument("--pictures", type=Path)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/restoration"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", nargs="*", default=[], choices=PARTS, help="parts to leave out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    models = {n: Restorer.load(p, args.device) for n, p in (m.split("=", 1) for m in args.model)}
    cases = make_cases(args.sharp, args.tile, args.tiles, args.seed)
    print(f"{len(cases)} cases ({args.tiles} held-out {args.tile} px tiles x {KINDS})")
    results: dict[str, dict] = {}
    if "restoration" not in args.skip:
        results.update(restoration(models, cases))
    if "batching" not in args.skip:
        results.update(batching(models, cases, args.batch))
    restorer = models[args.sweep or next(iter(models))]
    if "sweep" not in args.skip:
        results["sweep"] = sweep(restorer, cases, args.sweep_cases, args.paper_cases)
    if "detection" not in args.skip:
        results["detection"] = detection(
            cases, restorer, args.segmenter, args.pictures, args.loop_cases
        )
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    if args.pictures:
        fig4(restorer, cases, args.pictures / "restoration_denoising.jpg")
        recipe_picture(restorer, cases, args.pictures / "restoration_recipe.jpg")
        print(f"wrote pictures to {args.pictures}")


if __name__ == "__main__":
    main()
