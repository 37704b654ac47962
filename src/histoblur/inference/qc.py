"""Whole-slide blur QC: one slide in, blur mask, heatmap, QuPath GeoJSON, summary and report out.

The slide is read at a working resolution (``mpp``, default 0.5 um/px) from its best pyramid
level; tissue is found on a thumbnail (glass, pen ink and debris excluded); only windows that
cover tissue are read and run through the segmenter, while a pool of reader threads decodes the
next windows; predictions are blended band by band and each finished block of rows is streamed
into the full-resolution PNGs and reduced to picture and GeoJSON scale, so memory holds one band
of accumulators and the reduced maps, whatever the slide's size.

Examples:
    A tiny pyramidal slide at 0.5 um/px whose right half is out of focus:

    >>> import tempfile
    >>> import skimage.data
    >>> from histoblur.synthesis import apply_blur, make_spec
    >>> from histoblur.wsi.pyramid import write_pyramidal_tiff
    >>> tissue = skimage.data.immunohistochemistry()[:256, :256]
    >>> slide = tissue.copy()
    >>> slide[:, 128:] = apply_blur(tissue, make_spec("lens", radius=4))[:, 128:]
    >>> segmenter = Segmenter.load("default", "cpu", tile=64)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = write_pyramidal_tiff(Path(tmp) / "slide.tif", slide, mpp=0.5)
    ...     summary = qc_slide(path, Path(tmp) / "qc", QCConfig(device="cpu"), segmenter)
    ...     outputs = sorted(p.name for p in (Path(tmp) / "qc" / "slide").iterdir())
    >>> outputs  # doctest: +NORMALIZE_WHITESPACE
    ['blur.geojson', 'blur_mask.png', 'heatmap.png', 'overlay.png', 'probability.png',
     'report.html', 'summary.json', 'thumbnail.png']
    >>> summary["working_size"], summary["tiles"], summary["mpp_source"]
    ([256, 256], 25, 'metadata')
    >>> 0.3 < summary["blurred_fraction"] < 0.7  # about the blurred half of the tissue
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Literal

import cv2
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from histoblur import __version__
from histoblur.errors import InputError
from histoblur.inference.reduce import RowReducer
from histoblur.inference.screen import SCREEN_FACTOR, detail_ratio
from histoblur.inference.segment import Segmenter, to_network_input
from histoblur.io.atomic import atomic_dir
from histoblur.io.geojson import mask_to_geojson, write_geojson
from histoblur.io.images import write_image
from histoblur.io.palette import BLUR_ALPHA, BLUR_COLOR
from histoblur.io.png_stream import PngRowWriter
from histoblur.io.qc_report import slide_report_html
from histoblur.io.report import heatmap
from histoblur.models.tiling import BATCH_SIZE, axis_starts, blend_bands
from histoblur.wsi.dicom import has_dicom_marker
from histoblur.wsi.readers import SlideReader, best_level, open_slide, read_scaled, thumbnail
from histoblur.wsi.tissue import detect_tissue, tissue_mask

log = logging.getLogger(__name__)

SUMMARY = "summary.json"
# every file of a slide's output folder; the folder counts as complete when all are there
OUTPUT_FILES = (
    "blur_mask.png", "probability.png", "thumbnail.png", "overlay.png", "heatmap.png",
    "blur.geojson", "report.html", SUMMARY,
)  # fmt: skip
# level-0 resolutions a user may give (--slide-mpp, --slide-mpp-csv), in microns per pixel
MIN_SLIDE_MPP, MAX_SLIDE_MPP = 0.01, 50.0
# a given resolution this far (relative) from the slide's metadata is worth a warning
MPP_TOLERANCE = 0.10
# Longest side of the mask traced into GeoJSON: slides wider than GEO_MAX_SIDE x geojson_mpp
# are traced more coarsely, so the traced mask stays bounded (at most 4096 x 4096).
GEO_MAX_SIDE = 4096
# The working resolution may be at most this many times finer than the slide's level 0:
# enlarging adds no focus evidence, and the working maps grow with the square of it.
MAX_UPSAMPLE = 4.0


class QCConfig(BaseModel):
    """Settings of a QC run (every field has a default).

    Attributes:
        model: ``default`` or a checkpoint folder.
        mpp: resolution (microns per pixel) at which blur is judged; None: the model's working
            resolution (its checkpoint's ``inference.mpp``, 0.5 for the shipped model), or the
            slide's own when coarser (a slide is never enlarged by default).
        slide_mpp: level-0 resolution of slides whose metadata states none (the fallback).
        slide_mpps: level-0 resolution per slide, by file name or absolute path (read from
            ``--slide-mpp-csv``); it beats ``slide_mpp``.
        force_slide_mpp: use ``slide_mpps`` / ``slide_mpp`` even where the metadata states a
            resolution (the rare override); needs one of them.
        threshold: blur probability above which a pixel is blurred (default: the model's).
        flag_above: blurred fraction of the tissue above which a slide's status is
            ``flagged`` (to re-scan); decided when the cohort table is written, so changing
            it re-labels slides without re-running them.
        batch_size: windows per forward pass.
        device: where the network runs (``auto``: CUDA when available).
        precision: the network's arithmetic: ``auto`` (bfloat16 where the hardware runs it
            natively, see :func:`histoblur.models.hub.select_precision`), ``fp32`` or ``bf16``.
        readers: threads decoding windows ahead of the network.
        tissue_mpp: resolution of the tissue-detection thumbnail.
        min_tissue: smallest tissue fraction of a window for it to be evaluated.
        geojson_mpp: resolution of the mask traced into GeoJSON polygons (coarser on slides whose
            traced mask would exceed 4096 px a side).
        min_region_um2: blurred regions smaller than this are left out of the GeoJSON.
        thumbnail_side: longest side of the pictures in the report.
        screen: first read each tissue window at half the working resolution and take it as
            sharp, without the network, when its fine detail reaches ``screen_cutoff`` (see
            :mod:`histoblur.inference.screen`): faster on mostly sharp slides, at the cost of
            the network's small scattered detections inside such windows.
        screen_cutoff: detail ratio at or above which a screened window counts as sharp.

    Examples:
        >>> config = QCConfig(mpp=1.0, device="cpu")
        >>> config.model, config.mpp, config.slide_mpp, config.threshold, config.flag_above
        ('default', 1.0, None, None, 0.05)
        >>> QCConfig(mpp=0)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pydantic_core._pydantic_core.ValidationError: 1 validation error for QCConfig
        ...
        >>> QCConfig(force_slide_mpp=True)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pydantic_core._pydantic_core.ValidationError: 1 validation error for QCConfig
          Value error, --force-slide-mpp needs --slide-mpp or --slide-mpp-csv ...
        ...
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    model: str = "default"
    mpp: float | None = Field(None, gt=0.05, le=50)
    slide_mpp: float | None = Field(None, gt=MIN_SLIDE_MPP, le=MAX_SLIDE_MPP)
    slide_mpps: dict[str, Annotated[float, Field(gt=MIN_SLIDE_MPP, le=MAX_SLIDE_MPP)]] = Field(
        default_factory=dict
    )
    force_slide_mpp: bool = False
    threshold: float | None = Field(None, gt=0, lt=1)
    flag_above: float = Field(0.05, ge=0, lt=1)
    batch_size: int = Field(BATCH_SIZE, ge=1, le=256)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    readers: int = Field(2, ge=1, le=32)
    tissue_mpp: float = Field(8.0, gt=0)
    min_tissue: float = Field(0.05, ge=0, le=1)
    geojson_mpp: float = Field(2.0, gt=0)
    min_region_um2: float = Field(2000.0, ge=0)
    thumbnail_side: int = Field(1600, ge=64)
    screen: bool = False
    screen_cutoff: float = Field(1.1, gt=0, le=10)

    @model_validator(mode="after")
    def _force_needs_a_value(self) -> QCConfig:
        if self.force_slide_mpp and self.slide_mpp is None and not self.slide_mpps:
            raise ValueError(
                "--force-slide-mpp needs --slide-mpp or --slide-mpp-csv (the value to use "
                "instead of the metadata)"
            )
        return self


def mpp_keys(path: str | Path) -> tuple[str, str, str]:
    """The ``slide_mpps`` keys that name a slide, most specific first.

    Its path as written (made absolute), its resolved path, and its file name.
    """
    path = Path(path)
    return os.path.abspath(path), str(path.resolve()), path.name


def given_mpp(path: str | Path, config: QCConfig) -> tuple[float, str] | None:
    """The level-0 resolution the user gives for a slide and where: ``csv`` or ``option``.

    A ``slide_mpps`` entry by absolute path beats one by file name, which beats ``slide_mpp``.

    >>> config = QCConfig(slide_mpp=0.5, slide_mpps={"a.svs": 0.25, "/data/b.svs": 1.0})
    >>> given_mpp("/x/a.svs", config), given_mpp("/data/b.svs", config), given_mpp("c.svs", config)
    ((0.25, 'csv'), (1.0, 'csv'), (0.5, 'option'))
    >>> given_mpp("c.svs", QCConfig()) is None
    True
    """
    for key in mpp_keys(path):
        if key in config.slide_mpps:
            return config.slide_mpps[key], "csv"
    return None if config.slide_mpp is None else (config.slide_mpp, "option")


def choose_mpp(
    path: str | Path, metadata: float | None, config: QCConfig
) -> tuple[float, str, str]:
    """Level-0 microns per pixel of a slide, its source and a warning ('' when none).

    The slide's ``metadata`` wins; a given value (see :func:`given_mpp`) fills in a slide
    without one, or wins with ``force_slide_mpp``. A given value more than 10 % from the
    metadata is warned about either way. Refuses to guess.

    Raises:
        InputError: the slide states no plausible resolution and none is given.

    Examples:
        >>> choose_mpp("a.svs", 0.25, QCConfig(slide_mpp=0.26))  # within 10 %: no warning
        (0.25, 'metadata', '')
        >>> mpp, source, warning = choose_mpp("a.svs", 0.25, QCConfig(slide_mpp=0.5))
        >>> mpp, source, warning.split(";")[0]
        (0.25, 'metadata', 'a.svs states 0.25 um/px but --slide-mpp gives 0.5')
        >>> forced = QCConfig(slide_mpp=0.5, force_slide_mpp=True)
        >>> choose_mpp("a.svs", 0.25, forced)[:2], choose_mpp("b.png", None, forced)
        ((0.5, 'option'), (0.5, 'option', ''))
        >>> choose_mpp("<array>", None, QCConfig())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        histoblur.errors.InputError: <array> states no (plausible) microns per pixel; ...
    """
    name = Path(path).name
    given = given_mpp(path, config)
    if given is None:
        if metadata is None:
            raise InputError(
                f"{name} states no (plausible) microns per pixel; pass --slide-mpp (0.25 for a "
                "40x scan, 0.5 for 20x) or list it in --slide-mpp-csv."
            )
        return metadata, "metadata", ""
    value, source = given
    if metadata is None:
        return value, source, ""
    flag = "--slide-mpp-csv" if source == "csv" else "--slide-mpp"
    warning = ""
    if abs(value - metadata) > MPP_TOLERANCE * metadata:
        if config.force_slide_mpp:
            warning = (
                f"{name} states {metadata:g} um/px but {flag} gives {value:g}; using "
                f"{value:g} as --force-slide-mpp asks."
            )
        else:
            warning = (
                f"{name} states {metadata:g} um/px but {flag} gives {value:g}; using the "
                f"metadata (pass --force-slide-mpp to use {value:g})."
            )
    return (value, source, warning) if config.force_slide_mpp else (metadata, "metadata", warning)


def working_mpp(config: QCConfig, segmenter: Segmenter, mpp0: float) -> float:
    """The resolution blur is judged at: ``config.mpp``, else the model's or the slide's."""
    return config.mpp or max(segmenter.mpp, mpp0)


_DIGESTS: weakref.WeakKeyDictionary[torch.nn.Module, str] = weakref.WeakKeyDictionary()


def weights_digest(segmenter: Segmenter) -> str | None:
    """SHA-256 of the segmenter's network weights (names, dtypes, shapes, values).

    None for a stand-in without a network. Computed once per network.

    >>> a, b = Segmenter.load("default", tile=64), Segmenter.load("default", tile=128)
    >>> digest = weights_digest(a)
    >>> len(digest), digest == weights_digest(b)
    (64, True)
    """
    model = getattr(segmenter, "model", None)
    if not isinstance(model, torch.nn.Module):
        return None
    if model not in _DIGESTS:
        digest = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            t = tensor.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"{name}:{t.dtype}:{tuple(tensor.shape)};".encode())
            digest.update(t.view(torch.uint8).numpy().tobytes())
        _DIGESTS[model] = digest.hexdigest()
    return _DIGESTS[model]


