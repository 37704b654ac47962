"""Slide report and cohort index pages."""

from __future__ import annotations

import base64
import re

import cv2
import numpy as np
import pytest

from histoblur.inference.cohort import status as cohort_status
from histoblur.io.geojson import mask_to_geojson
from histoblur.io.palette import BLUR_COLOR, css_rgb
from histoblur.io.qc_report import (
    SLIDE_LINKS,
    cohort_index_html,
    slide_report_html,
    slide_status,
)
from histoblur.io.report import colour_bar, heatmap


def _summary(**extra):
    base = {
        "slide": "/data/a<b>.svs", "stem": "a<b>", "reader": "openslide", "slide_mpp": 0.25,
        "mpp_source": "metadata", "working_mpp": 0.5, "level": 1, "tissue_area_mm2": 2.0,
        "blurred_area_mm2": 0.5, "blurred_fraction": 0.25, "blurred_regions": 3, "tiles": 12,
        "seconds": 2.1, "read_seconds": 0.4, "compute_seconds": 1.5, "model": "default",
        "threshold": 0.5, "histoblur_version": "0.1.0",
    }  # fmt: skip
    base.update(extra)
    return base


def test_slide_report_embeds_pictures_and_escapes_text():
    rng = np.random.default_rng(0)
    pic = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    page = slide_report_html(_summary(), pic, pic, pic)
    assert page.count("data:image/png;base64,") == 4  # three pictures and the colour bar
    assert "a&lt;b&gt;" in page and "<b>.svs" not in page
    assert "25.0%" in page  # blurred fraction headline
    assert "0.4 / 1.5" in page  # read / compute split
    assert "src='http" not in page  # self-contained


def test_slide_report_tolerates_missing_numbers():
    pic = np.zeros((8, 8, 3), np.uint8)
    page = slide_report_html({"stem": "x"}, pic, pic, pic)
    assert "Blur QC: x" in page and "?" in page


def _order_of(page: str) -> list[str]:
    body = page.split("<tbody>")[1]
    return re.findall(r"<tr[^>]*><td data-value='([^']*)'", body)


def test_cohort_index_puts_failures_first_then_worst():
    rows = [
        {"stem": "mild", "blurred_fraction": 0.1, "tiles": 5},
        {"stem": "broken", "error": "not a slide OpenSlide reads", "blurred_fraction": ""},
        {"stem": "worst", "blurred_fraction": 0.8, "tiles": 7},
        {"stem": "clean", "blurred_fraction": 0.0, "tiles": 4},
    ]
    page = cohort_index_html(rows, {"mild": "mild/overlay.png", "worst": "worst/overlay.png"})
    assert _order_of(page) == ["broken", "worst", "mild", "clean"]
    assert "4 slides, 3 processed, 1 failed" in page
    assert "href='worst/report.html'" in page and "href='broken/report.html'" not in page
    assert "src='worst/overlay.png'" in page
    assert "class='error'" in page and "<script>" in page
    assert "data-value='0.8'" in page and "80.0%" in page


def test_cohort_index_escapes_names_and_errors():
    rows = [{"stem": "<x>", "error": "bad <file> & more"}]
    page = cohort_index_html(rows, {})
    assert "<x>" not in page.split("<tbody>")[1]
    assert "bad &lt;file&gt; &amp; more" in page


def test_cohort_index_has_a_status_column_a_filter_and_shows_zeros():
    rows = [
        {"stem": "fine", "status": "ok", "blurred_fraction": 0.01, "tiles": 3},
        {"stem": "glass", "status": "no_tissue", "blurred_fraction": 0.0, "tiles": 0,
         "tissue_area_mm2": 0.0, "blurred_area_mm2": 0.0, "blurred_regions": 0},
        {"stem": "soft", "status": "flagged", "blurred_fraction": 0.3, "tiles": 5},
        {"stem": "worse", "status": "flagged", "blurred_fraction": 0.6, "tiles": 5},
        {"stem": "broken", "status": "error", "error": "not a slide"},
    ]  # fmt: skip
    page = cohort_index_html(rows, {}, flag_above=0.05)
    assert _order_of(page) == ["broken", "worse", "soft", "glass", "fine"]  # act on these first
    body = page.split("<tbody>")[1]
    statuses = re.findall(r"<tr class='(\w+)' data-status='(\w+)'>", body)
    assert [a for a, b in statuses if a == b] == ["error", "flagged", "flagged", "no_tissue", "ok"]
    glass = body.split("data-value='glass'", 1)[1].split("</tr>")[0]
    assert "<td data-value='no_tissue'>no tissue</td>" in glass
    assert "<td data-value='0'>0</td>" in glass and "<td data-value='0.0'>0.0</td>" in glass
    assert "<td data-value='0.0'>0.0%</td>" in glass  # a zero reads 0, not a blank cell
    assert (
        "5 slides, 4 processed, 1 failed: 2 flagged (more than 5.0% of the tissue blurred)" in page
    )
    assert "1 without tissue, 1 ok" in page
    assert "<select id='status'>" in page and "<option value='flagged'>flagged (2)</option>" in page
    assert "r.dataset.status !== want" in page  # the filter hides the other rows


def test_slide_report_lists_warnings():
    pic = np.zeros((8, 8, 3), np.uint8)
    page = slide_report_html(_summary(warnings=["a.svs states 0.25 um/px"]), pic, pic, pic)
    assert "<th>Warnings</th><td>a.svs states 0.25 um/px</td>" in page
    assert "<th>Warnings</th><td>none</td>" in slide_report_html(_summary(), pic, pic, pic)


