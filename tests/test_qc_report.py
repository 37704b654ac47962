"""Slide report and cohort index pages."""

from __future__ import annotations

import re

import numpy as np

from histoblur.io.qc_report import cohort_index_html, slide_report_html


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
    assert page.count("data:image/png;base64,") == 3
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