def result_parameters(config: QCConfig, segmenter: Segmenter, mpp0: float) -> dict[str, Any]:
    """Everything that shapes a slide's QC results, as stored in its ``summary.json``.

    A finished slide is taken as done only when its stored ``parameters`` equal these (the
    run options ``batch_size``, ``device``, ``readers`` and ``flag_above`` leave the results
    as they are, so they are not here).

    Args:
        config: the run's settings.
        segmenter: the network (its weights, window, overlap, threshold and resolution).
        mpp0: the slide's level-0 resolution as used (see :func:`choose_mpp`).

    >>> params = result_parameters(QCConfig(threshold=0.8), Segmenter.load(tile=64), 0.25)
    >>> params["threshold"], params["slide_mpp"], params["working_mpp"], params["tile"]
    (0.8, 0.25, 0.5, 64)
    """
    threshold = segmenter.threshold if config.threshold is None else config.threshold
    return {
        "model": config.model,
        "model_sha256": weights_digest(segmenter),
        "tile": segmenter.tile,
        "overlap": segmenter.overlap,
        "threshold": threshold,
        "precision": "bf16" if segmenter.autocast is not None else "fp32",
        "slide_mpp": mpp0,
        "working_mpp": working_mpp(config, segmenter, mpp0),
        "tissue_mpp": config.tissue_mpp,
        "min_tissue": config.min_tissue,
        "geojson_mpp": config.geojson_mpp,
        "min_region_um2": config.min_region_um2,
        "thumbnail_side": config.thumbnail_side,
        "screen_cutoff": config.screen_cutoff if config.screen else None,
        "histoblur_version": __version__,
    }


