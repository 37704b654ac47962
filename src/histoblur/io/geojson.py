"""Boolean masks as QuPath-importable GeoJSON polygons in level-0 pixel coordinates.

A mask computed at a reduced working resolution maps to the slide through ``scale = (sx, sy)``:
mask pixel (row ``r``, column ``c``) covers the level-0 rectangle ``x`` in ``[c*sx, (c+1)*sx)``,
``y`` in ``[r*sy, (r+1)*sy)``. Polygons follow pixel edges exactly, not pixel centres.

How the edges are traced: the mask is drawn on a grid of twice its resolution plus one, whose
even cells are pixel corners, mixed cells pixel edges and odd cells pixel interiors; each
foreground pixel marks its interior, its four edges and its four corners. OpenCV's border
following on that grid visits only corner and edge cells, so its contours lie on the pixel-edge
lattice; where it cuts a corner diagonally the missing corner is put back, and only the corners
where the boundary turns are kept. A region whose parts touch only at pixel corners would give
invalid rings (touching themselves, or cutting the interior in two); such regions are re-traced
one layer of mutually non-touching parts at a time. So each polygon is one edge-connected
(4-connected) foreground region with the background it encloses as holes, and regions that
touch at a corner are separate polygons sharing that point.

Each feature can carry ``measurements`` that QuPath lists with the annotation (a mapping of
name to number): its area in um^2 given the slide's microns per pixel, and the mean of a map
(the blur probability) over the region's mask pixels. Features are coloured with
:data:`histoblur.io.palette.BLUR_COLOR`, the colour of blurred tissue in every QC picture.

Examples:
    A mask computed at 2 level-0 pixels per mask pixel, written for QuPath:

    >>> import json
    >>> import tempfile
    >>> mask = np.zeros((6, 8), bool)
    >>> mask[1:3, 2:5] = True
    >>> collection = mask_to_geojson(mask, scale=(2.0, 2.0), properties={"model": "default"})
    >>> feature = collection["features"][0]
    >>> feature["geometry"]["coordinates"]  # pixel edges, level-0 pixels
    [[[4.0, 2.0], [10.0, 2.0], [10.0, 6.0], [4.0, 6.0], [4.0, 2.0]]]
    >>> feature["properties"]["classification"], feature["properties"]["model"]
    ({'name': 'Blur', 'color': [255, 190, 0]}, 'default')
    >>> probability = np.where(mask, 0.8, 0.1)
    >>> measured = mask_to_geojson(mask, (2.0, 2.0), probability=probability, um_per_px=0.5)
    >>> measured["features"][0]["properties"]["measurements"]  # 24 px2 of 0.25 um2
    {'Area um2': 6.0, 'Mean blur probability': 0.8}
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = write_geojson(Path(tmp) / "blur.geojson", collection)
    ...     json.loads(path.read_text()) == collection
    True
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import shapely
from shapely.geometry import Polygon

from histoblur.errors import ParameterError
from histoblur.io.atomic import write_text_atomic
from histoblur.io.palette import BLUR_COLOR

__all__ = [
    "AREA_UM2",
    "MEAN_PROBABILITY",
    "mask_to_geojson",
    "mask_to_polygons",
    "polygons_to_feature_collection",
    "write_geojson",
]

# names of the measurements QuPath shows with each annotation
AREA_UM2, MEAN_PROBABILITY = "Area um2", "Mean blur probability"
_ID_NAMESPACE = uuid.UUID("6f1d6a4e-3c1b-5b7e-9a51-8e2f0c4b7d10")
_DECIMALS = 2


def mask_to_polygons(
    mask: np.ndarray,
    scale: tuple[float, float] = (1.0, 1.0),
    min_area: float = 0.0,
    extent: tuple[float, float] | None = None,
) -> list[Polygon]:
    """Trace the foreground of a mask as exact pixel-edge polygons in level-0 coordinates.

    Args:
        mask: (H, W) boolean or numeric mask; nonzero is foreground.
        scale: level-0 pixels per mask pixel, ``(sx, sy)``.
        min_area: drop polygons whose area (holes subtracted) is below this, in level-0 px^2.
        extent: the slide's level-0 ``(width, height)``: coordinates are clamped into it (the
            last mask cells of a reduced mask may reach past the slide's edge), before
            ``min_area`` is applied.

    Returns:
        Valid polygons, one per edge-connected foreground region, with the background it
        encloses as interior rings; largest first; empty for an empty mask.

    Raises:
        ParameterError: if the mask is not 2-D, a scale or extent is not positive or
            ``min_area`` < 0.

    Examples:
        >>> mask = np.zeros((6, 8), bool)
        >>> mask[1:4, 1:4] = True
        >>> mask[2, 2] = False  # a hole
        >>> mask[4:6, 6:8] = True  # a second region
        >>> [(p.area, p.bounds, len(p.interiors)) for p in mask_to_polygons(mask)]
        [(8.0, (1.0, 1.0, 4.0, 4.0), 1), (4.0, (6.0, 4.0, 8.0, 6.0), 0)]
        >>> [p.area for p in mask_to_polygons(mask, scale=(4.0, 4.0), min_area=100)]
        [128.0]
        >>> [p.bounds for p in mask_to_polygons(mask, scale=(4.0, 4.0), extent=(30, 22))][1]
        (24.0, 16.0, 30.0, 22.0)
        >>> mask_to_polygons(np.zeros((4, 4), bool))
        []

        Regions touching only at a corner give two valid polygons sharing that point:

        >>> polygons = mask_to_polygons(np.eye(2, dtype=bool))
        >>> len(polygons), all(p.is_valid for p in polygons)
        (2, True)
    """
    return _traced(_check_mask(mask), scale, min_area, extent)[0]


def _traced(
    mask: np.ndarray,
    scale: Sequence[float],
    min_area: float,
    extent: Sequence[float] | None,
) -> tuple[list[Polygon], np.ndarray]:
    """:func:`mask_to_polygons` of a boolean mask, plus one (row, col) mask pixel of each."""
    sx, sy = _check_scale(scale)
    if not (math.isfinite(min_area) and min_area >= 0):
        raise ParameterError(f"min_area must be a finite number >= 0, got {min_area}.")
    bound = None if extent is None else _check_scale(extent, "extent")
    if mask.size == 0 or not mask.any():
        return [], np.zeros((0, 2), np.int64)
    polygons = _exact_polygons(mask)
    # A point strictly inside each polygon (pixel-corner units) names a pixel of its region.
    inside = shapely.get_coordinates(shapely.point_on_surface(polygons))
    pixels = np.floor(inside[:, ::-1]).astype(np.int64)
    pixels = np.clip(pixels, 0, np.array(mask.shape) - 1)
    polygons = shapely.transform(polygons, lambda xy: xy * np.array([sx, sy]))
    if bound is not None:
        polygons = shapely.transform(polygons, lambda xy: np.clip(xy, 0.0, bound))
    polygons = shapely.orient_polygons(polygons)
    areas = shapely.area(polygons)
    keep = areas >= min_area
    polygons, areas, pixels = polygons[keep], areas[keep], pixels[keep]
    order = np.argsort(-areas, kind="stable")
    return list(polygons[order]), pixels[order]


def polygons_to_feature_collection(
    polygons: Iterable[Polygon],
    classification: str = "Blur",
    color: tuple[int, int, int] = BLUR_COLOR,
    properties: Mapping[str, Any] | None = None,
    measurements: Sequence[Mapping[str, float]] | None = None,
) -> dict[str, Any]:
    """Wrap polygons as a GeoJSON FeatureCollection of QuPath annotations.

    Each feature gets a deterministic UUID (from its index, class and coordinates), so the same
    mask always gives the same file. Coordinates are rounded to 0.01 px.

    Args:
        polygons: shapely polygons in level-0 pixel coordinates.
        classification: QuPath class name given to every annotation.
        color: the class colour as (R, G, B), each 0-255.
        properties: extra JSON-serializable properties added to (and overriding) each feature's.
        measurements: one mapping of measurement name to number per polygon, written as the
            feature's ``properties.measurements`` (QuPath lists them with the annotation).

    Returns:
        ``{"type": "FeatureCollection", "features": [...]}``.

    Raises:
        ParameterError: if the class name is empty, the colour invalid, a geometry not a
            polygon, or the measurements not one finite number per name and polygon.

    Examples:
        >>> from shapely.geometry import box
        >>> collection = polygons_to_feature_collection([box(0, 0, 10, 5)], "Out of focus")
        >>> feature = collection["features"][0]
        >>> feature["type"], feature["geometry"]["type"], feature["properties"]["objectType"]
        ('Feature', 'Polygon', 'annotation')
        >>> feature["properties"]["classification"]["name"]
        'Out of focus'
        >>> polygons_to_feature_collection([box(0, 0, 10, 5)]) == polygons_to_feature_collection(
        ...     [box(0, 0, 10, 5)]
        ... )  # deterministic ids
        True
    """
    if not isinstance(classification, str) or not classification.strip():
        raise ParameterError("classification must be a non-empty class name.")
    rgb = _check_color(color)
    extra = dict(properties or {})
    polygons = list(polygons)
    measured = None if measurements is None else _check_measurements(measurements, len(polygons))
    features = []
    for index, polygon in enumerate(polygons):
        if not isinstance(polygon, Polygon):
            raise ParameterError(
                f"Feature {index} is a {type(polygon).__name__}, expected a shapely Polygon."
            )
        rings = [polygon.exterior, *polygon.interiors]
        coords = [np.round(np.asarray(ring.coords, dtype=np.float64), _DECIMALS) for ring in rings]
        digest = hashlib.sha1(b"".join(c.tobytes() for c in coords)).hexdigest()
        feature_id = uuid.uuid5(_ID_NAMESPACE, f"{index}:{classification}:{digest}")
        features.append(
            {
                "type": "Feature",
                "id": str(feature_id),
                "geometry": {"type": "Polygon", "coordinates": [c.tolist() for c in coords]},
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": classification, "color": list(rgb)},
                    **({} if measured is None else {"measurements": measured[index]}),
                    **extra,
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def mask_to_geojson(
    mask: np.ndarray,
    scale: tuple[float, float] = (1.0, 1.0),
    min_area: float = 0.0,
    classification: str = "Blur",
    properties: Mapping[str, Any] | None = None,
    extent: tuple[float, float] | None = None,
    probability: np.ndarray | None = None,
    um_per_px: float | None = None,
    color: tuple[int, int, int] = BLUR_COLOR,
) -> dict[str, Any]:
    """Trace a working-resolution mask and return it as a QuPath FeatureCollection.

    See :func:`mask_to_polygons` and :func:`polygons_to_feature_collection`. With
    ``um_per_px`` or ``probability``, each feature's ``measurements`` hold ``Area um2`` (its
    level-0 area, holes subtracted, at ``um_per_px`` level-0 microns per pixel; 0.1 um^2) and
    ``Mean blur probability`` (the mean of ``probability`` over the region's mask pixels; 0.001).

    Args:
        mask: (H, W) boolean or numeric mask; nonzero is foreground.
        scale: level-0 pixels per mask pixel, ``(sx, sy)``.
        min_area: smallest polygon area kept, in level-0 px^2.
        classification: QuPath class name of every annotation.
        properties: extra properties of every feature.
        extent: the slide's level-0 ``(width, height)`` to clamp coordinates into.
        probability: (H, W) map on the mask's grid, values 0 to 1.
        um_per_px: the slide's level-0 microns per pixel.
        color: the class colour as (R, G, B), each 0-255.

    Raises:
        ParameterError: see :func:`mask_to_polygons`; also a ``probability`` of another shape
            or with values outside 0 to 1, or a ``um_per_px`` that is not positive.

    Examples:
        >>> mask = np.zeros((4, 4), bool)
        >>> mask[:2, :2] = True
        >>> collection = mask_to_geojson(mask, scale=(8.0, 8.0))
        >>> collection["type"], len(collection["features"])
        ('FeatureCollection', 1)
        >>> collection["features"][0]["geometry"]["coordinates"][0][2]
        [16.0, 16.0]
        >>> mask_to_geojson(np.zeros((4, 4), bool))
        {'type': 'FeatureCollection', 'features': []}
    """
    mask = _check_mask(mask)
    polygons, pixels = _traced(mask, scale, min_area, extent)
    measurements = None
    if um_per_px is not None or probability is not None:
        measurements = [{} for _ in polygons]
    if um_per_px is not None:
        if not (math.isfinite(um_per_px) and um_per_px > 0):
            raise ParameterError(f"um_per_px must be a finite number > 0, got {um_per_px}.")
        for measured, polygon in zip(measurements, polygons, strict=True):
            measured[AREA_UM2] = round(float(polygon.area) * um_per_px**2, 1)
    if probability is not None:
        means = _region_means(mask, probability, pixels)
        for measured, mean in zip(measurements, means, strict=True):
            measured[MEAN_PROBABILITY] = round(float(mean), 3)
    return polygons_to_feature_collection(
        polygons,
        classification=classification,
        color=color,
        properties=properties,
        measurements=measurements,
    )


def _region_means(mask: np.ndarray, values: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Mean of ``values`` over the edge-connected region of ``mask`` holding each pixel."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape != mask.shape:
        raise ParameterError(
            f"The probability map has shape {values.shape}, the mask {mask.shape}: give it on "
            "the mask's grid."
        )
    if values.size and not (np.isfinite(values).all() and 0 <= values.min() <= values.max() <= 1):
        raise ParameterError("Probabilities must be finite numbers from 0 to 1.")
    if len(pixels) == 0:
        return np.zeros(0)
    n, labels = cv2.connectedComponents(mask.view(np.uint8), connectivity=4)
    sums = np.bincount(labels.ravel(), weights=values.ravel(), minlength=n)
    counts = np.bincount(labels.ravel(), minlength=n)
    region = labels[pixels[:, 0], pixels[:, 1]]
    return sums[region] / counts[region]


def write_geojson(path: Path, collection: Mapping[str, Any]) -> Path:
    """Write a FeatureCollection as compact JSON, atomically, and return the path.

    Raises:
        ParameterError: if the collection holds values JSON cannot represent.
        OutputError: if the folder cannot be written.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = write_geojson(Path(tmp) / "blur.geojson", mask_to_geojson(np.eye(3)))
        ...     path.read_text()[:40]
        '{"type":"FeatureCollection","features":['
    """
    try:
        text = json.dumps(collection, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"The GeoJSON collection cannot be written as JSON: {exc}.") from exc
    return write_text_atomic(Path(path), text)


def _check_mask(mask: np.ndarray) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ParameterError(f"The mask must be 2-D (H, W), got shape {arr.shape}.")
    return arr != 0


def _check_scale(scale: Sequence[float], name: str = "scale") -> tuple[float, float]:
    try:
        sx, sy = (float(v) for v in scale)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"{name} must be two numbers (x, y), got {scale!r}.") from exc
    if not (math.isfinite(sx) and math.isfinite(sy) and sx > 0 and sy > 0):
        raise ParameterError(f"{name} values must be finite and > 0, got ({sx}, {sy}).")
    return sx, sy


def _check_measurements(
    measurements: Sequence[Mapping[str, float]], n: int
) -> list[dict[str, float]]:
    if len(measurements) != n:
        raise ParameterError(f"Got {len(measurements)} sets of measurements for {n} polygons.")
    checked = []
    for values in measurements:
        row = {}
        for name, value in values.items():
            ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
                value, bool
            )
            if not (isinstance(name, str) and name and ok and math.isfinite(value)):
                raise ParameterError(
                    f"A measurement must be a named finite number, got {name!r}: {value!r}."
                )
            row[name] = value.item() if isinstance(value, np.generic) else value
        checked.append(row)
    return checked


def _check_color(color: Sequence[int]) -> tuple[int, int, int]:
    values = tuple(color)
    if len(values) != 3 or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v <= 255
        for v in values
    ):
        raise ParameterError(f"color must be three integers 0-255 (R, G, B), got {color!r}.")
    return int(values[0]), int(values[1]), int(values[2])


def _exact_polygons(mask: np.ndarray) -> np.ndarray:
    """Valid pixel-edge polygons of a boolean mask, in pixel-corner units (see module notes)."""
    polygons, first_pixel, pinched = _trace_polygons(mask)
    if not pinched.any():
        return polygons
    # Where parts of a region touch only at a pixel corner, its rings may touch themselves or
    # cut its interior in two: not valid polygons. Re-trace such regions in layers of
    # 4-connected parts that do not touch each other, which gives valid polygons.
    parts = [polygons[~pinched]]
    for k in np.flatnonzero(pinched):
        x0, y0, x1, y1 = (int(v) for v in shapely.bounds(polygons[k]))
        _, labels8 = cv2.connectedComponents(mask[y0:y1, x0:x1].view(np.uint8), connectivity=8)
        r, c = first_pixel[k]
        colours, n_colours = _colour_parts(labels8 == labels8[r - y0, c - x0])
        if n_colours == 1:  # one 4-connected part: its corner contacts are with itself
            parts.append(polygons[k : k + 1])
            continue
        for colour in range(1, n_colours + 1):
            traced = _trace_polygons(colours == colour)[0]
            parts.append(shapely.transform(traced, lambda xy, x0=x0, y0=y0: xy + (x0, y0)))
    return np.concatenate(parts)


def _colour_parts(region: np.ndarray) -> tuple[np.ndarray, int]:
    """Colour a region's 4-connected parts so that parts touching at a corner differ.

    Greedy graph colouring over the corner contacts; tracing one colour at a time with
    8-connectivity then sees each part on its own.

    Returns:
        The (H, W) colour of each pixel (0 for background) and the number of colours.
    """
    n, labels = cv2.connectedComponents(region.view(np.uint8), connectivity=4)
    tl, tr, bl, br = labels[:-1, :-1], labels[:-1, 1:], labels[1:, :-1], labels[1:, 1:]
    pairs = []
    for a, b, c, d in ((tl, br, tr, bl), (tr, bl, tl, br)):
        hit = (a > 0) & (b > 0) & (c == 0) & (d == 0) & (a != b)
        pairs.append(np.stack([a[hit], b[hit]], axis=1))
    neighbours: dict[int, set[int]] = {}
    for a, b in np.unique(np.sort(np.concatenate(pairs), axis=1), axis=0).tolist():
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    colour = np.ones(n, dtype=np.int64)
    colour[0] = 0
    for node in sorted(neighbours, key=lambda v: -len(neighbours[v])):
        used = {colour[v] for v in neighbours[node]}
        colour[node] = next(c for c in range(1, len(used) + 2) if c not in used)
    n_colours = int(colour.max())
    return colour.astype(np.min_scalar_type(n_colours))[labels], n_colours


def _trace_polygons(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Polygons (corner units) of the 8-connected regions of a mask.

    Returns:
        The polygons; one (row, col) pixel of each; whether it has a vertex at a pinch corner.
    """
    contours, hierarchy = _trace(mask)
    rings, ring_pinched = _contours_to_corner_rings(contours, _pinch_corners(mask))
    # In RETR_CCOMP, a contour with no parent is an outer border; its holes name it as parent.
    parent = hierarchy[0, :, 3]
    outer = np.flatnonzero(parent < 0)
    polygon_of = np.full(len(contours), -1, dtype=np.int64)
    polygon_of[outer] = np.arange(len(outer))
    owner = np.where(parent < 0, polygon_of, polygon_of[np.maximum(parent, 0)])
    order = np.lexsort((parent >= 0, owner))  # each shell, then its holes
    coords = np.concatenate([rings[i] for i in order]).astype(np.float64)
    ring_index = np.repeat(np.arange(len(order)), [len(rings[i]) for i in order])
    linear = shapely.linearrings(coords, indices=ring_index)
    polygons = shapely.polygons(linear, indices=owner[order])
    pinched = np.bincount(owner, weights=ring_pinched, minlength=len(outer)) > 0
    # An outer border starts at the top-left corner of its region's first pixel in raster order.
    start = np.array([contours[i][0, 0] for i in outer]).reshape(-1, 2)
    first_pixel = np.stack([start[:, 1] // 2, start[:, 0] // 2], axis=1)
    return polygons, first_pixel, pinched


def _pinch_corners(mask: np.ndarray) -> np.ndarray:
    """(H+1, W+1) map of pixel corners where only two diagonally opposite pixels are set."""
    padded = np.pad(mask, 1)
    tl, tr, bl, br = padded[:-1, :-1], padded[:-1, 1:], padded[1:, :-1], padded[1:, 1:]
    return (tl & br & ~tr & ~bl) | (tr & bl & ~tl & ~br)


def _trace(mask: np.ndarray) -> tuple[Sequence[np.ndarray], np.ndarray]:
    """Border-follow the mask's closure on the corner/edge/interior grid (see module notes)."""
    h, w = mask.shape
    # Grid cell (2i, 2j) is pixel corner (i, j); one cell of background padding on every side.
    grid = np.zeros((2 * h + 3, 2 * w + 3), dtype=np.uint8)
    grid[2 : 2 * h + 1 : 2, 2 : 2 * w + 1 : 2] = mask
    cv2.dilate(grid, np.ones((3, 3), np.uint8), dst=grid)
    contours, hierarchy = cv2.findContours(
        grid, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE, offset=(-1, -1)
    )
    return contours, hierarchy


def _contours_to_corner_rings(
    contours: Sequence[np.ndarray], pinch: np.ndarray
) -> tuple[list[np.ndarray], np.ndarray]:
    """Turn grid contours into rings of (x, y) pixel corners where the boundary turns.

    Also returns, per ring, whether it passes through one of the ``pinch`` corners.
    """
    lengths = np.array([len(c) for c in contours])
    pts = np.concatenate(contours).reshape(-1, 2).astype(np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    nxt = _cyclic_next(len(pts), starts, lengths)
    step = pts[nxt] - pts
    # A diagonal step joins an edge cell to the next edge cell: put back the corner between them.
    diag = (np.abs(step[:, 0]) == 1) & (np.abs(step[:, 1]) == 1)
    x_even = pts[:, 0] % 2 == 0
    corner = np.where(
        x_even[:, None],
        np.stack([pts[:, 0], pts[nxt, 1]], axis=1),
        np.stack([pts[nxt, 0], pts[:, 1]], axis=1),
    )
    counts = 1 + diag.astype(np.int64)
    out = np.empty((int(counts.sum()), 2), dtype=np.int64)
    pos = np.cumsum(counts) - counts
    out[pos] = pts
    out[pos[diag] + 1] = corner[diag]
    ring_id = np.repeat(np.repeat(np.arange(len(contours)), lengths), counts)
    # Keep the corner cells, then only the corners where the boundary turns.
    is_corner = (out[:, 0] % 2 == 0) & (out[:, 1] % 2 == 0)
    out, ring_id = out[is_corner] // 2, ring_id[is_corner]
    lengths = np.bincount(ring_id, minlength=len(contours))
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    nxt = _cyclic_next(len(out), starts, lengths)
    prv = np.empty_like(nxt)
    prv[nxt] = np.arange(len(out))
    turns = np.any((out[nxt] - out) != (out - out[prv]), axis=1)
    kept_lengths = np.bincount(ring_id[turns], minlength=len(contours))
    rings = np.split(out[turns], np.cumsum(kept_lengths)[:-1])
    at_pinch = pinch[out[:, 1], out[:, 0]]
    pinched = np.bincount(ring_id[at_pinch], minlength=len(contours)) > 0
    return rings, pinched


def _cyclic_next(n: int, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Index of the next point within each closed run ``starts[k] : starts[k] + lengths[k]``."""
    nxt = np.arange(1, n + 1)
    nonempty = lengths > 0
    nxt[(starts + lengths - 1)[nonempty]] = starts[nonempty]
    return nxt
