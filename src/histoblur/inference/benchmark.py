"""Score a blur detector on real-blur benchmarks (folders built by ``histoblur bench real-pairs``).

A detector is any function ``image -> boolean mask``. Scores are pooled over the set (micro Dice,
IoU, precision, recall) and broken down by sample kind: on ``all-sharp`` tiles every flagged
pixel is a false positive, so their flagged fraction is the detector's false-positive rate on
sharp real tissue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from histoblur.inference.detectors import Detector
from histoblur.io.images import list_images, read_image
from histoblur.metrics.segmentation import SegmentationSummary, aggregate_segmentation
from histoblur.synthesis.real_pairs import KIND_SHARP, iter_benchmark, iter_records


@dataclass(frozen=True)
class BenchmarkScores:
    """A detector's scores on one benchmark folder."""

    name: str
    overall: SegmentationSummary
    by_kind: dict[str, SegmentationSummary]
    sharp_flagged: float  # flagged fraction of pixels on all-sharp tiles (nan when none)

    def row(self) -> dict[str, Any]:
        """Flat JSON/CSV row."""
        micro = self.overall.micro
        out: dict[str, Any] = {
            "benchmark": self.name,
            "n": len(self.overall.per_image),
            "dice": round(micro.dice, 4),
            "iou": round(micro.iou, 4),
            "precision": round(micro.precision, 4),
            "recall": round(micro.recall, 4),
            "macro_dice": round(self.overall.macro.dice, 4),
            "sharp_flagged": None if np.isnan(self.sharp_flagged) else round(self.sharp_flagged, 4),
        }
        for kind, summary in sorted(self.by_kind.items()):
            out[f"dice_{kind}"] = round(summary.micro.dice, 4)
        return out


def evaluate_benchmark(
    detector: Detector,
    bench_dir: Path,
    progress: Callable[[int], None] | None = None,
    keep: dict[str, np.ndarray] | None = None,
) -> BenchmarkScores:
    """Run ``detector`` on every tile of a benchmark and score it.

    Args:
        detector: image -> boolean mask of the same height and width.
        bench_dir: benchmark folder.
        progress: called with 1 per tile.
        keep: when given, predicted masks are stored in it by sample id (for pictures).
    """
    bench_dir = Path(bench_dir)
    pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    names: dict[str, list[str]] = {}
    everything: list[tuple[np.ndarray, np.ndarray]] = []
    for image, truth, record in iter_benchmark(bench_dir):
        pred = np.asarray(detector(image), dtype=bool)
        kind = record.get("kind", "mixed-region")
        pairs.setdefault(kind, []).append((pred, truth))
        names.setdefault(kind, []).append(record["id"])
        everything.append((pred, truth))
        if keep is not None:
            keep[record["id"]] = pred
        if progress is not None:
            progress(1)
    ids = [r["id"] for r in iter_records(bench_dir)]
    overall = aggregate_segmentation(everything, ids)
    by_kind = {k: aggregate_segmentation(v, names[k]) for k, v in pairs.items()}
    sharp = pairs.get(KIND_SHARP, [])
    flagged = (
        float(sum(p.sum() for p, _ in sharp) / sum(p.size for p, _ in sharp)) if sharp else np.nan
    )
    return BenchmarkScores(bench_dir.name, overall, by_kind, flagged)


def flagged_fraction(
    detector: Detector, folder: Path, suffix_skip: str = "_mask"
) -> dict[str, Any]:
    """Fraction of pixels ``detector`` flags on every image of a folder with no blur in it.

    Files whose stem ends in ``suffix_skip`` (annotation masks) are left out.

    Returns:
        ``{"folder", "n", "flagged" (pooled), "per_image": {name: fraction}}``.
    """
    per_image: dict[str, float] = {}
    flagged = total = 0
    for path in list_images(folder):
        if suffix_skip and suffix_skip in path.stem:
            continue
        mask = np.asarray(detector(read_image(path)), dtype=bool)
        per_image[path.name] = round(float(mask.mean()), 4)
        flagged += int(mask.sum())
        total += mask.size
    return {
        "folder": str(folder),
        "n": len(per_image),
        "flagged": round(flagged / max(total, 1), 4),
        "per_image": per_image,
    }
