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
