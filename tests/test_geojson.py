"""Mask -> QuPath GeoJSON: exact pixel-edge polygons in level-0 coordinates, holes, validity."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon, box, shape

from histoblur.errors import ParameterError
from histoblur.io.geojson import (
    AREA_UM2,
    MEAN_PROBABILITY,
    mask_to_geojson,
    mask_to_polygons,
    polygons_to_feature_collection,
    write_geojson,
)
from histoblur.io.palette import BLUR_COLOR


def pixel_union(mask: np.ndarray, sx: float = 1.0, sy: float = 1.0) -> shapely.Geometry:
    """Reference: the union of one level-0 box per foreground pixel."""
    rows, cols = np.nonzero(mask)
    boxes = shapely.box(cols * sx, rows * sy, (cols + 1) * sx, (rows + 1) * sy)
    return shapely.union_all(boxes)


def blob_mask(shape: tuple[int, int], sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)
    return noise > 0.0


def ring_mask() -> np.ndarray:
    """A 10 x 10 square (rows/cols 5..14) with a 4 x 4 hole (rows/cols 8..11)."""
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    mask[8:12, 8:12] = False
    return mask


# ---------------------------------------------------------------------------------------------
# Geometry


def test_rectangle_maps_to_exact_level0_box() -> None:
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:8] = True
    (poly,) = mask_to_polygons(mask, scale=(4.0, 4.0))
    assert poly.bounds == (12.0, 8.0, 32.0, 20.0)
    assert poly.area == pytest.approx(3 * 5 * 16)
    assert poly.equals(box(12.0, 8.0, 32.0, 20.0))
    assert len(poly.exterior.coords) == 5  # four corners, closed; no redundant vertices


def test_anisotropic_scale_and_uint8_mask() -> None:
    mask = np.zeros((6, 6), np.uint8)
    mask[1:3, 2:5] = 255
    (poly,) = mask_to_polygons(mask, scale=(2.5, 3.0))
    assert poly.bounds == pytest.approx((5.0, 3.0, 12.5, 9.0))
    assert poly.area == pytest.approx(6 * 2.5 * 3.0)


def test_mask_touching_image_border() -> None:
    mask = np.ones((3, 4), bool)
    (poly,) = mask_to_polygons(mask, scale=(2.0, 2.0))
    assert poly.equals(box(0, 0, 8, 6))


def test_square_with_hole_is_one_polygon_with_one_interior_ring() -> None:
    polys = mask_to_polygons(ring_mask(), scale=(2.0, 2.0))
    assert len(polys) == 1
    (poly,) = polys
    assert len(poly.interiors) == 1
    assert poly.area == pytest.approx((100 - 16) * 4)
    assert Polygon(poly.interiors[0]).equals(box(16, 16, 24, 24))
    assert poly.is_valid


def test_island_inside_hole_is_its_own_polygon() -> None:
    mask = ring_mask()
    mask[9:11, 9:11] = True
    polys = mask_to_polygons(mask)
    assert len(polys) == 2
    outer, island = polys  # largest first
    assert len(outer.interiors) == 1 and len(island.interiors) == 0
    assert island.equals(box(9, 9, 11, 11))
    assert outer.area == pytest.approx(100 - 16)
    assert Polygon(outer.interiors[0]).contains(island)


def test_diagonal_contacts_give_valid_polygons() -> None:
    checker = np.indices((6, 6)).sum(axis=0) % 2 == 0
    polys = mask_to_polygons(checker)
    assert len(polys) == checker.sum()  # each pixel is its own edge-connected region
    assert all(shapely.is_valid(polys))
    assert sum(p.area for p in polys) == pytest.approx(checker.sum())
    # A ring closed only through a corner: the enclosed pixel is a hole touching the shell.
    mask = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1]], bool)
    polys = mask_to_polygons(mask)
    assert all(shapely.is_valid(polys))
    assert shapely.union_all(polys).equals(pixel_union(mask))


@pytest.mark.parametrize("seed", range(6))
def test_random_masks_match_pixel_union_exactly(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = rng.random((25, 31)) < rng.uniform(0.2, 0.8)
    sx, sy = 1.5, 3.25
    polys = mask_to_polygons(mask, scale=(sx, sy))
    assert all(shapely.is_valid(polys))
    n_regions = cv2.connectedComponents(mask.view(np.uint8), connectivity=4)[0] - 1
    assert len(polys) == n_regions
    union = shapely.union_all(polys)
    assert union.symmetric_difference(pixel_union(mask, sx, sy)).area == pytest.approx(0.0)
    assert sum(p.area for p in polys) == pytest.approx(mask.sum() * sx * sy)  # no overlaps


def test_blob_mask_area_equals_pixel_count() -> None:
    mask = blob_mask((200, 300), sigma=6.0, seed=0)
    sx, sy = 8.0, 8.0
    polys = mask_to_polygons(mask, scale=(sx, sy))
    assert len(polys) > 3
    assert all(shapely.is_valid(polys))
    assert shapely.union_all(polys).area == pytest.approx(mask.sum() * sx * sy)
    assert sum(p.area for p in polys) == pytest.approx(mask.sum() * sx * sy)
    coords = shapely.get_coordinates(polys)  # every vertex on the scaled pixel-corner lattice
    assert np.array_equal(coords / (sx, sy), np.round(coords / (sx, sy)))


def test_min_area_drops_specks() -> None:
    mask = np.zeros((30, 30), bool)
    mask[2:12, 2:12] = True
    mask[20, 20] = True
    mask[25:27, 5:7] = True
    scale = (4.0, 4.0)
    assert len(mask_to_polygons(mask, scale)) == 3
    kept = mask_to_polygons(mask, scale, min_area=4 * 16)  # area >= 4 mask pixels
    assert sorted(p.area for p in kept) == [4 * 16, 100 * 16]


def test_empty_mask() -> None:
    mask = np.zeros((8, 9), bool)
    assert mask_to_polygons(mask) == []
    assert mask_to_geojson(mask) == {"type": "FeatureCollection", "features": []}


# ---------------------------------------------------------------------------------------------
# GeoJSON


def test_features_have_qupath_structure() -> None:
    mask = ring_mask()
    mask[9:11, 9:11] = True
    fc = mask_to_geojson(mask, scale=(2.0, 2.0), properties={"slide": "s1", "score": 0.8})
    assert fc["type"] == "FeatureCollection"
    assert len(fc["features"]) == 2
    for feature in fc["features"]:
        assert feature["type"] == "Feature"
        uuid.UUID(feature["id"])
        props = feature["properties"]
        assert props["objectType"] == "annotation"
        assert props["classification"] == {"name": "Blur", "color": list(BLUR_COLOR)}
        assert props["slide"] == "s1" and props["score"] == 0.8
        geometry = feature["geometry"]
        assert geometry["type"] == "Polygon"
        for ring in geometry["coordinates"]:
            assert ring[0] == ring[-1]
            assert all(isinstance(v, float) for xy in ring for v in xy)
    outer = shape(fc["features"][0]["geometry"])
    assert outer.is_valid and outer.area == pytest.approx((100 - 16) * 4)
    assert len(fc["features"][0]["geometry"]["coordinates"]) == 2  # shell + hole
    assert len({f["id"] for f in fc["features"]}) == 2
    assert mask_to_geojson(mask, scale=(2.0, 2.0)) == mask_to_geojson(mask, scale=(2.0, 2.0))


def test_coordinates_rounded_and_custom_class() -> None:
    poly = Polygon([(0.123456, 0.0), (1.0 / 3.0, 0.0), (1.0 / 3.0, 2.0)])
    fc = polygons_to_feature_collection([poly], classification="Motion", color=(1, 2, 3))
    ring = fc["features"][0]["geometry"]["coordinates"][0]
    assert ring[0] == [0.12, 0.0] and ring[1] == [0.33, 0.0]
    assert fc["features"][0]["properties"]["classification"] == {
        "name": "Motion",
        "color": [1, 2, 3],
    }


def test_write_geojson_round_trips(tmp_path: Path) -> None:
    fc = mask_to_geojson(ring_mask(), scale=(4.0, 4.0), classification="Blur")
    out = write_geojson(tmp_path / "sub" / "slide.geojson", fc)
    assert out == tmp_path / "sub" / "slide.geojson"
    with out.open(encoding="utf-8") as f:
        assert json.load(f) == fc
    assert "\n" not in out.read_text() and ", " not in out.read_text()  # compact
    assert [p.name for p in out.parent.iterdir()] == ["slide.geojson"]  # no temporary left


def _pixels_inside(geometry: shapely.Geometry, shape: tuple[int, int], sx: float, sy: float):
    """Reference: which mask pixels have their centre inside a level-0 geometry."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return shapely.contains_xy(geometry, (cols + 0.5) * sx, (rows + 0.5) * sy)


