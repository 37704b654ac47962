"""The QC repair loop: repair the regions a slide's QC flagged, then QC them again.

:func:`repair_slide` reads a QC result folder (``summary.json`` and ``blur_mask.png`` of
:func:`histoblur.inference.qc.qc_slide`) and, for each flagged region (largest first), reads a
window around it from the slide at the working resolution and:

1. finds folds and bubbles inside the region (the threshold detector's ``dark`` and ``pale``
   kinds) and restores them (:data:`histoblur.diffusion.regional.RECIPE`: the ring-harmonised
   fill refined by the denoiser, half of the refinement kept);
2. deblurs the rest of the region (:func:`histoblur.inference.deblur.deblur_image`: the
   blur-type classifier routes it to DL_defocus or DL_motion);
3. runs the QC segmenter on the window before and after and reports the blurred share of the
   region both times; a repair after which QC flags more of the region than before is
   reverted (the region is kept as it was, and the row says so), unless ``keep_worse``.

Only the region's pixels change: everything else in each window is the slide, bit for bit.
It writes ``OUT/<stem>/repair/`` (built under a temporary name, so it appears complete or not
at all): ``region_NNN.png`` (repaired; a reverted region's own pixels, its attempt in
``region_NNN_attempt.png``), ``region_NNN_before.png``, ``region_NNN_mask.png``,
``region_NNN_pair.jpg`` (before | attempt), ``repair.csv`` and ``repair.html``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import Field

from histoblur.config import Config
from histoblur.diffusion.regional import RECIPE
from histoblur.errors import InputError
from histoblur.inference.artifacts import ThresholdConfig, threshold_artifacts
from histoblur.inference.classify import BlurClassifier
from histoblur.inference.deblur import Deblurrer, Family, Kind, deblur_image
from histoblur.inference.restore import Restorer
from histoblur.inference.segment import Segmenter
from histoblur.io.atomic import atomic_dir
from histoblur.io.images import read_mask, write_image
from histoblur.io.qc_report import repair_report_html
from histoblur.io.report import outline
from histoblur.io.tables import csv_text
from histoblur.wsi.readers import best_level, open_slide, read_scaled

REPAIR_DIR = "repair"
FAMILIES: tuple[Family, ...] = ("defocus", "motion")
COLUMNS = (
    "region", "x", "y", "width", "height", "area_um2", "blur_type", "restored_px",
    "blurred_before", "blurred_after", "outcome",
)  # fmt: skip


class RepairConfig(Config):
    """Settings of :func:`repair_slide` (lengths in working-resolution pixels)."""

    max_regions: int = Field(20, ge=1, le=10_000, description="largest flagged regions repaired")
    context: int = Field(32, ge=0, le=512, description="slide pixels read around each region")
    max_side: int = Field(1024, ge=64, le=8192, description="largest window read per region")
    deblur: Kind = Field("auto", description="blur type to remove (auto: classify first)")
    restore: bool = Field(True, description="restore folds and bubbles inside the regions")
    keep_worse: bool = Field(
        False, description="keep a repair after which QC flags more of the region than before"
    )
    seed: int = 0


def flagged_regions(
    mask: np.ndarray, min_px: float, config: RepairConfig
) -> list[tuple[tuple[int, int, int, int], np.ndarray]]:
    """((x, y, w, h) window, region mask in it) of the largest regions of at least ``min_px``.

    Each window is the region's bounding box grown by ``context`` and cut to ``max_side``
    around the region's centre.

    Examples:
        >>> m = np.zeros((100, 100), bool); m[10:20, 10:30] = True; m[60:90, 50:90] = True
        >>> [box for box, _ in flagged_regions(m, 50, RepairConfig(context=4))]
        [(46, 56, 48, 38), (6, 6, 28, 18)]
    """
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    order = sorted(range(1, count), key=lambda k: -stats[k, cv2.CC_STAT_AREA])
    h, w = mask.shape
    out = []
    for k in [k for k in order if stats[k, cv2.CC_STAT_AREA] >= min_px][: config.max_regions]:
        x, y, bw, bh = (int(v) for v in stats[k, :4])
        x0, x1 = _span(x, bw, w, float(centroids[k][0]), config)
        y0, y1 = _span(y, bh, h, float(centroids[k][1]), config)
        out.append(((x0, y0, x1 - x0, y1 - y0), labels[y0:y1, x0:x1] == k))
    return out


def _span(
    start: int, size: int, limit: int, centre: float, config: RepairConfig
) -> tuple[int, int]:
    """One axis of a window: [start, start + size) grown by ``context``, cut to ``max_side``."""
    lo, hi = max(0, start - config.context), min(limit, start + size + config.context)
    if hi - lo > config.max_side:
        lo = int(np.clip(centre - config.max_side / 2, 0, limit - config.max_side))
        hi = lo + config.max_side
    return lo, hi


@dataclass
class Repairer:
    """The networks of the loop, loaded once for a cohort.

    QC's segmenter, the denoiser, the blur-type classifier and the deblurring networks.
    """

    segmenter: Segmenter
    restorer: Restorer | None  # None: folds and bubbles are left as they are
    classifier: BlurClassifier
    networks: dict[Family, Deblurrer]
    config: RepairConfig

    @classmethod
    def load(cls, segmenter: Segmenter, config: RepairConfig, device: str = "cpu") -> Repairer:
        """The shipped denoiser, classifier and deblurring networks beside ``segmenter``."""
        restorer = Restorer.load("default", device) if config.restore else None
        networks: dict[Family, Deblurrer] = {f: Deblurrer.load(f, device=device) for f in FAMILIES}
        return cls(
            segmenter, restorer, BlurClassifier.load("default", device=device), networks, config
        )

    def window(
        self, window: np.ndarray, region: np.ndarray, min_px: float, threshold: float | None
    ) -> tuple[np.ndarray, str, int, float, float, str]:
        """(repaired window, blur type, restored px, blurred share before, after, outcome).

        The outcome is ``repaired``, or ``reverted`` where QC flags more of the region after
        the repair than before (unless ``keep_worse``): the slide's pixels should then stay
        as they were (:func:`repair_slide` writes them, and the attempt beside them).

        Folds and bubbles count only as components of at least ``min_px`` (QC's smallest
        region), so dense nuclei are not taken for a fold. The blur type is classified on the
        region's own bounding box; where the classifier calls it in focus, QC's verdict wins
        and it is deblurred as defocus. Pixels outside ``region`` are ``window``'s, bit for bit.
        """
        artifacts = np.zeros_like(region)
        if self.restorer is not None:
            found = ThresholdConfig(kinds=("dark", "pale"), min_area=int(min_px))
            artifacts = threshold_artifacts(window, found) & region
        kind = self.config.deblur
        if kind == "auto":
            ys, xs = np.nonzero(region)
            crop = window[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
            label = self.classifier.classify(crop).label
            kind = "defocus" if label == "in_focus" else label
        result = deblur_image(window, kind, self.networks)  # kind is resolved above
        repaired = window.copy()
        deblur = region & ~artifacts
        repaired[deblur] = result.image[deblur]
        if artifacts.any() and self.restorer is not None:
            repaired = self.restorer.restore(repaired, artifacts, RECIPE, seed=self.config.seed)
        before = float(self.segmenter.segment(window, threshold).mask[region].mean())
        after = float(self.segmenter.segment(repaired, threshold).mask[region].mean())
        outcome = "reverted" if after > before and not self.config.keep_worse else "repaired"
        return repaired, kind, int(artifacts.sum()), before, after, outcome


def repair_slide(slide: str | Path, qc_folder: Path, repairer: Repairer) -> list[dict[str, Any]]:
    """Repair the flagged regions of ``slide`` into ``qc_folder/repair`` and return its rows.

    Raises:
        InputError: ``qc_folder`` holds no QC result, or the slide cannot be read.
    """
    config = repairer.config
    summary_path, mask_path = qc_folder / "summary.json", qc_folder / "blur_mask.png"
    if not summary_path.is_file() or not mask_path.is_file():
        raise InputError(f"{qc_folder} holds no QC result (summary.json and blur_mask.png).")
    summary = json.loads(summary_path.read_text())
    mpp, scale = float(summary["working_mpp"]), summary["working_mpp"] / summary["slide_mpp"]
    min_px = float(summary.get("parameters", {}).get("min_region_um2", 0.0)) / mpp**2
    regions = flagged_regions(read_mask(mask_path), min_px, config)
    rows: list[dict[str, Any]] = []
    reader = open_slide(slide)
    try:
        level = best_level(reader, scale)
        with atomic_dir(qc_folder / REPAIR_DIR, overwrite=True, inputs=[Path(slide)]) as tmp:
            for number, ((x, y, w, h), region) in enumerate(regions, 1):
                box0 = (x * scale, y * scale, w * scale, h * scale)
                window = read_scaled(reader, box0, (w, h), level)
                repaired, kind, restored, before, after, outcome = repairer.window(
                    window, region, min_px, summary.get("threshold")
                )
                stem = f"region_{number:03d}"
                write_image(tmp / f"{stem}.png", repaired if outcome == "repaired" else window)
                if outcome == "reverted":
                    write_image(tmp / f"{stem}_attempt.png", repaired)
                write_image(tmp / f"{stem}_before.png", window)
                write_image(tmp / f"{stem}_mask.png", region.astype(np.uint8) * 255)
                rows.append({
                    "region": stem, "x": round(box0[0]), "y": round(box0[1]),
                    "width": round(box0[2]), "height": round(box0[3]),
                    "area_um2": round(float(region.sum()) * mpp**2, 1), "blur_type": kind,
                    "restored_px": restored, "blurred_before": round(before, 4),
                    "blurred_after": round(after, 4), "outcome": outcome,
                })  # fmt: skip
                pair = (
                    outline(window, region, (220, 0, 0)),
                    outline(repaired, region, (0, 160, 0)),
                )
                write_image(tmp / f"{stem}_pair.jpg", np.concatenate(pair, axis=1))
            (tmp / "repair.csv").write_text(csv_text(rows, COLUMNS), encoding="utf-8")
            html = repair_report_html(summary.get("stem", "slide"), rows, *blurred_areas(rows))
            (tmp / "repair.html").write_text(html, encoding="utf-8")
    finally:
        reader.close()
    return rows


def blurred_areas(rows: list[dict[str, Any]]) -> tuple[float, float]:
    """Blurred area (um2) QC flags inside the regions: before, and as written (after).

    A reverted region counts as it was before.
    """
    before = sum(float(r["blurred_before"]) * float(r["area_um2"]) for r in rows)
    after = sum(
        float(r["blurred_after" if r["outcome"] == "repaired" else "blurred_before"])
        * float(r["area_um2"])
        for r in rows
    )
    return before, after
