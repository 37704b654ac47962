"""Whole-slide blur QC: one slide in, blur mask, heatmap, QuPath GeoJSON, summary and report out.

The slide is read at a working resolution (``mpp``, default 0.5 um/px) from its best pyramid
level; tissue is found on a thumbnail (glass, pen ink and debris excluded); only windows that
cover tissue are read and run through the segmenter, while a pool of reader threads decodes the
next windows; predictions are blended band by band into a uint8 probability map, so memory
holds one band of accumulators plus the uint8 maps of the working resolution.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from histoblur import __version__
from histoblur.errors import InputError
from histoblur.inference.segment import OVERLAY_ALPHA, OVERLAY_COLOUR, Segmenter, to_network_input
from histoblur.inference.tiling import axis_starts, blend_bands
from histoblur.io.atomic import atomic_dir
from histoblur.io.geojson import mask_to_geojson, write_geojson
from histoblur.io.images import write_image
from histoblur.io.qc_report import slide_report_html
from histoblur.io.report import heatmap
from histoblur.wsi.readers import SlideReader, best_level, open_slide, read_scaled, thumbnail
from histoblur.wsi.tissue import detect_tissue, tissue_mask

SUMMARY = "summary.json"


class QCConfig(BaseModel):
    """Settings of a QC run (every field has a default).

    Attributes:
        model: ``default`` or a checkpoint folder.
        mpp: working resolution (microns per pixel) at which blur is judged.
        slide_mpp: level-0 resolution to assume for slides that state none (or to override).
        threshold: blur probability above which a pixel is blurred (default: the model's).
        batch_size: windows per forward pass.
        readers: threads decoding windows ahead of the network.
        tissue_mpp: resolution of the tissue-detection thumbnail.
        min_tissue: smallest tissue fraction of a window for it to be evaluated.
        geojson_mpp: resolution of the mask traced into GeoJSON polygons.
        min_region_um2: blurred regions smaller than this are left out of the GeoJSON.
        thumbnail_side: longest side of the pictures in the report.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    model: str = "default"
    mpp: float = Field(0.5, gt=0.05, le=50)
    slide_mpp: float | None = Field(None, gt=0.01, le=50)
    threshold: float | None = Field(None, gt=0, lt=1)
    batch_size: int = Field(8, ge=1, le=256)
    readers: int = Field(2, ge=1, le=32)
    tissue_mpp: float = Field(8.0, gt=0)
    min_tissue: float = Field(0.05, ge=0, le=1)
    geojson_mpp: float = Field(2.0, gt=0)
    min_region_um2: float = Field(2000.0, ge=0)
    thumbnail_side: int = Field(1600, ge=64)


def slide_mpp(reader: SlideReader, config: QCConfig) -> tuple[float, str]:
    """Level-0 microns per pixel and where it came from; refuses to guess."""
    if config.slide_mpp is not None:
        return config.slide_mpp, "option"
    if reader.mpp is not None:
        return reader.mpp, "metadata"
    raise InputError(
        f"{Path(reader.path).name} states no (plausible) microns per pixel; pass --slide-mpp "
        "(0.25 for a 40x scan, 0.5 for 20x)."
    )


def _coverage(tissue: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Fraction of tissue in a box given in tissue-mask pixels (integral image lookup)."""
    x, y, w, h = box
    th, tw = tissue.shape[0] - 1, tissue.shape[1] - 1  # ``tissue`` is an integral image
    x0, y0 = int(np.clip(np.floor(x), 0, tw)), int(np.clip(np.floor(y), 0, th))
    x1, y1 = int(np.clip(np.ceil(x + w), 0, tw)), int(np.clip(np.ceil(y + h), 0, th))
    area = max(1, (x1 - x0) * (y1 - y0))
    return float(tissue[y1, x1] - tissue[y0, x1] - tissue[y1, x0] + tissue[y0, x0]) / area


class SlideQC:
    """QC of one opened slide with one segmenter; :meth:`run` returns the maps and numbers."""

    def __init__(self, reader: SlideReader, segmenter: Segmenter, config: QCConfig) -> None:
        self.reader, self.segmenter, self.config = reader, segmenter, config
        self.mpp0, self.mpp_source = slide_mpp(reader, config)
        self.scale = config.mpp / self.mpp0  # level-0 pixels per working pixel
        w0, h0 = reader.level_dimensions[0]
        self.level0 = (w0, h0)
        self.size = (max(1, round(h0 / self.scale)), max(1, round(w0 / self.scale)))  # (H, W)
        self.level = best_level(reader, self.scale)
        side = max(w0, h0)
        self.thumb_down = max(config.tissue_mpp / self.mpp0, side / 4096, 1.0)
        # the picture shown in reports: at most thumbnail_side, never finer than the working map
        self.view_down = min(max(side / config.thumbnail_side, self.scale), self.thumb_down)
        self.read_seconds = 0.0
        self.compute_seconds = 0.0

    def windows(self, tissue: np.ndarray) -> tuple[list[int], list[list[int]], int]:
        """Window row origins, the tissue windows' column origins per row, and their count."""
        tile, overlap = self.segmenter.tile, self.segmenter.overlap
        H, W = max(self.size[0], tile), max(self.size[1], tile)
        ys, xs = axis_starts(H, tile, overlap), axis_starts(W, tile, overlap)
        integral = cv2.integral(tissue.astype(np.uint8))
        k = self.scale / self.thumb_down  # thumbnail pixels per working pixel
        rows = [
            [
                x
                for x in xs
                if _coverage(integral, (x * k, y * k, tile * k, tile * k)) > self.config.min_tissue
            ]
            for y in ys
        ]
        return list(ys), rows, sum(len(r) for r in rows)

    def _read(self, y: int, x: int) -> np.ndarray:
        started = time.perf_counter()
        t, s = self.segmenter.tile, self.scale
        window = read_scaled(self.reader, (x * s, y * s, t * s, t * s), (t, t), self.level)
        self.read_seconds += time.perf_counter() - started
        return window

    def _bands(
        self, ys: list[int], rows: list[list[int]], progress: Callable[[int], None] | None
    ) -> Iterator[list[tuple[int, np.ndarray]]]:
        """Predictions band by band; reader threads stay ``readers * batch`` windows ahead."""
        order = [(y, x) for y, r in zip(ys, rows, strict=True) for x in r]
        ahead = self.config.readers * self.config.batch_size * 2
        with ThreadPoolExecutor(self.config.readers, thread_name_prefix="histoblur-read") as pool:
            queue: deque[Future[np.ndarray]] = deque()
            submitted = 0

            def fill() -> None:
                nonlocal submitted
                while submitted < len(order) and len(queue) < ahead:
                    queue.append(pool.submit(self._read, *order[submitted]))
                    submitted += 1

            for r in rows:
                band: list[tuple[int, np.ndarray]] = []
                for b in range(0, len(r), self.config.batch_size):
                    chunk = r[b : b + self.config.batch_size]
                    fill()
                    images = [queue.popleft().result() for _ in chunk]
                    fill()
                    band += list(zip(chunk, self._predict(images), strict=True))
                    if progress is not None:
                        progress(len(chunk))
                yield band

    def _predict(self, images: list[np.ndarray]) -> np.ndarray:
        """(N, 2, t, t): blur probability and the pixel tissue gate of each window."""
        started = time.perf_counter()
        batch = np.stack([to_network_input(im) for im in images]).transpose(0, 3, 1, 2)
        prob = self.segmenter._predict(np.ascontiguousarray(batch))
        gate = np.stack([tissue_mask(im) for im in images])[:, None].astype(np.float32)
        self.compute_seconds += time.perf_counter() - started
        return np.concatenate([prob, gate], axis=1)

    def run(self, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Thumbnail, tissue, probability (uint8) and mask at the working resolution, numbers."""
        started = time.perf_counter()
        view = thumbnail(self.reader, self.view_down)
        w0, h0 = self.level0
        size = (max(1, round(w0 / self.thumb_down)), max(1, round(h0 / self.thumb_down)))
        thumb = cv2.resize(view, size, interpolation=cv2.INTER_AREA)
        tissue = detect_tissue(thumb, self.mpp0 * self.thumb_down)
        ys, rows, n = self.windows(tissue)
        done = 0

        def tick(k: int) -> None:
            nonlocal done
            done += k
            if progress is not None:
                progress(done, n)

        H, W = self.size
        tile = self.segmenter.tile
        prob = np.zeros((H, W), np.uint8)
        mask = np.zeros((H, W), np.uint8)  # 0/255, written as is
        tissue_px = blurred_px = 0
        threshold = (
            self.segmenter.threshold if self.config.threshold is None else self.config.threshold
        )
        k = self.scale / self.thumb_down
        cols = np.minimum((np.arange(W) * k).astype(int), tissue.shape[1] - 1)
        grid = (max(H, tile), max(W, tile))
        for row, block in blend_bands(
            self._bands(ys, rows, tick), ys, grid, tile, self.segmenter.overlap, 2
        ):
            r1 = min(H, row + block.shape[0])
            if r1 <= row:
                continue
            b = block[: r1 - row, :W]
            rr = np.minimum((np.arange(row, r1) * k).astype(int), tissue.shape[0] - 1)
            on_tissue = tissue[rr][:, cols]
            on_tissue &= b[..., 1] > 0.5  # and not glass at the working resolution
            prob[row:r1] = np.round(b[..., 0] * on_tissue * 255).astype(np.uint8)
            blurred = (b[..., 0] > threshold) & on_tissue
            mask[row:r1] = blurred.view(np.uint8) * np.uint8(255)
            blurred_px += int(blurred.sum())
            tissue_px += int(on_tissue.sum())
        area = (self.config.mpp / 1000) ** 2  # mm2 per working pixel
        tissue_mm2 = tissue_px * area
        blurred_mm2 = blurred_px * area
        summary = {
            "slide": str(self.reader.path),
            "stem": Path(self.reader.path).stem,
            "reader": self.reader.kind,
            "level0_size": list(self.level0),
            "slide_mpp": round(self.mpp0, 5),
            "mpp_source": self.mpp_source,
            "working_mpp": self.config.mpp,
            "working_size": [W, H],
            "level": self.level,
            "tissue_area_mm2": round(tissue_mm2, 4),
            "blurred_area_mm2": round(blurred_mm2, 4),
            "blurred_fraction": round(blurred_mm2 / tissue_mm2, 5) if tissue_mm2 else 0.0,
            "tiles": n,
            "seconds": round(time.perf_counter() - started, 2),
            "read_seconds": round(self.read_seconds, 2),
            "compute_seconds": round(self.compute_seconds, 2),
            "model": self.config.model,
            "threshold": threshold,
            "histoblur_version": __version__,
        }
        return {
            "summary": summary,
            "thumbnail": view,
            "tissue": tissue,
            "prob": prob,
            "mask": mask,
        }


def _resize_to(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Area-average when shrinking, bilinear when enlarging (no blocky masks)."""
    enlarge = shape[0] > image.shape[0] or shape[1] > image.shape[1]
    mode = cv2.INTER_LINEAR if enlarge else cv2.INTER_AREA
    return cv2.resize(image, (shape[1], shape[0]), interpolation=mode)


def pictures(result: dict[str, Any], side: int) -> dict[str, np.ndarray]:
    """Thumbnail, overlay (blurred tissue tinted) and heatmap (probability on tissue), same size."""
    thumb = result["thumbnail"]
    h, w = thumb.shape[:2]
    s = min(1.0, side / max(h, w))
    shape = (max(1, round(h * s)), max(1, round(w * s)))
    small = _resize_to(thumb, shape)
    tissue = _resize_to(result["tissue"].astype(np.uint8) * 255, shape) > 127
    prob = _resize_to(result["prob"], shape).astype(np.float32) / 255
    blurred = _resize_to(result["mask"], shape) > 127
    over = small.copy()
    tint = np.array(OVERLAY_COLOUR, np.float32)
    over[blurred] = (small[blurred] * (1 - OVERLAY_ALPHA) + tint * OVERLAY_ALPHA).astype(np.uint8)
    colour = heatmap(prob, 0.0, 1.0)
    heat = small.copy()
    heat[tissue] = (small[tissue] * 0.35 + colour[tissue] * 0.65).astype(np.uint8)
    return {"thumbnail": small, "overlay": over, "heatmap": heat}


def write_outputs(result: dict[str, Any], folder: Path, config: QCConfig) -> dict[str, Any]:
    """Write every per-slide file into ``folder`` atomically (summary.json last)."""
    summary = dict(result["summary"])
    mask = result["mask"]
    H, W = mask.shape
    down = max(1, round(config.geojson_mpp / config.mpp))
    gh, gw = max(1, H // down), max(1, W // down)
    coarse = _resize_to(mask, (gh, gw)) > 127
    w0, h0 = summary["level0_size"]
    scale = (w0 / gw, h0 / gh)
    min_area = config.min_region_um2 / summary["slide_mpp"] ** 2
    collection = mask_to_geojson(
        coarse, scale=scale, min_area=min_area, properties={"model": config.model}
    )
    summary["blurred_regions"] = len(collection["features"])
    pics = pictures(result, config.thumbnail_side)
    with atomic_dir(folder, overwrite=True) as tmp:
        write_image(tmp / "blur_mask.png", mask)
        write_image(tmp / "probability.png", result["prob"])
        for name, picture in pics.items():
            write_image(tmp / f"{name}.png", picture)
        write_geojson(tmp / "blur.geojson", collection)
        html = slide_report_html(summary, pics["thumbnail"], pics["overlay"], pics["heatmap"])
        (tmp / "report.html").write_text(html, encoding="utf-8")
        (tmp / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def qc_slide(
    path: str | Path,
    out: Path,
    config: QCConfig,
    segmenter: Segmenter | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """QC one slide into ``out/<stem>/`` and return its summary.

    Raises:
        InputError: unreadable slide, unknown resolution, bad model.
    """
    segmenter = segmenter or Segmenter.load(config.model, batch_size=config.batch_size)
    reader = open_slide(path)
    try:
        result = SlideQC(reader, segmenter, config).run(progress)
    finally:
        reader.close()
    return write_outputs(result, Path(out) / Path(path).stem, config)