def _decode(uri: str) -> np.ndarray:
    data = base64.b64decode(uri.split(",", 1)[1])
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_slide_report_has_a_colour_bar_of_the_heatmap_colormap():
    pic = np.zeros((8, 8, 3), np.uint8)
    page = slide_report_html(_summary(threshold=0.5), pic, pic, pic)
    bar_html = page.split("<div class='bar'", 1)[1].split("</div></div>", 1)[0]
    bar = _decode(re.search(r"src='(data:image/png;base64,[^']+)'", bar_html).group(1))
    assert np.array_equal(bar, colour_bar())
    assert np.array_equal(bar[0, 0], heatmap(np.zeros((1, 1)), 0.0, 1.0)[0, 0])  # 0 at left
    assert np.array_equal(bar[0, -1], heatmap(np.ones((1, 1)), 0.0, 1.0)[0, 0])  # 1 at right
    assert "<span>0</span>" in bar_html and "<span>1</span>" in bar_html
    assert "class='mark' style='left:50.0%'" in bar_html  # the threshold


def test_slide_report_shows_status_links_and_the_minimum_region():
    pic = np.zeros((8, 8, 3), np.uint8)
    flagged = slide_report_html(_summary(), pic, pic, pic, flag_above=0.05, min_region_um2=2000)
    assert "Status: <b>flagged</b> (25.0% of the tissue blurred, more than --flag-above 5.0%" in (
        flagged
    )
    assert "<th>Status</th><td>flagged</td>" in flagged
    assert "regions smaller than 2000 um² are left out" in flagged
    for _, href in SLIDE_LINKS:
        assert f"href='{href}'" in flagged
    assert {h for _, h in SLIDE_LINKS} >= {"../index.html", "blur.geojson", "blur_mask.png"}
    ok = slide_report_html(_summary(), pic, pic, pic, flag_above=0.3)
    assert "Status: <b>ok</b>" in ok and "at most --flag-above 30.0%" in ok
    empty = _summary(tissue_area_mm2=0.0, tiles=0, blurred_fraction=0.0)
    assert "Status: <b>no tissue</b>" in slide_report_html(empty, pic, pic, pic)
    given = slide_report_html(_summary(), pic, pic, pic, status="ok", flag_above=0.05)
    assert "Status: <b>ok</b>" in given  # a status passed in wins
    # without min_region_um2, the summary's recorded parameters say it
    recorded = slide_report_html(_summary(parameters={"min_region_um2": 500.0}), pic, pic, pic)
    assert "regions smaller than 500 um²" in recorded


@pytest.mark.parametrize("flag_above", [0.0, 0.05, 0.25, 0.5])
def test_slide_status_follows_the_cohort_rule(flag_above):
    rows = [
        {"error": "bad"},
        {"tissue_area_mm2": 0.0, "tiles": 0, "blurred_fraction": 0.0},
        {"tissue_area_mm2": 1.0, "tiles": 0, "blurred_fraction": 0.5},
        {"tissue_area_mm2": 2.0, "tiles": 9, "blurred_fraction": 0.25},
        {"tissue_area_mm2": "2.0", "tiles": "9", "blurred_fraction": "0.05"},  # from cohort.csv
        {"tissue_area_mm2": 2.0, "tiles": 9, "blurred_fraction": 0.0},
        {"tissue_area_mm2": 2.0, "tiles": 9, "blurred_fraction": "?"},
    ]
    for row in rows:
        assert slide_status(row, flag_above) == cohort_status(row, flag_above), row


def test_one_blur_colour_in_report_and_geojson():
    pic = np.zeros((8, 8, 3), np.uint8)
    page = slide_report_html(_summary(), pic, pic, pic)
    assert f"class='swatch' style='background:{css_rgb(BLUR_COLOR)}'" in page
    feature = mask_to_geojson(np.eye(3, dtype=bool))["features"][0]
    assert feature["properties"]["classification"]["color"] == list(BLUR_COLOR)


def test_cohort_index_has_mpp_columns_a_text_filter_and_large_thumbnails():
    rows = [
        {"stem": "a", "status": "ok", "blurred_fraction": 0.01, "tiles": 3, "slide_mpp": 0.2527,
         "mpp_source": "metadata", "working_mpp": 0.5},
        {"stem": "b", "status": "flagged", "blurred_fraction": 0.4, "tiles": 3, "slide_mpp": 0.5,
         "mpp_source": "csv", "working_mpp": 0.5},
        {"stem": "c", "status": "error", "error": "not a slide"},
    ]  # fmt: skip
    page = cohort_index_html(rows, {"a": "a/overlay.png"}, flag_above=0.05)
    head = page.split("<thead>", 1)[1].split("</thead>", 1)[0]
    assert re.findall(r"<th>([^<]*)</th>", head) == [
        "Slide", "Status", "Picture", "Blurred tissue", "Blurred mm²", "Tissue mm²", "Regions",
        "Slide mpp (source)", "Working mpp", "Tiles", "Seconds", "Error",
    ]  # fmt: skip
    body = page.split("<tbody>")[1]
    a = body.split("data-value='a'", 1)[1].split("</tr>")[0]
    assert "<td data-value='0.2527'>0.2527 (metadata)</td>" in a
    assert "<td data-value='0.5'>0.5</td>" in a
    assert "href='a/blur.geojson'" in a and "href='c/blur.geojson'" not in body
    for row in re.findall(r"<tr .*?</tr>", body):
        assert row.count("<td") == head.count("<th>")  # every row fills every column
    assert "<input id='filter' type='search'" in page
    assert "addEventListener('input', applyFilters)" in page
    assert "r.textContent.toLowerCase().indexOf(text) < 0" in page  # text filter over rows
    assert "r.dataset.status !== want" in page  # and the status filter, combined
    assert "td img{max-width:320px;max-height:240px" in page
