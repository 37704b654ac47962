"""The synthesis comparison: segmenters trained on different synthetic blur, against baselines.

    .venv/bin/python benchmarks/segmentation_compare.py [--runs runs/compare] [--bench runs/bench]
        [--out runs/compare/report]

Scores, side by side on the same real-blur benchmarks (test sets built with seed 0, see
docs/segmentation.md), every ``best`` checkpoint under ``--runs`` (one per synthesis variant),
the shipped default model, and the classical baselines: HistoQC-style smoothed-Laplacian
threshold at its fixed threshold (chosen on synthetic blur) and at the best threshold for each
benchmark (an oracle: it sees the test labels), and the relative Laplacian-energy rule. It also
reports the fraction of pixels each detector flags on images with no blur. ``fqpath_bottom`` is
built from the bottom half of the FQPath pair only, the half no learned generator trained on
(docs/learned-synthesis.md gives the command). Prints a Markdown
table and writes ``scores.json`` and prediction pictures into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from histoblur.inference.baseline import smoothed_laplacian_map
from histoblur.inference.benchmark import evaluate_benchmark, flagged_fraction
from histoblur.inference.detectors import make_detector
from histoblur.inference.segment import Segmenter, overlay
from histoblur.io.images import write_image
from histoblur.io.report import outline
from histoblur.synthesis.real_pairs import iter_benchmark

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TEST_SETS = ("fqpath", "fqpath_bottom", "smear_p03")
NEGATIVES = ("sharp/he", "artifacts")
THRESHOLDS = np.round(np.arange(0.004, 0.061, 0.002), 3)


def oracle_histoqc(bench: Path) -> tuple[float, float]:
    """Best Dice of the HistoQC-style rule over thresholds, chosen on the benchmark itself."""
    maps, truths = [], []
    for image, truth, _ in iter_benchmark(bench):
        maps.append(smoothed_laplacian_map(image).ravel())
        truths.append(truth.ravel())
    m, t = np.concatenate(maps), np.concatenate(truths)
    best = (0.0, float(THRESHOLDS[0]))
    for th in THRESHOLDS:
        p = m <= th
        d = 2 * float((p & t).sum()) / max(1, int(p.sum() + t.sum()))
        best = max(best, (d, float(th)))
    return best


def detectors(runs: Path) -> dict[str, object]:
    """Name -> detector (image -> mask) for every checkpoint and baseline."""
    out: dict[str, object] = {}
    for ckpt in sorted(runs.glob("*/best")):
        seg = Segmenter.load(ckpt)
        out[ckpt.parent.name] = lambda im, s=seg: s.segment(im).mask
    seg = Segmenter.load("default")
    out["default (shipped)"] = lambda im, s=seg: s.segment(im).mask
    for name, fn in ((n, make_detector(n)) for n in ("laplacian", "histoqc")):
        out[f"baseline: {name}"] = fn
    return out


def pictures(bench: Path, out: Path, n: int = 6) -> None:
    """A grid of real-blur tiles: truth outline | default model overlay | HistoQC-style mask."""
    seg = Segmenter.load("default")
    rows = []
    for image, truth, record in iter_benchmark(bench):
        if record["kind"] != "mixed-region" or len(rows) >= n:
            continue
        result = seg.segment(image)
        rows.append(
            np.concatenate(
                [
                    outline(image, truth),
                    outline(overlay(image, result.mask, result.probability), truth),
                    outline(
                        np.where(make_detector("histoqc")(image), 255, 0).astype(np.uint8), truth
                    ),
                ],
                axis=1,
            )
        )
    write_image(out / f"predictions_{bench.name}.png", np.concatenate(rows, axis=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/compare"))
    parser.add_argument("--bench", type=Path, default=Path("runs/bench"))
    parser.add_argument("--out", type=Path, default=Path("runs/compare/report"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    benches = [args.bench / name for name in TEST_SETS if (args.bench / name).is_dir()]
    folders = [DATA / name for name in NEGATIVES if (DATA / name).is_dir()]
    results: dict[str, dict[str, object]] = {}
    for name, detect in detectors(args.runs).items():
        t0 = time.perf_counter()
        row: dict[str, object] = {}
        for bench in benches:
            scores = evaluate_benchmark(detect, bench).row()
            row[bench.name] = {k: scores[k] for k in ("dice", "iou", "sharp_flagged")}
        for folder in folders:
            row[folder.relative_to(DATA).as_posix()] = flagged_fraction(detect, folder)["flagged"]
        results[name] = row
        print(f"scored {name} in {time.perf_counter() - t0:.0f} s", flush=True)
    oracle = {b.name: oracle_histoqc(b) for b in benches}
    head = ["detector", *[f"{b.name} Dice / IoU / FP" for b in benches], *NEGATIVES]
    print("\n| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, row in results.items():
        cells = [name]
        for b in benches:
            s = row[b.name]
            cells.append(f"{s['dice']:.3f} / {s['iou']:.3f} / {s['sharp_flagged']}")
        cells += [str(row.get(f, "")) for f in NEGATIVES]
        print("| " + " | ".join(cells) + " |")
    cells = ["baseline: histoqc, oracle threshold"]
    cells += [f"{oracle[b.name][0]:.3f} (t={oracle[b.name][1]})" for b in benches]
    print("| " + " | ".join(cells + [""] * len(NEGATIVES)) + " |")
    (args.out / "scores.json").write_text(
        json.dumps({"results": results, "histoqc_oracle": oracle}, indent=2) + "\n"
    )
    for bench in benches:
        pictures(bench, args.out)
    print(f"\nwrote {args.out / 'scores.json'} and prediction pictures")


if __name__ == "__main__":
    main()