def test_measurements_give_area_in_um2_and_mean_probability_per_region() -> None:
    mask = blob_mask((40, 50), sigma=1.0, seed=0)  # regions with holes, some touching corners
    probability = np.random.default_rng(1).random(mask.shape)
    sx, sy, mpp = 2.0, 3.0, 0.25
    fc = mask_to_geojson(mask, scale=(sx, sy), probability=probability, um_per_px=mpp)
    assert len(fc["features"]) > 10
    assert any(len(f["geometry"]["coordinates"]) > 1 for f in fc["features"])  # holes
    for feature in fc["features"]:
        measured = feature["properties"]["measurements"]
        assert set(measured) == {AREA_UM2, MEAN_PROBABILITY}
        assert all(type(v) is float for v in measured.values())  # QuPath: name -> number
        geometry = shape(feature["geometry"])
        assert measured[AREA_UM2] == pytest.approx(geometry.area * mpp**2, abs=0.051)  # 0.1 um2
        inside = _pixels_inside(geometry, mask.shape, sx, sy)
        assert mask[inside].all() and inside.sum() * sx * sy == pytest.approx(geometry.area)
        assert measured[MEAN_PROBABILITY] == pytest.approx(probability[inside].mean(), abs=5e-4)


def test_measurements_only_when_asked_and_checked() -> None:
    mask = ring_mask()
    assert "measurements" not in mask_to_geojson(mask)["features"][0]["properties"]
    only_area = mask_to_geojson(mask, um_per_px=0.5)["features"][0]["properties"]
    assert only_area["measurements"] == {AREA_UM2: (100 - 16) * 0.25}
    with pytest.raises(ParameterError, match="shape"):
        mask_to_geojson(mask, probability=np.zeros((3, 3)))
    with pytest.raises(ParameterError, match="0 to 1"):
        mask_to_geojson(mask, probability=np.full(mask.shape, 2.0))
    with pytest.raises(ParameterError, match="um_per_px"):
        mask_to_geojson(mask, um_per_px=0.0)
    with pytest.raises(ParameterError, match="2 polygons"):
        polygons_to_feature_collection([box(0, 0, 1, 1), box(2, 2, 3, 3)], measurements=[{}])
    with pytest.raises(ParameterError, match="finite number"):
        polygons_to_feature_collection([box(0, 0, 1, 1)], measurements=[{"Area": float("nan")}])


