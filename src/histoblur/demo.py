"""The demo: every blur kind on an embedded IHC image, measured, in one HTML report.

It needs no data download: the image is scikit-image's ``immunohistochemistry()`` sample, which
ships inside an installed dependency.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import skimage.data

from histoblur import __version__
from histoblur.errors import OutputError
from histoblur.inference.baseline import laplacian_blur_mask, laplacian_energy_map
from histoblur.inference.classify import BlurClassifier
from histoblur.inference.deblur import Deblurrer, deblur_image
from histoblur.inference.qc import SUMMARY, QCConfig, qc_slide
from histoblur.inference.segment import Segmenter, overlay
from histoblur.io.atomic import atomic_dir, ensure_writable_dir
from histoblur.io.images import read_image, read_mask, write_image
from histoblur.io.report import HtmlReport, heatmap, outline
from histoblur.metrics import SHARPNESS, dice, iou, masked_l2, psnr, ssim
from histoblur.synthesis import BLUR_KINDS, DegradeSpec, apply_blur, make_spec
from histoblur.synthesis.composite import composite
from histoblur.synthesis.masks import PolygonMaskSampler, mask_to_png, rasterize
from histoblur.synthesis.registry import spec_from_dict
from histoblur.synthesis.slide import GLASS, make_synthetic_slide
from histoblur.wsi.pyramid import write_pyramidal_tiff

DEMO_MASKS = PolygonMaskSampler(count=(1, 2), size=(0.22, 0.38), vertices=(6, 10))
DEMO_NOISE = DegradeSpec(photons=800.0, read_noise=0.004, jpeg_quality=75, seed=11)
DEMO_SLIDE_SIZE = (3072, 2048)  # level-0 px at 0.5 um/px: a 1.5 x 1 mm field


def embedded_image() -> np.ndarray:
    """The 512 x 512 RGB IHC sample image shipped with scikit-image."""
    return skimage.data.immunohistochemistry()


def demo_rows(
    image: np.ndarray, seed: int = 0, progress: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """Blur ``image`` with every registered kind under random polygons and measure the result.

    Returns one dict per kind with the spec, the pictures (composite, mask, baseline map) and the
    metrics: PSNR/SSIM of the composite against the sharp image, L2 inside the mask, the ratio of
    each sharpness measure (blurred / sharp, lower is blurrier) and Dice/IoU of the shipped
    segmentation model and of the Laplacian baseline detector against the true mask.
    """
    segmenter = Segmenter.load("default")
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    sharp_scores = {name: fn(image) for name, fn in SHARPNESS.items()}
    rows = []
    for kind in BLUR_KINDS.values():
        if progress is not None:
            progress(kind.name)
        spec = kind.sampler().sample(rng)
        post = DEMO_NOISE if kind.name == "mixed" else None
        blurred = apply_blur(image, spec)
        mask = rasterize(DEMO_MASKS.sample(rng, h, w), h, w)
        shown = composite(image, blurred, mask)
        if post is not None:
            from histoblur.synthesis.degrade import degrade

            shown = degrade(shown, post)
        predicted = laplacian_blur_mask(shown)
        found = segmenter.segment(shown)
        row: dict[str, Any] = {
            "kind": kind.name,
            "family": kind.family,
            "params": spec.params(),
            "post": post.model_dump() if post is not None else None,
            "blurred_fraction": float(mask.mean()),
            "psnr": float(psnr(shown, image)),
            "ssim": float(ssim(shown, image)),
            "l2_in_mask": float(masked_l2(shown, image, mask)),
            "model_dice": float(dice(found.mask, mask)),
            "model_iou": float(iou(found.mask, mask)),
            "baseline_dice": float(dice(predicted, mask)),
            "baseline_iou": float(iou(predicted, mask)),
        }
        for name, fn in SHARPNESS.items():
            row[f"{name}_ratio"] = float(fn(blurred) / max(sharp_scores[name], 1e-12))
        row["_pictures"] = (blurred, shown, mask, predicted, laplacian_energy_map(shown), found)
        rows.append(row)
    return rows


def whole_image_rows(image: np.ndarray, segmenter: Segmenter) -> list[dict[str, Any]]:
    """Share of the image each detector flags when nothing, or everything, is blurred.

    The per-kind table pastes blur into part of one image, where the Laplacian baseline's
    reference (the image's own sharpest tissue) is right by construction; these two cases are
    where a relative rule has no reference and a QC tool must still answer.

    Examples:
        >>> rows = whole_image_rows(embedded_image()[:96, :96], Segmenter.load("default", tile=64))
        >>> [r["case"] for r in rows], [r["truth"] for r in rows]
        (['sharp image', 'whole image lens-blurred (radius 4)'], [0.0, 1.0])
    """
    cases = [
        ("sharp image", image, 0.0),
        (
            "whole image lens-blurred (radius 4)",
            apply_blur(image, make_spec("lens", radius=4)),
            1.0,
        ),
    ]
    return [
        {
            "case": name,
            "truth": truth,
            "model_flagged": round(float(segmenter.segment(shown).mask.mean()), 4),
            "baseline_flagged": round(float(laplacian_blur_mask(shown).mean()), 4),
        }
        for name, shown, truth in cases
    ]


def demo_qc(image: np.ndarray, folder: Path, segmenter: Segmenter) -> dict[str, Any]:
    """Whole-slide QC of a generated pyramidal slide with a known out-of-focus rectangle.

    The slide's tissue is ``image`` repeated; one rectangle is lens-blurred (radius 6 px). The
    slide is written as a pyramidal TIFF into ``folder`` and run through ``histoblur qc``;
    returns the QC summary plus the share of the rectangle's tissue that was flagged and the
    share of flagged pixels that lie outside it.
    """
    slide = make_synthetic_slide(DEMO_SLIDE_SIZE, image, blur_radius=6.0, seed=3)  # 3 um
    path = write_pyramidal_tiff(folder / "demo_slide.tif", slide.source, slide.size, mpp=0.5)
    summary = qc_slide(path, folder, QCConfig(), segmenter)
    # the demo is built in a temporary folder: record the slide relative to the demo's output
    summary["slide"] = f"qc/{path.name}"
    (folder / path.stem / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    mask = read_mask(folder / path.stem / "blur_mask.png")  # working = level-0 resolution
    x, y, w, h = slide.blurred_box
    box_tissue = (slide.source(1, x, y, w, h) != GLASS).any(axis=-1)
    inside = np.zeros_like(mask)
    inside[y : y + h, x : x + w] = True
    return {
        **summary,
        "box_tissue_flagged": float(mask[y : y + h, x : x + w][box_tissue].mean()),
        "flagged_outside_box": float(mask[~inside].sum() / max(1, mask.sum())),
        "folder": f"qc/{path.stem}",
    }


# (name, blur applied to the sharp image): what the classify-and-deblur step is shown on
DEBLUR_CASES: tuple[tuple[str, dict[str, Any] | None], ...] = (
    ("in focus", None),
    ("defocus (lens, radius 4)", {"kind": "lens", "radius": 4.0}),
    ("motion (20 px at 30 deg)", {"kind": "motion", "length": 20.0, "angle": 30.0}),
    ("mixed (lens 3 + motion 15 px)", {"kind": "mixed", "size": 3.0, "length": 15.0, "angle": 0.0}),
)


def demo_deblur(image: np.ndarray) -> list[dict[str, Any]]:
    """Blur the centre 256 px of the image four ways, classify each version and deblur it."""
    h, w = image.shape[:2]
    image = image[max(0, h // 2 - 128) : h // 2 + 128, max(0, w // 2 - 128) : w // 2 + 128]
    classifier = BlurClassifier.load("default")
    networks = {f: Deblurrer.load(f) for f in ("defocus", "motion")}  # type: ignore[arg-type]
    rows = []
    for name, params in DEBLUR_CASES:
        blurred = image if params is None else apply_blur(image, spec_from_dict(params))
        result = deblur_image(blurred, "auto", networks, classifier)
        rows.append(
            {
                "case": name,
                "label": result.blur_type,
                **{f"p_{k}": round(v, 3) for k, v in (result.probabilities or {}).items()},
                "networks": " then ".join(result.networks) or "none (left unchanged)",
                "ssim_before": round(float(ssim(image, blurred)), 4),
                "ssim_after": round(float(ssim(image, result.image)), 4),
                "psnr_before": round(float(psnr(image, blurred)), 2),
                "psnr_after": round(float(psnr(image, result.image)), 2),
                "_pictures": (blurred, result.image),
            }
        )
    return rows


def _deblur_section(report: HtmlReport, rows: list[dict[str, Any]]) -> None:
    """Classification and deblurring: table and before/after pictures."""
    report.heading("Blur type and deblurring (histoblur classify, histoblur deblur --kind auto)")
    report.note(
        "Each version is classified by the shipped classifier (calibrated probabilities) and "
        "routed: in focus left unchanged, defocus through DL_defocus, motion through DL_motion, "
        "mixed through DL_motion then DL_defocus. SSIM and PSNR against the sharp image."
    )
    columns = [k for k in rows[0] if not k.startswith("_")]
    report.table(columns, [[r[c] for c in columns] for r in rows])
    pictures = []
    for r in rows:
        blurred, restored = r["_pictures"]
        pictures += [(f"{r['case']}: input ({r['label']})", blurred), ("deblurred", restored)]
    report.figures(pictures, max_side=240)


def _metric_columns(rows: list[dict[str, Any]]) -> list[str]:
    return [k for k in rows[0] if not k.startswith("_") and k not in ("params", "post")]


def write_report(
    rows: list[dict[str, Any]],
    image: np.ndarray,
    folder: Path,
    qc: dict[str, Any],
    deblur: list[dict[str, Any]] | None = None,
    whole: list[dict[str, Any]] | None = None,
) -> None:
    """Write report.html, metrics.csv, metrics.json and the PNGs into ``folder``."""
    report = HtmlReport(f"histoblur {__version__}: blur synthesis demo")
    report.note(
        "Every registered blur kind applied to scikit-image's IHC sample under random polygon "
        "masks. Composite = sharp outside the mask, blurred inside; the mask is exact ground "
        "truth. Sharpness ratios compare the fully blurred image with the sharp one (lower = "
        "blurrier). The shipped segmentation model (histoblur segment --model default) finds "
        "the blurred regions: model_dice/model_iou score its mask, magenta in the pictures, "
        "against the true mask (outlined). The baseline detector thresholds local Laplacian "
        "energy, for comparison."
    )
    report.note(
        "How to read the table: the baseline calls a pixel blurred when its Laplacian energy is "
        "under a quarter of the image's own 90th percentile, so on a partly blurred image its "
        "reference is the sharp part, which this composite always has; the model judges every "
        "region on its own, at its working resolution, without a reference. The true mask is "
        "the whole polygon, glass and flat stain included, where no detector can see blur, so "
        "neither reaches Dice 1. The whole-image table below is the other half of the story: "
        "a sharp image and one blurred all over, where a relative rule has no reference. "
        "docs/segmentation.md has both detectors on real optical blur."
    )
    report.figures([("sharp input (512 x 512 IHC)", image)], max_side=320)
    columns = _metric_columns(rows)
    report.heading("Metrics")
    report.table(columns, [[r[c] for c in columns] for r in rows])
    (folder / "images").mkdir()
    for r in rows:
        blurred, shown, mask, predicted, energy, found = r["_pictures"]
        stem = r["kind"]
        write_image(folder / "images" / f"{stem}_composite.png", shown)
        write_image(folder / "images" / f"{stem}_mask.png", mask_to_png(mask))
        write_image(folder / "images" / f"{stem}_model_mask.png", mask_to_png(found.mask))
        report.heading(f"{r['kind']} ({r['family']})")
        params = ", ".join(f"{k}={_short(v)}" for k, v in r["params"].items())
        report.note(params + ("; then sensor noise + JPEG 75" if r["post"] else ""))
        report.figures(
            [
                ("fully blurred", blurred),
                ("composite with true mask outline", outline(shown, mask)),
                ("true mask", mask_to_png(mask)),
                (
                    f"model: flagged (magenta), Dice {r['model_dice']:.2f}",
                    outline(overlay(shown, found.mask, found.probability), mask),
                ),
                ("model: blur probability", heatmap(found.probability, 0.0, 1.0)),
                ("local Laplacian energy (log)", heatmap(np.log10(energy + 1e-8))),
                (
                    f"baseline mask, Dice {r['baseline_dice']:.2f}",
                    outline(mask_to_png(predicted), mask),
                ),
            ]
        )
    if whole:
        report.heading("Whole-image cases: nothing blurred, everything blurred")
        keys = ["case", "truth", "model_flagged", "baseline_flagged"]
        report.table(keys, [[r[k] for k in keys] for r in whole])
    if deblur:
        _deblur_section(report, deblur)
    _qc_section(report, folder, qc)
    report.write(folder / "report.html")
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["kind", "params", *columns[1:]])
    for r in rows:
        writer.writerow(
            [r["kind"], json.dumps(r["params"], sort_keys=True), *[r[c] for c in columns[1:]]]
        )
    (folder / "metrics.csv").write_text(buf.getvalue())
    clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    (folder / "metrics.json").write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n")


def _qc_section(report: HtmlReport, folder: Path, qc: dict[str, Any]) -> None:
    """The whole-slide QC step: numbers and the slide pictures."""
    report.heading("Whole-slide QC (histoblur qc) on a generated pyramidal slide")
    w, h = qc["level0_size"]
    report.note(
        f"A {w} x {h} px pyramidal TIFF at {qc['slide_mpp']} um/px whose tissue is the IHC "
        "image repeated; one rectangle is out of focus (lens blur, radius 6 px). "
        f"{qc['tiles']} tissue windows in {qc['seconds']:.1f} s; tissue {qc['tissue_area_mm2']:.2f}"
        f" mm2, {qc['blurred_fraction']:.1%} of it flagged; "
        f"{qc['box_tissue_flagged']:.1%} of the blurred rectangle's tissue flagged, "
        f"{qc['flagged_outside_box']:.1%} of flagged pixels outside it. Full slide report, "
        f"GeoJSON for QuPath and masks: {qc['folder']}/."
    )
    sub = folder / qc["folder"]
    report.figures(
        [
            ("blurred tissue (amber)", read_image(sub / "overlay.png")),
            ("blur probability on tissue", read_image(sub / "heatmap.png")),
        ],
        max_side=480,
    )


def _short(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def run_demo(out_dir: Path, seed: int = 0, progress: Callable[[str], None] | None = None) -> Path:
    """Run the demo into ``out_dir`` (replacing an earlier demo there) and return the report path.

    Raises:
        OutputError: if ``out_dir`` holds files that are not an earlier demo's output.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out {out_dir} is a file; give a folder for the demo report.")
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "report.html").exists():
        raise OutputError(
            f"{out_dir} is not empty and is not an earlier demo output; pick another --out."
        )
    ensure_writable_dir(out_dir.parent)  # before a minute of work
    image = embedded_image()
    rows = demo_rows(image, seed, progress)
    with atomic_dir(out_dir, overwrite=True) as tmp:
        write_image(tmp / "sharp.png", image)
        if progress is not None:
            progress("whole-slide QC")
        segmenter = Segmenter.load("default")
        whole = whole_image_rows(image, segmenter)
        qc = demo_qc(image, tmp / "qc", segmenter)
        if progress is not None:
            progress("blur type and deblurring")
        deblur = demo_deblur(image)
        write_report(rows, image, tmp, qc, deblur, whole)
    return out_dir / "report.html"