def _coverage(tissue: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Fraction of tissue in a box given in tissue-mask pixels (integral image lookup)."""
    x, y, w, h = box
    th, tw = tissue.shape[0] - 1, tissue.shape[1] - 1  # ``tissue`` is an integral image
    x0, y0 = int(np.clip(np.floor(x), 0, tw)), int(np.clip(np.floor(y), 0, th))
    x1, y1 = int(np.clip(np.ceil(x + w), 0, tw)), int(np.clip(np.ceil(y + h), 0, th))
    area = max(1, (x1 - x0) * (y1 - y0))
    return float(tissue[y1, x1] - tissue[y0, x1] - tissue[y1, x0] + tissue[y0, x0]) / area


class SlideQC:
    """QC of one opened slide with one segmenter; :meth:`run` returns the maps and numbers.

    Raises:
        InputError: the slide's resolution is unknown (see :func:`choose_mpp`).

    Examples:
        >>> import skimage.data
        >>> from histoblur.wsi.readers import ArrayReader
        >>> reader = ArrayReader(skimage.data.immunohistochemistry()[:256, :256], mpp=0.25)
        >>> qc = SlideQC(reader, Segmenter.load("default", tile=64), QCConfig(mpp=0.5))
        >>> qc.scale, qc.size, qc.level  # level-0 px per working px, (H, W) working
        (2.0, (128, 128), 0)
        >>> result = qc.run()  # no folder: maps in memory only
        >>> sorted(result)
        ['geo', 'geo_cell', 'mask', 'prob', 'summary', 'thumbnail', 'tissue']
        >>> result["prob"].shape, result["prob"].dtype, result["summary"]["tiles"]
        ((128, 128), dtype('uint8'), 9)
    """

    def __init__(self, reader: SlideReader, segmenter: Segmenter, config: QCConfig) -> None:
        self.reader, self.segmenter, self.config = reader, segmenter, config
        self.mpp0, self.mpp_source, self.warning = choose_mpp(reader.path, reader.mpp, config)
        self.mpp = working_mpp(config, segmenter, self.mpp0)
        self.scale = self.mpp / self.mpp0  # level-0 pixels per working pixel
        if self.scale < 1 / MAX_UPSAMPLE:
            raise InputError(
                f"{Path(reader.path).name} is scanned at {self.mpp0:g} um/px ({self.mpp_source}), "
                f"and --mpp {self.mpp:g} would enlarge it more than {MAX_UPSAMPLE:g} times; "
                f"pass an --mpp of at least {self.mpp0 / MAX_UPSAMPLE:g}."
            )
        w0, h0 = reader.level_dimensions[0]
        self.level0 = (w0, h0)
        self.size = (max(1, round(h0 / self.scale)), max(1, round(w0 / self.scale)))  # (H, W)
        self.level = best_level(reader, self.scale)
        side = max(w0, h0)
        self.thumb_down = max(config.tissue_mpp / self.mpp0, side / 4096, 1.0)
        # the picture shown in reports: at most thumbnail_side, never finer than the working map
        self.view_down = min(max(side / config.thumbnail_side, self.scale), self.thumb_down)
        self.read_seconds = 0.0
        self.screen_seconds = 0.0
        self.compute_seconds = 0.0
        self.settled = 0  # windows the screen took as sharp

    def windows(self, tissue: np.ndarray) -> tuple[list[int], list[list[int]], int]:
        """Window row origins, the tissue windows' column origins per row, and their count.

        >>> from histoblur.wsi.readers import ArrayReader
        >>> reader = ArrayReader(np.full((256, 256, 3), 245, np.uint8), mpp=0.5)
        >>> qc = SlideQC(reader, Segmenter.load("default", tile=64), QCConfig())
        >>> qc.thumb_down  # the tissue mask is at 8 um/px: 16 level-0 px per pixel
        16.0
        >>> tissue = np.zeros((16, 16), bool)
        >>> tissue[:4, :4] = True  # tissue in the top-left 64 x 64 px only
        >>> qc.windows(tissue)
        ([0, 48, 96, 144, 192], [[0, 48], [0, 48], [], [], []], 4)
        """
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

    def _screened(self, y: int, x: int) -> tuple[bool, Any]:
        """Screen one window: (True, its (2, t, t) prediction) when sharp, else (False, pixels).

        The screen reads the window at ``1 / SCREEN_FACTOR`` of the working resolution from the
        pyramid level nearest that; where that is the level the network reads anyway, the window
        is decoded once, at full resolution, and shrunk for the screen.
        """
        t, s = self.segmenter.tile, self.scale
        side = max(8, t // SCREEN_FACTOR)
        level = best_level(self.reader, s * t / side)
        window = self._read(y, x) if level == self.level else None  # counted as decoding
        started = time.perf_counter()
        if window is not None:
            small = cv2.resize(window, (side, side), interpolation=cv2.INTER_AREA)
        else:
            small = read_scaled(self.reader, (x * s, y * s, t * s, t * s), (side, side), level)
        tissue = tissue_mask(small)
        ratio = detail_ratio(small, tissue)
        self.screen_seconds += time.perf_counter() - started
        if ratio is None or ratio < self.config.screen_cutoff:
            return False, self._read(y, x) if window is None else window
        gate = cv2.resize(tissue.view(np.uint8), (t, t), interpolation=cv2.INTER_NEAREST)
        return True, np.stack([np.zeros((t, t), np.float32), gate.astype(np.float32)])

    def _load(self, y: int, x: int) -> tuple[bool, Any]:
        """(True, prediction) for a window the screen settles, else (False, network input).

        Runs in a reader thread, so the network input and the pixel tissue gate of each window
        are made there too (see :meth:`_prepare`), off the thread that runs the network.
        """
        settled, data = self._screened(y, x) if self.config.screen else (False, self._read(y, x))
        return (True, data) if settled else (False, self._prepare(data))

    @staticmethod
    def _prepare(window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(C, t, t) network input and (t, t) tissue gate (float32) of a window's pixels."""
        image = np.ascontiguousarray(to_network_input(window).transpose(2, 0, 1))
        return image, tissue_mask(window).astype(np.float32)

    def _bands(
        self, ys: list[int], rows: list[list[int]], progress: Callable[[int], None] | None
    ) -> Iterator[list[tuple[int, np.ndarray]]]:
        """Predictions band by band, in full batches across rows.

        Reader threads stay ``readers * batch * 2`` windows ahead (screening them first when
        the screen is on); a band is yielded once every window of it is predicted.
        """
        order = [(i, y, x) for i, (y, r) in enumerate(zip(ys, rows, strict=True)) for x in r]
        ahead = self.config.readers * self.config.batch_size * 2
        bands: list[list[tuple[int, np.ndarray]]] = [[] for _ in rows]
        left = [len(r) for r in rows]
        emitted = 0
        with ThreadPoolExecutor(self.config.readers, thread_name_prefix="histoblur-read") as pool:
            queue: deque[tuple[int, int, Future[tuple[bool, Any]]]] = deque()
            submitted = 0
            pending: list[tuple[int, int, Any]] = []  # (band, x, (input, gate)) to predict

            def fill() -> None:
                nonlocal submitted
                while submitted < len(order) and len(queue) < ahead:
                    i, y, x = order[submitted]
                    queue.append((i, x, pool.submit(self._load, y, x)))
                    submitted += 1

            def predict() -> None:
                for (i, x, _), pred in zip(
                    pending, self._predict([p for _, _, p in pending]), strict=True
                ):
                    bands[i].append((x, pred))
                    left[i] -= 1
                if progress is not None:
                    progress(len(pending))
                pending.clear()

            fill()
            while queue or pending:
                if queue:
                    i, x, future = queue.popleft()
                    fill()
                    settled, data = future.result()
                    if settled:
                        self.settled += 1
                        bands[i].append((x, data))
                        left[i] -= 1
                        if progress is not None:
                            progress(1)
                    else:
                        pending.append((i, x, data))
                if len(pending) == self.config.batch_size or (pending and not queue):
                    predict()
                while emitted < len(rows) and left[emitted] == 0:
                    band = sorted(bands[emitted], key=lambda item: item[0])
                    bands[emitted] = []
                    yield band
                    emitted += 1
            while emitted < len(rows):
                yield bands[emitted]
                emitted += 1

    def _predict(self, prepared: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """(N, 2, t, t): blur probability and the pixel tissue gate of each prepared window."""
        started = time.perf_counter()
        prob = self.segmenter._predict(np.stack([image for image, _ in prepared]))
        gate = np.stack([g for _, g in prepared])[:, None]
        self.compute_seconds += time.perf_counter() - started
        return np.concatenate([prob, gate], axis=1)

    def run(
        self, folder: Path | None = None, progress: Callable[[int, int], None] | None = None
    ) -> dict[str, Any]:
        """Blur map of the slide; numbers and maps at picture scale.

        With ``folder``, the full working-resolution ``blur_mask.png`` (0/255) and
        ``probability.png`` (x 255, 0 off tissue) are streamed into it row block by row block,
        so no slide-sized array is ever held. The result holds the summary, the thumbnail, the
        tissue mask, the probability and blurred share at the picture scale (uint8), and the
        mask reduced to ``geojson_mpp`` (bool) for tracing.
        """
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
        picture = max(1, round(self.view_down / self.scale))
        geo = max(round(self.config.geojson_mpp / self.mpp), -(-max(H, W) // GEO_MAX_SIDE), 1)
        prob_view, mask_view = RowReducer(H, W, picture), RowReducer(H, W, picture)
        mask_geo = RowReducer(H, W, geo)
        writers = (
            [
                PngRowWriter(folder / "blur_mask.png", W, H),
                PngRowWriter(folder / "probability.png", W, H),
            ]
            if folder is not None
            else []
        )
        tissue_px = blurred_px = 0
        parameters = result_parameters(self.config, self.segmenter, self.mpp0)
        threshold = parameters["threshold"]
        k = self.scale / self.thumb_down
        cols = np.minimum((np.arange(W) * k).astype(int), tissue.shape[1] - 1)
        grid = (max(H, tile), max(W, tile))
        with contextlib.ExitStack() as stack:
            for writer in writers:
                stack.enter_context(writer)
            for row, block in blend_bands(
                self._bands(ys, rows, tick), ys, grid, tile, self.segmenter.overlap, 2
            ):
                r1 = min(H, row + block.shape[0])
                if r1 <= row:
                    continue
                b = block[: r1 - row, :W]
                rr = np.minimum((np.arange(row, r1) * k).astype(int), tissue.shape[0] - 1)
                on_tissue = tissue[rr][:, cols] & (b[..., 1] > 0.5)  # and not glass up close
                prob = np.round(b[..., 0] * on_tissue * 255).astype(np.uint8)
                blurred = (b[..., 0] > threshold) & on_tissue
                mask = blurred.view(np.uint8) * np.uint8(255)
                for writer, rows_out in zip(writers, (mask, prob), strict=False):
                    writer.write(rows_out)
                prob_view.add(prob)
                mask_view.add(mask)
                mask_geo.add(mask)
                blurred_px += int(blurred.sum())
                tissue_px += int(on_tissue.sum())
        area = (self.mpp / 1000) ** 2  # mm2 per working pixel
        tissue_mm2 = tissue_px * area
        blurred_mm2 = blurred_px * area
        summary = {
            "slide": str(self.reader.path),
            "stem": Path(self.reader.path).stem,
            "reader": self.reader.kind,
            "level0_size": list(self.level0),
            "slide_mpp": round(self.mpp0, 5),
            "mpp_source": self.mpp_source,
            "metadata_mpp": self.reader.mpp,
            "working_mpp": self.mpp,
            "working_size": [W, H],
            "level": self.level,
            "tissue_area_mm2": round(tissue_mm2, 4),
            "blurred_area_mm2": round(blurred_mm2, 4),
            "blurred_fraction": round(blurred_mm2 / tissue_mm2, 5) if tissue_mm2 else 0.0,
            "tiles": n,
            "screened_sharp": self.settled,
            "seconds": round(time.perf_counter() - started, 2),
            "screen_seconds": round(self.screen_seconds, 2),
            "read_seconds": round(self.read_seconds, 2),
            "compute_seconds": round(self.compute_seconds, 2),
            "model": self.config.model,
            "threshold": threshold,
            "histoblur_version": __version__,
            "warnings": [self.warning] if self.warning else [],
            "parameters": parameters,
        }
        return {
            "summary": summary,
            "thumbnail": view,
            "tissue": tissue,
            "prob": np.round(prob_view.mean()).astype(np.uint8),
            "mask": np.round(mask_view.mean()).astype(np.uint8),
            "geo": mask_geo.mean() > 127,
            "geo_cell": (w0 / W * geo, h0 / H * geo),  # level-0 pixels per geo cell
        }


def _resize_to(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Area-average when shrinking, bilinear when enlarging (no blocky masks)."""
    enlarge = shape[0] > image.shape[0] or shape[1] > image.shape[1]
    mode = cv2.INTER_LINEAR if enlarge else cv2.INTER_AREA
    return cv2.resize(image, (shape[1], shape[0]), interpolation=mode)


def pictures(result: dict[str, Any], side: int) -> dict[str, np.ndarray]:
    """Thumbnail, overlay (blurred tissue tinted and outlined) and heatmap, all the same size.

    The overlay draws blurred tissue in :data:`~histoblur.io.palette.BLUR_COLOR` (the colour
    of the report's legend and of the GeoJSON class), a tint of opacity ``BLUR_ALPHA`` with an
    opaque outline; the heatmap blends viridis blur probability (0 to 1) over the tissue.

    Examples:
        >>> import skimage.data
        >>> from histoblur.wsi.readers import ArrayReader
        >>> reader = ArrayReader(skimage.data.immunohistochemistry()[:256, :256], mpp=0.5)
        >>> result = SlideQC(reader, Segmenter.load("default", tile=64), QCConfig()).run()
        >>> {name: picture.shape for name, picture in pictures(result, side=64).items()}
        {'thumbnail': (64, 64, 3), 'overlay': (64, 64, 3), 'heatmap': (64, 64, 3)}
    """
    thumb = result["thumbnail"]
    h, w = thumb.shape[:2]
    s = min(1.0, side / max(h, w))
    shape = (max(1, round(h * s)), max(1, round(w * s)))
    small = _resize_to(thumb, shape)
    tissue = _resize_to(result["tissue"].astype(np.uint8) * 255, shape) > 127
    prob = _resize_to(result["prob"], shape).astype(np.float32) / 255
    blurred = _resize_to(result["mask"], shape) > 127
    over = small.copy()
    tint = np.array(BLUR_COLOR, np.float32)
    over[blurred] = (small[blurred] * (1 - BLUR_ALPHA) + tint * BLUR_ALPHA).astype(np.uint8)
    contours, _ = cv2.findContours(blurred.view(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(over, contours, -1, BLUR_COLOR, max(1, round(max(shape) / 800)))
    colour = heatmap(prob, 0.0, 1.0)
    heat = small.copy()
    heat[tissue] = (small[tissue] * 0.35 + colour[tissue] * 0.65).astype(np.uint8)
    return {"thumbnail": small, "overlay": over, "heatmap": heat}


def write_outputs(result: dict[str, Any], folder: Path, config: QCConfig) -> dict[str, Any]:
    """Write the pictures, GeoJSON, report and (last) summary into an existing ``folder``.

    Each GeoJSON region carries QuPath ``measurements``: ``Area um2`` (level-0 polygon area at
    the slide's mpp) and ``Mean blur probability`` (the picture-scale probability resampled to
    the traced grid, so the mean over a small region is smoothed by its surroundings).
    Regions under ``min_region_um2`` are left out. The report shows the slide's status under
    ``flag_above`` (:func:`histoblur.io.qc_report.slide_status`, the cohort table's rule).

    Returns:
        The summary with ``blurred_regions`` (the number of GeoJSON polygons) added; the module
        example shows the files.
    """
    summary = dict(result["summary"])
    w0, h0 = summary["level0_size"]
    mpp0 = summary["slide_mpp"]
    geo = result["geo"]
    prob = cv2.resize(result["prob"], (geo.shape[1], geo.shape[0]), interpolation=cv2.INTER_AREA)
    collection = mask_to_geojson(
        geo,
        scale=result["geo_cell"],
        min_area=config.min_region_um2 / mpp0**2,
        properties={"model": config.model},
        extent=(w0, h0),
        probability=prob.astype(np.float32) / 255,
        um_per_px=mpp0,
    )
    summary["blurred_regions"] = len(collection["features"])
    pics = pictures(result, config.thumbnail_side)
    for name, picture in pics.items():
        write_image(folder / f"{name}.png", picture)
    write_geojson(folder / "blur.geojson", collection)
    html = slide_report_html(
        summary,
        pics["thumbnail"],
        pics["overlay"],
        pics["heatmap"],
        flag_above=config.flag_above,
        min_region_um2=config.min_region_um2,
    )
    (folder / "report.html").write_text(html, encoding="utf-8")
    (folder / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _from_openslide(exc: BaseException) -> bool:
    """Whether an error carries OpenSlide's own text (not histoblur's sentence) from its cause.

    An unsupported format is already named in histoblur's words by the reader.
    """
    cause = exc.__cause__
    return (
        cause is not None
        and type(cause).__module__.split(".")[0] == "openslide"
        and type(cause).__name__ != "OpenSlideUnsupportedFormatError"
    )


def _is_dicom(path: Path) -> bool:
    """Whether ``path`` is a file that starts like DICOM (``DICM`` after the 128-byte preamble)."""
    return path.is_file() and has_dicom_marker(path)


def unreadable(path: Path, exc: InputError) -> InputError:
    """One histoblur sentence for a slide that cannot be opened.

    The DICOM readers' sentences (wsidicom's reason in them) are kept; OpenSlide's own text
    stays in the cause, which ``histoblur -v qc`` shows.

    >>> error = unreadable(Path("missing.dcm"), InputError("raw text"))
    >>> print(error)  # doctest: +NORMALIZE_WHITESPACE
    missing.dcm is named .dcm but is not a DICOM file (no DICM marker); check that it copied
    completely.
    """
    if path.is_dir():
        return exc  # a folder of DICOM instances: the reader said what is wrong with it
    if path.suffix.lower() == ".dcm":
        if not _is_dicom(path):
            return InputError(
                f"{path} is named .dcm but is not a DICOM file (no DICM marker); check that it "
                "copied completely."
            )
        return exc
    if _from_openslide(exc):
        return InputError(
            f"{path} is damaged or a variant of its format that OpenSlide does not read; check "
            "that the file copied completely, or convert it to a pyramidal TIFF."
        )
    return exc


def qc_slide(
    path: str | Path,
    out: Path,
    config: QCConfig,
    segmenter: Segmenter | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """QC one slide into ``out/<stem>/`` (built under a temporary name) and return its summary.

    Raises:
        InputError: unreadable slide (one sentence; OpenSlide's own text is the cause),
            unknown resolution, a working resolution far finer than the slide, bad model.
        OutputError: ``out/<stem>`` is or holds the slide itself.

    Examples:
        A slide that states no resolution needs ``slide_mpp``:

        >>> import tempfile
        >>> from histoblur.io.images import write_image
        >>> tissue = np.random.default_rng(0).integers(60, 200, (128, 128, 3), dtype=np.uint8)
        >>> config = QCConfig(device="cpu", slide_mpp=0.5)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = write_image(Path(tmp) / "scan.png", tissue)
        ...     summary = qc_slide(path, Path(tmp) / "qc", config, Segmenter.load(tile=64))
        ...     done = (Path(tmp) / "qc" / "scan" / SUMMARY).is_file()
        >>> summary["reader"], summary["mpp_source"], summary["working_size"], done
        ('image', 'option', [128, 128], True)
    """
    segmenter = segmenter or Segmenter.load(
        config.model, config.device, batch_size=config.batch_size, precision=config.precision
    )
    path = Path(path)
    try:
        reader = open_slide(path)
    except InputError as exc:
        error = unreadable(path, exc)
        if error is exc:
            raise
        raise error from exc
    try:
        qc = SlideQC(reader, segmenter, config)
        with atomic_dir(Path(out) / path.stem, overwrite=True, inputs=[path]) as tmp:
            try:
                result = qc.run(tmp, progress)
            except InputError as exc:
                if not _from_openslide(exc):
                    raise
                raise InputError(
                    f"{path} opened, but OpenSlide failed to decode part of its pixels (damaged "
                    "or truncated tile data); check that the file copied completely."
                ) from exc
            return write_outputs(result, tmp, config)
    finally:
        reader.close()