def test_extent_clamps_partial_cells_before_measuring_and_filtering() -> None:
    """The last cells of a reduced mask reach past the slide: clamp, then measure."""
    mask = np.zeros((4, 4), bool)
    mask[2:, 2:] = True  # the bottom-right 2 x 2 cells, 10 level-0 px each
    (full,) = mask_to_polygons(mask, scale=(10.0, 10.0))
    (clamped,) = mask_to_polygons(mask, scale=(10.0, 10.0), extent=(35.0, 32.0))
    assert full.bounds == (20.0, 20.0, 40.0, 40.0) and clamped.bounds == (20.0, 20.0, 35.0, 32.0)
    fc = mask_to_geojson(mask, scale=(10.0, 10.0), extent=(35.0, 32.0), um_per_px=1.0)
    assert fc["features"][0]["properties"]["measurements"][AREA_UM2] == 15.0 * 12.0
    assert mask_to_polygons(mask, (10.0, 10.0), min_area=200, extent=(35.0, 32.0)) == []
    with pytest.raises(ParameterError, match="extent"):
        mask_to_polygons(mask, extent=(0.0, 5.0))


def test_class_colour_is_the_one_blur_colour() -> None:
    fc = mask_to_geojson(ring_mask())
    assert fc["features"][0]["properties"]["classification"]["color"] == list(BLUR_COLOR)


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("mask", "kwargs"),
    [
        (np.zeros((2, 3, 3), bool), {}),
        (np.zeros(5, bool), {}),
        (np.ones((4, 4), bool), {"scale": (0.0, 1.0)}),
        (np.ones((4, 4), bool), {"scale": (1.0, -2.0)}),
        (np.ones((4, 4), bool), {"scale": (float("nan"), 1.0)}),
        (np.ones((4, 4), bool), {"scale": (1.0,)}),
        (np.ones((4, 4), bool), {"min_area": -1.0}),
    ],
)
def test_bad_inputs_raise_parameter_error(mask: np.ndarray, kwargs: dict) -> None:
    with pytest.raises(ParameterError):
        mask_to_polygons(mask, **kwargs)


def test_bad_feature_arguments_raise_parameter_error(tmp_path: Path) -> None:
    square = box(0, 0, 1, 1)
    with pytest.raises(ParameterError):
        polygons_to_feature_collection([square], color=(0, 0, 256))
    with pytest.raises(ParameterError):
        polygons_to_feature_collection([square], classification="")
    with pytest.raises(ParameterError):
        polygons_to_feature_collection([shapely.Point(0, 0)])
    with pytest.raises(ParameterError):
        write_geojson(tmp_path / "x.geojson", {"bad": {1, 2}})
    assert not (tmp_path / "x.geojson").exists()
